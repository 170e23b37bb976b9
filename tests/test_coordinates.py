"""dpst.pp.spatial_coordinates: the one rule from stored coordinates to micrometres, and its refusals."""

from __future__ import annotations

import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import dpst
from dpst.pp import spatial_coordinates


def cell_table(n_cells: int = 600, seed: int = 0) -> ad.AnnData:
    """Simulated counts at random micrometre centroids: no uns['spatial'], no array grid (an imaging platform)."""
    adata = dpst.sim.simulate_section(n_spots=n_cells, n_genes=100, seed=seed)
    rng = np.random.default_rng(seed)
    cells = ad.AnnData(adata.X.copy(), obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]), var=adata.var)
    cells.obsm["spatial"] = rng.uniform(0.0, 2000.0, size=(n_cells, 2))
    return cells


@pytest.fixture
def cells():
    return cell_table()


def test_micrometres_are_taken_as_they_are(cells):
    np.testing.assert_array_equal(spatial_coordinates(cells), cells.obsm["spatial"])
    assert spatial_coordinates(cells).dtype == np.float64


def test_pixels_are_calibrated_per_the_grid(sim_adata):
    factor = dpst.io.um_per_pixel(sim_adata)
    expected = sim_adata.obsm["spatial"] * factor
    np.testing.assert_array_equal(spatial_coordinates(sim_adata), expected)
    np.testing.assert_array_equal(spatial_coordinates(sim_adata, unit="pixel"), expected)
    np.testing.assert_array_equal(spatial_coordinates(sim_adata, unit="um"), sim_adata.obsm["spatial"])


def test_spatial_unit_um_overrides_a_library_entry(sim_adata):
    sim_adata.uns["spatial_unit"] = "um"  # as the curated DLPFC files say
    np.testing.assert_array_equal(spatial_coordinates(sim_adata), sim_adata.obsm["spatial"])


def test_grid_calibrates_pixels_without_scalefactors(sim_adata):
    expected = spatial_coordinates(sim_adata)
    del sim_adata.uns["spatial"]
    np.testing.assert_array_equal(spatial_coordinates(sim_adata, unit="pixel"), expected)


def test_uncalibratable_pixels_say_what_to_pass(cells):
    with pytest.raises(ValueError, match=re.escape("cannot calibrate pixels to micrometres")) as error:
        spatial_coordinates(cells, unit="pixel")
    assert "coordinate_unit='um'" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda a: a.obsm.__setitem__("spatial", np.c_[a.obsm["spatial"], np.ones(a.n_obs)]), ValueError,
         "has shape (600, 3); dpst needs planar (x, y) coordinates"),
        (lambda a: a.obsm["spatial"].__setitem__((5, 1), np.nan), ValueError,
         "NaN or infinite coordinates for 1 of 600 spots (first: 'cell5')"),
        (lambda a: a.obsm.__delitem__("spatial"), KeyError, "adata.obsm has no 'spatial'"),
    ],
    ids=["3-d", "nan", "missing"],
)  # fmt: skip
def test_bad_coordinates_get_one_line(cells, change, error, message):
    change(cells)
    with pytest.raises(error, match=re.escape(message)):
        spatial_coordinates(cells)


def test_bad_libraries_get_one_line(cells):
    with pytest.raises(KeyError, match=re.escape("adata.obs has no 'section' column (library_key)")):
        spatial_coordinates(cells, library_key="section")
    cells.obs["section"] = ["a"] * 599 + ["b"]
    with pytest.raises(ValueError, match=re.escape("library 'b' (adata.obs['section']) has 1 spot")):
        spatial_coordinates(cells, library_key="section")
    cells.obs["section"] = ["a"] * 300 + [None] * 300
    with pytest.raises(ValueError, match=re.escape("adata.obs['section'] is missing for 300 of 600 spots")):
        spatial_coordinates(cells, library_key="section")
    cells.obs["section"] = ["a"] * 300 + ["b"] * 300
    cells.obs_names = [f"cell{i % 300}" for i in range(600)]
    with pytest.raises(
        ValueError, match=re.escape("repeat across libraries (600 spots share a name, first 'cell0' in a, b")
    ):
        spatial_coordinates(cells, library_key="section")


