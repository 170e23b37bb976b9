"""Read 10x Space Ranger output and convert spatial units.

:func:`calibrate_pixels` finds how many micrometres a pixel is;
:func:`dpst.pp.spatial_coordinates` is the one place that applies it. Visium
spot centres are 100 um apart on the hexagonal grid, so the scale is read off
the grid itself: ``100 / median pixel distance between grid neighbours``
(neighbours from ``array_row``/``array_col``). ``spot_diameter_fullres`` is
only a fallback and a cross-check: 10x defines it as the pixel width of a
theoretical 65 um spot (not the 55 um capture area), and older Space Ranger
versions wrote other values.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "PixelCalibration",
    "SpaceRangerFormatError",
    "array_positions",
    "calibrate_pixels",
    "grid_neighbor_pairs",
    "lattice",
    "lattice_spacing",
    "pixel_calibration",
    "read_spaceranger",
    "read_visium_hd",
    "um_per_pixel",
]

SPOT_DIAMETER_UM = 55.0  # the capture area of a spot
SPOT_SPACING_UM = 100.0  # centre-to-centre distance of neighbouring spots
# 10x's `spot_diameter_fullres` is the pixel width of a theoretical 65 um spot.
SCALEFACTOR_SPOT_DIAMETER_UM = 65.0
# (d array_row, d array_col) of the hexagon neighbours; the other three are their negatives.
GRID_NEIGHBOR_OFFSETS = ((0, 2), (1, 1), (1, -1))
# the same for a square lattice (Visium HD bins): four neighbours one step away
SQUARE_NEIGHBOR_OFFSETS = ((0, 1), (1, 0))
# the scale factors Visium HD adds for its bins, and the bin widths Space Ranger writes
HD_SCALEFACTORS = ("bin_size_um", "microns_per_pixel")
HD_BIN_SIZES_UM = (2.0, 8.0, 16.0)
MIN_GRID_PAIRS = 3
CALIBRATION_TOLERANCE = 0.05
# Space Ranger 3.x+ and Visium HD (parquet), 2.x (CSV with header), 1.x (CSV without)
POSITION_FILES = ("tissue_positions.parquet", "tissue_positions.csv", "tissue_positions_list.csv")
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


class SpaceRangerFormatError(ValueError):
    """A Space Ranger folder is missing a file or holds a malformed one.

    The message names the offending file and, where it applies, the line or key.
    It is a :class:`ValueError`, so code that catches bad input in general
    catches it too.
    """


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


def _position_table(path: Path) -> tuple[pd.DataFrame, str]:
    """The six position columns of a CSV (with or without header) or a parquet file, and how rows are named.

    CSV cells stay text, so that numbers are parsed exactly and a bad cell is
    reported by line; parquet columns keep their stored types.
    """
    if path.suffix == ".parquet":
        try:
            raw = pd.read_parquet(path)
        except Exception as err:
            raise SpaceRangerFormatError(f"{path}: cannot read as parquet ({type(err).__name__}: {err})") from err
        missing = [name for name in POSITION_COLUMNS if name not in raw.columns]
        if missing:
            raise SpaceRangerFormatError(
                f"{path}: no column {', '.join(missing)} (columns: {', '.join(map(str, raw.columns))})"
            )
        return raw[POSITION_COLUMNS].reset_index(drop=True), "row"
    try:
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except Exception as err:
        raise SpaceRangerFormatError(f"{path}: cannot parse as CSV ({str(err).strip()})") from err
    if raw.shape[1] != len(POSITION_COLUMNS):
        raise SpaceRangerFormatError(
            f"{path}: expected {len(POSITION_COLUMNS)} columns ({','.join(POSITION_COLUMNS)}), found {raw.shape[1]}"
        )
    # Detect the header from content, not from the file name: renamed files exist.
    header = [str(name).strip().lower() for name in raw.iloc[0]] if len(raw) else []
    if header and header[0] == "barcode":
        # a header names the columns: read them by name, never by position
        if sorted(header) != sorted(POSITION_COLUMNS):
            raise SpaceRangerFormatError(
                f"{path}: header {','.join(header)} does not name the columns {','.join(POSITION_COLUMNS)}"
            )
        raw = raw.iloc[1:, [header.index(name) for name in POSITION_COLUMNS]]
    raw.columns = POSITION_COLUMNS
    return raw, "line"


def _numbers(values: pd.Series, path: Path, column: str, row_name: str) -> np.ndarray:
    """A position column as float64, naming the first non-numeric or non-finite cell."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype=float)
    else:
        text = values.astype(str).str.strip()
        bad = np.flatnonzero(pd.to_numeric(text, errors="coerce").isna().to_numpy())
        if bad.size:
            raise SpaceRangerFormatError(
                f"{path}: non-numeric {column} {values.iloc[bad[0]]!r} on {row_name} {_row_number(values, bad[0])}"
            )
        # Python's float parser is exact; pandas' fast one can be off by one ulp.
        numbers = text.to_numpy().astype(float)
    infinite = np.flatnonzero(~np.isfinite(numbers))
    if infinite.size:
        cell = str(values.iloc[infinite[0]]).strip()
        raise SpaceRangerFormatError(
            f"{path}: non-finite {column} {cell!r} on {row_name} {_row_number(values, infinite[0])}"
        )
    return numbers


