"""DPVAE: the Gaussian VAE backbone on log-normalized expression."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from dpst.module import GaussianVAEModule

from ._base import _DPModel, _with_parameters


@_with_parameters("``adata.X``", ": none for DPVAE (an unknown name raises TypeError)")
class DPVAE(_DPModel):
    """Gaussian VAE on log-normalized expression, with the distance-preserving penalty.

    The input (``adata.X`` by default) must be log1p of normalized counts, as
    :func:`dpst.pp.preprocess` writes it.

    %(parameters)s

    Examples
    --------
    >>> dpst.pp.penalty_graph(adata)  # doctest: +SKIP
    >>> model = dpst.DPVAE(adata, graph_key="dpst_penalty").train()  # doctest: +SKIP
    >>> model.write_results()  # obsm["X_dpvae"], uns["X_dpvae"]  # doctest: +SKIP
    """

    module_class = GaussianVAEModule
    default_layer = None

    def _check_input(self, values: np.ndarray) -> None:
        super()._check_input(values)
        if values.size and values.max() > 50:
            raise ValueError(
                f"adata: {self._input_name} looks like raw counts (max {values.max():.0f}); DPVAE "
                "expects log1p of normalized counts (dpst.pp.preprocess writes them to X)"
            )

    def get_observed_log_normalized(self, adata: ad.AnnData | None = None) -> np.ndarray:
        """The model input as dense float32: it is already log-normalized."""
        return self._log_normalized(self.registry.matrix(self._validate_adata(adata)))

    @staticmethod
    def _log_normalized(x) -> np.ndarray:
        return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float32)
