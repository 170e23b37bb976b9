"""Read a Space Ranger folder and preprocess it for the models."""

from dpst.io import SpaceRangerFormatError, read_spaceranger
from dpst.pp import preprocess
from dpst.workflow import logged_to

section = snakemake.wildcards.section
with logged_to(snakemake.log[0], expected=(SpaceRangerFormatError,), context=f"section {section}: "):
    adata = read_spaceranger(snakemake.params.folder)
    print(f"read {adata.n_obs} spots x {adata.n_vars} genes from {snakemake.params.folder}")
    adata = preprocess(adata, **snakemake.params.settings)
    print(f"kept {adata.n_obs} spots x {adata.n_vars} genes")
    adata.write_h5ad(snakemake.output[0])