def test_a_library_without_its_pixel_calibration_is_refused(sim_adata):
    sim_adata.obs["section"] = ["a"] * 100 + ["b"] * 150
    with pytest.raises(ValueError, match=re.escape("library 'a' of adata.obs['section'] has no entry in adata.uns")):
        spatial_coordinates(sim_adata, library_key="section")
    np.testing.assert_array_equal(
        spatial_coordinates(sim_adata, unit="um", library_key="section"), sim_adata.obsm["spatial"]
    )
    sim_adata.obs["section"] = "one"  # one library takes the only entry, whatever its name
    np.testing.assert_array_equal(spatial_coordinates(sim_adata, library_key="section"), spatial_coordinates(sim_adata))


def test_several_pixel_libraries_need_a_library_key(sim_adata):
    sim_adata.uns["spatial"]["other"] = sim_adata.uns["spatial"][next(iter(sim_adata.uns["spatial"]))]
    with pytest.raises(ValueError, match=re.escape("pass library_key= the obs column naming each spot's library")):
        spatial_coordinates(sim_adata)


def test_preprocess_refuses_bad_coordinates_before_changing_anything(cells):
    cells.obsm["spatial"][3] = np.inf
    before = cells.copy()
    with pytest.raises(ValueError, match="NaN or infinite coordinates"):
        dpst.pp.preprocess(cells, min_counts=10)
    assert cells.n_vars == before.n_vars and not cells.layers and "mt" not in cells.var
    assert (cells.X != before.X).nnz == 0


