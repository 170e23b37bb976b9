"""Table 1: Moran's I and Geary's C, mean (sd) over seeds.

In CSV, Markdown and LaTeX, and beside the published values.
"""

import pandas as pd

from dpst_study.jobs import logged_to
from dpst_study.tables import write_table1

with logged_to(snakemake.log[0]):
    runs = pd.read_csv(snakemake.input[0], sep="\t")
    runs = runs[runs["seed"].isin(snakemake.params.seeds)]
    long = write_table1(
        runs,
        snakemake.params.alpha_on,
        paths=dict(snakemake.output.items()),
        sections=snakemake.params.sections,
        section_map=snakemake.params.published_sections or None,
    )
    print(long.to_string())
