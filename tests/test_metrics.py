"""Metrics against direct computations on patterns with known answers."""

import numpy as np
import pytest

from dpst.graph import neighbor_graph, spatial_graph
from dpst.metrics import distortion, local_metric_ellipses, optimal_lam, spatial_autocorrelation
from dpst.sim import grid_to_um, visium_grid


@pytest.fixture(scope="module")
def grid():
    rows, cols = visium_grid(20, 40)
    return grid_to_um(rows, cols)


def hex_weights(coords: np.ndarray) -> np.ndarray:
    """Row-normalized weights of the hexagon neighbours (100 um apart), built directly."""
    d = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    w = ((d > 0) & (d < 110)).astype(float)
    return w / w.sum(1, keepdims=True)


def morans_i(x, w):
    z = x - x.mean()
    return len(x) / w.sum() * (z @ w @ z) / (z @ z)


def gearys_c(x, w):
    z = x - x.mean()
    diff = (x[:, None] - x[None]) ** 2
    return (len(x) - 1) / (2 * w.sum()) * (w * diff).sum() / (z @ z)


def test_autocorrelation_matches_the_formulas(grid):
    rng = np.random.default_rng(0)
    x, y = grid[:, 0], grid[:, 1]
    patterns = np.stack(
        [
            x / x.max(),  # smooth gradient: I near 1
            np.sin(x / 150.0) + np.cos(y / 200.0),  # waves
            (np.round(y / 86.6) % 2) * 2 - 1.0,  # alternating rows: I negative
            rng.normal(size=len(x)),  # noise: I near 0
        ],
        axis=1,
    )
    got = spatial_autocorrelation(patterns, neighbor_graph(grid, "grid").connectivities)  # squidpy's hexagon
    w = hex_weights(grid)
    expected_i = [morans_i(p, w) for p in patterns.T]
    expected_c = [gearys_c(p, w) for p in patterns.T]
    np.testing.assert_allclose(got["moran_I"], expected_i, rtol=1e-6)
    np.testing.assert_allclose(got["geary_C"], expected_c, rtol=1e-6)
    assert got["moran_I"].iloc[0] > 0.9 and got["moran_I"].iloc[2] < -0.2
    assert abs(got["moran_I"].iloc[3]) < 0.1


def test_distortion_of_an_exact_scaled_isometry(grid):
    graph = spatial_graph(grid, "knn", n_neighbors=18)
    latent = np.concatenate([0.02 * grid, np.zeros((len(grid), 3))], axis=1)
    out = distortion(latent, graph)
    assert out["lam"] == pytest.approx(0.02)
    assert out["penalty"] == pytest.approx(0, abs=1e-12)
    assert out["L_0.05"] == pytest.approx(1.0) and out["L_0.1"] == pytest.approx(1.0)


def test_distortion_quantile_ratio(grid):
    graph = spatial_graph(grid, "knn", n_neighbors=18)
    stretched = grid * np.array([1.0, 3.0])  # y stretched 3x: ratios between 1 and 3
    out = distortion(stretched, graph, eps=(0.0,))
    r = np.linalg.norm(stretched[graph.edges[:, 0]] - stretched[graph.edges[:, 1]], axis=1) / graph.distances
    assert out["L_0"] == pytest.approx(r.max() / r.min())
    assert 2.5 < out["L_0"] <= 3.0 + 1e-9


def test_optimal_lam_minimizes_the_penalty():
    rng = np.random.default_rng(1)
    ds, w = rng.uniform(50, 200, 500), rng.uniform(0.1, 1, 500)
    dz = ds * rng.lognormal(0, 0.3, 500) * 0.01
    best = optimal_lam(dz, ds, w)
    grid_lams = np.linspace(0.5 * best, 1.5 * best, 2001)
    losses = [(w * np.abs(dz - lam * ds)).sum() for lam in grid_lams]
    assert best == pytest.approx(grid_lams[int(np.argmin(losses))], rel=1e-3)


def test_ellipses_are_equal_circles_for_an_isometry_and_align_with_a_stretch(grid):
    rotation = np.array([[0.6, -0.8], [0.8, 0.6]])
    isometry = local_metric_ellipses(np.concatenate([grid @ rotation * 0.5, np.zeros((len(grid), 2))], 1), grid)
    assert isometry["major"].isna().sum() <= 2  # corner spots with fewer than 3 neighbours
    isometry = isometry.dropna()
    np.testing.assert_allclose(isometry[["major", "minor"]].to_numpy(), 0.5, rtol=1e-9)
    np.testing.assert_allclose(isometry["axis_ratio"], 1.0, rtol=1e-9)
    stretch = local_metric_ellipses(grid * np.array([1.0, 4.0]), grid).dropna()
    np.testing.assert_allclose(stretch["axis_ratio"], 4.0, rtol=1e-9)
    assert np.allclose(np.abs(stretch["angle"]), 90.0)  # the major axis along y


def test_optimal_lam_is_the_lower_weighted_median_on_ties_and_exact_halves():
    ds = np.array([100.0, 100.0, 200.0, 100.0, 173.2])
    dz = np.array([1.0, 2.0, 4.0, 2.0, 3.464])  # ratios 0.01, 0.02, 0.02, 0.02, 0.02 (tied)
    w = np.ones(5)
    ratio, mass = dz / ds, w * ds
    order = np.argsort(ratio, kind="stable")
    # the smallest ratio whose cumulative mass reaches half the total, summed by hand
    cumulative, expected = 0.0, None
    for i in order:
        cumulative += mass[i]
        if cumulative >= 0.5 * mass.sum():
            expected = ratio[i]
            break
    assert optimal_lam(dz, ds, w) == expected == pytest.approx(0.02)
    # exactly half the mass on each side: the lower ratio (numpy's inverted_cdf), not a midpoint
    assert optimal_lam(np.array([1.0, 3.0]), np.array([100.0, 100.0]), np.ones(2)) == 0.01
    # zero weights carry no mass
    assert optimal_lam(np.array([1.0, 3.0, 5.0]), np.full(3, 100.0), np.array([0.0, 0.0, 1.0])) == 0.05
