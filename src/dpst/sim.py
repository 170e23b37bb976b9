"""Simulate 10x Visium sections and write them in the Space Ranger layout.

The simulator exists so that tests and the offline demo exercise the same
reading code as real 10x downloads (see :mod:`dpst.io`). Geometry follows
Visium: 78 x 128 array positions with ``(array_row + array_col)`` even, spot
centres 100 um apart (two columns apart in a row; rows ``100 * sqrt(3) / 2`` um
apart), spot diameter 55 um. Scale factors follow Space Ranger's convention:
``spot_diameter_fullres`` is the pixel width of a theoretical 65 um spot.

``VISIUM_ROWS`` and ``VISIUM_COLS`` (78 and 128) are the size of the simulated
array.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Set
from pathlib import Path
from typing import Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from PIL import Image
from scipy.spatial import cKDTree

from .io import SCALEFACTOR_SPOT_DIAMETER_UM, SPOT_SPACING_UM, _plot_defaults, lattice
from .pp import is_raw_counts

__all__ = ["VISIUM_COLS", "VISIUM_ROWS", "simulate_section", "square_grid", "write_spaceranger", "write_visium_hd"]

VISIUM_ROWS = 78
VISIUM_COLS = 128
ROW_STEP_UM = SPOT_SPACING_UM * np.sqrt(3) / 2
COL_STEP_UM = SPOT_SPACING_UM / 2

# Fixed full-resolution layout (pixels), roughly like a Visium capture area
# scanned at ~0.62 um/px. Image sizes are kept small so tests stay fast.
FULLRES_UM_PER_PIXEL = 55.0 / 89.0
SPOT_DIAMETER_FULLRES = SCALEFACTOR_SPOT_DIAMETER_UM / FULLRES_UM_PER_PIXEL  # as Space Ranger writes it
FULLRES_SIZE = 12000
FULLRES_OFFSET = (860.0, 600.0)  # (x, y) of array position (0, 0)
HIRES_SCALEF = 1000 / FULLRES_SIZE
LOWRES_SCALEF = 600 / FULLRES_SIZE

_TISSUE_RGB = np.array([0.86, 0.58, 0.74])
_BACKGROUND_RGB = np.array([0.96, 0.95, 0.95])
_NUCLEOTIDES = np.array(list("ACGT"))


# --------------------------------------------------------------------------- #
# geometry
# --------------------------------------------------------------------------- #
def visium_grid(n_rows: int = VISIUM_ROWS, n_cols: int = VISIUM_COLS) -> tuple[np.ndarray, np.ndarray]:
    """All array positions of a Visium grid, row-major.

    Parameters
    ----------
    n_rows, n_cols
        Size of the array; the positions kept are those with
        ``array_row + array_col`` even, as on the Visium hexagonal grid.

    Returns
    -------
    tuple of numpy.ndarray
        ``(array_row, array_col)``: integer positions, one entry per spot.
    """
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    keep = (rows + cols) % 2 == 0
    return rows[keep], cols[keep]


def square_grid(n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Array positions of a square lattice of bins wide enough for a tissue of ``n_bins``, row-major.

    Parameters
    ----------
    n_bins
        Bins the tissue will cover; the lattice holds about 1.6 times as many,
        so the tissue blob has background around it, as on a capture area.

    Returns
    -------
    tuple of numpy.ndarray
        ``(array_row, array_col)``: integer positions, one entry per bin.
    """
    side = int(np.ceil(np.sqrt(n_bins / 0.6)))
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    return rows.ravel(), cols.ravel()


def grid_to_um(array_row: np.ndarray, array_col: np.ndarray) -> np.ndarray:
    """Array positions to ``(x, y)`` micrometres on the capture area.

    Parameters
    ----------
    array_row, array_col
        Integer array positions.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` float coordinates: columns are 50 um apart, rows
        ``50 * sqrt(3)`` um, so hexagon neighbours are 100 um apart.
    """
    return np.column_stack([array_col * COL_STEP_UM, array_row * ROW_STEP_UM]).astype(float)


def _um_to_fullres(xy_um: np.ndarray) -> np.ndarray:
    return np.asarray(FULLRES_OFFSET) + xy_um / FULLRES_UM_PER_PIXEL