def _row_number(values: pd.Series, position: int) -> int:
    """The 1-based line (CSV: the index counts a header) or row (parquet) of a cell."""
    return int(values.index[position]) + 1


def _read_positions(path: Path) -> pd.DataFrame:
    """Positions from any Space Ranger layout; checks shape and types."""
    raw, row_name = _position_table(path)
    if raw.empty:
        raise SpaceRangerFormatError(f"{path}: no spots")
    frame = pd.DataFrame({"barcode": raw["barcode"].astype(str).str.strip().to_numpy()})
    for col in POSITION_COLUMNS[1:]:
        frame[col] = _numbers(raw[col], path, col, row_name)
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
    # bool is an int in Python: JSON `true` must not read as a 1-pixel spot.
    if _positive_number(value) is None:
        raise SpaceRangerFormatError(
            f"{path}: spot_diameter_fullres must be a positive finite number of pixels, got {value!r}"
        )
    _check_bin_scalefactors(scalefactors, path)
    return scalefactors


def _check_bin_scalefactors(scalefactors: dict, path: Path) -> None:
    """Visium HD's bin keys, where present: positive numbers that agree with each other.

    For bins, ``spot_diameter_fullres`` is the bin's width in pixels, so
    ``bin_size_um / spot_diameter_fullres`` must be ``microns_per_pixel``.
    """
    for key in HD_SCALEFACTORS:
        if key in scalefactors and _positive_number(scalefactors[key]) is None:
            raise SpaceRangerFormatError(f"{path}: {key} must be a positive finite number, got {scalefactors[key]!r}")
    if not all(key in scalefactors for key in HD_SCALEFACTORS):
        return
    implied = scalefactors["bin_size_um"] / scalefactors["spot_diameter_fullres"]
    if abs(implied / scalefactors["microns_per_pixel"] - 1) > CALIBRATION_TOLERANCE:
        raise SpaceRangerFormatError(
            f"{path}: microns_per_pixel {scalefactors['microns_per_pixel']:.4g} contradicts bin_size_um "
            f"{scalefactors['bin_size_um']:g} over spot_diameter_fullres {scalefactors['spot_diameter_fullres']:.4g} "
            f"(the bin's width in pixels: {implied:.4g} um per pixel)"
        )


def _check_tissue_positions(positions: pd.DataFrame, path: Path) -> None:
    """Refuse in-tissue spots that all sit at one point; warn on shared positions."""
    pixels = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]]
    distinct = len(pixels.drop_duplicates())
    if len(pixels) > 1 and distinct == 1:
        x, y = pixels.iloc[0]
        raise SpaceRangerFormatError(
            f"{path}: all {len(pixels)} in-tissue spots sit at the same pixel position ({x:g}, {y:g})"
        )
    shared = len(pixels) - distinct
    if shared:
        warnings.warn(
            f"{path}: {shared} of {len(pixels)} in-tissue spots repeat the pixel position of another spot; "
            "their distances are zero",
            stacklevel=3,
        )
    grid_shared = int(positions.duplicated(["array_row", "array_col"]).sum())
    if grid_shared:
        warnings.warn(
            f"{path}: {grid_shared} of {len(positions)} in-tissue spots repeat the array_row/array_col of another spot",
            stacklevel=3,
        )


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


