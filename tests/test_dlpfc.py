"""Real annotated DLPFC sections (shared/data/dlpfc): micrometre coordinates, no uns['spatial'], no image.

The curated files store micrometres in obsm['spatial'] (uns['spatial_unit'] == 'um') and the Visium
array positions in obs; they go through the public API as a user's own h5ad would. The tests skip,
saying why, where the data folder is absent (a user's clone); CI has it. The files are read in place.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from _workflow import REPO
from sklearn.metrics import adjusted_rand_score

import dpst

DLPFC = Path(os.environ.get("DPST_DLPFC_DATA", REPO.parent / "shared" / "data" / "dlpfc"))
SECTIONS = ("151673", "151674")

pytestmark = pytest.mark.skipif(
    not all((DLPFC / f"dlpfc_{s}.h5ad").is_file() for s in SECTIONS),
    reason=f"DLPFC sections not found in {DLPFC} (set DPST_DLPFC_DATA to the dlpfc folder)",
)


def read(section: str) -> ad.AnnData:
    return ad.read_h5ad(DLPFC / f"dlpfc_{section}.h5ad")


@pytest.fixture(scope="module")
def section():
    return dpst.pp.preprocess(read("151673"), min_counts=100, n_top_genes=1000)


def test_micrometres_are_read_as_stored(section):
    raw = read("151673")
    assert "spatial" not in raw.uns  # nothing to calibrate: the unit is micrometres
    np.testing.assert_array_equal(dpst.pp.spatial_coordinates(raw), raw.obsm["spatial"])
    record = section.uns["dpst_preprocess"]
    assert record["coordinates"]["libraries"] == {"all": {"unit": "um", "conversion": "none (taken as micrometres)"}}
    # the Visium array positions make the hexagon graph: neighbours 100 um apart
    assert record["neighbors"] == {"kind": "grid", "geometry": "hexagon", "n_neighs": 6}
    rows, cols = section.obsp["spatial_connectivities"].nonzero()
    lengths = np.linalg.norm(section.obsm["spatial_um"][rows] - section.obsm["spatial_um"][cols], axis=1)
    assert lengths.min() > 99 and lengths.max() < 102  # real spots sit up to ~1.4% off the grid


@pytest.mark.parametrize("model_class", [dpst.DPVAE, dpst.DPSCVI], ids=["vae", "scvi"])
def test_models_and_metrics_on_a_dlpfc_section(section, model_class):
    model = model_class(section, seed=0).train(max_epochs=20, progress_bar=False, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every metric is defined
        metrics, per_dimension = dpst.metrics.evaluate_model(model)
    assert len(per_dimension) == 10 and all(np.isfinite(value) for value in metrics.values())
    # G's pairs: the first three rings of the 100 um hexagon
    assert model.graph.distances.min() == pytest.approx(100.0, abs=1.0)
    assert np.quantile(model.graph.distances, 0.9) == pytest.approx(200.0, abs=3.0)


@pytest.fixture(scope="module")
def both_sections() -> ad.AnnData:
    """Both sections in one AnnData, preprocessed together (genes chosen per section)."""
    sections = {name: read(name) for name in SECTIONS}
    both = ad.concat(sections, label="sample_id", index_unique="-")
    both.uns["spatial_unit"] = "um"
    return dpst.pp.preprocess(both, min_counts=100, n_top_genes=500, library_key="sample_id")


def test_two_dlpfc_sections_in_one_anndata(both_sections):
    adata = both_sections.copy()
    assert set(adata.uns["dpst_preprocess"]["coordinates"]["libraries"]) == set(SECTIONS)
    model = dpst.DPVAE(adata, library_key="sample_id", seed=0).train(max_epochs=10, progress_bar=False, device="cpu")
    libraries = adata.obs["sample_id"].to_numpy()
    assert (libraries[model.graph.edges[:, 0]] == libraries[model.graph.edges[:, 1]]).all()
    table = dpst.metrics.evaluate_model_by_library(model)
    assert list(table.index) == [*SECTIONS, "all"]
    assert table[["moran_I", "L_0.1", "mse_heldout"]].notna().all().all()


def test_layers_carry_over_from_one_section_to_the_next(both_sections, tmp_path):
    """151673 with its layers is the reference; 151674 is mapped onto it and gets them by kNN."""
    by_section = {name: both_sections[both_sections.obs["sample_id"] == name].copy() for name in SECTIONS}
    reference, query = by_section["151673"], by_section["151674"]
    settings = {"max_epochs": 60, "kl_warmup_epochs": 15, "progress_bar": False, "device": "cpu"}
    trained = dpst.DPVAE(reference, batch_key="sample_id", alpha=100.0, seed=0).train(**settings)
    trained.write_results(key_added="X_dpst")
    trained.save(tmp_path / "reference")
    mapped = dpst.DPVAE.load_query_data(query, tmp_path / "reference").train(**settings)
    mapped.write_results(key_added="X_dpst")

    annotated = reference[reference.obs["domain"].notna()].copy()
    transferred = dpst.tl.transfer_labels(annotated, query, "domain", "X_dpst")
    truth = query.obs["domain"]
    labelled = truth.notna().to_numpy()
    ari = adjusted_rand_score(truth[labelled].astype(str), transferred[labelled].astype(str))
    print(f"layers transferred 151673 -> 151674 after {settings['max_epochs']} epochs: ARI {ari:.3f}")
    # 0.27 measured (0.25 with seed 1; a joint PCA gives 0.36): far above chance (0), so the
    # query's codes sit near the reference's codes of the same layers
    assert ari > 0.15
    # the confidence means something: spots given their true layer are the more confident ones
    confidence = query.obs["domain_transferred_confidence"].to_numpy()[labelled]
    right = (transferred[labelled].astype(str) == truth[labelled].astype(str)).to_numpy()
    assert confidence[right].mean() > confidence[~right].mean()


@pytest.fixture(scope="module")
def cropped_pair() -> ad.AnnData:
    """A band of both sections across all seven layers (x from 2,000 to 5,000 um; ~1,800 spots each)."""
    sections = {}
    for name in SECTIONS:
        raw = read(name)
        x = raw.obsm["spatial"][:, 0]
        sections[name] = raw[(x > 2000) & (x < 5000)].copy()
    both = ad.concat(sections, label="sample_id", index_unique="-")
    both.uns["spatial_unit"] = "um"
    return dpst.pp.preprocess(both, min_counts=100, n_top_genes=500, library_key="sample_id")


def layer_ari(section: ad.AnnData, codes: np.ndarray, fits: int = 3) -> float:
    """Mean ARI over GMM fits of the section's codes in 7 domains (tied, the benchmarks' clusterer)."""
    section = section.copy()
    section.obsm["codes"] = codes
    scores = []
    for fit in range(fits):
        dpst.tl.domains(section, "codes", 7, seed=fit, key_added="found")
        scores.append(dpst.tl.domain_scores(section, "found", "domain").loc["all", "ARI"])
    return float(np.mean(scores))


@pytest.mark.slow
def test_one_model_of_both_sections_finds_each_sections_layers_as_well_as_alone(cropped_pair):
    """Issue 19: joint training (batch_key, minibatches) costs no section its layers.

    The settings are those the benchmarks found best for domains (the neighbourhood read, the
    penalty on the mean). Alone trains the library's 1,000 full-batch epochs; joint trains on
    minibatches of 128 for about as many optimizer steps (~11,000) as the workflow's joint runs
    take on whole sections (tests/benchmarks/sections.py).
    """
    settings = {"alpha": 100.0, "penalty_latent": "mean", "neighborhood": "reconstructed"}
    own = {name: (cropped_pair.obs["sample_id"] == name).to_numpy() for name in SECTIONS}
    sections = {name: cropped_pair[rows].copy() for name, rows in own.items()}
    for section in sections.values():  # each on its own: its graphs and coordinates alone
        section.obs["sample_id"] = section.obs["sample_id"].astype(str)
    alone, joint = {name: [] for name in SECTIONS}, {name: [] for name in SECTIONS}
    for seed in (0, 1):
        model = dpst.DPVAE(cropped_pair, batch_key="sample_id", seed=seed, **settings)
        model.train(max_epochs=400, batch_size=128, kl_warmup_epochs=400, progress_bar=False, device="cpu")
        codes = model.get_latent_representation()
        for name, section in sections.items():
            joint[name].append(layer_ari(section, codes[own[name]]))
            single = dpst.DPVAE(section, seed=seed, **settings).train(max_epochs=1000, progress_bar=False, device="cpu")
            alone[name].append(layer_ari(section, single.get_latent_representation()))
    for name in SECTIONS:
        print(f"{name}: layers' ARI alone {np.round(alone[name], 3)}, in the joint model {np.round(joint[name], 3)}")
        # measured here, training seeds 0-3 (one thread): joint minus alone +0.043 (151673) and
        # +0.005 (151674) on average, seed by seed -0.05 to +0.11 (the seeds' own sd 0.03-0.06);
        # with half the steps (200 epochs; 1,000 genes, seeds 0-1) it was 0.02 below on both
        assert np.mean(joint[name]) > np.mean(alone[name]) - 0.03
