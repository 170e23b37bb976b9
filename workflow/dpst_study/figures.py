"""Figures 4-6 of the study (Zhou & Du, BIOKDD 2024), and the spatial domains of an annotated section beside its annotation.

Figures 4-6: local-metric ellipses, reconstruction MSE, sensitivity to alpha.

Built from the library's plots (:mod:`dpst.pl`) and the workflow's tidy runs
table. Every function returns a ``matplotlib.figure.Figure`` (no pyplot);
``dpst.pl.save_figure`` writes it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import NamedTuple
from zlib import crc32

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.collections import EllipseCollection
from matplotlib.colors import LogNorm, to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator
from scipy.optimize import linear_sum_assignment

from dpst.metrics import ellipse_summary
from dpst.pl import ELLIPSE_COLUMNS, axis_ratio_norm, ellipse_scale, ellipses, spacing_or_zero

from .tables import MODEL_LABEL, model_order, penalty_runs, section_order

# One hue per model, light without the penalty and dark with it.
MODEL_COLORS = {
    "vae": {"off": "#9ecae1", "on": "#08519c"},
    "scvi": {"off": "#fdae6b", "on": "#a63603"},
}
_FALLBACK_COLORS = [{"off": "#a1d99b", "on": "#006d2c"}, {"off": "#bcbddc", "on": "#54278f"}]
SECTION_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
MSE_LABEL = "MSE (log1p normalized)"
AXIS_RATIO_TICKS = (1, 1.25, 1.5, 2, 3, 4, 6, 8, 10, 15, 20, 30, 50, 100)


def model_color(model: str, penalty: str = "on") -> str:
    """The colour of ``model`` ("vae", "scvi", ...) with the penalty "off" (light) or "on" (dark)."""
    if model in MODEL_COLORS:
        return MODEL_COLORS[model][penalty]
    # crc32, not hash(): str hashes change between processes and colours must not
    return _FALLBACK_COLORS[crc32(model.encode()) % len(_FALLBACK_COLORS)][penalty]


# ----------------------------------------------------------------------------- Figure 4


def _panel_title(name: str, df: pd.DataFrame) -> str:
    summary = ellipse_summary(df)
    return f"{name}\nmedian axis ratio {summary['median_axis_ratio']:.2f}, size CV {summary['size_cv']:.2f}"


def figure4(
    panels: Mapping[str, pd.DataFrame],
    title: str | None = None,
    common_scale: bool = True,
    fraction: float = 0.35,
    cmap="viridis",
) -> Figure:
    """Local-metric ellipses side by side, e.g. ``{"scVI": off, "scVI + distance preserving": on}``.

    With ``common_scale`` one factor draws every panel (``ellipse_scale``),
    so sizes compare across panels; otherwise each panel is scaled on its own
    and only shapes and the spread of sizes compare. Colour: axis ratio
    (log scale, shared). Each title gives the median axis ratio and the
    coefficient of variation of sizes. All panels share their x and y limits
    (the union of the spots, padded), so on one section they are boxes of one size.
    """
    if not panels:
        raise ValueError("figure4 needs at least one panel")
    frames = list(panels.values())
    scales = (
        [ellipse_scale(frames, fraction)] * len(frames)
        if common_scale
        else [ellipse_scale([df], fraction) for df in frames]
    )
    norm = axis_ratio_norm([df["axis_ratio"].to_numpy(dtype=float) for df in frames])
    low, high = _shared_limits(frames, scales)
    fig = Figure(figsize=_figure4_size(high - low, len(frames)), layout="constrained")
    axes = fig.subplots(1, len(frames), sharex=True, sharey=True, squeeze=False)[0]
    for ax, (name, df), scale in zip(axes, panels.items(), scales, strict=True):
        collection = ellipses(ax, df, scale, cmap=cmap, norm=norm)
        ax.set_title(_panel_title(name, df), fontsize=10)
        ax.set_xlabel("x (µm)")
    axes[0].set_xlim(low[0], high[0])
    axes[0].set_ylim(high[1], low[1])  # inverted: image orientation
    axes[0].set_ylabel("y (µm)")
    clipped = any((df["axis_ratio"] > norm.vmax).any() for df in frames)
    _axis_ratio_colorbar(fig, collection, axes, norm, extend="max" if clipped else "neither")
    how = "one scale for all panels" if common_scale else "each panel scaled on its own"
    fig.supxlabel(
        f"Ellipse semi-axes: local stretch tissue → latent (latent units per µm), {how};\n"
        f"median ellipse size drawn at {fraction:g} × spot spacing. "
        "Isotropic, equal-sized ellipses = distance preserving.",
        fontsize=8,
    )
    if title:
        fig.suptitle(title)
    return fig


def _shared_limits(
    frames: list[pd.DataFrame], scales: list[float], max_pad_spacings: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper (x, y) limits holding every panel's spots and ellipses.

    The pad is the reach of the longest ellipse, at most ``max_pad_spacings``
    spot spacings, so one outlier does not shrink the tissue in every panel.
    """
    points, reach, spacing = [], 0.0, 0.0
    for df, scale in zip(frames, scales, strict=True):
        valid = df.dropna(subset=ELLIPSE_COLUMNS)
        points.append(valid[["x", "y"]].to_numpy(dtype=float))
        if len(valid):
            reach = max(reach, scale * float(valid["major"].max()))
            spacing = max(spacing, spacing_or_zero(points[-1]))
    xy = np.vstack(points)
    if not len(xy):
        raise ValueError("figure4: no spot has a complete ellipse (x, y, major, minor, angle)")
    pad = max(min(reach, max_pad_spacings * spacing), 0.5 * spacing, 1e-9)
    return xy.min(axis=0) - pad, xy.max(axis=0) + pad


