"""The one place where stored spot coordinates become micrometres, library by library.

A library is one tissue section. ``library_key`` names the ``obs`` column that
says which section each spot belongs to (as in squidpy); without it every spot
is one library. Each library's coordinates are either full-resolution pixels,
calibrated with :func:`dpst.io.calibrate_pixels` (Visium's grid rule), or
micrometres already:

- ``coordinate_unit="um"`` or ``uns["spatial_unit"] == "um"``: micrometres;
- ``coordinate_unit="pixel"``: pixels, calibrated;
- ``coordinate_unit="auto"``: pixels when the library has an entry in
  ``uns["spatial"]`` (scanpy's and squidpy's convention for Visium images),
  micrometres otherwise (imaging platforms, curated tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd

from dpst.graph import group_spots
from dpst.io import (
    CALIBRATION_TOLERANCE,
    HD_BIN_SIZES_UM,
    SPOT_SPACING_UM,
    array_positions,
    calibrate_pixels,
    lattice,
    lattice_spacing,
)

CoordinateUnit = Literal["auto", "pixel", "um"]
COORDINATE_UNITS = ("auto", "pixel", "um")
# the name of the one library when no library_key is given and uns["spatial"] names none
SINGLE_LIBRARY = "all"


@dataclass(frozen=True)
class Libraries:
    """Which library (tissue section) each spot belongs to.

    Attributes
    ----------
    key
        The ``obs`` column (``library_key``), or None for a single library.
    names
        The libraries' names, in the order of their codes.
    codes
        ``(n_obs,)`` int64: each spot's index into ``names``.
    """

    key: str | None
    names: tuple[str, ...]
    codes: np.ndarray

    @property
    def several(self) -> bool:
        """More than one library: graphs and metrics are then built library by library."""
        return len(self.names) > 1

    def spots(self) -> list[np.ndarray]:
        """Sorted spot indices of each library, in the order of ``names``."""
        return group_spots(self.codes)

    def groups(self) -> np.ndarray | None:
        """``codes`` when there are several libraries, else None (what the array-level graphs take)."""
        return self.codes if self.several else None


def libraries(adata: ad.AnnData, library_key: str | None = None) -> Libraries:
    """Each spot's library, from ``obs[library_key]``, with the checks every multi-section step relies on.

    Parameters
    ----------
    adata
        The spots.
    library_key
        Column of ``adata.obs`` naming each spot's library (section); None: one library.

    Returns
    -------
    Libraries
        Names and per-spot codes (categories in their order; other values sorted).

    Raises
    ------
    KeyError
        ``library_key`` is not a column of ``obs``.
    ValueError
        A spot has no library, a library has fewer than 2 spots, or spot names repeat.
    """
    if library_key is None:
        spatial = adata.uns.get("spatial") or {}
        name = str(next(iter(spatial))) if len(spatial) == 1 else SINGLE_LIBRARY
        _check_unique_names(adata, None, None)
        return Libraries(None, (name,), np.zeros(adata.n_obs, dtype=np.int64))
    if library_key not in adata.obs.columns:
        raise KeyError(f"adata.obs has no {library_key!r} column (library_key); columns: {list(adata.obs.columns)}")
    column = adata.obs[library_key]
    missing = column.isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"adata.obs[{library_key!r}] is missing for {missing.sum()} of {adata.n_obs} spots "
            f"(first: {adata.obs_names[missing][0]!r}); every spot needs its library"
        )
    values = column.astype(str).to_numpy()
    if isinstance(column.dtype, pd.CategoricalDtype):
        present = set(values)
        names = tuple(str(c) for c in column.cat.categories if str(c) in present)
    else:
        names = tuple(sorted(set(values)))
    codes = pd.Index(names).get_indexer(values).astype(np.int64)
    sizes = np.bincount(codes, minlength=len(names))
    if (sizes < 2).any():
        small = names[int(np.argmin(sizes))]
        raise ValueError(
            f"library {small!r} (adata.obs[{library_key!r}]) has {sizes.min()} spot; "
            "each library needs at least 2 spots"
        )
    _check_unique_names(adata, library_key, values)
    return Libraries(library_key, names, codes)


def _check_unique_names(adata: ad.AnnData, library_key: str | None, values: np.ndarray | None) -> None:
    """Spot names must be unique: results are written back and models reloaded by name."""
    duplicated = adata.obs_names.duplicated(keep=False)
    if not duplicated.any():
        return
    first = adata.obs_names[duplicated][0]
    if library_key is None or values is None:
        raise ValueError(
            f"adata.obs_names repeat ({duplicated.sum()} spots share a name, first {first!r}); "
            "make them unique with adata.obs_names_make_unique()"
        )
    where = sorted(set(values[adata.obs_names == first]))
    raise ValueError(
        f"adata.obs_names repeat across libraries ({duplicated.sum()} spots share a name, first {first!r} in "
        f"{', '.join(where)} of adata.obs[{library_key!r}]); concatenate the sections with "
        "anndata.concat(..., label=library_key, index_unique='-')"
    )


def _stored_coordinates(adata: ad.AnnData, spatial_key: str, libs: Libraries) -> np.ndarray:
    """``obsm[spatial_key]`` as float64 ``(N, 2)``, refusing what is not planar and finite."""
    if spatial_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {spatial_key!r} (keys: {list(adata.obsm)}); "
            "pass spatial_key= the key of the spot coordinates"
        )
    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(
            f"adata.obsm[{spatial_key!r}] has shape {coords.shape}; dpst needs planar (x, y) coordinates, "
            f"shape (n_obs, 2): keep the two columns of the section's plane, e.g. "
            f"adata.obsm[{spatial_key!r}] = adata.obsm[{spatial_key!r}][:, :2]"
        )
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        where = f" in library {libs.names[libs.codes[first]]!r}" if libs.several else ""
        raise ValueError(
            f"adata.obsm[{spatial_key!r}] has NaN or infinite coordinates for {bad.sum()} of "
            f"{adata.n_obs} spots (first: {adata.obs_names[first]!r}{where})"
        )
    return coords


def _library_entry(spatial: dict, name: str, libs: Libraries, unit: CoordinateUnit, spatial_unit) -> dict | None:
    """The library's ``uns["spatial"]`` entry; one library takes the only entry whatever its name.

    Pixels must never be read as micrometres because a name differs: where
    ``uns["spatial"]`` has entries, a library without one is refused unless the
    unit is stated.
    """
    if len(spatial) == 1 and not libs.several:
        return next(iter(spatial.values()))
    if name in spatial or not spatial or unit != "auto" or spatial_unit == "um":
        return spatial.get(name)
    raise ValueError(
        f"library {name!r} of adata.obs[{libs.key!r}] has no entry in adata.uns['spatial'] "
        f"(entries: {', '.join(map(str, spatial))}): name the libraries as uns['spatial'] does, "
        "or pass coordinate_unit='um' if the coordinates are micrometres"
    )


def _check_taken_as_micrometres(coords: np.ndarray, array_row, array_col, name: str, spatial_key: str) -> None:
    """Refuse pixels that ``"auto"`` would take as micrometres, where the spots' own lattice tells.

    Tables from other readers (spatialdata-io's Visium HD tables among them) keep
    full-resolution pixels in ``obsm`` without ``uns["spatial"]``. On the Visium
    hexagon neighbours are 100 um apart, and bins are as far apart as Space
    Ranger's bin widths (2, 8 or 16 um), so a lattice at another spacing is not
    micrometres (other bin widths pass with ``coordinate_unit="um"``).
    """
    geometry = lattice(array_row, array_col)
    if geometry is None:
        return
    spacing, _ = lattice_spacing(coords, array_row, array_col, geometry)
    if geometry == "hexagon":
        fine, expected = abs(spacing / SPOT_SPACING_UM - 1) <= CALIBRATION_TOLERANCE, f"{SPOT_SPACING_UM:g} um"
    else:
        fine = any(abs(spacing / width - 1) <= CALIBRATION_TOLERANCE for width in HD_BIN_SIZES_UM)
        expected = f"one of Visium HD's bin widths ({', '.join(f'{w:g}' for w in HD_BIN_SIZES_UM)} um)"
    if not fine:
        raise ValueError(
            f"library {name!r}: adata.obsm[{spatial_key!r}] has no uns['spatial'] entry, so it would be taken as "
            f"micrometres, but neighbouring spots of its {geometry} lattice (array_row/array_col) are {spacing:.4g} "
            f"apart, not {expected}: these look like pixels. Read the Space Ranger folder with "
            "dpst.io.read_spaceranger or dpst.io.read_visium_hd, or pass coordinate_unit='um' if they are micrometres"
        )


def _is_pixels(adata: ad.AnnData, entry, unit: CoordinateUnit) -> bool:
    if unit != "auto":
        return unit == "pixel"
    return entry is not None and adata.uns.get("spatial_unit") != "um"


def micrometre_coordinates(
    adata: ad.AnnData,
    spatial_key: str = "spatial",
    unit: CoordinateUnit = "auto",
    library_key: str | None = None,
) -> tuple[np.ndarray, dict, Libraries]:
    """Spot coordinates in micrometres, a record of how each library's were obtained, and the libraries.

    Parameters
    ----------
    adata
        Spots with coordinates in ``obsm[spatial_key]``.
    spatial_key
        Key of the coordinates in ``adata.obsm``.
    unit
        ``"auto"``, ``"pixel"`` or ``"um"`` (see :func:`spatial_coordinates`).
    library_key
        Column of ``obs`` naming each spot's library; None: one library.

    Returns
    -------
    coords : numpy.ndarray
        ``(n_obs, 2)`` float64 micrometres.
    record : dict
        ``spatial_key``, ``coordinate_unit``, ``library_key`` (when given) and ``libraries``:
        per library, ``unit`` (``"um"`` or ``"pixel"``), ``conversion`` and, for pixels, the
        :class:`dpst.io.PixelCalibration` fields.
    libs : Libraries
        Each spot's library (:func:`libraries`).
    """
    if unit not in COORDINATE_UNITS:
        raise ValueError(f"coordinate_unit must be 'auto', 'pixel' or 'um', got {unit!r}")
    libs = libraries(adata, library_key)
    stored = _stored_coordinates(adata, spatial_key, libs)
    spatial = adata.uns.get("spatial") or {}
    if library_key is None and len(spatial) > 1 and unit != "um" and adata.uns.get("spatial_unit") != "um":
        raise ValueError(
            f"adata.uns['spatial'] holds {len(spatial)} libraries ({', '.join(map(str, spatial))}): "
            "pass library_key= the obs column naming each spot's library"
        )
    array_row, array_col = array_positions(adata.obs)
    per_library: dict[str, dict] = {}
    coords = np.empty_like(stored)
    for name, spots in zip(libs.names, libs.spots(), strict=True):
        entry = _library_entry(spatial, name, libs, unit, adata.uns.get("spatial_unit"))
        if not _is_pixels(adata, entry, unit):
            if (
                unit == "auto"
                and adata.uns.get("spatial_unit") != "um"
                and array_row is not None
                and array_col is not None
            ):
                _check_taken_as_micrometres(stored[spots], array_row[spots], array_col[spots], name, spatial_key)
            coords[spots] = stored[spots]
            per_library[name] = {"unit": "um", "conversion": "none (taken as micrometres)"}
            continue
        calibration = calibrate_pixels(
            stored[spots],
            None if array_row is None else array_row[spots],
            None if array_col is None else array_col[spots],
            (entry or {}).get("scalefactors"),
            name,
        )
        coords[spots] = stored[spots] * calibration.um_per_pixel
        per_library[name] = {
            "unit": "pixel",
            "conversion": "full-resolution pixels x um_per_pixel",
            **calibration.as_dict(),
        }
    record = {"spatial_key": spatial_key, "coordinate_unit": unit, "libraries": per_library}
    if library_key is not None:
        record["library_key"] = library_key
    return coords, record, libs


def spatial_coordinates(
    adata: ad.AnnData,
    spatial_key: str = "spatial",
    unit: CoordinateUnit = "auto",
    *,
    library_key: str | None = None,
) -> np.ndarray:
    """Spot coordinates in micrometres, as the models, the graphs and the metrics use them.

    Every library (section) is converted on its own: pixels are calibrated on
    that library's spots only, so a section gives the same micrometres to the
    bit alone or among others.

    Parameters
    ----------
    adata
        Spots with coordinates in ``obsm[spatial_key]``: ``(n_obs, 2)``, finite.
    spatial_key
        Key of the coordinates in ``adata.obsm``.
    unit
        ``"auto"``: a library's coordinates are full-resolution pixels when it has
        an entry in ``uns["spatial"]`` (the scanpy/squidpy convention) and
        ``uns["spatial_unit"]`` is not ``"um"``; they are then converted with
        :func:`dpst.io.calibrate_pixels` (calibrated on the spot grid: Visium spot
        centres are 100 um apart). Otherwise they are taken as micrometres
        (imaging platforms, curated tables). ``"pixel"`` always converts,
        ``"um"`` never does.
    library_key
        Column of ``adata.obs`` naming each spot's library (as in squidpy). Each
        library's pixels are calibrated with its own ``uns["spatial"][library]``
        entry; keep them when concatenating with
        ``anndata.concat(..., label=library_key, uns_merge="unique")``.

    Returns
    -------
    numpy.ndarray
        ``(n_obs, 2)`` float64 coordinates in micrometres.

    Raises
    ------
    KeyError
        ``spatial_key`` is not in ``adata.obsm``, or ``library_key`` not in ``adata.obs``.
    ValueError
        ``unit`` is unknown; coordinates are not ``(n_obs, 2)`` or not finite; pixels
        cannot be calibrated; several libraries without ``library_key``; a library
        with fewer than 2 spots; repeated spot names.

    Examples
    --------
    >>> cells = ad.AnnData(obsm={"spatial": np.array([[0.0, 0.0], [10.0, 0.0]])})
    >>> dpst.pp.spatial_coordinates(cells)  # no uns["spatial"]: micrometres as they are
    array([[ 0.,  0.],
           [10.,  0.]])
    """
    return micrometre_coordinates(adata, spatial_key, unit, library_key)[0]
