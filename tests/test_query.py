"""Query mapping (load_query_data) and label transfer (tl.transfer_labels)."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import dpst

BATCH_KEY = "section"
EPOCHS = {"max_epochs": 40, "kl_warmup_epochs": 10, "progress_bar": False, "device": "cpu"}


@pytest.fixture(scope="module")
def halves() -> tuple[ad.AnnData, ad.AnnData]:
    """One simulated section cut in two: the left half the reference, the right half (fewer counts) the query."""
    section = dpst.sim.simulate_section(n_spots=700, n_genes=150, n_domains=3, seed=4)
    section = dpst.pp.preprocess(section, min_counts=10, min_cells=3, n_top_genes=120)
    left = section.obsm["spatial"][:, 0] < np.median(section.obsm["spatial"][:, 0])
    reference, query = section[left].copy(), section[~left].copy()
    reference.obs[BATCH_KEY], query.obs[BATCH_KEY] = "left", "right"
    return reference, query


@pytest.fixture(scope="module")
def trained_reference(halves):
    reference, _ = halves
    return dpst.DPVAE(reference, batch_key=BATCH_KEY, alpha=100.0, seed=0).train(**EPOCHS)


def frozen_state(model) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.module.state_dict().items()}


def test_query_trains_only_its_batch_and_leaves_the_reference_space(halves, trained_reference):
    reference, query = halves
    model = dpst.DPVAE.load_query_data(query, trained_reference)
    assert model.registry.batch_categories == ("left", "right")
    before = frozen_state(model)
    encoder_first = "encoder.hidden.0.weight"
    n_genes = query.n_vars
    # the reference's weights are copied into the grown first layer
    torch.testing.assert_close(
        before[encoder_first][:, : n_genes + 1], trained_reference.module.encoder.hidden[0].weight
    )
    model.train(**EPOCHS)
    after = frozen_state(model)
    for name, value in after.items():
        if name in (encoder_first, "decoder.0.weight"):
            assert torch.equal(value[:, :-1], before[name][:, :-1]), name  # the reference's columns
            assert not torch.equal(value[:, -1], before[name][:, -1]), name  # the query's column learned
        elif (name.startswith("decoder.") and "running" in name) or name.endswith("num_batches_tracked"):
            continue  # the decoder's normalization follows the query (as in scArches); a step counter
        else:
            assert torch.equal(value, before[name]), name
    # the reference's spots keep their codes in the query model
    np.testing.assert_allclose(
        model.get_latent_representation(reference), trained_reference.get_latent_representation(), atol=1e-5
    )
    # the penalty measured the query's own geometry, within its section
    assert model.graph.n_obs == query.n_obs and np.isfinite(model.lam)


def test_labels_transfer_from_reference_to_query(halves, trained_reference, tmp_path):
    reference, query = halves
    reference, query = reference.copy(), query.copy()
    trained_reference.save(tmp_path / "reference")
    model = dpst.DPVAE.load_query_data(query, tmp_path / "reference").train(**EPOCHS)
    key = model.write_results(query, key_added="X_mapped")
    reference.obsm[key] = trained_reference.get_latent_representation()
    transferred = dpst.tl.transfer_labels(reference, query, "domain", key, n_neighbors=10)
    assert list(transferred.index) == list(query.obs_names)
    confidence = query.obs["domain_transferred_confidence"]
    assert ((confidence > 0) & (confidence <= 1)).all()
    ari = adjusted_rand_score(query.obs["domain"], transferred)
    print(f"transfer ARI on the simulated query: {ari:.3f}")
    assert ari > 0.5
    # saved and loaded like any model, with the reference's and the query's batches
    model.save(tmp_path / "query")
    loaded = dpst.DPVAE.load(tmp_path / "query", query)
    np.testing.assert_array_equal(loaded.get_latent_representation(), model.get_latent_representation())


def test_query_refusals_get_one_line(halves, trained_reference, tmp_path):
    reference, query = halves
    with pytest.raises(ValueError, match=re.escape("batch(es) 'left' are already in the reference")):
        dpst.DPVAE.load_query_data(reference, trained_reference)
    fewer = query[:, 5:].copy()
    with pytest.raises(ValueError, match=re.escape(f"adata lacks 5 of the reference's {query.n_vars} genes")):
        dpst.DPVAE.load_query_data(fewer, trained_reference)
    filled = dpst.DPVAE.load_query_data(fewer, trained_reference, zero_fill_missing_genes=True)
    assert list(filled.adata.var_names) == list(query.var_names)
    assert filled.adata.X[:, :5].nnz == 0
    plain = dpst.DPVAE(reference, alpha=0.0)
    with pytest.raises(ValueError, match=re.escape("reference is not trained")):
        dpst.DPVAE.load_query_data(query, plain)
    with pytest.raises(ValueError, match=re.escape("the reference was trained without batch_key")):
        dpst.DPVAE.load_query_data(query, plain.train(max_epochs=2, kl_warmup_epochs=1, progress_bar=False))
    with pytest.raises(FileNotFoundError, match="is not a saved model"):
        dpst.DPVAE.load_query_data(query, tmp_path / "nowhere")
    with pytest.raises(TypeError, match=re.escape("reference must be a trained DPSCVI")):
        dpst.DPSCVI.load_query_data(query, trained_reference)


def test_transfer_refusals_get_one_line(halves):
    reference, query = (part.copy() for part in halves)
    reference.obsm["X"] = np.zeros((reference.n_obs, 3))
    query.obsm["X"] = np.zeros((query.n_obs, 4))
    with pytest.raises(KeyError, match=re.escape("reference.obs has no 'layer'")):
        dpst.tl.transfer_labels(reference, query, "layer", "X")
    with pytest.raises(ValueError, match=re.escape("obsm['X'] has 3 dimensions in the reference and 4 in the query")):
        dpst.tl.transfer_labels(reference, query, "domain", "X")


def test_scvi_query_learns_its_own_dispersion_row(halves):
    reference, query = halves
    trained = dpst.DPSCVI(reference, batch_key=BATCH_KEY, dispersion="gene-batch", alpha=100.0).train(**EPOCHS)
    model = dpst.DPSCVI.load_query_data(query, trained)
    before = model.module.log_theta.detach().clone()
    model.train(**EPOCHS)
    after = model.module.log_theta.detach()
    assert after.shape == (2, query.n_vars)
    assert torch.equal(after[0], before[0]) and torch.equal(before[0], trained.module.log_theta.detach()[0])
    assert not torch.equal(after[1], before[1])
