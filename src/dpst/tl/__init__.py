"""Tools on a latent representation stored in an AnnData, written back under ``key_added``.

Each function reads the latent codes from ``adata.obsm[use_rep]`` (e.g. what
:meth:`dpst.DPVAE.write_results` wrote), computes its result with the array-level
functions of :mod:`dpst.metrics`, writes it into the AnnData and returns it::

    dpst.pp.penalty_graph(adata)
    model = dpst.DPVAE(adata, graph_key="dpst_penalty").train()
    key = model.write_results()                      # obsm["X_dpvae"]
    dpst.tl.spatial_autocorrelation(adata, key)      # uns["X_dpvae_autocorrelation"]
    dpst.tl.distortion(adata, key)                   # uns["X_dpvae_distortion"]
    dpst.tl.local_metric_ellipses(adata, key)        # obsm/uns["X_dpvae_ellipses"]
    dpst.tl.domains(adata, key, n_domains=7)         # obs/uns["X_dpvae_domains"]
    dpst.tl.domain_scores(adata, "X_dpvae_domains", truth_key="domain")  # ARI, NMI, CHAOS, PAS
    dpst.tl.transfer_labels(reference, query, "domain", key)  # query.obs["domain_transferred"]
    dpst.tl.integration_scores(adata, key, "section", "domain")  # iLISI, cLISI, silhouettes
"""

from ._domains import domain_scores, domains
from ._integration import integration_scores
from ._measures import distortion, local_metric_ellipses, spatial_autocorrelation
from ._transfer import transfer_labels

__all__ = [
    "distortion",
    "domain_scores",
    "domains",
    "integration_scores",
    "local_metric_ellipses",
    "spatial_autocorrelation",
    "transfer_labels",
]
