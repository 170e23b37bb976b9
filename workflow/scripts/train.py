"""Train one model (a section, or a `joint` group of sections, x backbone x alpha x seed) and evaluate it."""

import anndata as ad

from dpst_study.jobs import USER_ERRORS, logged_to
from dpst_study.runs import run_label, section_metrics, set_threads, train_run, write_run
from dpst_study.sections import SECTION_KEY

wc = snakemake.wildcards
group = wc.get("group")  # a joint run: the group's sections in one model, batch_key the section
where = {"group": group} if group else {"section": wc.section}
with logged_to(snakemake.log[0], expected=USER_ERRORS, context=run_label(wc.model, wc.alpha, wc.seed, **where) + ": "):
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
        batch_key=SECTION_KEY if group else None,
    )
    metrics.update(where)
    by_section = section_metrics(fitted, metrics) if group else None
    write_run(fitted, metrics, per_dimension, snakemake.output, by_section)
    print({k: metrics[k] for k in ("moran_I", "geary_C", "mse_heldout", "penalty", "train_seconds")})
    if by_section is not None:
        print(by_section[["section", "moran_I", "geary_C", "mse_heldout", "n_spots"]].to_string(index=False))
