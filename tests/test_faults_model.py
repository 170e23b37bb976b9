"""Bad inputs to the models, graphs and metrics fail loudly, with a message that names them."""

import json
import os
import pickle
import re

import numpy as np
import pytest
import torch

import dpst
from dpst.graph import SpatialGraph, spatial_graph
from dpst.metrics import distortion, evaluate_model
from dpst.model import ModelFileError
from dpst.module import DistortionPenalty
from dpst.train import split_spots

N_SPOTS = 60
QUICK = {"max_epochs": 3, "kl_warmup_epochs": 1, "progress_bar": False, "device": "cpu"}


@pytest.fixture(scope="module")
def tiny():
    adata = dpst.sim.simulate_section(n_spots=N_SPOTS, n_genes=40, seed=1)
    return dpst.pp.preprocess(adata, min_counts=10, min_cells=3, n_top_genes=30)


@pytest.fixture(scope="module")
def trained(tiny):
    return dpst.DPVAE(tiny, alpha=10.0, n_neighbors=6, seed=0).train(**QUICK)


@pytest.fixture
def saved(trained, tmp_path):
    trained.save(tmp_path / "model")
    return tmp_path / "model"


def message(text: str) -> str:
    """``text`` as a regular expression matching it exactly, from the start."""
    return "^" + re.escape(text) + "$"


