"""The Snakemake workflow, run for real in a copy of the repository."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from _workflow import REPO, copy_workflow, job_counts, snakemake

import dpst

# A real section as an AnnData file (shared/data/dlpfc, see its README): read in place, never copied
# into the project; the test skips, saying why, where the folder is absent (a user's clone).
DLPFC = Path(os.environ.get("DPST_DLPFC_DATA", REPO.parent / "shared" / "data" / "dlpfc")) / "dlpfc_151673.h5ad"


def write_config(workdir: Path, config: dict, name: str = "test.yaml") -> str:
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(config))
    return str(path.relative_to(workdir))


@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path / "wf")


def test_study_config_builds_the_full_dag_offline(workdir):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    counts = job_counts(workdir)
    sens = config["sensitivity"]
    main = {
        (s, m, a, seed)
        for s in config["sections"]
        for m in config["models"]
        for a in (0.0, float(config["penalty"]["alpha"]))
        for seed in config["seeds"]
    }
    sweep = {
        (s, m, float(a), seed)
        for s in sens["sections"]
        for m in config["models"]
        for a in sens["alphas"]
        for seed in sens["seeds"]
    }
    assert len(main) == 4 * 2 * 2 * 5
    assert counts["train"] == len(main | sweep)
    assert counts["download_10x_file"] == 8
    assert counts["preprocess"] == 4
    # the joint groups (anterior A1 + A2, posterior P1 + P2): every model x {0, alpha} x seed
    assert config["joint"] == {"anterior": ["A1", "A2"], "posterior": ["P1", "P2"]}
    assert counts["train_joint"] == 2 * 2 * 2 * 5
    for rule in ("preprocess_joint", "joint_scores", "joint_figure"):
        assert counts[rule] == 2
    for rule in ("table1", "figure4", "figure5", "figure6", "collect_runs", "collect_joint_runs", "joint_table"):
        assert counts[rule] == 1
    assert not [rule for rule in counts if rule.startswith("domains")]  # no section names a domain_key


def test_bad_config_value_gives_the_schema_message(workdir):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["train"]["max_epochs"] = 0
    result = snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "max_epochs" in message and "minimum" in message


def demo_config_with(sections: dict) -> dict:
    """The demo config with other sections (and no sweep, Figure 4 or joint group naming the old ones)."""
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    demo["sections"] = sections
    for key in ("sensitivity", "figure4", "joint"):
        demo.pop(key, None)
    return demo


class _Cells(HTMLParser):
    """The rows of an HTML table (header row first) and the text of its paragraphs."""

    def __init__(self):
        super().__init__()
        self.rows, self.paragraphs, self._tag = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag in ("th", "td", "p"):
            self._tag = tag

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag in ("th", "td"):
            self.rows[-1].append(data)
        elif self._tag == "p":
            self.paragraphs.append(data)


def read_html_table(path: Path) -> tuple[pd.DataFrame, str]:
    parser = _Cells()
    parser.feed(path.read_text())
    header, *rows = parser.rows
    return pd.DataFrame(rows, columns=header), " ".join(parser.paragraphs)


def test_report_tables_are_rounded_and_say_why_published_cells_are_missing(workdir):
    """The table1 rule alone, on a runs table with many digits: the CSV keeps them, the report's HTML rounds."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["published_sections"] = {"S1": "A1"}  # S1 is compared with the study's A1; S2 has no counterpart
    config.pop("joint")  # single-section runs only (the demo's joint rows: test_demo_end_to_end)
    rng = np.random.default_rng(0)
    runs = pd.DataFrame(
        [
            {"section": s, "model": m, "alpha": a, "seed": seed, "moran_I": rng.uniform(0.3, 0.8), "geary_C": 0.5}
            for s in ("S1", "S2")
            for m in ("vae", "scvi")
            for a in (0.0, 100.0)
            for seed in (0, 1)
        ]
    )
    (workdir / "results" / "metrics").mkdir(parents=True)
    runs.to_csv(workdir / "results" / "metrics" / "runs.tsv", sep="\t", index=False)
    targets = ("results/table1/table1.html", "results/table1/table1_vs_published.html")
    snakemake(
        workdir, *targets, "--cores", "1", "--allowed-rules", "table1", "--configfile", write_config(workdir, config)
    )

    vae_off = runs[(runs["model"] == "vae") & (runs["alpha"] == 0)].groupby("section")["moran_I"]
    full = pd.read_csv(workdir / "results" / "table1" / "table1.csv")
    row = full[(full["group"] == "Distorted") & (full["model"] == "vae") & (full["metric"] == "moran_I")]
    np.testing.assert_allclose(row["mean"], vae_off.mean().loc[row["section"]], rtol=1e-12)  # every digit

    table, note = read_html_table(workdir / "results" / "table1" / "table1.html")
    assert list(table.columns) == ["group", "method", "I S1", "I S2", "C S1", "C S2"]
    mean, sd = vae_off.mean()["S1"], vae_off.std()["S1"]
    assert table.loc[(table["group"] == "Distorted") & (table["method"] == "VAE"), "I S1"].item() == (
        f"{mean:.2f} ({sd:.2f})"
    )
    assert table["C S2"].eq("0.50 (0.00)").all()
    assert "two decimals" in note and "table1.csv holds every digit" in note

    compare, note = read_html_table(workdir / "results" / "table1" / "table1_vs_published.html")
    s1 = compare[(compare["section"] == "S1") & (compare["group"] == "Distorted") & (compare["method"] == "VAE")]
    s1 = s1.set_index("metric")
    assert s1.loc["Moran's I", "study section"] == "A1"
    assert s1.loc["Moran's I", "published"] == "0.55 (0.05)"  # the study's A1, VAE, Distorted
    assert s1.loc["Moran's I", "difference"] == f"{mean - 0.55:+.2f}"
    s2 = compare[compare["section"] == "S2"]
    assert (s2[["study section", "published", "difference"]] == "n/a").all().all()
    assert "S2 is not among them" in note and "A1, A2, P1, P2" in note


