"""Table 1: Moran's I and Geary's C, mean (sd) over seeds; joint runs' sections beside the single-section runs.

In CSV, Markdown and LaTeX, and beside the published values (single-section runs only).
"""

import pandas as pd

from dpst_study.jobs import logged_to
from dpst_study.tables import stack_joint_runs, write_table1

with logged_to(snakemake.log[0]):
    runs = pd.read_csv(snakemake.input.runs, sep="\t")
    if snakemake.params.joint:  # the joint runs' rows per section, beside the single-section runs
        runs = stack_joint_runs(
            runs, pd.read_csv(snakemake.input.joint, sep="\t", dtype={"group": str, "section": str})
        )
    runs = runs[runs["seed"].isin(snakemake.params.seeds)]
    long = write_table1(
        runs,
        snakemake.params.alpha_on,
        paths=dict(snakemake.output.items()),
        sections=snakemake.params.sections,
        section_map=snakemake.params.published_sections or None,
    )
    print(long.to_string())