# ------------------------------------------------------------------ save/load
class CodeRunner:
    """Unpickling this runs a shell command: what a hostile model.pt can hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_load_refuses_a_model_pt_that_would_run_code(saved, tiny, tmp_path):
    marker = tmp_path / "code_ran"
    pickle.loads(pickle.dumps(CodeRunner(marker)))  # the payload is live ...
    assert marker.exists()
    marker.unlink()
    torch.save({"module": CodeRunner(marker)}, saved / "model.pt")
    with pytest.raises(
        ModelFileError,
        match=message(
            f"{saved / 'model.pt'}: refused, it holds objects other than tensors "
            "(Trying to load unsupported GLOBAL posix.system whose module posix is blocked.)"
        ),
    ):
        dpst.DPVAE.load(saved, tiny)
    assert not marker.exists()  # ... and load did not run it


def test_load_names_a_truncated_model_pt(saved, tiny):
    weights = (saved / "model.pt").read_bytes()
    (saved / "model.pt").write_bytes(weights[: len(weights) // 2])
    # the reason in brackets is torch's, and depends on where the file ends
    with pytest.raises(ModelFileError, match="^" + re.escape(f"{saved / 'model.pt'}: corrupt or truncated (")):
        dpst.DPVAE.load(saved, tiny)
    (saved / "model.pt").write_bytes(b"")
    empty = f"{saved / 'model.pt'}: corrupt or truncated (EOFError)"
    with pytest.raises(ModelFileError, match=message(empty)):
        dpst.DPVAE.load(saved, tiny)


def test_load_names_a_model_json_that_is_not_json(saved, tiny):
    (saved / "model.json").write_text("{'class': 'DPVAE'")
    with pytest.raises(
        ModelFileError,
        match=message(
            f"{saved / 'model.json'}: not valid JSON "
            "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
        ),
    ):
        dpst.DPVAE.load(saved, tiny)


def test_load_refuses_a_folder_saved_in_the_old_pickled_format(saved, tiny):
    meta = json.loads((saved / "model.json").read_text())
    del meta["format"], meta["obs_names"]
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(
        ModelFileError,
        match=message(
            f"{saved / 'model.json'}: saved by an older dpst, whose model.pt cannot be loaded safely; "
            "train and save the model again"
        ),
    ):
        dpst.DPVAE.load(saved, tiny)


def test_load_onto_reordered_spots_keeps_the_held_out_spots_by_name(trained, saved, tiny):
    order = np.random.default_rng(0).permutation(tiny.n_obs)
    shuffled = tiny[order].copy()
    loaded = dpst.DPVAE.load(saved, shuffled, device="cpu")
    for name in ("validation_indices", "train_indices"):
        original = set(tiny.obs_names[getattr(trained, name)])
        assert set(shuffled.obs_names[getattr(loaded, name)]) == original
    np.testing.assert_allclose(
        loaded.get_latent_representation(), trained.get_latent_representation()[order], rtol=1e-5
    )


def test_load_refuses_different_spots_and_counts_them(saved, tiny):
    fewer = tiny[5:].copy()
    with pytest.raises(
        ValueError,
        match=message(
            f"adata's spots differ from the {N_SPOTS} the model in {saved} was saved with: "
            "5 of those are missing from adata and 0 of adata's are new"
        ),
    ):
        dpst.DPVAE.load(saved, fewer)
    renamed = tiny.copy()
    renamed.obs_names = [f"other{i}" if i < 3 else name for i, name in enumerate(tiny.obs_names)]
    with pytest.raises(ValueError, match=r"3 of those are missing from adata and 3 of adata's are new$"):
        dpst.DPVAE.load(saved, renamed)


def test_save_and_load_round_trip_with_tensors_only(trained, saved, tiny):
    state = torch.load(saved / "model.pt", weights_only=True)  # plain tensors: loads safely
    assert state["validation_indices"].dtype == torch.int64
    loaded = dpst.DPVAE.load(saved, tiny, device="cpu")
    np.testing.assert_array_equal(loaded.validation_indices, trained.validation_indices)
    assert loaded.is_trained and len(loaded.history) == QUICK["max_epochs"]


# ----------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"n_latent": 0}, ValueError, "n_latent must be >= 1, got 0"),
        ({"n_hidden": 0}, ValueError, "n_hidden must be >= 1, got 0"),
        ({"n_layers": 0}, ValueError, "n_layers must be >= 1, got 0"),
        ({"n_latent": 2.5}, TypeError, "n_latent must be an integer, got 2.5"),
        ({"dropout_rate": 1}, ValueError, "dropout_rate must be finite and >= 0 and < 1, got 1"),
        ({"dropout_rate": -0.1}, ValueError, "dropout_rate must be finite and >= 0 and < 1, got -0.1"),
        ({"alpha": "100"}, TypeError, "alpha must be a number, got '100' (str)"),
        ({"alpha": -1.0}, ValueError, "alpha must be finite and >= 0, got -1"),
        ({"alpha": float("inf")}, ValueError, "alpha must be finite and >= 0, got inf"),
        ({"penalty_warmup_epochs": -1}, ValueError, "penalty_warmup_epochs must be >= 0, got -1"),
        ({"lam": 0.0}, ValueError, "lam must be finite and > 0, got 0"),
        ({"seed": "1"}, TypeError, "seed must be an integer, got '1' (str)"),
        ({"n_neighbors": 0}, ValueError, f"n_neighbors must be in [1, N-1] for N={N_SPOTS} spots, got 0"),
        ({"n_neighbors": N_SPOTS}, ValueError, f"n_neighbors must be in [1, N-1] for N={N_SPOTS} spots, got {N_SPOTS}"),
        ({"n_neighbors": 6.0}, TypeError, "n_neighbors must be an integer, got 6.0"),
        ({"graph": "radius", "radius": 0.0}, ValueError, "radius must be finite and > 0, got 0"),
        ({"graph": "gaussian", "sigma": -1.0}, ValueError, "sigma must be finite and > 0, got -1"),
        (
            {"graph": "radius", "radius": 50.0},
            ValueError,
            f"the 'radius' graph with {{'radius': 50.0}} has no pairs for these {N_SPOTS} spots "
            "(median nearest-neighbour spacing 100): raise radius/sigma or use graph='knn'",
        ),
    ],
)
def test_nonsense_model_parameters_are_refused(tiny, kwargs, error, text):
    with pytest.raises(error, match=message(text)):
        dpst.DPVAE(tiny, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"kl_warmup_epochs": -1}, ValueError, "kl_warmup_epochs must be >= 0, got -1"),
        ({"lr": 0}, ValueError, "lr must be finite and > 0, got 0"),
        ({"lr": -1e-3}, ValueError, "lr must be finite and > 0, got -0.001"),
        ({"lr": float("nan")}, ValueError, "lr must be finite and > 0, got nan"),
        ({"lr": "1e-3"}, TypeError, "lr must be a number, got '1e-3' (str)"),
        ({"batch_size": 1}, ValueError, "batch_size (None = full batch) must be >= 2, got 1"),
        ({"patience": 0}, ValueError, "patience must be >= 1, got 0"),
        ({"max_epochs": 0}, ValueError, "max_epochs must be >= 1, got 0"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction must be finite and >= 0 and < 1, got 1"),
        ({"device": "gpu"}, ValueError, "device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'"),
    ],
)
def test_nonsense_training_parameters_are_refused(tiny, kwargs, error, text):
    model = dpst.DPVAE(tiny, n_neighbors=6)
    with pytest.raises(error, match=message(text)):
        model.train(**{**QUICK, **kwargs})
    assert not model.is_trained


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_clear_line(tiny):
    with pytest.raises(
        RuntimeError, match=message("device 'cuda' requested but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    ):
        dpst.DPVAE(tiny, n_neighbors=6).train(**{**QUICK, "device": "cuda"})


def test_a_divergent_learning_rate_says_to_lower_it(tiny):
    model = dpst.DPVAE(tiny, alpha=10.0, n_neighbors=6)
    with pytest.raises(
        dpst.TrainingDivergedError,
        match=r"^training diverged: .* at epoch \d+ .*; "
        r"lower the learning rate lr=1e\+06 or alpha=10$",
    ):
        model.train(**{**QUICK, "max_epochs": 50, "lr": 1e6})


# ----------------------------------------------------------------------- data
def test_no_genes_is_refused(tiny):
    with pytest.raises(ValueError, match=message("adata has 0 genes (n_vars == 0); the model needs at least one")):
        dpst.DPVAE(tiny[:, :0].copy())


def test_one_spot_is_refused(tiny):
    with pytest.raises(ValueError, match=message("adata has 1 spot(s); the model needs at least 2")):
        dpst.DPSCVI(tiny[:1].copy())


def test_all_zero_input_is_refused(tiny):
    zeros = tiny.copy()
    zeros.X = zeros.X * 0
    zeros.layers["counts"] = zeros.layers["counts"] * 0
    with pytest.raises(ValueError, match=message("adata: the model input (adata.X) is all zeros")):
        dpst.DPVAE(zeros)
    with pytest.raises(ValueError, match=message("adata: the model input (adata.layers['counts']) is all zeros")):
        dpst.DPSCVI(zeros)


def test_nan_coordinates_are_refused(tiny):
    broken = tiny.copy()
    broken.obsm["spatial"] = broken.obsm["spatial"].astype(float)
    broken.obsm["spatial"][[3, 7], 1] = np.nan
    with pytest.raises(
        ValueError,
        match=message(
            f"adata.obsm['spatial'] has NaN or infinite coordinates for 2 of {N_SPOTS} spots "
            f"(first: {tiny.obs_names[3]!r})"
        ),
    ):
        dpst.DPVAE(broken)
    with pytest.raises(
        ValueError, match=message(f"coords of 1 of {N_SPOTS} spots are NaN or infinite (first at row 4)")
    ):
        spatial_graph(np.where(np.arange(N_SPOTS)[:, None] == 4, np.inf, broken.obsm["spatial_um"]))


def test_all_spots_at_one_position_are_refused(tiny):
    stacked = tiny.copy()
    stacked.obsm["spatial"] = np.full((N_SPOTS, 2), 500.0)
    with pytest.raises(
        ValueError,
        match=message(
            f"all {N_SPOTS} spots are at the same position (500, 500): the penalty needs spots at distinct positions"
        ),
    ):
        dpst.DPVAE(stacked, coordinate_unit="um")


def test_spots_sharing_a_position_lose_their_pairs_with_a_warning():
    coords = np.array([[0.0, 0.0], [0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    with pytest.warns(
        UserWarning,
        match=message("spatial_graph: dropped 1 of 10 pairs whose spots share a position (zero spatial distance)"),
    ):
        graph = spatial_graph(coords, "all")
    assert graph.n_edges == 9 and (graph.distances > 0).all()
    assert not graph.is_complete  # the penalty takes the edge list, not pdist's every pair
    with pytest.warns(UserWarning, match="dropped 1 of"):
        assert (spatial_graph(coords, "knn", n_neighbors=2).distances > 0).all()


def test_a_graph_without_pairs_among_the_training_spots_is_refused(tiny):
    # two spots 50 um apart, the rest 1 mm apart: the radius graph has one pair
    seed = next(s for s in range(100) if 0 in split_spots(10, 0.1, s)[1])
    far = tiny[:10].copy()
    far.obsm["spatial"] = np.array([[0.0, 0.0], [50.0, 0.0]] + [[1000.0 * i, 5000.0] for i in range(8)])
    model = dpst.DPVAE(far, graph="radius", radius=60.0, coordinate_unit="um")
    with pytest.raises(
        ValueError,
        match=message(
            "the 'radius' graph has no pairs among the 9 training spots "
            "(each of its 1 pairs touches a held-out spot): "
            "the penalty would be empty"
        ),
    ):
        model.train(**{**QUICK, "seed": seed})


# -------------------------------------------------------------------- metrics
def test_an_untrained_model_has_no_results(tiny):
    model = dpst.DPVAE(tiny, n_neighbors=6)
    with pytest.raises(
        RuntimeError, match=message("evaluate_model: the DPVAE is not trained; call model.train() first")
    ):
        evaluate_model(model)
    with pytest.raises(
        RuntimeError, match=message("DPVAE.get_latent_representation: the model is not trained; call train() first")
    ):
        model.get_latent_representation()
    with pytest.raises(
        RuntimeError, match=message("DPVAE.get_reconstruction: the model is not trained; call train() first")
    ):
        model.get_reconstruction()
    assert np.isfinite(model.get_reconstruction_error())  # the untrained baseline, as in scvi-tools


def test_distortion_refuses_zero_distance_pairs():
    graph = SpatialGraph(np.array([[0, 1], [1, 2]]), np.ones(2), np.array([0.0, 1.0]), 3, "knn")
    with pytest.raises(
        ValueError,
        match=message(
            "the graph has 1 of 2 pairs with zero spatial distance; "
            "build it with dpst.graph.spatial_graph, which drops them"
        ),
    ):
        distortion(np.eye(3), graph)


def test_evaluate_model_warns_for_every_undefined_metric(tiny):
    model = dpst.DPVAE(tiny, alpha=10.0, n_neighbors=6).train(**{**QUICK, "validation_fraction": 0.0})
    with torch.no_grad():  # latent dimension z0 becomes constant over spots
        model.module.encoder.mean.weight[0] = 0.0
    with pytest.warns(UserWarning) as caught:  # noqa: PT030 - every warning is compared below
        metrics, _ = evaluate_model(model)
    warned = {str(w.message) for w in caught if str(w.message).startswith("evaluate_model")}
    assert warned == {
        "evaluate_model: moran_I is nan: latent dimensions z0 are constant over spots",
        "evaluate_model: geary_C is nan: latent dimensions z0 are constant over spots",
        "evaluate_model: mse_heldout is nan: the model has no held-out spots (validation_fraction=0)",
    }
    assert np.isnan(metrics["moran_I"]) and np.isnan(metrics["mse_heldout"])


def test_evaluate_model_refuses_other_spots(trained, tiny):
    with pytest.raises(
        ValueError,
        match=message(
            f"evaluate_model: adata's spots are not the model's {N_SPOTS} spots in the same order; "
            "the metrics use the model's coordinates, graph and held-out spots"
        ),
    ):
        evaluate_model(trained, tiny[::-1].copy())


def test_lam_waits_for_pairs_and_warns_when_latent_codes_coincide():
    penalty = DistortionPenalty()
    penalty.initialize_lam(torch.zeros(0), torch.zeros(0))  # a minibatch without pairs
    assert not bool(penalty.initialized)
    with pytest.warns(
        UserWarning,
        match=message(
            "lam starts at 1: none of the 3 pairs has a positive, finite d_z / d_s (the latent codes coincide)"
        ),
    ):
        penalty.initialize_lam(torch.zeros(3), torch.ones(3))
    assert bool(penalty.initialized)
