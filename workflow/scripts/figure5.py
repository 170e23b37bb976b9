"""Figure 5: reconstruction MSE per section, model and penalty (mean, sd over seeds)."""

import pandas as pd

from dpst.pl import save_figure
from dpst_study.figures import figure5
from dpst_study.jobs import logged_to

with logged_to(snakemake.log[0]):
    runs = pd.read_csv(snakemake.input[0], sep="\t")
    runs = runs[runs["seed"].isin(snakemake.params.seeds)]
    fig = figure5(runs, snakemake.params.alpha_on, sections=snakemake.params.sections)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
