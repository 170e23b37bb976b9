"""Reading Space Ranger folders: round trips, real-world variants, clear errors."""

import json
import re
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import dpst
from dpst import sim
from dpst.io import (
    POSITION_COLUMNS,
    SpaceRangerFormatError,
    grid_neighbor_pairs,
    pixel_calibration,
    read_spaceranger,
    read_visium_hd,
    um_per_pixel,
)
from dpst.pp import spatial_coordinates
from dpst.sim import write_spaceranger

H5 = "filtered_feature_bc_matrix.h5"


def assert_same_section(read, simulated):
    assert read.obs_names.equals(simulated.obs_names)
    assert read.var_names.equals(simulated.var_names)
    assert read.X.format == "csr"
    assert (read.X != simulated.X).nnz == 0
    for col in ("in_tissue", "array_row", "array_col"):
        np.testing.assert_array_equal(read.obs[col].to_numpy(), simulated.obs[col].to_numpy())
    np.testing.assert_array_equal(read.obsm["spatial"], simulated.obsm["spatial"])
    np.testing.assert_array_equal(read.var["gene_ids"], simulated.var["gene_ids"])
    np.testing.assert_array_equal(spatial_coordinates(read), spatial_coordinates(simulated))


# --------------------------------------------------------------------------- #
# writing
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("positions", ["v1", "v2", "parquet"])
def test_layout_written(tmp_path, sim_adata, positions):
    out = write_spaceranger(sim_adata, tmp_path / "outs", positions=positions)
    names = {"v1": "tissue_positions_list.csv", "v2": "tissue_positions.csv", "parquet": "tissue_positions.parquet"}
    spatial = {p.name for p in (out / "spatial").iterdir()}
    assert spatial == {names[positions], "scalefactors_json.json", "tissue_lowres_image.png", "tissue_hires_image.png"}
    if positions == "parquet":
        table = pd.read_parquet(out / "spatial" / names[positions])
        assert list(table.columns) == POSITION_COLUMNS and len(table) == 78 * 64
        return
    lines = (out / "spatial" / names[positions]).read_text().splitlines()
    header = "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres"
    assert (lines[0] == header) == (positions == "v2")
    # All 78 x 128 / 2 grid spots are listed, off-tissue ones included.
    assert len(lines) - (positions == "v2") == 78 * 64
    assert [p.name for p in tmp_path.iterdir()] == ["outs"]  # no temp dir left behind


def test_h5_matches_10x_format(spaceranger_dir, sim_adata):
    with h5py.File(spaceranger_dir / H5) as f:
        m = f["matrix"]
        assert set(m) == {"barcodes", "data", "indices", "indptr", "shape", "features"}
        assert set(m["features"]) == {"id", "name", "feature_type", "genome", "_all_tag_keys"}
        assert tuple(m["shape"][()]) == (sim_adata.n_vars, sim_adata.n_obs)
        assert len(m["indptr"]) == sim_adata.n_obs + 1  # CSC over spots
        assert m["data"].dtype == np.int32
        assert f.attrs["filetype"] == b"matrix" and f.attrs["version"] == 2
        assert f.attrs["library_ids"][0] == b"sim_seed7"
    read = sc.read_10x_h5(spaceranger_dir / H5)
    assert read.obs_names.equals(sim_adata.obs_names)
    assert (read.X != sim_adata.X).nnz == 0


def test_root_attrs_can_be_left_out(tmp_path, sim_adata):
    out = write_spaceranger(sim_adata, tmp_path / "outs", root_attrs=False)
    with h5py.File(out / H5) as f:
        assert len(f.attrs) == 0


def test_write_refuses_non_empty_outdir(tmp_path, sim_adata):
    (tmp_path / "outs").mkdir()
    (tmp_path / "outs" / "x").write_text("keep")
    with pytest.raises(FileExistsError):
        write_spaceranger(sim_adata, tmp_path / "outs")
    assert (tmp_path / "outs" / "x").read_text() == "keep"


