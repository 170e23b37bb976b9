"""Graphs on spot coordinates, as arrays: the penalty's pair graph G and the neighbourhood graph.

G is stored as an undirected edge list, each pair once (i < j), with positive
weights. Sparse kinds (``knn``, ``radius``, ``gaussian``) never materialize an
N x N matrix; ``all`` is the complete graph, for small N only.

The neighbourhood graph (:func:`neighbor_graph`) is the graph of spatial
autocorrelation and of squidpy's tools: the hexagon of a Visium array, the
square lattice of binned data, or a kNN / radius / Delaunay graph of cells,
built with squidpy's graph builders.

With ``groups`` (each spot's library, i.e. tissue section), both are built section
by section: no pair ever joins two sections.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ._checks import check_int, check_real
from .io import lattice

GraphKind = Literal["knn", "radius", "gaussian", "all"]
GRAPH_KINDS = ("knn", "radius", "gaussian", "all")
# The complete graph keeps N(N-1)/2 pairs; above this it no longer fits comfortably.
MAX_COMPLETE_GRAPH_OBS = 20_000


@dataclass(frozen=True)
class SpatialGraph:
    """Weighted undirected pairs of spots, each pair once with ``i < j``.

    Attributes
    ----------
    edges
        ``(E, 2)`` int64 array of spot indices, ``edges[:, 0] < edges[:, 1]``.
    weights
        ``(E,)`` float64 positive weights.
    distances
        ``(E,)`` float64 spatial distances of the pairs (same unit as the coordinates).
    n_obs
        Number of spots the indices refer to.
    kind, params
        How the graph was built.
    """

    edges: np.ndarray
    weights: np.ndarray
    distances: np.ndarray
    n_obs: int
    kind: str
    params: dict = field(default_factory=dict)

    @property
    def n_edges(self) -> int:
        """The number of pairs in the graph."""
        return len(self.edges)

    @property
    def is_complete(self) -> bool:
        """Every pair, in ``torch.pdist`` order (an ``all`` graph that dropped no coincident pair)."""
        return self.kind == "all" and self.n_edges == self.n_obs * (self.n_obs - 1) // 2

    def denominator(self, normalization: Literal["pairs", "n2"]) -> float:
        """Normalizer of the summed per-pair deviations (each unordered pair once).

        ``pairs`` divides by the sum of the weights: a weighted mean deviation per pair.
        ``n2`` is the study's ``1/N^2`` over ordered pairs; summing each unordered pair
        once, that is ``N^2 / 2``. Hence ``dis_n2 = dis_pairs * 2 * sum(w) / N^2``.
        """
        if normalization == "pairs":
            return float(self.weights.sum())
        if normalization == "n2":
            return self.n_obs**2 / 2.0
        raise ValueError(f"normalization must be 'pairs' or 'n2', got {normalization!r}")

    def adjacency(self) -> sp.csr_matrix:
        """Symmetric CSR matrix whose entries hold the edge ids (1-based, 0 = no edge)."""
        ids = np.arange(1, self.n_edges + 1, dtype=np.int64)
        rows = np.concatenate([self.edges[:, 0], self.edges[:, 1]])
        cols = np.concatenate([self.edges[:, 1], self.edges[:, 0]])
        return sp.csr_matrix((np.concatenate([ids, ids]), (rows, cols)), shape=(self.n_obs, self.n_obs))

    def subgraph(self, keep: np.ndarray) -> SpatialGraph:
        """The graph induced on the spots ``keep`` (indices), renumbered 0..len(keep)-1."""
        keep = np.asarray(keep)
        new_index = np.full(self.n_obs, -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        mapped = new_index[self.edges]
        inside = (mapped >= 0).all(axis=1)
        mapped = np.sort(mapped[inside], axis=1)
        return SpatialGraph(
            mapped,
            self.weights[inside],
            self.distances[inside],
            len(keep),
            self.kind,
            self.params,
        )


def spatial_graph(
    coords: np.ndarray,
    kind: GraphKind = "knn",
    *,
    n_neighbors: int = 18,
    radius: float = 250.0,
    sigma: float = 100.0,
    groups: np.ndarray | None = None,
    group_names: tuple[str, ...] | None = None,
) -> SpatialGraph:
    """Build the penalty's pair graph G from spot coordinates (micrometres).

    Parameters
    ----------
    coords
        ``(N, 2)`` coordinates.
    kind
        ``knn``: symmetrized k-nearest-neighbour graph, weight 1.
        ``radius``: every pair closer than ``radius``, weight 1.
        ``gaussian``: weight ``exp(-d^2 / (2 sigma^2))`` for pairs within ``3 sigma``.
        ``all``: every pair, weight 1 (O(N^2); small N only).
    n_neighbors
        k of ``knn``. The default 18 covers the first three rings of the Visium
        hexagonal grid (100, 173 and 200 um), so G holds several distances and
        fixes the scale ``lam``, not just equal spacing.
    radius
        Radius of ``radius``.
    sigma
        Width of ``gaussian``.
    groups
        ``(N,)`` integer library codes (0, 1, ...): G is then built within each
        library on its own and the pairs are joined, so no pair crosses two
        libraries and each library's pairs are those it would get alone. None: one library.
    group_names
        The libraries' names, for messages.

    Returns
    -------
    SpatialGraph
        The pairs in lexicographic order, with weights and distances.
    """
    coords = _checked_coordinates(coords)
    if groups is not None:
        return _graph_by_group(coords, kind, groups, group_names, n_neighbors=n_neighbors, radius=radius, sigma=sigma)
    n = len(coords)
    if n < 2:
        raise ValueError(f"need at least 2 spots to build a pair graph, got {n}")
    if kind not in GRAPH_KINDS:
        raise ValueError(f"graph kind must be one of {GRAPH_KINDS}, got {kind!r}")
    if np.ptp(coords, axis=0).max() == 0:
        raise ValueError(
            f"all {n} spots are at the same position ({coords[0, 0]:g}, {coords[0, 1]:g}): "
            "the penalty needs spots at distinct positions"
        )
    params: dict[str, float]
    if kind == "knn":
        edges, params = _knn_pairs(coords, n_neighbors), {"n_neighbors": n_neighbors}
    elif kind == "radius":
        edges, params = _radius_pairs(coords, check_real("radius", radius, above=0)), {"radius": radius}
    elif kind == "gaussian":
        sigma = check_real("sigma", sigma, above=0)
        edges, params = _radius_pairs(coords, 3.0 * sigma), {"sigma": sigma}
    else:
        if n > MAX_COMPLETE_GRAPH_OBS:
            raise ValueError(
                f"graph kind 'all' keeps N(N-1)/2 pairs; N={n} is above "
                f"{MAX_COMPLETE_GRAPH_OBS}. Use 'knn', 'radius' or 'gaussian'."
            )
        edges, params = np.stack(np.triu_indices(n, k=1), axis=1), {}
    distances = pair_lengths(coords, edges)
    # d_s = 0 cannot be scaled to any d_z (d_z / d_s is infinite): such pairs carry no geometry
    coincident = distances == 0
    if coincident.any():
        warnings.warn(
            f"spatial_graph: dropped {coincident.sum()} of {len(edges)} pairs whose spots share "
            "a position (zero spatial distance)",
            UserWarning,
            stacklevel=2,
        )
        edges, distances = edges[~coincident], distances[~coincident]
    if len(edges) == 0:
        raise ValueError(
            f"the {kind!r} graph with {params} has no pairs for these {n} spots "
            f"(median nearest-neighbour spacing {_typical_spacing(coords):g}): "
            + ("raise n_neighbors" if kind == "knn" else "raise radius/sigma or use graph='knn'")
        )
    if kind == "gaussian":
        weights = np.exp(-(distances**2) / (2.0 * sigma**2))
    else:
        weights = np.ones(len(edges))
    return SpatialGraph(edges.astype(np.int64), weights, distances, n, kind, params)


def _checked_coordinates(coords) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must have shape (N, 2), got {coords.shape}")
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise ValueError(
            f"coords of {bad.sum()} of {len(coords)} spots are NaN or infinite (first at row {np.flatnonzero(bad)[0]})"
        )
    return coords


def group_spots(groups: np.ndarray) -> list[np.ndarray]:
    """Sorted spot indices of each group code 0, 1, ..., max(groups).

    Parameters
    ----------
    groups
        ``(N,)`` non-negative integer codes.

    Returns
    -------
    list of numpy.ndarray
        One sorted index array per code.
    """
    groups = np.asarray(groups, dtype=np.int64)
    order = np.argsort(groups, kind="stable")
    return np.split(order, np.cumsum(np.bincount(groups))[:-1])


def _group_name(group_names: tuple[str, ...] | None, code: int) -> str:
    return repr(group_names[code]) if group_names is not None else str(code)


def _graph_by_group(coords, kind, groups, group_names, **settings) -> SpatialGraph:
    """G built within each group and joined, pairs in lexicographic order."""
    edges, weights, distances, params = [], [], [], {}
    for code, spots in enumerate(group_spots(groups)):
        try:
            part = spatial_graph(coords[spots], kind, **settings)
        except ValueError as error:
            raise ValueError(f"library {_group_name(group_names, code)}: {error}") from None
        edges.append(spots[part.edges])
        weights.append(part.weights)
        distances.append(part.distances)
        params = part.params
    joined = np.concatenate(edges)
    order = np.lexsort((joined[:, 1], joined[:, 0]))
    return SpatialGraph(
        joined[order], np.concatenate(weights)[order], np.concatenate(distances)[order], len(coords), kind, params
    )


def pair_lengths(coords: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Euclidean lengths of pairs of spots: G's spatial distances d_s.

    Parameters
    ----------
    coords
        ``(N, 2)`` spot coordinates.
    edges
        ``(E, 2)`` row indices of the pairs.

    Returns
    -------
    numpy.ndarray
        ``(E,)`` lengths, in the unit of ``coords``.
    """
    return np.linalg.norm(coords[edges[:, 0]] - coords[edges[:, 1]], axis=1)


