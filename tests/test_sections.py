"""Several sections in one AnnData (library_key): every graph within a section, every section as if alone."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pytest
import torch

import dpst
from dpst.graph import spatial_graph
from dpst.metrics import distortion, local_metric_ellipses, spatial_autocorrelation
from dpst.train import _PairSampler

LIBRARY_KEY = "library_id"


def two_sections() -> tuple[ad.AnnData, dict[str, ad.AnnData]]:
    """Two simulated sections in pixels of different scale, and the same concatenated with library_key."""
    first = dpst.sim.simulate_section(n_spots=300, n_genes=100, n_domains=4, seed=1)
    second = dpst.sim.simulate_section(n_spots=260, n_genes=100, n_domains=3, seed=2)
    # the second image at twice the resolution: its pixels are half as many micrometres
    second.obsm["spatial"] = second.obsm["spatial"] * 2.0
    second.uns["spatial"]["sim_seed2"]["scalefactors"]["spot_diameter_fullres"] *= 2.0
    alone = {"sim_seed1": first, "sim_seed2": second}
    # the sections overlap in the plane, as sections from different slides do
    both = ad.concat(alone, label=LIBRARY_KEY, index_unique="-", uns_merge="unique")
    return both, alone


@pytest.fixture(scope="module")
def sections():
    return two_sections()


def pairs_of(matrix) -> set[tuple[int, int]]:
    rows, cols = matrix.nonzero()
    return set(zip(rows.tolist(), cols.tolist(), strict=True))


def test_each_library_is_calibrated_as_if_alone(sections):
    both, alone = sections
    coords = dpst.pp.spatial_coordinates(both, library_key=LIBRARY_KEY)
    for name, section in alone.items():
        mine = (both.obs[LIBRARY_KEY] == name).to_numpy()
        np.testing.assert_array_equal(coords[mine], dpst.pp.spatial_coordinates(section))
    factors = [dpst.io.um_per_pixel(both, name, library_key=LIBRARY_KEY) for name in alone]
    assert factors[0] == pytest.approx(2 * factors[1])
    with pytest.raises(ValueError, match=re.escape("adata.uns['spatial'] holds 2 libraries")):
        dpst.pp.spatial_coordinates(both)


@pytest.mark.parametrize("graph", ["knn", "radius", "all"])
def test_penalty_graph_is_block_diagonal_and_each_block_is_the_section_alone(sections, graph):
    both, alone = sections
    both = both.copy()
    dpst.pp.penalty_graph(both, graph, n_neighbors=6, radius=180.0, library_key=LIBRARY_KEY)
    stored = dpst.pp.read_penalty_graph(both)
    libraries = both.obs[LIBRARY_KEY].to_numpy()
    assert (libraries[stored.edges[:, 0]] == libraries[stored.edges[:, 1]]).all()  # no pair joins two sections
    found = 0
    for name, section in alone.items():
        spots = np.flatnonzero(libraries == name)
        own = spatial_graph(dpst.pp.spatial_coordinates(section), graph, n_neighbors=6, radius=180.0)
        part = stored.subgraph(spots)
        np.testing.assert_array_equal(part.edges, own.edges)
        np.testing.assert_array_equal(part.distances, own.distances)
        found += part.n_edges
    assert found == stored.n_edges
    assert both.uns["dpst_penalty"]["coordinates"]["library_key"] == LIBRARY_KEY


def test_neighbourhood_graph_is_block_diagonal_and_each_block_is_the_section_alone(sections):
    both, alone = sections
    both = both.copy()
    dpst.pp.spatial_neighbors(both, library_key=LIBRARY_KEY)
    assert both.uns["spatial_neighbors"]["params"]["geometry"] == "hexagon"
    connectivities = both.obsp["spatial_connectivities"].tocsr()
    libraries = both.obs[LIBRARY_KEY].to_numpy()
    rows, cols = connectivities.nonzero()
    assert (libraries[rows] == libraries[cols]).all()
    for name, section in alone.items():
        spots = np.flatnonzero(libraries == name)
        section = section.copy()
        dpst.pp.spatial_neighbors(section)
        assert pairs_of(connectivities[spots][:, spots]) == pairs_of(section.obsp["spatial_connectivities"])


def test_tiles_never_mix_sections(sections):
    both, _ = sections
    model = dpst.DPSCVI(both.copy(), layer=None, library_key=LIBRARY_KEY, n_neighbors=6)
    sampler = _PairSampler(model.graph, "pairs", torch.device("cpu"), model.coords, model.libraries.codes)
    rng = np.random.default_rng(0)
    for _ in range(5):
        tiles = sampler.tiles(rng)
        libraries_per_tile = [set(model.libraries.codes[tiles == t]) for t in np.unique(tiles)]
        assert all(len(found) == 1 for found in libraries_per_tile)


@pytest.fixture(scope="module")
def trained(sections):
    """DPSCVI on both sections at once, minibatch tiles, and each section's preprocessing record."""
    both, _ = sections
    adata = dpst.pp.preprocess(both.copy(), min_counts=10, min_cells=3, n_top_genes=80, library_key=LIBRARY_KEY)
    model = dpst.DPSCVI(adata, library_key=LIBRARY_KEY, n_neighbors=6, seed=0)
    model.train(max_epochs=15, batch_size=128, progress_bar=False, device="cpu")
    return adata, model