def _tissue_mask(xy_um: np.ndarray, n_spots: int, rng: np.random.Generator) -> np.ndarray:
    """The ``n_spots`` positions with the lowest score of a wobbly ellipse.

    Ranking a smooth score and keeping the lowest ones gives a blob-shaped
    level set with exactly ``n_spots`` spots, from tiny sections to the whole grid.
    """
    centre = xy_um.mean(axis=0)
    half = (xy_um.max(axis=0) - xy_um.min(axis=0)) / 2
    d = (xy_um - centre) / (half * np.array([1.0, 0.85]))
    theta = np.arctan2(d[:, 1], d[:, 0])
    phase = rng.uniform(0, 2 * np.pi)
    score = np.hypot(d[:, 0], d[:, 1]) * (1 + 0.1 * np.sin(3 * theta + phase))
    # Stable sort plus a tiny index tie-break keeps the choice deterministic.
    order = np.lexsort((np.arange(len(score)), score))
    mask = np.zeros(len(score), dtype=bool)
    mask[order[:n_spots]] = True
    return mask


def _layer_depth(xy_um: np.ndarray, n_domains: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each spot's depth (distance to a centre of curvature outside the tissue) and the bands' inner edges."""
    centre = xy_um.mean(axis=0)
    extent = np.ptp(xy_um, axis=0).max() + SPOT_SPACING_UM
    angle = rng.uniform(-np.pi / 4, np.pi / 4) - np.pi / 2  # above the tissue
    focus = centre + 1.2 * extent * np.array([np.cos(angle), np.sin(angle)])
    depth = np.linalg.norm(xy_um - focus, axis=1)
    edges = np.quantile(depth, np.linspace(0, 1, n_domains + 1)[1:-1])
    return depth, edges


def _memberships(
    depth: np.ndarray, edges: np.ndarray, boundary_width: float, mixing: float, rng: np.random.Generator
) -> np.ndarray:
    """Each spot's share of each domain's expression, ``(n_spots, n_domains)``, rows summing to 1.

    A band's share falls off across its edges as a logistic of width
    ``boundary_width`` (micrometres), so spots near a boundary express both
    sides; then ``mixing`` of each spot (a random share, on average
    ``mixing``) comes from a random mixture of all domains, as spots that
    hold cells of several types.
    """
    inner = np.concatenate([[-np.inf], edges])
    outer = np.concatenate([edges, [np.inf]])
    width = max(boundary_width, 1e-9)
    rising = 1.0 / (1.0 + np.exp(-np.clip((depth[:, None] - inner) / width, -50, 50)))
    falling = 1.0 / (1.0 + np.exp(-np.clip((outer - depth[:, None]) / width, -50, 50)))
    share = rising * falling
    share /= share.sum(axis=1, keepdims=True)
    if mixing > 0:
        other = rng.dirichlet(np.ones(share.shape[1]), size=len(share))
        amount = np.clip(rng.beta(2.0, 2.0 * (1 - mixing) / mixing, size=(len(share), 1)), 0.0, 1.0)
        share = (1 - amount) * share + amount * other
    return share


# --------------------------------------------------------------------------- #
# expression
# --------------------------------------------------------------------------- #
def _gene_patterns(n_genes: int, n_domains: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Assign each gene a pattern: marker of a domain (40%), gradient (20%), background."""
    n_markers = round(0.4 * n_genes)
    n_gradient = round(0.2 * n_genes)
    kind = np.array(["background"] * n_genes, dtype=object)
    owner = np.full(n_genes, -1)
    perm = rng.permutation(n_genes)
    markers, gradient = perm[:n_markers], perm[n_markers : n_markers + n_gradient]
    kind[markers] = "marker"
    owner[markers] = np.arange(n_markers) % n_domains
    kind[gradient] = "gradient"
    return kind, owner


def _log_expression(
    xy_um: np.ndarray,
    domain: np.ndarray,
    kind: np.ndarray,
    owner: np.ndarray,
    rng: np.random.Generator,
    marker_fold: tuple[float, float] = (3.0, 6.0),
    shares: np.ndarray | None = None,
) -> np.ndarray:
    """Unnormalized log expression, spots x genes; ``shares``: graded domain memberships (None: sharp)."""
    n_genes = len(kind)
    base = rng.normal(0.0, 1.2, size=n_genes)
    log_expr = np.broadcast_to(base, (len(xy_um), n_genes)).copy()

    markers = np.flatnonzero(kind == "marker")
    fold = np.log(rng.uniform(*marker_fold, size=len(markers)))
    if shares is None:
        log_expr[:, markers] += fold * (domain[:, None] == owner[markers][None, :])
    else:  # a spot's marker level is its domains' expression mixed in proportion to their shares
        share = shares[:, owner[markers]]
        log_expr[:, markers] += np.log1p(share * np.expm1(fold))

    # Smooth gradients along random directions, in tissue-standardized units
    # (one common scale for both axes, so the pattern is not stretched).
    gradient = np.flatnonzero(kind == "gradient")
    angles = rng.uniform(0, 2 * np.pi, size=len(gradient))
    directions = np.column_stack([np.cos(angles), np.sin(angles)])
    centred = (xy_um - xy_um.mean(axis=0)) / xy_um.std()
    amplitude = rng.uniform(0.5, 1.0, size=len(gradient))
    log_expr[:, gradient] += amplitude * (centred @ directions.T)
    return log_expr


def _nb_counts(mean: np.ndarray, dispersion: float, rng: np.random.Generator) -> np.ndarray:
    """Negative binomial as a gamma-Poisson mixture with inverse dispersion ``dispersion``."""
    rate = rng.gamma(shape=dispersion, scale=mean / dispersion)
    return rng.poisson(rate)


def _barcodes(n: int, rng: np.random.Generator, taken: Set[str] = frozenset()) -> list[str]:
    """``n`` unique random 16-nt barcodes with the ``-1`` GEM-group suffix."""
    out: list[str] = []
    seen = set(taken)
    while len(out) < n:
        letters = _NUCLEOTIDES[rng.integers(0, 4, size=(n - len(out), 16))]
        for row in letters:
            code = "".join(row) + "-1"
            if code not in seen:
                seen.add(code)
                out.append(code)
    return out


# --------------------------------------------------------------------------- #
# images
# --------------------------------------------------------------------------- #
def _render_tissue(xy_px: np.ndarray, domain: np.ndarray | None, scalef: float, spot_diameter_px: float) -> np.ndarray:
    """A synthetic H&E-like RGB image (floats in [0, 1]): tissue tinted by domain."""
    size = round(FULLRES_SIZE * scalef)
    centres = (np.arange(size) + 0.5) / scalef
    gx, gy = np.meshgrid(centres, centres)
    # 60 um covers the hexagonal cell of each spot, so the tissue looks continuous;
    # the bound also lets the tree skip background pixels quickly.
    radius = 60.0 / SCALEFACTOR_SPOT_DIAMETER_UM * spot_diameter_px
    dist, idx = cKDTree(xy_px).query(np.column_stack([gx.ravel(), gy.ravel()]), distance_upper_bound=radius)
    inside = np.isfinite(dist)
    img = np.tile(_BACKGROUND_RGB, (size * size, 1))
    colour = np.tile(_TISSUE_RGB, (len(xy_px), 1))
    if domain is not None:
        import matplotlib

        tints = matplotlib.colormaps["tab10"](np.asarray(domain) % 10)[:, :3]
        colour = 0.6 * colour + 0.4 * tints
    img[inside] = colour[idx[inside]]
    return img.reshape(size, size, 3)


# --------------------------------------------------------------------------- #
# simulator
# --------------------------------------------------------------------------- #
def simulate_section(
    n_spots: int = 3000,
    n_genes: int = 2000,
    n_domains: int = 5,
    seed: int = 0,
    mean_library_size: float = 5000.0,
    dispersion: float = 5.0,
    marker_fold: tuple[float, float] = (3.0, 6.0),
    boundary_width: float = 0.0,
    mixing: float = 0.0,
    bin_size_um: float | None = None,
) -> ad.AnnData:
    """Simulate one Visium section with layered domains and smooth gradients.

    The tissue is a blob of exactly ``n_spots`` grid positions cut into curved,
    layer-like domains. Each gene is a marker of one domain (3- to 6-fold up
    there), a smooth gradient across the tissue or background. Counts are
    negative binomial around each spot's expression times a log-normal
    library size. The result looks like :func:`dpst.io.read_spaceranger`'s
    output, so it can be passed to :func:`dpst.pp.preprocess` or written to
    disk with :func:`write_spaceranger`.

    Parameters
    ----------
    n_spots
        Spots under tissue (exact), at most the 4,992 positions of the grid.
    n_genes
        Genes: 40% domain markers, 20% smooth spatial gradients, rest background.
    n_domains
        Number of curved, layer-like domains (ground truth in ``obs["domain"]``).
    seed
        Seed of the only random generator used; same seed, identical output.
    mean_library_size
        Mean of the log-normal library sizes.
    dispersion
        Inverse dispersion ``theta`` of the negative binomial counts (larger is
        closer to Poisson).
    marker_fold
        Range of the markers' fold change in their domain (uniform).
    boundary_width
        Width in micrometres over which domains blend across their boundaries
        (a logistic fall-off); 0: sharp boundaries.
    mixing
        Mean share of each spot's marker expression drawn from a random mixture
        of all domains (spots holding cells of several types), in ``[0, 1)``.
        ``obs["domain"]`` is each spot's band in every case. The defaults give the
        easy sections earlier versions simulated, to the bit; e.g.
        ``marker_fold=(1.5, 3), boundary_width=150, mixing=0.3`` gives domains
        that representations and clusterers find to different degrees.
    bin_size_um
        None (the default): spots on the Visium hexagon. A width in micrometres:
        square bins of that width on a square lattice, as Visium HD's binned
        output (``n_spots`` bins, any number; the scale factors then hold
        ``bin_size_um`` and ``microns_per_pixel``, and ``spot_diameter_fullres``
        is the bin's width in pixels, as Space Ranger writes them for bins).
        Write it with :func:`write_visium_hd`.

    Returns
    -------
    anndata.AnnData
        Integer counts in ``X`` (CSR, float32); ``obs`` columns ``in_tissue``,
        ``array_row``, ``array_col`` and ``domain``; full-resolution pixel
        coordinates ``(x, y)`` in ``obsm["spatial"]``; ``var["gene_ids"]``,
        ``var["feature_types"]`` and the simulated pattern of each gene in
        ``var["sim_pattern"]``/``var["sim_domain"]``; and the squidpy-style
        ``uns["spatial"]["sim_seed{seed}"]`` with a low-resolution image and
        the scale factors.

    Raises
    ------
    ValueError
        When ``n_spots`` is outside ``[1, 4992]`` (spots) or not positive (bins),
        ``n_genes`` or ``n_domains`` is not positive, ``bin_size_um`` is not a
        positive number, or there are more domains than spots.

    Examples
    --------
    >>> adata = dpst.sim.simulate_section(n_spots=3000, n_genes=2000, seed=1)
    >>> adata.shape
    (3000, 2000)
    >>> adata.obs["domain"].cat.categories.tolist()
    ['L1', 'L2', 'L3', 'L4', 'L5']
    """
    if bin_size_um is not None and not (np.isfinite(bin_size_um) and bin_size_um > 0):
        raise ValueError(f"bin_size_um must be None or a positive number of micrometres, got {bin_size_um}")
    if bin_size_um is not None and n_spots < 1:
        raise ValueError(f"n_spots must be positive, got {n_spots}")
    rows, cols = visium_grid() if bin_size_um is None else square_grid(n_spots)
    if not 1 <= n_spots <= len(rows):
        raise ValueError(f"n_spots must be in [1, {len(rows)}] (the Visium grid), got {n_spots}")
    if n_genes < 1 or n_domains < 1:
        raise ValueError("n_genes and n_domains must be positive")
    if n_domains > n_spots:
        raise ValueError(f"n_domains ({n_domains}) exceeds n_spots ({n_spots})")
    low, high = marker_fold
    if not 1.0 <= low <= high:
        raise ValueError(f"marker_fold must be (low, high) with 1 <= low <= high, got {tuple(marker_fold)}")
    if not (np.isfinite(boundary_width) and boundary_width >= 0):
        raise ValueError(f"boundary_width must be >= 0 micrometres, got {boundary_width}")
    if not 0 <= mixing < 1:
        raise ValueError(f"mixing must be in [0, 1), got {mixing}")
    rng = np.random.default_rng(seed)

    xy_um_all = grid_to_um(rows, cols) if bin_size_um is None else np.column_stack([cols, rows]) * float(bin_size_um)
    tissue = _tissue_mask(xy_um_all, n_spots, rng)
    rows, cols, xy_um = rows[tissue], cols[tissue], xy_um_all[tissue]
    depth, edges = _layer_depth(xy_um, n_domains, rng)
    domain = np.searchsorted(edges, depth, side="right")
    shares = None
    if boundary_width > 0 or mixing > 0:  # its own generator: the easy sections keep their bits
        shares = _memberships(depth, edges, boundary_width, mixing, np.random.default_rng([seed, 1]))

    kind, owner = _gene_patterns(n_genes, n_domains, rng)
    log_expr = _log_expression(xy_um, domain, kind, owner, rng, (low, high), shares)
    proportions = np.exp(log_expr - log_expr.max(axis=1, keepdims=True))
    proportions /= proportions.sum(axis=1, keepdims=True)
    sigma = 0.35
    library = mean_library_size * np.exp(sigma * rng.standard_normal(n_spots) - sigma**2 / 2)
    counts = _nb_counts(library[:, None] * proportions, dispersion, rng)

    domain_names = [f"L{k + 1}" for k in range(n_domains)]
    width = max(4, len(str(n_genes)))
    obs = pd.DataFrame(
        {
            "in_tissue": np.ones(n_spots, dtype=int),
            "array_row": rows.astype(int),
            "array_col": cols.astype(int),
            "domain": pd.Categorical.from_codes(domain, categories=domain_names),
        },
        index=pd.Index(_barcodes(n_spots, rng), name=None),
    )
    var = pd.DataFrame(
        {
            "gene_ids": [f"ENSMUSG{i + 1:011d}" for i in range(n_genes)],
            "feature_types": "Gene Expression",
            "sim_pattern": pd.Categorical(kind, categories=["marker", "gradient", "background"]),
            "sim_domain": [domain_names[o] if o >= 0 else "" for o in owner],
        },
        index=[f"Gene{i + 1:0{width}d}" for i in range(n_genes)],
    )
    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)
    xy_px = _um_to_fullres(xy_um)
    adata.obsm["spatial"] = xy_px
    scalefactors = {
        "spot_diameter_fullres": SPOT_DIAMETER_FULLRES,
        "tissue_hires_scalef": HIRES_SCALEF,
        "fiducial_diameter_fullres": SPOT_DIAMETER_FULLRES * 1.615,
        "tissue_lowres_scalef": LOWRES_SCALEF,
    }
    if bin_size_um is not None:  # Space Ranger's scale factors of a bin folder
        scalefactors["spot_diameter_fullres"] = bin_size_um / FULLRES_UM_PER_PIXEL
        scalefactors["bin_size_um"] = float(bin_size_um)
        scalefactors["microns_per_pixel"] = FULLRES_UM_PER_PIXEL
        del scalefactors["fiducial_diameter_fullres"]
    lowres = _render_tissue(xy_px, domain, LOWRES_SCALEF, scalefactors["spot_diameter_fullres"])
    images = {"lowres": lowres}
    _plot_defaults(images, scalefactors)  # plots with squidpy's and scanpy's defaults, as a read section
    adata.uns["spatial"] = {f"sim_seed{seed}": {"images": images, "scalefactors": scalefactors}}
    return adata


