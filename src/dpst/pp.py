"""Preprocessing of Visium counts with documented defaults (scanpy, squidpy), and the penalty's pair graph."""

from __future__ import annotations

import warnings
from typing import Literal

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ._checks import check_int, check_real
from .graph import GraphKind, SpatialGraph, spatial_graph
from .io import SPOT_SPACING_UM, pixel_calibration

__all__ = [
    "describe_preprocessing",
    "grid_neighbors",
    "is_raw_counts",
    "penalty_graph",
    "preprocess",
    "read_penalty_graph",
    "spatial_coordinates",
    "stored_values",
]

CoordinateUnit = Literal["auto", "pixel", "um"]
COORDINATE_UNITS = ("auto", "pixel", "um")
# what dpst.pp.penalty_graph writes; the models' graph_key default when they are given one
PENALTY_GRAPH_KEY = "dpst_penalty"

MT_PREFIXES = ("mt-", "MT-")
MIN_GENES_SEURAT_V3 = 20
HVG_FLAVORS = ("seurat_v3", "seurat", "cell_ranger")


def stored_values(x) -> np.ndarray:
    """The stored entries of a dense or sparse matrix (a sparse one's zeros need no check).

    Parameters
    ----------
    x
        A numpy array or a scipy sparse matrix.

    Returns
    -------
    numpy.ndarray
        ``x.data`` for a sparse matrix, else ``x`` as an array.
    """
    return x.data if sp.issparse(x) else np.asarray(x)


def is_raw_counts(x) -> bool:
    """Whether a matrix holds non-negative integers only.

    Parameters
    ----------
    x
        A numpy array or a scipy sparse matrix.

    Returns
    -------
    bool
        True when every stored value is a non-negative integer (of any dtype).
    """
    values = stored_values(x)
    return bool(np.all(values >= 0) and np.all(values == np.round(values)))


def _check_counts(adata: ad.AnnData) -> None:
    if not is_raw_counts(adata.X):
        raise ValueError("preprocess expects raw counts in adata.X (non-negative integers)")


def _check_settings(min_counts, min_genes, min_cells, n_top_genes, hvg_flavor, target_sum) -> None:
    """One clear line for a setting that makes no sense (before any work is done)."""
    check_int("min_counts", min_counts, minimum=0)
    check_int("min_cells", min_cells, minimum=0)
    if min_genes is not None:
        check_int("min_genes", min_genes, minimum=0)
    check_int("n_top_genes", n_top_genes, minimum=1)
    if hvg_flavor not in HVG_FLAVORS:
        raise ValueError(f"hvg_flavor must be one of {', '.join(HVG_FLAVORS)}, got {hvg_flavor!r}")
    check_real("target_sum", target_sum, above=0)


def _filter(adata: ad.AnnData, min_counts: int, min_genes: int | None, min_cells: int) -> None:
    import scanpy as sc

    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"no data to preprocess ({adata.n_obs} spots, {adata.n_vars} genes)")
    if not stored_values(adata.X).any():
        raise ValueError(f"all counts are zero ({adata.n_obs} spots x {adata.n_vars} genes)")
    sc.pp.filter_cells(adata, min_counts=min_counts)
    if min_genes is not None:
        sc.pp.filter_cells(adata, min_genes=min_genes)
    sc.pp.filter_genes(adata, min_cells=min_cells)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"no data left after filtering ({adata.n_obs} spots, {adata.n_vars} genes) with "
            f"min_counts={min_counts}, min_genes={min_genes}, min_cells={min_cells}"
        )


