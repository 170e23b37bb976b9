"""The study's Figures 4-6 and the library's ellipse plot: files, one ellipse scale, NaN rows skipped, orientation, layout, honest titles, errors."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dpst import pl
from dpst.metrics import local_metric_ellipses
from dpst_study import figures

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
                    rows.append(
                        {
                            "section": section,
                            "model": model,
                            "alpha": alpha,
                            "seed": seed,
                            "moran_I": 0.4 + shift,
                            "geary_C": 0.6 - shift,
                            "mse_heldout": 0.2 + shift,
                            "mse_all": 0.15 + shift,
                        }
                    )
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
    return {
        "scVI": local_metric_ellipses(sheared, coords),
        "scVI + distance preserving": local_metric_ellipses(scaled, coords),
    }


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


def drawn(fig: Figure) -> Figure:
    """Draw ``fig`` once so constrained layout and equal aspect have placed every Axes."""
    FigureCanvasAgg(fig).draw()
    return fig


def data_axes_of(fig: Figure) -> list:
    """The Axes holding data: every Axes but colour bars (which have no title)."""
    return [ax for ax in fig.axes if ax.get_title()]


def assert_within_figure(fig: Figure) -> None:
    """No Axes, title, label or legend is cut off at the figure's edge."""
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    for artist in [*fig.axes, *fig.legends, *fig.texts]:
        box = artist.get_tightbbox(renderer)
        assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1, f"{artist} cut off left/right"
        assert box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1, f"{artist} cut off top/bottom"


def assert_legend_below_axes(fig: Figure) -> None:
    """The legend sits under every panel (not beside or over one), inside the figure."""
    renderer = fig.canvas.get_renderer()
    legend_box = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert legend_box.y1 <= ax.get_tightbbox(renderer).y0, f"legend not below {ax.get_title()!r}"
    assert legend_box.x0 >= fig.bbox.x0 and legend_box.x1 <= fig.bbox.x1


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
    monkeypatch.setattr(figures, "ellipses", recording)
    fig = figures.figure4(panels, title="test")
    assert len(used) == 2 and used[0] == used[1] == pytest.approx(pl.ellipse_scale(panels.values()))
    used.clear()
    figures.figure4(panels, common_scale=False)
    assert used[0] != pytest.approx(used[1])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any("median axis ratio 1.00" in t for t in titles)  # the isotropic panel
    assert_files(pl.save_figure(fig, tmp_path / "figure4"))


@pytest.mark.parametrize("common_scale", [True, False])
def test_figure4_panels_are_boxes_of_one_size(panels, common_scale):
    fig = drawn(figures.figure4(panels, common_scale=common_scale))
    first, second = data_axes_of(fig)
    # the shear panel's ellipses reach further: per-panel limits gave it a larger box
    np.testing.assert_allclose(first.get_position().size, second.get_position().size, rtol=1e-6)
    assert first.get_xlim() == second.get_xlim() and first.get_ylim() == second.get_ylim()
    assert first.yaxis_inverted() and second.get_aspect() == 1.0
    coords = panels["scVI"][["x", "y"]]
    low, high = sorted(first.get_xlim())
    assert low < coords["x"].min() and high > coords["x"].max()
    assert_within_figure(fig)


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
    df = pd.DataFrame(
        {
            "x": [0.0],
            "y": [0.0],
            "major": [1.0],
            "minor": [0.2],
            "angle": [45.0],
            "axis_ratio": [5.0],
            "size": [np.sqrt(0.2)],
        }
    )
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


def figure5_axes(fig: Figure) -> dict[str, object]:
    """Figure 5's Axes by their label, "<column>:<model>"."""
    return {ax.get_label(): ax for ax in fig.axes if ":" in ax.get_label()}