def _typical_spacing(coords: np.ndarray) -> float:
    """Median over spots of the distance to the nearest spot at another position."""
    nearest = cKDTree(coords).query(coords, k=min(len(coords), 8))[0]
    nearest = np.where(nearest > 0, nearest, np.inf).min(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    return float(np.median(nearest)) if len(nearest) else float("nan")


def _knn_pairs(coords: np.ndarray, k: int) -> np.ndarray:
    check_int("n_neighbors", k)
    if not 1 <= k < len(coords):
        raise ValueError(f"n_neighbors must be in [1, N-1] for N={len(coords)} spots, got {k}")
    _, nbrs = cKDTree(coords).query(coords, k=k + 1, workers=-1)  # each query point on its own: any core
    rows = np.repeat(np.arange(len(coords), dtype=np.int64), k)
    cols = nbrs[:, 1:].ravel().astype(np.int64, copy=False)  # column 0 is the spot itself
    del nbrs
    keep = rows != cols  # duplicated coordinates
    # symmetrize: i in knn(j) or j in knn(i), each pair once as i < j
    return _unique_pairs(np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep], len(coords))


def _radius_pairs(coords: np.ndarray, radius: float) -> np.ndarray:
    pairs = cKDTree(coords).query_pairs(radius, output_type="ndarray")  # each pair once, i < j
    return _unique_pairs(pairs[:, 0], pairs[:, 1], len(coords))  # sorted: a deterministic order


