"""The study's joint runs (workflow/dpst_study): a group of sections read and stacked, its rows
in Table 1, its clusters and scib-metrics scores. The workflow runs them on the demo
(tests/test_workflow.py); here each piece on small inputs, with the cases the demo lacks."""

from __future__ import annotations

import html

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import dpst
from dpst_study import tables
from dpst_study.joint import run_column, score_joint_run
from dpst_study.sections import SIMULATED_DOMAINS, read_group

SETTINGS = {"n_domains": 3, "method": "gmm", "covariance_type": "tied", "refine": False, "fit_seeds": [0]}


def grid_spacing(xy: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    pairs = dpst.io.grid_neighbor_pairs(rows, cols)
    return float(np.median(np.linalg.norm(xy[pairs[:, 0]] - xy[pairs[:, 1]], axis=1)))


def test_a_group_of_a_space_ranger_folder_and_an_h5ad_in_micrometres(tmp_path):
    """Pixels and micrometres in one group: each section's own coordinates and labels, then one preprocessing."""
    first = dpst.sim.simulate_section(n_spots=120, n_genes=60, n_domains=3, seed=1)
    folder = dpst.sim.write_spaceranger(first, tmp_path / "P1", sample_id="lib_P1")
    first.obs["domain"].rename_axis("barcode").to_csv(folder / SIMULATED_DOMAINS)  # as the simulate rule does
    second = dpst.sim.simulate_section(n_spots=150, n_genes=60, n_domains=3, seed=2)
    # an AnnData file in micrometres, under another obsm key, its annotation in "layer"
    um = dpst.pp.spatial_coordinates(second)
    cells = ad.AnnData(X=second.X, obs=second.obs[["array_row", "array_col"]].copy(), var=second.var[[]].copy())
    cells.obs["layer"] = ("L" + second.obs["domain"].astype(str)).to_numpy()
    cells.obsm["xy_um"] = um
    cells.write_h5ad(tmp_path / "cells.h5ad")

    adata, notes = read_group(
        {
            "P1": {"folder": str(folder)},
            "H1": {
                "h5ad": str(tmp_path / "cells.h5ad"),
                "spatial_key": "xy_um",
                "coordinate_unit": "um",
                "domain_key": "layer",
            },
        }
    )
    assert list(adata.obs["section"].cat.categories) == ["P1", "H1"]
    assert adata.n_obs == 270 and adata.obs_names.is_unique and adata.uns["spatial_unit"] == "um"
    assert list(adata.uns["spatial"]) == ["P1"]  # the folder's images, under the section's name
    assert "um per full-resolution pixel" in notes[0] and "micrometres as stored" in notes[1]
    assert "labels from obs['domain']" in notes[0] and "labels from obs['layer']" in notes[1]
    part = adata.obs["section"] == "P1"
    assert adata.obs.loc[part, "annotation"].tolist() == first.obs["domain"].astype(str).tolist()
    assert adata.obs.loc[~part, "annotation"].str.startswith("L").all()

    processed = dpst.pp.preprocess(adata, min_counts=1, min_cells=1, n_top_genes=40, library_key="section")
    record = processed.uns["dpst_preprocess"]["coordinates"]
    assert record["library_key"] == "section" and set(record["libraries"]) == {"P1", "H1"}
    rows, cols = processed.obs["array_row"].to_numpy(), processed.obs["array_col"].to_numpy()
    for name in ("P1", "H1"):  # Visium spots, 100 um apart, in both
        mine = (processed.obs["section"] == name).to_numpy()
        spacing = grid_spacing(processed.obsm["spatial_um"][mine], rows[mine], cols[mine])
        assert spacing == pytest.approx(100.0, abs=1.0)
    np.testing.assert_allclose(processed.obsm["spatial_um"][~part.to_numpy()], um)


def test_a_group_without_shared_genes_is_one_line(tmp_path):
    sections = {}
    for name, seed in (("A", 1), ("B", 2)):
        section = dpst.sim.simulate_section(n_spots=60, n_genes=30, seed=seed)
        section.var_names = [f"{name}_{gene}" for gene in section.var_names]
        section.write_h5ad(tmp_path / f"{name}.h5ad")
        sections[name] = {"h5ad": str(tmp_path / f"{name}.h5ad")}
    with pytest.raises(ValueError, match=r"^sections A, B share no gene$"):
        read_group(sections)


def runs_with_joint() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    keys = [(m, a, seed) for m in ("vae", "scvi") for a in (0.0, 100.0) for seed in (0, 1)]
    single = pd.DataFrame(
        [
            {"section": s, "model": m, "alpha": a, "seed": seed, "moran_I": rng.uniform(), "geary_C": rng.uniform()}
            for s in ("A1", "A2", "P1")
            for m, a, seed in keys
        ]
    )
    joint = pd.DataFrame(
        [
            {"group": "ant", "section": s, "model": m, "alpha": a, "seed": seed, "moran_I": 0.9, "geary_C": 0.1}
            for m, a, seed in keys
            for s in ("A1", "A2", "all")
        ]
    )
    return tables.stack_joint_runs(single, joint)


def test_table1_puts_each_group_after_the_single_section_rows_of_its_model():
    runs = runs_with_joint()
    assert "all" not in set(runs["section"])  # a group's rows over all its spots are not Table 1's
    long = tables.table1(runs, 100.0, sections=["A1", "A2", "P1"])
    assert set(long["joint"]) == {"", "ant"} and len(long) == 2 * 2 * 2 * 3 + 2 * 2 * 2 * 2
    wide = tables.table1_wide(long)
    assert list(wide["method"][:4]) == ["VAE", "VAE, joint (ant)", "scVI", "scVI, joint (ant)"]
    row = wide[(wide["group"] == "Distorted") & (wide["method"] == "VAE, joint (ant)")].iloc[0]
    assert (row["I A1"], row["C A2"], row["I P1"]) == ("0.90 (0.00)", "0.10 (0.00)", "n/a")  # P1 is not in it
    single = tables.table1(runs[runs["joint"] == ""].drop(columns="joint"), 100.0)
    pd.testing.assert_frame_equal(tables.single_section(long).drop(columns="joint").reset_index(drop=True), single)


def test_write_table1_compares_only_single_section_runs_with_the_study(tmp_path):
    paths = {"html": tmp_path / "t.html", "compare_csv": tmp_path / "c.csv"}
    tables.write_table1(runs_with_joint(), 100.0, paths, sections=["A1", "A2", "P1"])
    compare = pd.read_csv(paths["compare_csv"])
    assert len(compare) == 2 * 2 * 2 * 3 and "joint" not in compare.columns
    note = html.unescape(paths["html"].read_text())
    assert "Rows 'joint (group)'" in note and "n/a for sections outside the group (groups: ant)" in note


def test_a_duplicate_joint_run_is_refused():
    runs = runs_with_joint()
    with pytest.raises(ValueError, match=r"duplicate runs for \(joint, section, model, alpha, seed\)"):
        tables.table1(pd.concat([runs, runs[runs["joint"] == "ant"].head(1)]), 100.0)


def joint_latent(labelled: bool) -> tuple[ad.AnnData, pd.DataFrame]:
    """Two sections of three well-separated labels each, mixed in the latent."""
    rng = np.random.default_rng(0)
    labels = np.tile(np.repeat(["a", "b", "c"], 40), 2)
    sections = np.repeat(["S1", "S2"], 120)
    codes = rng.normal(size=(240, 4)) * 0.3 + (labels[:, None] == np.array(["a", "b", "c", "a"])) * 4.0
    names = [f"spot{i}" for i in range(240)]
    latent = ad.AnnData(
        obs=pd.DataFrame({"section": sections}, index=names),
        obsm={"X_dpvae": codes, "spatial_um": rng.uniform(0, 1000, size=(240, 2))},
    )
    annotation = pd.Series(labels, index=names, dtype="string")
    if not labelled:  # the second section has no annotation
        annotation[sections == "S2"] = pd.NA
    return latent, pd.DataFrame({"section": sections, "annotation": annotation}, index=names)


@pytest.mark.parametrize("labelled", [True, False], ids=["annotated", "one-section-unannotated"])
def test_joint_scores_use_the_annotation_where_every_section_has_one(labelled):
    latent, group_obs = joint_latent(labelled)
    scores, clusters = score_joint_run(latent, group_obs, "vae", SETTINGS)
    row = scores.iloc[0]
    assert row["labels"] == ("annotation" if labelled else "clusters")
    assert row["n_scored"] == 240 and row["n_domains"] == 3 and clusters.nunique() == 3
    # sections mixed, labels apart: every score near its best
    assert row["iLISI"] > 0.8 and row["cLISI"] > 0.9 and row["silhouette_label"] > 0.7 and row["silhouette_batch"] > 0.8
    assert run_column("vae", 100.0, 0) == "vae_alpha100_seed0"


def test_joint_scores_refuse_a_run_of_another_preprocessing():
    latent, group_obs = joint_latent(True)
    with pytest.raises(ValueError, match="240 spots of the run are not in the preprocessed group"):
        score_joint_run(latent, group_obs.set_axis([f"x{i}" for i in range(240)]), "vae", SETTINGS)
