"""The Snakemake workflow, run for real in a copy of the repository."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import tarfile
import threading
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
import yaml

import dpst
from _workflow import REPO, copy_workflow, job_counts, snakemake

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
    main = {(s, m, a, seed) for s in config["sections"] for m in config["models"]
            for a in (0.0, float(config["penalty"]["alpha"])) for seed in config["seeds"]}
    sweep = {(s, m, float(a), seed) for s in sens["sections"] for m in config["models"]
             for a in sens["alphas"] for seed in sens["seeds"]}
    assert len(main) == 4 * 2 * 2 * 5
    assert counts["train"] == len(main | sweep)
    assert counts["download_10x_file"] == 8
    assert counts["preprocess"] == 4
    for rule in ("table1", "figure4", "figure5", "figure6", "collect_runs"):
        assert counts[rule] == 1


def test_bad_config_value_gives_the_schema_message(workdir):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["train"]["max_epochs"] = 0
    result = snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "max_epochs" in message and "minimum" in message


# ------------------------------------------------------------------ download
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def checksum(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "md5": hashlib.md5(path.read_bytes()).hexdigest()}


def publish_10x_sample(root: Path, sample_id: str, tmp_path: Path) -> dict:
    """Serve a simulated section under 10x's file names; return its `files` entry."""
    outs = dpst.sim.write_spaceranger(dpst.sim.simulate_section(n_spots=150, n_genes=80, seed=5),
                                      tmp_path / f"outs_{sample_id}")
    folder = root / sample_id
    folder.mkdir(parents=True)
    h5 = folder / f"{sample_id}_filtered_feature_bc_matrix.h5"
    shutil.copy(outs / "filtered_feature_bc_matrix.h5", h5)
    tarball = folder / f"{sample_id}_spatial.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(outs / "spatial", arcname="spatial")
    return {"filtered_feature_bc_matrix.h5": checksum(h5), "spatial.tar.gz": checksum(tarball)}


def download_config(base_url: str, sections: dict) -> dict:
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    demo["sections"] = sections
    demo["download"] = {"base_url": base_url, "timeout": 10, "retries": 0}
    demo.pop("sensitivity", None)
    demo.pop("figure4", None)
    return demo


def test_download_then_preprocess_from_local_server(workdir, file_server, tmp_path):
    root, url = file_server
    files = publish_10x_sample(root, "SAMPLE_A", tmp_path)
    config = download_config(url, {"T1": {"sample_id": "SAMPLE_A", "files": files}})
    snakemake(workdir, "results/preprocessed/T1.h5ad", "--cores", "1",
              "--configfile", write_config(workdir, config))
    h5 = workdir / "resources/10x/SAMPLE_A/SAMPLE_A_filtered_feature_bc_matrix.h5"
    assert checksum(h5) == files["filtered_feature_bc_matrix.h5"]
    assert (workdir / "resources/10x/SAMPLE_A/spatial/scalefactors_json.json").exists()
    preprocessed = ad.read_h5ad(workdir / "results/preprocessed/T1.h5ad")
    assert "spatial_um" in preprocessed.obsm and "counts" in preprocessed.layers


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_bad_download_leaves_nothing_and_names_the_url(workdir, file_server, tmp_path, damage):
    root, url = file_server
    files = publish_10x_sample(root, "SAMPLE_B", tmp_path)
    h5 = root / "SAMPLE_B" / "SAMPLE_B_filtered_feature_bc_matrix.h5"
    data = bytearray(h5.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    h5.write_bytes(bytes(data))
    config = download_config(url, {"T1": {"sample_id": "SAMPLE_B", "files": files}})
    target = "resources/10x/SAMPLE_B/SAMPLE_B_filtered_feature_bc_matrix.h5"
    result = snakemake(workdir, target, "--cores", "1",
                       "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert f"{url}/SAMPLE_B/SAMPLE_B_filtered_feature_bc_matrix.h5" in message
    assert ("truncated" if damage == "truncated" else "corrupt") in message
    folder = workdir / "resources/10x/SAMPLE_B"
    assert not (workdir / target).exists()
    assert not list(folder.glob("*.part")) if folder.exists() else True


def test_offline_download_says_what_to_do(workdir):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["download"] = {"base_url": "http://127.0.0.1:9", "timeout": 5, "retries": 0}
    target = "resources/10x/V1_Mouse_Brain_Sagittal_Anterior/V1_Mouse_Brain_Sagittal_Anterior_spatial.tar.gz"
    result = snakemake(workdir, target, "--cores", "1",
                       "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "local Space Ranger folder" in message and "demo" in message
    assert "Traceback" not in message


def test_local_spaceranger_folder_skips_the_download(workdir, tmp_path):
    outs = dpst.sim.write_spaceranger(dpst.sim.simulate_section(n_spots=150, n_genes=80, seed=6),
                                      tmp_path / "outs", positions="v2", root_attrs=False)
    config = download_config("http://127.0.0.1:9", {"L1": {"local": str(outs)}})
    snakemake(workdir, "results/preprocessed/L1.h5ad", "--cores", "1",
              "--configfile", write_config(workdir, config))
    assert not (workdir / "resources/10x").exists()


# ---------------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_end_to_end(demo_run):
    workdir, _ = demo_run
    results = workdir / "results"
    table = pd.read_csv(results / "table1/table1.csv")
    assert len(table) == 2 * 2 * 2 * 2  # groups x models x metrics x sections
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

    # re-running after success does nothing
    assert "Nothing to be done" in snakemake(workdir, "-n", "--configfile", "config/demo.yaml").stdout

    # the report holds every figure and table with its caption
    snakemake(workdir, "--configfile", "config/demo.yaml", "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    assert "figure4.png" in html and "table1.csv" in html and "local metric" in html

    # changing one seed reruns only the runs of that seed (and the summaries)
    config = yaml.safe_load((workdir / "config/demo.yaml").read_text())
    config["seeds"] = [0, 2]
    counts = job_counts(workdir, "--configfile", write_config(workdir, config))
    assert counts["train"] == 2 * 2 * 2  # sections x models x {0, alpha} for seed 2
    assert "preprocess" not in counts and "simulate_section" not in counts


def test_broken_local_folder_fails_naming_the_file(workdir, tmp_path):
    outs = dpst.sim.write_spaceranger(dpst.sim.simulate_section(n_spots=150, n_genes=80, seed=6),
                                      tmp_path / "outs")
    (outs / "spatial" / "scalefactors_json.json").unlink()
    config = download_config("http://127.0.0.1:9", {"L1": {"local": str(outs)}})
    result = snakemake(workdir, "results/preprocessed/L1.h5ad", "--cores", "1",
                       "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "scalefactors_json.json" in message and "section L1" in message
    assert "Traceback" not in message
    assert not (workdir / "results/preprocessed/L1.h5ad").exists()
