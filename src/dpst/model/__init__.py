"""User-facing models: :class:`DPVAE` and :class:`DPSCVI`.

Both take an AnnData with spatial coordinates in ``obsm``, train with the
distortion penalty (``alpha > 0``) or without it (``alpha = 0``), and return
latent codes and reconstructions in log-normalized space::

    dpst.pp.penalty_graph(adata)                          # G in obsp/uns["dpst_penalty"]
    model = dpst.DPSCVI(adata, graph_key="dpst_penalty")  # alpha=100; alpha=0 is plain scVI
    model.train()
    model.write_results()                                 # obsm/uns["X_dpscvi"]

Without ``graph_key`` a model builds the same graph G itself.
"""

from ._base import DEFAULT_ALPHA
from ._files import SAVE_FORMAT, ModelFileError
from ._registry import DataRegistry
from ._scvi import DPSCVI
from ._vae import DPVAE

__all__ = ["DEFAULT_ALPHA", "DPSCVI", "DPVAE", "SAVE_FORMAT", "DataRegistry", "ModelFileError"]
