"""Per-run metrics into one tidy table (and one per latent dimension)."""

from dpst.workflow import collect_runs, logged_to

with logged_to(snakemake.log[0]):
    runs, per_dimension = collect_runs(snakemake.input)
    runs.to_csv(snakemake.output.runs, sep="\t", index=False)
    per_dimension.to_csv(snakemake.output.per_dimension, sep="\t", index=False)
    print(f"collected {len(runs)} runs")
