"""dpst.tl.domains and the domain scores: hand-computed cases, the simulator and a crop of a real DLPFC section."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from test_dlpfc import DLPFC, SECTIONS

import dpst
from dpst.metrics import chaos, domain_agreement, pas


def test_agreement_ignores_unannotated_spots():
    truth = np.array(["L1", "L1", "L2", "L2", None, np.nan], dtype=object)
    labels = np.array(["b", "b", "a", "a", "a", "b"])
    assert domain_agreement(labels, truth) == {"ARI": 1.0, "NMI": 1.0, "n_scored": 4}
    half = domain_agreement(np.array(["a", "b", "a", "b"]), truth[:4])
    assert half["ARI"] == pytest.approx(-0.5) and half["NMI"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="only 1 spots carry both"):
        domain_agreement(["a", "b"], [None, "L1"])


def test_chaos_by_hand():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # standardized corners at (+-1, +-1): each spot's nearest same-domain spot is 2 away
    assert chaos(["a", "a", "b", "b"], square) == pytest.approx(2.0)
    assert chaos(["a", "b", "b", "a"], square * 100) == pytest.approx(2 * np.sqrt(2))  # diagonals: farther
    assert chaos(["a", "b", "c", "d"], square) == 0.0  # a spot alone in its domain adds nothing


def test_pas_by_hand():
    line = np.c_[np.arange(5.0), np.zeros(5)]
    assert pas(list("aabbb"), line, n_neighbors=2, threshold=2) == 0.0
    assert pas(list("ababa"), line, n_neighbors=2, threshold=2) == pytest.approx(3 / 5)


@pytest.fixture(scope="module")
def simulated():
    adata = dpst.sim.simulate_section(n_spots=500, n_genes=150, n_domains=4, seed=3)
    adata = dpst.pp.preprocess(adata, min_counts=10, min_cells=3, n_top_genes=120)
    sc.pp.pca(adata, n_comps=15, random_state=0)
    return adata


@pytest.mark.parametrize("method", ["gmm", "leiden"])
def test_domains_find_the_simulated_layers(simulated, method):
    adata = simulated.copy()
    found = dpst.tl.domains(adata, "X_pca", 4, method=method, seed=1)
    assert found.dtype == "category" and list(found.cat.categories) == ["0", "1", "2", "3"]
    assert adata.obs["X_pca_domains"].equals(found)
    assert adata.uns["X_pca_domains"]["method"] == method and adata.uns["X_pca_domains"]["refine"] is False
    scores = dpst.tl.domain_scores(adata, "X_pca_domains", truth_key="domain")
    assert list(scores.index) == ["sim_seed3", "all"] and scores.loc["all", "n_scored"] == adata.n_obs
    assert scores.loc["all", "ARI"] > 0.9  # the simulator's layers are easy
    again = dpst.tl.domains(adata, "X_pca", 4, method=method, seed=1, key_added="again")
    assert again.to_numpy().tolist() == found.to_numpy().tolist()  # seeded: the same domains


def test_refinement_is_a_majority_vote_of_spatial_neighbours():
    spots = ad.AnnData(obs=pd.DataFrame(index=[f"s{i}" for i in range(5)]))
    spots.obsm["spatial"] = np.c_[np.arange(5.0) * 100, np.zeros(5)]
    spots.obsm["codes"] = np.array([[0.0], [0.1], [5.0], [0.2], [0.05]])  # the middle spot stands out
    raw = dpst.tl.domains(spots, "codes", 2, key_added="raw")
    assert raw.to_numpy().tolist() == ["0", "0", "1", "0", "0"]
    refined = dpst.tl.domains(spots, "codes", 2, refine=True, refine_neighbors=2)
    assert refined.to_numpy().tolist() == ["0"] * 5
    assert spots.uns["codes_domains"]["refine_neighbors"] == 2


def test_bad_settings_get_one_line(simulated):
    with pytest.raises(ValueError, match="method must be one of gmm, leiden, got 'kmeans'"):
        dpst.tl.domains(simulated, "X_pca", 4, method="kmeans")
    with pytest.raises(ValueError, match=re.escape("n_domains must be in [1, 500], got 0")):
        dpst.tl.domains(simulated, "X_pca", 0)
    with pytest.raises(KeyError, match=re.escape("adata.obsm has no 'nope'")):
        dpst.tl.domains(simulated, "nope", 4)
    with pytest.raises(KeyError, match=re.escape("adata.obs has no 'layer' column")):
        dpst.tl.domain_scores(simulated, "domain", truth_key="layer")


@pytest.mark.skipif(not (DLPFC / f"dlpfc_{SECTIONS[0]}.h5ad").is_file(), reason=f"DLPFC sections not found in {DLPFC}")
def test_domains_and_scores_on_a_real_dlpfc_crop():
    """A 1.6 mm band across the cortical layers of 151673: domains found, refinement makes them more continuous."""
    adata = ad.read_h5ad(DLPFC / f"dlpfc_{SECTIONS[0]}.h5ad")
    x = adata.obsm["spatial"][:, 0]
    adata = adata[(x > np.quantile(x, 0.4)) & (x < np.quantile(x, 0.7))].copy()
    adata = dpst.pp.preprocess(adata, min_counts=100, n_top_genes=1000)
    sc.pp.pca(adata, n_comps=20, random_state=0)
    dpst.tl.domains(adata, "X_pca", 7, key_added="raw")
    dpst.tl.domains(adata, "X_pca", 7, refine=True, key_added="refined")
    raw = dpst.tl.domain_scores(adata, "raw", truth_key="domain").loc["all"]
    refined = dpst.tl.domain_scores(adata, "refined", truth_key="domain").loc["all"]
    assert raw["n_scored"] == adata.obs["domain"].notna().sum()
    assert 0.1 < raw["ARI"] < 1 and 0.1 < raw["NMI"] < 1  # expression alone finds some of the layers
    assert refined["PAS"] < raw["PAS"] and refined["CHAOS"] <= raw["CHAOS"]