def _highly_variable(adata: ad.AnnData, n_top_genes: int, flavor: str, subset: bool) -> None:
    import scanpy as sc

    # seurat_v3 models raw counts; the other flavours expect log data in X.
    layer = "counts" if flavor == "seurat_v3" else None
    if adata.n_obs < 2:
        raise ValueError(f"highly variable genes need at least 2 spots, {adata.n_obs} left after filtering")
    if flavor == "seurat_v3":
        _check_loess_input(adata.layers["counts"])
    try:
        sc.pp.highly_variable_genes(adata, flavor=flavor, n_top_genes=n_top_genes, layer=layer, subset=subset)
    except Exception as err:  # skmisc's loess fails on degenerate data with various errors
        raise ValueError(
            f"highly_variable_genes(flavor={flavor!r}) failed on {adata.n_obs} spots x {adata.n_vars} genes: {err}"
        ) from err


def _check_loess_input(counts) -> None:
    """Refuse what crashes scikit-misc's loess inside seurat_v3 (a segfault takes the log with it).

    The loess fits log variance against log mean over the genes that vary; with
    fewer than ~20 such genes, or as few distinct means, it fails or segfaults
    (seen: a single spot, all-zero counts, constant counts, identical genes).
    """
    x = sp.csc_matrix(counts, dtype=np.float64)
    mean = np.asarray(x.mean(axis=0)).ravel()
    mean_sq = np.asarray(x.multiply(x).mean(axis=0)).ravel()
    varying = mean_sq - mean**2 > 1e-9 * mean_sq
    n_varying = int(varying.sum())
    n_means = len(np.unique(np.round(np.log10(mean[varying]), 9)))
    if min(n_varying, n_means) < MIN_GENES_SEURAT_V3:
        raise ValueError(
            f"highly_variable_genes(flavor='seurat_v3') needs at least {MIN_GENES_SEURAT_V3} genes whose counts "
            f"vary across spots, with as many distinct means; found {n_varying} varying genes with {n_means} "
            f"distinct means in {x.shape[0]} spots x {x.shape[1]} genes"
        )


def grid_neighbors(adata: ad.AnnData, n_neighs: int = 6) -> None:
    """Visium hexagonal-grid graph (squidpy) in ``obsp["spatial_connectivities"]``.

    squidpy's grid graph on ``obsm["spatial"]``; also writes
    ``obsp["spatial_distances"]`` and ``uns["spatial_neighbors"]``. It is the
    graph of the spatial autocorrelation (:func:`dpst.tl.spatial_autocorrelation`).

    Parameters
    ----------
    adata
        Spots with coordinates in ``obsm["spatial"]``; modified in place.
    n_neighs
        Neighbours per spot: 6 for the Visium hexagon.
    """
    import squidpy as sq

    # squidpy >= 1.7 deprecates the generic entry point in favour of the grid one.
    grid = getattr(sq.gr, "spatial_neighbors_grid", None)
    if grid is not None:
        grid(adata, n_neighs=n_neighs)
    else:
        sq.gr.spatial_neighbors(adata, coord_type="grid", n_neighs=n_neighs)


def _check_grid_graph(adata: ad.AnnData) -> None:
    """Warn when squidpy's grid graph joins spots that are not hexagon neighbours.

    squidpy keeps the ``n_neighs`` nearest spots closer than 1.3 x the median of
    those distances; when most spots lost neighbours (e.g. heavy QC filtering),
    that median grows and second-ring spots (173, 200 um) get joined, one-way.
    """
    rows, cols = adata.obsp["spatial_connectivities"].nonzero()
    if rows.size == 0:
        return
    xy = adata.obsm["spatial_um"]
    longest = np.linalg.norm(xy[rows] - xy[cols], axis=1).max()
    if longest > 1.3 * SPOT_SPACING_UM:
        warnings.warn(
            f"spatial graph has edges up to {longest:.0f} um, beyond the {SPOT_SPACING_UM:.0f} um Visium "
            "neighbours: too many spots were filtered out for squidpy's grid graph",
            stacklevel=3,
        )


