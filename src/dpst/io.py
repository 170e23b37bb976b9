"""Read 10x Space Ranger output and convert spatial units.

:func:`um_per_pixel` is the one place where pixels become micrometres: Visium
spots are 55 um wide, so ``um_per_pixel = 55 / spot_diameter_fullres``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["SpaceRangerFormatError", "read_spaceranger", "um_per_pixel", "spatial_um"]

SPOT_DIAMETER_UM = 55.0
SPOT_SPACING_UM = 100.0  # centre-to-centre distance of neighbouring spots
POSITION_FILES = ("tissue_positions.csv", "tissue_positions_list.csv")  # v2 (header), v1 (none)
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


class SpaceRangerFormatError(ValueError):
    """A Space Ranger folder is missing a file or holds a malformed one."""


# --------------------------------------------------------------------------- #
# locating and reading the pieces
# --------------------------------------------------------------------------- #
def _find_h5(path: Path, count_file: str) -> Path:
    """The count matrix: ``count_file`` or, as downloaded, ``{sample_id}_{count_file}``."""
    h5 = path / count_file
    if h5.is_file():
        return h5
    found = sorted(p for p in path.glob(f"*_{count_file}") if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise SpaceRangerFormatError(f"{h5}: count matrix not found (nor any *_{count_file} in {path})")
    names = ", ".join(p.name for p in found)
    raise SpaceRangerFormatError(f"{path}: several count matrices match *_{count_file} ({names}); pass count_file")


def _read_matrix(h5: Path) -> tuple[ad.AnnData, dict]:
    """Counts via scanpy's reader, plus the HDF5 root attributes (maybe none)."""
    import scanpy as sc

    try:
        with warnings.catch_warnings():
            # Real gene names repeat; read_spaceranger makes them unique afterwards.
            warnings.filterwarnings("ignore", message="Variable names are not unique")
            adata = sc.read_10x_h5(h5)
            adata.var_names_make_unique()
        with h5py.File(h5, "r") as f:
            attrs = {k: _decode(v) for k, v in f.attrs.items()}
    except Exception as err:  # scanpy raises bare Exception on missing datasets
        raise SpaceRangerFormatError(f"{h5}: not a readable 10x HDF5 matrix ({type(err).__name__}: {err})") from err
    if adata.n_vars == 0:
        raise SpaceRangerFormatError(f"{h5}: no 'Gene Expression' features")
    return adata, attrs


