"""Training the two backbones from Python: the penalty works, runs repeat, models save."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

import dpst
from dpst.metrics import distortion, evaluate_model, spatial_autocorrelation

EPOCHS = 800  # the KL warm-up takes 400; shorter runs are not yet trained


@pytest.fixture(scope="module")
def section():
    adata = dpst.sim.simulate_section(n_spots=400, n_genes=150, seed=3)
    return dpst.pp.preprocess(adata, min_counts=10, min_cells=3, n_top_genes=120)


@pytest.mark.parametrize("model_class", [dpst.DPVAE, dpst.DPSCVI])
def test_penalty_lowers_distortion_and_raises_morans_i(section, model_class):
    results = {}
    for alpha in (0.0, 100.0):
        model = model_class(section, alpha=alpha, seed=0)
        model.train(max_epochs=EPOCHS, progress_bar=False)
        latent = model.get_latent_representation()
        results[alpha] = (
            distortion(latent, model.graph)["penalty"],
            spatial_autocorrelation(latent, section.obsp["spatial_connectivities"])["moran_I"].mean(),
        )
    (pen_off, moran_off), (pen_on, moran_on) = results[0.0], results[100.0]
    assert pen_on < pen_off
    assert moran_on > moran_off


def test_cpu_training_is_bitwise_repeatable(section):
    latents = []
    for _ in range(2):
        model = dpst.DPSCVI(section, alpha=10.0, seed=7)
        model.train(max_epochs=20, progress_bar=False, device="cpu")
        latents.append(model.get_latent_representation())
    np.testing.assert_array_equal(latents[0], latents[1])


def test_minibatch_training_keeps_graph_edges(section):
    model = dpst.DPVAE(section, alpha=10.0, seed=0)
    model.train(max_epochs=5, batch_size=64, progress_bar=False)
    assert np.isfinite(model.history["penalty"]).all()
    assert len(model.history) == 5


def test_evaluate_model_reports_every_metric(section):
    model = dpst.DPVAE(section, alpha=10.0, seed=0).train(max_epochs=20, progress_bar=False)
    metrics, per_dim = evaluate_model(model)
    assert set(per_dim.columns) == {"moran_I", "geary_C"}
    assert len(per_dim) == 10
    for key in ("moran_I", "geary_C", "mse_all", "mse_heldout", "penalty", "lam", "L_0.05", "L_0.1"):
        assert np.isfinite(metrics[key]), key
    assert metrics["L_0.05"] >= metrics["L_0.1"] >= 1.0


@pytest.mark.parametrize("model_class", [dpst.DPVAE, dpst.DPSCVI])
def test_squared_errors_add_up_to_the_dense_mse(section, model_class):
    """The metrics' per-spot errors, a batch at a time, give the MSE of the dense matrices."""
    model = model_class(section, alpha=10.0, seed=0).train(max_epochs=5, progress_bar=False)
    errors = model.squared_errors(batch_size=37)  # batches that do not divide the spots
    observed, reconstructed = model.get_observed_log_normalized(), model.get_reconstruction()
    np.testing.assert_allclose(errors, ((observed.astype(np.float64) - reconstructed) ** 2).sum(axis=1), rtol=1e-12)
    mse = dpst.metrics.reconstruction_mse(observed, reconstructed)
    assert evaluate_model(model)[0]["mse_all"] == pytest.approx(mse, rel=1e-12)


def test_save_and_load_round_trip(section, tmp_path):
    model = dpst.DPSCVI(section, alpha=10.0, likelihood="nb", seed=0).train(max_epochs=5, progress_bar=False)
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "m")
    loaded = dpst.DPSCVI.load(tmp_path / "m", section)
    np.testing.assert_allclose(loaded.get_latent_representation(), model.get_latent_representation())
    assert loaded.lam == pytest.approx(model.lam)
    assert len(loaded.history) == 5
    with pytest.raises(ValueError, match="genes"):
        dpst.DPSCVI.load(tmp_path / "m", section[:, :50].copy())


