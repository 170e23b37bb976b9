"""Measures of a latent stored in an AnnData: autocorrelation, distortion, local-metric ellipses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd

from dpst import metrics
from dpst.pp import PENALTY_GRAPH_KEY, CoordinateUnit, read_penalty_graph
from dpst.pp._coordinates import micrometre_coordinates

AUTOCORRELATION_MODES = (("moran", "I", "moran_I"), ("geary", "C", "geary_C"))


def _latent(adata: ad.AnnData, use_rep: str) -> np.ndarray:
    """``obsm[use_rep]`` as a finite float64 array (one line naming the key otherwise)."""
    if use_rep not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {use_rep!r} (keys: {list(adata.obsm)}); "
            "write the latent codes there first, e.g. with model.write_results(adata)"
        )
    latent = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    if latent.ndim != 2:
        raise ValueError(f"adata.obsm[{use_rep!r}] must be a 2-d array of latent codes, got shape {latent.shape}")
    bad = ~np.isfinite(latent).all(axis=1)
    if bad.any():
        raise ValueError(f"adata.obsm[{use_rep!r}]: the latent codes of {bad.sum()} spots are NaN or infinite")
    return latent


def spatial_autocorrelation(
    adata: ad.AnnData,
    use_rep: str,
    *,
    connectivity_key: str = "spatial_connectivities",
    key_added: str | None = None,
) -> pd.DataFrame:
    """Moran's I and Geary's C of each latent dimension, on the latent in ``obsm`` and the graph in ``obsp``.

    :func:`dpst.metrics.spatial_autocorrelation` (scanpy's ``morans_i`` and
    ``gearys_c``, row-normalized weights as squidpy's ``transformation=True``) on
    ``obsm[use_rep]`` and ``obsp[connectivity_key]``. On the neighbourhood graph that
    :func:`dpst.pp.preprocess` writes there, the values are those of
    :func:`dpst.metrics.evaluate_model`. With several sections the graph is
    block-diagonal and the values are over all of them.

    Parameters
    ----------
    adata
        Spots with latent codes in ``obsm[use_rep]`` and a spatial graph in ``obsp``.
    use_rep
        Key of the latent codes in ``adata.obsm``.
    connectivity_key
        Key of the spatial graph's weights in ``adata.obsp`` (squidpy's default;
        :func:`dpst.pp.spatial_neighbors` writes there).
    key_added
        Key written in ``adata.uns``; default ``f"{use_rep}_autocorrelation"``.

    Returns
    -------
    pandas.DataFrame
        One row per dimension (``z0, z1, ...``) with columns ``moran_I`` and
        ``geary_C`` (NaN for a dimension constant over spots), also written to
        ``adata.uns[key_added]``.

    Raises
    ------
    KeyError
        ``use_rep`` is not in ``obsm`` or ``connectivity_key`` not in ``obsp``.
    ValueError
        The latent codes are not a finite 2-d array.

    Examples
    --------
    >>> dpst.tl.spatial_autocorrelation(adata, "X_dpvae")["moran_I"].mean()  # doctest: +SKIP
    """
    latent = _latent(adata, use_rep)
    if connectivity_key not in adata.obsp:
        raise KeyError(
            f"adata.obsp has no {connectivity_key!r} (keys: {list(adata.obsp)}); "
            "build the neighbourhood graph with dpst.pp.spatial_neighbors(adata) (dpst.pp.preprocess does)"
        )
    out = metrics.spatial_autocorrelation(latent, adata.obsp[connectivity_key])
    adata.uns[key_added or f"{use_rep}_autocorrelation"] = out
    return out


def distortion(
    adata: ad.AnnData,
    use_rep: str,
    *,
    graph_key: str = PENALTY_GRAPH_KEY,
    lam: float | None = None,
    normalization: Literal["pairs", "n2"] = "pairs",
    eps: Sequence[float] = (0.05, 0.1),
    key_added: str | None = None,
) -> dict[str, float]:
    """Penalty value, lam and empirical distortion L_eps of the latent on the penalty's pair graph.

    :func:`dpst.metrics.distortion` on ``obsm[use_rep]`` and the graph G that
    :func:`dpst.pp.penalty_graph` stored under ``graph_key``. With the graph a
    model was trained on and its ``normalization``, the values are those of
    :func:`dpst.metrics.evaluate_model`.

    Parameters
    ----------
    adata
        Spots with latent codes in ``obsm[use_rep]`` and a stored penalty graph.
    use_rep
        Key of the latent codes in ``adata.obsm``.
    graph_key
        ``key_added`` of :func:`dpst.pp.penalty_graph`.
    lam
        Scale of latent to spatial distances; None takes the lam that minimizes
        the penalty (:func:`dpst.metrics.optimal_lam`).
    normalization
        ``"pairs"`` or ``"n2"``, as the models' argument.
    eps
        The eps of each ``L_eps = q_{1-eps/2}(r) / q_{eps/2}(r)``, ``r = d_z / d_s``.
    key_added
        Key written in ``adata.uns``; default ``f"{use_rep}_distortion"``.

    Returns
    -------
    dict
        ``penalty``, ``lam`` and ``L_{eps}`` for each eps (floats), also written
        to ``adata.uns[key_added]``.

    Raises
    ------
    KeyError
        ``use_rep`` or the graph ``graph_key`` is missing.
    ValueError
        The stored graph does not match ``adata``, or the latent codes are not finite.

    Examples
    --------
    >>> dpst.pp.penalty_graph(adata)  # doctest: +SKIP
    >>> dpst.tl.distortion(adata, "X_dpvae")["L_0.1"]  # doctest: +SKIP
    """
    latent = _latent(adata, use_rep)
    graph = read_penalty_graph(adata, graph_key)
    out = metrics.distortion(latent, graph, lam=lam, normalization=normalization, eps=eps)
    adata.uns[key_added or f"{use_rep}_distortion"] = out
    return out


def local_metric_ellipses(
    adata: ad.AnnData,
    use_rep: str,
    *,
    spatial_key: str = "spatial",
    library_key: str | None = None,
    coordinate_unit: CoordinateUnit = "auto",
    neighbour_factor: float = 1.25,
    key_added: str | None = None,
) -> pd.DataFrame:
    """Per spot, the local metric of the map tissue -> latent space as an ellipse (Figure 4).

    :func:`dpst.metrics.local_metric_ellipses` on ``obsm[use_rep]`` and the spot
    coordinates in micrometres (:func:`dpst.pp.spatial_coordinates`, as the
    models use them); semi-axes are in latent units per micrometre.

    Parameters
    ----------
    adata
        Spots with latent codes in ``obsm[use_rep]`` and coordinates in ``obsm[spatial_key]``.
    use_rep
        Key of the latent codes in ``adata.obsm``.
    spatial_key
        Key of the spot coordinates in ``adata.obsm``.
    library_key
        Column of ``adata.obs`` naming each spot's library (section): neighbours are
        then sought within a section only.
    coordinate_unit
        ``"auto"``, ``"pixel"`` or ``"um"``: see :func:`dpst.pp.spatial_coordinates`.
    neighbour_factor
        Neighbours of a spot are the spots within this factor times the median
        nearest-neighbour distance.
    key_added
        Key written in ``adata.obsm`` and ``adata.uns``; default ``f"{use_rep}_ellipses"``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``obs_names``, columns ``x``, ``y`` (micrometres), ``major``, ``minor`` (semi-axes),
        ``angle`` (degrees from the x axis), ``axis_ratio`` and ``size`` (NaN for
        spots with fewer than 3 neighbours), written to ``adata.obsm[key_added]``;
        :func:`dpst.metrics.ellipse_summary` (``median_axis_ratio``, ``size_cv``)
        goes to ``adata.uns[key_added]``.

    Raises
    ------
    KeyError
        ``use_rep`` or ``spatial_key`` is not in ``obsm``.
    ValueError
        The latent codes are not finite, or the coordinates cannot be converted.

    Examples
    --------
    >>> table = dpst.tl.local_metric_ellipses(adata, "X_dpvae")  # doctest: +SKIP
    >>> dpst.pl.ellipses(ax, table, scale=dpst.pl.ellipse_scale([table]))  # doctest: +SKIP
    """
    latent = _latent(adata, use_rep)
    coords, _record, libs = micrometre_coordinates(adata, spatial_key, coordinate_unit, library_key)
    table = metrics.local_metric_ellipses(latent, coords, neighbour_factor=neighbour_factor, groups=libs.groups())
    key = key_added or f"{use_rep}_ellipses"
    # x and y stay: the table is what dpst.pl.ellipses draws
    ellipses = table.set_axis(adata.obs_names, axis=0)
    adata.obsm[key] = ellipses
    adata.uns[key] = metrics.ellipse_summary(table)
    return ellipses
