"""The training runs of the study: train and evaluate one run, write it, collect all runs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import anndata as ad
import pandas as pd
import torch

from dpst._files import atomic_path
from dpst.metrics import evaluate_model, evaluate_model_by_library
from dpst.model import DPSCVI, DPVAE
from dpst.train import resolve_device

MODEL_CLASSES = {"vae": DPVAE, "scvi": DPSCVI}
JOINT_KEYS = ("group", "section", "model", "alpha", "seed")
"""What identifies a row of a joint run's per-section metrics."""


def latent_key(model: str) -> str:
    """Key of a run's latent codes in its latent.h5ad: the library's ``write_results`` default.

    Parameters
    ----------
    model
        ``"vae"`` or ``"scvi"``.

    Returns
    -------
    str
        ``"X_dpvae"`` or ``"X_dpscvi"`` (in ``obsm`` and ``uns``).
    """
    if model not in MODEL_CLASSES:
        raise ValueError(f"model must be one of {sorted(MODEL_CLASSES)}, got {model!r}")
    return MODEL_CLASSES[model].default_key()


def train_run(
    adata: ad.AnnData,
    model: str,
    alpha: float,
    seed: int,
    model_settings: dict,
    penalty_settings: dict,
    train_settings: dict,
    batch_key: str | None = None,
) -> tuple:
    """Train one (model, alpha, seed) run and evaluate it.

    Parameters
    ----------
    adata
        The preprocessed section.
    model
        ``"vae"`` or ``"scvi"``.
    alpha
        Weight of the penalty.
    seed
        The model's seed.
    model_settings
        The config's ``model`` section (``likelihood`` applies to scVI only).
    penalty_settings
        The config's ``penalty`` section (``latent`` and ``warmup_epochs`` are
        renamed to the model's ``penalty_latent`` and ``penalty_warmup_epochs``).
    train_settings
        Arguments of ``train()``.
    batch_key
        For a group of sections (a ``joint`` run): the ``obs`` column naming each
        spot's section, the model's ``batch_key`` (and so its ``library_key``: the
        penalty's graph stays within sections). None: one section.

    Returns
    -------
    tuple
        The trained model, its metrics (:func:`dpst.metrics.evaluate_model` with
        the run's settings, timing and preprocessing record; over every spot for a
        group) and the per-dimension table.

    Raises
    ------
    ValueError
        An unknown model, or a device this job cannot see.
    """
    if model not in MODEL_CLASSES:
        raise ValueError(f"model must be one of {sorted(MODEL_CLASSES)}, got {model!r}")
    check_device(str(train_settings.get("device", "auto")))
    kwargs = dict(model_settings)
    likelihood = kwargs.pop("likelihood", "zinb")
    if model == "scvi":
        kwargs["likelihood"] = likelihood
    penalty = dict(penalty_settings)
    penalty.pop("alpha", None)
    latent = penalty.pop("latent", "sample")
    warmup = penalty.pop("warmup_epochs", 0)
    fitted = MODEL_CLASSES[model](
        adata,
        alpha=alpha,
        seed=seed,
        batch_key=batch_key,
        penalty_latent=latent,
        penalty_warmup_epochs=warmup,
        **penalty,
        **kwargs,
    )
    start = time.perf_counter()
    fitted.train(**train_settings)
    seconds = time.perf_counter() - start
    epochs = len(fitted.history) if fitted.history is not None else 0
    metrics, per_dimension = evaluate_model(fitted)
    metrics.update(
        model=model,
        alpha=alpha,
        seed=seed,
        n_spots=adata.n_obs,
        n_genes=adata.n_vars,
        epochs=epochs,
        train_seconds=seconds,
        seconds_per_epoch=seconds / max(epochs, 1),
        device=str(next(fitted.module.parameters()).device),
        **preprocess_record(adata),
    )
    return fitted, metrics, per_dimension


