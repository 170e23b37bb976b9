"""Simulate a Visium section and write it in the Space Ranger layout."""

from dpst.sim import simulate_section, write_spaceranger
from dpst_study.jobs import logged_to

with logged_to(snakemake.log[0]):
    adata = simulate_section(**snakemake.params.simulate)
    write_spaceranger(adata, snakemake.output[0], sample_id=snakemake.wildcards.section)
    print(f"simulated {adata.n_obs} spots x {adata.n_vars} genes -> {snakemake.output[0]}")
