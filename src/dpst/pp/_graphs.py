"""Graphs on an AnnData's spots: the neighbourhood graph and the penalty's pair graph G.

Both are built on the micrometre coordinates of :func:`dpst.pp.spatial_coordinates`,
library by library when ``library_key`` is given (block-diagonal: no pair joins two
sections), and stored as squidpy stores its graphs: matrices in ``obsp``, a record in ``uns``.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from dpst.graph import GraphKind, NeighborGraph, NeighborKind, SpatialGraph, neighbor_graph, spatial_graph
from dpst.io import array_positions

from ._coordinates import CoordinateUnit, Libraries, micrometre_coordinates

# what dpst.pp.penalty_graph writes; the models' graph_key default when they are given one
PENALTY_GRAPH_KEY = "dpst_penalty"


def build_neighbor_graph(
    adata: ad.AnnData,
    coords: np.ndarray,
    libs: Libraries,
    kind: NeighborKind = "auto",
    *,
    n_neighs: int | None = None,
    radius: float | None = None,
) -> NeighborGraph:
    """:func:`dpst.graph.neighbor_graph` on an AnnData's spots, given their micrometres and libraries."""
    array_row, array_col = array_positions(adata.obs)
    return neighbor_graph(
        coords,
        kind,
        n_neighs=n_neighs,
        radius=radius,
        groups=libs.groups(),
        group_names=libs.names,
        array_row=array_row,
        array_col=array_col,
    )


def spatial_neighbors(
    adata: ad.AnnData,
    kind: NeighborKind = "auto",
    *,
    n_neighs: int | None = None,
    radius: float | None = None,
    spatial_key: str = "spatial",
    library_key: str | None = None,
    coordinate_unit: CoordinateUnit = "auto",
    key_added: str = "spatial",
    copy: bool = False,
) -> ad.AnnData | None:
    """The spots' neighbourhood graph, chosen from their geometry, as squidpy stores it.

    The graph of spatial autocorrelation (:func:`dpst.tl.spatial_autocorrelation`)
    and of squidpy's tools. ``kind="auto"`` picks it from the data:

    - ``obs["array_row"]``/``obs["array_col"]`` on the Visium hexagon: squidpy's
      ``grid`` graph, 6 neighbours;
    - the same on a square lattice (binned data such as Visium HD): ``grid``, 4 neighbours;
    - anything else (cells of imaging platforms, spots without array positions):
      a kNN graph of 6 neighbours in micrometres.

    ``"knn"``, ``"radius"``, ``"delaunay"`` and ``"grid"`` force a kind. With
    ``library_key`` the graph is built within each library and is block-diagonal.

    Parameters
    ----------
    adata
        Spots with coordinates in ``obsm[spatial_key]``.
    kind
        ``"auto"``, ``"grid"``, ``"knn"``, ``"radius"`` or ``"delaunay"``.
    n_neighs
        Neighbours per spot of ``grid`` and ``knn`` (None: 6 on a hexagon, 4 on a
        square lattice, 6 for ``knn``).
    radius
        Radius of ``radius``, in micrometres.
    spatial_key
        Key of the coordinates in ``adata.obsm``.
    library_key
        Column of ``adata.obs`` naming each spot's library (section).
    coordinate_unit
        ``"auto"``, ``"pixel"`` or ``"um"``: see :func:`dpst.pp.spatial_coordinates`.
    key_added
        Prefix of the keys written, as squidpy's ``key_added``.
    copy
        Return a copy of ``adata`` with the graph instead of writing into ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy=True``, else None. Writes ``obsp[f"{key_added}_connectivities"]``,
        ``obsp[f"{key_added}_distances"]`` and ``uns[f"{key_added}_neighbors"]``
        (``connectivities_key``, ``distances_key``, ``params``: ``kind``, ``geometry``,
        ``n_neighs`` or ``radius``, ``library_key``).

    Raises
    ------
    KeyError
        ``spatial_key`` or ``library_key`` is missing.
    ValueError
        Bad coordinates, settings or libraries (one line naming them).

    Examples
    --------
    >>> dpst.pp.spatial_neighbors(cells)  # no array positions: kNN, 6 neighbours  # doctest: +SKIP
    >>> adata.uns["spatial_neighbors"]["params"]["kind"]  # doctest: +SKIP
    'knn'
    """
    coords, _record, libs = micrometre_coordinates(adata, spatial_key, coordinate_unit, library_key)
    built = build_neighbor_graph(adata, coords, libs, kind, n_neighs=n_neighs, radius=radius)
    adata = adata.copy() if copy else adata
    write_neighbor_graph(adata, built, key_added, library_key)
    return adata if copy else None


def write_neighbor_graph(adata: ad.AnnData, built: NeighborGraph, key_added: str, library_key: str | None) -> None:
    """Store a neighbourhood graph under squidpy's keys."""
    connectivities_key, distances_key = f"{key_added}_connectivities", f"{key_added}_distances"
    adata.obsp[connectivities_key] = built.connectivities
    adata.obsp[distances_key] = built.distances
    params = dict(built.params)
    if library_key is not None:
        params["library_key"] = library_key
    adata.uns[f"{key_added}_neighbors"] = {
        "connectivities_key": connectivities_key,
        "distances_key": distances_key,
        "params": params,
    }


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
    library_key: str | None = None,
    coordinate_unit: CoordinateUnit = "auto",
    key_added: str = PENALTY_GRAPH_KEY,
    copy: bool = False,
) -> ad.AnnData | None:
    """Build the distortion penalty's pair graph G and store it in ``adata``, as squidpy stores its graphs.

    G is built by :func:`dpst.graph.spatial_graph` on the coordinates in
    micrometres (:func:`dpst.pp.spatial_coordinates`), exactly as the models build it
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
    library_key
        Column of ``adata.obs`` naming each spot's library (section): G is then
        built within each library, so no pair joins two sections.
    coordinate_unit
        ``"auto"``, ``"pixel"`` or ``"um"``: see :func:`dpst.pp.spatial_coordinates`.
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
    coords, coordinates, libs = micrometre_coordinates(adata, spatial_key, coordinate_unit, library_key)
    built = spatial_graph(
        coords,
        graph,
        n_neighbors=n_neighbors,
        radius=radius,
        sigma=sigma,
        groups=libs.groups(),
        group_names=libs.names,
    )
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
