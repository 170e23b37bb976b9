"""Joint runs (``joint`` in the config): a group of sections in one model, clustered, scored and embedded.

Each joint run's latent is clustered once (:func:`dpst.tl.domains`, the config's
``domains`` settings, the first fit seed) and scored with scib-metrics: iLISI
(how well the sections mix among each spot's neighbours in the latent), cLISI and
the silhouette of the labels (how well the labels stay apart) and the silhouette
of the sections within each label (scib's batch silhouette, 1 = mixed). The labels
are the sections' own where every section has them (an annotation's
``domain_key``, a simulation's domains; annotated spots only), else the run's
clusters. :func:`umap` embeds a latent for the group's figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from os import PathLike

import anndata as ad
import numpy as np
import pandas as pd

import dpst
from dpst._files import atomic_path

from .runs import latent_key
from .sections import ANNOTATION_KEY, SECTION_KEY
from .tables import MISSING_CELL, MODEL_LABEL, model_order, to_html

SCORES = ("iLISI", "cLISI", "silhouette_label", "silhouette_batch")
# which way is better, for the report's header
SCORE_TITLE = {
    "iLISI": "iLISI ↑ (sections mix)",
    "cLISI": "cLISI ↑ (labels apart)",
    "silhouette_label": "silhouette label ↑",
    "silhouette_batch": "silhouette batch ↑ (sections mix)",
}
CLUSTERS = "cluster"


def read_group_obs(path: str | PathLike) -> pd.DataFrame:
    """A preprocessed group's ``obs`` (its sections and labels), read without its matrices."""
    group = ad.read_h5ad(path, backed="r")
    try:
        return group.obs.copy()
    finally:
        group.file.close()


def cluster_joint(latent: ad.AnnData, model: str, settings: Mapping) -> pd.Series:
    """The clusters of a joint run's latent, with :func:`dpst.tl.domains`.

    Parameters
    ----------
    latent
        The run's latent.h5ad: the codes in ``obsm[latent_key(model)]``, the micrometres
        in ``obsm["spatial_um"]`` and the sections in ``obs["section"]``.
    model
        ``"vae"`` or ``"scvi"``.
    settings
        ``n_domains``, and the config's ``domains``: ``method``, ``covariance_type``,
        ``refine`` (a vote within each section) and ``fit_seeds`` (the first is used).

    Returns
    -------
    pandas.Series
        The cluster of each spot, ``"0"``, ``"1"``, ... indexed by spot.
    """
    key = latent_key(model)
    adata = ad.AnnData(
        obs=latent.obs[[SECTION_KEY]].copy(),
        obsm={key: np.asarray(latent.obsm[key]), "spatial_um": np.asarray(latent.obsm["spatial_um"])},
    )
    found = dpst.tl.domains(
        adata,
        key,
        settings["n_domains"],
        method=settings["method"],
        covariance_type=settings["covariance_type"],
        refine=settings["refine"],
        seed=settings["fit_seeds"][0],
        key_added=CLUSTERS,
        spatial_key="spatial_um",
        library_key=SECTION_KEY,
        coordinate_unit="um",
    )
    return found.astype(str).rename(CLUSTERS)


