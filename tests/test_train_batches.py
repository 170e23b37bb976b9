"""Spatially tiled minibatches: every spot once per epoch, and the batch penalty is unbiased.

The estimand: for fixed latent codes z, the full penalty
``sum_e w_e |d_z(e) - lam d_s(e)| / D`` with ``D`` the full objective's normalizer
(``sum w`` for ``pairs``, ``N^2 / 2`` for ``n2``). A step drawn uniformly from an
epoch must estimate it without bias; epochs (random tile offsets) are independent,
so the test compares the mean over many epochs of the per-epoch mean batch
penalty with the full value, within 4 standard errors of that mean.
"""

import numpy as np
import pytest
import torch

import dpst
from dpst.graph import spatial_graph
from dpst.module import DistortionPenalty, pair_distances
from dpst.train import LONG_EDGE_INCLUSION, NARROW_TILE_QUANTILE, _own_tile_sides, _PairSampler

N_EPOCHS = 1500
KIND_PARAMS = {"knn": {"n_neighbors": 6}, "radius": {"radius": 2.5}, "gaussian": {"sigma": 0.9}}


def _setup(coords, kind, normalization, seed=0, tiles="wide"):
    graph = spatial_graph(coords, kind, **KIND_PARAMS[kind])
    sampler = _PairSampler(graph, normalization, torch.device("cpu"), coords, tiles=tiles)
    z = torch.as_tensor(np.random.default_rng(seed).normal(size=(len(coords), 4)))
    penalty = DistortionPenalty(lam=0.4, learn_lam=False).double()
    edges, ds, w, denominator, _ = sampler.full_args()  # one lam: no pair groups
    full = float(penalty(pair_distances(z, edges), ds.double(), w.double(), denominator))
    return sampler, z, penalty, full


def _epoch_means(sampler, z, penalty, batch_size, n_epochs, rng, use_weights=True):
    means = []
    for _ in range(n_epochs):
        values, batches = [], sampler.epoch(rng, batch_size)
        for b in batches:
            # unweighted: keep the factor K (batches per epoch), drop 1 / p_e
            w = b.weights.double() if use_weights else torch.full_like(b.ds, len(batches), dtype=torch.float64)
            values.append(float(penalty(pair_distances(z[b.spots], b.edges), b.ds.double(), w, sampler.denominator)))
        means.append(np.mean(values))
    return np.asarray(means)


@pytest.fixture(scope="module")
def scattered():
    return np.random.default_rng(1).uniform(0, 30, size=(600, 2))


@pytest.mark.parametrize("tiles", ["wide", "narrow"])
@pytest.mark.parametrize("normalization", ["pairs", "n2"])
@pytest.mark.parametrize("kind", list(KIND_PARAMS))
def test_tiled_batch_penalty_is_unbiased(scattered, kind, normalization, tiles):
    sampler, z, penalty, full = _setup(scattered, kind, normalization, tiles=tiles)
    means = _epoch_means(sampler, z, penalty, 64, N_EPOCHS, np.random.default_rng(2))
    se = means.std(ddof=1) / np.sqrt(len(means))
    assert se < 0.01 * full  # the test has the power to see a 4% bias
    assert abs(means.mean() - full) < 4 * se, (means.mean(), full, se)


def test_the_test_detects_the_bias_of_unweighted_edges(scattered):
    """Without the 1 / p_e weights, edges crossing tiles are lost: the same test fails."""
    sampler, z, penalty, full = _setup(scattered, "knn", "pairs")
    means = _epoch_means(sampler, z, penalty, 64, 200, np.random.default_rng(2), use_weights=False)
    se = means.std(ddof=1) / np.sqrt(len(means))
    assert full - means.mean() > 10 * se


def test_long_edges_are_counted_once_with_their_far_spot_encoded():
    """An isolated spot's kNN edges are too long for the tiles: they go to their first spot's batch."""
    rng = np.random.default_rng(4)
    coords = np.concatenate([rng.uniform(0, 30, size=(400, 2)), [[200.0, 200.0]]])
    sampler, z, penalty, full = _setup(coords, "knn", "pairs")
    assert sampler.long.sum() >= KIND_PARAMS["knn"]["n_neighbors"]
    n_extra = 0
    for b in sampler.epoch(np.random.default_rng(0), 64):
        n_extra += len(b.spots) - b.n_elbo
        assert b.edges.max() < len(b.spots)
    assert n_extra >= 1
    means = _epoch_means(sampler, z, penalty, 64, 800, np.random.default_rng(5))
    se = means.std(ddof=1) / np.sqrt(len(means))
    assert abs(means.mean() - full) < 4 * se, (means.mean(), full, se)


