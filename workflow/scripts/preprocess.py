"""Read a Space Ranger folder or an AnnData file and preprocess it for the models."""

from dpst._files import atomic_path
from dpst.io import read_spaceranger
from dpst.pp import describe_preprocessing, preprocess
from dpst_study.jobs import USER_ERRORS, logged_to
from dpst_study.sections import keep_micrometres_for_models, read_h5ad_section

section = snakemake.wildcards.section
h5ad, settings = snakemake.params.h5ad, snakemake.params.settings
with logged_to(snakemake.log[0], expected=USER_ERRORS, context=f"section {section}: "):
    source = h5ad or snakemake.params.folder
    if h5ad:
        adata = read_h5ad_section(h5ad, settings["spatial_key"])
    else:
        adata = read_spaceranger(source)
    print(f"read {adata.n_obs} spots x {adata.n_vars} genes from {source}")
    adata = preprocess(adata, **settings)
    print(f"kept {adata.n_obs} spots x {adata.n_vars} genes")
    print(describe_preprocessing(adata))
    if h5ad:
        print(keep_micrometres_for_models(adata))
    with atomic_path(snakemake.output[0]) as tmp:
        adata.write_h5ad(tmp)