# --------------------------------------------------------------------------- #
# Space Ranger writer
# --------------------------------------------------------------------------- #
def _library_entry(adata: ad.AnnData) -> tuple[str | None, dict]:
    libs = adata.uns.get("spatial", {})
    if len(libs) != 1:
        raise ValueError(f"adata.uns['spatial'] must hold exactly one library, found {list(libs)}")
    lib_id, entry = next(iter(libs.items()))
    if "spot_diameter_fullres" not in entry.get("scalefactors", {}):
        raise ValueError(f"adata.uns['spatial'][{lib_id!r}]['scalefactors'] lacks spot_diameter_fullres")
    return lib_id, entry


def _all_positions(adata: ad.AnnData) -> pd.DataFrame:
    """Positions of every grid spot: the adata's own spots plus off-tissue ones.

    Pixel positions of off-tissue spots come from the affine map array -> pixels
    fitted on the adata's spots, so this also works for sections read from disk.
    """
    row = adata.obs["array_row"].to_numpy(int)
    col = adata.obs["array_col"].to_numpy(int)
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    if pd.MultiIndex.from_arrays([row, col]).has_duplicates:
        raise ValueError("adata has several spots at the same (array_row, array_col)")
    design = np.column_stack([np.ones_like(row), col, row]).astype(float)
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)

    if lattice(row, col) == "square":
        side = max(row.max(), col.max()) + 1
        all_rows, all_cols = (axis.ravel() for axis in np.meshgrid(np.arange(side), np.arange(side), indexing="ij"))
    else:
        all_rows, all_cols = visium_grid(max(VISIUM_ROWS, row.max() + 1), max(VISIUM_COLS, col.max() + 1))
    own = pd.MultiIndex.from_arrays([row, col])
    off = ~pd.MultiIndex.from_arrays([all_rows, all_cols]).isin(own)
    off_rows, off_cols = all_rows[off], all_cols[off]
    # Rounded: least-squares noise in the last digits would only clutter the CSV.
    off_xy = np.round(np.column_stack([np.ones_like(off_rows), off_cols, off_rows]) @ coef, 4)
    in_tissue = adata.obs["in_tissue"].to_numpy(int) if "in_tissue" in adata.obs else np.ones(len(row), int)

    # Off-tissue barcodes come from their own fixed generator: deterministic,
    # and never clash with the adata's barcodes.
    off_codes = _barcodes(len(off_rows), np.random.default_rng(12345), taken=set(adata.obs_names))
    frame = pd.DataFrame(
        {
            "barcode": np.concatenate([adata.obs_names.to_numpy(str), off_codes]),
            "in_tissue": np.concatenate([in_tissue, np.zeros(len(off_rows), int)]),
            "array_row": np.concatenate([row, off_rows]),
            "array_col": np.concatenate([col, off_cols]),
            "pxl_row_in_fullres": np.concatenate([xy[:, 1], off_xy[:, 1]]),
            "pxl_col_in_fullres": np.concatenate([xy[:, 0], off_xy[:, 0]]),
        }
    )
    return frame.sort_values(["array_row", "array_col"], kind="stable").reset_index(drop=True)


