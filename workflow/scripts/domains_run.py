"""Cluster one run's latent into spatial domains, once per fit seed, and score each against the annotation."""

import anndata as ad
from threadpoolctl import threadpool_limits

from dpst._files import atomic_path
from dpst_study.domains import cluster_run, read_annotation
from dpst_study.jobs import USER_ERRORS, logged_to
from dpst_study.runs import run_label

wc = snakemake.wildcards
settings = snakemake.params.settings
run = run_label(wc.model, wc.alpha, wc.seed, section=wc.section) + ": "
with logged_to(snakemake.log[0], expected=USER_ERRORS, context=run), threadpool_limits(snakemake.threads):
    annotation = read_annotation(snakemake.input.section, settings["domain_key"])
    latent = ad.read_h5ad(snakemake.input.latent)
    scores, labels = cluster_run(latent, annotation, wc.model, settings)
    scores.insert(0, "seed", int(wc.seed))
    scores.insert(0, "alpha", float(wc.alpha))
    scores.insert(0, "model", wc.model)
    scores.insert(0, "section", wc.section)
    with atomic_path(snakemake.output.labels) as tmp:
        labels.to_csv(tmp, sep="\t")
    with atomic_path(snakemake.output.scores) as tmp:
        scores.to_csv(tmp, sep="\t", index=False)
    print(scores.to_string())