def preprocess(
    adata: ad.AnnData,
    min_counts: int = 500,
    min_genes: int | None = None,
    min_cells: int = 10,
    n_top_genes: int = 2000,
    hvg_flavor: str = "seurat_v3",
    target_sum: float = 1e4,
    n_neighs: int = 6,
    subset_hvg: bool = True,
    copy: bool = False,
) -> ad.AnnData:
    """QC, filtering, normalization, highly variable genes and the spatial graph.

    Steps:

    1. ``var["mt"]`` flags genes starting with ``mt-``/``MT-``.
    2. Drop spots with fewer than ``min_counts`` counts (and fewer than
       ``min_genes`` genes if given), then genes seen in fewer than ``min_cells``
       spots; QC metrics (``sc.pp.calculate_qc_metrics``) of the kept data go to
       ``obs``/``var``.
    3. ``layers["counts"]``: raw counts (float32 CSR); ``X``:
       ``log1p(normalize_total(target_sum))``.
    4. ``sc.pp.highly_variable_genes(flavor=hvg_flavor)`` with
       ``n_top_genes`` clipped to the number of genes (on ``layers["counts"]`` for
       ``seurat_v3``); subset to them when ``subset_hvg``.
    5. ``obsm["spatial_um"]``: coordinates in micrometres.
    6. squidpy's grid graph (``n_neighs=6``: the Visium hexagon) in
       ``obsp["spatial_connectivities"]``/``obsp["spatial_distances"]``.

    Parameters are recorded in ``uns["dpst_preprocess"]``.

    Parameters
    ----------
    adata
        Spots x genes with raw counts in ``X`` and coordinates in ``obsm["spatial"]``.
    min_counts
        Spots with fewer counts are dropped.
    min_genes
        Spots with fewer detected genes are dropped (None: no such filter).
    min_cells
        Genes detected in fewer spots are dropped.
    n_top_genes
        Highly variable genes to select (clipped, with a warning, to the genes left).
    hvg_flavor
        ``"seurat_v3"`` (on raw counts), ``"seurat"`` or ``"cell_ranger"``.
    target_sum
        Counts per spot after ``normalize_total``.
    n_neighs
        Neighbours per spot of the grid graph.
    subset_hvg
        Keep only the highly variable genes.
    copy
        Work on a copy and return it, leaving ``adata`` as it was.

    Returns
    -------
    anndata.AnnData
        The processed AnnData (``adata`` itself unless ``copy``).

    Raises
    ------
    ValueError
        ``X`` does not hold raw counts, a setting makes no sense, or no data is left.

    Examples
    --------
    >>> adata = dpst.pp.preprocess(dpst.io.read_spaceranger("outs"))  # doctest: +SKIP
    """
    import scanpy as sc

    _check_settings(min_counts, min_genes, min_cells, n_top_genes, hvg_flavor, target_sum)
    adata = adata.copy() if copy else adata
    _check_counts(adata)
    n_spots_in, n_genes_in = adata.n_obs, adata.n_vars

    adata.var["mt"] = adata.var_names.str.startswith(MT_PREFIXES)
    _filter(adata, min_counts, min_genes, min_cells)
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)

    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)

    n_top = min(n_top_genes, adata.n_vars)
    if n_top < n_top_genes:
        warnings.warn(
            f"n_top_genes={n_top_genes} but only {adata.n_vars} genes pass filtering "
            f"(min_cells={min_cells}); keeping all {adata.n_vars}",
            stacklevel=2,
        )
    _highly_variable(adata, n_top, hvg_flavor, subset_hvg)

    calibration = pixel_calibration(adata)
    adata.obsm["spatial_um"] = np.asarray(adata.obsm["spatial"], dtype=float) * calibration.um_per_pixel
    grid_neighbors(adata, n_neighs)
    _check_grid_graph(adata)

    adata.uns["dpst_preprocess"] = {
        "min_counts": min_counts,
        "min_genes": min_genes,
        "min_cells": min_cells,
        "n_top_genes": n_top_genes,
        "n_hvg": n_top,
        "n_top_genes_clipped": n_top < n_top_genes,
        "hvg_flavor": hvg_flavor,
        "target_sum": target_sum,
        "n_neighs": n_neighs,
        "subset_hvg": subset_hvg,
        "n_spots_in": n_spots_in,
        "n_genes_in": n_genes_in,
        "n_spots_out": adata.n_obs,
        "n_genes_out": adata.n_vars,
        "calibration": calibration.as_dict(),
    }
    return adata


