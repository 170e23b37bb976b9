"""Figure 4: local metric ellipses of the latent map without and with the penalty."""

import anndata as ad
import pandas as pd

from dpst._files import atomic_path
from dpst.metrics import local_metric_ellipses
from dpst.pl import save_figure
from dpst_study.figures import figure4
from dpst_study.jobs import logged_to
from dpst_study.runs import latent_key

LABEL = {"vae": "VAE", "scvi": "scVI"}

with logged_to(snakemake.log[0]):
    label = LABEL[snakemake.params.model]
    key = latent_key(snakemake.params.model)  # where write_run's write_results put the latent
    panels = {}
    for penalty, name in (("off", label), ("on", f"{label} + distance preserving")):
        run = ad.read_h5ad(snakemake.input[penalty])
        panels[name] = local_metric_ellipses(run.obsm[key], run.obsm["spatial_um"])
    # The latent scale is arbitrary (lam differs between runs): each panel gets its
    # own factor, so that shape (isotropy) and homogeneity compare across panels.
    params = snakemake.params
    title = f"Section {params.section}, {label}, training seed {params.seed}: α = 0 beside α = {params.alpha_on:g}"
    fig = figure4(panels, title=title, common_scale=False)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
    table = pd.concat(panels, names=["panel", "spot"]).reset_index()
    with atomic_path(snakemake.output.ellipses) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
