"""Shared pytest fixtures."""

import time

import pytest
from _workflow import copy_workflow, snakemake

from dpst.sim import simulate_section, write_spaceranger

# --------------------------------------------------------------------------- #
# simulated Visium data (dpst.sim / dpst.io / dpst.pp)
# --------------------------------------------------------------------------- #
SIM_KWARGS = {"n_spots": 250, "n_genes": 120, "n_domains": 4, "seed": 7}


@pytest.fixture(scope="session")
def _sim_adata_cached():
    return simulate_section(**SIM_KWARGS)


@pytest.fixture
def sim_adata(_sim_adata_cached):
    """A small simulated section (250 spots x 120 genes); a fresh copy per test."""
    return _sim_adata_cached.copy()


@pytest.fixture
def spaceranger_dir(tmp_path, sim_adata):
    """``sim_adata`` written as a Space Ranger 1.x ``outs/`` folder."""
    return write_spaceranger(sim_adata, tmp_path / "outs", positions="v1")


# --------------------------------------------------------------------------- #
# the workflow
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo workflow run once locally on 2 cores: (its folder, wall seconds)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("demo") / "wf")
    start = time.perf_counter()
    snakemake(workdir, "--cores", "2", "--configfile", "config/demo.yaml")
    return workdir, time.perf_counter() - start