def test_a_cell_table_goes_through_preprocess_models_and_metrics(cells):
    adata = dpst.pp.preprocess(cells, min_counts=10, min_cells=3, n_top_genes=80)
    record = adata.uns["dpst_preprocess"]
    assert record["neighbors"] == {"kind": "knn", "geometry": "none", "n_neighs": 6}
    assert record["coordinates"]["libraries"] == {"all": {"unit": "um", "conversion": "none (taken as micrometres)"}}
    np.testing.assert_array_equal(adata.obsm["spatial_um"], adata.obsm["spatial"])
    degree = np.asarray(adata.obsp["spatial_connectivities"].sum(axis=1)).ravel()
    assert (degree == 6).all()  # squidpy's kNN: 6 neighbours each
    assert "micrometres as stored" in dpst.pp.describe_preprocessing(adata)
    for model_class in (dpst.DPVAE, dpst.DPSCVI):
        model = model_class(adata, n_neighbors=8, seed=0).train(max_epochs=20, progress_bar=False, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every metric is defined on a cell table
            metrics, _ = dpst.metrics.evaluate_model(model)
        assert all(np.isfinite(v) for k, v in metrics.items())
        key = model.write_results()
        assert adata.uns[key]["params"]["spatial_key"] == "spatial"
        dpst.tl.spatial_autocorrelation(adata, key)
        dpst.tl.local_metric_ellipses(adata, key)


@pytest.mark.parametrize(("kind", "extra"), [("radius", {"radius": 150.0}), ("delaunay", {}), ("knn", {"n_neighs": 4})])
def test_neighbourhood_graph_kinds_can_be_forced(cells, kind, extra):
    dpst.pp.spatial_neighbors(cells, kind, **extra)
    params = cells.uns["spatial_neighbors"]["params"]
    assert params["kind"] == kind and params["geometry"] == "none"
    graph = cells.obsp["spatial_connectivities"]
    assert graph.shape == (600, 600) and graph.nnz > 0 and graph.diagonal().sum() == 0
    if kind == "radius":
        rows, cols = graph.nonzero()
        lengths = np.linalg.norm(cells.obsm["spatial"][rows] - cells.obsm["spatial"][cols], axis=1)
        assert lengths.max() <= 150.0


def test_square_lattice_gets_the_four_neighbour_grid():
    rows, cols = np.divmod(np.arange(400), 20)
    bins = ad.AnnData(
        obs=pd.DataFrame({"array_row": rows, "array_col": cols}, index=[f"b{i}" for i in range(400)]),
        obsm={"spatial": np.c_[cols, rows] * 8.0},  # 8 um bins, already micrometres
    )
    dpst.pp.spatial_neighbors(bins)
    assert bins.uns["spatial_neighbors"]["params"] == {"kind": "grid", "geometry": "square", "n_neighs": 4}
    connected = bins.obsp["spatial_connectivities"]
    i, j = connected.nonzero()
    lengths = np.linalg.norm(bins.obsm["spatial"][i] - bins.obsm["spatial"][j], axis=1)
    assert np.allclose(lengths, 8.0)


def test_a_square_lattice_in_pixels_is_refused_not_calibrated_as_a_hexagon():
    rows, cols = np.divmod(np.arange(400), 20)
    bins = ad.AnnData(
        obs=pd.DataFrame({"array_row": rows, "array_col": cols}, index=[f"b{i}" for i in range(400)]),
        obsm={"spatial": np.c_[cols, rows] * 30.0},  # 8 um bins at ~0.27 um per pixel
        uns={"spatial": {"hd": {"scalefactors": {"spot_diameter_fullres": 30.0}}}},
    )
    with pytest.raises(ValueError, match=re.escape("library 'hd': array_row/array_col form a square lattice")):
        spatial_coordinates(bins)
    np.testing.assert_array_equal(spatial_coordinates(bins, unit="um"), bins.obsm["spatial"])


# --------------------------------------------------------------------------- #
# tables from other readers (spatialdata-io keeps pixels without uns["spatial"])
# --------------------------------------------------------------------------- #
def test_a_visium_table_in_pixels_is_not_taken_as_micrometres(sim_adata):
    table = sim_adata.copy()
    del table.uns["spatial"]  # as spatialdata-io's Visium table: pixels in obsm, the grid in obs
    with pytest.raises(ValueError, match=r"library 'all': .* hexagon lattice .* are 161.8 apart, not 100 um"):
        spatial_coordinates(table)
    np.testing.assert_array_equal(spatial_coordinates(table, unit="um"), table.obsm["spatial"])  # stated: trusted
    table.obsm["spatial"] = spatial_coordinates(sim_adata)  # micrometres: 100 um apart, taken as they are
    np.testing.assert_array_equal(spatial_coordinates(table), table.obsm["spatial"])


def test_visium_hd_bins_in_pixels_are_not_taken_as_micrometres():
    bins = dpst.sim.simulate_section(n_spots=800, n_genes=30, bin_size_um=8, seed=2)
    del bins.uns["spatial"]
    with pytest.raises(
        ValueError, match=r"square lattice .* are 12.95 apart, not one of Visium HD's bin widths \(2, 8, 16 um\)"
    ):
        spatial_coordinates(bins)
    bins.obsm["spatial"] = np.c_[bins.obs["array_col"], bins.obs["array_row"]] * 8.0
    np.testing.assert_array_equal(spatial_coordinates(bins), bins.obsm["spatial"])


def test_a_xenium_like_cell_table_keeps_its_micrometres(cells):
    # laid out as spatialdata-io's Xenium table: cell centroids in micrometres, no image entry, no grid
    cells.obs["cell_id"] = cells.obs_names.to_numpy()
    cells.obs["region"] = pd.Categorical(["cell_circles"] * cells.n_obs)
    cells.uns["spatialdata_attrs"] = {"region": "cell_circles", "region_key": "region", "instance_key": "cell_id"}
    centroids = cells.obsm["spatial"].copy()
    dpst.pp.preprocess(cells, min_counts=0, min_cells=0)
    np.testing.assert_array_equal(spatial_coordinates(cells), centroids)
    assert cells.uns["spatial_neighbors"]["params"]["geometry"] == "none"
    assert cells.uns["spatial_neighbors"]["params"]["kind"] == "knn"
