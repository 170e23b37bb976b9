"""Read a Space Ranger folder and preprocess it for the models."""

from dpst._files import atomic_path
from dpst.io import read_spaceranger
from dpst.pp import describe_preprocessing, preprocess
from dpst_study.jobs import USER_ERRORS, logged_to

section = snakemake.wildcards.section
with logged_to(snakemake.log[0], expected=USER_ERRORS, context=f"section {section}: "):
    adata = read_spaceranger(snakemake.params.folder)
    print(f"read {adata.n_obs} spots x {adata.n_vars} genes from {snakemake.params.folder}")
    adata = preprocess(adata, **snakemake.params.settings)
    print(f"kept {adata.n_obs} spots x {adata.n_vars} genes")
    print(describe_preprocessing(adata))
    with atomic_path(snakemake.output[0]) as tmp:
        adata.write_h5ad(tmp)