def _unique_pairs(first: np.ndarray, second: np.ndarray, n: int) -> np.ndarray:
    """Distinct pairs ``(first, second)`` (``first < second < n``) in lexicographic order, as ``(E, 2)``.

    The same result as ``np.unique(pairs, axis=0)``, through one sort of an int64 key
    ``first * n + second`` (``n^2 < 2^63`` up to 3 x 10^9 spots): about 10x faster at 10^6 spots.
    """
    key = np.asarray(first, dtype=np.int64) * n + np.asarray(second, dtype=np.int64)
    key.sort()
    distinct = np.empty(len(key), dtype=bool)
    distinct[:1] = True
    np.not_equal(key[1:], key[:-1], out=distinct[1:])
    key = key[distinct]
    return np.stack(np.divmod(key, n), axis=1)


# --------------------------------------------------------------------------- #
# the neighbourhood graph: Moran's I, Geary's C and squidpy's tools
# --------------------------------------------------------------------------- #
NeighborKind = Literal["auto", "grid", "knn", "radius", "delaunay"]
NEIGHBOR_KINDS = ("auto", "grid", "knn", "radius", "delaunay")
# neighbours per spot of each lattice, and of the kNN graph of cells
LATTICE_NEIGHBORS = {"hexagon": 6, "square": 4}
DEFAULT_KNN_NEIGHBORS = 6


@dataclass(frozen=True)
class NeighborGraph:
    """The neighbourhood graph of the spots, as squidpy stores it.

    Attributes
    ----------
    connectivities
        ``(N, N)`` CSR matrix, 1 where spot j is a neighbour of spot i.
    distances
        ``(N, N)`` CSR matrix: micrometres for ``knn``, ``radius`` and ``delaunay``;
        the ring number (1) for ``grid``, as squidpy writes it.
    params
        ``kind``, ``geometry`` (``hexagon``, ``square`` or ``none``), ``n_neighs``
        and ``radius`` (where they apply).
    """

    connectivities: sp.csr_matrix
    distances: sp.csr_matrix
    params: dict