def test_preprocess_records_each_library(trained):
    adata, _ = trained
    record = adata.uns["dpst_preprocess"]["coordinates"]
    assert record["library_key"] == LIBRARY_KEY and set(record["libraries"]) == {"sim_seed1", "sim_seed2"}
    assert all(entry["method"] == "grid" for entry in record["libraries"].values())
    text = dpst.pp.describe_preprocessing(adata)
    assert "coordinates of sim_seed1" in text and "coordinates of sim_seed2" in text


def test_model_records_the_keys_and_keeps_pairs_within_sections(trained):
    adata, model = trained
    libraries = model.libraries.codes
    assert (libraries[model.graph.edges[:, 0]] == libraries[model.graph.edges[:, 1]]).all()
    key = model.write_results()
    assert adata.uns[key]["params"]["library_key"] == LIBRARY_KEY
    assert adata.uns[key]["params"]["spatial_key"] == "spatial"


def test_per_section_metrics_equal_each_section_measured_alone(trained):
    adata, model = trained
    table = dpst.metrics.evaluate_model_by_library(model)
    assert list(table.index) == ["sim_seed1", "sim_seed2", "all"]
    assert table["n_spots"].tolist() == [
        int((adata.obs[LIBRARY_KEY] == "sim_seed1").sum()),
        int((adata.obs[LIBRARY_KEY] == "sim_seed2").sum()),
        adata.n_obs,
    ]
    overall, _ = dpst.metrics.evaluate_model(model)
    for column, value in overall.items():
        assert table.loc["all", column] == pytest.approx(value, nan_ok=True, rel=1e-12)
    latent = model.get_latent_representation()
    held_out = np.zeros(adata.n_obs, dtype=bool)
    held_out[model.validation_indices] = True
    observed, reconstructed = model.get_observed_log_normalized(), model.get_reconstruction()
    for name in ("sim_seed1", "sim_seed2"):
        mine = (adata.obs[LIBRARY_KEY] == name).to_numpy()
        section = adata[mine].copy()
        for key in list(section.uns):  # nothing of the joint processing is reused
            if key != "spatial":
                del section.uns[key]
        section.uns["spatial"] = {name: adata.uns["spatial"][name]}
        dpst.pp.spatial_neighbors(section)
        coords = dpst.pp.spatial_coordinates(section)
        autocorrelation = spatial_autocorrelation(latent[mine], section.obsp["spatial_connectivities"])
        own = distortion(latent[mine], spatial_graph(coords, "knn", n_neighbors=6))
        ellipses = local_metric_ellipses(latent[mine], coords)
        row = table.loc[name]
        assert row["moran_I"] == pytest.approx(autocorrelation["moran_I"].mean(), rel=1e-12)
        assert row["geary_C"] == pytest.approx(autocorrelation["geary_C"].mean(), rel=1e-12)
        for column in ("penalty", "lam", "L_0.05", "L_0.1"):
            assert row[column] == pytest.approx(own[column], rel=1e-12)
        assert row["median_axis_ratio"] == pytest.approx(ellipses["axis_ratio"].median(), rel=1e-12)
        mse = np.mean((observed[mine & held_out].astype(np.float64) - reconstructed[mine & held_out]) ** 2)
        assert row["mse_heldout"] == pytest.approx(mse, rel=1e-12)


def test_one_library_changes_nothing(sim_adata):
    adata = dpst.pp.preprocess(sim_adata, min_counts=10, min_cells=3, n_top_genes=80)
    adata.obs["section"] = "only"
    results = []
    for library_key in (None, "section"):
        model = dpst.DPVAE(adata, library_key=library_key, seed=0)
        model.train(max_epochs=10, batch_size=64, progress_bar=False, device="cpu")
        results.append(model.get_latent_representation())
    np.testing.assert_array_equal(*results)