def describe_preprocessing(adata: ad.AnnData) -> str:
    """Two lines for a log: the genes kept against those asked for, and the micrometre calibration.

    Parameters
    ----------
    adata
        An AnnData processed by :func:`preprocess`.

    Returns
    -------
    str
        The two lines.
    """
    record = adata.uns["dpst_preprocess"]
    genes = f"{record['n_hvg']} highly variable genes ({record['hvg_flavor']})"
    if record["n_top_genes_clipped"]:
        genes += f": fewer than the n_top_genes={record['n_top_genes']} asked for, all that passed filtering"
    calibration = record["calibration"]
    how = (
        f"from the spot grid ({calibration['n_grid_pairs']} neighbour pairs at 100 um)"
        if calibration["method"] == "grid"
        else "from 65 um / spot_diameter_fullres (the grid could not be used)"
    )
    return f"{genes}\ncoordinates: {calibration['um_per_pixel']:.5g} um per full-resolution pixel, {how}"


# --------------------------------------------------------------------------- #
# coordinates in micrometres and the penalty's pair graph G
# --------------------------------------------------------------------------- #
def _micrometre_coordinates(adata: ad.AnnData, spatial_key: str, unit: CoordinateUnit) -> tuple[np.ndarray, dict]:
    """``(N, 2)`` float64 micrometre coordinates and a record of how they were obtained."""
    if spatial_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {spatial_key!r} (keys: {list(adata.obsm)}); "
            "pass spatial_key= the key of the spot coordinates"
        )
    if unit not in COORDINATE_UNITS:
        raise ValueError(f"coordinate_unit must be 'auto', 'pixel' or 'um', got {unit!r}")
    if unit == "um" or (unit == "auto" and not adata.uns.get("spatial")):
        coords = adata.obsm[spatial_key]
        record = {"spatial_key": spatial_key, "coordinate_unit": unit, "conversion": "none (taken as micrometres)"}
    else:
        calibration = pixel_calibration(adata, spatial_key=spatial_key)
        # the arithmetic of dpst.io.spatial_um, so the result is the same to the bit
        coords = np.asarray(adata.obsm[spatial_key], dtype=float) * calibration.um_per_pixel
        record = {
            "spatial_key": spatial_key,
            "coordinate_unit": unit,
            "conversion": "full-resolution pixels x um_per_pixel",
            **calibration.as_dict(),
        }
    return np.asarray(coords, dtype=np.float64)[:, :2], record


def spatial_coordinates(adata: ad.AnnData, spatial_key: str = "spatial", unit: CoordinateUnit = "auto") -> np.ndarray:
    """Spot coordinates in micrometres, as the models and :func:`penalty_graph` use them.

    Parameters
    ----------
    adata
        Spots with coordinates in ``obsm[spatial_key]`` (the first two columns are used).
    spatial_key
        Key of the coordinates in ``adata.obsm``.
    unit
        ``"auto"``: the coordinates are full-resolution pixels when Visium scale
        factors are in ``uns["spatial"]`` (the scanpy/squidpy convention) and are
        converted with :func:`dpst.io.pixel_calibration` (calibrated on the spot
        grid: Visium spot centres are 100 um apart); without scale factors they are
        taken as micrometres. ``"pixel"`` always converts, ``"um"`` never does.

    Returns
    -------
    numpy.ndarray
        ``(n_obs, 2)`` float64 coordinates in micrometres.

    Raises
    ------
    KeyError
        ``spatial_key`` is not in ``adata.obsm``.
    ValueError
        ``unit`` is not one of ``auto``, ``pixel``, ``um``, or pixels cannot be calibrated.
    """
    return _micrometre_coordinates(adata, spatial_key, unit)[0]


