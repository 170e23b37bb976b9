"""The distortion penalty against a brute-force dense float64 reference."""

import numpy as np
import pytest
import torch

from dpst.graph import spatial_graph
from dpst.module import DistortionPenalty, pair_distances

KIND_PARAMS = {
    "knn": {"n_neighbors": 5},
    "radius": {"radius": 1.5},
    "gaussian": {"sigma": 0.6},
    "all": {},
}


def dense_weights(s: np.ndarray, kind: str, params: dict) -> np.ndarray:
    """G as a dense N x N matrix, straight from the definitions in docs/method.md."""
    d = np.linalg.norm(s[:, None] - s[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    if kind == "knn":
        k = params["n_neighbors"]
        nearest = np.argsort(d, axis=1)[:, :k]
        g = np.zeros_like(d)
        np.put_along_axis(g, nearest, 1.0, axis=1)
        return np.maximum(g, g.T)
    if kind == "radius":
        return (d <= params["radius"]).astype(float)
    if kind == "gaussian":
        sigma = params["sigma"]
        return np.exp(-(d**2) / (2 * sigma**2)) * (d <= 3 * sigma)
    return np.isfinite(d).astype(float)


def reference_penalty(z, s, g, lam, normalization):
    dz = np.linalg.norm(z[:, None] - z[None], axis=-1)
    ds = np.linalg.norm(s[:, None] - s[None], axis=-1)
    total = np.abs(g * dz - lam * g * ds).sum()
    return total / (g.sum() if normalization == "pairs" else len(s) ** 2)


def penalty_value(z, s, kind, params, lam, normalization):
    graph = spatial_graph(s, kind, **params)
    edges = None if graph.is_complete else torch.as_tensor(graph.edges)
    dz = pair_distances(torch.as_tensor(z), edges)
    penalty = DistortionPenalty(lam=lam, learn_lam=False).double()
    penalty.log_lam.data = torch.tensor(np.log(lam), dtype=torch.float64)  # no float32 rounding
    ds = torch.as_tensor(graph.distances)
    w = torch.as_tensor(graph.weights)
    return float(penalty(dz, ds, w, graph.denominator(normalization)))


@pytest.fixture
def random_pairs():
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 6, size=(60, 2))
    z = rng.normal(size=(60, 4))
    return z, s


@pytest.mark.parametrize("normalization", ["pairs", "n2"])
@pytest.mark.parametrize("kind", list(KIND_PARAMS))
def test_penalty_matches_dense_reference(random_pairs, kind, normalization):
    z, s = random_pairs
    params = KIND_PARAMS[kind]
    expected = reference_penalty(z, s, dense_weights(s, kind, params), 0.7, normalization)
    got = penalty_value(z, s, kind, params, 0.7, normalization)
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("kind", list(KIND_PARAMS))
def test_penalty_is_zero_for_a_scaled_isometry(random_pairs, kind):
    _, s = random_pairs
    lam = 0.37
    z = np.concatenate([lam * s, np.zeros((len(s), 3))], axis=1)
    assert penalty_value(z, s, kind, KIND_PARAMS[kind], lam, "pairs") == pytest.approx(0, abs=1e-12)


def test_lam_initialization_recovers_the_scale(random_pairs):
    _, s = random_pairs
    graph = spatial_graph(s, "knn", n_neighbors=5)
    z = torch.as_tensor(np.concatenate([2.5 * s, np.zeros((len(s), 2))], axis=1))
    penalty = DistortionPenalty().double()
    dz = pair_distances(z, torch.as_tensor(graph.edges))
    penalty.initialize_lam(dz, torch.as_tensor(graph.distances))
    assert penalty.lam == pytest.approx(2.5)
    assert float(penalty(dz, torch.as_tensor(graph.distances), None, 1.0)) == pytest.approx(0, abs=1e-9)


def test_lam_is_set_once_and_again_after_loading_an_unset_state(random_pairs):
    _, s = random_pairs
    graph = spatial_graph(s, "knn", n_neighbors=5)
    ds = torch.as_tensor(graph.distances)
    dz = pair_distances(torch.as_tensor(2.5 * s), torch.as_tensor(graph.edges))
    penalty = DistortionPenalty().double()
    penalty.initialize_lam(dz, ds)
    penalty.initialize_lam(3 * dz, ds)  # already set: kept
    assert penalty.lam == pytest.approx(2.5)
    penalty.load_state_dict(DistortionPenalty().double().state_dict())  # an unset lam of 1
    assert penalty.lam == pytest.approx(1.0)
    penalty.initialize_lam(3 * dz, ds)
    assert penalty.lam == pytest.approx(7.5)
    restored = DistortionPenalty().double()
    restored.load_state_dict(penalty.state_dict())  # a set lam stays set
    restored.initialize_lam(dz, ds)
    assert restored.lam == pytest.approx(7.5)


@pytest.mark.parametrize("kind", list(KIND_PARAMS))
def test_penalty_is_invariant_to_permuting_spots(random_pairs, kind):
    z, s = random_pairs
    perm = np.random.default_rng(3).permutation(len(s))
    params = KIND_PARAMS[kind]
    a = penalty_value(z, s, kind, params, 1.3, "pairs")
    b = penalty_value(z[perm], s[perm], kind, params, 1.3, "pairs")
    assert a == pytest.approx(b, rel=1e-12)


def test_penalty_gradients(random_pairs):
    z, s = random_pairs
    graph = spatial_graph(s, "gaussian", sigma=0.6)
    edges, ds = torch.as_tensor(graph.edges), torch.as_tensor(graph.distances)
    w = torch.as_tensor(graph.weights)
    penalty = DistortionPenalty(lam=0.8).double()

    def f(z, log_lam):
        penalty.log_lam.data = log_lam
        return penalty(pair_distances(z, edges), ds, w, graph.denominator("pairs"))

    z_t = torch.tensor(z[:, :2], requires_grad=True)
    log_lam = torch.tensor(np.log(0.8), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: f(a, log_lam.detach()), (z_t,))
    # d/dlog_lam through the module's own parameter
    penalty.log_lam.data = log_lam.detach().clone()
    out = penalty(pair_distances(z_t.detach(), edges), ds, w, graph.denominator("pairs"))
    out.backward()
    gap = pair_distances(z_t.detach(), edges) - 0.8 * ds
    expected = (w * -torch.sign(gap) * 0.8 * ds).sum() / graph.denominator("pairs")
    assert float(penalty.log_lam.grad) == pytest.approx(float(expected), rel=1e-10)


def test_a_lam_per_group_is_set_from_its_own_pairs_and_scales_only_them():
    penalty = DistortionPenalty(n_groups=2)
    ds = torch.tensor([1.0, 2.0, 4.0, 1.0, 3.0])
    groups = torch.tensor([0, 0, 0, 1, 1])
    dz = torch.tensor([2.0, 4.0, 8.0, 0.5, 1.5])  # group 0 at scale 2, group 1 at scale 0.5
    penalty.initialize_lam(dz[:3], ds[:3], groups[:3])  # a batch with group 0's pairs only
    np.testing.assert_allclose(penalty.lams, [2.0, 1.0])  # group 1 waits for its pairs
    penalty.initialize_lam(dz, ds, groups)
    np.testing.assert_allclose(penalty.lams, [2.0, 0.5])  # group 0 is not set again
    assert penalty.lam == pytest.approx(1.0)  # the geometric mean
    assert float(penalty(dz, ds, None, 5.0, groups)) == pytest.approx(0.0, abs=1e-6)
    # hand-computed: |3 - 2 * 1| + |1 - 0.5 * 1| over 2 pairs
    value = penalty(torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0]), None, 2.0, torch.tensor([0, 1]))
    assert float(value) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="2 lam groups: pass each pair's group"):
        penalty(dz, ds, None, 5.0)
    with pytest.raises(ValueError, match="n_groups must be None or a positive integer"):
        DistortionPenalty(n_groups=0)