def test_figure5_one_row_per_model_and_files(tmp_path):
    runs = make_runs()
    fig = figures.figure5(runs, ALPHA_ON)
    axes = figure5_axes(fig)
    assert sorted(axes) == sorted(f"{c}:{m}" for c in ("mse_heldout", "mse_all") for m in ("vae", "scvi"))
    for model in ("vae", "scvi"):
        bars = axes[f"mse_heldout:{model}"].patches
        assert len(bars) == 2 * 2  # 2 sections x off/on
        mine = runs[runs["model"] == model]
        expected = mine.groupby(["section", "alpha"])["mse_heldout"].mean().sort_values()
        np.testing.assert_allclose(sorted(b.get_height() for b in bars), expected.to_numpy())
    assert "mean ± sd over 3 seeds" in fig.get_suptitle()
    assert_files(pl.save_figure(fig, [tmp_path / "f5.png", tmp_path / "f5.pdf"]))
    with pytest.raises(ValueError, match="no runs with alpha = 10"):
        figures.figure5(runs[runs["alpha"] == 0], ALPHA_ON)
    with pytest.raises(ValueError, match=r"lacks column.*mse_all"):
        figures.figure5(runs.drop(columns="mse_all"), ALPHA_ON)


def test_figure5_gives_each_model_its_own_y_axis():
    """scVI's error 10x VAE's: on one shared axis VAE's bars would be squashed flat."""
    runs = make_runs()
    runs.loc[runs["model"] == "scvi", ["mse_heldout", "mse_all"]] *= 10
    axes = figure5_axes(drawn(figures.figure5(runs, ALPHA_ON)))
    vae, scvi = axes["mse_heldout:vae"], axes["mse_heldout:scvi"]
    assert not vae.get_shared_y_axes().joined(vae, scvi)
    tallest_vae = max(b.get_height() for b in vae.patches)
    assert tallest_vae > 0.7 * vae.get_ylim()[1]  # VAE's bars fill their own axis
    assert scvi.get_ylim()[1] > 5 * vae.get_ylim()[1]
    # within a model, held-out and all spots share one axis, so they compare
    assert vae.get_shared_y_axes().joined(vae, axes["mse_all:vae"])


def test_figure5_with_one_seed_claims_no_sd():
    fig = drawn(figures.figure5(make_runs(seeds=(0,)), ALPHA_ON))
    title = fig.get_suptitle()
    assert "1 seeds" not in title and "±" not in title and "1 seed" in title
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any("sd" in t for t in legend_texts)
    assert all(bars.errorbar is None for ax in fig.axes for bars in ax.containers)
    assert_legend_below_axes(fig)
    assert_within_figure(fig)


def test_figure6_symlog_and_files(sweep, tmp_path):
    fig = figures.figure6(sweep)
    data_axes = [ax for ax in fig.axes if ax.get_xscale() == "symlog"]
    assert len(data_axes) == 4  # Moran's I, Geary's C, then the MSE of each model on its own axis
    assert [len(ax.get_lines()) for ax in data_axes[2:]] == [2, 2]  # one model, two sections each
    assert data_axes[2].get_title().startswith("VAE") and data_axes[3].get_title().startswith("scVI")
    assert all(ax.xaxis.get_transform().linthresh == 1.0 for ax in data_axes)
    # one line per (model, section) in each panel, starting at alpha = 0
    lines = data_axes[0].get_lines()
    assert len(lines) == 2 * 2 and all(line.get_xdata()[0] == 0.0 for line in lines)
    assert_files(pl.save_figure(fig, tmp_path / "figure6"))
    single = figures.figure6(sweep, sections=["P1"])
    assert len(next(ax for ax in single.axes if ax.get_xscale() == "symlog").get_lines()) == 2
    with pytest.raises(ValueError, match="lacks column"):
        figures.figure6(sweep.drop(columns="moran_I"))


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_figure6_legend_below_and_title_honest(sweep, seeds):
    fig = drawn(figures.figure6(sweep[sweep["seed"].isin(seeds)]))
    assert_legend_below_axes(fig)
    assert_within_figure(fig)
    title = fig.get_suptitle()
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    if len(seeds) == 1:
        assert "±" not in title and "1 seeds" not in title and "1 seed" in title
        assert not any("sd" in t for t in legend_texts)
        assert not any(ax.collections for ax in fig.axes)  # no sd bands
    else:
        assert "mean ± sd over 3 seeds" in title and any("sd over seeds" in t for t in legend_texts)


def test_failed_save_leaves_no_file(tmp_path):
    fig = Figure()
    fig.subplots().plot([0, 1], [0, 1])
    with pytest.raises(ValueError, match="xyz"):  # matplotlib knows no .xyz format
        pl.save_figure(fig, tmp_path / "figure.xyz")
    assert list(tmp_path.iterdir()) == []