def _graph_matrix(graph: SpatialGraph, values: np.ndarray) -> sp.csr_matrix:
    """Symmetric CSR matrix holding ``values`` at each pair (i, j) and (j, i)."""
    rows = np.concatenate([graph.edges[:, 0], graph.edges[:, 1]])
    cols = np.concatenate([graph.edges[:, 1], graph.edges[:, 0]])
    matrix = sp.csr_matrix((np.concatenate([values, values]), (rows, cols)), shape=(graph.n_obs, graph.n_obs))
    matrix.sort_indices()
    return matrix


def penalty_graph(
    adata: ad.AnnData,
    graph: GraphKind = "knn",
    *,
    n_neighbors: int = 18,
    radius: float = 250.0,
    sigma: float = 100.0,
    spatial_key: str = "spatial",
    coordinate_unit: CoordinateUnit = "auto",
    key_added: str = PENALTY_GRAPH_KEY,
    copy: bool = False,
) -> ad.AnnData | None:
    """Build the distortion penalty's pair graph G and store it in ``adata``, as squidpy stores its graphs.

    G is built by :func:`dpst.graph.spatial_graph` on the coordinates in
    micrometres (:func:`spatial_coordinates`), exactly as the models build it
    when they are not given a stored graph. The arguments have the names and
    defaults of the model constructors' arguments, so the same settings can be
    passed to both.

    Parameters
    ----------
    adata
        Spots with coordinates in ``obsm[spatial_key]``.
    graph
        ``"knn"`` (symmetrized k nearest neighbours), ``"radius"`` (pairs closer
        than ``radius``), ``"gaussian"`` (weights ``exp(-d^2 / 2 sigma^2)`` within
        ``3 sigma``) or ``"all"`` (every pair; small sections only).
    n_neighbors
        k of ``knn``. 18 covers the first three rings of the Visium grid.
    radius
        Radius of ``radius``, in micrometres.
    sigma
        Width of ``gaussian``, in micrometres.
    spatial_key
        Key of the coordinates in ``adata.obsm``.
    coordinate_unit
        ``"auto"``, ``"pixel"`` or ``"um"``: see :func:`spatial_coordinates`.
    key_added
        Prefix of the keys written (see Returns).
    copy
        Return a copy of ``adata`` with the graph instead of writing into ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy=True``, else None. Writes

        - ``obsp[f"{key_added}_connectivities"]``: symmetric CSR matrix of the
          pair weights w_ij (float64), each pair at (i, j) and (j, i);
        - ``obsp[f"{key_added}_distances"]``: the pairs' distances in micrometres,
          with the same sparsity pattern;
        - ``uns[key_added]``: ``connectivities_key``, ``distances_key``, ``graph``
          (the kind), ``params`` (the kind's parameters), ``unit`` (``"um"``),
          ``n_obs`` (spots), ``n_edges`` (pairs, each once) and ``coordinates`` (the spatial key,
          the unit asked for and how micrometres were obtained).

    Raises
    ------
    KeyError
        ``spatial_key`` is not in ``adata.obsm``.
    ValueError
        Bad graph settings or coordinates (one line naming the parameter).

    Examples
    --------
    >>> dpst.pp.penalty_graph(adata, graph="radius", radius=250.0)  # doctest: +SKIP
    >>> model = dpst.DPVAE(adata, graph_key="dpst_penalty")  # doctest: +SKIP
    """
    adata = adata.copy() if copy else adata
    coords, coordinates = _micrometre_coordinates(adata, spatial_key, coordinate_unit)
    built = spatial_graph(coords, graph, n_neighbors=n_neighbors, radius=radius, sigma=sigma)
    connectivities_key, distances_key = f"{key_added}_connectivities", f"{key_added}_distances"
    adata.obsp[connectivities_key] = _graph_matrix(built, built.weights)
    adata.obsp[distances_key] = _graph_matrix(built, built.distances)
    adata.uns[key_added] = {
        "connectivities_key": connectivities_key,
        "distances_key": distances_key,
        "graph": built.kind,
        "params": dict(built.params),
        "unit": "um",
        "n_obs": built.n_obs,
        "n_edges": built.n_edges,
        "coordinates": coordinates,
    }
    return adata if copy else None


