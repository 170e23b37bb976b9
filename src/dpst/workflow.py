"""The steps of the Snakemake workflow, as functions its thin scripts call."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import anndata as ad
import pandas as pd
import torch
from tqdm.auto import tqdm

from .metrics import evaluate_model
from .model import DPSCVI, DPVAE

MODEL_CLASSES = {"vae": DPVAE, "scvi": DPSCVI}


class DownloadError(RuntimeError):
    """A download failed or its content is not what the config expects."""


@contextlib.contextmanager
def logged_to(path: str | os.PathLike, expected: tuple[type[Exception], ...] = (), context: str = ""):
    """Send stdout and stderr (progress bars included) into the job's log file.

    An ``expected`` error (bad input, failed download) ends the job with its
    message, prefixed by ``context``, in the log and on the console: no traceback.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    message = None
    with open(path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield log
        except expected as err:
            message = f"ERROR: {context}{err}"
            print(message, file=log)
    if message is not None:
        print(message, file=sys.__stderr__)
        sys.exit(1)


def download(url: str, dest: str | os.PathLike, size: int, md5: str, timeout: float = 60) -> None:
    """Fetch ``url`` into ``dest``; only a complete file with the expected size and md5
    ever appears at ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest, received = hashlib.md5(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError) as err:
                raise DownloadError(
                    f"cannot download {url}: {getattr(err, 'reason', err)}. Without network access, "
                    "point the section at a local Space Ranger folder (sections.<name>.local in the "
                    "config) or run the offline demo (--configfile config/demo.yaml)."
                ) from None
            with response, tqdm(total=size, unit="B", unit_scale=True, desc=dest.name,
                                mininterval=5) as bar:
                try:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except (OSError, urllib.error.URLError) as err:
                    raise DownloadError(f"download of {url} broke off after {received} bytes: {err}") from None
        if received != size:
            raise DownloadError(
                f"{url} gave {received} bytes, the config expects {size}: truncated or a different file"
            )
        if digest.hexdigest() != md5:
            raise DownloadError(
                f"{url} has md5 {digest.hexdigest()}, the config expects {md5}: the file is corrupt"
            )
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def extract_spatial(tarball: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Unpack the ``spatial/`` folder of a 10x spatial tarball into ``dest`` (atomically)."""
    dest = Path(dest)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        try:
            with tarfile.open(tarball) as tar:
                tar.extractall(work, filter="data")  # refuses absolute paths and '..'
        except (tarfile.TarError, OSError) as err:
            raise DownloadError(f"{tarball} is not a readable tar.gz archive: {err}") from None
        found = [p for p in work.rglob("spatial") if p.is_dir()]
        if not found:
            raise DownloadError(f"{tarball} holds no spatial/ folder")
        found[0].rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def train_run(
    adata: ad.AnnData,
    model: str,
    alpha: float,
    seed: int,
    model_settings: dict,
    penalty_settings: dict,
    train_settings: dict,
) -> tuple:
    """Train one (model, alpha, seed) run and evaluate it. Returns (model, metrics, per-dimension)."""
    if model not in MODEL_CLASSES:
        raise ValueError(f"model must be one of {sorted(MODEL_CLASSES)}, got {model!r}")
    kwargs = dict(model_settings)
    likelihood = kwargs.pop("likelihood", "zinb")
    if model == "scvi":
        kwargs["likelihood"] = likelihood
    penalty = dict(penalty_settings)
    penalty.pop("alpha", None)
    latent = penalty.pop("latent", "sample")
    warmup = penalty.pop("warmup_epochs", 0)
    fitted = MODEL_CLASSES[model](
        adata, alpha=alpha, seed=seed, penalty_latent=latent, penalty_warmup_epochs=warmup,
        **penalty, **kwargs,
    )
    start = time.perf_counter()
    fitted.train(**train_settings)
    seconds = time.perf_counter() - start
    metrics, per_dimension = evaluate_model(fitted)
    metrics.update(
        model=model, alpha=alpha, seed=seed, n_spots=adata.n_obs, n_genes=adata.n_vars,
        epochs=len(fitted.history), train_seconds=seconds,
        seconds_per_epoch=seconds / max(len(fitted.history), 1),
        device=str(next(fitted.module.parameters()).device),
    )
    return fitted, metrics, per_dimension


def write_run(fitted, metrics: dict, per_dimension: pd.DataFrame, outputs) -> None:
    """Write a run's latent AnnData, metrics, per-dimension table, history and model."""
    adata = fitted.adata
    latent = ad.AnnData(
        obs=adata.obs[[c for c in ("array_row", "array_col", "domain") if c in adata.obs]].copy(),
        obsm={"X_latent": fitted.get_latent_representation(), "spatial_um": fitted.coords},
    )
    latent.uns["run"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    latent.write_h5ad(outputs.latent)
    Path(outputs.metrics).write_text(json.dumps(metrics, indent=1))
    per_dimension.to_csv(outputs.autocorrelation, sep="\t")
    fitted.history.to_csv(outputs.history, sep="\t", index=False)
    fitted.save(outputs.model, overwrite=True)


def collect_runs(paths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run metrics.json files -> (one row per run, one row per run and latent dimension)."""
    rows, dims = [], []
    for path in paths:
        path = Path(path)
        metrics = json.loads(path.read_text())
        rows.append(metrics)
        table = pd.read_csv(path.parent / "autocorrelation.tsv", sep="\t")
        dims.append(table.assign(**{k: metrics[k] for k in ("section", "model", "alpha", "seed")}))
    if not rows:
        raise ValueError("no runs to collect")
    runs = pd.DataFrame(rows)
    first = ["section", "model", "alpha", "seed"]
    runs = runs[first + [c for c in runs.columns if c not in first]]
    runs = runs.sort_values(first, kind="stable").reset_index(drop=True)
    per_dimension = pd.concat(dims, ignore_index=True)
    return runs, per_dimension[first + [c for c in per_dimension.columns if c not in first]]


def set_threads(n: int) -> None:
    """Torch uses the job's threads, no more (jobs share a node)."""
    torch.set_num_threads(max(1, int(n)))
