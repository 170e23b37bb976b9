"""A section given as an AnnData file (``h5ad`` in the config): read it, and leave its micrometres where the models look."""

from __future__ import annotations

import os

import anndata as ad

from dpst_study.jobs import one_line


def read_h5ad_section(path: str | os.PathLike, spatial_key: str) -> ad.AnnData:
    """The AnnData of an ``h5ad`` section, checked to hold its coordinates in ``obsm[spatial_key]``.

    Parameters
    ----------
    path
        The section's ``.h5ad`` file (raw counts in ``X``).
    spatial_key
        The section's ``spatial_key``: key of the spot coordinates in ``obsm``.

    Returns
    -------
    anndata.AnnData
        The section as stored.

    Raises
    ------
    ValueError
        The file cannot be read as an AnnData, or its ``obsm`` has no ``spatial_key``
        (both the user's to fix, said in one line).
    """
    try:
        adata = ad.read_h5ad(path)
    except Exception as err:  # anndata raises OSError, TypeError, KeyError... on a file it cannot read
        raise ValueError(f"cannot read {path} as an AnnData: {one_line(err)}") from err
    if spatial_key not in adata.obsm:
        raise ValueError(
            f"{path} has no obsm[{spatial_key!r}] (obsm keys: {', '.join(adata.obsm) or 'none'}); "
            "set the section's spatial_key to the key of the spot coordinates"
        )
    return adata


def keep_micrometres_for_models(adata: ad.AnnData) -> str:
    """Store a preprocessed section's micrometres as ``obsm["spatial"]``, with ``uns["spatial_unit"] = "um"``.

    The models, like :func:`dpst.pp.spatial_coordinates` with its defaults, read
    ``obsm["spatial"]`` and take it as micrometres when ``uns["spatial_unit"]`` is
    ``"um"``. So an ``h5ad`` section trains with the study's unchanged settings,
    whatever key and unit its file used: on exactly ``obsm["spatial_um"]``, the
    micrometres preprocessing derived (and recorded in
    ``uns["dpst_preprocess"]["coordinates"]``). Coordinates stored under another
    key stay there; pixels stored under ``"spatial"`` are replaced (their
    calibration is in that record).

    Parameters
    ----------
    adata
        A section processed by :func:`dpst.pp.preprocess`; changed in place.

    Returns
    -------
    str
        A line for the job's log.
    """
    coordinates = adata.uns["dpst_preprocess"]["coordinates"]
    adata.obsm["spatial"] = adata.obsm["spatial_um"].copy()
    adata.uns["spatial_unit"] = "um"
    return (
        f"obsm['spatial'] holds the micrometres (from obsm[{coordinates['spatial_key']!r}], "
        f"coordinate_unit {coordinates['coordinate_unit']!r}), uns['spatial_unit'] = 'um': what the models read"
    )