def _write_positions(frame: pd.DataFrame, spatial_dir: Path, version: str) -> None:
    frame = frame.copy()
    for col in ("pxl_row_in_fullres", "pxl_col_in_fullres"):
        values = frame[col].to_numpy()
        # Space Ranger 1.x writes whole pixels; keep ints when nothing is lost.
        if np.all(values == np.round(values)):
            frame[col] = values.astype(np.int64)
    if version == "v1":
        frame.to_csv(spatial_dir / "tissue_positions_list.csv", header=False, index=False)
    elif version == "v2":
        frame.to_csv(spatial_dir / "tissue_positions.csv", header=True, index=False)
    elif version == "parquet":
        frame.to_parquet(spatial_dir / "tissue_positions.parquet", index=False)
    else:
        raise ValueError(f"positions must be 'v1', 'v2' or 'parquet', got {version!r}")


def _integer_csr(adata: ad.AnnData) -> sp.csr_matrix:
    x = sp.csr_matrix(adata.X)
    x.sum_duplicates()
    x.eliminate_zeros()
    x.sort_indices()
    if not is_raw_counts(x):
        raise ValueError("adata.X must hold non-negative integer counts to be written as a 10x matrix")
    return x


def _fixed_bytes(values) -> np.ndarray:
    """Fixed-length byte strings, as Cell Ranger/Space Ranger store text."""
    return np.array([str(v).encode() for v in values], dtype="S")


