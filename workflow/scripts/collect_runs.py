"""Per-run metrics into one tidy table (and one per latent dimension)."""

from dpst._files import atomic_path
from dpst_study.jobs import logged_to
from dpst_study.runs import collect_runs

with logged_to(snakemake.log[0]):
    runs, per_dimension = collect_runs(snakemake.input)
    with atomic_path(snakemake.output.runs) as tmp:
        runs.to_csv(tmp, sep="\t", index=False)
    with atomic_path(snakemake.output.per_dimension) as tmp:
        per_dimension.to_csv(tmp, sep="\t", index=False)
    print(f"collected {len(runs)} runs")
