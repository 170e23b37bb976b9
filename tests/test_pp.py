"""Preprocessing: counts kept, log-normalization, HVGs, micrometres, the hex graph, the penalty graph."""

import re
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import dpst
from dpst.graph import spatial_graph
from dpst.io import read_spaceranger
from dpst.pp import penalty_graph, preprocess, read_penalty_graph, spatial_coordinates
from dpst.sim import simulate_section


@pytest.fixture
def processed(sim_adata):
    return preprocess(sim_adata, min_counts=3000, min_cells=5, n_top_genes=80, copy=True)


def test_counts_layer_equals_input(sim_adata, processed):
    counts = processed.layers["counts"]
    assert sp.issparse(counts) and counts.format == "csr" and counts.dtype == np.float32
    assert np.all(counts.data == np.round(counts.data))
    expected = sim_adata[processed.obs_names, processed.var_names].X
    assert (counts != expected).nnz == 0


def test_x_is_log1p_of_normalized_counts(sim_adata, processed):
    # Library sizes over all genes kept by min_cells, before the HVG subset.
    kept_genes = sim_adata.var_names[np.asarray((sim_adata[processed.obs_names].X > 0).sum(axis=0)).ravel() >= 5]
    raw = sim_adata[processed.obs_names, kept_genes].X.toarray()
    library = raw.sum(axis=1, keepdims=True)
    cols = kept_genes.get_indexer(processed.var_names)
    expected = np.log1p(1e4 * raw[:, cols] / library)
    np.testing.assert_allclose(processed.X.toarray(), expected, rtol=1e-5, atol=1e-5)
    assert "log1p" in processed.uns


def test_filters_and_hvgs(sim_adata, processed):
    totals = np.asarray(sim_adata.X.sum(axis=1)).ravel()
    assert processed.n_obs == np.sum(totals >= 3000) < sim_adata.n_obs
    assert processed.n_vars == 80
    assert processed.var["highly_variable"].all()
    assert "mt" in processed.var and "total_counts" in processed.obs
    params = processed.uns["dpst_preprocess"]
    assert params["n_hvg"] == 80 and params["n_spots_in"] == sim_adata.n_obs
    assert params["n_spots_out"] == processed.n_obs


def test_hvgs_favour_spatial_genes(processed, sim_adata):
    """Background genes carry no signal, so few of them should be picked."""
    pattern = sim_adata.var.loc[processed.var_names, "sim_pattern"]
    assert (pattern == "background").mean() < (sim_adata.var["sim_pattern"] == "background").mean()


def test_n_top_genes_clipped(sim_adata):
    with pytest.warns(
        UserWarning, match="n_top_genes=5000 but only 120 genes pass filtering .min_cells=0.; keeping all 120"
    ):
        out = preprocess(sim_adata, min_counts=0, min_cells=0, n_top_genes=5000, copy=True)
    assert out.n_vars == sim_adata.n_vars
    assert out.uns["dpst_preprocess"]["n_top_genes_clipped"] is True
    assert out.uns["dpst_preprocess"]["n_hvg"] == 120


def test_calibration_recorded(processed):
    record = processed.uns["dpst_preprocess"]
    (library, calibration), *others = record["coordinates"]["libraries"].items()
    assert not others and library == next(iter(processed.uns["spatial"]))
    assert calibration["unit"] == "pixel" and calibration["method"] == "grid"
    assert calibration["um_per_pixel"] == pytest.approx(55 / 89)
    assert record["neighbors"] == {"kind": "grid", "geometry": "hexagon", "n_neighs": 6}


# Inputs that crashed scikit-misc's loess (seurat_v3) with a segfault, taking the
# job log with it. Run in a child process, so a regression fails one test only.
DEGENERATE_COUNTS = {
    "single spot": ("a = a[:1].copy()", "highly variable genes need at least 2 spots, 1 left after filtering"),
    "all zero": ("a.X = sp.csr_matrix(a.shape, dtype=np.float32)", "all counts are zero (100 spots x 60 genes)"),
    "constant": (
        "a.X = sp.csr_matrix(np.full(a.shape, 3, dtype=np.float32))",
        "needs at least 20 genes whose counts vary across spots, with as many distinct means; "
        "found 0 varying genes with 0 distinct means in 100 spots x 60 genes",
    ),
    "identical genes": (
        "a.X = sp.csr_matrix(np.repeat(a.X[:, :1].toarray(), a.n_vars, axis=1))",
        "found 60 varying genes with 1 distinct means",
    ),
}


