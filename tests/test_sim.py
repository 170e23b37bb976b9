"""The simulator: Visium geometry, determinism, spatial structure."""

import re

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from scipy.spatial import cKDTree

import dpst
from dpst.io import um_per_pixel
from dpst.pp import spatial_coordinates
from dpst.sim import simulate_section


def test_grid_is_hexagonal(sim_adata):
    rows, cols = sim_adata.obs["array_row"].to_numpy(), sim_adata.obs["array_col"].to_numpy()
    assert np.all((rows + cols) % 2 == 0)
    assert rows.min() >= 0 and rows.max() < 78 and cols.min() >= 0 and cols.max() < 128

    assert um_per_pixel(sim_adata) == pytest.approx(55 / 89.0)
    # Space Ranger's convention: spot_diameter_fullres is the pixel width of a 65 um spot
    diameter = sim_adata.uns["spatial"]["sim_seed7"]["scalefactors"]["spot_diameter_fullres"]
    assert diameter * um_per_pixel(sim_adata) == pytest.approx(65.0)
    xy = spatial_coordinates(sim_adata)
    dist, _ = cKDTree(xy).query(xy, k=7)
    nearest = dist[:, 1]
    np.testing.assert_allclose(nearest, 100.0, rtol=1e-9)
    # Every first-ring neighbour is at 100 um, the next ring at 100 * sqrt(3).
    ring = dist[:, 1:]
    assert np.all(np.isclose(ring, 100.0) | (ring >= 100 * np.sqrt(3) - 1e-6))


def test_same_grid_step_in_array_units(sim_adata):
    """Same-row neighbours are 2 columns apart; adjacent rows shift by one column."""
    xy = spatial_coordinates(sim_adata)
    obs = sim_adata.obs.reset_index(drop=True)
    pos = {(r, c): i for i, (r, c) in enumerate(zip(obs["array_row"], obs["array_col"], strict=True))}
    for (r, c), i in pos.items():
        for dr, dc in [(0, 2), (1, 1), (1, -1)]:
            j = pos.get((r + dr, c + dc))
            if j is not None:
                assert np.linalg.norm(xy[i] - xy[j]) == pytest.approx(100.0)


def test_deterministic_by_seed():
    a = simulate_section(n_spots=120, n_genes=50, seed=3)
    b = simulate_section(n_spots=120, n_genes=50, seed=3)
    c = simulate_section(n_spots=120, n_genes=50, seed=4)
    assert (a.X != b.X).nnz == 0
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    lib = "sim_seed3"
    np.testing.assert_array_equal(a.uns["spatial"][lib]["images"]["lowres"], b.uns["spatial"][lib]["images"]["lowres"])
    assert (a.X != c.X).nnz > 0
    assert not a.obs_names.equals(c.obs_names)


@pytest.mark.parametrize("n_spots", [100, 1000, 4900])
def test_sizes_honoured(n_spots):
    adata = simulate_section(n_spots=n_spots, n_genes=30, n_domains=3, seed=0)
    assert abs(adata.n_obs - n_spots) <= 0.05 * n_spots
    assert adata.n_vars == 30
    assert set(adata.obs["domain"].cat.categories) == {"L1", "L2", "L3"}
    assert adata.obs["domain"].value_counts().min() > 0


def test_too_many_spots_rejected():
    with pytest.raises(ValueError, match="n_spots"):
        simulate_section(n_spots=5000, n_genes=10)


def test_anndata_structure(sim_adata):
    adata = sim_adata
    assert sp.issparse(adata.X) and adata.X.format == "csr"
    assert np.all(adata.X.data == np.round(adata.X.data)) and adata.X.data.min() >= 0
    assert adata.obs_names.is_unique
    assert adata.obs_names.str.fullmatch(r"[ACGT]{16}-1").all()
    assert (adata.obs["in_tissue"] == 1).all()
    assert adata.var_names[0] == "Gene0001"
    assert adata.var["gene_ids"].str.startswith("ENSMUSG").all()
    assert (adata.var["feature_types"] == "Gene Expression").all()
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2)
    (entry,) = adata.uns["spatial"].values()
    assert set(entry["scalefactors"]) == {
        "spot_diameter_fullres",
        "tissue_hires_scalef",
        "tissue_lowres_scalef",
        "fiducial_diameter_fullres",
    }
    img = entry["images"]["lowres"]
    assert img.ndim == 3 and img.shape[2] == 3 and 0 <= img.min() and img.max() <= 1


