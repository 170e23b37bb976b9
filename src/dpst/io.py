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
    "pixel_calibration",
    "read_spaceranger",
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
MIN_GRID_PAIRS = 3
CALIBRATION_TOLERANCE = 0.05
POSITION_FILES = ("tissue_positions.csv", "tissue_positions_list.csv")  # v2 (header), v1 (none)
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
    header = [str(name).strip().lower() for name in raw.iloc[0]] if len(raw) else []
    if header and header[0] == "barcode":
        # a header names the columns: read them by name, never by position
        if sorted(header) != sorted(POSITION_COLUMNS):
            raise SpaceRangerFormatError(
                f"{path}: header {','.join(header)} does not name the columns {','.join(POSITION_COLUMNS)}"
            )
        raw = raw.iloc[1:, [header.index(name) for name in POSITION_COLUMNS]]
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
    for col in POSITION_COLUMNS[1:]:
        infinite = np.flatnonzero(~np.isfinite(frame[col].to_numpy()))
        if infinite.size:
            line = raw.index[infinite[0]] + 1
            raise SpaceRangerFormatError(f"{path}: non-finite {col} {raw[col].iloc[infinite[0]]!r} on line {line}")
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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise SpaceRangerFormatError(
            f"{path}: spot_diameter_fullres must be a positive finite number of pixels, got {value!r}"
        )
    return scalefactors


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

    Both position layouts are read: Space Ranger 1.x's
    ``tissue_positions_list.csv`` (no header) and 2.x's ``tissue_positions.csv``
    (with header); the header is recognized by its content, not by the file
    name. Repeated gene names are made unique. Spots that share a pixel or
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


@dataclass(frozen=True)
class PixelCalibration:
    """How full-resolution pixels map to micrometres for one library.

    Returned by :func:`pixel_calibration`.

    Attributes
    ----------
    um_per_pixel
        Micrometres per full-resolution pixel.
    method
        ``"grid"`` (from the spacing of grid neighbours) or ``"spot_diameter"``
        (the fallback, from ``spot_diameter_fullres``).
    n_grid_pairs
        Grid-neighbour pairs the grid estimate used; 0 for the fallback.
    spot_diameter_estimate
        ``65 / spot_diameter_fullres`` when the scale factor exists, else None.
    """

    um_per_pixel: float
    method: str  # "grid" or "spot_diameter"
    n_grid_pairs: int  # grid-neighbour pairs the grid estimate used (0 for the fallback)
    spot_diameter_estimate: float | None  # 65 / spot_diameter_fullres, when the scale factor exists

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


def _spot_diameter_estimate(scalefactors: dict) -> float | None:
    diameter = scalefactors.get("spot_diameter_fullres")
    if isinstance(diameter, bool) or not isinstance(diameter, (int, float, np.number)):
        return None
    if not (diameter > 0 and math.isfinite(diameter)):
        return None
    return SCALEFACTOR_SPOT_DIAMETER_UM / float(diameter)


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
        When neither the grid nor the scale factor gives a scale, or when the
        array positions form a square lattice (binned data), which this rule
        would calibrate as a hexagon.
    """
    pixels = np.asarray(pixels, dtype=float)[:, :2]
    if lattice(array_row, array_col) == "square":
        raise ValueError(
            f"library {library_id!r}: array_row/array_col form a square lattice (binned data such as Visium HD), "
            "which the Visium spot-grid rule cannot calibrate; give the coordinates in micrometres "
            "(coordinate_unit='um')"
        )
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