def test_an_edges_own_tile_side_puts_it_inside_one_tile_with_the_long_edge_chance():
    # by hand: a diagonal pair (d, d) needs (1 - d/t)^2 = 1/4, t = 2d; an axis pair (d, 0) needs t = 4d/3
    np.testing.assert_allclose(_own_tile_sides(np.array([[3.0, 3.0], [3.0, 0.0], [0.0, 3.0]])), [6.0, 4.0, 4.0])
    extent = np.random.default_rng(0).uniform(0, 5, size=(50, 2))
    t = _own_tile_sides(extent)
    np.testing.assert_allclose(np.prod(1.0 - extent / t[:, None], axis=1), LONG_EDGE_INCLUSION)


@pytest.mark.parametrize("lattice", [False, True], ids=["scattered", "lattice"])
@pytest.mark.parametrize("kind", list(KIND_PARAMS))
def test_narrow_tiles_leave_a_fixed_share_of_edges_long(scattered, kind, lattice):
    # on a lattice many edges tie at the quantile: they must not be rounded into the long ones
    coords = np.stack(np.meshgrid(np.arange(25.0), np.arange(24.0)), axis=-1).reshape(-1, 2) if lattice else scattered
    graph = spatial_graph(coords, kind, **KIND_PARAMS[kind])
    sampler = _PairSampler(graph, "pairs", torch.device("cpu"), coords, tiles="narrow")
    wide = _PairSampler(graph, "pairs", torch.device("cpu"), coords)
    assert sampler.tile < wide.tile
    assert sampler.long.mean() <= 1 - NARROW_TILE_QUANTILE + 1 / graph.n_edges
    if not lattice:  # without ties the share is the quantile's
        assert sampler.long.mean() > 0.5 * (1 - NARROW_TILE_QUANTILE)
    inclusion = np.prod(1.0 - np.abs(coords[graph.edges[:, 1]] - coords[graph.edges[:, 0]]) / sampler.tile, axis=1)
    assert inclusion[~sampler.long].min() >= LONG_EDGE_INCLUSION - 1e-12


def test_every_spot_is_an_elbo_spot_once_per_epoch(scattered):
    graph = spatial_graph(scattered, "knn", n_neighbors=6)
    sampler = _PairSampler(graph, "pairs", torch.device("cpu"), scattered)
    for batch_size in (2, 37, 128, 600, 5000):
        batches = sampler.epoch(np.random.default_rng(batch_size), batch_size)
        elbo = np.concatenate([b.spots[: b.n_elbo] for b in batches])
        np.testing.assert_array_equal(np.sort(elbo), np.arange(len(scattered)))
        assert all(b.n_elbo >= 2 for b in batches)
        if batch_size <= len(scattered):
            # whole tiles make batches uneven, but their number follows N / batch_size
            assert len(batches) <= round(len(scattered) / batch_size)
        # the counted edges: all of G's edges inside a tile, a large share of G
        counted = sum(len(b.edges) for b in batches)
        assert counted > 0.5 * graph.n_edges


def test_epochs_are_seeded(scattered):
    graph = spatial_graph(scattered, "knn", n_neighbors=6)
    sampler = _PairSampler(graph, "pairs", torch.device("cpu"), scattered)
    a = sampler.epoch(np.random.default_rng(9), 50)
    b = sampler.epoch(np.random.default_rng(9), 50)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.spots, y.spots)
        assert torch.equal(x.edges, y.edges)
        assert torch.equal(x.weights, y.weights)


@pytest.mark.parametrize("cls", [dpst.DPVAE, dpst.DPSCVI])
def test_minibatch_training_with_the_penalty_is_reproducible(cls):
    adata = dpst.pp.preprocess(dpst.sim.simulate_section(n_spots=400, n_genes=120, seed=3), n_top_genes=80)
    runs = []
    for tiles in ("wide", "wide", "narrow"):
        model = cls(adata, alpha=100.0, seed=1)
        model.train(max_epochs=3, batch_size=64, progress_bar=False, tiles=tiles)
        runs.append((model.history, model.get_latent_representation()))
    assert runs[0][0].equals(runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert np.isfinite(runs[0][0]["penalty"]).all()
    assert np.isfinite(runs[2][0]["penalty"]).all()
    assert not np.array_equal(runs[0][1], runs[2][1])  # the tile width reaches the sampler


def test_an_unknown_tile_width_is_one_clear_error():
    adata = dpst.pp.preprocess(dpst.sim.simulate_section(n_spots=100, n_genes=60, seed=3), n_top_genes=40)
    with pytest.raises(ValueError, match=r"tiles must be one of \('wide', 'narrow'\), got 'medium'"):
        dpst.DPVAE(adata, seed=0).train(max_epochs=1, batch_size=32, tiles="medium", progress_bar=False)