def _write_h5(adata: ad.AnnData, path: Path, library_id: str, root_attrs: bool) -> None:
    """Cell Ranger v3 HDF5: genes x spots CSC, i.e. the CSR arrays of spots x genes."""
    x = _integer_csr(adata)
    genome = adata.var["genome"] if "genome" in adata.var else ["mm10"] * adata.n_vars
    feature_types = adata.var["feature_types"] if "feature_types" in adata.var else ["Gene Expression"] * adata.n_vars
    gene_ids = adata.var["gene_ids"] if "gene_ids" in adata.var else adata.var_names
    gz = {"compression": "gzip", "compression_opts": 4}
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=_fixed_bytes(adata.obs_names))
        m.create_dataset("data", data=x.data.astype(np.int32), **gz)
        m.create_dataset("indices", data=x.indices.astype(np.int64), **gz)
        m.create_dataset("indptr", data=x.indptr.astype(np.int64), **gz)
        m.create_dataset("shape", data=np.array([adata.n_vars, adata.n_obs], dtype=np.int32))
        feats = m.create_group("features")
        feats.create_dataset("id", data=_fixed_bytes(gene_ids))
        feats.create_dataset("name", data=_fixed_bytes(adata.var_names))
        feats.create_dataset("feature_type", data=_fixed_bytes(feature_types))
        feats.create_dataset("genome", data=_fixed_bytes(genome))
        feats.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        if root_attrs:
            f.attrs["chemistry_description"] = np.bytes_("Spatial 3' v1")
            f.attrs["filetype"] = np.bytes_("matrix")
            f.attrs["library_ids"] = _fixed_bytes([library_id])
            f.attrs["original_gem_groups"] = np.array([1], dtype=np.int64)
            f.attrs["software_version"] = np.bytes_("spaceranger-1.1.0")
            f.attrs["version"] = np.int64(2)