def _plot_defaults(images: dict, scalefactors: dict) -> None:
    """A folder with the low-resolution PNG only: that image is also ``images["hires"]``.

    squidpy's ``spatial_scatter`` takes ``images["hires"]`` and its first scale
    factor whose name holds ``"hires"`` unless told otherwise (scanpy's
    ``spatial`` takes ``"hires"``, else ``"lowres"``), so ``tissue_hires_scalef``
    becomes the low-resolution image's scale factor: every plot then lays the
    spots on the image that is there. ``spot_diameter_fullres``, the only scale
    factor the micrometre calibration reads, is left as it is.
    """
    lowres_scalef = scalefactors.get("tissue_lowres_scalef")
    valid = (
        isinstance(lowres_scalef, (int, float))
        and not isinstance(lowres_scalef, bool)
        and lowres_scalef > 0
        and math.isfinite(lowres_scalef)
    )
    if "hires" not in images and "lowres" in images and valid:
        images["hires"] = images["lowres"]
        scalefactors["tissue_hires_scalef"] = lowres_scalef


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

    Every position layout is read: Space Ranger 1.x's
    ``tissue_positions_list.csv`` (no header), 2.x's ``tissue_positions.csv``
    (with header; the header is recognized by its content, not by the file
    name) and the ``tissue_positions.parquet`` of later versions and of
    Visium HD's bins (see :func:`read_visium_hd`); columns are read by name. Repeated gene names are made unique. Spots that share a pixel or
    array position with another spot are kept, with a warning.

    Parameters
    ----------
    path
        Folder with the count matrix and ``spatial/`` (positions,
        ``scalefactors_json.json``, optional PNGs). The matrix may also be named
        as 10x's download pages name it,
        ``{sample_id}_filtered_feature_bc_matrix.h5``.
    count_file
        Matrix file name.
    library_id
        Key in ``uns["spatial"]``; defaults to the h5's ``library_ids``
        attribute, else the download prefix, else the folder name (the sample
        folder for a folder named ``outs``).

    Returns
    -------
    anndata.AnnData
        The in-tissue spots present in the matrix, in matrix order: counts in
        ``X`` (CSR, float32); ``obs`` columns ``in_tissue``, ``array_row``,
        ``array_col``; full-resolution pixels ``(x, y) = (pxl_col, pxl_row)``
        in ``obsm["spatial"]``; ``var["gene_ids"]`` with unique ``var_names``;
        and ``uns["spatial"][library_id]`` with ``images``, ``scalefactors``
        and ``metadata``. squidpy's ``spatial_scatter`` and scanpy's
        ``spatial`` plot it with their defaults: where the folder has the
        low-resolution PNG only, it is also ``images["hires"]``, and
        ``tissue_hires_scalef`` is its scale factor.

    Raises
    ------
    SpaceRangerFormatError
        When a file is missing or malformed, when all in-tissue spots sit at
        one pixel position, or when matrix and positions share no in-tissue
        barcode. The message names the file.

    See Also
    --------
    pixel_calibration : how the pixels of ``obsm["spatial"]`` become micrometres.

    Examples
    --------
    >>> import dpst
    >>> adata = dpst.io.read_spaceranger("V1_Mouse_Brain_Sagittal_Anterior/outs")
    >>> adata.obsm["spatial"][:2]  # full-resolution pixels, (x, y)
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
    _plot_defaults(images, scalefactors)

    on_tissue = positions.index[positions["in_tissue"] == 1]
    keep = adata.obs_names.isin(on_tissue)
    if not keep.any():
        raise SpaceRangerFormatError(f"{positions_file}: no in-tissue barcode in common with {h5}")
    missing = ~adata.obs_names.isin(positions.index)
    if missing.any():
        warnings.warn(f"{h5}: {missing.sum()} barcodes absent from {positions_file.name}; dropped", stacklevel=2)
    adata = adata[keep].copy()

    pos = positions.loc[adata.obs_names]
    _check_tissue_positions(pos, positions_file)
    adata.obs = pd.DataFrame(
        {c: pos[c].to_numpy() for c in ("in_tissue", "array_row", "array_col")}, index=adata.obs_names
    )
    adata.obsm["spatial"] = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)

    lib = _library_id(library_id, attrs, h5, count_file, path)
    metadata = {k: attrs[k] for k in ("chemistry_description", "software_version") if k in attrs}
    adata.uns["spatial"] = {lib: {"images": images, "scalefactors": scalefactors, "metadata": metadata}}
    return adata


