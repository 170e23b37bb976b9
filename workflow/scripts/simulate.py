"""Simulate a Visium section and write it in the Space Ranger layout, with its true domains beside."""

from pathlib import Path

from dpst._files import atomic_path
from dpst.sim import simulate_section, write_spaceranger
from dpst_study.jobs import logged_to
from dpst_study.sections import SIMULATED_DOMAINS

with logged_to(snakemake.log[0]):
    adata = simulate_section(**snakemake.params.simulate)
    folder = write_spaceranger(adata, snakemake.output[0], sample_id=snakemake.wildcards.section)
    # the simulation's truth, which the Space Ranger files cannot carry (read back as obs["domain"])
    with atomic_path(Path(folder) / SIMULATED_DOMAINS) as tmp:
        adata.obs["domain"].rename_axis("barcode").to_csv(tmp)
    print(f"simulated {adata.n_obs} spots x {adata.n_vars} genes -> {snakemake.output[0]}")
