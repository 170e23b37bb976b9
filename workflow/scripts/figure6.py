"""Figure 6: Moran's I, Geary's C and held-out MSE against the penalty strength alpha."""

import pandas as pd

from dpst.pl import save_figure
from dpst_study.figures import figure6
from dpst_study.jobs import logged_to

with logged_to(snakemake.log[0]):
    runs = pd.read_csv(snakemake.input[0], sep="\t")
    wanted = pd.DataFrame(snakemake.params.runs, columns=["section", "model", "alpha", "seed"])
    runs = runs.merge(wanted, on=["section", "model", "alpha", "seed"])
    sections = list(dict.fromkeys(wanted["section"]))
    fig = figure6(runs, sections=sections)
    save_figure(fig, [snakemake.output.png, snakemake.output.pdf])
