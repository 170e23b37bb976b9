"""Query mapping: a new section onto a trained reference, scArches-style surgery.

The query's batches get new one-hot columns in the first layer of the encoder
and of the decoder (and new rows of a per-batch dispersion); everything the
reference learned is copied and, by default, frozen, so that training on the
query fits only what is new, with the penalty on the query's own geometry.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from dpst.model._files import _read_model_json, _read_weights
from dpst.model._registry import DataRegistry
from dpst.module import VAEModule

if TYPE_CHECKING:
    from dpst.model._base import _DPModel


def reference_state(cls: type[_DPModel], reference) -> tuple[dict, DataRegistry, list[str], dict]:
    """``(init_params, registry, genes, module weights)`` of a trained model or of its saved folder."""
    if isinstance(reference, (str, os.PathLike)):
        path = Path(reference)
        if not (path / "model.json").exists() or not (path / "model.pt").exists():
            raise FileNotFoundError(f"reference {path} is not a saved model (model.json / model.pt missing)")
        meta = _read_model_json(path / "model.json")
        if meta["class"] != cls.__name__:
            raise TypeError(f"reference {path} holds a {meta['class']}, not a {cls.__name__}")
        if not meta["is_trained"]:
            raise ValueError(f"reference {path} was saved untrained; train it before mapping a query onto it")
        if "registry" not in meta:
            raise ValueError(f"reference {path} was saved without batches; train the reference with batch_key")
        weights = _read_weights(path / "model.pt", torch.device("cpu"))["module"]
        return meta["init_params"], DataRegistry.from_dict(meta["registry"]), meta["var_names"], weights
    if not isinstance(reference, cls):
        raise TypeError(f"reference must be a trained {cls.__name__} or the folder it was saved in")
    if not reference.is_trained:
        raise ValueError("reference is not trained; train it before mapping a query onto it")
    state = {key: value.detach().cpu() for key, value in reference.module.state_dict().items()}
    return dict(reference.init_params), reference.registry, list(reference.adata.var_names), state


def query_genes(adata: ad.AnnData, genes: list[str], layer: str | None, zero_fill: bool) -> ad.AnnData:
    """``adata`` on the reference's genes in their order; missing genes refused, or zero-filled when asked."""
    present = pd.Index(adata.var_names)
    if not present.is_unique:
        raise ValueError("adata.var_names has duplicates; make them unique before mapping it")
    if list(present) == list(genes):
        return adata
    positions = present.get_indexer(genes)
    missing = [gene for gene, at in zip(genes, positions, strict=True) if at < 0]
    if missing and not zero_fill:
        raise ValueError(
            f"adata lacks {len(missing)} of the reference's {len(genes)} genes "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); "
            "pass zero_fill_missing_genes=True to map it with those genes at zero"
        )
    source = adata.X if layer is None else adata.layers[layer]
    source = sp.csr_matrix(source)
    columns = sp.csr_matrix((adata.n_obs, 1), dtype=source.dtype)
    blocks = [source[:, [at]] if at >= 0 else columns for at in positions]
    matrix = sp.hstack(blocks, format="csr")
    mapped = ad.AnnData(obs=adata.obs.copy(), var=pd.DataFrame(index=pd.Index(genes)), obsm=dict(adata.obsm))
    mapped.uns = dict(adata.uns)
    if layer is None:
        mapped.X = matrix
    else:
        mapped.layers[layer] = matrix
    return mapped


def query_registry(adata: ad.AnnData, reference: DataRegistry) -> DataRegistry:
    """The reference's registry with the query's batches appended (a batch of both is refused)."""
    if reference.batch_key is None:
        raise ValueError("the reference was trained without batch_key; query mapping adds batches to one that has them")
    own = DataRegistry.register(adata, reference.layer, reference.batch_key)
    shared = sorted(set(own.batch_categories) & set(reference.batch_categories))
    if shared:
        raise ValueError(
            f"adata.obs[{reference.batch_key!r}]: batch(es) {', '.join(map(repr, shared))} are already in the "
            "reference; a query brings new batches (rename them, or train a joint model)"
        )
    return replace(reference, batch_categories=reference.batch_categories + own.batch_categories)


def transplant(module: VAEModule, weights: dict[str, torch.Tensor]) -> None:
    """Copy the reference's weights into ``module``; grown tensors keep their new batch columns or rows."""
    state = module.state_dict()
    for name, old in weights.items():
        new = state[name]
        if new.shape == old.shape:
            new.copy_(old)
        elif new.dim() == 2 and new.shape[0] == old.shape[0]:  # a first layer: new one-hot columns at the end
            new[:, : old.shape[1]] = old
        elif new.dim() == 2 and new.shape[1] == old.shape[1]:  # a per-batch dispersion: new rows at the end
            new[: old.shape[0]] = old
        else:
            raise ValueError(f"reference weight {name} of shape {tuple(old.shape)} does not fit {tuple(new.shape)}")
    module.load_state_dict(state)


def freeze_reference(module: VAEModule, n_reference_batches: int) -> None:
    """Train only what the query adds: its batch columns (and dispersion rows); the rest stays the reference's.

    The encoder's batch-normalization statistics stay the reference's; the
    decoder's follow the query (as scArches does by default).
    """
    decoder = module.decoder
    assert isinstance(decoder, nn.Sequential), "both backbones decode through HiddenLayers"
    first_layers = [_first_linear(module.encoder.hidden).weight, _first_linear(decoder).weight]
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for weight in first_layers:  # (hidden, inputs + batches): the query's batches are the last columns
        keep = torch.ones_like(weight, dtype=torch.bool)
        keep[:, weight.shape[1] - module.n_batch + n_reference_batches :] = False
        _train_only(weight, keep)
    log_theta = getattr(module, "log_theta", None)
    if getattr(module, "dispersion", None) == "gene-batch" and isinstance(log_theta, nn.Parameter):
        keep = torch.ones_like(log_theta, dtype=torch.bool)
        keep[n_reference_batches:] = False
        _train_only(log_theta, keep)
    for layer in module.encoder.modules():
        if isinstance(layer, nn.BatchNorm1d):
            layer.momentum = 0.0  # running statistics stay the reference's


def _first_linear(layers: nn.Sequential) -> nn.Linear:
    """The first layer of a :class:`dpst.module.HiddenLayers`: the one that reads the batch columns."""
    first = layers[0]
    assert isinstance(first, nn.Linear), "HiddenLayers starts with its Linear layer"
    return first


def _train_only(parameter: torch.Tensor, keep: torch.Tensor) -> None:
    """Let the optimizer change ``parameter`` except where ``keep``: their gradient is always 0.

    With a zero gradient from the first step Adam's moments stay 0 and so does
    its update (the caller trains without weight decay).
    """
    parameter.requires_grad_(True)
    parameter.register_hook(lambda grad: grad.masked_fill(keep.to(grad.device), 0.0))