def _bin_folder(path: Path, bin_size: int) -> Path:
    """``square_{bin_size:03d}um`` under a Visium HD ``outs/``, its ``binned_outputs/``, or the folder itself."""
    name = f"square_{bin_size:03d}um"
    for folder in (path / "binned_outputs" / name, path / name, path):
        if folder.name == name and folder.is_dir():
            return folder
    parent = path / "binned_outputs" if (path / "binned_outputs").is_dir() else path
    found = sorted(p.name for p in parent.glob("square_*um") if p.is_dir()) if parent.is_dir() else []
    listed = f"bin folders there: {', '.join(found)}" if found else "no square_*um folder there"
    raise SpaceRangerFormatError(f"{parent}: no {name} folder for bin_size={bin_size} ({listed})")


def _sample_name(bins: Path) -> str:
    """The sample of a bin folder: the folder holding ``outs/`` (or ``binned_outputs/``), as for Visium."""
    above = bins.parent.parent if bins.parent.name == "binned_outputs" else bins.parent
    return above.parent.name if above.name == "outs" and above.parent.name else above.name


def read_visium_hd(
    path: str | os.PathLike,
    bin_size: int = 8,
    count_file: str = "filtered_feature_bc_matrix.h5",
    library_id: str | None = None,
) -> ad.AnnData:
    """Read one bin size of a Visium HD (Space Ranger 3.x+) output into AnnData.

    A bin folder (``binned_outputs/square_008um``) has the layout of a Visium
    ``outs/`` folder, so it is read by :func:`read_spaceranger`, with every check
    of that reader; the positions are ``spatial/tissue_positions.parquet``. The
    bins' pixels become micrometres later, in :func:`dpst.pp.spatial_coordinates`,
    by the bins' own rule: ``bin_size_um`` over the pixel spacing of
    neighbouring bins, checked against ``microns_per_pixel``.

    Parameters
    ----------
    path
        The Visium HD ``outs/`` folder, its ``binned_outputs/``, or the bin folder.
    bin_size
        Bin width in micrometres (2, 8 and 16 in Space Ranger's output).
    count_file
        Matrix file name in the bin folder.
    library_id
        Key in ``uns["spatial"]``; defaults to ``{sample}_square_{bin_size:03d}um``,
        the sample being the folder that holds ``outs/``.

    Returns
    -------
    anndata.AnnData
        The in-tissue bins, laid out as :func:`read_spaceranger` lays out spots:
        counts in ``X``, ``obs`` ``in_tissue``/``array_row``/``array_col``,
        full-resolution pixels in ``obsm["spatial"]`` and the scale factors
        (with ``bin_size_um`` and ``microns_per_pixel``) in ``uns["spatial"]``.

    Raises
    ------
    SpaceRangerFormatError
        When the bin folder or one of its files is missing or malformed, when
        the scale factors contradict the folder's bin size or each other, or
        when the bins do not lie on a square lattice.

    Examples
    --------
    >>> bins = dpst.io.read_visium_hd("Visium_HD_Mouse_Brain/outs", bin_size=8)
    >>> dpst.pp.spatial_coordinates(bins)[:2]  # micrometres, 8 um apart  # doctest: +SKIP
    """
    if isinstance(bin_size, bool) or not isinstance(bin_size, (int, np.integer)) or bin_size < 1:
        raise ValueError(f"bin_size must be a positive whole number of micrometres, got {bin_size!r}")
    path = Path(path)
    if not path.is_dir():
        raise SpaceRangerFormatError(f"{path}: Visium HD folder not found")
    bins = _bin_folder(path, int(bin_size))
    sample = _sample_name(bins)
    adata = read_spaceranger(bins, count_file, library_id or (f"{sample}_{bins.name}" if sample else bins.name))
    entry = next(iter(adata.uns["spatial"].values()))
    scalefactors, source = entry["scalefactors"], bins / "spatial" / "scalefactors_json.json"
    stated = scalefactors.setdefault("bin_size_um", float(bin_size))  # the folder's name states it too
    if stated != bin_size:
        raise SpaceRangerFormatError(f"{source}: bin_size_um {stated:g} contradicts the folder {bins.name}")
    if lattice(adata.obs["array_row"], adata.obs["array_col"]) != "square":
        raise SpaceRangerFormatError(
            f"{bins / 'spatial'}: array_row/array_col of the bins do not form a square lattice"
        )
    return adata