def read_penalty_graph(adata: ad.AnnData, key: str = PENALTY_GRAPH_KEY) -> SpatialGraph:
    """The pair graph G that :func:`penalty_graph` stored under ``key``, as a :class:`~dpst.graph.SpatialGraph`.

    The pairs come back in the order :func:`dpst.graph.spatial_graph` gives them
    (``i < j``, sorted), with the same weights and distances to the bit, so a model
    trained on the stored graph gives the result of one that builds it itself.

    Parameters
    ----------
    adata
        The AnnData holding the graph.
    key
        The ``key_added`` the graph was stored under.

    Returns
    -------
    dpst.graph.SpatialGraph
        Pairs, weights, distances (micrometres), ``kind`` and ``params``.

    Raises
    ------
    KeyError
        ``uns[key]`` or one of its ``obsp`` matrices is missing.
    ValueError
        The graph was built on other spots than ``adata``'s (e.g. ``adata`` was
        subset afterwards: anndata keeps the pairs among the kept spots, which is
        not the graph those spots would get), or its two matrices disagree.
    """
    record = adata.uns.get(key)
    if not isinstance(record, dict) or record.get("unit") != "um" or "graph" not in record:
        found = "missing" if key not in adata.uns else "not a dpst penalty graph"
        raise KeyError(
            f"adata.uns[{key!r}] is {found}; build the graph with dpst.pp.penalty_graph(adata, key_added={key!r})"
        )
    matrices = []
    for role in ("connectivities_key", "distances_key"):
        obsp_key = record.get(role, f"{key}_{role.split('_')[0]}")
        if obsp_key not in adata.obsp:
            raise KeyError(
                f"adata.obsp has no {obsp_key!r} (graph {key!r}); "
                f"build it again with dpst.pp.penalty_graph(adata, key_added={key!r})"
            )
        # anndata keeps obsp n_obs x n_obs; only the upper triangle (each pair once) is read
        matrices.append(sp.triu(sp.csr_matrix(adata.obsp[obsp_key]), k=1, format="csr"))
    weights, distances = matrices
    built_on = (int(record.get("n_obs", -1)), int(record.get("n_edges", -1)))
    if built_on != (adata.n_obs, weights.nnz):
        raise ValueError(
            f"graph {key!r} was built on {built_on[0]} spots with {built_on[1]} pairs; adata has "
            f"{adata.n_obs} spots and the stored matrices {weights.nnz} pairs (subset after building?): "
            f"run dpst.pp.penalty_graph(adata, key_added={key!r}) again"
        )
    weights.sort_indices()
    distances.sort_indices()
    if not (np.array_equal(weights.indptr, distances.indptr) and np.array_equal(weights.indices, distances.indices)):
        raise ValueError(f"graph {key!r}: its connectivities and distances hold different pairs")
    rows = np.repeat(np.arange(adata.n_obs, dtype=np.int64), np.diff(weights.indptr))
    edges = np.stack([rows, weights.indices.astype(np.int64)], axis=1)
    return SpatialGraph(
        edges,
        np.asarray(weights.data, dtype=np.float64),
        np.asarray(distances.data, dtype=np.float64),
        adata.n_obs,
        str(record["graph"]),
        {
            name: value.item() if isinstance(value, np.generic) else value  # h5ad gives numpy scalars
            for name, value in record.get("params", {}).items()
        },
    )
