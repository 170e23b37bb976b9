"""Figures 4-6: files written, one common ellipse scale, NaN rows skipped, orientation, clear errors."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dpst import pl
from dpst.metrics import local_metric_ellipses

SPACING = 100.0  # micrometres between neighbouring Visium spots
ALPHA_ON = 10.0


def make_runs(sections=("A2", "P1"), alphas=(0.0, ALPHA_ON), seeds=(0, 1, 2)) -> pd.DataFrame:
    """Synthetic runs table with known values: plotting test data, not model results."""
    rows = []
    for i, section in enumerate(sections):
        for j, model in enumerate(("vae", "scvi")):
            for alpha in alphas:
                for seed in seeds:
                    shift = 0.1 * i + 0.05 * j + 0.02 * np.log1p(alpha) + 0.01 * seed
                    rows.append({"section": section, "model": model, "alpha": alpha, "seed": seed,
                                 "moran_I": 0.4 + shift, "geary_C": 0.6 - shift,
                                 "mse_heldout": 0.2 + shift, "mse_all": 0.15 + shift})
    return pd.DataFrame(rows)


def hex_grid(n_cols: int = 20, n_rows: int = 18) -> np.ndarray:
    """Spot centres of a hexagonal grid (odd rows shifted by half a spacing), micrometres."""
    rows, cols = np.divmod(np.arange(n_cols * n_rows), n_cols)
    return np.column_stack([(cols + 0.5 * (rows % 2)) * SPACING, rows * SPACING * np.sqrt(3) / 2])


@pytest.fixture(scope="module")
def panels():
    """Ellipses of a sheared latent (anisotropic) and a scaled copy of the tissue (isotropic)."""
    coords = hex_grid()
    sheared = coords @ np.array([[2.0, 0.0], [1.0, 1.0]]) * 0.01  # x' = 2x + y, y' = y
    scaled = coords * 0.004
    return {"scVI": local_metric_ellipses(sheared, coords),
            "scVI + distance preserving": local_metric_ellipses(scaled, coords)}


@pytest.fixture(scope="module")
def sweep():
    """Runs over an alpha grid that includes 0."""
    return make_runs(alphas=(0.0, 1.0, 10.0, 100.0))


def assert_files(paths, min_png_bytes=10_000):
    suffixes = sorted(p.suffix for p in paths)
    assert suffixes == [".pdf", ".png"]
    for path in paths:
        assert path.exists() and path.stat().st_size > (min_png_bytes if path.suffix == ".png" else 1_000)
        assert path.read_bytes()[:4] in (b"\x89PNG", b"%PDF")


def test_ellipse_scale_is_common(panels):
    frames = list(panels.values())
    sizes = pd.concat([df["size"] for df in frames]).dropna()
    assert pl.spot_spacing(frames[0]) == pytest.approx(SPACING)
    assert pl.ellipse_scale(frames) == pytest.approx(0.35 * SPACING / sizes.median())
    assert pl.ellipse_scale(frames, fraction=0.5) == pytest.approx(0.5 * SPACING / sizes.median())


def test_figure4_draws_every_panel_at_one_scale(monkeypatch, panels, tmp_path):
    used = []

    def recording(ax, df, scale, **kwargs):
        used.append(scale)
        return original(ax, df, scale, **kwargs)

    original = pl.ellipses
    monkeypatch.setattr(pl, "ellipses", recording)
    fig = pl.figure4(panels, title="test")
    assert len(used) == 2 and used[0] == used[1] == pytest.approx(pl.ellipse_scale(panels.values()))
    used.clear()
    pl.figure4(panels, common_scale=False)
    assert used[0] != pytest.approx(used[1])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any("median axis ratio 1.00" in t for t in titles)  # the isotropic panel
    assert_files(pl.save_figure(fig, tmp_path / "figure4"))


def test_ellipses_skips_nan_rows_and_orients_like_an_image(panels):
    df = panels["scVI"].copy()
    df.loc[:9, "major"] = np.nan
    fig = Figure()
    ax = fig.add_subplot()
    collection = pl.ellipses(ax, df, scale=1000.0)
    n_valid = len(df.dropna(subset=["x", "y", "major", "minor", "angle"]))
    assert len(collection.get_offsets()) == n_valid < len(df)
    assert ax.yaxis_inverted() and ax.get_aspect() == 1.0
    pl.ellipses(ax, df, scale=1000.0, color="red")  # a second layer keeps the y axis inverted
    assert ax.yaxis_inverted()


def test_ellipse_angle_in_data_coordinates():
    """A 45-degree ellipse points along +x, +y in data, i.e. right and down on an inverted-y image."""
    df = pd.DataFrame({"x": [0.0], "y": [0.0], "major": [1.0], "minor": [0.2], "angle": [45.0],
                       "axis_ratio": [5.0], "size": [np.sqrt(0.2)]})
    fig = Figure(figsize=(3, 3), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    pl.ellipses(ax, df, scale=2.0, color="black", edgecolors="none")
    ax.set_xlim(-3, 3)
    ax.set_ylim(3, -3)
    ax.axis("off")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rows, cols = np.nonzero(np.asarray(canvas.buffer_rgba())[..., 0] < 128)
    values, vectors = np.linalg.eigh(np.cov(np.vstack([cols, rows]).astype(float)))
    major = vectors[:, 1] * np.sign(vectors[0, 1])
    np.testing.assert_allclose(major, [np.sqrt(0.5), np.sqrt(0.5)], atol=0.02)  # screen rows grow downward
    assert np.sqrt(values[1] / values[0]) == pytest.approx(5.0, rel=0.05)


def test_figure5_files_and_errors(tmp_path):
    runs = make_runs()
    fig = pl.figure5(runs, ALPHA_ON)
    bars = [p for p in fig.axes[0].patches]
    assert len(bars) == 2 * 2 * 2  # 2 sections x (2 models x off/on)
    heights = sorted(round(b.get_height(), 12) for b in bars)
    expected = runs.groupby(["section", "model", "alpha"])["mse_heldout"].mean().round(12).sort_values()
    np.testing.assert_allclose(heights, expected.to_numpy())
    assert_files(pl.save_figure(fig, [tmp_path / "f5.png", tmp_path / "f5.pdf"]))
    with pytest.raises(ValueError, match="no runs with alpha = 10"):
        pl.figure5(runs[runs["alpha"] == 0], ALPHA_ON)
    with pytest.raises(ValueError, match="lacks column.*mse_all"):
        pl.figure5(runs.drop(columns="mse_all"), ALPHA_ON)


def test_figure6_symlog_and_files(sweep, tmp_path):
    fig = pl.figure6(sweep)
    data_axes = [ax for ax in fig.axes if ax.get_xscale() == "symlog"]
    assert len(data_axes) == 3
    assert all(ax.xaxis.get_transform().linthresh == 1.0 for ax in data_axes)
    # one line per (model, section) in each panel, starting at alpha = 0
    lines = data_axes[0].get_lines()
    assert len(lines) == 2 * 2 and all(line.get_xdata()[0] == 0.0 for line in lines)
    assert_files(pl.save_figure(fig, tmp_path / "figure6"))
    single = pl.figure6(sweep, sections=["P1"])
    assert len([ax for ax in single.axes if ax.get_xscale() == "symlog"][0].get_lines()) == 2
    with pytest.raises(ValueError, match="lacks column"):
        pl.figure6(sweep.drop(columns="moran_I"))
