"""Plots: local-metric ellipses on the tissue, and figure saving.

Figures are built as ``matplotlib.figure.Figure`` objects or drawn into a given
``Axes``, without pyplot, so no GUI backend is touched and nothing accumulates
in pyplot's registry. The study's assembled Figures 4-6 live with the workflow
(``workflow/dpst_study/figures.py``).

The ellipse functions take the table of :func:`dpst.metrics.local_metric_ellipses`:
one row per spot with columns ``x``, ``y`` (tissue position), ``major``,
``minor`` (semi-axes), ``angle`` (degrees), ``axis_ratio`` and ``size``.
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
    """Write a figure to one or more files, each complete or not at all.

    Each file is written under a temporary name and renamed when done, so an
    interrupted save never leaves a partial file at the path.

    Parameters
    ----------
    fig
        The figure.
    paths
        One path or several. The format follows the suffix; a path without a
        suffix is written twice, as ``.png`` and ``.pdf``.
    dpi
        Resolution of raster formats.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> fig = Figure()
    >>> dpst.pl.save_figure(fig, "figures/ellipses")
    [PosixPath('figures/ellipses.png'), PosixPath('figures/ellipses.pdf')]
    """
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
    """Median nearest-neighbour distance between the spots of an ellipse table.

    Parameters
    ----------
    ellipses_df
        Table with the spot positions in columns ``x`` and ``y``; rows with a
        missing position are ignored.

    Returns
    -------
    float
        The spacing, in the unit of the coordinates (micrometres for the
        tables of :func:`dpst.metrics.local_metric_ellipses`).

    Raises
    ------
    ValueError
        When fewer than two spots have a position.
    """
    xy = ellipses_df[["x", "y"]].dropna().to_numpy(dtype=float)
    if len(xy) < 2:
        raise ValueError("need at least two spots to measure the spot spacing")
    return spacing_or_zero(xy)


def ellipse_scale(panels: Iterable[pd.DataFrame], fraction: float = 0.35) -> float:
    """One drawing scale shared by several panels of ellipses.

    The median ellipse size, pooled over the panels, is drawn at ``fraction``
    times the spot spacing, so that neighbouring ellipses rarely overlap.
    Panels drawn with the same scale can be compared by eye.

    Parameters
    ----------
    panels
        Ellipse tables (column ``size``: the geometric mean of the semi-axes,
        in latent units per micrometre; and ``x``, ``y``).
    fraction
        Drawn size of the median ellipse as a share of the spot spacing.

    Returns
    -------
    float
        Micrometres per (latent unit per micrometre): the factor to pass as
        ``scale`` to :func:`ellipses`.

    Raises
    ------
    ValueError
        When no panel holds a finite positive size.
    """
    panels = list(panels)
    sizes = np.concatenate([df["size"].to_numpy(dtype=float) for df in panels])
    sizes = sizes[np.isfinite(sizes) & (sizes > 0)]
    if sizes.size == 0:
        raise ValueError("no finite positive ellipse sizes to scale")
    spacing = float(np.median([spot_spacing(df) for df in panels]))
    return fraction * spacing / float(np.median(sizes))


def ellipses(
    ax: Axes, ellipses_df: pd.DataFrame, scale: float, color=None, cmap="viridis", norm=None, **kwargs
) -> EllipseCollection:
    """Draw each spot's local-metric ellipse at its tissue position.

    An ellipse has full width ``2 * scale * major`` and height
    ``2 * scale * minor`` and is rotated by ``angle`` degrees counter-clockwise
    from the x axis, in data coordinates, so shapes and angles are true on the
    tissue. Rows with a missing value are skipped. The y axis is inverted
    (image orientation) and the aspect is equal.

    Parameters
    ----------
    ax
        Axes to draw into.
    ellipses_df
        Table of :func:`dpst.metrics.local_metric_ellipses`.
    scale
        Drawing scale, for example from :func:`ellipse_scale`.
    color
        One face colour for all ellipses. Without it they are coloured by
        axis ratio on a log scale (1 is a circle).
    cmap
        Colour map of the axis ratio.
    norm
        Colour normalization of the axis ratio; by default
        :func:`axis_ratio_norm` of this panel. Pass one norm to several panels
        to share the colours.
    **kwargs
        Passed to :class:`matplotlib.collections.EllipseCollection` (default
        edge width 0.2, edge colour grey).

    Returns
    -------
    matplotlib.collections.EllipseCollection
        The drawn collection (for a colour bar).

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> table = dpst.metrics.local_metric_ellipses(latent, coords_um)
    >>> ax = Figure().add_subplot()
    >>> drawn = dpst.pl.ellipses(ax, table, dpst.pl.ellipse_scale([table]))
    >>> ax.figure.colorbar(drawn, ax=ax, label="axis ratio")
    """
    df = ellipses_df.dropna(subset=ELLIPSE_COLUMNS)
    xy = df[["x", "y"]].to_numpy(dtype=float)
    kwargs.setdefault("linewidths", 0.2)
    kwargs.setdefault("edgecolors", "0.2")
    # units="xy" scales with the data, so shapes and angles are true in micrometres
    collection = EllipseCollection(
        2 * scale * df["major"].to_numpy(dtype=float),
        2 * scale * df["minor"].to_numpy(dtype=float),
        df["angle"].to_numpy(dtype=float),
        units="xy",
        offsets=xy,
        offset_transform=ax.transData,
        **kwargs,
    )
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
    """Median nearest-neighbour distance between points, or 0 for fewer than two.

    Parameters
    ----------
    xy
        ``(n, 2)`` coordinates.

    Returns
    -------
    float
        The median distance, in the unit of ``xy``.
    """
    return float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1])) if len(xy) > 1 else 0.0


def axis_ratio_norm(ratios: Sequence[np.ndarray]) -> LogNorm:
    """Log colour scale for axis ratios, shared by the panels it is built from.

    The scale runs from 1 (a circle) to the 98th percentile of the finite
    ratios, at least 1.5; larger ratios take the top colour.

    Parameters
    ----------
    ratios
        Axis ratios of one or more panels.

    Returns
    -------
    matplotlib.colors.LogNorm
        The normalization, clipped at both ends.
    """
    values = np.concatenate([np.asarray(r, dtype=float) for r in ratios])
    values = values[np.isfinite(values)]
    vmax = max(float(np.quantile(values, 0.98)) if values.size else 2.0, 1.5)
    return LogNorm(vmin=1.0, vmax=vmax, clip=True)
