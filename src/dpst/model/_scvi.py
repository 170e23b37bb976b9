"""DPSCVI: the scVI backbone on raw counts."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from dpst.module import SCVIModule
from dpst.pp import is_raw_counts

from ._base import _DPModel, _with_parameters


@_with_parameters(
    "``adata.layers['counts']``",
    ': ``likelihood``, ``"zinb"`` (default) or ``"nb"``',
)
class DPSCVI(_DPModel):
    """scVI (ZINB, or NB with ``likelihood='nb'``) on raw counts, with the distance-preserving penalty.

    The input (``adata.layers['counts']`` by default) must hold raw counts.

    %(parameters)s

    Examples
    --------
    >>> dpst.pp.penalty_graph(adata)  # doctest: +SKIP
    >>> model = dpst.DPSCVI(adata, graph_key="dpst_penalty").train()  # doctest: +SKIP
    >>> model.write_results()  # obsm["X_dpscvi"], uns["X_dpscvi"]  # doctest: +SKIP
    """

    module_class = SCVIModule
    default_layer = "counts"

    def _check_input(self, values: np.ndarray) -> None:
        super()._check_input(values)
        if not is_raw_counts(values):
            raise ValueError(f"adata: {self._input_name} must hold raw counts (non-negative integers) for DPSCVI")

    def get_observed_log_normalized(self, adata: ad.AnnData | None = None) -> np.ndarray:
        """log1p of counts normalized to 1e4 over the model's genes (the decoder's scale)."""
        return self._log_normalized(self.registry.matrix(self._validate_adata(adata)))

    @staticmethod
    def _log_normalized(x) -> np.ndarray:
        x = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
        library = x.sum(1, keepdims=True)
        return np.log1p(1e4 * x / np.maximum(library, 1.0)).astype(np.float32)
