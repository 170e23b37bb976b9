"""Plots: local-metric ellipses on the tissue, and figure saving.

Figures are built as ``matplotlib.figure.Figure`` objects or drawn into a given
``Axes``, without pyplot, so no GUI backend is touched and nothing accumulates
in pyplot's registry. The study's assembled Figures 4-6 live with the workflow
(``workflow/dpst_study/figures.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import EllipseCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from scipy.spatial import cKDTree

from ._files import atomic_path

ELLIPSE_COLUMNS = ["x", "y", "major", "minor", "angle"]


def save_figure(fig: Figure, paths: str | PathLike | Iterable[str | PathLike], dpi: int = 200) -> list[Path]:
    """Write ``fig`` to each path (format from the suffix); a path without suffix gets .png and .pdf."""
    if isinstance(paths, (str, PathLike)):
        paths = [paths]
    written = []
    for path in map(Path, paths):
        targets = [path] if path.suffix else [path.with_suffix(".png"), path.with_suffix(".pdf")]
        for target in targets:
            with atomic_path(target) as tmp:
                fig.savefig(tmp, dpi=dpi)  # the temporary name keeps the suffix (format)
            written.append(target)
    return written


def spot_spacing(ellipses_df: pd.DataFrame) -> float:
    """Median nearest-neighbour distance between spots (coordinate units, micrometres)."""
    xy = ellipses_df[["x", "y"]].dropna().to_numpy(dtype=float)
    if len(xy) < 2:
        raise ValueError("need at least two spots to measure the spot spacing")
    return spacing_or_zero(xy)


def ellipse_scale(panels: Iterable[pd.DataFrame], fraction: float = 0.35) -> float:
    """One factor for all panels: the median ellipse size (pooled) is drawn at ``fraction`` x spot spacing.

    ``size`` is the geometric mean of the semi-axes (latent units per
    micrometre), so the returned scale is in micrometres per (latent unit / micrometre).
    """
    panels = list(panels)
    sizes = np.concatenate([df["size"].to_numpy(dtype=float) for df in panels])
    sizes = sizes[np.isfinite(sizes) & (sizes > 0)]
    if sizes.size == 0:
        raise ValueError("no finite positive ellipse sizes to scale")
    spacing = float(np.median([spot_spacing(df) for df in panels]))
    return fraction * spacing / float(np.median(sizes))


def ellipses(ax: Axes, ellipses_df: pd.DataFrame, scale: float, color=None, cmap="viridis",
             norm=None, **kwargs) -> EllipseCollection:
    """Draw each spot's local-metric ellipse at its tissue position; returns the collection.

    Full width ``2 * scale * major``, height ``2 * scale * minor``, rotated by
    ``angle`` degrees counter-clockwise from the x axis (in data coordinates).
    Rows with NaN are skipped. Without ``color`` the ellipses are coloured by
    axis ratio on a log scale. The y axis is inverted (image orientation)
    and the aspect is equal.
    """
    df = ellipses_df.dropna(subset=ELLIPSE_COLUMNS)
    xy = df[["x", "y"]].to_numpy(dtype=float)
    kwargs.setdefault("linewidths", 0.2)
    kwargs.setdefault("edgecolors", "0.2")
    # units="xy" scales with the data, so shapes and angles are true in micrometres
    collection = EllipseCollection(2 * scale * df["major"].to_numpy(dtype=float),
                                   2 * scale * df["minor"].to_numpy(dtype=float),
                                   df["angle"].to_numpy(dtype=float), units="xy", offsets=xy,
                                   offset_transform=ax.transData, **kwargs)
    if color is None:
        ratio = df["axis_ratio"].to_numpy(dtype=float)
        collection.set_array(ratio)
        collection.set_cmap(cmap)
        collection.set_norm(norm if norm is not None else axis_ratio_norm([ratio]))
    else:
        collection.set_facecolor(color)
    ax.add_collection(collection, autolim=False)
    if len(xy):
        pad = max(scale * float(df["major"].max()), 0.5 * spacing_or_zero(xy))
        ax.update_datalim(np.vstack([xy.min(axis=0) - pad, xy.max(axis=0) + pad]))
        ax.autoscale_view()
    ax.set_aspect("equal")
    if not ax.yaxis_inverted():
        ax.invert_yaxis()
    return collection


def spacing_or_zero(xy: np.ndarray) -> float:
    """Median nearest-neighbour distance, 0 for fewer than two spots."""
    return float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1])) if len(xy) > 1 else 0.0


def axis_ratio_norm(ratios: Sequence[np.ndarray]) -> LogNorm:
    """Log colour scale from 1 (isotropic) to the 98th percentile; beyond it the top colour."""
    values = np.concatenate([np.asarray(r, dtype=float) for r in ratios])
    values = values[np.isfinite(values)]
    vmax = max(float(np.quantile(values, 0.98)) if values.size else 2.0, 1.5)
    return LogNorm(vmin=1.0, vmax=vmax, clip=True)