def _save_png(img: np.ndarray, path: Path) -> None:
    rgb = np.clip(np.asarray(img, dtype=float)[..., :3], 0, 1)
    Image.fromarray((rgb * 255).round().astype(np.uint8), mode="RGB").save(path)


def _write_spatial(adata: ad.AnnData, spatial_dir: Path, entry: dict, positions: str) -> None:
    spatial_dir.mkdir()
    _write_positions(_all_positions(adata), spatial_dir, positions)
    scalefactors = {k: float(v) for k, v in entry["scalefactors"].items()}
    (spatial_dir / "scalefactors_json.json").write_text(json.dumps(scalefactors))

    images = entry.get("images", {})
    xy_px = np.asarray(adata.obsm["spatial"], dtype=float)
    domain = adata.obs["domain"].cat.codes.to_numpy() if "domain" in adata.obs else None
    for res in ("hires", "lowres"):
        img = images.get(res)
        if img is None:
            scalef = scalefactors.get(f"tissue_{res}_scalef", HIRES_SCALEF if res == "hires" else LOWRES_SCALEF)
            img = _render_tissue(xy_px, domain, scalef, scalefactors["spot_diameter_fullres"])
        _save_png(img, spatial_dir / f"tissue_{res}_image.png")


def write_spaceranger(
    adata: ad.AnnData,
    outdir: str | os.PathLike,
    positions: Literal["v1", "v2", "parquet"] = "v1",
    root_attrs: bool = True,
    sample_id: str | None = None,
    download_names: bool = False,
) -> Path:
    """Write ``adata`` as a Space Ranger ``outs/`` folder.

    Writes ``filtered_feature_bc_matrix.h5`` (Cell Ranger v3 HDF5) and
    ``spatial/`` with the positions of every grid spot (v1:
    ``tissue_positions_list.csv`` without header, v2: ``tissue_positions.csv``
    with header, parquet: ``tissue_positions.parquet``),
    ``scalefactors_json.json`` and low/high-res PNGs.

    Parameters
    ----------
    adata
        Integer counts in ``X``, ``obs["array_row"]``/``obs["array_col"]``,
        full-res pixels in ``obsm["spatial"]`` and one library in ``uns["spatial"]``.
    outdir
        Folder to create; it must not exist or be empty. Everything is written to a
        temporary folder beside it and renamed at the end, so a failure leaves
        nothing behind.
    positions
        ``"v1"`` (Space Ranger 1.x), ``"v2"`` (2.x) or ``"parquet"`` (later
        versions and Visium HD bins) positions file.
    root_attrs
        Write the HDF5 root attributes real files carry (``library_ids``, ...);
        ``False`` mimics files whose attributes were stripped by other tools.
    sample_id
        Library id written to the file; defaults to the adata's library id.
    download_names
        Name the matrix ``{sample_id}_filtered_feature_bc_matrix.h5``, as 10x's
        download pages do.

    Returns
    -------
    pathlib.Path
        The path of ``outdir``.

    Raises
    ------
    FileExistsError
        When ``outdir`` exists and is not an empty folder.
    ValueError
        When ``X`` does not hold non-negative integer counts, ``uns["spatial"]``
        does not hold exactly one library with ``spot_diameter_fullres``, two
        spots share an array position, or ``positions`` is not ``"v1"``,
        ``"v2"`` or ``"parquet"``.

    Examples
    --------
    >>> adata = dpst.sim.simulate_section(n_spots=500, n_genes=200)
    >>> outs = dpst.sim.write_spaceranger(adata, "sim_section/outs")
    >>> dpst.io.read_spaceranger(outs).shape
    (500, 200)
    """
    outdir = Path(outdir)
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        raise FileExistsError(f"{outdir} exists and is not an empty folder")
    lib_id, entry = _library_entry(adata)
    sample_id = sample_id or lib_id or outdir.name
    h5_name = f"{sample_id}_filtered_feature_bc_matrix.h5" if download_names else "filtered_feature_bc_matrix.h5"

    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=outdir.parent))
    try:
        _write_h5(adata, tmp / h5_name, sample_id, root_attrs)
        _write_spatial(adata, tmp / "spatial", entry, positions)
        tmp.chmod(0o755)  # mkdtemp makes it owner-only
        if outdir.exists():
            outdir.rmdir()  # empty, checked above
        tmp.rename(outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return outdir


def write_visium_hd(adata: ad.AnnData, outdir: str | os.PathLike, sample_id: str | None = None) -> Path:
    """Write simulated bins as a Visium HD ``outs/`` folder holding one bin size.

    The bins go to ``outdir/binned_outputs/square_{bin_size:03d}um/``, laid out as
    Space Ranger lays out a bin folder: ``filtered_feature_bc_matrix.h5`` and
    ``spatial/`` with ``tissue_positions.parquet`` and the scale factors.

    Parameters
    ----------
    adata
        Bins from :func:`simulate_section` with ``bin_size_um`` (the scale
        factors hold ``bin_size_um``).
    outdir
        Folder to create; it must not exist or be empty. Written beside it and
        renamed at the end, so a failure leaves nothing behind.
    sample_id
        Library id written to the matrix; defaults to the adata's library id.

    Returns
    -------
    pathlib.Path
        The bin folder.

    Raises
    ------
    FileExistsError
        When ``outdir`` exists and is not an empty folder.
    ValueError
        When the scale factors hold no whole ``bin_size_um``, and in the cases of
        :func:`write_spaceranger`.

    Examples
    --------
    >>> bins = dpst.sim.simulate_section(n_spots=2000, n_genes=100, bin_size_um=8)
    >>> dpst.sim.write_visium_hd(bins, "hd_section/outs")  # doctest: +SKIP
    PosixPath('hd_section/outs/binned_outputs/square_008um')
    """
    outdir = Path(outdir)
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        raise FileExistsError(f"{outdir} exists and is not an empty folder")
    _, entry = _library_entry(adata)
    bin_size = entry["scalefactors"].get("bin_size_um")
    if not isinstance(bin_size, (int, float)) or bin_size < 1 or bin_size != round(bin_size):
        raise ValueError(
            f"adata's scale factors must hold bin_size_um, a whole number of micrometres; got {bin_size!r}"
        )
    folder = Path("binned_outputs") / f"square_{round(bin_size):03d}um"
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=outdir.parent))
    try:
        write_spaceranger(adata, tmp / folder, positions="parquet", sample_id=sample_id)
        tmp.chmod(0o755)
        if outdir.exists():
            outdir.rmdir()
        tmp.rename(outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return outdir / folder
