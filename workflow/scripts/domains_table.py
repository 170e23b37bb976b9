"""The domains of every run in one table, and their mean and sd over training seeds x fit seeds."""

from dpst_study.domains import write_domains
from dpst_study.jobs import logged_to

with logged_to(snakemake.log[0]):
    summary = write_domains(snakemake.input, snakemake.params.alpha_on, dict(snakemake.output.items()))
    print(summary.to_string())
