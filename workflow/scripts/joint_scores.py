"""Cluster every joint run of a group and score how its sections mix and its labels stay apart (scib-metrics)."""

from threadpoolctl import threadpool_limits

from dpst._files import atomic_path
from dpst_study.jobs import USER_ERRORS, logged_to
from dpst_study.joint import read_group_obs, score_group

group = snakemake.wildcards.group
with (
    logged_to(snakemake.log[0], expected=USER_ERRORS, context=f"group {group}: "),
    threadpool_limits(snakemake.threads),
):
    scores, clusters = score_group(
        group,
        snakemake.input.latents,
        snakemake.params.runs,
        read_group_obs(snakemake.input.group),
        snakemake.params.settings,
    )
    with atomic_path(snakemake.output.clusters) as tmp:
        clusters.to_csv(tmp, sep="\t")
    with atomic_path(snakemake.output.scores) as tmp:
        scores.to_csv(tmp, sep="\t", index=False)
