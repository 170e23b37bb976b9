"""The demo workflow submitted to a real SLURM through the profile in profiles/slurm.

Needs the single-node SLURM that `.ci/slurm start` brings up; skipped without it,
unless DPST_REQUIRE_SLURM=1 (as in CI), where a missing SLURM is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from _workflow import copy_workflow, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PROFILE = ("--workflow-profile", "profiles/slurm")
DEMO = ("--configfile", "config/demo.yaml")
METRICS = ["moran_I", "geary_C", "mse_heldout", "mse_all", "penalty", "L_0.1"]
# the SLURM comment of a single-section training job (the plugin's rule_<name>_wildcards_...),
# not of a joint one (rule_train_joint_wildcards_...)
TRAIN_COMMENT = "rule_train_wildcards"
JOINT_TRAIN_COMMENT = "rule_train_joint_wildcards"


def slurm_idle() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mix", "alloc"))


@pytest.fixture(scope="module", autouse=True)
def require_slurm():
    if not slurm_idle():
        if os.environ.get("DPST_REQUIRE_SLURM") == "1":
            pytest.fail("DPST_REQUIRE_SLURM=1 but no SLURM answers sinfo; run .ci/slurm start")
        pytest.skip("no SLURM cluster here (.ci/slurm start brings up a local one)")


def running_train_job(timeout: float = 600) -> str:
    """The id of the first training job SLURM reports as running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            job_id, _, comment = line.partition(" ")
            if comment.startswith(TRAIN_COMMENT):
                return job_id
        time.sleep(1)
    raise AssertionError("no training job started on SLURM")


def train_submissions(output: str, comment: str = TRAIN_COMMENT) -> list[str]:
    """The sbatch calls of the single-section training jobs (or of another rule's, by its comment)."""
    return [line for line in output.splitlines() if line.startswith("sbatch call:") and f"--comment {comment}" in line]


def test_demo_on_slurm_matches_local_run_and_survives_a_killed_job(tmp_path, demo_run):
    local, local_seconds = demo_run

    cluster = copy_workflow(tmp_path / "slurm")
    start = time.perf_counter()
    # Output goes to a file, not a pipe: nobody reads a pipe while we wait for a
    # training job, and --verbose fills its 64 KB buffer, which blocks Snakemake.
    console = tmp_path / "first_run.log"
    with open(console, "w") as out:
        first = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *PROFILE, *DEMO, "--verbose"],
            cwd=cluster,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            killed = running_train_job()
            subprocess.run(["scancel", killed], check=True)
            first.wait(timeout=1800)
        finally:
            if first.poll() is None:
                first.kill()
    first_output = console.read_text()
    assert first.returncode != 0, "cancelling a running training job must fail the workflow"
    assert "Error in rule train" in first_output
    assert re.search(rf"\.snakemake/slurm_logs/rule_train/\S*{killed}\.log", first_output)
    finished_first = len(train_submissions(first_output))

    resumed = snakemake(cluster, *PROFILE, *DEMO, "--verbose")
    cluster_seconds = time.perf_counter() - start
    resubmitted = train_submissions(resumed.stdout + resumed.stderr)
    print(
        f"demo wall time: local {local_seconds:.0f} s, SLURM {cluster_seconds:.0f} s "
        f"(with one killed job and a resumed run)"
    )
    print(resubmitted[0] if resubmitted else "")

    # the rerun resumed: trainings finished before the kill were not redone
    n_train = len(list((cluster / "results" / "runs").rglob("metrics.json")))
    assert 0 < len(resubmitted) < n_train
    assert len(resubmitted) + finished_first >= n_train

    # every training job, single-section or joint, asked SLURM for a GPU, with CPUs per GPU
    joint = train_submissions(first_output + resumed.stdout + resumed.stderr, JOINT_TRAIN_COMMENT)
    assert joint  # the demo's joint group
    for call in train_submissions(first_output) + resubmitted + joint:
        assert "--gpus=1" in call and "--cpus-per-gpu=" in call

    local_runs = pd.read_csv(local / "results/metrics/runs.tsv", sep="\t")
    cluster_runs = pd.read_csv(cluster / "results/metrics/runs.tsv", sep="\t")
    keys = ["section", "model", "alpha", "seed"]
    merged = local_runs.merge(cluster_runs, on=keys, suffixes=("_local", "_slurm"))
    assert len(merged) == len(local_runs) == len(cluster_runs)
    for metric in METRICS:
        np.testing.assert_allclose(merged[f"{metric}_slurm"], merged[f"{metric}_local"], rtol=1e-6, err_msg=metric)
    for name in ("table1/table1.csv", "figures/figure4.png", "figures/figure6.pdf"):
        assert (cluster / "results" / name).exists()