@pytest.mark.parametrize("case", list(DEGENERATE_COUNTS))
def test_degenerate_counts_fail_cleanly_instead_of_crashing(case):
    edit, message = DEGENERATE_COUNTS[case]
    code = (
        "import numpy as np, scipy.sparse as sp, dpst\n"
        "a = dpst.sim.simulate_section(n_spots=100, n_genes=60, seed=1)\n"
        f"{edit}\n"
        "try:\n"
        "    dpst.pp.preprocess(a, min_counts=0, min_cells=0, n_top_genes=30)\n"
        "except ValueError as err:\n"
        "    print('ValueError:', err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"crashed with exit {result.returncode}: {result.stderr[-2000:]}"
    assert message in result.stdout


@pytest.mark.parametrize(
    ("setting", "error", "message"),
    [
        ({"n_top_genes": 0}, ValueError, "n_top_genes must be >= 1, got 0"),
        ({"n_top_genes": -5}, ValueError, "n_top_genes must be >= 1, got -5"),
        ({"n_top_genes": 2.5}, TypeError, "n_top_genes must be an integer, got 2.5"),
        ({"min_counts": -1}, ValueError, "min_counts must be >= 0, got -1"),
        ({"min_cells": "10"}, TypeError, "min_cells must be an integer, got '10' (str)"),
        (
            {"hvg_flavor": "seurat3"},
            ValueError,
            "hvg_flavor must be one of seurat_v3, seurat, cell_ranger, got 'seurat3'",
        ),
        ({"target_sum": float("nan")}, ValueError, "target_sum must be finite and > 0, got nan"),
    ],
)
def test_settings_that_make_no_sense(sim_adata, setting, error, message):
    with pytest.raises(error, match=re.escape(message)):
        preprocess(sim_adata, **setting)


def test_no_genes(sim_adata):
    with pytest.raises(ValueError, match=re.escape("no data to preprocess (250 spots, 0 genes)")):
        preprocess(sim_adata[:, []].copy())


def test_no_subset(sim_adata):
    out = preprocess(sim_adata, min_counts=0, min_cells=0, n_top_genes=30, subset_hvg=False, copy=True)
    assert out.n_vars == sim_adata.n_vars and out.var["highly_variable"].sum() == 30


def test_other_flavour(sim_adata):
    out = preprocess(sim_adata, min_counts=0, min_cells=0, n_top_genes=30, hvg_flavor="seurat", copy=True)
    assert out.n_vars == 30


def test_mitochondrial_genes_flagged(sim_adata):
    sim_adata.var_names = ["mt-Co1", "MT-ND1", *sim_adata.var_names[2:].to_list()]
    out = preprocess(sim_adata, min_counts=0, min_cells=0, subset_hvg=False, copy=True)
    assert out.var["mt"].iloc[:2].all() and not out.var["mt"].iloc[2:].any()
    assert (out.obs["pct_counts_mt"] > 0).all()


def test_spatial_um_and_graph(processed):
    np.testing.assert_array_equal(processed.obsm["spatial_um"], spatial_coordinates(processed))
    graph = processed.obsp["spatial_connectivities"]
    assert (graph != graph.T).nnz == 0
    degree = np.asarray(graph.sum(axis=1)).ravel()
    assert degree.max() == 6
    # Every edge joins neighbouring spots, 100 um apart.
    rows, cols = graph.nonzero()
    lengths = np.linalg.norm(processed.obsm["spatial_um"][rows] - processed.obsm["spatial_um"][cols], axis=1)
    np.testing.assert_allclose(lengths, 100.0)


def test_interior_spots_have_six_neighbours(sim_adata):
    out = preprocess(sim_adata, min_counts=0, min_cells=0, copy=True)
    spots = list(zip(out.obs["array_row"], out.obs["array_col"], strict=True))
    occupied = set(spots)
    ring = [(0, 2), (0, -2), (1, 1), (1, -1), (-1, 1), (-1, -1)]
    interior = np.array([all((r + dr, c + dc) in occupied for dr, dc in ring) for r, c in spots])
    assert interior.sum() > 100
    degree = np.asarray(out.obsp["spatial_connectivities"].sum(axis=1)).ravel()
    assert np.all(degree[interior] == 6)
    assert np.all(degree[~interior] < 6)


def test_warns_when_grid_graph_breaks(sim_adata):
    """Removing most spots makes squidpy's grid graph join second-ring spots."""
    rng = np.random.default_rng(0)
    sparse = sim_adata[rng.random(sim_adata.n_obs) < 0.4].copy()
    with pytest.warns(UserWarning, match="beyond the 100 um"):
        preprocess(sparse, min_counts=0, min_cells=0)


def test_in_place_and_after_reading(spaceranger_dir, sim_adata):
    adata = read_spaceranger(spaceranger_dir)
    returned = preprocess(adata, min_counts=0, min_cells=0, n_top_genes=50)
    assert returned is adata and adata.n_vars == 50
    assert "spatial_connectivities" in adata.obsp


def test_rejects_normalized_input(sim_adata):
    sim_adata.X = sim_adata.X * 0.5
    with pytest.raises(ValueError, match="raw counts"):
        preprocess(sim_adata)


def test_too_few_genes_for_seurat_v3():
    tiny = simulate_section(n_spots=100, n_genes=3, n_domains=2)
    with pytest.raises(ValueError, match="at least 20 genes"):
        preprocess(tiny, min_counts=0, min_cells=0)


def test_everything_filtered(sim_adata):
    with pytest.raises(ValueError, match="no data left"):
        preprocess(sim_adata, min_counts=10**9)


# --------------------------------------------------------------------------- #
# the penalty's pair graph G in obsp / uns
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("graph", ["knn", "radius", "gaussian", "all"])
def test_penalty_graph_is_spatial_graph_in_squidpy_layout(processed, graph):
    penalty_graph(processed, graph=graph, n_neighbors=6, radius=180.0, sigma=60.0)
    built = spatial_graph(spatial_coordinates(processed), graph, n_neighbors=6, radius=180.0, sigma=60.0)
    weights = processed.obsp["dpst_penalty_connectivities"]
    distances = processed.obsp["dpst_penalty_distances"]
    assert sp.issparse(weights) and (weights != weights.T).nnz == 0 and (distances != distances.T).nnz == 0
    i, j = built.edges.T
    np.testing.assert_array_equal(np.asarray(weights[i, j]).ravel(), built.weights)
    np.testing.assert_array_equal(np.asarray(distances[i, j]).ravel(), built.distances)
    assert weights.nnz == distances.nnz == 2 * built.n_edges
    record = processed.uns["dpst_penalty"]
    assert record["graph"] == graph and record["unit"] == "um" and record["n_edges"] == built.n_edges
    assert record["params"] == built.params
    (calibration,) = record["coordinates"]["libraries"].values()
    assert calibration["method"] == "grid"  # pixels calibrated on the spot grid
    assert record["connectivities_key"] == "dpst_penalty_connectivities"


def test_penalty_graph_reads_back_to_the_bit_after_h5ad(processed, tmp_path):
    penalty_graph(processed, graph="gaussian", sigma=80.0, key_added="g")
    processed.write_h5ad(tmp_path / "a.h5ad")
    stored = read_penalty_graph(ad.read_h5ad(tmp_path / "a.h5ad"), "g")
    built = spatial_graph(spatial_coordinates(processed), "gaussian", sigma=80.0)
    for field in ("edges", "weights", "distances"):
        np.testing.assert_array_equal(getattr(stored, field), getattr(built, field))
        assert getattr(stored, field).dtype == getattr(built, field).dtype
    assert (stored.kind, stored.params, stored.n_obs) == (built.kind, built.params, built.n_obs)


def test_penalty_graph_copy_and_micrometre_input(processed):
    as_um = processed.copy()
    as_um.obsm["xy"] = spatial_coordinates(processed) * 1.0
    out = penalty_graph(as_um, spatial_key="xy", coordinate_unit="um", copy=True)
    assert "dpst_penalty" not in as_um.uns and out.uns["dpst_penalty"]["coordinates"]["coordinate_unit"] == "um"
    penalty_graph(processed)
    assert (out.obsp["dpst_penalty_distances"] != processed.obsp["dpst_penalty_distances"]).nnz == 0


def test_stored_penalty_graph_errors_name_the_key(processed):
    with pytest.raises(KeyError, match=re.escape("adata.uns['nope'] is missing; build the graph with dpst.pp")):
        read_penalty_graph(processed, "nope")
    with pytest.raises(KeyError, match="not a dpst penalty graph"):
        read_penalty_graph(processed, "dpst_preprocess")
    penalty_graph(processed)
    del processed.obsp["dpst_penalty_distances"]
    with pytest.raises(KeyError, match=re.escape("adata.obsp has no 'dpst_penalty_distances'")):
        read_penalty_graph(processed)
    penalty_graph(processed)
    n_obs = processed.n_obs
    with pytest.raises(ValueError, match=re.escape(f"graph 'dpst_penalty' was built on {n_obs} spots")):
        read_penalty_graph(processed[: n_obs // 2].copy())  # anndata keeps the pairs among the kept spots
    with pytest.raises(KeyError, match=re.escape("adata.obsm has no 'nope'")):
        penalty_graph(processed, spatial_key="nope")
    with pytest.raises(ValueError, match="coordinate_unit must be"):
        penalty_graph(processed, coordinate_unit="mm")
    with pytest.raises(ValueError, match="graph kind must be one of"):
        penalty_graph(processed, graph="grid")


def test_repeated_gene_names_are_refused_before_any_change(sim_adata):
    sim_adata.var_names = [*sim_adata.var_names[:-1], sim_adata.var_names[0]]
    with pytest.raises(ValueError, match=re.escape("adata.var_names repeat (2 genes share a name")):
        preprocess(sim_adata, min_counts=10)
    assert "mt" not in sim_adata.var and not sim_adata.layers


def test_backed_data_is_refused_in_one_line(sim_adata, tmp_path):
    sim_adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(ValueError, match=re.escape("preprocess needs the data in memory; adata is backed by")):
        preprocess(backed)
    with pytest.raises(ValueError, match=re.escape("DPSCVI needs the data in memory")):
        dpst.DPSCVI(backed, layer=None)


def test_the_log_says_how_many_spots_qc_removed(sim_adata):
    out = preprocess(sim_adata, min_counts=3000, min_cells=3, n_top_genes=80, copy=True)
    removed = sim_adata.n_obs - out.n_obs
    assert removed > 0
    first = dpst.pp.describe_preprocessing(out).splitlines()[0]
    assert first.startswith(f"QC kept {out.n_obs} of {sim_adata.n_obs} spots ({removed} removed")


def test_a_failure_after_qc_leaves_the_callers_data_as_it_was(sim_adata):
    """Every check that needs the kept spots runs before anything is changed (issue: the DLPFC retry failed)."""
    sim_adata.obs["section"] = ["a"] * (sim_adata.n_obs - 12) + ["b"] * 12  # b: too few spots for a kNN graph
    sim_adata.uns["spatial_unit"] = "um"
    before = sim_adata.copy()
    with pytest.raises(ValueError, match=re.escape("library 'b' has 12 spots; the 'knn' neighbourhood graph")):
        preprocess(sim_adata, min_counts=10, library_key="section", neighbors="knn", n_neighs=12)
    assert sim_adata.shape == before.shape and not sim_adata.layers and "mt" not in sim_adata.var
    assert (sim_adata.X != before.X).nnz == 0 and list(sim_adata.obs.columns) == list(before.obs.columns)
