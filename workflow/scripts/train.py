"""Train one model (section x backbone x alpha x seed) and evaluate it."""

import anndata as ad

from dpst_study.jobs import USER_ERRORS, logged_to
from dpst_study.runs import set_threads, train_run, write_run

wc = snakemake.wildcards
run = f"section {wc.section}, {wc.model} alpha {wc.alpha} seed {wc.seed}: "
with logged_to(snakemake.log[0], expected=USER_ERRORS, context=run):
    set_threads(snakemake.threads)
    adata = ad.read_h5ad(snakemake.input[0])
    fitted, metrics, per_dimension = train_run(
        adata,
        wc.model,
        float(wc.alpha),
        int(wc.seed),
        snakemake.params.model,
        snakemake.params.penalty,
        snakemake.params.train,
    )
    metrics["section"] = wc.section
    write_run(fitted, metrics, per_dimension, snakemake.output)
    print({k: metrics[k] for k in ("moran_I", "geary_C", "mse_heldout", "penalty", "train_seconds")})
