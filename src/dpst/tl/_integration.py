"""How well a latent stored in an AnnData mixes its sections and keeps its labels apart."""

from __future__ import annotations

import anndata as ad
import pandas as pd

from dpst import metrics

from ._measures import _latent


def integration_scores(
    adata: ad.AnnData,
    use_rep: str,
    batch_key: str,
    label_key: str,
    *,
    n_neighbors: int = metrics.LISI_NEIGHBORS,
    key_added: str | None = None,
) -> pd.Series:
    """scib-metrics' batch-mixing and label-conservation scores of the latent in ``obsm[use_rep]``.

    :func:`dpst.metrics.integration_scores` (iLISI, cLISI, label silhouette and
    scib's batch silhouette, each in [0, 1], higher better) with the batches in
    ``obs[batch_key]`` and the labels in ``obs[label_key]``; spots without a label
    are left out. For a model of several sections (``batch_key``): iLISI says
    whether they mix, cLISI and the label silhouette whether the annotation (or
    the domains of :func:`domains`) stays apart. Needs scib-metrics
    (``pip install 'dpst[integration]'``).

    Parameters
    ----------
    adata
        Spots with latent codes in ``obsm[use_rep]``.
    use_rep
        Key of the latent codes in ``adata.obsm``.
    batch_key
        Column of ``obs`` holding each spot's batch (section).
    label_key
        Column of ``obs`` holding each spot's label (annotation or domains).
    n_neighbors
        Neighbours of the LISI graph (scib's 90).
    key_added
        Key written in ``uns``; default ``f"{use_rep}_integration"``.

    Returns
    -------
    pandas.Series
        ``iLISI``, ``cLISI``, ``silhouette_label``, ``silhouette_batch`` and
        ``n_scored``, also written to ``adata.uns[key_added]``.

    Raises
    ------
    KeyError
        ``use_rep`` is not in ``obsm`` or a column is missing from ``obs``.
    ValueError
        Fewer than two batches or two labels among the labelled spots.

    Examples
    --------
    >>> dpst.tl.integration_scores(adata, "X_dpvae", "section", "domain")["iLISI"]  # doctest: +SKIP
    """
    latent = _latent(adata, use_rep)
    for key, role in ((batch_key, "batch_key"), (label_key, "label_key")):
        if key not in adata.obs.columns:
            raise KeyError(f"{role} {key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    scores = pd.Series(
        metrics.integration_scores(
            latent, adata.obs[batch_key].to_numpy(), adata.obs[label_key].to_numpy(), n_neighbors
        )
    )
    adata.uns[key_added or f"{use_rep}_integration"] = scores.to_dict()
    return scores