def test_write_results_into_obsm_and_uns(section):
    adata = section.copy()
    model = dpst.DPVAE(adata, alpha=10.0).train(max_epochs=3, progress_bar=False)
    key = model.write_results()
    assert adata.obsm[key].shape == (adata.n_obs, 10)
    assert adata.uns[key]["lam"] == pytest.approx(model.lam)


def test_divergence_stops_with_a_clear_error(section):
    model = dpst.DPVAE(section, alpha=10.0)
    with pytest.raises(dpst.TrainingDivergedError, match="epoch"):
        model.train(max_epochs=50, lr=1e6, progress_bar=False)


def test_bad_inputs_are_named(section):
    with pytest.raises(ValueError, match="raw counts"):
        dpst.DPSCVI(section, layer=None)  # X is log-normalized
    with pytest.raises(ValueError, match="looks like raw counts"):
        dpst.DPVAE(section, layer="counts")
    with pytest.raises(KeyError, match="obsm"):
        dpst.DPVAE(section, spatial_key="nope")
    with pytest.raises(ValueError, match="alpha"):
        dpst.DPVAE(section, alpha=-1.0)


def test_coordinates_are_converted_to_micrometres(section):
    model = dpst.DPVAE(section, alpha=1.0, graph="knn", n_neighbors=6)
    # Visium spot centres are 100 um apart
    assert np.median(model.graph.distances) == pytest.approx(100.0, rel=0.02)


@pytest.mark.parametrize("batch_size", [None, 64])
@pytest.mark.parametrize("graph", ["knn", "radius", "gaussian", "all"])
def test_every_graph_trains_full_batch_and_in_minibatches(section, graph, batch_size):
    model = dpst.DPVAE(section, alpha=10.0, graph=graph, normalization="n2")
    model.train(max_epochs=3, batch_size=batch_size, progress_bar=False)
    assert np.isfinite(model.history["penalty"]).all()
    assert np.isfinite(model.get_latent_representation()).all()


def test_early_stopping_restores_the_best_epoch(section):
    model = dpst.DPVAE(section, alpha=10.0, seed=0)
    model.train(max_epochs=2000, lr=3e-2, early_stopping=True, patience=5, progress_bar=False)
    history = model.history
    assert len(history) < 2000
    best = history["validation_elbo"].idxmin()
    assert len(history) - 1 - best == 5  # stopped after `patience` epochs without improvement
    with pytest.raises(ValueError, match="held-out"):
        model.train(max_epochs=5, early_stopping=True, validation_fraction=0.0)


