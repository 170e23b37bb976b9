"""Every joint run's mixing and conservation scores in one table (TSV, Markdown, and HTML for the report)."""

from dpst_study.jobs import logged_to
from dpst_study.joint import write_scores

with logged_to(snakemake.log[0]):
    table = write_scores(snakemake.input, dict(snakemake.output.items()))
    print(table.to_string(index=False))
