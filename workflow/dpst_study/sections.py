"""Reading the study's sections: one section (a Space Ranger folder or an AnnData file), or a group of them.

A section given as an AnnData file (``h5ad`` in the config) is checked to hold its
coordinates, and its micrometres are left where the models look. A group of
sections (``joint`` in the config) is read section by section, each section's
coordinates turned into micrometres with its own settings, and stacked in one
AnnData with the section's name in ``obs["section"]``, for
:func:`dpst.pp.preprocess` with ``library_key="section"`` and a model with
``batch_key="section"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import pandas as pd

from dpst.io import read_spaceranger, read_visium_hd
from dpst.pp._coordinates import micrometre_coordinates
from dpst.pp._preprocess import describe_coordinates
from dpst_study.jobs import one_line

SECTION_KEY = "section"
"""The ``obs`` column naming each spot's section in a group: the library and batch key of its runs."""
ANNOTATION_KEY = "annotation"
"""The ``obs`` column of a group holding each section's labels (its ``domain_key``, a simulation's domains)."""
SIMULATED_DOMAINS = "dpst_simulated_domains.csv"
"""A simulated section's true domains (``barcode``, ``domain``), written beside its Space Ranger files."""


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


def read_section(folder: str | os.PathLike | None, h5ad: str | os.PathLike | None, spatial_key: str = "spatial"):
    """A section as stored: its ``h5ad`` file, or its Space Ranger folder.

    A simulated section's folder holds its true domains (:data:`SIMULATED_DOMAINS`,
    written by the workflow's ``simulate_section`` rule), which become ``obs["domain"]``.

    Parameters
    ----------
    folder
        The section's Space Ranger folder (None for an ``h5ad`` section); a Visium
        HD bin folder (``square_008um``) is read with :func:`dpst.io.read_visium_hd`.
    h5ad
        The section's AnnData file (None for a Space Ranger folder).
    spatial_key
        Key of an ``h5ad`` section's coordinates in ``obsm``.

    Returns
    -------
    anndata.AnnData
        Raw counts in ``X``, coordinates in ``obsm[spatial_key]``.
    """
    if h5ad:
        return read_h5ad_section(h5ad, spatial_key)
    if folder is None:
        raise ValueError("a section needs a Space Ranger folder or an h5ad file")
    bins = re.fullmatch(r"square_(\d+)um", Path(folder).name)  # a Visium HD bin folder (`bin_size`)
    adata = read_visium_hd(folder, bin_size=int(bins[1])) if bins else read_spaceranger(folder)
    truth = Path(folder) / SIMULATED_DOMAINS
    if truth.is_file():
        domains = pd.read_csv(truth, index_col="barcode", dtype={"domain": str})["domain"]
        adata.obs["domain"] = pd.Categorical(domains.reindex(adata.obs_names))
    return adata


def read_group(sources: Mapping[str, Mapping]) -> tuple[ad.AnnData, list[str]]:
    """The sections of a group in one AnnData, each one's coordinates in micrometres, for joint preprocessing.

    Each section is read (:func:`read_section`) and its coordinates become micrometres
    on its own, with its own ``spatial_key`` and ``coordinate_unit`` (pixels calibrated
    on the Visium grid of its spots), so that sections from different sources can be
    stacked. They are concatenated with ``anndata.concat`` (the genes all sections
    share; spot names get ``-<section>``): ``obs["section"]`` names each spot's section,
    ``obs["annotation"]`` holds each section's labels where it has them (its
    ``domain_key``, or a simulated section's domains), ``obsm["spatial"]`` the
    micrometres with ``uns["spatial_unit"] = "um"`` and ``uns["spatial"]`` each
    section's images under its name. Preprocess it with ``library_key="section"``.

    Parameters
    ----------
    sources
        Per section name, in the group's order: ``folder`` or ``h5ad``, and for an
        ``h5ad`` section ``spatial_key``, ``coordinate_unit`` and ``domain_key`` when given.

    Returns
    -------
    adata : anndata.AnnData
        The stacked sections, raw counts in ``X``.
    notes : list of str
        Lines for the job's log: what was read and how each section's coordinates were obtained.

    Raises
    ------
    ValueError
        A section cannot be read, or the sections share no gene.
    """
    parts, notes = {}, []
    for name, source in sources.items():
        spatial_key = source.get("spatial_key", "spatial")
        part = read_section(source.get("folder"), source.get("h5ad"), spatial_key)
        coords, record, _ = micrometre_coordinates(part, spatial_key, source.get("coordinate_unit", "auto"))
        (how,) = record["libraries"].values()
        labels = source.get("domain_key") or ("domain" if "domain" in part.obs else None)
        if labels is not None and labels not in part.obs:
            raise ValueError(f"section {name}: no obs column {labels!r} (its domain_key)")
        annotation = part.obs[labels].astype("string") if labels else pd.Series(pd.NA, index=part.obs_names)
        if SECTION_KEY in part.obs:
            notes.append(f"section {name}: its own obs[{SECTION_KEY!r}] is replaced by the section's name")
        part.obs = part.obs.drop(columns=[SECTION_KEY], errors="ignore").assign(
            **{ANNOTATION_KEY: annotation.astype("string")}
        )
        spatial = (part.uns.get("spatial") or {}).values()
        part.uns = {"spatial": {name: next(iter(spatial))}} if len(spatial) == 1 else {}
        part.obsm = {"spatial": coords}
        parts[name] = part
        where = source.get("h5ad") or source.get("folder")
        notes.append(
            f"section {name}: {part.n_obs} spots x {part.n_vars} genes from {where}; "
            f"coordinates: {describe_coordinates(how)}"
            + (f"; labels from obs[{labels!r}]" if labels else "; no labels")
        )
    adata = ad.concat(parts, label=SECTION_KEY, index_unique="-", uns_merge="unique")
    if adata.n_vars == 0:
        raise ValueError(f"sections {', '.join(sources)} share no gene")
    dropped = {name: part.n_vars - adata.n_vars for name, part in parts.items() if part.n_vars > adata.n_vars}
    if dropped:
        notes.append(
            f"{adata.n_vars} genes shared by all sections; left out: "
            + ", ".join(f"{n} of {name}" for name, n in dropped.items())
        )
    adata.obs[SECTION_KEY] = pd.Categorical(adata.obs[SECTION_KEY], categories=list(parts))
    adata.uns["spatial_unit"] = "um"
    return adata, notes
