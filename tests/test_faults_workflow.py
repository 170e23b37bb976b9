"""Faults of the workflow, each made for real: a bad config, a local folder that
changes or lacks a file, user errors and crashes inside jobs, NaN metrics, a
hard kill of Snakemake, a full disk. None is silently wrong: each reruns what it
must or stops with one line naming the key or the file, the job log keeps the
traceback, and no half-written file is left at an output path."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from _workflow import REPO, copy_workflow, job_counts, snakemake
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import dpst
from dpst._files import atomic_path
from dpst_study import runs
from dpst_study.jobs import one_line
from dpst_study.runs import train_run, write_run

SMALL = {
    "sections": {"S1": {"simulate": {"n_spots": 150, "n_genes": 100, "n_domains": 3, "seed": 1}}},
    "preprocess": {"min_counts": 10, "min_cells": 3, "n_top_genes": 80, "hvg_flavor": "seurat_v3"},
    "models": ["vae", "scvi"],
    "seeds": [0],
    "penalty": {"alpha": 100},
    "train": {"max_epochs": 300, "kl_warmup_epochs": 100, "device": "cpu"},
    "sensitivity": {"alphas": [0, 100], "sections": ["S1"], "seeds": [0]},
    "figure4": {"section": "S1", "seed": 0, "model": "scvi"},
    "resources": {"train_threads": 1, "train_mem_mb": 1000, "train_runtime": 10},
}
TIMING = ["train_seconds", "seconds_per_epoch"]


def small_config(**changes) -> dict:
    """SMALL with `section.key=value` changes (nested dicts copied)."""
    config = json.loads(json.dumps(SMALL))
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[key] = value
    return config


def write_config(workdir: Path, config: dict, name: str = "test.yaml") -> str:
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(config))
    return str(path.relative_to(workdir))


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]


@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path / "wf")


def simulated_outs(folder: Path, seed: int = 6) -> Path:
    section = dpst.sim.simulate_section(n_spots=150, n_genes=100, n_domains=3, seed=seed)
    return dpst.sim.write_spaceranger(section, folder, positions="v1")


# ------------------------------------------------------------------ config
NAN, INF = float("nan"), float("inf")
CONFIG_ERRORS = {
    "alpha_nan": ({"penalty.alpha": NAN}, "penalty.alpha: must be a finite number, got nan"),
    "alpha_inf": ({"penalty.alpha": INF}, "penalty.alpha: must be a finite number, got inf"),
    "sensitivity_alpha_nan": (
        {"sensitivity.alphas": [0, NAN]},
        "sensitivity.alphas[1]: must be a finite number, got nan",
    ),
    "lr_inf": ({"train.lr": INF}, "train.lr: must be a finite number, got inf"),
    "figure4_section": ({"figure4.section": "S9"}, "figure4.section: unknown section(s) S9 (sections: S1)"),
    "sensitivity_sections": (
        {"sensitivity.sections": ["S1", "S7"]},
        "sensitivity.sections: unknown section(s) S7 (sections: S1)",
    ),
    "published_sections": (
        {"published_sections": {"X1": "A1"}},
        "published_sections: unknown section(s) X1 (sections: S1)",
    ),
    "sample_id_without_files": ({"sections.T1": {"sample_id": "V1_X"}}, "sections.T1: sample_id needs files too"),
    "two_sources": (
        {"sections.T1": {"local": "outs", "simulate": {}}},
        "sections.T1: gives local and simulate; give exactly one source (sample_id + files | local | simulate | h5ad)",
    ),
    "no_source": ({"sections.T1": {}}, "sections.T1: needs a source: sample_id + files | local | simulate | h5ad"),
    "spatial_key_without_h5ad": (
        {"sections.T1": {"local": "outs", "spatial_key": "xy"}},
        "sections.T1.spatial_key: only valid with h5ad",
    ),
    "domain_key_without_n_domains": (
        {"sections.T1": {"h5ad": "t1.h5ad", "domain_key": "domain"}},
        "sections.T1.domain_key needs n_domains too (give both or neither)",
    ),
    "unknown_top_level_key": (
        {"sensitivty": {"alphas": [0, 1]}},
        "sensitivty: unknown key (known keys here: sections, download, preprocess, "
        "models, seeds, model, penalty, train, sensitivity, figure4, domains, joint, "
        "joint_train, published_sections, resources)",
    ),
    "unknown_nested_key": (
        {"train.epochs": 5},
        "train.epochs: unknown key (known keys here: max_epochs, lr, batch_size, "
        "kl_warmup_epochs, validation_fraction, device)",
    ),
    "below_minimum": ({"train.max_epochs": 0}, "train.max_epochs: 0 is less than the minimum of 1"),
    "wrong_type": ({"seeds": ["a"]}, "seeds[0]: 'a' is not of type 'integer'"),
    "empty_sensitivity_seeds": ({"sensitivity.seeds": []}, "sensitivity.seeds: [] should be non-empty"),
    "empty_sensitivity_sections": ({"sensitivity.sections": []}, "sensitivity.sections: [] should be non-empty"),
    # joint groups
    "joint_unknown_section": ({"joint": {"g": ["S1", "S9"]}}, "joint.g: unknown section(s) S9 (sections: S1)"),
    "joint_one_section": ({"joint": {"solo": ["S1"]}}, "joint.solo: a group needs at least two sections, got 1 (S1)"),
    "joint_section_twice": ({"joint": {"g": ["S1", "S1"]}}, "joint.g: section(s) S1 listed more than once"),
    "joint_not_a_list": ({"joint": {"g": "S1"}}, "joint.g: 'S1' is not of type 'array'"),
    "joint_named_like_a_section": (
        {"sections.S2": {"simulate": {"seed": 2}}, "joint": {"S1": ["S1", "S2"]}},
        "joint.S1: the group name S1 is also a section's name; name the group otherwise",
    ),
    "joint_preprocessed_differently": (
        {"sections.S2": {"simulate": {"seed": 2}, "preprocess": {"min_counts": 20}}, "joint": {"g": ["S1", "S2"]}},
        "joint.g: its sections are preprocessed differently (preprocess.min_counts: S1 10, S2 20); "
        "a group is preprocessed with one setting, so give them the same (sections.<name>.preprocess)",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_error_is_one_line_naming_the_key(workdir, case):
    changes, problem = CONFIG_ERRORS[case]
    config = small_config(**changes)
    if case == "unknown_top_level_key":
        config.pop("sensitivity")
    result = snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    assert error_lines(result) == [f"Error: config: {problem}"]
    assert "Traceback" not in result.stderr and "Failed validating" not in result.stderr
    assert len(result.stderr.splitlines()) <= 2  # the profile notice and the error


def test_a_numeric_section_name_is_one_line(workdir):
    config = small_config()
    config["sections"] = {1: config["sections"]["S1"]}  # YAML reads `1:` as a number
    result = snakemake(workdir, "-n", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert error_lines(result) == [
        "Error: config: sections: the section name 1 is read as a number, not text; quote it ('1') or start it with a letter"
    ]


def test_a_section_given_twice_is_one_line(workdir):
    text = yaml.safe_dump(small_config())
    another = "  S1:\n    simulate: {n_spots: 150, n_genes: 100, n_domains: 3, seed: 2}\n"
    (workdir / "config" / "twice.yaml").write_text(text.replace("sections:\n", "sections:\n" + another, 1))
    result = snakemake(workdir, "-n", "--configfile", "config/twice.yaml", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = error_lines(result)
    assert line.startswith("Error: config: config/twice.yaml: 'S1' appears twice (lines ")


def test_alphas_that_round_alike_stay_two_runs(workdir):
    config = small_config(**{"sensitivity.alphas": [0, 1234567, 1234568], "sensitivity.seeds": [0]})
    dry = snakemake(workdir, "-n", "--configfile", write_config(workdir, config)).stdout
    assert "alpha1234567.0/" in dry and "alpha1234568.0/" in dry  # not both alpha1.23457e+06
    assert "alpha100/" in dry and "alpha0/" in dry  # the usual labels are unchanged


# ------------------------------------------------------------ local folders
def test_local_folder_files_are_inputs_and_changes_rerun_what_depends(workdir, tmp_path):
    outs = simulated_outs(tmp_path / "outs")
    config = small_config(**{"sections.L1": {"local": str(outs)}, "train.max_epochs": 20, "train.kl_warmup_epochs": 10})
    cfg = write_config(workdir, config)
    targets = ["results/preprocessed/S1.h5ad", "results/runs/L1/vae/alpha0/seed0/metrics.json"]
    snakemake(workdir, *targets, "--cores", "2", "--configfile", cfg)
    assert job_counts(workdir, *targets, "--configfile", cfg) == {}

    # another section's data in the folder: L1's preprocessing and training rerun, S1's not
    other = simulated_outs(tmp_path / "other", seed=9)
    time.sleep(1.1)
    for name in ("filtered_feature_bc_matrix.h5", "spatial/tissue_positions_list.csv"):
        shutil.copyfile(other / name, outs / name)
    assert job_counts(workdir, *targets, "--configfile", cfg) == {"preprocess": 1, "train": 1}
    snakemake(workdir, *targets, "--cores", "2", "--configfile", cfg)
    assert ad.read_h5ad(workdir / "results/preprocessed/L1.h5ad").n_obs > 0

    # an edited positions file reruns the same two jobs
    time.sleep(1.1)
    positions = outs / "spatial" / "tissue_positions_list.csv"
    rows = positions.read_text().splitlines()
    first_in_tissue = next(i for i, row in enumerate(rows) if row.split(",")[1] == "1")
    rows[first_in_tissue] = rows[first_in_tissue].replace(",1,", ",0,", 1)  # one spot leaves the tissue
    positions.write_text("\n".join(rows) + "\n")
    assert job_counts(workdir, *targets, "--configfile", cfg) == {"preprocess": 1, "train": 1}


def test_a_visium_hd_section_reads_its_bins_in_micrometres(workdir, tmp_path):
    bins = dpst.sim.simulate_section(n_spots=400, n_genes=100, n_domains=3, seed=4, bin_size_um=16)
    dpst.sim.write_visium_hd(bins, tmp_path / "hd" / "outs")
    config = small_config(**{"sections.HD": {"local": str(tmp_path / "hd" / "outs"), "bin_size": 16}})
    cfg = write_config(workdir, config)
    snakemake(workdir, "results/preprocessed/HD.h5ad", "--cores", "1", "--configfile", cfg)
    adata = ad.read_h5ad(workdir / "results/preprocessed/HD.h5ad")
    (library,) = adata.uns["dpst_preprocess"]["coordinates"]["libraries"].values()
    assert library["method"] == "bin_grid" and adata.uns["spatial_neighbors"]["params"]["geometry"] == "square"
    i, j = adata.obsp["spatial_connectivities"].nonzero()
    um = adata.obsm["spatial_um"]
    assert np.linalg.norm(um[i] - um[j], axis=1) == pytest.approx(16.0)

    # a bin size the folder lacks: one line naming the section, the keys and the path
    config["sections"]["HD"]["bin_size"] = 8
    result = snakemake(
        workdir,
        "results/preprocessed/HD.h5ad",
        "--cores",
        "1",
        "--configfile",
        write_config(workdir, config, "hd8.yaml"),
        "--forceall",
        check=False,
    )
    folder = tmp_path / "hd" / "outs" / "binned_outputs" / "square_008um"
    line = f"Error: section HD: Space Ranger folder {folder} not found (sections.HD.local, bin_size)"
    assert error_lines(result) == [line]


LOCAL_MISSING = {
    "folder": (lambda outs: shutil.rmtree(outs), "Space Ranger folder {outs} not found"),
    "matrix": (
        lambda outs: (outs / "filtered_feature_bc_matrix.h5").unlink(),
        "{outs}/filtered_feature_bc_matrix.h5 not found (nor a single *_filtered_feature_bc_matrix.h5)",
    ),
    "positions": (
        lambda outs: (outs / "spatial/tissue_positions_list.csv").unlink(),
        "{outs}/spatial/tissue_positions.csv not found (nor tissue_positions_list.csv or tissue_positions.parquet)",
    ),
    "scalefactors": (
        lambda outs: (outs / "spatial/scalefactors_json.json").unlink(),
        "{outs}/spatial/scalefactors_json.json not found",
    ),
}


@pytest.mark.parametrize("missing", list(LOCAL_MISSING))
def test_missing_local_file_is_one_line_naming_section_and_path(workdir, tmp_path, missing):
    outs = simulated_outs(tmp_path / "outs")
    damage, what = LOCAL_MISSING[missing]
    damage(outs)
    config = small_config(**{"sections.L1": {"local": str(outs)}})
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
    assert error_lines(result) == [f"Error: section L1: {what.format(outs=outs)} (sections.L1.local)"]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (workdir / "results/preprocessed/L1.h5ad").exists()


# ------------------------------------------------------------- h5ad files
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def test_schema_takes_an_h5ad_section_and_gives_only_it_the_coordinate_keys():
    config = small_config(
        **{
            "sections.H1": {"h5ad": "h1.h5ad"},
            "sections.H2": {"h5ad": "h2.h5ad", "spatial_key": "xy", "coordinate_unit": "pixel"},
        }
    )
    validate(config, SCHEMA)
    assert config["sections"]["H1"] == {"h5ad": "h1.h5ad", "spatial_key": "spatial", "coordinate_unit": "auto"}
    assert config["sections"]["H2"] == {"h5ad": "h2.h5ad", "spatial_key": "xy", "coordinate_unit": "pixel"}
    assert set(config["sections"]["S1"]) == {"simulate"}  # no coordinate keys on other sources
    for bad in ({"h5ad": "h1.h5ad", "coordinate_unit": "mm"}, {"simulate": {}, "coordinate_unit": "um"}):
        with pytest.raises(WorkflowError):
            validate(small_config(**{"sections.H1": bad}), SCHEMA)


def h5ad_section(path: Path, seed: int = 6) -> Path:
    """A simulated section as an AnnData file: pixels in obsm["spatial"], no uns["spatial"]."""
    section = dpst.sim.simulate_section(n_spots=150, n_genes=100, n_domains=3, seed=seed)
    del section.uns["spatial"]
    section.write_h5ad(path)
    return path


H5AD_UNUSABLE = {
    "missing": (lambda path: path.unlink(), "AnnData file {path} not found"),
    "not_hdf5": (lambda path: path.write_text("barcode,x,y\n"), "{path} is not an HDF5 file (an AnnData .h5ad)"),
}


@pytest.mark.parametrize("case", list(H5AD_UNUSABLE))
def test_unusable_h5ad_is_one_line_naming_section_and_path(workdir, tmp_path, case):
    path = h5ad_section(tmp_path / "section.h5ad")
    damage, what = H5AD_UNUSABLE[case]
    damage(path)
    config = small_config(**{"sections.H1": {"h5ad": str(path)}})
    cfg = write_config(workdir, config)
    result = snakemake(workdir, "results/preprocessed/H1.h5ad", "--cores", "1", "--configfile", cfg, check=False)
    assert result.returncode != 0
    assert error_lines(result) == [f"Error: section H1: {what.format(path=path)} (sections.H1.h5ad)"]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (workdir / "results/preprocessed/H1.h5ad").exists()


def test_h5ad_pixels_become_the_micrometres_the_models_read(workdir, tmp_path):
    """Pixels under "spatial" with no uns["spatial"]: the models' defaults would take them as
    micrometres; the preprocessed file holds the calibrated micrometres there instead."""
    path = h5ad_section(tmp_path / "section.h5ad")
    pixels = ad.read_h5ad(path).obsm["spatial"]
    config = small_config(**{"sections.H1": {"h5ad": str(path), "coordinate_unit": "pixel"}})
    cfg = write_config(workdir, config)
    snakemake(workdir, "results/preprocessed/H1.h5ad", "--cores", "1", "--configfile", cfg)
    adata = ad.read_h5ad(workdir / "results/preprocessed/H1.h5ad")
    coordinates = adata.uns["dpst_preprocess"]["coordinates"]
    assert (coordinates["spatial_key"], coordinates["coordinate_unit"]) == ("spatial", "pixel")
    (library,) = coordinates["libraries"].values()
    assert library["unit"] == "pixel" and library["method"] == "grid"
    kept = pd.Index(ad.read_h5ad(path).obs_names).get_indexer(adata.obs_names)
    assert adata.obsm["spatial_um"] == pytest.approx(pixels[kept] * library["um_per_pixel"])
    assert (adata.obsm["spatial"] == adata.obsm["spatial_um"]).all() and adata.uns["spatial_unit"] == "um"
    assert (dpst.DPVAE(adata, seed=0).coords == adata.obsm["spatial_um"]).all()
    log = (workdir / "logs/preprocess/H1.log").read_text()
    assert f"from {path}" in log and "obsm['spatial'] holds the micrometres (from obsm['spatial']" in log

    # an obsm key the file lacks ends the job with one line naming it
    config["sections"]["H1"]["spatial_key"] = "xy"
    cfg = write_config(workdir, config, "xy.yaml")
    result = snakemake(workdir, "results/preprocessed/H1.h5ad", "--cores", "1", "--configfile", cfg, check=False)
    line = (
        f"ERROR: section H1: {path} has no obsm['xy'] (obsm keys: spatial); "
        "set the section's spatial_key to the key of the spot coordinates"
    )
    check_failed_job(result, workdir / "logs/preprocess/H1.log", line)


# ----------------------------------------------------- errors inside jobs
@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    """A workflow copy with S1 simulated and preprocessed."""
    workdir = copy_workflow(tmp_path_factory.mktemp("jobs") / "wf")
    snakemake(workdir, "results/preprocessed/S1.h5ad", "--cores", "1", "--configfile", write_config(workdir, SMALL))
    return workdir


def expected_train_error(workdir: Path, config: dict, model="vae", alpha=0.0) -> str:
    """The line the job must end with, from the same call made here in-process
    (with the schema's defaults, as the workflow fills them)."""
    config = json.loads(json.dumps(config))
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    adata = ad.read_h5ad(workdir / "results/preprocessed/S1.h5ad")
    runs.set_threads(1)
    with pytest.raises(Exception) as err:  # noqa: PT011 - whatever the job raises, its message is compared
        train_run(adata, model, alpha, 0, config["model"], config["penalty"], config["train"])
    return f"ERROR: section S1, {model} alpha {alpha:g} seed 0: {one_line(err.value)}"


def check_failed_job(result, log: Path, line: str) -> None:
    """One line on the console; the log holds the traceback and ends with that line."""
    assert result.returncode != 0
    console = result.stdout + result.stderr
    assert line in console.splitlines()
    assert "Traceback" not in console
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert text.splitlines()[-1] == line


TRAIN_ERRORS = {
    "n_neighbors_above_spots": {"penalty.n_neighbors": 10_000},
    "divergent_lr": {"train.lr": 1e12},
    "cuda_without_gpu": {"train.device": "cuda"},
}


@pytest.mark.parametrize("case", list(TRAIN_ERRORS))
def test_user_error_in_training_ends_with_one_line(preprocessed, case):
    if case == "cuda_without_gpu" and __import__("torch").cuda.is_available():
        pytest.skip("a GPU is visible: device cuda is no error here")
    config = small_config(**TRAIN_ERRORS[case], **{"train.max_epochs": 50})
    alpha = 100.0 if case == "n_neighbors_above_spots" else 0.0
    line = expected_train_error(preprocessed, config, alpha=alpha)
    if case == "cuda_without_gpu":
        assert line == (
            "ERROR: section S1, vae alpha 0 seed 0: train.device is 'cuda' but this job "
            "sees 0 CUDA GPU(s); set train.device to auto (GPU when visible, else CPU) or cpu"
        )
    run = f"S1/vae/alpha{alpha:g}/seed0"
    result = snakemake(
        preprocessed,
        f"results/runs/{run}/metrics.json",
        "--cores",
        "1",
        "--configfile",
        write_config(preprocessed, config, f"{case}.yaml"),
        check=False,
    )
    check_failed_job(result, preprocessed / f"logs/train/{run}.log", line)
    assert not (preprocessed / f"results/runs/{run}").exists() or not any(
        (preprocessed / f"results/runs/{run}").iterdir()
    )


def test_unexpected_error_keeps_its_traceback_in_log_and_console(preprocessed, tmp_path):
    """A corrupt input is no user error the job knows: full traceback, the job fails."""
    config = small_config(**{"train.max_epochs": 10})
    cfg = write_config(preprocessed, config, "corrupt.yaml")
    h5ad = preprocessed / "results/preprocessed/S1.h5ad"
    shutil.copy2(h5ad, tmp_path / "S1.h5ad")
    try:
        h5ad.write_bytes(b"not an HDF5 file\n" * 100)
        result = snakemake(
            preprocessed,
            "results/runs/S1/vae/alpha0/seed0/metrics.json",
            "--cores",
            "1",
            "--configfile",
            cfg,
            check=False,
        )
    finally:
        shutil.copy2(tmp_path / "S1.h5ad", h5ad)
    assert result.returncode != 0
    log = (preprocessed / "logs/train/S1/vae/alpha0/seed0.log").read_text()
    assert "Traceback (most recent call last)" in log and "ERROR:" not in log
    last = log.strip().splitlines()[-1]
    assert "Traceback (most recent call last)" in result.stderr and last in result.stderr.splitlines()


def test_user_error_in_preprocessing_ends_with_one_line(preprocessed):
    config = small_config(**{"preprocess.min_counts": 10**9})
    adata = dpst.io.read_spaceranger(preprocessed / "resources/simulated/S1")
    with pytest.raises(ValueError) as err:  # noqa: PT011 - its message is what the job must print
        dpst.pp.preprocess(adata, **config["preprocess"])
    line = f"ERROR: section S1: {one_line(err.value)}"
    cfg = write_config(preprocessed, config, "min_counts.yaml")
    result = snakemake(preprocessed, "results/preprocessed/S1.h5ad", "--cores", "1", "--configfile", cfg, check=False)
    check_failed_job(result, preprocessed / "logs/preprocess/S1.log", line)
    assert not (preprocessed / "results/preprocessed/S1.h5ad").exists()  # last user of `preprocessed`


def run_logged(tmp_path: Path, body: str, expected: str = "()") -> tuple[subprocess.CompletedProcess, str]:
    """``body`` in a fresh Python process under logged_to(log, expected=...)."""
    log = tmp_path / "job.log"
    code = (
        f"from dpst_study.jobs import USER_ERRORS, logged_to\n"
        f"with logged_to({str(log)!r}, expected={expected}, context='job: '):\n"
        + "".join(f"    {line}\n" for line in body.splitlines())
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO / "workflow"
    )  # dpst_study
    return result, log.read_text()


def test_segfault_keeps_the_log_written_before(tmp_path):
    result, log = run_logged(tmp_path, "print('epoch 1 done')\nimport ctypes\nctypes.string_at(0)")
    assert result.returncode != 0
    assert log.splitlines()[0] == "epoch 1 done"
    assert "Fatal Python error: Segmentation fault" in log and 'File "<string>", line 5' in log


def test_expected_error_one_line_on_console_traceback_in_log(tmp_path):
    result, log = run_logged(
        tmp_path, "print('started')\nraise ValueError('n_neighbors must be in [1, 9]')", expected="USER_ERRORS"
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == "ERROR: job: n_neighbors must be in [1, 9]"
    assert "Traceback" not in result.stderr
    lines = log.splitlines()
    assert lines[0] == "started" and "Traceback (most recent call last):" in lines
    assert lines[-2:] == ["ValueError: n_neighbors must be in [1, 9]", "ERROR: job: n_neighbors must be in [1, 9]"]


def test_unexpected_error_traceback_in_log_and_console(tmp_path):
    result, log = run_logged(tmp_path, "print('started')\n{}['missing']", expected="USER_ERRORS")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "KeyError: 'missing'" and "Traceback" in result.stderr
    assert log.splitlines()[0] == "started" and log.splitlines()[-1] == "KeyError: 'missing'"
    assert "Traceback (most recent call last):" in log


# ---------------------------------------------- kill -9 and resume, NaN
def start(workdir: Path, cfg: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snakemake",
            "results/metrics/runs.tsv",
            "--cores",
            "2",
            "--resources",
            "gpu=2",
            "--configfile",
            cfg,
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the workflow ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting to kill"
        time.sleep(0.1)


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def training(workdir: Path, since: float) -> bool:
    """A train job that began after `since` is in its epochs (a progress line is in its log)."""
    for log in (workdir / "logs/train").rglob("*.log") if (workdir / "logs/train").exists() else []:
        run = log.relative_to(workdir / "logs/train").with_suffix("")
        if (
            log.stat().st_mtime > since
            and re.search(r"^epoch \d+/\d+: loss ", log.read_text(errors="replace"), re.MULTILINE)
            and not (workdir / "results/runs" / run / "metrics.json").exists()
        ):
            return True
    return False


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """SMALL run uninterrupted and, beside it, killed (SIGKILL to the whole Snakemake
    process group) twice mid-training and resumed with the documented commands."""
    root = tmp_path_factory.mktemp("kill")
    reference = copy_workflow(root / "reference")
    cfg = write_config(reference, SMALL)
    snakemake(reference, "results/preprocessed/S1.h5ad", "--cores", "2", "--configfile", cfg)
    killed = Path(shutil.copytree(reference, root / "killed", symlinks=True))  # from the same section
    uninterrupted = start(reference, cfg)
    hints, finished_at_kill = [], []
    try:
        proc = start(killed, cfg)
        for kill_number in range(2):
            since = time.time()
            wait_for(
                lambda since=since, kill_number=kill_number: (
                    training(killed, since)
                    and (kill_number == 0 or any((killed / "results/runs").rglob("metrics.json")))
                ),
                proc,
            )
            kill(proc)
            finished_at_kill.append(len(list((killed / "results/runs").rglob("metrics.json"))))
            assert any((killed / ".snakemake/locks").glob("*.lock")), "no lock left behind"
            blocked = snakemake(killed, "results/metrics/runs.tsv", "--cores", "2", "--configfile", cfg, check=False)
            assert blocked.returncode != 0
            hints.append([line for line in blocked.stderr.splitlines() if line.startswith("Stale lock")])
            snakemake(killed, "--unlock", "--configfile", cfg)  # the documented command
            if kill_number == 0:
                proc = start(killed, cfg)
        resumed = snakemake(
            killed, "results/metrics/runs.tsv", "--cores", "2", "--resources", "gpu=2", "--configfile", cfg
        )
    finally:
        if uninterrupted.poll() is None:
            uninterrupted.wait(timeout=600)
    assert uninterrupted.returncode == 0
    return reference, killed, cfg, hints, finished_at_kill, resumed


def test_kill_9_twice_then_resume_gives_identical_metrics(killed_and_resumed):
    reference, killed, cfg, hints, finished_at_kill, _resumed = killed_and_resumed
    assert len(hints) == 2
    for hint in hints:
        assert len(hint) == 1
        assert hint[0].startswith("Stale lock: the Snakemake run (pid ")
        assert hint[0].endswith(
            f") that locked this folder was killed; remove its lock with "
            f"`snakemake --unlock --configfile {cfg}` and run again "
            "(incomplete outputs are redone)."
        )
    assert finished_at_kill[0] < finished_at_kill[1] < 4  # both kills hit the training
    expected = pd.read_csv(reference / "results/metrics/runs.tsv", sep="\t").drop(columns=TIMING)
    got = pd.read_csv(killed / "results/metrics/runs.tsv", sep="\t").drop(columns=TIMING)
    assert len(got) == 4
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_metrics_json_is_strict_json_with_null_for_nan(killed_and_resumed):
    reference = killed_and_resumed[0]

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    for path in (reference / "results/runs").rglob("metrics.json"):
        metrics = json.loads(path.read_text(), parse_constant=refuse)
        if metrics["alpha"] == 0:
            assert metrics["lam_fitted"] is None  # no penalty, no lam: NaN by design
    runs = pd.read_csv(reference / "results/metrics/runs.tsv", sep="\t")
    assert runs.loc[runs["alpha"] == 0, "lam_fitted"].isna().all()
    assert runs.loc[runs["alpha"] > 0, "lam_fitted"].notna().all()


# ------------------------------------------------------------- full disk
def mount_tmpfs(folder: Path, size: str) -> str:
    """Mount a tmpfs of ``size`` on ``folder``; '' when done, else why not."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    return "" if done.returncode == 0 else f"cannot mount a tmpfs here: {done.stderr.strip()}"


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of the given size on a folder; unmounted afterwards."""
    mounted = []

    def mount(folder: Path, size: str) -> Path:
        why_not = mount_tmpfs(folder, size)
        if why_not:
            pytest.skip(why_not)
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        unmount(folder)


def test_full_disk_in_a_job_leaves_no_partial_output(workdir, tmpfs):
    results = tmpfs(workdir / "results", "64k")  # the preprocessed section needs far more
    cfg = write_config(workdir, SMALL)
    result = snakemake(workdir, "results/preprocessed/S1.h5ad", "--cores", "1", "--configfile", cfg, check=False)
    assert result.returncode != 0
    assert not (results / "preprocessed/S1.h5ad").exists()
    assert not [p for p in results.rglob("*") if p.is_file()], "a partial file is left on the full disk"
    log = (workdir / "logs/preprocess/S1.log").read_text()
    assert "No space left on device" in log or "errno = 28" in log


def test_full_disk_while_writing_a_run_leaves_no_partial_file(tmp_path):
    # In a child process: after ENOSPC h5py can leave HDF5's global state broken, and a
    # later h5py call in the same process segfaulted (seen in CI, in test_io).
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        problems = pool.submit(write_runs_onto_full_disks, tmp_path).result(timeout=900)
    if problems and problems[0].startswith("skip: "):
        pytest.skip(problems[0][len("skip: ") :])
    assert problems == []


def write_runs_onto_full_disks(tmp_path: Path) -> list[str]:
    """Write a run onto tmpfs folders with room for nothing, for the latent only, and for
    all but metrics.json (the last write); what was left behind that should not be."""
    section = dpst.pp.preprocess(dpst.io.read_spaceranger(simulated_outs(tmp_path / "outs")), **SMALL["preprocess"])
    fitted, metrics, per_dimension = train_run(section, "vae", 0.0, 0, {}, {}, {"max_epochs": 3, "device": "cpu"})
    names = {
        "latent": "latent.h5ad",
        "autocorrelation": "autocorrelation.tsv",
        "history": "history.tsv",
        "model": "model",
        "metrics": "metrics.json",
    }  # in the order write_run writes them

    def pages(path: Path) -> int:  # tmpfs space of a file or folder, in 4 KiB pages
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        return sum(-(-p.stat().st_size // 4096) for p in files)

    full = types.SimpleNamespace(**{k: str(tmp_path / "full" / v) for k, v in names.items()})
    write_run(fitted, metrics, per_dimension, full)
    needed = [pages(tmp_path / "full" / name) for name in names.values()]
    problems = []
    for room in (1, needed[0], sum(needed[:-1])):
        run = tmp_path / f"run{room}"
        why_not = mount_tmpfs(run, f"{4 * room}k")
        if why_not:
            return [f"skip: {why_not}"]
        try:
            outputs = types.SimpleNamespace(**{k: str(run / v) for k, v in names.items()})
            try:
                write_run(fitted, metrics, per_dimension, outputs)
                problems.append(f"room {room}: write_run did not fail")
            except OSError:
                pass
            if (run / "metrics.json").exists():  # written last: no run may look finished
                problems.append(f"room {room}: metrics.json exists")
            for name in ("latent.h5ad", "autocorrelation.tsv", "history.tsv"):
                if (run / name).exists() and (run / name).read_bytes() != (tmp_path / "full" / name).read_bytes():
                    problems.append(f"room {room}: {name} is partial")  # complete, or absent
            problems += [f"room {room}: {p.name} left" for p in run.iterdir() if p.name.startswith(".")]
        finally:
            unmount(run)
    return problems


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "table.tsv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:  # noqa: PT012 - the crash happens mid-write
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n" and list(tmp_path.iterdir()) == [target]


@pytest.mark.slow
def test_ctrl_c_during_a_forced_rerun_leaves_no_stale_table(killed_and_resumed, tmp_path):
    """Interrupting `--forcerun train` removes the running jobs' outputs; the next run must redo them and the tables.

    Filed as: after Ctrl-C the next run said "Nothing to be done" while runs.tsv and Table 1 still
    listed the deleted run. The tables may be stale between the interrupt and the next run, never after it.
    """
    reference, _killed, cfg, *_ = killed_and_resumed
    workdir = Path(shutil.copytree(reference, tmp_path / "interrupted", symlinks=True))
    since = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", cfg, "--forcerun", "train"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(lambda: training(workdir, since), proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
    proc.wait(timeout=120)
    runs = pd.read_csv(workdir / "results/metrics/runs.tsv", sep="\t")
    missing = [
        run for run in runs.itertuples()
        if not (workdir / "results/runs" / run.section / run.model / f"alpha{run.alpha:g}" / f"seed{run.seed}" / "metrics.json").exists()
    ]  # fmt: skip
    assert missing, "the interrupt came too late to remove any run"
    counts = job_counts(workdir, "--configfile", cfg)
    assert counts.get("train", 0) >= len(missing) and "collect_runs" in counts and "table1" in counts
    snakemake(workdir, "--cores", "2", "--resources", "gpu=2", "--configfile", cfg)
    assert "Nothing to be done" in snakemake(workdir, "-n", "--configfile", cfg).stdout
    for run in pd.read_csv(workdir / "results/metrics/runs.tsv", sep="\t").itertuples():
        assert (
            workdir
            / "results/runs"
            / run.section
            / run.model
            / f"alpha{run.alpha:g}"
            / f"seed{run.seed}"
            / "metrics.json"
        ).exists()
