"""Spatial domains from a latent representation, and how well they match an annotation.

:func:`domains` clusters ``obsm[use_rep]`` as the field does (a Gaussian mixture
with a given number of components, mclust's practice, or leiden tuned to that
number), optionally refined by a majority vote of each spot's spatial
neighbours. :func:`domain_scores` scores the result against an annotation (ARI,
NMI) and for spatial continuity (CHAOS, PAS), section by section.
"""

from __future__ import annotations

import warnings
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from dpst import metrics
from dpst._checks import check_int
from dpst.graph import group_spots
from dpst.pp import CoordinateUnit
from dpst.pp._coordinates import micrometre_coordinates

from ._measures import _latent

DomainMethod = Literal["gmm", "leiden"]
DOMAIN_METHODS = ("gmm", "leiden")
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
# the leiden resolution search: bisection between these bounds, at most this many runs
RESOLUTION_RANGE = (0.01, 5.0)
MAX_LEIDEN_RUNS = 30


def domains(
    adata: ad.AnnData,
    use_rep: str,
    n_domains: int,
    *,
    method: DomainMethod = "gmm",
    covariance_type: str = "tied",
    n_neighbors: int = 15,
    refine: bool = False,
    refine_neighbors: int = 18,
    spatial_key: str = "spatial",
    library_key: str | None = None,
    coordinate_unit: CoordinateUnit = "auto",
    seed: int = 0,
    key_added: str | None = None,
) -> pd.Series:
    """Cluster a latent representation into ``n_domains`` spatial domains.

    - ``"gmm"``: scikit-learn's ``GaussianMixture`` with ``n_domains`` components
      (``covariance_type="tied"`` is mclust's EEE, the model the GraphST and STAGATE
      tutorials fit);
    - ``"leiden"``: scanpy's leiden (igraph) on a kNN graph of the codes
      (``n_neighbors``), its resolution bisected until it gives ``n_domains``
      clusters (a warning when no resolution does).

    ``refine=True`` then gives each spot the most common domain among itself and
    its ``refine_neighbors`` nearest spots of the same section (micrometres), as
    SpaGCN and GraphST refine; a spot keeps its domain on a tie. Off by default;
    recorded when on.

    Parameters
    ----------
    adata
        Spots with latent codes in ``obsm[use_rep]`` (and coordinates for ``refine``).
    use_rep
        Key of the codes in ``adata.obsm``.
    n_domains
        Number of domains.
    method
        ``"gmm"`` or ``"leiden"``.
    covariance_type
        Of the Gaussian mixture: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
    n_neighbors
        Neighbours per spot of leiden's graph on the codes. On a latent trained
        with the distortion penalty a code's nearest codes are mostly its
        spatial neighbours, and leiden on 15 of them cuts compact patches
        across thin layers; 50-100 suit such latents better (docs/method.md,
        "Why the penalty costs leiden").
    refine
        Smooth the domains by a majority vote of spatial neighbours.
    refine_neighbors
        Spatial neighbours of the vote (18: the first three rings of the Visium hexagon).
    spatial_key, library_key, coordinate_unit
        Where the coordinates and sections are (see :func:`dpst.pp.spatial_coordinates`);
        used by ``refine`` only.
    seed
        Seed of the mixture's initialization or of leiden; the same seed gives the same domains.
    key_added
        Column written in ``obs`` and key in ``uns``; default ``f"{use_rep}_domains"``.

    Returns
    -------
    pandas.Series
        Categorical domains ``"0"``, ``"1"``, ... indexed by ``obs_names``, also in
        ``adata.obs[key_added]``; the settings go to ``adata.uns[key_added]``.

    Raises
    ------
    KeyError
        ``use_rep`` (or, with ``refine``, the coordinates) is missing.
    ValueError
        A setting makes no sense, or there are fewer spots than domains.

    Examples
    --------
    >>> dpst.tl.domains(adata, "X_dpvae", n_domains=7)  # doctest: +SKIP
    >>> dpst.tl.domain_scores(adata, "X_dpvae_domains", truth_key="domain")  # doctest: +SKIP
    """
    latent = _latent(adata, use_rep)
    n_domains = check_int("n_domains", n_domains, minimum=1, maximum=adata.n_obs)
    seed = check_int("seed", seed)
    if method not in DOMAIN_METHODS:
        raise ValueError(f"method must be one of {', '.join(DOMAIN_METHODS)}, got {method!r}")
    record: dict = {"use_rep": use_rep, "method": method, "n_domains": n_domains, "seed": seed}
    if method == "gmm":
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, got {covariance_type!r}")
        labels = _mixture(latent, n_domains, covariance_type, seed)
        record["covariance_type"] = covariance_type
    else:
        n_neighbors = check_int("n_neighbors", n_neighbors, minimum=2)
        labels, resolution = _leiden_to(latent, n_domains, n_neighbors, seed)
        record.update(n_neighbors=n_neighbors, resolution=resolution, n_found=len(np.unique(labels)))
    record["refine"] = bool(refine)
    if refine:
        refine_neighbors = check_int("refine_neighbors", refine_neighbors, minimum=1)
        coords, _coordinates, libs = micrometre_coordinates(adata, spatial_key, coordinate_unit, library_key)
        labels = _majority_vote(labels, coords, libs.codes, refine_neighbors)
        record["refine_neighbors"] = refine_neighbors
    key = key_added or f"{use_rep}_domains"
    names = [str(i) for i in range(int(labels.max()) + 1)]
    out = pd.Series(pd.Categorical.from_codes(labels, categories=names), index=adata.obs_names, name=key)
    adata.obs[key] = out
    adata.uns[key] = record
    return out