def _figure4_size(extent: np.ndarray, n_panels: int, panel_width: float = 4.2) -> tuple[float, float]:
    """Figure inches that fit ``n_panels`` equal-aspect panels of this extent without empty bands."""
    panel_height = float(np.clip(panel_width * extent[1] / max(extent[0], 1e-12), 2.0, 7.5))
    # margins: y label and colourbar beside, titles and the caption above and below
    return (panel_width + 0.1) * n_panels + 1.7, panel_height + 1.45


def _axis_ratio_colorbar(fig: Figure, mappable, axes, norm: LogNorm, extend: str) -> None:
    bar = fig.colorbar(mappable, ax=list(axes), label="axis ratio (major/minor)", extend=extend, shrink=0.8, aspect=30)
    low, high = float(norm.vmin or 1.0), float(norm.vmax or 1.0)  # set by axis_ratio_norm
    ticks = [t for t in AXIS_RATIO_TICKS if low <= t <= high]
    bar.ax.yaxis.set_major_locator(FixedLocator(ticks))
    bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    bar.ax.yaxis.set_minor_locator(NullLocator())


# ----------------------------------------------------------------------------- seeds


def _seed_counts_text(counts: pd.Series) -> str:
    """'1 seed', '3 seeds' or '2–3 seeds' for the seeds behind each bar or point."""
    low, high = int(counts.min()), int(counts.max())
    if low != high:
        return f"{low}–{high} seeds"
    return "1 seed" if low == 1 else f"{low} seeds"


def _summary_text(counts: pd.Series) -> str:
    """What a bar or point shows: a single run, or a mean with an sd over several seeds."""
    if int(counts.max()) <= 1:
        return "single run (1 seed), no error estimate"
    return f"mean ± sd over {_seed_counts_text(counts)}"


# ----------------------------------------------------------------------------- Figure 5

MSE_PANELS = (("mse_heldout", "held-out spots"), ("mse_all", "all spots"))


def _seed_offsets(n: int, width: float) -> np.ndarray:
    """Evenly spread horizontal offsets so the seed points of one bar do not overlap."""
    return np.zeros(1) if n <= 1 else np.linspace(-0.25 * width, 0.25 * width, n)


def _penalty_label(model: str, state: str, alpha_on: float) -> str:
    label = MODEL_LABEL.get(model, model)
    if state == "off":
        return f"{label}, no penalty (α = 0)"
    return f"{label} + distance preserving (α = {alpha_on:g})"