def run_label(model: str, alpha, seed, section: str | None = None, group: str | None = None) -> str:
    """How the logs name a run: ``"section S1, vae alpha 100 seed 0"`` or ``"group both, vae alpha 100 seed 0"``.

    Parameters
    ----------
    model, alpha, seed
        The run's backbone, penalty strength (its wildcard text or a number) and seed.
    section, group
        The section of a single-section run, or the group of a joint run (one of the two).

    Returns
    -------
    str
        The label.
    """
    where = f"group {group}" if group is not None else f"section {section}"
    alpha_text = alpha if isinstance(alpha, str) else f"{float(alpha):g}"
    return f"{where}, {model} alpha {alpha_text} seed {seed}"


def section_metrics(fitted, metrics: dict) -> pd.DataFrame:
    """A joint run's metrics per section (:func:`dpst.metrics.evaluate_model_by_library`), with the run's keys.

    Parameters
    ----------
    fitted
        The trained model, with ``batch_key``.
    metrics
        The run's metrics (:func:`train_run`): its ``group``, ``model``, ``alpha``,
        ``seed``, timing and settings are repeated on every row.

    Returns
    -------
    pandas.DataFrame
        One row per section, then ``"all"`` (every spot): ``group``, ``section``,
        ``model``, ``alpha``, ``seed``, the metrics and ``n_spots``, then the run's other fields.
    """
    by_section = evaluate_model_by_library(fitted).rename_axis("section").reset_index()
    keys = {key: metrics[key] for key in JOINT_KEYS if key != "section"}
    run = {k: v for k, v in metrics.items() if k not in by_section.columns and k not in keys}
    table = by_section.assign(**keys, **run)
    first = list(JOINT_KEYS)
    return table[first + [c for c in table.columns if c not in first]]


def preprocess_record(adata: ad.AnnData) -> dict:
    """What preprocessing decided that a run's metadata should show.

    The genes asked for (more than ``n_genes`` when clipped) and the micrometre calibration.

    Parameters
    ----------
    adata
        A section processed by :func:`dpst.pp.preprocess` (others give an empty dict).

    Returns
    -------
    dict
        ``n_top_genes_requested``, ``um_per_pixel`` and ``calibration`` where recorded.
    """
    record = adata.uns.get("dpst_preprocess", {})
    per_library = list(record.get("coordinates", {}).get("libraries", {}).values())
    # a section of the study is one library
    calibration = per_library[0] if len(per_library) == 1 else {}
    out: dict[str, int | float | str] = {}
    if "n_top_genes" in record:
        out["n_top_genes_requested"] = int(record["n_top_genes"])
    if "um_per_pixel" in calibration:
        out["um_per_pixel"] = float(calibration["um_per_pixel"])
        out["calibration"] = str(calibration["method"])
    return out


def check_device(device: str) -> None:
    """A ``train.device`` naming a GPU this job cannot see is the user's error, said in one line.

    Parameters
    ----------
    device
        The config's ``train.device``.

    Raises
    ------
    ValueError
        The device names a GPU this job does not see.
    """
    try:
        resolve_device(device)  # the library's check; a missing GPU is a RuntimeError there
    except RuntimeError:
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ValueError(
            f"train.device is {device!r} but this job sees {visible} CUDA GPU(s); "
            "set train.device to auto (GPU when visible, else CPU) or cpu"
        ) from None


