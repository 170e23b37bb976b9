"""A section's annotation beside the domains of each backbone without and with the penalty."""

import anndata as ad
import pandas as pd

from dpst.pl import save_figure
from dpst_study.domains import fit_column, read_annotation, run_ari
from dpst_study.figures import DomainPanel, domains_figure
from dpst_study.jobs import logged_to

params, section = snakemake.params, snakemake.wildcards.section
settings = params.settings
with logged_to(snakemake.log[0]):
    spots = ad.read_h5ad(snakemake.input.section, backed="r")
    xy, names = spots.obsm["spatial_um"][:], spots.obs_names
    spots.file.close()
    truth = read_annotation(snakemake.input.section, settings["domain_key"]).reindex(names)
    fit_seed = settings["fit_seeds"][0]
    # the rule's inputs, in this order: per model, alpha 0 then penalty.alpha
    runs = [(model, alpha) for model in params.models for alpha in (0.0, params.alpha_on)]
    panels = []
    for (model, alpha), labels, scores in zip(runs, snakemake.input.labels, snakemake.input.scores, strict=True):
        domains = pd.read_csv(labels, sep="\t", index_col=0, dtype=str)[fit_column(fit_seed)]
        ari = run_ari(pd.read_csv(scores, sep="\t"), fit_seed)
        panels.append(DomainPanel(model, alpha, domains.reindex(names).to_numpy(), ari))
    how = settings["method"]
    if settings["method"] == "gmm":
        how += f" ({settings['covariance_type']} covariance)"
    if settings["refine"]:
        how += ", refined by spatial majority vote"
    note = f"{how}, {settings['n_domains']} domains; training seed {params.seed}, fit seed {fit_seed}"
    fig = domains_figure(section, xy, truth, panels, truth_name=settings["domain_key"], note=note)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    print(f"section {section}: " + ", ".join(f"{p.model} alpha {p.alpha:g} ARI {p.ari:.3f}" for p in panels))