@dataclass(frozen=True)
class PixelCalibration:
    """How full-resolution pixels map to micrometres for one library.

    Returned by :func:`pixel_calibration`.

    Attributes
    ----------
    um_per_pixel
        Micrometres per full-resolution pixel.
    method
        ``"grid"`` (from the spacing of grid neighbours), ``"spot_diameter"``
        (the fallback, from ``spot_diameter_fullres``), ``"bin_grid"`` (bins of a
        square lattice, ``bin_size_um`` apart) or ``"microns_per_pixel"`` (the
        bins' metadata alone).
    n_grid_pairs
        Grid-neighbour pairs the grid estimate used; 0 when no grid was used.
    spot_diameter_estimate
        ``65 / spot_diameter_fullres`` when the scale factor exists (Visium spots), else None.
    metadata_estimate
        ``microns_per_pixel`` of the scale factors (Visium HD) when they hold it, else None.
    """

    um_per_pixel: float
    method: str  # "grid", "spot_diameter", "bin_grid" or "microns_per_pixel"
    n_grid_pairs: int  # grid-neighbour pairs the grid estimate used (0 when none was)
    spot_diameter_estimate: float | None  # 65 / spot_diameter_fullres, when the scale factor exists
    metadata_estimate: float | None = None  # scalefactors' microns_per_pixel (Visium HD)

    def as_dict(self) -> dict:
        """The fields as a dict, leaving out those that are None (for JSON and ``uns``).

        Returns
        -------
        dict
            ``{field name: value}``.
        """
        return {k: v for k, v in asdict(self).items() if v is not None}


def grid_neighbor_pairs(array_row, array_col, offsets=GRID_NEIGHBOR_OFFSETS) -> np.ndarray:
    """Index pairs of spots that are hexagon neighbours on the Visium array.

    On the Visium array a spot's six neighbours lie at
    ``(array_row, array_col)`` offsets ``(0, +-2)`` and ``(+-1, +-1)``.

    Parameters
    ----------
    array_row, array_col
        Integer array positions of the spots, one entry per spot.
    offsets
        ``(d array_row, d array_col)`` of half the neighbours (the others are
        their negatives): the Visium hexagon by default, ``SQUARE_NEIGHBOR_OFFSETS``
        for a square lattice of bins.

    Returns
    -------
    numpy.ndarray
        ``(n_pairs, 2)`` int64 indices into the spots; each neighbouring pair
        appears once.

    Examples
    --------
    >>> dpst.io.grid_neighbor_pairs([0, 0, 1], [0, 2, 1])  # three mutual neighbours
    array([[0, 1],
           [0, 2],
           [1, 2]])
    """
    row = np.asarray(array_row, dtype=np.int64)
    col = np.asarray(array_col, dtype=np.int64)
    if row.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    width = int(col.max() - col.min()) + 5  # room for the +-2 column offsets
    key = (row - row.min() + 2) * width + (col - col.min() + 2)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    pairs = []
    for d_row, d_col in offsets:
        target = key + d_row * width + d_col
        pos = np.clip(np.searchsorted(sorted_key, target), 0, len(key) - 1)
        hit = sorted_key[pos] == target
        pairs.append(np.column_stack([np.flatnonzero(hit), order[pos[hit]]]))
    return np.concatenate(pairs)