def score_joint_run(
    latent: ad.AnnData, group_obs: pd.DataFrame, model: str, settings: Mapping
) -> tuple[pd.DataFrame, pd.Series]:
    """Cluster a joint run's latent and score it (:func:`cluster_joint`, :func:`dpst.metrics.integration_scores`).

    Parameters
    ----------
    latent
        The run's latent.h5ad.
    group_obs
        The preprocessed group's ``obs`` (:func:`read_group_obs`): ``section`` and ``annotation``.
    model
        ``"vae"`` or ``"scvi"``.
    settings
        As :func:`cluster_joint` takes them.

    Returns
    -------
    scores : pandas.DataFrame
        One row: ``labels`` (``"annotation"`` or ``"clusters"``), ``n_domains`` (clusters
        asked for), ``n_clusters`` (found), ``n_scored`` (the spots scored), the four
        scores and the clustering settings.
    clusters : pandas.Series
        Each spot's cluster.

    Raises
    ------
    ValueError
        Spots of the run are not in the group (a run trained on another preprocessing).
    """
    missing = latent.obs_names.difference(group_obs.index)
    if len(missing):
        raise ValueError(
            f"{len(missing)} spots of the run are not in the preprocessed group (e.g. {missing[0]}): "
            "the run was not trained on this preprocessed group; rerun it"
        )
    clusters = cluster_joint(latent, model, settings)
    obs = group_obs.reindex(latent.obs_names)
    annotation = obs[ANNOTATION_KEY] if ANNOTATION_KEY in obs else pd.Series(pd.NA, index=obs.index)
    sections = latent.obs[SECTION_KEY].astype(str)
    labelled = annotation.notna()
    every_section = set(sections) == set(sections[labelled.to_numpy()])
    if every_section:
        spots, labels, source = labelled.to_numpy(), annotation.astype(str).to_numpy(), "annotation"
    else:
        spots, labels, source = np.ones(len(obs), bool), clusters.to_numpy(), "clusters"
    codes = np.asarray(latent.obsm[latent_key(model)])
    scores = dpst.metrics.integration_scores(codes[spots], sections.to_numpy()[spots], labels[spots])
    row = {
        "labels": source,
        "n_domains": int(settings["n_domains"]),
        "n_clusters": int(clusters.nunique()),
        "n_scored": scores.pop("n_scored"),
        **scores,
        "method": settings["method"],
        "covariance_type": settings["covariance_type"],
        "refine": bool(settings["refine"]),
        "fit_seed": int(settings["fit_seeds"][0]),
    }
    return pd.DataFrame([row]), clusters


def run_column(model: str, alpha: float, seed: int) -> str:
    """A joint run's column in its group's clusters.tsv: ``"vae_alpha100_seed0"``."""
    return f"{model}_alpha{float(alpha):g}_seed{int(seed)}"


