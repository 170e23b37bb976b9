"""Cluster one run's latent into spatial domains, once per fit seed, and score each against the annotation.

A joint run (wildcard ``group``) is clustered on one section's spots of its latent.
"""

import anndata as ad
from threadpoolctl import threadpool_limits

from dpst._files import atomic_path
from dpst_study.domains import cluster_run, joint_section, read_annotation
from dpst_study.jobs import USER_ERRORS, logged_to
from dpst_study.joint import read_group_obs
from dpst_study.runs import run_label
from dpst_study.tables import JOINT

wc = snakemake.wildcards
group = dict(wc.items()).get("group", "")
settings = snakemake.params.settings
if group:
    run = run_label(wc.model, wc.alpha, wc.seed, group=group) + f", section {wc.section}: "
else:
    run = run_label(wc.model, wc.alpha, wc.seed, section=wc.section) + ": "
with logged_to(snakemake.log[0], expected=USER_ERRORS, context=run), threadpool_limits(snakemake.threads):
    latent = ad.read_h5ad(snakemake.input.latent)
    if group:
        latent, annotation = joint_section(latent, read_group_obs(snakemake.input.group), wc.section)
    else:
        annotation = read_annotation(snakemake.input.section, settings["domain_key"])
    scores, labels = cluster_run(latent, annotation, wc.model, settings)
    run_keys = {"section": wc.section, JOINT: group, "model": wc.model, "alpha": float(wc.alpha), "seed": int(wc.seed)}
    scores = scores.assign(**run_keys)[[*run_keys, *scores.columns]]
    with atomic_path(snakemake.output.labels) as tmp:
        labels.to_csv(tmp, sep="\t")
    with atomic_path(snakemake.output.scores) as tmp:
        scores.to_csv(tmp, sep="\t", index=False)
    print(scores.to_string())
