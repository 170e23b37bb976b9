"""Preprocessing of spatial counts with documented defaults (scanpy), up to the micrometres and the spatial graph."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import scipy.sparse as sp

from dpst._checks import check_in_memory, check_int, check_real
from dpst.graph import NEIGHBOR_KINDS, NeighborKind
from dpst.io import SPOT_SPACING_UM

from ._coordinates import CoordinateUnit, micrometre_coordinates
from ._graphs import build_neighbor_graph, write_neighbor_graph

MT_PREFIXES = ("mt-", "MT-")
MIN_GENES_SEURAT_V3 = 20
HVG_FLAVORS = ("seurat_v3", "seurat", "cell_ranger")


def stored_values(x) -> np.ndarray:
    """The stored entries of a dense or sparse matrix (a sparse one's zeros need no check).

    Parameters
    ----------
    x
        A numpy array or a scipy sparse matrix.

    Returns
    -------
    numpy.ndarray
        ``x.data`` for a sparse matrix, else ``x`` as an array.
    """
    return x.data if sp.issparse(x) else np.asarray(x)


def is_raw_counts(x) -> bool:
    """Whether a matrix holds non-negative integers only.

    Parameters
    ----------
    x
        A numpy array or a scipy sparse matrix.

    Returns
    -------
    bool
        True when every stored value is a non-negative integer (of any dtype).
    """
    values = stored_values(x)
    return bool(np.all(values >= 0) and np.all(values == np.round(values)))


def _check_unique_genes(adata: ad.AnnData) -> None:
    repeated = adata.var_names.duplicated(keep=False)
    if repeated.any():
        raise ValueError(
            f"adata.var_names repeat ({repeated.sum()} genes share a name, first {adata.var_names[repeated][0]!r}): "
            "gene selection would keep the wrong genes; run adata.var_names_make_unique() first"
        )


def _check_counts(adata: ad.AnnData) -> None:
    if not is_raw_counts(adata.X):
        raise ValueError("preprocess expects raw counts in adata.X (non-negative integers)")


def _check_settings(min_counts, min_genes, min_cells, n_top_genes, hvg_flavor, target_sum) -> None:
    """One clear line for a setting that makes no sense (before any work is done)."""
    check_int("min_counts", min_counts, minimum=0)
    check_int("min_cells", min_cells, minimum=0)
    if min_genes is not None:
        check_int("min_genes", min_genes, minimum=0)
    check_int("n_top_genes", n_top_genes, minimum=1)
    if hvg_flavor not in HVG_FLAVORS:
        raise ValueError(f"hvg_flavor must be one of {', '.join(HVG_FLAVORS)}, got {hvg_flavor!r}")
    check_real("target_sum", target_sum, above=0)


def _kept(adata: ad.AnnData, min_counts: int, min_genes: int | None, min_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """The spots and genes QC keeps (scanpy's filters on the matrix), found without changing ``adata``."""
    import scanpy as sc

    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"no data to preprocess ({adata.n_obs} spots, {adata.n_vars} genes)")
    if not stored_values(adata.X).any():
        raise ValueError(f"all counts are zero ({adata.n_obs} spots x {adata.n_vars} genes)")
    spots = sc.pp.filter_cells(adata.X, min_counts=min_counts)[0]
    if min_genes is not None:
        spots &= sc.pp.filter_cells(adata.X, min_genes=min_genes)[0]
    genes = sc.pp.filter_genes(adata.X[spots], min_cells=min_cells)[0] if spots.any() else np.zeros(adata.n_vars, bool)
    if not spots.any() or not genes.any():
        raise ValueError(
            f"no data left after filtering ({spots.sum()} spots, {genes.sum()} genes) with "
            f"min_counts={min_counts}, min_genes={min_genes}, min_cells={min_cells}"
        )
    return spots, genes


def _filter(adata: ad.AnnData, min_counts: int, min_genes: int | None, min_cells: int) -> None:
    """Scanpy's filters in place (they also record ``n_counts``, ``n_genes``, ``n_cells``): what :func:`_kept` found."""
    import scanpy as sc

    sc.pp.filter_cells(adata, min_counts=min_counts)
    if min_genes is not None:
        sc.pp.filter_cells(adata, min_genes=min_genes)
    sc.pp.filter_genes(adata, min_cells=min_cells)


def _highly_variable(adata: ad.AnnData, n_top_genes: int, flavor: str, subset: bool, batch_key: str | None) -> None:
    import scanpy as sc

    # seurat_v3 models raw counts; the other flavours expect log data in X.
    layer = "counts" if flavor == "seurat_v3" else None
    if adata.n_obs < 2:
        raise ValueError(f"highly variable genes need at least 2 spots, {adata.n_obs} left after filtering")
    if flavor == "seurat_v3":
        _check_loess_input(adata.layers["counts"])
    try:
        sc.pp.highly_variable_genes(
            adata, flavor=flavor, n_top_genes=n_top_genes, layer=layer, subset=subset, batch_key=batch_key
        )
    except Exception as err:  # skmisc's loess fails on degenerate data with various errors
        raise ValueError(
            f"highly_variable_genes(flavor={flavor!r}) failed on {adata.n_obs} spots x {adata.n_vars} genes: {err}"
        ) from err


def _check_loess_input(counts) -> None:
    """Refuse what crashes scikit-misc's loess inside seurat_v3 (a segfault takes the log with it).

    The loess fits log variance against log mean over the genes that vary; with
    fewer than ~20 such genes, or as few distinct means, it fails or segfaults
    (seen: a single spot, all-zero counts, constant counts, identical genes).
    """
    x = sp.csc_matrix(counts, dtype=np.float64)
    mean = np.asarray(x.mean(axis=0)).ravel()
    mean_sq = np.asarray(x.multiply(x).mean(axis=0)).ravel()
    varying = mean_sq - mean**2 > 1e-9 * mean_sq
    n_varying = int(varying.sum())
    n_means = len(np.unique(np.round(np.log10(mean[varying]), 9)))
    if min(n_varying, n_means) < MIN_GENES_SEURAT_V3:
        raise ValueError(
            f"highly_variable_genes(flavor='seurat_v3') needs at least {MIN_GENES_SEURAT_V3} genes whose counts "
            f"vary across spots, with as many distinct means; found {n_varying} varying genes with {n_means} "
            f"distinct means in {x.shape[0]} spots x {x.shape[1]} genes"
        )


def _check_grid_graph(adata: ad.AnnData) -> None:
    """Warn when squidpy's grid graph joins spots that are not hexagon neighbours.

    squidpy keeps the ``n_neighs`` nearest spots closer than 1.3 x the median of
    those distances; when most spots lost neighbours (e.g. heavy QC filtering),
    that median grows and second-ring spots (173, 200 um) get joined, one-way.
    """
    rows, cols = adata.obsp["spatial_connectivities"].nonzero()
    if rows.size == 0:
        return
    xy = adata.obsm["spatial_um"]
    longest = np.linalg.norm(xy[rows] - xy[cols], axis=1).max()
    if longest > 1.3 * SPOT_SPACING_UM:
        warnings.warn(
            f"spatial graph has edges up to {longest:.0f} um, beyond the {SPOT_SPACING_UM:.0f} um Visium "
            "neighbours: too many spots were filtered out for squidpy's grid graph",
            stacklevel=3,
        )


def _check_neighbor_settings(neighbors, n_neighs, radius) -> None:
    if neighbors not in NEIGHBOR_KINDS:
        raise ValueError(f"neighbors must be one of {', '.join(NEIGHBOR_KINDS)}, got {neighbors!r}")
    if n_neighs is not None:
        check_int("n_neighs", n_neighs, minimum=1)
    if neighbors == "radius" and radius is None:
        raise ValueError("neighbors='radius' needs radius= (micrometres)")
    if radius is not None:
        check_real("radius", radius, above=0)


def preprocess(
    adata: ad.AnnData,
    min_counts: int = 500,
    min_genes: int | None = None,
    min_cells: int = 10,
    n_top_genes: int = 2000,
    hvg_flavor: str = "seurat_v3",
    target_sum: float = 1e4,
    n_neighs: int | None = None,
    subset_hvg: bool = True,
    copy: bool = False,
    *,
    spatial_key: str = "spatial",
    library_key: str | None = None,
    coordinate_unit: CoordinateUnit = "auto",
    neighbors: NeighborKind = "auto",
    radius: float | None = None,
) -> ad.AnnData:
    """QC, filtering, normalization, highly variable genes, micrometres and the neighbourhood graph.

    Steps:

    0. Every setting, the counts and the coordinates (:func:`dpst.pp.spatial_coordinates`)
       are checked before anything is changed.
    1. ``var["mt"]`` flags genes starting with ``mt-``/``MT-``.
    2. Drop spots with fewer than ``min_counts`` counts (and fewer than
       ``min_genes`` genes if given), then genes seen in fewer than ``min_cells``
       spots; QC metrics (``sc.pp.calculate_qc_metrics``) of the kept data go to
       ``obs``/``var``.
    3. ``layers["counts"]``: raw counts (float32 CSR); ``X``:
       ``log1p(normalize_total(target_sum))``.
    4. ``sc.pp.highly_variable_genes(flavor=hvg_flavor)`` with
       ``n_top_genes`` clipped to the number of genes (on ``layers["counts"]`` for
       ``seurat_v3``; with ``batch_key=library_key`` when given); subset to them
       when ``subset_hvg``.
    5. ``obsm["spatial_um"]``: coordinates in micrometres, each library on its own.
    6. The neighbourhood graph chosen from the geometry (:func:`dpst.pp.spatial_neighbors`:
       the Visium hexagon, a square lattice of bins, or a kNN graph of cells), within
       each library, in ``obsp["spatial_connectivities"]``/``obsp["spatial_distances"]``.

    Parameters are recorded in ``uns["dpst_preprocess"]``.

    Parameters
    ----------
    adata
        Spots x genes with raw counts in ``X`` and coordinates in ``obsm[spatial_key]``.
    min_counts
        Spots with fewer counts are dropped.
    min_genes
        Spots with fewer detected genes are dropped (None: no such filter).
    min_cells
        Genes detected in fewer spots are dropped.
    n_top_genes
        Highly variable genes to select (clipped, with a warning, to the genes left).
    hvg_flavor
        ``"seurat_v3"`` (on raw counts), ``"seurat"`` or ``"cell_ranger"``.
    target_sum
        Counts per spot after ``normalize_total``.
    n_neighs
        Neighbours per spot of the neighbourhood graph; None: 6 on the Visium hexagon,
        4 on a square lattice, 6 for kNN.
    subset_hvg
        Keep only the highly variable genes.
    copy
        Work on a copy and return it, leaving ``adata`` as it was.
    spatial_key
        Key of the coordinates in ``adata.obsm``.
    library_key
        Column of ``adata.obs`` naming each spot's library (section), for several
        sections in one AnnData (``anndata.concat(..., label=library_key)``).
    coordinate_unit
        ``"auto"``, ``"pixel"`` or ``"um"``: see :func:`dpst.pp.spatial_coordinates`.
    neighbors
        Kind of the neighbourhood graph: ``"auto"`` (from the geometry), ``"grid"``,
        ``"knn"``, ``"radius"`` or ``"delaunay"``.
    radius
        Radius of the ``"radius"`` neighbourhood graph, in micrometres.

    Returns
    -------
    anndata.AnnData
        The processed AnnData (``adata`` itself unless ``copy``).

    Raises
    ------
    KeyError
        ``spatial_key`` or ``library_key`` is missing.
    ValueError
        ``X`` does not hold raw counts, coordinates or libraries are unusable, a
        setting makes no sense, or no data is left.

    Examples
    --------
    >>> adata = dpst.pp.preprocess(dpst.io.read_spaceranger("outs"))  # doctest: +SKIP
    >>> cells = dpst.pp.preprocess(cells, min_counts=20)  # micrometre centroids, kNN graph  # doctest: +SKIP
    """
    import scanpy as sc

    _check_settings(min_counts, min_genes, min_cells, n_top_genes, hvg_flavor, target_sum)
    _check_neighbor_settings(neighbors, n_neighs, radius)
    check_in_memory(adata, "preprocess")
    _check_unique_genes(adata)
    _check_counts(adata)
    with warnings.catch_warnings():  # every spot's coordinates; the calibration that counts is below
        warnings.simplefilter("ignore")
        micrometre_coordinates(adata, spatial_key, coordinate_unit, library_key)
    # what QC keeps, its micrometres and graph, and what gene selection needs: all checked before any change
    spots, genes = _kept(adata, min_counts, min_genes, min_cells)
    kept = adata[spots, genes]
    if kept.n_obs < 2:
        raise ValueError(f"highly variable genes need at least 2 spots, {kept.n_obs} left after filtering")
    if hvg_flavor == "seurat_v3":
        _check_loess_input(kept.X)
    coords, coordinates, libs = micrometre_coordinates(kept, spatial_key, coordinate_unit, library_key)
    graph = build_neighbor_graph(kept, coords, libs, neighbors, n_neighs=n_neighs, radius=radius)
    del kept

    adata = adata.copy() if copy else adata
    n_spots_in, n_genes_in = adata.n_obs, adata.n_vars
    adata.var["mt"] = adata.var_names.str.startswith(MT_PREFIXES)
    _filter(adata, min_counts, min_genes, min_cells)
    assert adata.n_obs == spots.sum() and adata.n_vars == genes.sum()
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)

    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)

    n_top = min(n_top_genes, adata.n_vars)
    if n_top < n_top_genes:
        warnings.warn(
            f"n_top_genes={n_top_genes} but only {adata.n_vars} genes pass filtering "
            f"(min_cells={min_cells}); keeping all {adata.n_vars}",
            stacklevel=2,
        )
    _highly_variable(adata, n_top, hvg_flavor, subset_hvg, library_key)

    # calibrated on the spots kept, as the models calibrate them
    adata.obsm["spatial_um"] = coords
    write_neighbor_graph(adata, graph, "spatial", library_key)
    if graph.params["geometry"] == "hexagon" and graph.params["kind"] == "grid":
        _check_grid_graph(adata)

    adata.uns["dpst_preprocess"] = {
        "min_counts": min_counts,
        "min_genes": min_genes,
        "min_cells": min_cells,
        "n_top_genes": n_top_genes,
        "n_hvg": n_top,
        "n_top_genes_clipped": n_top < n_top_genes,
        "hvg_flavor": hvg_flavor,
        "target_sum": target_sum,
        "subset_hvg": subset_hvg,
        "n_spots_in": n_spots_in,
        "n_genes_in": n_genes_in,
        "n_spots_out": adata.n_obs,
        "n_genes_out": adata.n_vars,
        "coordinates": coordinates,
        "neighbors": dict(adata.uns["spatial_neighbors"]["params"]),
    }
    return adata