def score_group(
    group: str,
    latents: Sequence[str | PathLike],
    runs: Sequence[Sequence],
    group_obs: pd.DataFrame,
    settings: Mapping,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cluster and score every joint run of a group (:func:`score_joint_run`), in one process.

    Parameters
    ----------
    group
        The group's name.
    latents
        The runs' latent.h5ad files, in the order of ``runs``.
    runs
        Each run's ``(model, alpha, seed)``.
    group_obs
        The preprocessed group's ``obs`` (:func:`read_group_obs`).
    settings
        As :func:`cluster_joint` takes them.

    Returns
    -------
    scores : pandas.DataFrame
        One row per run: ``group``, ``sections``, ``model``, ``alpha``, ``seed`` and
        :func:`score_joint_run`'s columns.
    clusters : pandas.DataFrame
        Each spot's cluster (rows), one column per run (:func:`run_column`).
    """
    rows, clusters = [], {}
    for path, (model, alpha, seed) in zip(latents, runs, strict=True):
        latent = ad.read_h5ad(path)
        scores, found = score_joint_run(latent, group_obs, model, settings)
        sections = "+".join(dict.fromkeys(latent.obs[SECTION_KEY].astype(str)))
        keys = {"group": group, "sections": sections, "model": model, "alpha": float(alpha), "seed": int(seed)}
        rows.append({**keys, **scores.iloc[0].to_dict()})
        clusters[run_column(model, alpha, seed)] = found
        print(f"{model} alpha {float(alpha):g} seed {seed}: " + ", ".join(f"{k} {rows[-1][k]:.3f}" for k in SCORES))
    return pd.DataFrame(rows), pd.DataFrame(clusters).rename_axis("spot")


def umap(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP of latent codes with scanpy (15 nearest neighbours of the codes, scanpy's defaults): ``(N, 2)``."""
    import scanpy as sc

    adata = ad.AnnData(obsm={"codes": np.asarray(codes, dtype=np.float32)})
    sc.pp.neighbors(adata, use_rep="codes", n_neighbors=min(15, adata.n_obs - 1), random_state=seed)
    sc.tl.umap(adata, random_state=seed)
    return np.asarray(adata.obsm["X_umap"])


def collect_scores(paths: Iterable[str | PathLike]) -> pd.DataFrame:
    """The joint runs' scores.tsv files -> one table, group (in order of appearance), model, alpha, seed."""
    frames = [pd.read_csv(path, sep="\t", dtype={"group": str}) for path in paths]
    if not frames:
        raise ValueError("no joint runs' scores to collect")
    table = pd.concat(frames, ignore_index=True)
    groups, models = list(dict.fromkeys(table["group"])), model_order(table)
    order = table.assign(_group=table["group"].map(groups.index), _model=table["model"].map(models.index))
    order = order.sort_values(["_group", "_model", "alpha", "seed"], kind="stable")
    return order.drop(columns=["_group", "_model"]).reset_index(drop=True)


def scores_report(table: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """The scores as the report shows them: one row per joint run, scores at ``decimals``."""
    shown = pd.DataFrame(
        {
            "group": table["group"],
            "sections": table["sections"],
            "backbone": [MODEL_LABEL.get(m, m) for m in table["model"]],
            "α": [f"{a:g}" for a in table["alpha"]],
            "seed": table["seed"].astype(int),
            "labels": table["labels"],
        }
    )
    for score in SCORES:
        shown[SCORE_TITLE[score]] = [MISSING_CELL if pd.isna(v) else f"{v:.{decimals}f}" for v in table[score]]
    return shown


def scores_note(table: pd.DataFrame) -> str:
    """What the scores are, under the report's table."""
    note = (
        "scib-metrics on each joint run's latent (all scaled to [0, 1], higher is better): iLISI, the effective "
        "number of sections among a spot's 90 nearest neighbours in the latent (sections mix); cLISI, of labels "
        "(labels stay apart); the silhouette of the labels; and scib's batch silhouette, the silhouette of the "
        "sections within each label (1: mixed). Labels: a group's own annotation on its annotated spots where "
        "every section has one ('annotation'), else the run's clusters ('clusters': found in the same latent, "
        "they flatter cLISI and the label silhouette)."
    )
    methods = ", ".join(
        f"{m}" + (f" ({c} covariance)" if m == "gmm" else "") for m, c in table[["method", "covariance_type"]].values
    )
    methods = ", ".join(dict.fromkeys(methods.split(", ")))
    clusters = ", ".join(f"{g} {int(n)}" for g, n in table.groupby("group", sort=False)["n_domains"].max().items())
    return f"{note} Clusters: {methods}; clusters per group: {clusters}."


def write_scores(paths: Iterable[str | PathLike], outputs: Mapping[str, str | PathLike]) -> pd.DataFrame:
    """Collect the joint runs' scores and write them as TSV (every digit), Markdown and HTML (the report's).

    Parameters
    ----------
    paths
        The runs' scores.tsv files.
    outputs
        Paths under the keys ``tsv``, ``md`` and ``html``.

    Returns
    -------
    pandas.DataFrame
        The collected table.
    """
    table = collect_scores(paths)
    shown, note = scores_report(table), scores_note(table)
    with atomic_path(outputs["tsv"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    with atomic_path(outputs["md"]) as tmp:
        tmp.write_text(
            "# Joint runs: mixing and conservation (scib-metrics)\n\n"
            + shown.to_markdown(index=False, disable_numparse=True)
            + f"\n\n{note}\n"
        )
    with atomic_path(outputs["html"]) as tmp:
        tmp.write_text(to_html(shown, "Joint runs: mixing of sections and conservation of labels", note))
    return table