def test_failed_write_leaves_nothing(tmp_path, sim_adata, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sim, "_save_png", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_spaceranger(sim_adata, tmp_path / "outs")
    assert list(tmp_path.iterdir()) == []


def test_non_integer_counts_rejected(tmp_path, sim_adata):
    sim_adata.X = sim_adata.X * 0.5
    with pytest.raises(ValueError, match="integer counts"):
        write_spaceranger(sim_adata, tmp_path / "outs")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- #
# reading: round trips and real-world variants
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("positions", ["v1", "v2", "parquet"])
def test_round_trip(tmp_path, sim_adata, positions):
    out = write_spaceranger(sim_adata, tmp_path / "outs", positions=positions)
    read = read_spaceranger(out)
    assert_same_section(read, sim_adata)
    assert list(read.uns["spatial"]) == ["sim_seed7"]
    entry = read.uns["spatial"]["sim_seed7"]
    assert entry["scalefactors"] == sim_adata.uns["spatial"]["sim_seed7"]["scalefactors"]
    assert entry["images"]["lowres"].shape == sim_adata.uns["spatial"]["sim_seed7"]["images"]["lowres"].shape
    assert entry["images"]["hires"].ndim == 3
    assert entry["metadata"]["software_version"].startswith("spaceranger")
    assert um_per_pixel(read) == um_per_pixel(sim_adata)


def test_h5_without_root_attrs(tmp_path, sim_adata):
    out = write_spaceranger(sim_adata, tmp_path / "S1" / "outs", positions="v2", root_attrs=False)
    read = read_spaceranger(out)
    assert_same_section(read, sim_adata)
    assert list(read.uns["spatial"]) == ["S1"]  # <sample>/outs -> sample
    assert list(read_spaceranger(out, library_id="mine").uns["spatial"]) == ["mine"]


def test_downloaded_names(tmp_path, sim_adata):
    sample = "V1_Mouse_Brain_Sagittal_Anterior"
    out = write_spaceranger(sim_adata, tmp_path / sample, root_attrs=False, sample_id=sample, download_names=True)
    assert (out / f"{sample}_{H5}").is_file() and not (out / H5).exists()
    read = read_spaceranger(out)
    assert_same_section(read, sim_adata)
    assert list(read.uns["spatial"]) == [sample]


def test_only_in_tissue_spots_in_matrix(tmp_path, sim_adata):
    """Spots marked off-tissue in the positions file are dropped, matrix order kept."""
    out = write_spaceranger(sim_adata, tmp_path / "outs", positions="v2")
    positions = out / "spatial" / "tissue_positions.csv"
    lines = positions.read_text().splitlines()
    dropped = set(sim_adata.obs_names[:10])
    lines = [line.replace(",1,", ",0,", 1) if line.split(",")[0] in dropped else line for line in lines]
    positions.write_text("\n".join(lines) + "\n")
    read = read_spaceranger(out)
    assert_same_section(read, sim_adata[10:])


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_duplicate_gene_names_made_unique(tmp_path, sim_adata):
    names = sim_adata.var_names.to_list()
    names[1] = names[0]
    sim_adata.var_names = names
    read = read_spaceranger(write_spaceranger(sim_adata, tmp_path / "outs"))
    assert read.var_names.is_unique
    assert read.var["gene_ids"].equals(sim_adata.var["gene_ids"].set_axis(read.var_names))


@pytest.mark.parametrize("pngs", ["hires and lowres", "lowres only"])
def test_spatial_plots_with_their_defaults(tmp_path, sim_adata, pngs):
    """squidpy's spatial_scatter and scanpy's spatial, called with their defaults,
    lay every spot on the tissue of the image they show; the calibration is unchanged.
    """
    import warnings

    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # docrep's SyntaxWarnings on importing squidpy
        warnings.simplefilter("ignore", SyntaxWarning)
        import squidpy as sq

    plt.switch_backend("Agg")
    out = write_spaceranger(sim_adata, tmp_path / "outs")
    if pngs == "lowres only":
        (out / "spatial" / "tissue_hires_image.png").unlink()
    read = read_spaceranger(out)
    written = sim_adata.uns["spatial"]["sim_seed7"]["scalefactors"]
    assert read.uns["spatial"]["sim_seed7"]["scalefactors"]["spot_diameter_fullres"] == written["spot_diameter_fullres"]
    assert um_per_pixel(read) == um_per_pixel(sim_adata)
    read.obs["total_counts"] = np.asarray(read.X.sum(axis=1)).ravel()

    for name, plot in {
        "squidpy": lambda: sq.pl.spatial_scatter(read, color="total_counts", return_ax=True),
        "scanpy": lambda: sc.pl.spatial(read, color="total_counts", show=False)[0],
    }.items():
        ax = plot()
        ax.figure.savefig(tmp_path / f"{name}.png")
        image = np.asarray(ax.images[0].get_array())
        background = image[0, 0]
        spots = ax.collections[0].get_paths()
        assert len(spots) == read.n_obs
        for spot in spots:
            x, y = (spot.vertices.min(axis=0) + spot.vertices.max(axis=0)) / 2
            assert np.abs(image[round(y), round(x)] - background).max() > 0.05, (name, x, y)
        plt.close(ax.figure)


# --------------------------------------------------------------------------- #
# reading: broken folders give SpaceRangerFormatError naming the file
# --------------------------------------------------------------------------- #
def test_missing_folder(tmp_path):
    with pytest.raises(SpaceRangerFormatError, match="nowhere"):
        read_spaceranger(tmp_path / "nowhere")


def test_missing_h5(spaceranger_dir):
    (spaceranger_dir / H5).unlink()
    with pytest.raises(SpaceRangerFormatError, match=H5):
        read_spaceranger(spaceranger_dir)


def test_two_downloaded_h5(spaceranger_dir):
    (spaceranger_dir / H5).rename(spaceranger_dir / f"A_{H5}")
    (spaceranger_dir / f"B_{H5}").write_bytes((spaceranger_dir / f"A_{H5}").read_bytes())
    with pytest.raises(SpaceRangerFormatError, match="several"):
        read_spaceranger(spaceranger_dir)


def test_garbage_h5(spaceranger_dir):
    (spaceranger_dir / H5).write_bytes(b"<html>404 Not Found</html>" * 100)
    with pytest.raises(SpaceRangerFormatError, match=H5):
        read_spaceranger(spaceranger_dir)


def test_truncated_h5(spaceranger_dir):
    h5 = spaceranger_dir / H5
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    with pytest.raises(SpaceRangerFormatError, match=H5):
        read_spaceranger(spaceranger_dir)


def test_h5_missing_dataset(spaceranger_dir):
    with h5py.File(spaceranger_dir / H5, "a") as f:
        del f["matrix/indptr"]
    with pytest.raises(SpaceRangerFormatError, match=H5):
        read_spaceranger(spaceranger_dir)


def test_missing_positions(spaceranger_dir):
    (spaceranger_dir / "spatial" / "tissue_positions_list.csv").unlink()
    with pytest.raises(SpaceRangerFormatError, match=r"tissue_positions.csv or tissue_positions_list.csv"):
        read_spaceranger(spaceranger_dir)


def _edit_positions(folder, edit):
    path = folder / "spatial" / "tissue_positions_list.csv"
    rows = [line.split(",") for line in path.read_text().splitlines()]
    path.write_text("\n".join(",".join(edit(i, row)) for i, row in enumerate(rows)) + "\n")


def test_positions_column_dropped(spaceranger_dir):
    _edit_positions(spaceranger_dir, lambda i, row: row[:-1])
    with pytest.raises(SpaceRangerFormatError, match=r"tissue_positions_list\.csv.*columns"):
        read_spaceranger(spaceranger_dir)


def test_positions_text_in_coordinates(spaceranger_dir):
    _edit_positions(spaceranger_dir, lambda i, row: [*row[:4], "abc", row[5]] if i == 5 else row)
    with pytest.raises(SpaceRangerFormatError, match=r"tissue_positions_list\.csv.*'abc' on line 6"):
        read_spaceranger(spaceranger_dir)


def test_positions_ragged_row(spaceranger_dir):
    _edit_positions(spaceranger_dir, lambda i, row: [*row, "7"] if i == 3 else row)
    with pytest.raises(SpaceRangerFormatError, match=r"tissue_positions_list\.csv"):
        read_spaceranger(spaceranger_dir)


def test_missing_scalefactors(spaceranger_dir):
    (spaceranger_dir / "spatial" / "scalefactors_json.json").unlink()
    with pytest.raises(SpaceRangerFormatError, match=r"scalefactors_json.json"):
        read_spaceranger(spaceranger_dir)


def test_scalefactors_without_spot_diameter(spaceranger_dir):
    path = spaceranger_dir / "spatial" / "scalefactors_json.json"
    path.write_text(json.dumps({"tissue_lowres_scalef": 0.05}))
    with pytest.raises(
        SpaceRangerFormatError,
        match=r"scalefactors_json.json: spot_diameter_fullres must be a positive finite number of pixels, got None",
    ):
        read_spaceranger(spaceranger_dir)


def test_no_common_barcodes(spaceranger_dir):
    _edit_positions(spaceranger_dir, lambda i, row: ["X" + row[0], *row[1:]])
    with pytest.raises(SpaceRangerFormatError, match=r"tissue_positions_list\.csv.*in common"):
        read_spaceranger(spaceranger_dir)


# --------------------------------------------------------------------------- #
# units
# --------------------------------------------------------------------------- #
def test_um_per_pixel_errors(sim_adata):
    with pytest.raises(ValueError, match="sim_seed7"):
        um_per_pixel(sim_adata, library_id="other")
    sim_adata.uns["spatial"]["second"] = sim_adata.uns["spatial"]["sim_seed7"]
    with pytest.raises(ValueError, match="second"):
        um_per_pixel(sim_adata)
    del sim_adata.uns["spatial"]
    with pytest.raises(ValueError, match=r"\[\]"):
        um_per_pixel(sim_adata)


def test_calibration_comes_from_the_grid(sim_adata):
    calibration = pixel_calibration(sim_adata)
    assert calibration.method == "grid" and calibration.n_grid_pairs > 500
    assert calibration.um_per_pixel == pytest.approx(55 / 89.0, rel=1e-12)
    # The simulator writes spot_diameter_fullres as Space Ranger does: a 65 um spot.
    assert calibration.spot_diameter_estimate == pytest.approx(calibration.um_per_pixel, rel=1e-12)
    assert spatial_coordinates(sim_adata) == pytest.approx(sim_adata.obsm["spatial"] * 55 / 89.0)


def test_grid_neighbor_pairs_on_a_hexagon():
    # a centre spot (2, 2) and its six neighbours
    rows = np.array([2, 2, 2, 1, 1, 3, 3])
    cols = np.array([2, 0, 4, 1, 3, 1, 3])
    pairs = grid_neighbor_pairs(rows, cols)
    touching_centre = {tuple(sorted(p)) for p in pairs.tolist() if 0 in p}
    assert touching_centre == {(0, k) for k in range(1, 7)}
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == len(pairs) == 12  # 6 spokes + 6 rim


def test_calibration_falls_back_to_the_scale_factor_saying_why(sim_adata):
    del sim_adata.obs["array_row"]
    with pytest.warns(
        UserWarning, match=r"no array_row/array_col; micrometres per pixel taken from 65 / spot_diameter_fullres"
    ):
        calibration = pixel_calibration(sim_adata)
    assert calibration.method == "spot_diameter"
    assert calibration.um_per_pixel == pytest.approx(55 / 89.0, rel=1e-12)


def test_calibration_warns_when_the_scale_factor_disagrees(sim_adata):
    # an older Space Ranger's value: the 55 um convention on a 65 um field
    scalefactors = sim_adata.uns["spatial"]["sim_seed7"]["scalefactors"]
    scalefactors["spot_diameter_fullres"] = 89.0
    with pytest.warns(
        UserWarning,
        match=r"spot grid gives 0\.618 um per pixel, 65 / spot_diameter_fullres gives 0\.7303 \(\+18%\); using the grid",
    ):
        assert um_per_pixel(sim_adata) == pytest.approx(55 / 89.0)


def test_calibration_impossible(sim_adata):
    del sim_adata.obs["array_col"]
    del sim_adata.uns["spatial"]["sim_seed7"]["scalefactors"]["spot_diameter_fullres"]
    with pytest.raises(
        ValueError, match=r"cannot calibrate pixels to micrometres: adata.obs has no array_row/array_col"
    ):
        um_per_pixel(sim_adata)


# --------------------------------------------------------------------------- #
# degenerate geometry
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("value", ["inf", "-Infinity"])
def test_positions_non_finite_pixels(spaceranger_dir, value):
    _edit_positions(spaceranger_dir, lambda i, row: [*row[:5], value] if i == 3 else row)
    with pytest.raises(
        SpaceRangerFormatError, match=rf"tissue_positions_list\.csv: non-finite pxl_col_in_fullres '{value}' on line 4"
    ):
        read_spaceranger(spaceranger_dir)


@pytest.mark.parametrize("value", ["Infinity", "true", "0", "-5", '"90"'])
def test_scalefactor_not_a_positive_finite_number(spaceranger_dir, value):
    path = spaceranger_dir / "spatial" / "scalefactors_json.json"
    path.write_text(path.read_text().replace(str(json.loads(path.read_text())["spot_diameter_fullres"]), value))
    with pytest.raises(
        SpaceRangerFormatError,
        match=r"scalefactors_json\.json: spot_diameter_fullres must be a positive finite number of pixels",
    ):
        read_spaceranger(spaceranger_dir)


def test_all_spots_at_one_position(spaceranger_dir):
    _edit_positions(spaceranger_dir, lambda i, row: [*row[:4], "1000", "2000"])
    with pytest.raises(
        SpaceRangerFormatError,
        match=r"tissue_positions_list\.csv: all 250 in-tissue spots sit at the same pixel position \(2000, 1000\)",
    ):
        read_spaceranger(spaceranger_dir)


def test_duplicated_positions_warn_with_counts(spaceranger_dir):
    on_tissue = [i for i, row in enumerate(_positions(spaceranger_dir)) if row[1] == "1"]
    first = _positions(spaceranger_dir)[on_tissue[0]]
    copy_to = set(on_tissue[1:4])
    _edit_positions(spaceranger_dir, lambda i, row: row[:2] + first[2:] if i in copy_to else row)
    with pytest.warns(UserWarning) as caught:  # noqa: PT030 - both messages are checked below
        read_spaceranger(spaceranger_dir)
    messages = [str(w.message) for w in caught]
    assert any("3 of 250 in-tissue spots repeat the pixel position of another spot" in m for m in messages)
    assert any("3 of 250 in-tissue spots repeat the array_row/array_col of another spot" in m for m in messages)


def _positions(folder):
    return [line.split(",") for line in (folder / "spatial" / "tissue_positions_list.csv").read_text().splitlines()]


def test_positions_are_read_by_their_header_names(tmp_path, sim_adata):
    out = write_spaceranger(sim_adata, tmp_path / "outs", positions="v2")
    expected = read_spaceranger(out)
    positions = pd.read_csv(out / "spatial" / "tissue_positions.csv", dtype=str)
    # the same table with the pixel columns in the other order: x and y must not swap
    shuffled = positions[["barcode", "in_tissue", "array_row", "array_col", "pxl_col_in_fullres", "pxl_row_in_fullres"]]
    shuffled.to_csv(out / "spatial" / "tissue_positions.csv", index=False)
    read = read_spaceranger(out)
    np.testing.assert_array_equal(read.obsm["spatial"], expected.obsm["spatial"])
    positions.rename(columns={"array_col": "col"}).to_csv(out / "spatial" / "tissue_positions.csv", index=False)
    with pytest.raises(SpaceRangerFormatError, match="does not name the columns"):
        read_spaceranger(out)


# --------------------------------------------------------------------------- #
# parquet positions (Space Ranger 3.x+ and Visium HD)
# --------------------------------------------------------------------------- #
@pytest.fixture
def parquet_dir(tmp_path, sim_adata):
    return write_spaceranger(sim_adata, tmp_path / "outs", positions="parquet")


def _rewrite_positions(folder, change):
    path = folder / "spatial" / "tissue_positions.parquet"
    table = pd.read_parquet(path)
    change(table).to_parquet(path, index=False)
    return path


def test_parquet_columns_are_read_by_name(parquet_dir, sim_adata):
    _rewrite_positions(parquet_dir, lambda t: t[list(reversed(POSITION_COLUMNS))])
    assert_same_section(read_spaceranger(parquet_dir), sim_adata)


def test_parquet_without_a_column(parquet_dir):
    path = _rewrite_positions(parquet_dir, lambda t: t.drop(columns="array_col"))
    with pytest.raises(SpaceRangerFormatError, match=f"^{re.escape(str(path))}: no column array_col"):
        read_spaceranger(parquet_dir)


def test_parquet_non_finite_pixel_names_its_row(parquet_dir):
    def spoil(table):
        table["pxl_row_in_fullres"] = table["pxl_row_in_fullres"].astype(float)
        table.loc[4, "pxl_row_in_fullres"] = np.inf
        return table

    path = _rewrite_positions(parquet_dir, spoil)
    with pytest.raises(
        SpaceRangerFormatError, match=f"{re.escape(str(path))}: non-finite pxl_row_in_fullres .* row 5$"
    ):
        read_spaceranger(parquet_dir)


def test_unreadable_parquet(parquet_dir):
    path = parquet_dir / "spatial" / "tissue_positions.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(SpaceRangerFormatError, match=f"^{re.escape(str(path))}: cannot read as parquet"):
        read_spaceranger(parquet_dir)


# --------------------------------------------------------------------------- #
# Visium HD bins
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def hd_bins():
    return sim.simulate_section(n_spots=1500, n_genes=60, seed=3, bin_size_um=8)


@pytest.fixture
def hd_outs(tmp_path, hd_bins):
    sim.write_visium_hd(hd_bins, tmp_path / "mouse_hd" / "outs")
    return tmp_path / "mouse_hd" / "outs"


def test_visium_hd_bins_read_back_in_micrometres(hd_outs, hd_bins):
    bins = read_visium_hd(hd_outs, bin_size=8)
    assert list(bins.uns["spatial"]) == ["mouse_hd_square_008um"]
    assert bins.obs_names.equals(hd_bins.obs_names) and (bins.X != hd_bins.X).nnz == 0
    np.testing.assert_array_equal(bins.obsm["spatial"], hd_bins.obsm["spatial"])
    um = spatial_coordinates(bins)
    written = np.c_[hd_bins.obs["array_col"], hd_bins.obs["array_row"]] * 8.0  # the simulator's micrometres
    np.testing.assert_allclose(um - um.min(axis=0), written - written.min(axis=0), atol=1e-9)
    how = pixel_calibration(bins)
    assert how.method == "bin_grid" and how.metadata_estimate == pytest.approx(how.um_per_pixel)


def test_visium_hd_is_found_from_each_folder_level(hd_outs):
    bin_folder = hd_outs / "binned_outputs" / "square_008um"
    for path in (hd_outs, hd_outs / "binned_outputs", bin_folder):
        assert list(read_visium_hd(path).uns["spatial"]) == ["mouse_hd_square_008um"]
    assert list(read_visium_hd(hd_outs, library_id="A1").uns["spatial"]) == ["A1"]


def test_visium_hd_bins_get_the_square_graph(hd_outs):
    bins = read_visium_hd(hd_outs)
    dpst.pp.preprocess(bins, min_counts=0, min_cells=0, n_top_genes=40)
    assert bins.uns["spatial_neighbors"]["params"] == {"kind": "grid", "geometry": "square", "n_neighs": 4}
    i, j = bins.obsp["spatial_connectivities"].nonzero()
    um = spatial_coordinates(bins)
    np.testing.assert_allclose(np.linalg.norm(um[i] - um[j], axis=1), 8.0)


def test_visium_hd_missing_bin_size_lists_the_bins(hd_outs):
    with pytest.raises(SpaceRangerFormatError, match=r"binned_outputs: no square_016um folder .*square_008um\)$"):
        read_visium_hd(hd_outs, bin_size=16)
    with pytest.raises(ValueError, match="bin_size must be a positive whole number"):
        read_visium_hd(hd_outs, bin_size=8.5)


def _edit_scalefactors(hd_outs, **changes):
    path = hd_outs / "binned_outputs" / "square_008um" / "spatial" / "scalefactors_json.json"
    values = json.loads(path.read_text()) | changes
    path.write_text(json.dumps({k: v for k, v in values.items() if v is not None}))
    return path


def test_visium_hd_scalefactors_that_contradict_each_other(hd_outs):
    path = _edit_scalefactors(hd_outs, microns_per_pixel=0.27)
    with pytest.raises(SpaceRangerFormatError, match=f"^{re.escape(str(path))}: microns_per_pixel 0.27 contradicts"):
        read_visium_hd(hd_outs)


def test_visium_hd_bin_size_that_contradicts_the_folder(hd_outs):
    path = _edit_scalefactors(hd_outs, bin_size_um=16.0, spot_diameter_fullres=16 / 0.6179775280898876)
    with pytest.raises(SpaceRangerFormatError, match=f"^{re.escape(str(path))}: bin_size_um 16 contradicts the folder"):
        read_visium_hd(hd_outs)


def test_visium_hd_without_bin_size_takes_the_folders(hd_outs):
    _edit_scalefactors(hd_outs, bin_size_um=None)
    bins = read_visium_hd(hd_outs)
    assert next(iter(bins.uns["spatial"].values()))["scalefactors"]["bin_size_um"] == 8.0


def test_pixels_that_contradict_the_bins_metadata_are_refused(hd_outs):
    bins = read_visium_hd(hd_outs)
    bins.obsm["spatial"] = bins.obsm["spatial"] * 1.5  # the image was rescaled; the scale factors were not
    with pytest.raises(
        ValueError, match=r"library 'mouse_hd_square_008um': scalefactors microns_per_pixel .* contradicts"
    ):
        spatial_coordinates(bins)


def test_bins_with_microns_per_pixel_only(hd_outs):
    bins = read_visium_hd(hd_outs)
    scalefactors = next(iter(bins.uns["spatial"].values()))["scalefactors"]
    del scalefactors["bin_size_um"]
    how = pixel_calibration(bins)
    assert how.method == "microns_per_pixel" and how.um_per_pixel == scalefactors["microns_per_pixel"]


# --------------------------------------------------------------------------- #
# tables made by spatialdata-io's readers
# --------------------------------------------------------------------------- #
def test_spatialdata_io_visium_table_gives_the_same_micrometres(tmp_path, sim_adata):
    spatialdata_io = pytest.importorskip("spatialdata_io")
    outs = write_spaceranger(sim_adata, tmp_path / "S1" / "outs", positions="v2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its own deprecation notices
        table = spatialdata_io.visium(outs, dataset_id="S1").tables["table"]
    np.testing.assert_allclose(spatial_coordinates(table), spatial_coordinates(read_spaceranger(outs)), rtol=1e-12)


def _hd_feature_slice(outs):
    """The one file of a Visium HD output that spatialdata-io reads and the bins do not need: its layout metadata."""
    identity = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    names = ("cytassist", "spot"), ("spot", "cytassist"), ("microscope", "spot"), ("spot", "microscope")
    metadata = {
        "hd_layout_json": json.dumps({"file_format": "1.0", "transform": identity}),
        "transform_matrices": {f"{a}_colrow_to_{b}_colrow": identity for a, b in names},
    }
    with h5py.File(outs / "feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps(metadata)


def test_spatialdata_io_visium_hd_table_in_pixels_is_refused_not_misread(hd_outs, hd_bins):
    spatialdata_io = pytest.importorskip("spatialdata_io")
    _hd_feature_slice(hd_outs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = spatialdata_io.visium_hd(hd_outs, bin_size=8, load_segmentations_only=False).tables["square_008um"]
    np.testing.assert_array_equal(table.obsm["spatial"], read_visium_hd(hd_outs).obsm["spatial"])  # pixels
    with pytest.raises(ValueError, match=r"square lattice .* 12.95 apart, not one of Visium HD's bin widths"):
        spatial_coordinates(table)  # no uns["spatial"]: "auto" would have taken pixels as micrometres