def _mse_panel(ax: Axes, runs: pd.DataFrame, column: str, sections: list[str], alpha_on: float) -> None:
    """Bars of one model: per section, penalty off (light) then on (dark), seeds as dots."""
    model = runs["model"].iloc[0]
    width = 0.38
    for j, state in enumerate(("off", "on")):
        group = runs[runs["state"] == state]
        legend_label: str | None = _penalty_label(model, state, alpha_on)  # once, on the first bar drawn
        for k, section in enumerate(sections):
            values = group.loc[group["section"] == section, column].dropna().to_numpy(dtype=float)
            if not values.size:
                continue
            x = k + (j - 0.5) * width
            sd = values.std(ddof=1) if values.size > 1 else None
            ax.bar(
                x,
                values.mean(),
                width * 0.92,
                color=model_color(model, state),
                edgecolor="0.25",
                linewidth=0.5,
                yerr=sd,
                capsize=3,
                error_kw={"elinewidth": 1, "ecolor": "0.1"},
                label=legend_label,
            )
            legend_label = None
            ax.scatter(x + _seed_offsets(values.size, width), values, s=9, color="black", zorder=3, linewidths=0)
    ax.set_xticks(range(len(sections)), sections)
    ax.set_xlim(-0.6, len(sections) - 0.4)
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)
    if runs[column].isna().all():
        ax.text(0.5, 0.5, f"no values of {column}", transform=ax.transAxes, ha="center", color="0.4")


