"""Carry a reference annotation over to a query section mapped into the same latent space."""

from __future__ import annotations

import anndata as ad
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier

from dpst._checks import check_int

from ._measures import _latent


def transfer_labels(
    reference: ad.AnnData,
    query: ad.AnnData,
    label_key: str,
    use_rep: str,
    *,
    n_neighbors: int = 15,
    key_added: str | None = None,
) -> pd.Series:
    """Label each query spot by its nearest annotated reference spots in the latent space.

    The reference's annotated spots (``reference.obs[label_key]`` not missing)
    vote, weighted by inverse latent distance (scikit-learn's
    ``KNeighborsClassifier``), among the ``n_neighbors`` nearest to each query
    spot in ``obsm[use_rep]``, codes of one model: a reference and a query
    mapped onto it with :meth:`dpst.DPVAE.load_query_data`, or two sections of a
    joint model.

    Parameters
    ----------
    reference
        Spots with the annotation and their latent codes.
    query
        Spots to label, with latent codes of the same model.
    label_key
        Column of ``reference.obs`` with the annotation; missing values are unlabelled spots.
    use_rep
        Key of the latent codes in both ``obsm``.
    n_neighbors
        Reference spots that vote for each query spot.
    key_added
        Column of ``query.obs`` to write; default ``f"{label_key}_transferred"``.

    Returns
    -------
    pandas.Series
        The transferred labels (categorical, the reference's categories). Also
        written: ``query.obs[key_added]``, ``query.obs[f"{key_added}_confidence"]``
        (the winning label's share of the vote, in ``(0, 1]``) and
        ``query.uns[key_added]`` (the settings).

    Raises
    ------
    KeyError
        ``label_key`` or ``use_rep`` is missing.
    ValueError
        The two latents differ in dimension, or fewer annotated reference spots
        than ``n_neighbors``.
    """
    n_neighbors = check_int("n_neighbors", n_neighbors, minimum=1)
    if label_key not in reference.obs:
        raise KeyError(f"reference.obs has no {label_key!r} (columns: {list(reference.obs)})")
    known = _latent(reference, use_rep)
    codes = _latent(query, use_rep)
    if known.shape[1] != codes.shape[1]:
        raise ValueError(
            f"obsm[{use_rep!r}] has {known.shape[1]} dimensions in the reference and {codes.shape[1]} in the "
            "query: the codes must come from one model"
        )
    labels = reference.obs[label_key]
    annotated = labels.notna().to_numpy()
    if annotated.sum() < n_neighbors:
        raise ValueError(
            f"reference.obs[{label_key!r}] annotates {int(annotated.sum())} spot(s), fewer than n_neighbors={n_neighbors}"
        )
    classifier = KNeighborsClassifier(n_neighbors=n_neighbors, weights="distance")
    classifier.fit(known[annotated], labels[annotated].astype(str).to_numpy())
    votes = classifier.predict_proba(codes)
    winners = classifier.classes_[votes.argmax(axis=1)]
    categories = labels.cat.categories if isinstance(labels.dtype, pd.CategoricalDtype) else classifier.classes_
    categories = [str(c) for c in categories]
    key = key_added or f"{label_key}_transferred"
    transferred = pd.Series(pd.Categorical(winners, categories=categories), index=query.obs_names, name=key)
    query.obs[key] = transferred
    query.obs[f"{key}_confidence"] = votes.max(axis=1)
    query.uns[key] = {"label_key": label_key, "use_rep": use_rep, "n_neighbors": n_neighbors}
    return transferred
