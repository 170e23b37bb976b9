"""Read a Space Ranger folder and preprocess it for the models."""

from dpst.io import SpaceRangerFormatError, read_spaceranger
from dpst.pp import preprocess
from dpst.workflow import fail, logged_to

with logged_to(snakemake.log[0]):
    try:
        adata = read_spaceranger(snakemake.params.folder)
        error = None
    except SpaceRangerFormatError as err:
        error = f"section {snakemake.wildcards.section}: {err}"
    if error is None:
        print(f"read {adata.n_obs} spots x {adata.n_vars} genes from {snakemake.params.folder}")
        adata = preprocess(adata, **snakemake.params.settings)
        print(f"kept {adata.n_obs} spots x {adata.n_vars} genes")
        adata.write_h5ad(snakemake.output[0])
if error:
    fail(error, snakemake.log[0])