def lattice_geometry(array_row, array_col, groups: np.ndarray | None = None) -> str | None:
    """Which lattice integer array positions describe: ``"hexagon"`` (Visium), ``"square"`` (bins) or None.

    A Visium array keeps ``array_row + array_col`` even (or odd) on every spot and
    puts neighbours at the hexagon offsets; a square lattice of bins has spots of
    both parities one step apart. Each group (library) must show the same lattice.

    Parameters
    ----------
    array_row, array_col
        Integer array positions, one per spot (None: no lattice).
    groups
        ``(N,)`` library codes; None: one library.

    Returns
    -------
    str or None
        The lattice, or None when the positions describe neither.
    """
    if array_row is None or array_col is None:
        return None
    row, col = np.asarray(array_row), np.asarray(array_col)
    found = {
        lattice(row[spots], col[spots])
        for spots in group_spots(np.zeros(len(row), dtype=np.int64) if groups is None else groups)
    }
    return found.pop() if len(found) == 1 else None  # None, or sections on different lattices


def _builder(kind: str, n_neighs: int, radius: float | None):
    from squidpy.gr import neighbors as builders

    if kind == "grid":
        return builders.GridBuilder(n_neighs=n_neighs)
    if kind == "knn":
        return builders.KNNBuilder(n_neighs=n_neighs)
    if kind == "radius":
        return builders.RadiusBuilder(radius=radius)
    return builders.DelaunayBuilder()


def neighbor_graph(
    coords: np.ndarray,
    kind: NeighborKind = "auto",
    *,
    n_neighs: int | None = None,
    radius: float | None = None,
    groups: np.ndarray | None = None,
    group_names: tuple[str, ...] | None = None,
    array_row=None,
    array_col=None,
) -> NeighborGraph:
    """The spots' neighbourhood graph, chosen from their geometry, built with squidpy's graph builders.

    ``kind="auto"`` takes squidpy's ``grid`` graph where ``array_row``/``array_col``
    describe a lattice (6 neighbours on the Visium hexagon, 4 on a square lattice of
    bins), and a kNN graph of 6 neighbours otherwise (cells, spots without array
    positions).

    Parameters
    ----------
    coords
        ``(N, 2)`` coordinates in micrometres.
    kind
        ``"auto"``, ``"grid"``, ``"knn"``, ``"radius"`` (pairs within ``radius``) or
        ``"delaunay"`` (Delaunay triangulation).
    n_neighs
        Neighbours per spot of ``grid`` and ``knn``; None: 6 on a hexagon, 4 on a square
        lattice, 6 for ``knn``.
    radius
        Radius of ``radius``, in micrometres.
    groups
        ``(N,)`` library codes: the graph is built within each library (block-diagonal).
    group_names
        The libraries' names, for messages.
    array_row, array_col
        Array positions of the spots, when they have some (Visium, binned data).

    Returns
    -------
    NeighborGraph
        Connectivities, distances and what was built.

    Raises
    ------
    ValueError
        An unknown kind, a missing radius, or too few spots in a library.
    """
    coords = _checked_coordinates(coords)
    if kind not in NEIGHBOR_KINDS:
        raise ValueError(f"neighbourhood graph kind must be one of {NEIGHBOR_KINDS}, got {kind!r}")
    geometry = lattice_geometry(array_row, array_col, groups)
    if kind == "auto":
        kind = "grid" if geometry is not None else "knn"
    params: dict = {"kind": kind, "geometry": geometry or "none"}
    if kind in ("grid", "knn"):
        default = LATTICE_NEIGHBORS.get(geometry or "", DEFAULT_KNN_NEIGHBORS)
        params["n_neighs"] = check_int("n_neighs", default if n_neighs is None else n_neighs, minimum=1)
    if kind == "radius":
        if radius is None:
            raise ValueError("the 'radius' neighbourhood graph needs radius= (micrometres)")
        params["radius"] = check_real("radius", radius, above=0)
    builder = _builder(kind, params.get("n_neighs", 0), params.get("radius"))
    parts = group_spots(np.zeros(len(coords), dtype=np.int64) if groups is None else groups)
    matrices = []
    for code, spots in enumerate(parts):
        smallest = 3 if kind == "delaunay" else params.get("n_neighs", 1) + 1
        if len(spots) < smallest:
            where = f"library {_group_name(group_names, code)}" if groups is not None else "the section"
            raise ValueError(
                f"{where} has {len(spots)} spots; the {kind!r} neighbourhood graph needs at least {smallest}"
            )
        matrices.append(builder.build(np.ascontiguousarray(coords[spots])))
    if len(matrices) == 1:
        connectivities, distances = matrices[0]
    else:
        connectivities, distances = builder.combine(matrices, np.concatenate(parts).tolist())
    return NeighborGraph(sp.csr_matrix(connectivities), sp.csr_matrix(distances), params)
