"""The joint runs' per-section metrics into one table."""

from dpst._files import atomic_path
from dpst_study.jobs import logged_to
from dpst_study.runs import collect_joint_runs

with logged_to(snakemake.log[0]):
    table = collect_joint_runs(snakemake.input)
    with atomic_path(snakemake.output[0]) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    print(f"collected {table.groupby(['group', 'model', 'alpha', 'seed']).ngroups} joint runs, {len(table)} rows")