def _decode(value):
    """HDF5 attributes hold bytes (Space Ranger) or str (other writers)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in value]
    return value


def _find_positions(spatial: Path) -> Path:
    for name in POSITION_FILES:
        if (spatial / name).is_file():
            return spatial / name
    raise SpaceRangerFormatError(f"{spatial}: no positions file ({' or '.join(POSITION_FILES)})")


def _read_positions(path: Path) -> pd.DataFrame:
    """Positions with or without header; checks shape and types."""
    try:
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except Exception as err:
        raise SpaceRangerFormatError(f"{path}: cannot parse as CSV ({str(err).strip()})") from err
    if raw.shape[1] != len(POSITION_COLUMNS):
        raise SpaceRangerFormatError(
            f"{path}: expected {len(POSITION_COLUMNS)} columns ({','.join(POSITION_COLUMNS)}), found {raw.shape[1]}"
        )
    # Detect the header from content, not from the file name: renamed files exist.
    if len(raw) and raw.iloc[0, 0].strip().lower() == "barcode":
        raw = raw.iloc[1:]
    if raw.empty:
        raise SpaceRangerFormatError(f"{path}: no spots")
    raw.columns = POSITION_COLUMNS
    frame = pd.DataFrame({"barcode": raw["barcode"].str.strip().to_numpy()})
    for col in POSITION_COLUMNS[1:]:
        text = raw[col].str.strip()
        bad = np.flatnonzero(pd.to_numeric(text, errors="coerce").isna().to_numpy())
        if bad.size:
            line = raw.index[bad[0]] + 1
            raise SpaceRangerFormatError(f"{path}: non-numeric {col} {raw[col].iloc[bad[0]]!r} on line {line}")
        # Python's float parser is exact; pandas' fast one can be off by one ulp.
        frame[col] = text.to_numpy().astype(float)
    for col in POSITION_COLUMNS[1:4]:
        if np.any(frame[col] != np.round(frame[col])):
            raise SpaceRangerFormatError(f"{path}: {col} must hold integers")
        frame[col] = frame[col].astype(int)
    if frame["barcode"].duplicated().any():
        raise SpaceRangerFormatError(f"{path}: duplicated barcodes")
    return frame.set_index("barcode")


def _read_scalefactors(path: Path) -> dict:
    if not path.is_file():
        raise SpaceRangerFormatError(f"{path}: scalefactors file not found")
    try:
        scalefactors = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SpaceRangerFormatError(f"{path}: not valid JSON ({err})") from err
    value = scalefactors.get("spot_diameter_fullres") if isinstance(scalefactors, dict) else None
    if not isinstance(value, (int, float)) or not value > 0:
        raise SpaceRangerFormatError(f"{path}: lacks a positive spot_diameter_fullres")
    return scalefactors


def _read_images(spatial: Path) -> dict:
    """Low/high-res PNGs when present (they are optional for the analysis)."""
    from matplotlib.image import imread

    images = {}
    for res in ("hires", "lowres"):
        png = spatial / f"tissue_{res}_image.png"
        if png.is_file():
            try:
                images[res] = imread(png)
            except Exception as err:
                raise SpaceRangerFormatError(f"{png}: unreadable image ({err})") from err
    return images


def _library_id(given: str | None, attrs: dict, h5: Path, count_file: str, path: Path) -> str:
    """Given id, else the file's ``library_ids``, else the download prefix, else the folder."""
    if given:
        return given
    ids = attrs.get("library_ids")
    if isinstance(ids, list) and ids and ids[0]:
        return ids[0]
    if h5.name != count_file:
        return h5.name[: -len(count_file) - 1]
    # Space Ranger writes <sample>/outs/; the sample is the meaningful name.
    return path.parent.name if path.name == "outs" and path.parent.name else path.name


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def read_spaceranger(
    path: str | os.PathLike,
    count_file: str = "filtered_feature_bc_matrix.h5",
    library_id: str | None = None,
) -> ad.AnnData:
    """Read a Space Ranger ``outs/``-like folder into AnnData.

    Parameters
    ----------
    path
        Folder with the count matrix and ``spatial/`` (positions, scalefactors,
        optional PNGs). The matrix may also be named as downloaded,
        ``{sample_id}_filtered_feature_bc_matrix.h5``.
    count_file
        Matrix file name.
    library_id
        Key in ``uns["spatial"]``; defaults to the h5's ``library_ids`` attribute,
        else the download prefix, else the folder name.

    Returns
    -------
    AnnData of in-tissue spots present in the matrix, in matrix order: counts in
    ``X`` (CSR float32), ``obs`` ``in_tissue``/``array_row``/``array_col``,
    full-res pixels ``(x, y) = (pxl_col, pxl_row)`` in ``obsm["spatial"]``,
    ``var["gene_ids"]`` with unique ``var_names``, and
    ``uns["spatial"][library_id]`` with ``images``, ``scalefactors``, ``metadata``.

    Raises
    ------
    SpaceRangerFormatError
        Naming the offending file, when a file is missing or malformed or when
        matrix and positions share no barcodes.
    """
    path = Path(path)
    if not path.is_dir():
        raise SpaceRangerFormatError(f"{path}: Space Ranger folder not found")
    h5 = _find_h5(path, count_file)
    adata, attrs = _read_matrix(h5)
    spatial = path / "spatial"
    positions_file = _find_positions(spatial)
    positions = _read_positions(positions_file)
    scalefactors = _read_scalefactors(spatial / "scalefactors_json.json")
    images = _read_images(spatial)

    on_tissue = positions.index[positions["in_tissue"] == 1]
    keep = adata.obs_names.isin(on_tissue)
    if not keep.any():
        raise SpaceRangerFormatError(f"{positions_file}: no in-tissue barcode in common with {h5}")
    missing = ~adata.obs_names.isin(positions.index)
    if missing.any():
        warnings.warn(f"{h5}: {missing.sum()} barcodes absent from {positions_file.name}; dropped", stacklevel=2)
    adata = adata[keep].copy()

    pos = positions.loc[adata.obs_names]
    adata.obs = pd.DataFrame(
        {c: pos[c].to_numpy() for c in ("in_tissue", "array_row", "array_col")}, index=adata.obs_names
    )
    adata.obsm["spatial"] = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)

    lib = _library_id(library_id, attrs, h5, count_file, path)
    metadata = {k: attrs[k] for k in ("chemistry_description", "software_version") if k in attrs}
    adata.uns["spatial"] = {lib: {"images": images, "scalefactors": scalefactors, "metadata": metadata}}
    return adata


def um_per_pixel(adata: ad.AnnData, library_id: str | None = None) -> float:
    """Micrometres per full-resolution pixel: ``55 / spot_diameter_fullres``.

    ``library_id`` may be omitted when ``uns["spatial"]`` holds one library.
    """
    libs = adata.uns.get("spatial", {})
    if library_id is None:
        if len(libs) != 1:
            raise ValueError(
                f"um_per_pixel needs exactly one library in adata.uns['spatial'] or a library_id; found {list(libs)}"
            )
        library_id = next(iter(libs))
    if library_id not in libs:
        raise ValueError(f"library {library_id!r} not in adata.uns['spatial'] (present: {list(libs)})")
    diameter = libs[library_id].get("scalefactors", {}).get("spot_diameter_fullres")
    if diameter is None or not diameter > 0:
        raise ValueError(f"adata.uns['spatial'][{library_id!r}]['scalefactors'] lacks spot_diameter_fullres")
    return SPOT_DIAMETER_UM / float(diameter)


def spatial_um(adata: ad.AnnData, spatial_key: str = "spatial", library_id: str | None = None) -> np.ndarray:
    """Spot coordinates in micrometres: pixels times :func:`um_per_pixel`.

    Both axes share one factor; never standardize them separately, that would
    bend distances.
    """
    if spatial_key not in adata.obsm:
        raise KeyError(f"adata.obsm has no {spatial_key!r} (keys: {list(adata.obsm)})")
    return np.asarray(adata.obsm[spatial_key], dtype=float) * um_per_pixel(adata, library_id)