# ---------------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_end_to_end(demo_run):
    workdir, _ = demo_run
    results = workdir / "results"
    table = pd.read_csv(results / "table1/table1.csv")
    single = table[table["joint"].isna()]  # empty for single-section runs
    assert len(single) == 2 * 2 * 2 * 2  # groups x models x metrics x sections
    # the joint group both (S1 + S2): per section, beside the single-section rows
    joint = table[table["joint"] == "both"]
    assert len(joint) == len(single) and set(joint["section"]) == {"S1", "S2"}
    moran = table[table.metric == "moran_I"]["mean"]
    geary = table[table.metric == "geary_C"]["mean"]
    assert moran.between(-1, 1).all() and geary.between(0, 3).all()
    assert (table["n_seeds"] == 2).all()
    for name in ("table1.md", "table1.tex", "table1_vs_published.csv", "table1_vs_published.md"):
        assert (results / "table1" / name).stat().st_size > 100
    for fig in ("figure4", "figure5", "figure6"):
        assert (results / "figures" / f"{fig}.png").stat().st_size > 10_000
        assert (results / "figures" / f"{fig}.pdf").stat().st_size > 1_000
    runs = pd.read_csv(results / "metrics/runs.tsv", sep="\t")
    assert (runs["mse_heldout"] > 0).all() and (runs["L_0.1"] >= 1).all()
    metrics = json.loads(next((results / "runs").rglob("metrics.json")).read_text())
    assert metrics["device"] == "cpu"
    check_demo_joint_runs(workdir)

    # job logs are written for files: a plain line per tenth of the epochs, no bar redraws, no colour codes
    for log in (workdir / "logs" / "train").rglob("*.log"):
        text = log.read_text()
        assert "\r" not in text and "\x1b[" not in text, log
        assert sum(line.startswith("epoch ") for line in text.splitlines()) == 10, log
        assert "SyntaxWarning" not in text, log

    # re-running after success does nothing
    assert "Nothing to be done" in snakemake(workdir, "-n", "--configfile", "config/demo.yaml").stdout

    # the report holds every figure and table with its caption
    snakemake(workdir, "--configfile", "config/demo.yaml", "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    assert "figure4.png" in html and "table1.html" in html and "local metric" in html
    # the joint group's figure and scores, with their captions, and its rows in Table 1
    assert "both.png" in html and "Group both: its sections trained as one model" in html
    assert "scores.html" in html and "how well the sections mix in the joint latent" in html
    assert "joint_runs.tsv" in html and "(both: S1 + S2)" in html
    # Table 1 as the report shows it: two decimals, and why the published cells of the simulated sections read n/a
    assert "table1_vs_published.html" in html and "n/a: here S1 (simulated), S2 (simulated)" in html
    table, _ = read_html_table(results / "table1" / "table1.html")
    assert table.drop(columns=["group", "method"]).stack().str.fullmatch(r"-?\d\.\d\d \(\d\.\d\d\)").all()

    # changing one seed reruns only the runs of that seed (and the summaries)
    config = yaml.safe_load((workdir / "config/demo.yaml").read_text())
    config["seeds"] = [0, 2]
    counts = job_counts(workdir, "--configfile", write_config(workdir, config))
    assert counts["train"] == 2 * 2 * 2  # sections x models x {0, alpha} for seed 2
    assert counts["train_joint"] == 2 * 2  # models x {0, alpha} for seed 2, on the group
    assert "preprocess" not in counts and "simulate_section" not in counts and "preprocess_joint" not in counts


def check_demo_joint_runs(workdir: Path) -> None:
    """The demo's joint group (S1 + S2): its runs, per-section metrics, scib-metrics scores and figure."""
    import anndata as ad

    results = workdir / "results"
    group = ad.read_h5ad(results / "joint/preprocessed/both.h5ad")
    assert list(group.obs["section"].cat.categories) == ["S1", "S2"]
    assert group.uns["dpst_preprocess"]["coordinates"]["library_key"] == "section"
    # both sections kept every spot; spots 100 um apart in each, as in the single-section files
    for name in ("S1", "S2"):
        alone = ad.read_h5ad(results / f"preprocessed/{name}.h5ad")
        part = group[group.obs["section"] == name]
        assert part.n_obs == alone.n_obs
        np.testing.assert_allclose(part.obsm["spatial"], alone.obsm["spatial_um"], rtol=1e-3)
        # the simulation's domains, carried through the Space Ranger files
        assert part.obs["annotation"].notna().all() and alone.obs["domain"].notna().all()

    joint_runs = pd.read_csv(results / "metrics/joint_runs.tsv", sep="\t", dtype={"section": str})
    assert len(joint_runs) == 2 * 2 * 2 * 3  # models x {0, alpha} x seeds x (S1, S2, all)
    assert set(joint_runs["section"]) == {"S1", "S2", "all"} and set(joint_runs["group"]) == {"both"}
    per_section = joint_runs[joint_runs["section"] != "all"]
    assert (per_section["n_spots"] == 250).all() and per_section[["moran_I", "geary_C"]].notna().all().all()
    latent = ad.read_h5ad(results / "joint/runs/both/vae/alpha100/seed0/latent.h5ad")
    assert latent.n_obs == 500 and set(latent.obs["section"]) == {"S1", "S2"}
    log = (workdir / "logs/joint/train/both/vae/alpha100/seed0.log").read_text()
    assert sum(line.startswith("epoch ") for line in log.splitlines()) == 10
    assert "epoch 200/200:" in log  # joint_train's epochs, not train's 500

    scores = pd.read_csv(results / "joint/scores.tsv", sep="\t")
    assert len(scores) == 2 * 2 * 2 and (scores["labels"] == "annotation").all()  # the simulated domains
    for score in ("iLISI", "cLISI", "silhouette_label", "silhouette_batch"):
        assert scores[score].between(0, 1).all(), score
    shown, note = read_html_table(results / "joint/scores.html")
    assert list(shown["backbone"].unique()) == ["VAE", "scVI"] and "scib-metrics" in note
    clusters = pd.read_csv(results / "joint/scores/both/clusters.tsv", sep="\t", index_col=0)
    assert clusters.shape == (500, 8) and clusters.nunique().between(2, 5).all()
    assert (scores["n_domains"] == 5).all()  # the larger n_domains of S1 and S2
    assert (results / "joint/both.png").stat().st_size > 50_000
    assert (results / "joint/both.pdf").stat().st_size > 10_000

    # the annotated S1's domains: its own runs, then the joint model's on S1's spots
    domains = pd.read_csv(results / "domains/domains_summary.csv", keep_default_na=False)
    assert list(domains["joint"]) == [""] * 4 + ["both"] * 4 and (domains["section"] == "S1").all()
    assert domains["ARI_mean"].astype(float).between(-0.2, 1).all() and (domains["n_seeds"] == 2).all()
    assert "| S1        | VAE, joint (both)" in (results / "domains/domains_summary.md").read_text()

    table, note = read_html_table(results / "table1/table1.html")
    assert list(table["method"][:4]) == ["VAE", "VAE, joint (both)", "scVI", "scVI, joint (both)"]
    assert "joint (group)" in note and "groups: both" in note
    compare = pd.read_csv(results / "table1/table1_vs_published.csv")
    assert "joint" not in compare.columns and len(compare) == 16  # single-section runs only


def test_broken_local_folder_fails_naming_the_file(workdir, tmp_path):
    outs = dpst.sim.write_spaceranger(dpst.sim.simulate_section(n_spots=150, n_genes=80, seed=6), tmp_path / "outs")
    (outs / "spatial" / "scalefactors_json.json").unlink()
    config = demo_config_with({"L1": {"local": str(outs)}})
    result = snakemake(
        workdir,
        "results/preprocessed/L1.h5ad",
        "--cores",
        "1",
        "--configfile",
        write_config(workdir, config),
        check=False,
    )
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "scalefactors_json.json" in message and "section L1" in message
    assert "Traceback" not in message
    assert not (workdir / "results/preprocessed/L1.h5ad").exists()


def test_per_section_preprocess_override_and_clipped_genes_are_logged(workdir):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["preprocess"]["n_top_genes"] = 100
    config["sections"]["S2"]["preprocess"] = {"n_top_genes": 400, "min_counts": 20}
    config.pop("joint")  # a group's sections must be preprocessed alike (tests/test_faults_workflow.py)
    targets = ["results/preprocessed/S1.h5ad", "results/preprocessed/S2.h5ad"]
    snakemake(workdir, *targets, "--cores", "2", "--configfile", write_config(workdir, config))
    s1, s2 = (dpst_record(workdir / target) for target in targets)
    assert (s1["n_top_genes"], s1["min_counts"], s1["n_hvg"]) == (100, 10, 100)
    assert (s2["n_top_genes"], s2["min_counts"]) == (400, 20)  # its own keys; the rest shared
    assert s2["min_cells"] == s1["min_cells"] == 3
    # S2 has 150 simulated genes: fewer than asked for, said in the job's log
    assert s2["n_top_genes_clipped"] and s2["n_hvg"] == s2["n_genes_out"] <= 150
    log = (workdir / "logs/preprocess/S2.log").read_text()
    assert f"n_top_genes=400 but only {s2['n_hvg']} genes pass filtering" in log
    assert f"{s2['n_hvg']} highly variable genes (seurat_v3): fewer than the n_top_genes=400 asked for" in log
    assert "um per full-resolution pixel, from the spot grid" in log

    # a bad override names its key
    config["sections"]["S2"]["preprocess"] = {"n_top_genes": 0}
    result = snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    assert "sections.S2.preprocess.n_top_genes: 0 is less than the minimum of 1" in result.stdout + result.stderr


def dpst_record(path: Path) -> dict:
    import anndata as ad

    return ad.read_h5ad(path).uns["dpst_preprocess"]


# ---------------------------------------------------------------- h5ad
@pytest.mark.slow
@pytest.mark.skipif(
    not DLPFC.is_file(), reason=f"DLPFC section not found at {DLPFC} (set DPST_DLPFC_DATA to the dlpfc folder)"
)
def test_h5ad_section_runs_the_study(workdir, tmp_path):
    """A crop of a real section as an AnnData file, micrometres under another obsm key, through
    preprocessing, training (one model, one seed, alpha 0 and on), the tables and the figures."""
    import anndata as ad

    section = ad.read_h5ad(DLPFC)
    window = ((section.obsm["spatial"] >= 3000) & (section.obsm["spatial"] < 5000)).all(axis=1)
    crop = section[window].copy()  # 2 x 2 mm, about 450 spots of layers 2-6
    crop.obsm["xy_um"] = crop.obsm.pop("spatial")
    del crop.uns["spatial_unit"]
    crop.write_h5ad(tmp_path / "crop.h5ad")
    config = demo_config_with(
        {"D1": {"h5ad": str(tmp_path / "crop.h5ad"), "spatial_key": "xy_um", "coordinate_unit": "um"}}
    )
    config.update(
        preprocess={"min_counts": 500, "min_cells": 10, "n_top_genes": 300},
        models=["vae"],
        seeds=[0],
        train={"max_epochs": 40, "kl_warmup_epochs": 20, "device": "cpu"},
        sensitivity={"alphas": [0, 100]},
        figure4={"model": "vae"},
    )
    snakemake(workdir, "--cores", "2", "--configfile", write_config(workdir, config))

    adata = ad.read_h5ad(workdir / "results/preprocessed/D1.h5ad")
    record = adata.uns["dpst_preprocess"]
    assert (record["coordinates"]["spatial_key"], record["coordinates"]["coordinate_unit"]) == ("xy_um", "um")
    assert record["coordinates"]["libraries"]["all"]["unit"] == "um"
    assert record["neighbors"]["geometry"] == "hexagon" and adata.n_vars == 300
    # the models read obsm["spatial"]: the file's micrometres, unchanged
    assert (adata.obsm["spatial"] == adata.obsm["xy_um"]).all() and adata.uns["spatial_unit"] == "um"
    assert (adata.obsm["spatial_um"] == adata.obsm["xy_um"]).all()
    log = (workdir / "logs/preprocess/D1.log").read_text()
    assert "coordinates of all: micrometres as stored" in log and "from obsm['xy_um']" in log

    runs = pd.read_csv(workdir / "results/metrics/runs.tsv", sep="\t")
    assert sorted(runs["alpha"]) == [0.0, 100.0] and (runs["n_genes"] == 300).all()
    assert runs[["moran_I", "geary_C", "mse_heldout", "L_0.1"]].notna().all().all()
    latent = ad.read_h5ad(workdir / "results/runs/D1/vae/alpha100/seed0/latent.h5ad")
    pairs = dpst.io.grid_neighbor_pairs(latent.obs["array_row"], latent.obs["array_col"])
    spacing = np.linalg.norm(np.diff(latent.obsm["spatial_um"][pairs], axis=1)[:, 0], axis=1)
    assert np.median(spacing) == pytest.approx(100.0, abs=1.0)  # Visium spots, 100 um apart
    assert "domain" in latent.obs
    table = pd.read_csv(workdir / "results/table1/table1.csv")
    assert set(table["section"]) == {"D1"} and table["mean"].notna().all()
    for figure in ("figure4", "figure5", "figure6"):
        assert (workdir / "results/figures" / f"{figure}.png").stat().st_size > 10_000
