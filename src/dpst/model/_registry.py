"""Data registration: which fields of an AnnData a model reads, apart from fitting.

A model never guesses a key: :class:`DataRegistry` names the input (``layer``),
the batch column (``batch_key``) with its categories and, when the model reads
each spot's neighbourhood, where the coordinates are; it is saved with the model and
reads the same fields from any AnnData the model later encodes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from dpst.pp._coordinates import CoordinateUnit, micrometre_coordinates
from dpst.pp._graphs import build_neighbor_graph
from dpst.train import SpotData

# how a model may read each spot's neighbourhood (see DPVAE's parameters)
NEIGHBORHOODS = ("none", "encoder", "reconstructed")


@dataclass(frozen=True)
class DataRegistry:
    """The AnnData fields a model reads.

    Parameters
    ----------
    layer
        Key of ``adata.layers`` holding the model input; None for ``adata.X``.
    batch_key
        Column of ``adata.obs`` naming each spot's batch; None: no batches.
    batch_categories
        The batches, in the order of their codes (one-hot columns).
    neighborhood
        ``"none"``, or how the model reads the mean input of each spot's
        neighbours (``"encoder"``, ``"reconstructed"``; see :class:`dpst.DPVAE`).
    spatial_key, coordinate_unit, library_key
        Where the coordinates are, in which unit, and the sections (as
        :func:`dpst.pp.spatial_coordinates` takes them); read with a neighbourhood.
    """

    layer: str | None
    batch_key: str | None = None
    batch_categories: tuple[str, ...] = ()
    neighborhood: str = "none"
    spatial_key: str = "spatial"
    coordinate_unit: CoordinateUnit = "auto"
    library_key: str | None = None

    @classmethod
    def register(cls, adata: ad.AnnData, layer: str | None, batch_key: str | None, **fields) -> DataRegistry:
        """Register ``adata``'s fields: the input layer must exist, the batch column be complete.

        ``fields`` are the registry's other fields (``neighborhood`` and where
        the coordinates are).

        Raises
        ------
        KeyError
            ``layer`` or ``batch_key`` is missing (one line naming it).
        ValueError
            The batch column has missing values.
        """
        registry = cls(layer, batch_key, **fields)
        if registry.neighborhood not in NEIGHBORHOODS:
            raise ValueError(f"neighborhood must be one of {NEIGHBORHOODS}, got {registry.neighborhood!r}")
        registry.matrix(adata)  # a missing layer fails here
        if batch_key is None:
            return registry
        labels = registry._batch_labels(adata)
        categories = labels.cat.categories if isinstance(labels.dtype, pd.CategoricalDtype) else np.unique(labels)
        present = set(pd.unique(labels))
        return replace(registry, batch_categories=tuple(str(c) for c in categories if c in present))

    @property
    def n_batch(self) -> int:
        """Number of batches (0 without ``batch_key``)."""
        return len(self.batch_categories)

    @property
    def input_name(self) -> str:
        """Where the input is, as a user writes it."""
        return "adata.X" if self.layer is None else f"adata.layers[{self.layer!r}]"

    def matrix(self, adata: ad.AnnData):
        """The model input of ``adata`` (dense or sparse, not copied)."""
        if self.layer is None:
            return adata.X
        if self.layer not in adata.layers:
            raise KeyError(f"adata.layers has no {self.layer!r} (layers: {list(adata.layers)})")
        return adata.layers[self.layer]

    def _batch_labels(self, adata: ad.AnnData) -> pd.Series:
        if self.batch_key not in adata.obs:
            raise KeyError(f"batch_key {self.batch_key!r} is not a column of adata.obs (columns: {list(adata.obs)})")
        labels = adata.obs[self.batch_key]
        if labels.isna().any():
            raise ValueError(
                f"adata.obs[{self.batch_key!r}] has {int(labels.isna().sum())} missing value(s); every spot needs a batch"
            )
        return labels

    def batch_codes(self, adata: ad.AnnData) -> np.ndarray | None:
        """Each spot's batch code (None without ``batch_key``); a batch the model does not know is refused."""
        if self.batch_key is None:
            return None
        labels = self._batch_labels(adata).astype(str)
        codes = pd.Index(self.batch_categories).get_indexer(labels)
        if (codes < 0).any():
            unknown = sorted(set(labels[codes < 0]))
            raise ValueError(
                f"adata.obs[{self.batch_key!r}] has batches the model was not built with: "
                f"{', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''} "
                f"(known: {', '.join(map(repr, self.batch_categories))})"
            )
        return codes.astype(np.int64)

    def neighbor_mean(self, adata: ad.AnnData, x):
        """Each spot's mean input over its neighbours in the neighbourhood graph, within its library.

        The graph is :func:`dpst.pp.spatial_neighbors`' ``kind="auto"``: the
        Visium hexagon's 6 neighbours, 4 on a square lattice of bins, the 6
        nearest cells otherwise.
        """
        coords, _record, libraries = micrometre_coordinates(
            adata, self.spatial_key, self.coordinate_unit, self.library_key
        )
        adjacency = build_neighbor_graph(adata, coords, libraries).connectivities
        adjacency = (adjacency > 0).astype(np.float64)
        degree = np.asarray(adjacency.sum(axis=1)).ravel()
        mean = sp.diags(1.0 / np.maximum(degree, 1.0)) @ adjacency @ x  # a spot without neighbours reads zeros
        return sp.csr_matrix(mean, dtype=np.float32) if sp.issparse(mean) else np.asarray(mean, dtype=np.float32)

    def spot_data(self, adata: ad.AnnData) -> SpotData:
        """What the module reads of ``adata``'s spots."""
        x = self.matrix(adata)
        neighbors = self.neighbor_mean(adata, x) if self.neighborhood != "none" else None
        return SpotData(x, self.batch_codes(adata), neighbors)

    def to_dict(self) -> dict:
        """As saved in ``model.json``."""
        fields = asdict(self)
        fields["batch_categories"] = list(self.batch_categories)
        return fields

    @classmethod
    def from_dict(cls, fields: dict) -> DataRegistry:
        """The registry saved by :meth:`to_dict`."""
        return cls(**{**fields, "batch_categories": tuple(fields["batch_categories"])})
