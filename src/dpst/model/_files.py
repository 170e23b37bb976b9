"""Saving and loading a model folder: atomic writes, tensors-only weights, one clear error per bad file."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import torch

from dpst._files import atomic_path, recover_folder
from dpst.train import resolve_device

from ._registry import DataRegistry

if TYPE_CHECKING:
    from ._base import _DPModel

# model.json "format": 2 stores indices as tensors and spot names, loadable with weights_only=True
SAVE_FORMAT = 2


class ModelFileError(ValueError):
    """A saved model folder holds a file that is unreadable, corrupt or unsafe to load."""


def save_model(model: _DPModel, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``model`` into the folder ``path`` (see :meth:`dpst.DPVAE.save`)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    split = {
        name: None if indices is None else torch.as_tensor(np.asarray(indices, dtype=np.int64))
        for name, indices in (
            ("train_indices", model.train_indices),
            ("validation_indices", model.validation_indices),
        )
    }
    meta = {
        "format": SAVE_FORMAT,
        "class": type(model).__name__,
        "init_params": _plain(model.init_params),
        "registry": model.registry.to_dict(),
        "var_names": list(model.adata.var_names),
        "obs_names": list(model.adata.obs_names),
        "is_trained": model.is_trained,
    }
    if model.penalty.n_groups is not None:  # the libraries of the lams, in their order
        meta["lam_libraries"] = list(model.libraries.names)
    text = json.dumps(meta, indent=1)  # before anything is written: a setting JSON cannot hold fails here
    # the old folder stays whole until the new one is complete (dpst._files.atomic_path)
    with atomic_path(path) as tmp:
        tmp.mkdir()
        torch.save(
            {"module": model.module.state_dict(), "penalty": model.penalty.state_dict(), **split},
            tmp / "model.pt",
        )
        (tmp / "model.json").write_text(text)
        if model.history is not None:
            model.history.to_csv(tmp / "history.csv", index=False)


def _lams_in_order(penalty_state: dict, saved: list, names: tuple, path: Path) -> dict:
    """The saved per-library lams in the order of ``names`` (the libraries' order in the AnnData loaded onto)."""
    if sorted(map(str, saved)) != sorted(map(str, names)):
        raise ValueError(
            f"{path}: the model has a lam for each of the libraries {', '.join(map(str, saved))}; "
            f"adata's are {', '.join(map(str, names))}"
        )
    order = torch.as_tensor([list(map(str, saved)).index(str(name)) for name in names], dtype=torch.int64)
    return {key: value[order] if value.dim() == 1 else value for key, value in penalty_state.items()}


def load_model(cls: type[_DPModel], path: str | os.PathLike, adata: ad.AnnData, device: str = "auto") -> _DPModel:
    """A ``cls`` loaded from the folder ``path`` onto ``adata`` (see :meth:`dpst.DPVAE.load`)."""
    path = Path(path)
    recover_folder(path)  # a replacement cut between its two renames, where folders cannot be exchanged
    if not (path / "model.json").exists() or not (path / "model.pt").exists():
        raise FileNotFoundError(f"{path} is not a saved model (model.json / model.pt missing)")
    meta = _read_model_json(path / "model.json")
    if meta["class"] != cls.__name__:
        raise TypeError(f"{path} holds a {meta['class']}, not a {cls.__name__}")
    if list(adata.var_names) != meta["var_names"]:
        raise ValueError(
            f"adata's genes differ from the {len(meta['var_names'])} genes the model in {path} was trained on"
        )
    spot_order = _stored_spot_positions(adata, meta["obs_names"], path)
    torch_device = resolve_device(device)
    state = _read_weights(path / "model.pt", torch_device)
    for name in ("train_indices", "validation_indices"):
        indices = state[name]
        if indices is not None and (
            not isinstance(indices, torch.Tensor)
            or indices.dtype != torch.int64
            or (len(indices) and not 0 <= int(indices.min()) <= int(indices.max()) < len(spot_order))
        ):
            raise ModelFileError(f"{path / 'model.pt'}: {name} are not indices of the {len(spot_order)} saved spots")
    # the saved registry keeps the batches' codes; models saved before it had no batches
    registry = DataRegistry.from_dict(meta["registry"]) if "registry" in meta else None
    model = cls(adata, **meta["init_params"], _registry=registry)
    if "lam_libraries" in meta:
        state["penalty"] = _lams_in_order(state["penalty"], meta["lam_libraries"], model.libraries.names, path)
    try:
        model.module.load_state_dict(state["module"])
        model.penalty.load_state_dict(state["penalty"])
    except (KeyError, RuntimeError) as error:
        raise ModelFileError(
            f"{path / 'model.pt'}: weights do not fit a {cls.__name__} with {meta['init_params']} "
            f"({str(error).splitlines()[0]})"
        ) from None
    model.train_indices, model.validation_indices = (
        None if state[name] is None else np.sort(spot_order[state[name].cpu().numpy()])
        for name in ("train_indices", "validation_indices")
    )
    model.module.to(torch_device).eval()
    if (path / "history.csv").exists():
        try:
            model.history = pd.read_csv(path / "history.csv")
        except (ValueError, pd.errors.ParserError) as error:
            raise ModelFileError(f"{path / 'history.csv'}: not a readable CSV ({error})") from None
    model.is_trained = meta["is_trained"]
    return model


def _plain(value):
    """Settings as JSON holds them: numpy scalars and arrays become Python numbers and lists."""
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(inner) for inner in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _read_model_json(file: Path) -> dict:
    try:
        meta = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{file}: not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{file}: expected a JSON object, got {type(meta).__name__}")
    if "format" not in meta and "class" in meta:
        raise ModelFileError(
            f"{file}: saved by an older dpst, whose model.pt cannot be loaded safely; train and save the model again"
        )
    if meta.get("format") != SAVE_FORMAT:
        raise ModelFileError(f"{file}: unknown save format {meta.get('format')!r} (expected {SAVE_FORMAT})")
    missing = [key for key in ("class", "init_params", "var_names", "obs_names", "is_trained") if key not in meta]
    if missing:
        raise ModelFileError(f"{file}: missing {', '.join(missing)}")
    return meta


def _read_weights(file: Path, device: torch.device) -> dict:
    # weights_only=True: a model.pt from elsewhere cannot run code while it is read
    try:
        state = torch.load(file, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ModelFileError(
            f"{file}: refused, it holds objects other than tensors ({_unpickling_reason(error)})"
        ) from None
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as error:  # noqa: BLE001 - torch reports a damaged file in many types, OSError among them
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"{file}: corrupt or truncated ({reason})") from None
    keys = {"module", "penalty", "train_indices", "validation_indices"}
    if not isinstance(state, dict) or not keys <= set(state):
        raise ModelFileError(f"{file}: not a dpst model (expected the entries {sorted(keys)})")
    return state


def _unpickling_reason(error: pickle.UnpicklingError) -> str:
    """The line of torch's many-paragraph weights_only message that says what was refused."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines()]
    reasons = [line for line in lines if line and not line.startswith(boilerplate)]
    return reasons[0] if reasons else "not a plain tensor file"


def _stored_spot_positions(adata: ad.AnnData, stored_names: list[str], path: Path) -> np.ndarray:
    """Position in ``adata`` of each spot the model was saved with, in saved order."""
    names = pd.Index(adata.obs_names)
    if not names.is_unique:
        raise ValueError("adata.obs_names has duplicates; make them unique (adata.obs_names_make_unique())")
    positions = names.get_indexer(stored_names)
    n_missing, n_extra = int((positions < 0).sum()), adata.n_obs - int((positions >= 0).sum())
    if n_missing or n_extra:
        raise ValueError(
            f"adata's spots differ from the {len(stored_names)} the model in {path} was saved with: "
            f"{n_missing} of those are missing from adata and {n_extra} of adata's are new"
        )
    return positions