def lattice_spacing(coords: np.ndarray, array_row, array_col, geometry: str) -> tuple[float, int]:
    """Median distance between lattice neighbours in ``coords``, and how many pairs it is over.

    Parameters
    ----------
    coords
        ``(N, 2)`` coordinates of the spots (pixels or micrometres).
    array_row, array_col
        Their integer array positions.
    geometry
        ``"hexagon"`` (Visium) or ``"square"`` (bins), as :func:`lattice` names them.

    Returns
    -------
    tuple
        The median neighbour distance, in the unit of ``coords``, and the number of neighbour pairs.
    """
    offsets = GRID_NEIGHBOR_OFFSETS if geometry == "hexagon" else SQUARE_NEIGHBOR_OFFSETS
    pairs = grid_neighbor_pairs(array_row, array_col, offsets)
    distances = np.linalg.norm(coords[pairs[:, 0]] - coords[pairs[:, 1]], axis=1)
    return float(np.median(distances)), len(pairs)


def _positive_number(value) -> float | None:
    """A positive finite number (never a JSON bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    return float(value) if value > 0 and math.isfinite(value) else None


def _spot_diameter_estimate(scalefactors: dict) -> float | None:
    diameter = _positive_number(scalefactors.get("spot_diameter_fullres"))
    return None if diameter is None else SCALEFACTOR_SPOT_DIAMETER_UM / diameter


def _grid_estimate(pixels: np.ndarray, array_row, array_col) -> tuple[float | None, int, str]:
    """(um per pixel from the grid or None, pairs used, why the grid could not be used)."""
    if array_row is None or array_col is None:
        return None, 0, "adata.obs has no array_row/array_col"
    pairs = grid_neighbor_pairs(array_row, array_col)
    if len(pairs) < MIN_GRID_PAIRS:
        return None, len(pairs), f"only {len(pairs)} pairs of neighbouring spots on the array grid"
    distances = np.linalg.norm(pixels[pairs[:, 0]] - pixels[pairs[:, 1]], axis=1)
    distances = distances[np.isfinite(distances)]  # NaN coordinates are refused where they are used
    if len(distances) < MIN_GRID_PAIRS:
        return None, len(distances), f"only {len(distances)} pairs of neighbouring spots with finite pixels"
    median = float(np.median(distances))
    if not (median > 0 and math.isfinite(median)):
        return None, len(pairs), f"grid neighbours are {median:g} pixels apart"
    return SPOT_SPACING_UM / median, len(pairs), ""


def array_positions(obs: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``obs["array_row"]`` and ``obs["array_col"]`` as arrays, or (None, None) when the spots have none.

    Parameters
    ----------
    obs
        The spots' ``adata.obs``.

    Returns
    -------
    tuple
        The array rows and columns, or (None, None).
    """
    if {"array_row", "array_col"} <= set(obs.columns):
        return obs["array_row"].to_numpy(), obs["array_col"].to_numpy()
    return None, None


def lattice(array_row, array_col) -> str | None:
    """Which lattice one section's array positions describe: ``"hexagon"``, ``"square"`` or None.

    A Visium array keeps ``array_row + array_col`` even (or odd) on every spot and
    puts neighbours at the hexagon offsets; a square lattice of bins (Visium HD) has
    spots of both parities one step apart.

    Parameters
    ----------
    array_row, array_col
        Integer array positions, one per spot (None: no lattice).

    Returns
    -------
    str or None
        ``"hexagon"``, ``"square"``, or None when the positions describe neither.
    """
    if array_row is None or array_col is None:
        return None
    row, col = np.asarray(array_row), np.asarray(array_col)
    if not (np.issubdtype(row.dtype, np.number) and np.issubdtype(col.dtype, np.number)):
        return None
    if not (np.isfinite(row).all() and np.isfinite(col).all() and (row == np.round(row)).all()):
        return None
    row, col = row.astype(np.int64), col.astype(np.int64)
    if len(np.unique((row + col) % 2)) == 1 and len(grid_neighbor_pairs(row, col)) >= MIN_GRID_PAIRS:
        return "hexagon"
    if len(grid_neighbor_pairs(row, col, SQUARE_NEIGHBOR_OFFSETS)) >= MIN_GRID_PAIRS:
        return "square"
    return None