@pytest.fixture
def one_thread():
    """One torch thread, like the demo config. Several threads repeat too since the penalty gathers
    its pairs with index_select (tests/test_real_data.py checks 2 threads on a real section)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("validation_chunk", [dpst.train.VALIDATION_CHUNK, 16])
@pytest.mark.parametrize("batch_size", [None, 64])
def test_history_read_back_every_few_epochs_is_the_same(section, one_thread, monkeypatch, batch_size, validation_chunk):
    """On a GPU the history stays on the device and is read back every few epochs: the same records, bit for bit."""
    monkeypatch.setattr(dpst.train, "VALIDATION_CHUNK", validation_chunk)
    histories = []
    for every in (1, 7):
        monkeypatch.setattr(dpst.train, "_readback_every", lambda device, settings, every=every: every)
        model = dpst.DPSCVI(section, alpha=10.0, seed=0)
        model.train(max_epochs=20, batch_size=batch_size, progress_bar=False, device="cpu")
        histories.append(model.history)
    assert len(histories[0]) == 20
    assert np.isfinite(histories[0][["loss", "penalty", "lam", "validation_elbo"]].to_numpy()).all()
    pd.testing.assert_frame_equal(histories[0], histories[1], check_exact=True)


def test_a_deferred_read_back_names_the_epoch_that_diverged():
    log = dpst.train._EpochLog(checked_each_step=False, lr=1e-3, alpha=0.0)
    for epoch, loss in enumerate([1.0, 0.5, float("nan"), float("nan")]):
        step = {key: torch.tensor(loss) for key in ("loss", "reconstruction", "kl", "penalty")}
        log.add(epoch, 1.0, [step], lam=None, validation=None)
    with pytest.raises(dpst.TrainingDivergedError, match="at epoch 2 "):
        log.read_back()


@pytest.mark.parametrize("model_class", [dpst.DPVAE, dpst.DPSCVI])
def test_a_stored_penalty_graph_trains_to_the_same_bits(section, model_class, one_thread):
    adata = section.copy()
    dpst.pp.penalty_graph(adata, graph="gaussian", sigma=120.0, key_added="g")
    own = model_class(adata, alpha=100.0, graph="gaussian", sigma=120.0, seed=2)
    stored = model_class(adata, alpha=100.0, graph_key="g", seed=2)
    for field in ("edges", "weights", "distances"):
        np.testing.assert_array_equal(getattr(stored.graph, field), getattr(own.graph, field))
    for model in (own, stored):
        model.train(max_epochs=20, progress_bar=False, device="cpu")
    np.testing.assert_array_equal(stored.get_latent_representation(), own.get_latent_representation())
    assert stored.lam == own.lam
    pd.testing.assert_frame_equal(stored.history, own.history)
    # the record names the graph used, not the construction defaults it ignored
    assert (stored.init_params["graph"], stored.init_params["sigma"]) == ("gaussian", 120.0)


def test_a_model_on_a_stored_graph_saves_and_loads(section, tmp_path):
    adata = section.copy()
    dpst.pp.penalty_graph(adata, graph="radius", radius=180.0)
    model = dpst.DPVAE(adata, alpha=10.0, graph_key="dpst_penalty").train(max_epochs=3, progress_bar=False)
    model.save(tmp_path / "m")
    loaded = dpst.DPVAE.load(tmp_path / "m", adata)
    assert loaded.graph.kind == "radius" and loaded.graph.n_edges == model.graph.n_edges
    np.testing.assert_array_equal(loaded.get_latent_representation(), model.get_latent_representation())
    key = loaded.write_results()
    assert adata.uns[key]["graph"] == {"kind": "radius", "n_edges": model.graph.n_edges, "radius": 180.0}


def test_a_missing_or_mismatched_stored_graph_is_named(section):
    adata = section.copy()
    with pytest.raises(KeyError, match=re.escape("adata.uns['dpst_penalty'] is missing")):
        dpst.DPVAE(adata, graph_key="dpst_penalty")
    dpst.pp.penalty_graph(adata)
    subset = adata[: adata.n_obs // 2].copy()
    with pytest.raises(ValueError, match=r"was built on \d+ spots"):
        dpst.DPVAE(subset, graph_key="dpst_penalty")
    adata.obsm["shifted"] = adata.obsm["spatial"] * 2.0  # other coordinates than the graph's
    with pytest.raises(ValueError, match="distances are not those of the model's coordinates"):
        dpst.DPVAE(adata, graph_key="dpst_penalty", spatial_key="shifted", coordinate_unit="um")


def test_progress_in_a_log_file_is_a_few_plain_lines(section, capsys):
    model = dpst.DPVAE(section, alpha=0.0, seed=0)
    model.train(max_epochs=40, kl_warmup_epochs=10, device="cpu")  # progress_bar on, stderr is not a terminal
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("epoch 40/40: loss ")
    assert "\r" not in "".join(lines) and "penalty" not in "".join(lines)  # no penalty at alpha 0: no 'nan'
    assert np.isnan(model.lam)  # never fitted at alpha 0
    penalized = dpst.DPVAE(section, alpha=100.0, seed=0)
    penalized.train(max_epochs=20, kl_warmup_epochs=10, device="cpu")
    assert ", penalty " in capsys.readouterr().err and np.isfinite(penalized.lam)


def test_training_that_ends_inside_the_kl_warmup_warns(section):
    with pytest.warns(UserWarning, match=r"max_epochs=50 ends before the KL warm-up \(kl_warmup_epochs=400\)"):
        dpst.DPVAE(section, alpha=0.0).train(max_epochs=50, progress_bar=False, device="cpu")
