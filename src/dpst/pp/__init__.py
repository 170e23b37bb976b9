"""Preprocessing on AnnData, in squidpy's style: keys in, results under ``key_added``.

- :func:`preprocess`: QC, normalization, highly variable genes, micrometres and the
  neighbourhood graph;
- :func:`spatial_coordinates`: the one place where stored coordinates become
  micrometres, library (section) by library;
- :func:`spatial_neighbors`: the neighbourhood graph chosen from the geometry;
- :func:`penalty_graph` / :func:`read_penalty_graph`: the penalty's pair graph G.

With ``library_key`` (an ``obs`` column naming each spot's section) every graph is
built within each section: no pair ever joins two sections.
"""

from ._coordinates import COORDINATE_UNITS, CoordinateUnit, Libraries, libraries, spatial_coordinates
from ._graphs import PENALTY_GRAPH_KEY, penalty_graph, read_penalty_graph, spatial_neighbors
from ._preprocess import describe_preprocessing, is_raw_counts, preprocess, stored_values

__all__ = [
    "COORDINATE_UNITS",
    "PENALTY_GRAPH_KEY",
    "CoordinateUnit",
    "Libraries",
    "describe_preprocessing",
    "is_raw_counts",
    "libraries",
    "penalty_graph",
    "preprocess",
    "read_penalty_graph",
    "spatial_coordinates",
    "spatial_neighbors",
    "stored_values",
]