def _mixture(latent: np.ndarray, n_domains: int, covariance_type: str, seed: int) -> np.ndarray:
    from sklearn.mixture import GaussianMixture

    mixture = GaussianMixture(n_domains, covariance_type=covariance_type, random_state=seed)
    return _relabel(mixture.fit_predict(latent))


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Domains numbered 0, 1, ... by first appearance among the spots (stable for tests and plots)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.int64)


def _leiden(codes: ad.AnnData, resolution: float, seed: int) -> np.ndarray:
    import scanpy as sc

    sc.tl.leiden(codes, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
    return _relabel(codes.obs["leiden"].astype(int).to_numpy())


def _leiden_to(latent: np.ndarray, n_domains: int, n_neighbors: int, seed: int) -> tuple[np.ndarray, float]:
    """Leiden clusters, bisecting the resolution until there are ``n_domains`` of them."""
    import scanpy as sc

    # scanpy's neighbours and leiden work on an AnnData: one holding only the codes
    codes = ad.AnnData(obsm={"codes": latent}, obs=pd.DataFrame(index=np.arange(len(latent)).astype(str)))
    sc.pp.neighbors(codes, n_neighbors=min(n_neighbors, len(latent) - 1), use_rep="codes", random_state=seed)
    low, high = RESOLUTION_RANGE
    best: tuple[int, np.ndarray, float] | None = None
    for _ in range(MAX_LEIDEN_RUNS):
        resolution = float(np.sqrt(low * high))  # bisection on a log scale
        labels = _leiden(codes, resolution, seed)
        found = int(labels.max()) + 1
        if best is None or abs(found - n_domains) < best[0]:
            best = (abs(found - n_domains), labels, resolution)
        if found == n_domains:
            break
        low, high = (resolution, high) if found < n_domains else (low, resolution)
    assert best is not None
    if best[0]:
        warnings.warn(
            f"leiden: no resolution in {RESOLUTION_RANGE} gave {n_domains} domains; "
            f"keeping {int(best[1].max()) + 1} (resolution {best[2]:.3g})",
            UserWarning,
            stacklevel=3,
        )
    return best[1], best[2]


def _majority_vote(labels: np.ndarray, coords: np.ndarray, libraries: np.ndarray, k: int) -> np.ndarray:
    """Each spot's most common label among itself and its k nearest spots of its section (ties: its own)."""
    refined = labels.copy()
    n_labels = int(labels.max()) + 1
    for spots in group_spots(libraries):
        nearest = cKDTree(coords[spots]).query(coords[spots], k=min(k + 1, len(spots)))[1]
        votes = labels[spots][np.atleast_2d(nearest)]
        counts = np.zeros((len(spots), n_labels), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(len(spots)), votes.shape[1]), votes.ravel()), 1)
        own = labels[spots]
        keep = counts[np.arange(len(spots)), own] == counts.max(axis=1)
        refined[spots] = np.where(keep, own, counts.argmax(axis=1))
    return refined


def domain_scores(
    adata: ad.AnnData,
    domains_key: str,
    truth_key: str | None = None,
    *,
    spatial_key: str = "spatial",
    library_key: str | None = None,
    coordinate_unit: CoordinateUnit = "auto",
    key_added: str | None = None,
) -> pd.DataFrame:
    """Scores of domains in ``obs``: ARI and NMI against an annotation, CHAOS and PAS, per section and overall.

    :func:`dpst.metrics.domain_agreement` (unannotated spots left out),
    :func:`dpst.metrics.chaos` and :func:`dpst.metrics.pas` (each section on its own
    coordinates; the overall value weighs sections by their spots).

    Parameters
    ----------
    adata
        Spots with domains in ``obs[domains_key]``.
    domains_key
        Column of ``obs`` holding the domains (e.g. what :func:`domains` wrote).
    truth_key
        Column of ``obs`` holding the annotation; None: continuity scores only.
    spatial_key, library_key, coordinate_unit
        Where the coordinates and sections are (see :func:`dpst.pp.spatial_coordinates`).
    key_added
        Key written in ``uns``; default ``f"{domains_key}_scores"``.

    Returns
    -------
    pandas.DataFrame
        One row per section and a last row ``"all"``; columns ``ARI``, ``NMI``,
        ``n_scored`` (with ``truth_key``), ``CHAOS``, ``PAS`` and ``n_spots``.

    Raises
    ------
    KeyError
        A column is missing.
    """
    for key in (domains_key, truth_key):
        if key is not None and key not in adata.obs.columns:
            raise KeyError(f"adata.obs has no {key!r} column (columns: {list(adata.obs.columns)})")
    coords, _coordinates, libs = micrometre_coordinates(adata, spatial_key, coordinate_unit, library_key)
    labels = adata.obs[domains_key].to_numpy()
    truth = None if truth_key is None else adata.obs[truth_key].to_numpy()
    rows = {}
    for name, spots in zip(libs.names, libs.spots(), strict=True):
        row: dict = {}
        if truth is not None:
            row.update(metrics.domain_agreement(labels[spots], truth[spots]))
        row.update(CHAOS=metrics.chaos(labels[spots], coords[spots]), PAS=metrics.pas(labels[spots], coords[spots]))
        rows[name] = {**row, "n_spots": len(spots)}
    table = pd.DataFrame.from_dict(rows, orient="index")
    overall: dict = {}
    if truth is not None:
        overall.update(metrics.domain_agreement(labels, truth))
    for column in ("CHAOS", "PAS"):
        overall[column] = float(np.average(table[column], weights=table["n_spots"]))
    table.loc["all"] = pd.Series({**overall, "n_spots": adata.n_obs})
    counts = [column for column in ("n_scored", "n_spots") if column in table]
    table[counts] = table[counts].astype(np.int64)
    table = table.rename_axis(libs.key or "library")
    adata.uns[key_added or f"{domains_key}_scores"] = table
    return table
