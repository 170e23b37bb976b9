"""Metrics of the method (docs/method.md) and the local-metric ellipses of Figure 4, on arrays.

:mod:`dpst.tl` applies them to a latent stored in an AnnData; this module never
imports :mod:`dpst.tl`. With several sections the graphs are block-diagonal and
:func:`evaluate_model_by_library` gives each section's metrics.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree

from .graph import SpatialGraph, group_spots
from .module import pair_distances
from .pp._graphs import build_neighbor_graph


def spatial_autocorrelation(latent: np.ndarray, connectivities) -> pd.DataFrame:
    """Moran's I and Geary's C of each latent dimension on a neighbourhood graph.

    scanpy's ``morans_i`` and ``gearys_c`` with the graph's weights row-normalized
    (each spot's neighbours weigh 1 in all; squidpy's ``transformation=True``).
    :func:`dpst.tl.spatial_autocorrelation` gives the same values for a latent
    stored in an AnnData.

    Parameters
    ----------
    latent
        ``(N, d)`` latent codes.
    connectivities
        ``(N, N)`` sparse neighbourhood graph (e.g. ``obsp["spatial_connectivities"]``
        of :func:`dpst.pp.spatial_neighbors`); block-diagonal for several sections.

    Returns
    -------
    pandas.DataFrame
        One row per dimension (``z0, z1, ...``) with columns ``moran_I`` and
        ``geary_C``; NaN for a dimension constant over spots.
    """
    import scanpy as sc

    latent = np.asarray(latent, dtype=np.float64)
    weights = sp.csr_matrix(connectivities, dtype=np.float64)
    degree = np.asarray(weights.sum(axis=1)).ravel()
    # a spot without neighbours keeps an empty row (no division by zero)
    weights = sp.diags(np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)) @ weights
    names = pd.Index([f"z{i}" for i in range(latent.shape[1])], name="dimension")
    values = np.ascontiguousarray(latent.T)
    constant = np.ptp(latent, axis=0) == 0
    with warnings.catch_warnings():  # a constant dimension is reported as NaN, not warned about
        warnings.simplefilter("ignore", RuntimeWarning)
        moran = np.atleast_1d(sc.metrics.morans_i(weights, values)).astype(np.float64)
        geary = np.atleast_1d(sc.metrics.gearys_c(weights, values)).astype(np.float64)
    moran[constant], geary[constant] = np.nan, np.nan
    return pd.DataFrame({"moran_I": moran, "geary_C": geary}, index=names)


def reconstruction_mse(observed: np.ndarray, reconstructed: np.ndarray) -> float:
    """Mean squared error over spots and genes.

    Parameters
    ----------
    observed, reconstructed
        Arrays of the same shape (spots x genes).

    Returns
    -------
    float
        The mean of the squared differences, computed in float64.

    Raises
    ------
    ValueError
        The shapes differ.
    """
    observed, reconstructed = np.asarray(observed), np.asarray(reconstructed)
    if observed.shape != reconstructed.shape:
        raise ValueError(f"shapes differ: observed {observed.shape}, reconstructed {reconstructed.shape}")
    return float(np.mean((observed.astype(np.float64) - reconstructed) ** 2))


def latent_pair_distances(latent: np.ndarray, graph: SpatialGraph) -> np.ndarray:
    """Latent distances of G's pairs, in float64 (the penalty's own pair_distances).

    Parameters
    ----------
    latent
        ``(N, d)`` latent codes.
    graph
        The pair graph G over the same N spots.

    Returns
    -------
    numpy.ndarray
        ``(E,)`` Euclidean latent distances, one per pair of ``graph.edges``.
    """
    latent_t = torch.as_tensor(np.asarray(latent, dtype=np.float64))
    return pair_distances(latent_t, torch.as_tensor(graph.edges)).numpy()


def optimal_lam(dz: np.ndarray, ds: np.ndarray, weights: np.ndarray) -> float:
    """The lam minimizing ``sum w |dz - lam ds|``: the median of ``dz / ds`` weighted by ``w * ds``.

    ``sum w |dz - lam ds| = sum (w ds) |dz / ds - lam|``, minimized by a weighted
    median; ``inverted_cdf`` takes the smallest ratio at which the cumulative mass
    reaches half, a ratio of one of the pairs.

    Parameters
    ----------
    dz
        ``(E,)`` latent distances of the pairs.
    ds
        ``(E,)`` spatial distances of the pairs, all positive.
    weights
        ``(E,)`` non-negative pair weights.

    Returns
    -------
    float
        The minimizing lam.
    """
    ratio, mass = dz / ds, weights * ds
    return float(np.quantile(ratio, 0.5, weights=mass, method="inverted_cdf"))


def distortion(
    latent: np.ndarray,
    graph: SpatialGraph,
    lam: float | None = None,
    normalization: Literal["pairs", "n2"] = "pairs",
    eps: Sequence[float] = (0.05, 0.1),
) -> dict[str, float]:
    """Penalty value, lam and empirical distortion L_eps on G's pairs.

    ``lam=None`` uses the lam that minimizes the penalty, so models trained
    with and without the penalty are compared at their best scale.
    ``L_eps = q_{1-eps/2}(r) / q_{eps/2}(r)`` with ``r = d_z / d_s``.

    Parameters
    ----------
    latent
        ``(N, d)`` latent codes.
    graph
        The pair graph G (:func:`dpst.graph.spatial_graph`), distances in micrometres.
    lam
        Scale of latent to spatial distances; None: :func:`optimal_lam`.
    normalization
        ``"pairs"`` or ``"n2"``: the penalty's denominator (:meth:`dpst.graph.SpatialGraph.denominator`).
    eps
        The eps of each reported ``L_eps``.

    Returns
    -------
    dict
        ``penalty``, ``lam`` and ``L_{eps:g}`` per eps (``inf`` when the lower
        quantile of ``r`` is 0).

    Raises
    ------
    ValueError
        The graph has pairs at zero spatial distance.
    """
    ds, w = graph.distances, graph.weights
    if not (ds > 0).all():
        # d_z / d_s is infinite there; spatial_graph drops such pairs, a hand-built graph may not
        raise ValueError(
            f"the graph has {(~(ds > 0)).sum()} of {len(ds)} pairs with zero spatial distance; "
            "build it with dpst.graph.spatial_graph, which drops them"
        )
    dz = latent_pair_distances(latent, graph)
    if lam is None:
        lam = optimal_lam(dz, ds, w)
    ratio = dz / ds
    out = {
        "penalty": float((w * np.abs(dz - lam * ds)).sum() / graph.denominator(normalization)),
        "lam": float(lam),
    }
    for e in eps:
        low, high = np.quantile(ratio, [e / 2, 1 - e / 2])
        out[f"L_{e:g}"] = float(high / low) if low > 0 else float("inf")
    return out


def local_metric_ellipses(
    latent: np.ndarray, coords: np.ndarray, neighbour_factor: float = 1.25, groups: np.ndarray | None = None
) -> pd.DataFrame:
    """Per spot, the local metric of the map tissue -> latent space, as an ellipse.

    For spot i, the least-squares linear map A_i (latent_dim x 2) takes the
    offsets to its grid neighbours (within ``neighbour_factor`` x the typical
    nearest-neighbour distance) to their latent offsets. The metric
    A_i^T A_i (2 x 2) has eigenvalues l1 >= l2: the ellipse's semi-axes are
    sqrt(l1), sqrt(l2) (latent units per coordinate unit), oriented along the
    first eigenvector (``angle`` in degrees from the x axis). A circle of the
    same size everywhere is a local isometry. Spots with fewer than 3
    neighbours get NaN.

    Parameters
    ----------
    latent
        ``(N, d)`` latent codes.
    coords
        ``(N, 2)`` spot coordinates (micrometres for the study's figures).
    neighbour_factor
        Neighbours lie within this factor times the median nearest-neighbour distance.
    groups
        ``(N,)`` library codes: neighbours are then sought within each library (section)
        only, each library with its own typical spacing. None: one library.

    Returns
    -------
    pandas.DataFrame
        One row per spot: ``x``, ``y``, ``major``, ``minor``, ``angle``,
        ``axis_ratio`` (major / minor) and ``size`` (sqrt(major * minor)).
    """
    coords = np.asarray(coords, dtype=np.float64)
    latent = np.asarray(latent, dtype=np.float64)
    if groups is not None:
        parts = [
            local_metric_ellipses(latent[spots], coords[spots], neighbour_factor).set_axis(spots, axis=0)
            for spots in group_spots(groups)
        ]
        return pd.concat(parts).sort_index()
    tree = cKDTree(coords)
    nn_dist = tree.query(coords, k=2)[0][:, 1]
    neighbours = tree.query_ball_point(coords, r=neighbour_factor * np.median(nn_dist))
    rows = []
    for i, nbrs in enumerate(neighbours):
        nbrs = [j for j in nbrs if j != i]
        if len(nbrs) < 3:
            rows.append((np.nan, np.nan, np.nan))
            continue
        ds = coords[nbrs] - coords[i]
        dz = latent[nbrs] - latent[i]
        a = np.linalg.lstsq(ds, dz, rcond=None)[0]  # (2, latent_dim): ds @ a ~ dz
        values, vectors = np.linalg.eigh(a @ a.T)  # ascending
        major, minor = np.sqrt(np.clip(values[::-1], 0, None))
        angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
        rows.append((major, minor, angle))
    out = pd.DataFrame(rows, columns=["major", "minor", "angle"])
    out.insert(0, "x", coords[:, 0])
    out.insert(1, "y", coords[:, 1])
    out["axis_ratio"] = out["major"] / out["minor"]
    out["size"] = np.sqrt(out["major"] * out["minor"])
    return out


def ellipse_summary(ellipses: pd.DataFrame) -> dict[str, float]:
    """Median axis ratio (1 = isotropic) and spread of sizes (coefficient of variation).

    Parameters
    ----------
    ellipses
        A table of :func:`local_metric_ellipses`.

    Returns
    -------
    dict
        ``median_axis_ratio`` and ``size_cv`` (std / mean of ``size``), NaN rows left out.
    """
    size = ellipses["size"].dropna()
    return {
        "median_axis_ratio": float(ellipses["axis_ratio"].median()),
        "size_cv": float(size.std() / size.mean()),
    }


def evaluate_model(model, adata: ad.AnnData | None = None, n_neighs: int | None = None) -> tuple[dict, pd.DataFrame]:
    """All metrics of one trained model: a flat dict and the per-dimension table.

    ``adata`` (default: the model's) must hold the model's spots in its order: the
    coordinates, libraries, graph and held-out set are the model's. ``lam_fitted`` is
    NaN for ``alpha = 0`` (no penalty, no lam). Any other NaN or infinite metric comes
    with a UserWarning that says why. With several sections the metrics are over all
    of them, on block-diagonal graphs; :func:`evaluate_model_by_library` gives each
    section's own.

    Parameters
    ----------
    model
        A trained :class:`~dpst.DPVAE` or :class:`~dpst.DPSCVI`.
    adata
        The model's spots, in its order; default: the model's AnnData.
    n_neighs
        Neighbours per spot of the neighbourhood graph of the autocorrelation (chosen
        from the geometry as :func:`dpst.pp.spatial_neighbors` chooses it); None: its default.

    Returns
    -------
    metrics : dict
        ``moran_I``, ``geary_C`` (means over dimensions), ``mse_all``,
        ``mse_heldout``, ``lam_fitted``, the :func:`distortion` entries
        (``penalty``, ``lam``, ``L_0.05``, ``L_0.1``) and the
        :func:`ellipse_summary` entries.
    per_dimension : pandas.DataFrame
        :func:`spatial_autocorrelation` of the latent.

    Raises
    ------
    RuntimeError
        The model is not trained.
    ValueError
        ``adata`` holds other spots, or the latent codes are not finite.

    Examples
    --------
    >>> metrics, per_dimension = dpst.metrics.evaluate_model(model)  # doctest: +SKIP
    """
    parts = _ModelArrays(model, adata, n_neighs)
    return parts.evaluate(np.arange(parts.n_obs))


def evaluate_model_by_library(model, adata: ad.AnnData | None = None, n_neighs: int | None = None) -> pd.DataFrame:
    """The metrics of :func:`evaluate_model` for each library (section) of the model, and over all.

    Each library's row is what :func:`evaluate_model`'s arrays give on that library's
    spots alone: its latent codes, its pairs of G, its neighbourhood graph, its
    held-out spots (lam re-fitted on its pairs).

    Parameters
    ----------
    model
        A trained :class:`~dpst.DPVAE` or :class:`~dpst.DPSCVI`, with or without ``library_key``.
    adata
        The model's spots, in its order; default: the model's AnnData.
    n_neighs
        As in :func:`evaluate_model`.

    Returns
    -------
    pandas.DataFrame
        One row per library (indexed by name, in the model's order) and a last row
        ``"all"`` (the metrics over every spot), with the columns of :func:`evaluate_model`'s dict
        and ``n_spots``.

    Examples
    --------
    >>> dpst.metrics.evaluate_model_by_library(model)[["moran_I", "L_0.1", "mse_heldout"]]  # doctest: +SKIP
    """
    parts = _ModelArrays(model, adata, n_neighs)
    rows = {}
    for name, spots in zip(parts.libraries.names, parts.libraries.spots(), strict=True):
        rows[name] = {**parts.evaluate(spots)[0], "n_spots": len(spots)}
    rows["all"] = {**parts.evaluate(np.arange(parts.n_obs))[0], "n_spots": parts.n_obs}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(parts.libraries.key or "library")


class _ModelArrays:
    """A trained model's outputs as arrays, once, for the metrics of any set of its spots."""

    def __init__(self, model, adata: ad.AnnData | None, n_neighs: int | None):
        if not model.is_trained:
            raise RuntimeError(f"evaluate_model: the {type(model).__name__} is not trained; call model.train() first")
        if adata is None:
            adata = model.adata
        elif not adata.obs_names.equals(model.adata.obs_names):
            raise ValueError(
                f"evaluate_model: adata's spots are not the model's {model.adata.n_obs} spots in the same "
                "order; the metrics use the model's coordinates, graph and held-out spots"
            )
        self.latent = model.get_latent_representation(adata)
        if not np.isfinite(self.latent).all():
            n_bad = (~np.isfinite(self.latent).all(axis=1)).sum()
            raise ValueError(f"evaluate_model: the latent codes of {n_bad} spots are NaN or infinite")
        self.n_obs = adata.n_obs
        self.coords, self.graph, self.libraries = model.coords, model.graph, model.libraries
        self.neighbors = build_neighbor_graph(adata, self.coords, self.libraries, n_neighs=n_neighs).connectivities
        # per spot, not spots x genes: the dense matrices would not fit at 10^5-10^6 spots
        self.squared_errors, self.n_genes = model.squared_errors(adata), adata.n_vars
        held_out = model.validation_indices
        self.held_out = np.zeros(self.n_obs, dtype=bool)
        if held_out is not None:
            self.held_out[np.asarray(held_out, dtype=np.int64)] = True
        self.normalization = model.penalty_settings.normalization
        self.lam_fitted = model.lam  # NaN at alpha 0: no penalty, no lam

    def _mse(self, errors: np.ndarray) -> float:
        """:func:`reconstruction_mse` of the spots whose squared errors these are."""
        return float(errors.sum() / (len(errors) * self.n_genes))

    def evaluate(self, spots: np.ndarray) -> tuple[dict, pd.DataFrame]:
        """The metrics of the spots ``spots`` (sorted indices) alone."""
        everything = len(spots) == self.n_obs
        latent, coords = self.latent[spots], self.coords[spots]
        neighbors = self.neighbors if everything else self.neighbors[spots][:, spots]
        graph = self.graph if everything else self.graph.subgraph(spots)
        errors = self.squared_errors[spots]
        held_out = np.flatnonzero(self.held_out[spots])
        groups = self.libraries.codes[spots] if self.libraries.several and everything else None
        autocorr = spatial_autocorrelation(latent, neighbors)
        metrics = {
            "moran_I": float(autocorr["moran_I"].mean(skipna=False)),
            "geary_C": float(autocorr["geary_C"].mean(skipna=False)),
            "mse_all": self._mse(errors),
            "mse_heldout": self._mse(errors[held_out]) if len(held_out) else float("nan"),
            "lam_fitted": self.lam_fitted,
        }
        metrics.update(distortion(latent, graph, normalization=self.normalization))
        ellipses = local_metric_ellipses(latent, coords, groups=groups)
        metrics.update(ellipse_summary(ellipses))
        _warn_undefined(metrics, autocorr, len(held_out) > 0, ellipses)
        return metrics, autocorr


def _warn_undefined(metrics: dict, autocorr: pd.DataFrame, has_held_out: bool, ellipses: pd.DataFrame) -> None:
    """One warning per NaN or infinite metric, with the reason (lam_fitted at alpha = 0 is by design)."""
    reasons = {}
    undefined = autocorr.index[autocorr.isna().any(axis=1)]
    for key in ("moran_I", "geary_C"):
        reasons[key] = (
            f"latent dimensions {', '.join(undefined)} are constant over spots"
            if len(undefined)
            else "the spatial autocorrelation is undefined"
        )
    reasons["mse_heldout"] = (
        "the model has no held-out spots (validation_fraction=0)"
        if not has_held_out
        else "the held-out reconstruction is not finite"
    )
    reasons["mse_all"] = "the reconstruction is not finite"
    for key in [k for k in metrics if k.startswith("L_")]:
        share = 100 * float(key[2:]) / 2
        reasons[key] = f"at least {share:g}% of the graph's pairs have zero latent distance"
    n_measured = int(ellipses["major"].notna().sum())
    for key in ("median_axis_ratio", "size_cv"):
        reasons[key] = (
            f"only {n_measured} spots have the 3 grid neighbours an ellipse needs"
            if n_measured < 2
            else "the local metric is degenerate (a zero semi-axis)"
        )
    for key, value in metrics.items():
        if key == "lam_fitted" and math.isnan(value):
            continue
        if not math.isfinite(value):
            warnings.warn(
                f"evaluate_model: {key} is {value}: {reasons.get(key, 'undefined')}", UserWarning, stacklevel=3
            )


# --------------------------------------------------------------------------- #
# spatial domains against an annotation, and their spatial continuity
# --------------------------------------------------------------------------- #
def _labelled(labels, truth) -> tuple[np.ndarray, np.ndarray]:
    """Both label vectors as strings, restricted to the spots that the annotation labels."""
    labels, truth = pd.Series(np.asarray(labels, dtype=object)), pd.Series(np.asarray(truth, dtype=object))
    if len(labels) != len(truth):
        raise ValueError(f"labels and truth differ in length: {len(labels)} and {len(truth)}")
    annotated = truth.notna().to_numpy() & labels.notna().to_numpy()
    if annotated.sum() < 2:
        raise ValueError(f"only {annotated.sum()} spots carry both a label and an annotation; the scores need 2")
    return labels[annotated].astype(str).to_numpy(), truth[annotated].astype(str).to_numpy()


def domain_agreement(labels, truth) -> dict[str, float]:
    """Adjusted Rand index and normalized mutual information of domains against an annotation.

    Spots whose annotation (or label) is missing are left out, as the field scores
    DLPFC layers. scikit-learn's ``adjusted_rand_score`` and
    ``normalized_mutual_info_score`` (arithmetic mean normalization).

    Parameters
    ----------
    labels
        ``(N,)`` domain of each spot.
    truth
        ``(N,)`` annotation of each spot; None/NaN where unannotated.

    Returns
    -------
    dict
        ``ARI``, ``NMI`` and ``n_scored`` (the annotated spots).

    Raises
    ------
    ValueError
        Lengths differ or fewer than 2 spots are annotated.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels, truth = _labelled(labels, truth)
    return {
        "ARI": float(adjusted_rand_score(truth, labels)),
        "NMI": float(normalized_mutual_info_score(truth, labels)),
        "n_scored": len(truth),
    }


def chaos(labels, coords: np.ndarray) -> float:
    """CHAOS: the mean distance of each spot to its nearest spot of the same domain (lower is more continuous).

    As defined with SpatialPCA (Shang & Zhou 2022) and used by SDMBench: the
    coordinates are standardized axis by axis, each spot's distance to the
    nearest other spot of its domain is summed over the spots and divided by
    the number of spots. A spot alone in its domain adds nothing.

    Parameters
    ----------
    labels
        ``(N,)`` domain of each spot (one section).
    coords
        ``(N, 2)`` coordinates of the spots.

    Returns
    -------
    float
        CHAOS, in standardized coordinate units.
    """
    labels = np.asarray(labels).astype(str)
    coords = np.asarray(coords, dtype=np.float64)
    spread = coords.std(axis=0)
    scaled = (coords - coords.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    total = 0.0
    for domain in np.unique(labels):
        members = scaled[labels == domain]
        if len(members) > 1:
            total += float(cKDTree(members).query(members, k=2)[0][:, 1].sum())
    return total / len(labels)


def pas(labels, coords: np.ndarray, n_neighbors: int = 10, threshold: int = 6) -> float:
    """PAS: the share of spots whose domain differs from that of at least 6 of their 10 nearest spots.

    As defined with SpatialPCA (Shang & Zhou 2022): lower is more continuous.

    Parameters
    ----------
    labels
        ``(N,)`` domain of each spot (one section).
    coords
        ``(N, 2)`` coordinates of the spots.
    n_neighbors
        Nearest spots looked at (10 in the definition).
    threshold
        A spot counts when at least this many of them differ (6 in the definition).

    Returns
    -------
    float
        PAS, between 0 and 1.
    """
    labels = np.asarray(labels).astype(str)
    coords = np.asarray(coords, dtype=np.float64)
    k = min(n_neighbors, len(labels) - 1)
    neighbours = cKDTree(coords).query(coords, k=k + 1)[1][:, 1:]
    differing = (labels[neighbours] != labels[:, None]).sum(axis=1)
    return float((differing >= threshold).mean())


LISI_NEIGHBORS = 90  # scib's LISI graph: 90 neighbours, 3 x its perplexity of 30


def integration_scores(latent: np.ndarray, batches, labels, n_neighbors: int = LISI_NEIGHBORS) -> dict[str, float]:
    """How well one latent mixes batches (sections) and keeps labels apart: scib-metrics' four scores.

    iLISI (the effective number of batches among a spot's neighbours in the
    latent: batches mix), cLISI (the same for labels, reversed: labels stay apart),
    the silhouette of the labels and scib's batch silhouette (sections mixed within
    each label; NaN where no label is in two batches), each scaled by
    scib-metrics to [0, 1], higher better. The LISI
    scores read an exact kNN graph of the latent (scikit-learn, ``n_neighbors`` as
    scib's 90, fewer on fewer spots). Spots without a label are left out, as in
    :func:`domain_agreement`. Needs scib-metrics (``pip install 'dpst[integration]'``).

    Parameters
    ----------
    latent
        ``(N, d)`` latent codes.
    batches
        ``(N,)`` each spot's batch (section); at least two batches.
    labels
        ``(N,)`` each spot's label (an annotation or clusters); None/NaN where unknown.
    n_neighbors
        Neighbours of the LISI graph.

    Returns
    -------
    dict
        ``iLISI``, ``cLISI``, ``silhouette_label``, ``silhouette_batch`` and ``n_scored``.

    Raises
    ------
    ImportError
        scib-metrics is not installed.
    ValueError
        Lengths differ, fewer than two batches or two labels among the labelled spots.
    """
    try:
        from scib_metrics import clisi_knn, ilisi_knn, silhouette_batch, silhouette_label
        from scib_metrics.nearest_neighbors import NeighborsResults
    except ImportError as error:
        raise ImportError("integration scores need scib-metrics: pip install 'dpst[integration]'") from error
    from sklearn.neighbors import NearestNeighbors

    latent = np.asarray(latent, dtype=np.float32)
    batches, labels = pd.Series(np.asarray(batches, dtype=object)), pd.Series(np.asarray(labels, dtype=object))
    if not len(latent) == len(batches) == len(labels):
        raise ValueError(f"latent, batches and labels differ in length: {len(latent)}, {len(batches)}, {len(labels)}")
    known = labels.notna().to_numpy() & batches.notna().to_numpy()
    latent, batches, labels = latent[known], batches[known].astype(str), labels[known].astype(str)
    for name, values in (("batches", batches), ("labels", labels)):
        if values.nunique() < 2:
            raise ValueError(
                f"integration scores need at least two {name} among the labelled spots, got {values.nunique()}"
            )
    k = min(n_neighbors, len(latent) - 1)
    distances, indices = NearestNeighbors(n_neighbors=k).fit(latent).kneighbors(latent)
    neighbors = NeighborsResults(indices=indices, distances=distances)
    # scib's batch silhouette is over the labels found in several batches; none: undefined
    shared = (pd.crosstab(labels, batches) > 0).sum(axis=1).gt(1).any()
    batches, labels = batches.to_numpy(), labels.to_numpy()
    return {
        "iLISI": float(ilisi_knn(neighbors, batches)),
        "cLISI": float(clisi_knn(neighbors, labels)),
        "silhouette_label": float(silhouette_label(latent, labels)),
        "silhouette_batch": float(silhouette_batch(latent, labels, batches)) if shared else math.nan,
        "n_scored": int(known.sum()),
    }