def figure5(runs: pd.DataFrame, alpha_on: float, sections: Sequence[str] | None = None) -> Figure:
    """Reconstruction MSE: one row per model (own y axis), held-out spots (left) and all spots (right).

    Each row has its own y axis, so a model with a smaller error is not
    squashed by the other; within a row both panels share it. Bars: mean over
    seeds with sd error bars (none for a single seed); black dots: individual seeds.
    Each Axes is labelled ``"<column>:<model>"`` (``Axes.get_label``).
    """
    selected = penalty_runs(runs, alpha_on, [column for column, _ in MSE_PANELS])
    selected["state"] = np.where(selected["alpha"] > 0, "on", "off")
    sections = section_order(selected, sections)
    selected = selected[selected["section"].isin(sections)]
    models = model_order(selected)
    fig = Figure(figsize=(max(8.0, 3.0 + 2.2 * len(sections)), 0.8 + 2.9 * len(models)), layout="constrained")
    axes = fig.subplots(len(models), len(MSE_PANELS), sharey="row", squeeze=False)
    for row, model in zip(axes, models, strict=True):
        for ax, (column, where) in zip(row, MSE_PANELS, strict=True):
            _mse_panel(ax, selected[selected["model"] == model], column, sections, alpha_on)
            ax.set_label(f"{column}:{model}")
            ax.set_title(f"{MODEL_LABEL.get(model, model)}: {where}", fontsize=10)
            ax.tick_params(labelleft=True)
        row[0].set_ylabel(MSE_LABEL)
    for ax in axes[-1]:
        ax.set_xlabel("section")
    n_seeds = selected.groupby(["section", "model", "state"])["seed"].nunique()
    fig.legend(*_figure5_legend(axes, n_seeds), loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    fig.align_ylabels(axes[:, 0])
    # the models' observed targets are normalized over different genes: compare within a row
    fig.suptitle(
        f"Reconstruction error per section and model (each model on its own y axis)\n{_summary_text(n_seeds)}",
        fontsize=11,
    )
    return fig


def _figure5_legend(axes: np.ndarray, n_seeds: pd.Series) -> tuple[list, list[str]]:
    handles, labels = [], []
    for ax in axes[:, 0]:
        model_handles, model_labels = ax.get_legend_handles_labels()
        handles += model_handles
        labels += model_labels
    handles.append(Line2D([], [], ls="", marker="o", ms=3, color="black"))
    labels.append("individual seeds")
    if int(n_seeds.max()) > 1:
        handles.append(Line2D([], [], ls="", marker="|", ms=10, mew=1, color="0.1"))
        labels.append("error bar: ± sd over seeds")
    return handles, labels


# ----------------------------------------------------------------------------- Figure 6

FIGURE6_PANELS = (
    ("moran_I", "Moran's I  (↑ more autocorrelated)", "Moran's I, mean over latent dims"),
    ("geary_C", "Geary's C  (↓ more autocorrelated)", "Geary's C, mean over latent dims"),
)
FIGURE6_MSE_PANEL = ("mse_heldout", "held-out MSE  (↓ better)", MSE_LABEL)


def _alpha_summary(runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean and sd (ddof=1) over seeds per (model, section, alpha), alpha ascending."""
    stats = runs.groupby(["model", "section", "alpha"])[column].agg(["mean", "std", "count"])
    return stats.rename(columns={"std": "sd"}).reset_index().sort_values("alpha")


def _set_alpha_axis(ax: Axes, alphas: np.ndarray) -> None:
    positive = alphas[alphas > 0]
    if positive.size:
        # symlog keeps alpha = 0 on the axis; linear up to the smallest positive alpha
        ax.set_xscale("symlog", linthresh=float(positive.min()))
    grid = np.unique(alphas[np.isfinite(alphas)])
    if grid.size <= 9:  # label the alphas actually trained rather than powers of ten
        ax.set_xticks(grid, [f"{a:g}" for a in grid])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("penalty strength α (symlog)")
    ax.grid(color="0.92")


def figure6(runs: pd.DataFrame, sections: Sequence[str] | None = None) -> Figure:
    """Moran's I, Geary's C and held-out MSE (one panel per model) against alpha; mean ± sd (band) over seeds.

    One colour per model; with several sections, one line style per section.
    Held-out MSE falls back to all-spot MSE when there are no held-out values.
    The legend sits below the panels; the title says how many seeds each point has.
    """
    columns = [c for c, _, _ in FIGURE6_PANELS]
    required = ["section", "model", "alpha", "seed", *columns]
    missing = [c for c in required if c not in runs.columns]
    if missing or not ({"mse_heldout", "mse_all"} & set(runs.columns)):
        raise ValueError(f"runs table lacks column(s) {missing or ['mse_heldout']}; it has {list(runs.columns)}")
    sections = section_order(runs, sections)
    runs = runs[runs["section"].isin(sections)]
    models = model_order(runs)
    styles = {s: SECTION_STYLES[i % len(SECTION_STYLES)] for i, s in enumerate(sections)}
    # The models' errors differ in scale (Figure 5): each model gets its own MSE panel.
    column, title, ylabel = _mse_fallback(runs, *FIGURE6_MSE_PANEL)
    panels = [(c, t, y, runs) for c, t, y in FIGURE6_PANELS]
    panels += [(column, f"{MODEL_LABEL.get(m, m)}: {title}", ylabel, runs[runs["model"] == m]) for m in models]
    # two panels a row: a row of four was 3.9:1, too wide to read in the report or on a laptop
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 0.9 + 3.6 * nrows), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[len(panels) :]:
        ax.set_visible(False)
    axes = grid[: len(panels)]
    for ax, (column, title, ylabel, shown) in zip(axes, panels, strict=True):
        for _, row in _alpha_summary(shown, column).groupby(["model", "section"], sort=False):
            _alpha_line(ax, row, styles[row["section"].iloc[0]])
        _set_alpha_axis(ax, runs["alpha"].to_numpy(dtype=float))
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
    n_seeds = runs.groupby(["section", "model", "alpha"])["seed"].nunique()
    handles, labels = _figure6_legend(models, sections, styles, several_seeds=int(n_seeds.max()) > 1)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=9, frameon=False)
    where = f", section {sections[0]}" if len(sections) == 1 else ""
    fig.suptitle(f"Sensitivity to the penalty strength α{where}\n{_summary_text(n_seeds)}", fontsize=11)
    return fig


def _mse_fallback(runs: pd.DataFrame, column: str, title: str, ylabel: str) -> tuple[str, str, str]:
    if column == "mse_heldout" and ("mse_heldout" not in runs or runs["mse_heldout"].isna().all()):
        return "mse_all", "MSE, all spots  (↓ better)", ylabel
    return column, title, ylabel


def _alpha_line(ax: Axes, stats: pd.DataFrame, style: tuple[str, str]) -> None:
    color = model_color(stats["model"].iloc[0], "on")
    alpha, mean, sd = (stats[c].to_numpy(dtype=float) for c in ("alpha", "mean", "sd"))
    ax.plot(alpha, mean, color=color, ls=style[0], marker=style[1], ms=4, lw=1.5)
    if np.isfinite(sd).any():  # a single seed has no sd: no band
        ax.fill_between(alpha, mean - sd, mean + sd, color=color, alpha=0.18, lw=0)


def _figure6_legend(
    models: list[str], sections: list[str], styles: dict, several_seeds: bool
) -> tuple[list, list[str]]:
    handles: list[Artist] = [Line2D([], [], color=model_color(m, "on"), lw=2) for m in models]
    labels = [MODEL_LABEL.get(m, m) for m in models]
    if len(sections) > 1:
        handles += [Line2D([], [], color="0.3", ls=styles[s][0], marker=styles[s][1], ms=4) for s in sections]
        labels += [f"section {s}" for s in sections]
    if several_seeds:
        handles.append(Patch(color="0.5", alpha=0.3))
        labels.append("band: ± sd over seeds")
    return handles, labels


# ----------------------------------------------------------------------------- spatial domains

UNANNOTATED_COLOR = "#dddddd"
# tab10 without its grey (kept for unannotated spots), then tab20's light shades
_LABEL_COLORS = [to_hex(c) for i, c in enumerate(colormaps["tab10"](np.arange(10))) if i != 7] + [
    to_hex(c) for i, c in enumerate(colormaps["tab20"](np.arange(20))) if i % 2 and i != 15
]
# domains matched to no label (more domains than labels): dark, unlike any label colour
_EXTRA_DOMAIN_COLORS = ["#000000", "#6b4c2a", "#3b0f70", "#00441b", "#7f2704", "#08306b"]


class DomainPanel(NamedTuple):
    """One run's domains in the domains figure: backbone, penalty strength, the spots' domains and their ARI."""

    model: str
    alpha: float
    labels: np.ndarray
    ari: float


def label_colors(categories: Sequence) -> dict:
    """A distinct colour per annotation label, in order (none grey: grey is for unannotated spots)."""
    return {c: _LABEL_COLORS[i % len(_LABEL_COLORS)] for i, c in enumerate(categories)}


def match_domains(labels: np.ndarray, truth: pd.Series, categories: Sequence) -> dict:
    """Each domain's annotation label, matched one to one by most shared annotated spots (Hungarian).

    A domain sharing no spot with its best label, or left over when there are
    more domains than labels, is absent from the result.
    """
    labels = np.asarray(labels).astype(str)
    annotated = truth.notna().to_numpy()
    table = pd.crosstab(labels[annotated], truth.to_numpy()[annotated].astype(str))
    table = table.reindex(index=sorted(set(labels)), columns=[str(c) for c in categories], fill_value=0)
    rows, columns = linear_sum_assignment(-table.to_numpy())
    by_name = {str(c): c for c in categories}
    return {
        table.index[r]: by_name[table.columns[c]] for r, c in zip(rows, columns, strict=True) if table.iat[r, c] > 0
    }


def _annotation_categories(truth: pd.Series) -> list:
    if isinstance(truth.dtype, pd.CategoricalDtype):
        present = set(truth.dropna())
        return [c for c in truth.cat.categories if c in present]
    return sorted(truth.dropna().unique(), key=str)


def _draw_spots(ax: Axes, xy: np.ndarray, colors: Sequence[str], diameter: float) -> None:
    """Spots as discs of ``diameter`` in data units (micrometres) at their positions."""
    discs = np.full(len(xy), diameter)
    ax.add_collection(
        EllipseCollection(
            discs,
            discs,
            np.zeros(len(xy)),
            units="xy",
            offsets=xy,
            offset_transform=ax.transData,
            facecolors=list(colors),
            edgecolors="none",
        ),
        autolim=False,
    )


def _domains_size(extent: np.ndarray, n_columns: int, n_rows: int = 1, panel_width: float = 3.2) -> tuple[float, float]:
    """Figure inches for a grid of equal-aspect panels, titles above each and the legend on the right.

    A tall section gets narrower panels (down to what their titles need) rather than empty bands.
    """
    ratio = extent[1] / max(extent[0], 1e-12)
    panel_height = float(np.clip(panel_width * ratio, 1.8, 6.0))
    panel_width = float(np.clip(panel_height / ratio, 2.3, panel_width))
    return (panel_width + 0.25) * n_columns + 0.6 + 2.0, (panel_height + 0.9) * n_rows + 0.7


# panels per row of the domains figure: wider rows do not read in the report or on a laptop
DOMAIN_COLUMNS = 3


def domains_figure(
    section: str,
    xy: np.ndarray,
    truth: pd.Series,
    panels: Sequence[DomainPanel],
    truth_name: str = "annotation",
    note: str = "",
) -> Figure:
    """A section's annotation beside the domains of each run, spots at their micrometre positions.

    The annotation, then one panel per run (e.g. each backbone without and with the
    penalty), three to a row, all on the same axes (equal aspect, image orientation). Each
    run's domains take the colours of the labels they are matched to one to one
    (:func:`match_domains`), so that agreement reads as equal colours; a domain
    matched to no label gets a dark colour of its own. One legend serves every
    panel, on the right. Titles give the section, backbone, alpha and ARI.

    Parameters
    ----------
    section
        The section's label.
    xy
        ``(N, 2)`` spot positions in micrometres.
    truth
        ``(N,)`` annotation; missing where unannotated (drawn grey).
    panels
        The runs to show, in order.
    truth_name
        What the annotation is called (the section's ``domain_key``).
    note
        A line under the title (how the domains were found).

    Returns
    -------
    matplotlib.figure.Figure
    """
    xy = np.asarray(xy, dtype=float)
    truth = pd.Series(truth).reset_index(drop=True)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(truth):
        raise ValueError(f"xy must be (N, 2) with N = {len(truth)} spots of the annotation, got {xy.shape}")
    for panel in panels:
        if len(panel.labels) != len(xy):
            raise ValueError(f"{panel.model} alpha {panel.alpha:g}: {len(panel.labels)} labels for {len(xy)} spots")
    categories = _annotation_categories(truth)
    colors = label_colors(categories)
    spacing = spacing_or_zero(xy) or 1.0
    low, high = xy.min(axis=0) - spacing, xy.max(axis=0) + spacing
    n_columns = min(1 + len(panels), DOMAIN_COLUMNS)
    n_rows = -(-(1 + len(panels)) // n_columns)
    fig = Figure(figsize=_domains_size(high - low, n_columns, n_rows), layout="constrained")
    grid = fig.subplots(n_rows, n_columns, sharex=True, sharey=True, squeeze=False)
    axes = grid.ravel()[: 1 + len(panels)]
    for spare in grid.ravel()[1 + len(panels) :]:
        fig.delaxes(spare)
    for ax in axes[-n_columns:]:  # the lowest panel of each column shows the x ticks
        ax.xaxis.set_tick_params(labelbottom=True)

    annotated = truth.notna().to_numpy()
    truth_colors = [colors[t] if a else UNANNOTATED_COLOR for t, a in zip(truth, annotated, strict=True)]
    _draw_spots(axes[0], xy, truth_colors, 0.9 * spacing)
    axes[0].set_title(
        f"{section} · annotation ({truth_name})\n{annotated.sum()} of {len(truth)} spots annotated", fontsize=10
    )
    n_extra = 0
    for ax, panel in zip(axes[1:], panels, strict=True):
        labels = np.asarray(panel.labels).astype(str)
        matched = match_domains(labels, truth, categories)
        extra = [d for d in sorted(set(labels), key=_natural) if d not in matched]
        n_extra = max(n_extra, len(extra))
        domain_colors = {
            **{d: colors[c] for d, c in matched.items()},
            **{d: _EXTRA_DOMAIN_COLORS[i % len(_EXTRA_DOMAIN_COLORS)] for i, d in enumerate(extra)},
        }
        _draw_spots(ax, xy, [domain_colors[d] for d in labels], 0.9 * spacing)
        ari = "n/a" if not np.isfinite(panel.ari) else f"{panel.ari:.2f}"
        backbone = MODEL_LABEL.get(panel.model, panel.model)
        ax.set_title(f"{section} · {backbone} · α = {panel.alpha:g}\nARI {ari}", fontsize=10)
    for ax in axes:
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    for ax in axes[-n_columns:]:
        ax.set_xlabel("x (µm)")
    axes[0].set_xlim(low[0], high[0])
    axes[0].set_ylim(high[1], low[1])  # inverted: image orientation
    for ax in grid[:, 0]:
        ax.set_ylabel("y (µm)")
    handles: list[Artist] = [_swatch(colors[c]) for c in categories]
    names = [str(c) for c in categories]
    if not annotated.all():
        handles.append(_swatch(UNANNOTATED_COLOR))
        names.append("unannotated")
    for i in range(n_extra):
        handles.append(_swatch(_EXTRA_DOMAIN_COLORS[i % len(_EXTRA_DOMAIN_COLORS)]))
        names.append(f"unmatched domain {i + 1}")
    fig.legend(
        handles,
        names,
        loc="outside right center",
        fontsize=9,
        frameon=False,
        title=f"colour: {truth_name} label\n(for a domain: the label\nit shares most spots with,\nmatched one to one)",
        title_fontsize=9,
        alignment="left",
    )
    title = f"Section {section}: its annotation beside the spatial domains found in each latent"
    fig.suptitle(f"{title}\n{note}" if note else title, fontsize=11)
    return fig


def _swatch(color: str) -> Line2D:
    return Line2D([], [], ls="", marker="o", ms=8, mec="none", color=color)


def _natural(name: str) -> tuple:
    """Sort key putting "2" before "10"."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


# ----------------------------------------------------------------------------- joint runs

# one colour per section of a group: dark and light, unlike the cluster colours' order
_SECTION_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


class JointPanel(NamedTuple):
    """One joint run in its group's figure: backbone, penalty, seed, its UMAP, each spot's section and cluster."""

    model: str
    alpha: float
    seed: int
    umap: np.ndarray
    sections: np.ndarray
    clusters: np.ndarray
    scores: Mapping[str, float]


def _scatter(ax: Axes, xy: np.ndarray, colors: Sequence[str]) -> None:
    # a random drawing order: no section or cluster hides another by coming last
    order = np.random.default_rng(0).permutation(len(xy))
    ax.scatter(xy[order, 0], xy[order, 1], c=np.asarray(colors)[order], s=6, linewidths=0, rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def _score_text(scores: Mapping[str, float], names: Sequence[str]) -> str:
    return ", ".join(f"{n} {scores[n]:.2f}" for n in names if n in scores and np.isfinite(scores[n]))


def joint_figure(group: str, sections: Sequence[str], panels: Sequence[JointPanel], note: str = "") -> Figure:
    """A group's joint latents in UMAP: coloured by section (top row) and by cluster (bottom row), one column per run.

    Parameters
    ----------
    group
        The group's name.
    sections
        Its sections, in order (their colours).
    panels
        The runs to show, in order (e.g. each backbone without and with the penalty).
    note
        A line under the title (how the clusters were found).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not panels:
        raise ValueError("joint_figure needs at least one run")
    section_colors = {s: _SECTION_COLORS[i % len(_SECTION_COLORS)] for i, s in enumerate(sections)}
    clusters = sorted({str(c) for p in panels for c in p.clusters}, key=_natural)
    cluster_colors = label_colors(clusters)
    fig = Figure(figsize=(3.3 * len(panels) + 1.9, 7.4), layout="constrained")
    axes = fig.subplots(2, len(panels), squeeze=False)
    for column, panel in enumerate(panels):
        if not (len(panel.umap) == len(panel.sections) == len(panel.clusters)):
            raise ValueError(f"{panel.model} alpha {panel.alpha:g}: UMAP, sections and clusters differ in length")
        title = f"{group} · {MODEL_LABEL.get(panel.model, panel.model)} · α = {panel.alpha:g} · seed {panel.seed}"
        by_section, by_cluster = axes[0, column], axes[1, column]
        _scatter(by_section, panel.umap, [section_colors[str(s)] for s in panel.sections])
        by_section.set_title(f"{title}\nby section; {_score_text(panel.scores, ('iLISI',))}", fontsize=9)
        _scatter(by_cluster, panel.umap, [cluster_colors[str(c)] for c in panel.clusters])
        on = f" (on the {panel.scores['labels']})" if "labels" in panel.scores else ""
        by_cluster.set_title(f"{title}\nby cluster; {_score_text(panel.scores, ('cLISI',))}{on}", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("UMAP 2")
    for ax in axes[-1]:
        ax.set_xlabel("UMAP 1")
    fig.legend(
        [_swatch(section_colors[s]) for s in sections],
        list(sections),
        loc="outside right upper",
        title="section",
        fontsize=9,
        title_fontsize=9,
        frameon=False,
    )
    fig.legend(
        [_swatch(cluster_colors[c]) for c in clusters],
        clusters,
        loc="outside right lower",
        title="cluster",
        fontsize=9,
        title_fontsize=9,
        frameon=False,
        ncol=1 if len(clusters) <= 12 else 2,
    )
    title = f"Group {group} ({' + '.join(sections)}): the joint latent in UMAP, without and with the penalty"
    # wrapped to the panels' width: with one backbone the lines outran the figure and met the legend
    width = max(40, int(10 * 3.3 * len(panels)))
    lines = [textwrap.fill(line, width, break_on_hyphens=False) for line in ([title, note] if note else [title])]
    fig.suptitle("\n".join(lines), fontsize=11)
    return fig