def strict_json(value):
    """``value`` with NaN and infinities as None, so that json.dumps writes null (valid JSON).

    Parameters
    ----------
    value
        A float, or dicts, lists and tuples of them (other values pass unchanged).

    Returns
    -------
    object
        The same structure with non-finite floats replaced by None.
    """
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_run(
    fitted, metrics: dict, per_dimension: pd.DataFrame, outputs, by_section: pd.DataFrame | None = None
) -> None:
    """Write a run's latent AnnData, metrics, per-dimension table, history and model.

    The latent AnnData holds what the library's ``fitted.write_results`` writes
    (``obsm`` and ``uns`` under :func:`latent_key`: the latent means and the fit),
    the coordinates in micrometres (``obsm["spatial_um"]``), the run's metrics
    (``uns["run"]``) and the spots' grid position, domain and, in a group, section (``obs``).
    A joint run's per-section metrics (``by_section``) go to ``outputs.sections``.

    Each file is written under a temporary name and renamed into place, metrics.json
    last: a crash or a full disk leaves no partial file at an output path.
    Non-finite metrics are written as null (strict JSON); :func:`collect_runs`
    reads them back as NaN.

    Parameters
    ----------
    fitted
        The trained :class:`~dpst.DPVAE` or :class:`~dpst.DPSCVI`.
    metrics
        The run's metrics (:func:`train_run`).
    per_dimension
        Moran's I and Geary's C per latent dimension.
    outputs
        Paths with the attributes ``latent``, ``autocorrelation``, ``history``,
        ``model`` and ``metrics`` (Snakemake's ``output``), and ``sections`` with ``by_section``.
    by_section
        A joint run's :func:`section_metrics`; None for a single section.
    """
    adata = fitted.adata
    # write_results writes into the AnnData it encodes: a new one on the same matrices (no copy),
    # so the caller's section is left as it was
    # (with the batch and library columns a joint run's model reads)
    columns = list(dict.fromkeys(k for k in (fitted.registry.batch_key, fitted.library_key) if k))
    encoded = ad.AnnData(X=adata.X, obs=adata.obs[columns], var=adata.var[[]], layers=dict(adata.layers))
    key = fitted.write_results(encoded)
    latent = ad.AnnData(
        obs=adata.obs[[c for c in ("array_row", "array_col", "domain", "section") if c in adata.obs]].copy(),
        obsm={key: encoded.obsm[key], "spatial_um": fitted.coords},
        uns={key: encoded.uns[key]},
    )
    latent.uns["run"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    with atomic_path(outputs.latent) as tmp:
        latent.write_h5ad(tmp)
    with atomic_path(outputs.autocorrelation) as tmp:
        per_dimension.to_csv(tmp, sep="\t")
    with atomic_path(outputs.history) as tmp:
        fitted.history.to_csv(tmp, sep="\t", index=False)
    if by_section is not None:
        with atomic_path(outputs.sections) as tmp:
            by_section.to_csv(tmp, sep="\t", index=False)
    fitted.save(outputs.model, overwrite=True)  # itself written aside and renamed
    with atomic_path(outputs.metrics) as tmp:
        tmp.write_text(json.dumps(strict_json(metrics), indent=1, allow_nan=False))


def collect_runs(paths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run metrics.json files -> (one row per run, one row per run and latent dimension).

    Parameters
    ----------
    paths
        metrics.json files, each next to its run's autocorrelation.tsv.

    Returns
    -------
    runs : pandas.DataFrame
        One row per run, sorted by section, model, alpha and seed (null read as NaN).
    per_dimension : pandas.DataFrame
        One row per run and latent dimension.

    Raises
    ------
    ValueError
        ``paths`` is empty.
    """
    rows, dims = [], []
    for path in paths:
        path = Path(path)
        metrics = {key: math.nan if value is None else value for key, value in json.loads(path.read_text()).items()}
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


def collect_joint_runs(paths) -> pd.DataFrame:
    """Joint runs' per-section metrics (sections.tsv files) -> one table.

    Parameters
    ----------
    paths
        The joint runs' sections.tsv files (:func:`section_metrics`).

    Returns
    -------
    pandas.DataFrame
        One row per joint run and section (and ``"all"``), sorted by group (in order
        of appearance), model (VAE, scVI), alpha and seed, sections in each run's order.

    Raises
    ------
    ValueError
        ``paths`` is empty.
    """
    frames = [pd.read_csv(path, sep="\t", dtype={"group": str, "section": str}) for path in paths]
    if not frames:
        raise ValueError("no joint runs to collect")
    table = pd.concat(frames, ignore_index=True)
    groups, models = list(dict.fromkeys(table["group"])), list(dict.fromkeys(["vae", "scvi", *table["model"]]))
    order = table.assign(_group=table["group"].map(groups.index), _model=table["model"].map(models.index))
    order = order.sort_values(["_group", "_model", "alpha", "seed"], kind="stable")
    return order.drop(columns=["_group", "_model"]).reset_index(drop=True)


def set_threads(n: int) -> None:
    """Torch uses the job's threads, no more (jobs share a node).

    Parameters
    ----------
    n
        The job's threads (at least 1 is used).
    """
    torch.set_num_threads(max(1, int(n)))
