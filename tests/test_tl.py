"""dpst.tl: the metrics on a latent stored in AnnData give evaluate_model's numbers and land under key_added."""

import re

import numpy as np
import pandas as pd
import pytest

import dpst
from dpst.metrics import ellipse_summary, evaluate_model, local_metric_ellipses, spatial_autocorrelation


@pytest.fixture(scope="module")
def fitted():
    """A penalized DPVAE on a simulated section, its latent written with write_results."""
    adata = dpst.sim.simulate_section(n_spots=300, n_genes=120, seed=5)
    adata = dpst.pp.preprocess(adata, min_counts=10, min_cells=3, n_top_genes=100)
    dpst.pp.penalty_graph(adata)
    model = dpst.DPVAE(adata, alpha=100.0, graph_key="dpst_penalty", seed=1)
    model.train(max_epochs=60, progress_bar=False, device="cpu")
    key = model.write_results()
    metrics, per_dimension = evaluate_model(model)
    return adata, model, key, metrics, per_dimension


def test_autocorrelation_in_obsm_matches_the_array_function_and_squidpy(fitted):
    import squidpy as sq

    adata, _model, key, metrics, per_dimension = fitted
    adata = adata.copy()
    got = dpst.tl.spatial_autocorrelation(adata, key)
    expected = spatial_autocorrelation(adata.obsm[key], adata.obsp["spatial_connectivities"])
    for mode, statistic, column in (("moran", "I", "moran_I"), ("geary", "C", "geary_C")):
        table = sq.gr.spatial_autocorr(
            adata, attr="obsm", layer=key, mode=mode, n_perms=None, transformation=True, copy=True
        )
        # squidpy sums the float32 codes in float32; dpst in float64
        np.testing.assert_allclose(got[column], table[statistic].reindex(range(10)), rtol=1e-7)
    assert list(got.index) == [f"z{i}" for i in range(10)] and list(got.columns) == ["moran_I", "geary_C"]
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.to_numpy(), per_dimension.to_numpy(), rtol=0, atol=1e-12)
    assert adata.uns[f"{key}_autocorrelation"] is got
    assert got["moran_I"].mean() == pytest.approx(metrics["moran_I"], abs=1e-12)


def test_autocorrelation_of_a_constant_dimension_is_nan(fitted):
    adata = fitted[0].copy()
    latent = adata.obsm[fitted[2]].copy()
    latent[:, 3] = 1.5
    adata.obsm["z"] = latent
    got = dpst.tl.spatial_autocorrelation(adata, "z", key_added="ac")
    assert got.loc["z3"].isna().all() and got.drop(index="z3").notna().all().all()
    assert "ac" in adata.uns


def test_distortion_on_the_stored_graph_is_evaluate_models(fitted):
    adata, _, key, metrics, _ = fitted
    adata = adata.copy()
    got = dpst.tl.distortion(adata, key)
    for name in ("penalty", "lam", "L_0.05", "L_0.1"):
        assert got[name] == metrics[name], name
    assert adata.uns[f"{key}_distortion"] == got
    fixed = dpst.tl.distortion(adata, key, lam=2 * got["lam"], eps=(0.2,), key_added="d")
    assert fixed["lam"] == 2 * got["lam"] and fixed["penalty"] > got["penalty"] and "L_0.2" in adata.uns["d"]


def test_ellipses_in_obsm_and_their_summary_in_uns(fitted):
    adata, model, key, metrics, _ = fitted
    adata = adata.copy()
    got = dpst.tl.local_metric_ellipses(adata, key)
    expected = local_metric_ellipses(adata.obsm[key], model.coords)
    assert got.index.equals(adata.obs_names)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)
    assert adata.obsm[f"{key}_ellipses"] is got
    summary = adata.uns[f"{key}_ellipses"]
    assert summary == ellipse_summary(expected)
    assert summary["median_axis_ratio"] == metrics["median_axis_ratio"]
    assert summary["size_cv"] == metrics["size_cv"]


def test_missing_keys_and_bad_latents_are_named(fitted):
    adata = fitted[0].copy()
    with pytest.raises(KeyError, match=re.escape("adata.obsm has no 'X_nope'")):
        dpst.tl.distortion(adata, "X_nope")
    with pytest.raises(KeyError, match=re.escape("adata.uns['other'] is missing")):
        dpst.tl.distortion(adata, fitted[2], graph_key="other")
    with pytest.raises(KeyError, match=re.escape("adata.obsp has no 'grid'")):
        dpst.tl.spatial_autocorrelation(adata, fitted[2], connectivity_key="grid")
    adata.obsm["bad"] = np.where(np.arange(adata.n_obs)[:, None] == 4, np.nan, adata.obsm[fitted[2]])
    with pytest.raises(ValueError, match=re.escape("adata.obsm['bad']: the latent codes of 1 spots are NaN")):
        dpst.tl.local_metric_ellipses(adata, "bad")


def _two_blobs(batches_mixed: bool):
    """200 spots in two far-apart blobs (the labels); the two sections alternate within each, or are the blobs."""
    import anndata as ad

    rng = np.random.default_rng(0)
    labels = np.repeat(["A", "B"], 100)
    codes = rng.normal(size=(200, 5)) + np.where(labels == "A", 0.0, 100.0)[:, None]
    sections = np.tile(["s1", "s2"], 100) if batches_mixed else np.repeat(["s1", "s2"], 100)
    adata = ad.AnnData(obs=pd.DataFrame({"section": sections, "domain": labels}, index=[f"c{i}" for i in range(200)]))
    adata.obsm["X_codes"] = codes
    return adata


def test_integration_scores_tell_mixed_sections_from_separate_ones():
    pytest.importorskip("scib_metrics")
    mixed = dpst.tl.integration_scores(_two_blobs(True), "X_codes", "section", "domain")
    apart = dpst.tl.integration_scores(_two_blobs(False), "X_codes", "section", "domain")
    # mixed: two sections among every spot's neighbours (iLISI near 1), labels never (cLISI 1)
    assert mixed["iLISI"] > 0.9 and mixed["silhouette_batch"] > 0.9
    # the sections are the blobs: one section among a spot's neighbours (iLISI 0)
    assert apart["iLISI"] < 0.05
    assert np.isnan(apart["silhouette_batch"])  # no label in two sections: nothing to mix
    for scores in (mixed, apart):
        assert scores["cLISI"] == pytest.approx(1.0) and scores["silhouette_label"] > 0.95
        assert scores["n_scored"] == 200


def test_integration_scores_leave_out_unlabelled_spots_and_name_bad_keys():
    pytest.importorskip("scib_metrics")
    adata = _two_blobs(True)
    adata.obs.loc[adata.obs_names[:10], "domain"] = None
    scores = dpst.tl.integration_scores(adata, "X_codes", "section", "domain", key_added="mixing")
    assert scores["n_scored"] == 190 and adata.uns["mixing"]["n_scored"] == 190
    with pytest.raises(KeyError, match=re.escape("batch_key 'donor' is not a column of adata.obs")):
        dpst.tl.integration_scores(adata, "X_codes", "donor", "domain")
    with pytest.raises(KeyError, match=re.escape("adata.obsm has no 'X_none'")):
        dpst.tl.integration_scores(adata, "X_none", "section", "domain")
    adata.obs["section"] = "s1"
    with pytest.raises(ValueError, match="at least two batches among the labelled spots, got 1"):
        dpst.tl.integration_scores(adata, "X_codes", "section", "domain")
