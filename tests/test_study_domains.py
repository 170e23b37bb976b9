"""The workflow's spatial domains: clustering a run, the table and summary, the figure, and a real section end to end."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from _workflow import REPO, copy_workflow, job_counts, snakemake
from matplotlib.colors import to_hex
from test_workflow import DLPFC, demo_config_with, write_config

from dpst.pl import save_figure
from dpst_study.domains import (
    cluster_run,
    collect_domains,
    domain_summary,
    joint_section,
    read_annotation,
    summary_markdown,
    write_domains,
)
from dpst_study.figures import DomainPanel, domains_figure, match_domains

SETTINGS = {
    "domain_key": "layer",
    "n_domains": 3,
    "method": "gmm",
    "covariance_type": "tied",
    "refine": False,
    "fit_seeds": [0, 1],
}


def layered_section(n_rows: int = 12, n_cols: int = 18, seed: int = 0) -> tuple[ad.AnnData, pd.Series]:
    """A hexagonal grid in three vertical bands, a latent that separates them and the bands as annotation."""
    rng = np.random.default_rng(seed)
    row, col = np.divmod(np.arange(n_rows * n_cols), n_cols)
    xy = np.c_[col * 100.0 + (row % 2) * 50.0, row * 86.6]
    band = np.digitize(xy[:, 0], [600, 1200])
    names = pd.Index([f"s{i}" for i in range(len(xy))])
    truth = pd.Series(pd.Categorical(np.array(["L1", "L2", "WM"])[band], categories=["L1", "L2", "WM"]), index=names)
    truth.iloc[:5] = np.nan  # unannotated spots
    codes = np.eye(3)[band] * 4.0 + rng.normal(0.0, 0.5, (len(xy), 3))
    latent = ad.AnnData(obs=pd.DataFrame(index=names), obsm={"X_dpvae": codes, "spatial_um": xy})
    return latent, truth


def test_a_run_is_clustered_once_per_fit_seed_and_scored():
    latent, truth = layered_section()
    scores, labels = cluster_run(latent, truth.sample(frac=1, random_state=0), "vae", SETTINGS)  # aligned by name
    assert list(scores["fit_seed"]) == [0, 1] and list(labels.columns) == ["fit0", "fit1"]
    assert labels.index.equals(latent.obs_names)
    assert (scores["ARI"] == 1.0).all() and (scores["NMI"] == 1.0).all()
    assert (scores["n_scored"] == latent.n_obs - 5).all() and (scores["n_found"] == 3).all()
    assert scores[["CHAOS", "PAS"]].notna().all().all()
    assert list(scores[["method", "covariance_type", "n_domains"]].iloc[0]) == ["gmm", "tied", 3]
    with pytest.raises(ValueError, match="spots of the run are not in the section's annotation"):
        cluster_run(latent, truth.iloc[10:], "vae", SETTINGS)


def scores_file(folder, section, model, alpha, seed, ari, joint=None):
    """A run's scores.tsv as the domains_run rule writes it, fit seeds 0 and 1 (``joint``: a joint run's group)."""
    table = pd.DataFrame(
        {
            "section": section,
            **({} if joint is None else {"joint": joint}),
            "model": model,
            "alpha": alpha,
            "seed": seed,
            "fit_seed": [0, 1],
            "method": "gmm",
            "covariance_type": "tied",
            "refine": False,
            "n_domains": 7,
            "n_found": 7,
            "ARI": ari,
            "NMI": [a + 0.1 for a in ari],
            "n_scored": 100,
            "CHAOS": 0.1,
            "PAS": 0.2,
            "n_spots": 110,
        }
    )
    path = folder / f"{section}_{joint}_{model}_{alpha}_{seed}.tsv"
    table.to_csv(path, sep="\t", index=False)
    return path


def test_a_joint_run_is_clustered_on_one_sections_spots():
    """A joint latent of two sections: one section's rows, with the group's annotation (NA -> NaN)."""
    first, truth = layered_section(seed=0)
    second, _ = layered_section(seed=1)
    latent = ad.concat({"A": first, "B": second}, label="section", index_unique="-")
    group_obs = pd.DataFrame(
        {"section": latent.obs["section"], "annotation": pd.concat([truth, truth]).astype("string").to_numpy()},
        index=latent.obs_names,
    )
    part, annotation = joint_section(latent, group_obs.sample(frac=1, random_state=0), "B")
    assert part.n_obs == second.n_obs and (part.obs["section"] == "B").all()
    assert annotation.index.equals(part.obs_names) and annotation.isna().sum() == 5
    np.testing.assert_array_equal(part.obsm["X_dpvae"], second.obsm["X_dpvae"])
    scores, _ = cluster_run(part, annotation, "vae", SETTINGS)
    assert (scores["ARI"] == 1.0).all() and (scores["n_scored"] == second.n_obs - 5).all()
    with pytest.raises(ValueError, match="no spot of section C"):
        joint_section(latent, group_obs, "C")


def test_the_table_and_summary_over_training_and_fit_seeds(tmp_path):
    paths = [
        scores_file(tmp_path, section, model, alpha, seed, [base + seed / 10, base + seed / 10 + 0.02])
        for section in ("Z9", "A1")  # kept in the order given, not sorted
        for model in ("scvi", "vae")
        for alpha, base in ((100.0, 0.3), (0.0, 0.4))
        for seed in (1, 0)
    ]
    table = collect_domains(paths)
    assert len(table) == 2 * 2 * 2 * 2 * 2
    assert list(table.columns[:6]) == ["section", "joint", "model", "alpha", "seed", "fit_seed"]
    assert (table["joint"] == "").all()  # files without the column: the sections' own runs
    assert list(dict.fromkeys(table["section"])) == ["Z9", "A1"]
    assert list(table["model"].iloc[:16].unique()) == ["scvi", "vae"] and table["seed"].iloc[0] == 0

    summary = domain_summary(table, alpha_on=100.0)
    assert list(summary["model"][:4]) == ["vae", "vae", "scvi", "scvi"]  # VAE first, then penalty off, on
    assert list(summary["group"][:2]) == ["Distorted", "Distance Preserving"]
    off = summary.iloc[0]
    values = [0.4, 0.42, 0.5, 0.52]  # seeds 0 and 1 x fit seeds 0 and 1
    assert off["ARI_mean"] == pytest.approx(np.mean(values)) and off["ARI_sd"] == pytest.approx(np.std(values, ddof=1))
    assert off["NMI_mean"] == pytest.approx(np.mean(values) + 0.1) and off["CHAOS_sd"] == pytest.approx(0.0)
    assert (off["n_seeds"], off["n_fits"], off["alpha"]) == (2, 2, 0.0)
    assert summary.iloc[1]["ARI_mean"] == pytest.approx(np.mean(values) - 0.1)

    markdown = summary_markdown(summary, table)
    assert "| Z9        | VAE        | none (α = 0) | 0.460 (0.059) |" in markdown
    assert (
        "α = 100" in markdown
        and "2 × 2" in markdown
        and "gmm (tied covariance); domains per section (n_domains): Z9 7, A1 7." in markdown
    )

    outputs = {key: tmp_path / name for key, name in (("table", "d.tsv"), ("summary", "s.csv"), ("markdown", "s.md"))}
    write_domains(paths, 100.0, outputs)
    assert len(pd.read_csv(outputs["table"], sep="\t")) == 32 and len(pd.read_csv(outputs["summary"])) == 8
    assert outputs["markdown"].read_text() == markdown
    with pytest.raises(ValueError, match="no runs with alpha 0 or 5"):
        domain_summary(table[table["alpha"] > 0], alpha_on=5.0)


def test_joint_runs_come_after_the_sections_own_in_the_table_and_summary(tmp_path):
    paths = [
        scores_file(tmp_path, "A1", "vae", alpha, seed, [0.3 + shift, 0.32 + shift], joint=joint)
        for joint, shift in (("both", 0.1), ("", 0.0))  # a joint run's file first: order comes from the table
        for alpha in (0.0, 100.0)
        for seed in (0, 1)
    ]
    table = collect_domains(paths)
    assert list(dict.fromkeys(table["joint"])) == ["", "both"]
    summary = domain_summary(table, alpha_on=100.0)
    assert list(summary["joint"]) == ["", "", "both", "both"]
    assert summary["ARI_mean"].iloc[2] == pytest.approx(summary["ARI_mean"].iloc[0] + 0.1)
    markdown = summary_markdown(summary, table)
    assert "| A1        | VAE, joint (both) | none (α = 0) | 0.410 (0.012) |" in markdown
    outputs = {key: tmp_path / name for key, name in (("table", "d.tsv"), ("summary", "s.csv"), ("markdown", "s.md"))}
    write_domains(paths, 100.0, outputs)  # written and read back: the own runs' empty group stays ""
    assert list(collect_domains([outputs["table"]])["joint"].unique()) == ["", "both"]


def test_domains_are_matched_to_labels_one_to_one():
    truth = pd.Series(["A", "A", "A", "B", "B", None, "C"])
    labels = np.array(["0", "0", "1", "1", "1", "2", "3"])
    # 0 -> A (2 spots), 1 -> B (2); 2 shares no annotated spot; 3 -> C
    assert match_domains(labels, truth, ["A", "B", "C"]) == {"0": "A", "1": "B", "3": "C"}
    assert match_domains(np.array(["0"] * 7), truth, ["A", "B", "C"]) == {"0": "A"}  # one domain, one label


def test_the_domains_figure(tmp_path):
    latent, truth = layered_section()
    labels = np.digitize(latent.obsm["spatial_um"][:, 0], [600, 1200, 1500]).astype(str)  # 4 domains, 3 labels
    panels = [
        DomainPanel(model, alpha, labels if alpha else np.roll(labels, 3), ari)
        for model in ("vae", "scvi")
        for alpha, ari in ((0.0, 0.81), (100.0, float("nan")))
    ]
    fig = domains_figure("S1", latent.obsm["spatial_um"], truth, panels, truth_name="layer", note="gmm, 4 domains")
    axes = fig.axes
    assert len(axes) == 5
    assert axes[0].get_title() == "S1 · annotation (layer)\n211 of 216 spots annotated"
    assert axes[1].get_title() == "S1 · VAE · α = 0\nARI 0.81" and axes[4].get_title() == "S1 · scVI · α = 100\nARI n/a"
    for ax in axes:
        assert ax.get_aspect() == 1.0 and ax.get_ylim()[0] > ax.get_ylim()[1]  # equal aspect, image orientation
        assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == latent.n_obs
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["L1", "L2", "WM", "unannotated", "unmatched domain 1"]
    # the domains of the last band take the colour of WM, the annotation's own colour there
    colors = [to_hex(c) for c in axes[2].collections[0].get_facecolors()]
    wm = np.flatnonzero((truth == "WM").to_numpy())
    assert colors[wm[0]] == to_hex(axes[0].collections[0].get_facecolors()[wm[0]])
    assert "Section S1" in fig.texts[0].get_text() and "gmm, 4 domains" in fig.texts[0].get_text()
    png, pdf = save_figure(fig, [tmp_path / "S1.png", tmp_path / "S1.pdf"])
    assert png.stat().st_size > 10_000 and pdf.stat().st_size > 1_000
    with pytest.raises(ValueError, match="3 labels for 216 spots"):
        domains_figure("S1", latent.obsm["spatial_um"], truth, [DomainPanel("vae", 0.0, labels[:3], 0.5)])


def test_read_annotation_names_the_missing_column(tmp_path):
    latent, truth = layered_section()
    section = ad.AnnData(obs=pd.DataFrame({"layer": truth}), obsm={"spatial_um": latent.obsm["spatial_um"]})
    section.write_h5ad(tmp_path / "s.h5ad")
    assert read_annotation(tmp_path / "s.h5ad", "layer").equals(truth)
    with pytest.raises(ValueError, match="has no obs column 'domain' \\(its columns: layer\\)"):
        read_annotation(tmp_path / "s.h5ad", "domain")


# ------------------------------------------------------------------ workflow
@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path / "wf")


def test_domains_ask_for_an_annotation_column_before_any_job(workdir, tmp_path):
    _, truth = layered_section()
    ad.AnnData(obs=pd.DataFrame({"layer": truth})).write_h5ad(tmp_path / "s.h5ad")
    config = demo_config_with({"H1": {"h5ad": str(tmp_path / "s.h5ad"), "domain_key": "domain", "n_domains": 3}})
    result = snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
    assert errors == [
        f"Error: section H1: {tmp_path / 's.h5ad'} has no obs column 'domain' (its columns: layer) "
        "(sections.H1.domain_key)"
    ]
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    demo["sections"]["S1"].update(domain_key="layer", n_domains=4)
    result = snakemake(workdir, "-n", "--configfile", write_config(workdir, demo), check=False)
    assert result.returncode != 0
    assert "Error: section S1: a simulate section's annotation is 'domain', not 'layer'" in (
        result.stdout + result.stderr
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not DLPFC.is_file(), reason=f"DLPFC section not found at {DLPFC} (set DPST_DLPFC_DATA to the dlpfc folder)"
)
def test_an_annotated_section_gets_its_domains(workdir, tmp_path):
    """A crop of a real section across six layers, one model, one seed, alpha 0 and on, two fit seeds."""
    section = ad.read_h5ad(DLPFC)
    xy = section.obsm["spatial"]
    window = (xy[:, 0] >= 3200) & (xy[:, 0] < 5400) & (xy[:, 1] >= 2000) & (xy[:, 1] < 5000)
    section[window].copy().write_h5ad(tmp_path / "crop.h5ad")  # 2.2 x 3 mm, 733 spots of Layer1 to Layer6
    config = demo_config_with({"D1": {"h5ad": str(tmp_path / "crop.h5ad"), "domain_key": "domain", "n_domains": 6}})
    config.update(
        preprocess={"min_counts": 300, "min_cells": 10, "n_top_genes": 300},
        models=["vae"],
        seeds=[0],
        train={"max_epochs": 40, "kl_warmup_epochs": 20, "device": "cpu"},
        sensitivity={"alphas": [0, 100]},
        figure4={"model": "vae"},
        domains={"fit_seeds": [0, 1]},
    )
    path = write_config(workdir, config)
    counts = job_counts(workdir, "--configfile", path)  # rule all asks for them
    assert (counts["domains_run"], counts["domains_table"], counts["domains_figure"]) == (2, 1, 1)
    targets = [f"results/domains/{name}" for name in ("domains.tsv", "domains_summary.md", "D1.png")]
    snakemake(workdir, *targets, "--cores", "2", "--configfile", path)

    results = workdir / "results" / "domains"
    table = pd.read_csv(results / "domains.tsv", sep="\t")
    assert len(table) == 2 * 2 and sorted(table["alpha"].unique()) == [0.0, 100.0]
    assert list(table["fit_seed"]) == [0, 1, 0, 1] and (table["n_domains"] == 6).all()
    assert table["ARI"].between(-0.2, 1).all() and table[["NMI", "CHAOS", "PAS"]].notna().all().all()
    assert (table["n_scored"] <= table["n_spots"]).all()
    summary = pd.read_csv(results / "domains_summary.csv")
    assert list(summary["group"]) == ["Distorted", "Distance Preserving"] and (summary["n_fits"] == 2).all()
    assert summary["ARI_mean"].to_numpy() == pytest.approx(table.groupby("alpha")["ARI"].mean().to_numpy())
    assert "| D1        | VAE        | none (α = 0)" in (results / "domains_summary.md").read_text()
    assert (results / "D1.png").stat().st_size > 20_000 and (results / "D1.pdf").stat().st_size > 1_000
    labels = pd.read_csv(results / "runs/D1/vae/alpha100/seed0/labels.tsv", sep="\t", index_col=0)
    assert list(labels.columns) == ["fit0", "fit1"] and labels.index.isin(section.obs_names).all()
    assert (workdir / "benchmarks/domains/D1/vae/alpha0/seed0.tsv").is_file()
    assert "ARI" in (workdir / "logs/domains/figure_D1.log").read_text()