def test_library_sizes_follow_mean():
    adata = simulate_section(n_spots=300, n_genes=200, seed=1, mean_library_size=2000)
    library = np.asarray(adata.X.sum(axis=1)).ravel()
    assert np.mean(library) == pytest.approx(2000, rel=0.1)


def test_counts_spatially_structured(sim_adata):
    """Each domain's markers are clearly higher inside their domain than outside."""
    adata = sim_adata
    counts = adata.X.toarray()
    normalized = counts / counts.sum(axis=1, keepdims=True)
    domain = adata.obs["domain"].to_numpy()
    for name in adata.obs["domain"].cat.categories:
        markers = (adata.var["sim_pattern"] == "marker").to_numpy() & (adata.var["sim_domain"] == name).to_numpy()
        assert markers.any()
        inside = normalized[domain == name][:, markers].mean()
        outside = normalized[domain != name][:, markers].mean()
        assert inside > 2.5 * outside


def test_gradient_genes_vary_smoothly(sim_adata):
    """Gradient genes are correlated between neighbouring spots; background genes are not."""
    adata = sim_adata
    counts = adata.X.toarray()
    logn = np.log1p(1e4 * counts / counts.sum(axis=1, keepdims=True))
    xy = spatial_coordinates(adata)
    pairs = cKDTree(xy).query_pairs(r=101.0, output_type="ndarray")

    def neighbour_corr(kind):
        cols = (adata.var["sim_pattern"] == kind).to_numpy()
        vals = logn[:, cols]
        vals = (vals - vals.mean(axis=0)) / (vals.std(axis=0) + 1e-12)
        return np.mean(vals[pairs[:, 0]] * vals[pairs[:, 1]])

    assert neighbour_corr("gradient") > 0.2
    assert abs(neighbour_corr("background")) < 0.1


def test_harder_domains_blend_and_keep_their_bands():
    easy = dpst.sim.simulate_section(n_spots=800, n_genes=300, n_domains=4, seed=5)
    hard = dpst.sim.simulate_section(
        n_spots=800, n_genes=300, n_domains=4, seed=5, marker_fold=(1.5, 3.0), boundary_width=150.0, mixing=0.3
    )
    # the same tissue and bands; only the expression differs
    np.testing.assert_array_equal(hard.obs["domain"], easy.obs["domain"])
    np.testing.assert_array_equal(hard.obsm["spatial"], easy.obsm["spatial"])
    scores = {}
    for name, section in (("easy", easy), ("hard", hard)):
        section = dpst.pp.preprocess(section, min_counts=10, n_top_genes=200)
        section.obsm["pca"] = sc.pp.pca(section.X, n_comps=20, random_state=0)
        dpst.tl.domains(section, "pca", 4, method="gmm", covariance_type="full", key_added="found")
        scores[name] = dpst.tl.domain_scores(section, "found", truth_key="domain").loc["all", "ARI"]
    # PCA with a mixture finds the easy bands and not the blended ones: methods can differ on them
    assert scores["easy"] > 0.95 and scores["hard"] < 0.8, scores


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"marker_fold": (3.0, 2.0)}, "marker_fold must be (low, high) with 1 <= low <= high"),
        ({"boundary_width": -1.0}, "boundary_width must be >= 0 micrometres"),
        ({"mixing": 1.0}, "mixing must be in [0, 1)"),
    ],
)
def test_bad_difficulty_settings_get_one_line(setting, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dpst.sim.simulate_section(n_spots=100, n_genes=50, **setting)


def test_a_simulated_section_plots_with_squidpy_and_scanpy_defaults(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import squidpy as sq

    adata = simulate_section(n_spots=300, n_genes=60, seed=2)
    sq.pl.spatial_scatter(adata, color="domain", save=None)
    plt.close("all")
    sc.pl.spatial(adata, color="domain", show=False)
    plt.close("all")
    entry = adata.uns["spatial"]["sim_seed2"]
    assert entry["images"]["hires"] is entry["images"]["lowres"]
    assert entry["scalefactors"]["tissue_hires_scalef"] == entry["scalefactors"]["tissue_lowres_scalef"]
