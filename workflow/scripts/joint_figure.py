"""A group's joint latents in UMAP, coloured by section and by cluster, each backbone without and with the penalty."""

import anndata as ad
import pandas as pd

from dpst.pl import save_figure
from dpst_study.figures import JointPanel, joint_figure
from dpst_study.jobs import logged_to
from dpst_study.joint import run_column, umap
from dpst_study.runs import latent_key

params, group = snakemake.params, snakemake.wildcards.group
settings = params.settings
with logged_to(snakemake.log[0]):
    # the rule's inputs, in this order: per model, alpha 0 then penalty.alpha
    runs = [(model, alpha) for model in params.models for alpha in (0.0, params.alpha_on)]
    all_clusters = pd.read_csv(snakemake.input.clusters, sep="\t", index_col=0, dtype=str)
    all_scores = pd.read_csv(snakemake.input.scores, sep="\t")
    panels = []
    for (model, alpha), path in zip(runs, snakemake.input.latents, strict=True):
        latent = ad.read_h5ad(path)
        clusters = all_clusters[run_column(model, alpha, params.seed)].reindex(latent.obs_names).to_numpy()
        run = (all_scores["model"] == model) & (all_scores["alpha"] == alpha) & (all_scores["seed"] == params.seed)
        scores = all_scores[run].iloc[0].to_dict()
        xy = umap(latent.obsm[latent_key(model)], seed=params.seed)
        sections = latent.obs["section"].astype(str).to_numpy()
        panels.append(JointPanel(model, alpha, params.seed, xy, sections, clusters, scores))
    how = settings["method"] + (f" ({settings['covariance_type']} covariance)" if settings["method"] == "gmm" else "")
    if settings["refine"]:
        how += ", refined by spatial majority vote"
    note = (
        f"clusters: {how}, {settings['n_domains']} clusters, fit seed {settings['fit_seeds'][0]}; "
        "UMAP of each latent (scanpy, 15 neighbours); iLISI and cLISI from scib-metrics"
    )
    fig = joint_figure(group, params.sections, panels, note=note)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    print(f"group {group}: " + ", ".join(f"{p.model} alpha {p.alpha:g} iLISI {p.scores['iLISI']:.3f}" for p in panels))