def _calibrate_bins(pixels: np.ndarray, array_row, array_col, scalefactors: dict, library_id: str) -> PixelCalibration:
    """Bins of a square lattice (Visium HD): ``bin_size_um`` over the pixel spacing of neighbouring bins.

    ``microns_per_pixel`` (the same scale factors) is the cross-check, or the
    scale itself when the bin size is not given; a contradiction is refused,
    since one of the two numbers is wrong and either would put every distance off.
    """
    bin_size = _positive_number(scalefactors.get("bin_size_um"))
    stated = _positive_number(scalefactors.get("microns_per_pixel"))
    if bin_size is None and stated is None:
        raise ValueError(
            f"library {library_id!r}: array_row/array_col form a square lattice (binned data such as Visium HD), "
            "and its scalefactors give neither bin_size_um nor microns_per_pixel: read the bins with "
            "dpst.io.read_visium_hd, or give the coordinates in micrometres (coordinate_unit='um')"
        )
    if bin_size is None:
        assert stated is not None  # refused above when both are missing
        return PixelCalibration(stated, "microns_per_pixel", 0, None, stated)
    spacing, n_pairs = lattice_spacing(pixels, array_row, array_col, "square")
    if not (spacing > 0 and math.isfinite(spacing)):
        raise ValueError(f"library {library_id!r}: neighbouring bins are {spacing:g} pixels apart")
    from_grid = bin_size / spacing
    if stated is not None and abs(stated / from_grid - 1) > CALIBRATION_TOLERANCE:
        raise ValueError(
            f"library {library_id!r}: scalefactors microns_per_pixel {stated:.4g} contradicts the bins: "
            f"neighbouring bins are {spacing:.4g} pixels apart, which with bin_size_um {bin_size:g} gives "
            f"{from_grid:.4g} um per pixel"
        )
    return PixelCalibration(from_grid, "bin_grid", n_pairs, None, stated)


def calibrate_pixels(
    pixels: np.ndarray,
    array_row=None,
    array_col=None,
    scalefactors: dict | None = None,
    library_id: str = "",
) -> PixelCalibration:
    """Micrometres per full-resolution pixel of one library's spots, from arrays.

    The rule of :func:`pixel_calibration`, on the spots of a single library:
    the grid estimate when ``array_row``/``array_col`` give at least three
    hexagon-neighbour pairs, else ``65 / spot_diameter_fullres``, with the
    warnings described there.

    Parameters
    ----------
    pixels
        ``(N, 2)`` full-resolution pixel coordinates of the library's spots.
    array_row, array_col
        Their Visium array positions, or None when unknown.
    scalefactors
        The library's ``uns["spatial"][library_id]["scalefactors"]``, or None.
    library_id
        The library's name, for messages.

    Returns
    -------
    PixelCalibration
        The scale and how it was found.

    Raises
    ------
    ValueError
        When neither the grid nor the scale factor gives a scale; for a square
        lattice of bins (Visium HD, calibrated as ``bin_size_um`` over the pixel
        spacing of neighbouring bins), when the scale factors give neither
        ``bin_size_um`` nor ``microns_per_pixel`` or their ``microns_per_pixel``
        differs from the bins' spacing by more than 5%.
    """
    pixels = np.asarray(pixels, dtype=float)[:, :2]
    if lattice(array_row, array_col) == "square":
        return _calibrate_bins(pixels, array_row, array_col, scalefactors or {}, library_id)
    from_diameter = _spot_diameter_estimate(scalefactors or {})
    from_grid, n_pairs, why_not = _grid_estimate(pixels, array_row, array_col)
    if from_grid is None:
        if from_diameter is None:
            raise ValueError(
                f"library {library_id!r}: cannot calibrate pixels to micrometres: {why_not}, and "
                "no scalefactors with a positive finite spot_diameter_fullres; pass coordinate_unit='um' "
                "if the coordinates are micrometres already"
            )
        warnings.warn(
            f"library {library_id!r}: {why_not}; micrometres per pixel taken from "
            f"{SCALEFACTOR_SPOT_DIAMETER_UM:g} / spot_diameter_fullres = {from_diameter:.4g}",
            stacklevel=3,
        )
        return PixelCalibration(from_diameter, "spot_diameter", 0, from_diameter)
    if from_diameter is not None and abs(from_diameter / from_grid - 1) > CALIBRATION_TOLERANCE:
        warnings.warn(
            f"library {library_id!r}: the spot grid gives {from_grid:.4g} um per pixel, "
            f"{SCALEFACTOR_SPOT_DIAMETER_UM:g} / spot_diameter_fullres gives {from_diameter:.4g} "
            f"({100 * (from_diameter / from_grid - 1):+.0f}%); using the grid",
            stacklevel=3,
        )
    return PixelCalibration(from_grid, "grid", n_pairs, from_diameter)


