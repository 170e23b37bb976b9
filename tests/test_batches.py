"""batch_key: data registration apart from fitting, the batch one-hot in both networks, saved with the model."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import dpst

BATCH_KEY = "section"
EPOCHS = {"max_epochs": 15, "kl_warmup_epochs": 5, "progress_bar": False, "device": "cpu"}


@pytest.fixture(scope="module")
def joint() -> ad.AnnData:
    """Two simulated sections in one AnnData, the second with a tenth fewer counts per spot."""
    sections = {}
    for seed in (1, 2):
        section = dpst.sim.simulate_section(n_spots=250, n_genes=120, n_domains=3, seed=seed)
        if seed == 2:
            section.X = (section.X * 0.9).floor()
        sections[f"sim_seed{seed}"] = section
    both = ad.concat(sections, label=BATCH_KEY, index_unique="-", uns_merge="unique")
    return dpst.pp.preprocess(both, min_counts=10, min_cells=3, n_top_genes=100, library_key=BATCH_KEY)


@pytest.mark.parametrize("model_class", [dpst.DPVAE, dpst.DPSCVI])
def test_batches_enter_the_encoder_and_the_decoder(joint, model_class):
    model = model_class(joint, batch_key=BATCH_KEY, alpha=100.0, seed=0)
    assert model.registry.batch_key == BATCH_KEY
    assert model.registry.batch_categories == ("sim_seed1", "sim_seed2")
    n_genes, n_latent = joint.n_vars, model.module.n_latent
    assert model.module.encoder.hidden[0].in_features == n_genes + 2
    assert model.module.decoder[0].in_features == n_latent + 2
    model.train(**EPOCHS)
    # the same spots read as the other batch decode differently: the decoder reads the batch
    swapped = joint.copy()
    swapped.obs[BATCH_KEY] = swapped.obs[BATCH_KEY].map({"sim_seed1": "sim_seed2", "sim_seed2": "sim_seed1"})
    assert not np.allclose(model.get_reconstruction(swapped), model.get_reconstruction())
    # the penalty stays within sections: library_key defaults to batch_key
    codes = model.libraries.codes
    assert (codes[model.graph.edges[:, 0]] == codes[model.graph.edges[:, 1]]).all()
    assert model.library_key == BATCH_KEY


def test_without_batch_key_the_networks_are_those_of_before(joint):
    model = dpst.DPVAE(joint, alpha=0.0, seed=3, library_key=BATCH_KEY)
    assert model.module.n_batch == 0 and model.registry.n_batch == 0
    assert model.module.encoder.hidden[0].in_features == joint.n_vars
    torch.manual_seed(3)  # as the model seeds its weights
    bare = dpst.module.GaussianVAEModule(joint.n_vars)
    for name, value in bare.state_dict().items():
        assert torch.equal(value, model.module.state_dict()[name]), name


def test_dispersion_per_gene_and_batch(joint):
    model = dpst.DPSCVI(joint, batch_key=BATCH_KEY, dispersion="gene-batch", alpha=0.0).train(**EPOCHS)
    assert model.module.log_theta.shape == (2, joint.n_vars)
    assert np.isfinite(model.get_reconstruction_error())
    with pytest.raises(ValueError, match=re.escape("dispersion='gene-batch' needs batches (batch_key)")):
        dpst.DPSCVI(joint, dispersion="gene-batch", library_key=BATCH_KEY)


def test_bad_batch_columns_get_one_line(joint):
    with pytest.raises(KeyError, match=re.escape("batch_key 'donor' is not a column of adata.obs")):
        dpst.DPVAE(joint, batch_key="donor")
    holed = joint.copy()
    holed.obs[BATCH_KEY] = holed.obs[BATCH_KEY].astype(object)
    holed.obs.iloc[:3, holed.obs.columns.get_loc(BATCH_KEY)] = np.nan
    with pytest.raises(ValueError, match=re.escape(f"adata.obs['{BATCH_KEY}'] has 3 missing value(s)")):
        dpst.DPVAE(holed, batch_key=BATCH_KEY)


def test_save_and_load_keep_the_batches(joint, tmp_path):
    model = dpst.DPVAE(joint, batch_key=BATCH_KEY, alpha=100.0, seed=0).train(**EPOCHS)
    model.save(tmp_path / "joint")
    loaded = dpst.DPVAE.load(tmp_path / "joint", joint)
    assert loaded.registry == model.registry
    np.testing.assert_array_equal(loaded.get_latent_representation(), model.get_latent_representation())
    # one section alone is encoded with its code in the saved order, not re-registered as batch 0
    second = joint[joint.obs[BATCH_KEY] == "sim_seed2"].copy()
    mine = (joint.obs[BATCH_KEY] == "sim_seed2").to_numpy()
    np.testing.assert_array_equal(model.get_latent_representation(second), model.get_latent_representation()[mine])
    # categories in another order name the same batches
    reordered = joint.copy()
    reordered.obs[BATCH_KEY] = pd.Categorical(reordered.obs[BATCH_KEY], categories=["sim_seed2", "sim_seed1"])
    np.testing.assert_array_equal(model.get_latent_representation(reordered), model.get_latent_representation())
    unknown = joint.copy()
    unknown.obs[BATCH_KEY] = "slide_3"
    with pytest.raises(
        ValueError, match=re.escape(f"adata.obs['{BATCH_KEY}'] has batches the model was not built with: 'slide_3'")
    ):
        model.get_latent_representation(unknown)


@pytest.mark.parametrize("model_class", [dpst.DPVAE, dpst.DPSCVI])
@pytest.mark.parametrize("neighborhood", ["encoder", "reconstructed"])
def test_the_model_reads_the_neighbourhood_mean(joint, model_class, neighborhood, tmp_path):
    model = model_class(joint, batch_key=BATCH_KEY, neighborhood=neighborhood, alpha=100.0, seed=0)
    assert model.module.encoder.hidden[0].in_features == 2 * joint.n_vars + 2
    data = model.registry.spot_data(joint)
    # a spot's neighbourhood input is the mean of its hexagon neighbours (array positions) in its own section
    second = np.flatnonzero(joint.obs[BATCH_KEY] == "sim_seed2")
    rows, cols = joint.obs["array_row"].to_numpy(), joint.obs["array_col"].to_numpy()

    def hexagon(spot):  # the Visium grid's 6 neighbours that lie in the section
        d_row, d_col = np.abs(rows[second] - rows[spot]), np.abs(cols[second] - cols[spot])
        return second[((d_row == 0) & (d_col == 2)) | ((d_row == 1) & (d_col == 1))]

    spot = next(spot for spot in second if len(hexagon(spot)) == 6)
    around = hexagon(spot)
    matrix = model.registry.matrix(joint)
    expected = np.asarray(matrix[around].mean(axis=0)).ravel()
    np.testing.assert_allclose(np.asarray(data.neighbors[spot].todense()).ravel(), expected, rtol=1e-5)
    model.train(**EPOCHS)
    terms = model.history["reconstruction"].iloc[-1]
    assert np.isfinite(terms)
    model.save(tmp_path / "neighbours")
    loaded = model_class.load(tmp_path / "neighbours", joint)
    assert loaded.registry.neighborhood == neighborhood
    np.testing.assert_array_equal(loaded.get_latent_representation(), model.get_latent_representation())
    assert model.get_reconstruction().shape == (joint.n_obs, joint.n_vars)


@pytest.fixture(scope="module")
def twice_as_far(joint) -> ad.AnnData:
    """The joint sections in micrometres, the second one stretched to twice its spacing."""
    adata = joint.copy()
    second = (adata.obs[BATCH_KEY] == "sim_seed2").to_numpy()
    adata.obsm["spatial"] = adata.obsm["spatial_um"].copy()
    adata.obsm["spatial"][second] *= 2.0
    return adata


@pytest.mark.parametrize("batch_size", [None, 128], ids=["full batch", "tiles"])
def test_a_lam_per_library_follows_each_sections_own_scale(twice_as_far, batch_size, tmp_path):
    settings = {**EPOCHS, "batch_size": batch_size}
    shared = dpst.DPVAE(twice_as_far, batch_key=BATCH_KEY, coordinate_unit="um", alpha=100.0, seed=0)
    model = dpst.DPVAE(
        twice_as_far, batch_key=BATCH_KEY, coordinate_unit="um", alpha=100.0, lam_per_library=True, seed=0
    )
    shared.train(**settings)
    model.train(**settings)
    lams = model.lam_by_library
    assert list(lams.index) == ["sim_seed1", "sim_seed2"]
    # the same tissue twice as far apart: about half the latent distance per micrometre
    assert 0.35 < lams["sim_seed2"] / lams["sim_seed1"] < 0.7
    assert model.lam == pytest.approx(np.sqrt(lams.prod()), rel=1e-5)
    assert (shared.lam_by_library == shared.lam).all()
    key = model.write_results(key_added="X_own")
    assert twice_as_far.uns[key]["lam_by_library"] == pytest.approx(lams.to_dict())

    # saved and loaded onto the same spots with the sections' categories in the other order
    model.save(tmp_path / "model")
    reordered = twice_as_far.copy()
    reordered.obs[BATCH_KEY] = reordered.obs[BATCH_KEY].cat.reorder_categories(["sim_seed2", "sim_seed1"])
    loaded = dpst.DPVAE.load(tmp_path / "model", reordered)
    pd.testing.assert_series_equal(loaded.lam_by_library.sort_index(), lams.sort_index())


def test_a_lam_per_library_needs_a_sparse_graph(twice_as_far):
    one = twice_as_far[twice_as_far.obs[BATCH_KEY] == "sim_seed1"].copy()  # 'all' on one section: every pair
    with pytest.raises(ValueError, match="lam_per_library=True needs a sparse graph G"):
        dpst.DPVAE(one, coordinate_unit="um", graph="all", lam_per_library=True)
    with pytest.raises(ValueError, match="lam_per_library must be True or False"):
        dpst.DPVAE(twice_as_far, batch_key=BATCH_KEY, coordinate_unit="um", lam_per_library="yes")