def describe_preprocessing(adata: ad.AnnData) -> str:
    """Lines for a log: the genes kept against those asked for, each library's micrometres, the graph.

    Parameters
    ----------
    adata
        An AnnData processed by :func:`preprocess`.

    Returns
    -------
    str
        The lines.
    """
    record = adata.uns["dpst_preprocess"]
    genes = f"{record['n_hvg']} highly variable genes ({record['hvg_flavor']})"
    if record["n_top_genes_clipped"]:
        genes += f": fewer than the n_top_genes={record['n_top_genes']} asked for, all that passed filtering"
    removed = record["n_spots_in"] - record["n_spots_out"]
    qc = f"QC kept {record['n_spots_out']} of {record['n_spots_in']} spots"
    if removed:
        qc += f" ({removed} removed, {100 * removed / record['n_spots_in']:.1f}%: min_counts={record['min_counts']}"
        qc += f", min_genes={record['min_genes']})" if record["min_genes"] is not None else ")"
    lines = [qc, genes]
    for library, how in record["coordinates"]["libraries"].items():
        lines.append(f"coordinates of {library}: {describe_coordinates(how)}")
    neighbors = record["neighbors"]
    size = f"{neighbors['n_neighs']} neighbours" if "n_neighs" in neighbors else f"radius {neighbors.get('radius')} um"
    if neighbors["kind"] == "delaunay":
        size = "Delaunay triangulation"
    lines.append(f"neighbourhood graph: {neighbors['kind']} ({size}; geometry {neighbors['geometry']})")
    return "\n".join(lines)


def describe_coordinates(how: dict) -> str:
    """One library's entry of the coordinate record, in words.

    Parameters
    ----------
    how
        One value of ``record["libraries"]`` of :func:`dpst.pp.spatial_coordinates`' record.

    Returns
    -------
    str
        E.g. ``"0.3594 um per full-resolution pixel, from the spot grid (...)"``.
    """
    if how["unit"] == "um":
        return "micrometres as stored"
    source = (
        f"from the spot grid ({how['n_grid_pairs']} neighbour pairs at 100 um)"
        if how["method"] == "grid"
        else "from 65 um / spot_diameter_fullres (the grid could not be used)"
    )
    return f"{how['um_per_pixel']:.5g} um per full-resolution pixel, {source}"