def pixel_calibration(
    adata: ad.AnnData,
    library_id: str | None = None,
    spatial_key: str = "spatial",
    library_key: str | None = None,
) -> PixelCalibration:
    """Micrometres per full-resolution pixel of one library, with how they were found.

    The grid estimate, ``100 / median pixel distance between hexagon
    neighbours`` (neighbours from ``obs["array_row"]``/``obs["array_col"]``,
    pairs with non-finite pixels left out), is used when at least three
    neighbour pairs exist. Otherwise ``65 / spot_diameter_fullres`` is used,
    with a warning saying why. When both exist and differ by more than 5%, a
    warning gives both and the grid is used. :func:`dpst.pp.spatial_coordinates`
    applies it to every library of an AnnData.

    Parameters
    ----------
    adata
        Spots with pixel coordinates in ``obsm[spatial_key]`` and a library in
        ``uns["spatial"]`` (as written by :func:`read_spaceranger`).
    library_id
        Library in ``uns["spatial"]`` whose scale factors to read; may be
        omitted when there is exactly one.
    spatial_key
        Key of the pixel coordinates in ``obsm``.
    library_key
        Column of ``obs`` naming each spot's library; the grid estimate then uses
        the spots of ``library_id`` only. None: all spots are that library's.

    Returns
    -------
    PixelCalibration
        The scale and how it was found.

    Raises
    ------
    KeyError
        When ``obsm`` has no ``spatial_key`` or ``obs`` no ``library_key``.
    ValueError
        When the library is missing or ambiguous, or when neither the grid nor
        the scale factor gives a scale.

    Examples
    --------
    >>> adata = dpst.sim.simulate_section(n_spots=300, n_genes=100)
    >>> calibration = dpst.io.pixel_calibration(adata)
    >>> calibration.method, round(calibration.um_per_pixel, 4), calibration.n_grid_pairs
    ('grid', 0.618, 834)
    """
    libraries = adata.uns.get("spatial") or {}
    if library_id is None:
        if len(libraries) != 1:
            raise ValueError(
                f"pixel_calibration needs a library_id when adata.uns['spatial'] does not hold exactly one "
                f"library; found {list(libraries)}"
            )
        library_id = next(iter(libraries))
    if library_id not in libraries:
        raise ValueError(f"library {library_id!r} not in adata.uns['spatial'] (present: {list(libraries)})")
    if spatial_key not in adata.obsm:
        raise KeyError(f"adata.obsm has no {spatial_key!r} (keys: {list(adata.obsm)})")
    spots: slice | np.ndarray = slice(None)
    if library_key is not None:
        if library_key not in adata.obs:
            raise KeyError(f"adata.obs has no {library_key!r} column (library_key)")
        spots = np.flatnonzero(adata.obs[library_key].astype(str).to_numpy() == str(library_id))
    array_row, array_col = array_positions(adata.obs)
    return calibrate_pixels(
        np.asarray(adata.obsm[spatial_key], dtype=float)[spots],
        None if array_row is None else array_row[spots],
        None if array_col is None else array_col[spots],
        libraries[library_id].get("scalefactors"),
        library_id,
    )


def um_per_pixel(
    adata: ad.AnnData, library_id: str | None = None, spatial_key: str = "spatial", library_key: str | None = None
) -> float:
    """Micrometres per full-resolution pixel.

    The number of :func:`pixel_calibration`, without how it was found.

    Parameters
    ----------
    adata
        Spots with pixel coordinates and a library in ``uns["spatial"]``.
    library_id
        Library whose scale factors to read; may be omitted when
        ``uns["spatial"]`` holds one library.
    spatial_key
        Key of the pixel coordinates in ``obsm``.
    library_key
        Column of ``obs`` naming each spot's library (see :func:`pixel_calibration`).

    Returns
    -------
    float
        Micrometres per pixel.
    """
    return pixel_calibration(adata, library_id, spatial_key, library_key).um_per_pixel
