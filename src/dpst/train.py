"""One training loop for every backbone: negative ELBO + alpha * distortion penalty.

The objective per step is

    mean_i [ -log p(x_i | z_i) + kl_weight * KL_i ]  +  alpha * dis

i.e. the study's ``loss_VAE`` divided by the number of spots (as scvi-tools
does), so ``alpha`` does not grow with N; the study's ``alpha`` is ours times N.

Full batch (``batch_size=None``) takes every training spot each step: right for
a Visium section. Minibatches keep G's edges: each step samples seed spots,
adds their graph neighbours, computes the ELBO on the seeds and the penalty on
every edge touching a seed, weighted ``1 / (2 p)`` with ``p`` the share of
spots that are seeds. An edge is counted once per seed endpoint, so the batch
penalty is an unbiased estimate of the full one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .graph import SpatialGraph
from ._checks import check_int, check_real
from .module import DistortionPenalty, VAEModule, pair_distances


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became NaN or infinite."""


@dataclass
class PenaltySettings:
    """How the distortion penalty enters the objective."""

    alpha: float = 0.0
    normalization: Literal["pairs", "n2"] = "pairs"
    latent: Literal["sample", "mean"] = "sample"
    warmup_epochs: int = 0

    def __post_init__(self):
        self.alpha = check_real("alpha", self.alpha, at_least=0)
        if self.normalization not in ("pairs", "n2"):
            raise ValueError(f"normalization must be 'pairs' or 'n2', got {self.normalization!r}")
        if self.latent not in ("sample", "mean"):
            raise ValueError(f"penalty latent must be 'sample' or 'mean', got {self.latent!r}")
        self.warmup_epochs = check_int("penalty_warmup_epochs", self.warmup_epochs, minimum=0)


@dataclass
class TrainingSettings:
    """Optimization settings. Adam's defaults (lr, weight decay, eps) follow scvi-tools."""

    max_epochs: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-6
    adam_eps: float = 0.01
    batch_size: int | None = None
    kl_warmup_epochs: int = 400
    validation_fraction: float = 0.1
    early_stopping: bool = False
    patience: int = 50
    seed: int = 0
    device: str = "auto"
    progress_bar: bool = True

    def __post_init__(self):
        self.max_epochs = check_int("max_epochs", self.max_epochs, minimum=1)
        self.lr = check_real("lr", self.lr, above=0)
        self.weight_decay = check_real("weight_decay", self.weight_decay, at_least=0)
        self.adam_eps = check_real("adam_eps", self.adam_eps, above=0)
        if self.batch_size is not None:
            # BatchNorm needs two spots per step
            self.batch_size = check_int("batch_size (None = full batch)", self.batch_size, minimum=2)
        self.kl_warmup_epochs = check_int("kl_warmup_epochs", self.kl_warmup_epochs, minimum=0)
        self.validation_fraction = check_real(
            "validation_fraction", self.validation_fraction, at_least=0, below=1
        )
        if self.early_stopping and self.validation_fraction == 0:
            raise ValueError("early_stopping needs held-out spots: set validation_fraction > 0")
        self.patience = check_int("patience", self.patience, minimum=1)
        self.seed = check_int("seed", self.seed)
        resolve_device(self.device)  # a missing GPU fails here, before any work


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA when a GPU is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {device!r}"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} requested but torch sees no CUDA GPU; use device='auto' or 'cpu'"
        )
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise RuntimeError(
            f"device {device!r} requested but torch sees {torch.cuda.device_count()} CUDA GPU(s)"
        )
    return resolved


def split_spots(n_obs: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split into sorted (train, held-out) spot indices."""
    perm = np.random.default_rng(seed).permutation(n_obs)
    n_val = int(round(validation_fraction * n_obs))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def dense_rows(x, rows: np.ndarray | slice, device: torch.device) -> torch.Tensor:
    """Rows of a dense or sparse matrix as a float32 tensor on ``device``."""
    block = x[rows]
    if sp.issparse(block):
        block = block.toarray()
    return torch.as_tensor(np.asarray(block, dtype=np.float32), device=device)


class _PairSampler:
    """Edges of the training graph as tensors, and their minibatch estimates."""

    def __init__(self, graph: SpatialGraph, normalization: str, device: torch.device):
        self.graph = graph
        self.complete = graph.is_complete
        self.denominator = graph.denominator(normalization)
        # the complete graph goes through pdist: its N(N-1)/2 indices stay off the device
        self.edges = None if self.complete else torch.as_tensor(graph.edges, device=device)
        self.ds = torch.as_tensor(graph.distances, dtype=torch.float32, device=device)
        self.weights = torch.as_tensor(graph.weights, dtype=torch.float32, device=device)
        self.adjacency = None if self.complete else graph.adjacency()
        self.device = device

    def full(self):
        """(edges or None for all pairs, ds, weights) over the whole graph."""
        return self.edges, self.ds, None if self.complete else self.weights

    def batch(self, seeds: np.ndarray):
        """Spots to encode and the weighted pairs touching the seeds.

        Returns (batch spots, local seed positions, local edges, ds, weights, denominator).
        """
        share = len(seeds) / self.graph.n_obs
        if self.complete:
            n_pairs = len(seeds) * (len(seeds) - 1) / 2
            scale = (self.graph.n_obs * (self.graph.n_obs - 1) / 2) / n_pairs
            # the caller takes ds from the seeds' coordinates
            return seeds, np.arange(len(seeds)), None, None, None, self.denominator / scale
        rows = self.adjacency[seeds]
        neighbours = rows.indices
        edge_ids = rows.data - 1
        spots = np.union1d(seeds, neighbours)
        seed_pos = np.searchsorted(spots, seeds)
        local = np.stack(
            [np.repeat(seed_pos, np.diff(rows.indptr)), np.searchsorted(spots, neighbours)], axis=1
        )
        eids = torch.as_tensor(edge_ids, device=self.device)
        weights = self.weights[eids] / (2.0 * share)
        local_edges = torch.as_tensor(local, device=self.device)
        return spots, seed_pos, local_edges, self.ds[eids], weights, self.denominator


def train_module(
    module: VAEModule,
    penalty: DistortionPenalty,
    x,
    coords: np.ndarray,
    graph: SpatialGraph,
    penalty_settings: PenaltySettings,
    settings: TrainingSettings,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Fit ``module`` (and ``penalty``'s lam) on spots ``x`` with coordinates ``coords``.

    Returns the per-epoch history and the (train, held-out) spot indices.
    """
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    train_idx, val_idx = split_spots(x.shape[0], settings.validation_fraction, settings.seed)
    if len(train_idx) < 2:  # BatchNorm needs two spots
        raise ValueError(
            f"{len(train_idx)} training spot(s) left of {x.shape[0]} after holding out "
            f"validation_fraction={settings.validation_fraction:g}; training needs at least 2"
        )
    train_graph = graph.subgraph(train_idx)
    if penalty_settings.alpha > 0 and train_graph.n_edges == 0:
        raise ValueError(
            f"the {graph.kind!r} graph has no pairs among the {len(train_idx)} training spots "
            f"(each of its {graph.n_edges} pairs touches a held-out spot): the penalty would be empty"
        )
    pairs = _PairSampler(train_graph, penalty_settings.normalization, device)
    coords_train = torch.as_tensor(coords[train_idx], dtype=torch.float32, device=device)

    module.to(device)
    penalty.to(device)
    optimizer = torch.optim.Adam(
        [p for p in [*module.parameters(), *penalty.parameters()] if p.requires_grad],
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        eps=settings.adam_eps,
    )
    full_batch = settings.batch_size is None or settings.batch_size >= len(train_idx)
    x_train = dense_rows(x, train_idx, device) if full_batch else None
    x_val = dense_rows(x, val_idx, device) if len(val_idx) else None

    history, best, stale = [], (math.inf, None), 0
    epochs = tqdm(range(settings.max_epochs), desc="Training", unit="epoch",
                  disable=not settings.progress_bar)
    for epoch in epochs:
        kl_weight = min(1.0, epoch / settings.kl_warmup_epochs) if settings.kl_warmup_epochs else 1.0
        penalty_on = penalty_settings.alpha > 0 and epoch >= penalty_settings.warmup_epochs
        module.train()
        if full_batch:
            batches = [None]
        else:
            order = train_idx[rng.permutation(len(train_idx))]
            batches = [order[b:b + settings.batch_size] for b in range(0, len(order), settings.batch_size)]
            batches = [seeds for seeds in batches if len(seeds) >= 2]  # BatchNorm needs two spots
        steps = []
        for seeds in batches:
            if seeds is None:
                step = _full_step(module, penalty, x_train, pairs, kl_weight, penalty_on, penalty_settings)
            else:
                step = _batch_step(module, penalty, x, train_idx, coords_train, pairs, seeds, kl_weight,
                                   penalty_on, penalty_settings, device)
            _check_finite(step, epoch, settings.lr, penalty_settings.alpha)
            optimizer.zero_grad(set_to_none=True)
            step["loss"].backward()
            optimizer.step()
            step["loss"] = step["loss"].detach()
            steps.append(step)
        record = {
            "epoch": epoch,
            "loss": float(np.mean([s["loss"].item() for s in steps])),
            "reconstruction": float(np.mean([s["reconstruction"].item() for s in steps])),
            "kl": float(np.mean([s["kl"].item() for s in steps])),
            "penalty": float(np.mean([s["penalty"].item() for s in steps])),
            "lam": penalty.lam if penalty_on else math.nan,
            "kl_weight": kl_weight,
        }
        if x_val is not None:
            record["validation_elbo"] = _validation_elbo(module, x_val)
        history.append(record)
        epochs.set_postfix(loss=f"{record['loss']:.4g}", penalty=f"{record['penalty']:.3g}")
        if settings.early_stopping:
            if record["validation_elbo"] < best[0]:
                best, stale = (record["validation_elbo"], _snapshot(module, penalty)), 0
            else:
                stale += 1
                if stale >= settings.patience:
                    break
    if settings.early_stopping and best[1] is not None:
        module.load_state_dict(best[1][0])
        penalty.load_state_dict(best[1][1])
    module.eval()
    _check_finite_weights(module, penalty, settings.lr, penalty_settings.alpha)
    return pd.DataFrame(history), train_idx, val_idx


def _check_finite(step: dict, epoch: int, lr: float, alpha: float) -> None:
    loss = step["loss"]
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"training diverged: the loss became {loss.item()} at epoch {epoch} "
            f"(reconstruction {step['reconstruction'].item():.4g}, KL {step['kl'].item():.4g}, "
            f"penalty {step['penalty'].item():.4g}); lower the learning rate lr={lr:g}"
            + (f" or alpha={alpha:g}" if alpha > 0 else "")
        )


def _check_finite_weights(module, penalty, lr: float, alpha: float) -> None:
    # the last step can leave NaN weights behind a finite loss
    bad = [name for name, value in [*module.state_dict().items(), *penalty.state_dict().items()]
           if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise TrainingDivergedError(
            f"training diverged: {len(bad)} weight tensors ({bad[0]}, ...) became NaN or infinite; "
            f"lower the learning rate lr={lr:g}" + (f" or alpha={alpha:g}" if alpha > 0 else "")
        )


def _objective(module, penalty, x, inf, gen, kl_weight, dis, settings):
    terms = module.loss_terms(x, inf, gen)
    reconstruction, kl = terms["reconstruction"].mean(), terms["kl"].mean()
    loss = reconstruction + kl_weight * kl
    if dis is not None:
        loss = loss + settings.alpha * dis
    nan = torch.tensor(math.nan)
    return {"loss": loss, "reconstruction": reconstruction.detach(), "kl": kl.detach(),
            "penalty": nan if dis is None else dis.detach()}


def _penalty_latent(inf, settings: PenaltySettings) -> torch.Tensor:
    return inf["z"] if settings.latent == "sample" else inf["qz_mean"]


def _full_step(module, penalty, x, pairs: _PairSampler, kl_weight, penalty_on, settings):
    inf, gen = module(x)
    dis = None
    if penalty_on:
        edges, ds, weights = pairs.full()
        dz = pair_distances(_penalty_latent(inf, settings), edges)
        penalty.initialize_lam(dz.detach(), ds)
        dis = penalty(dz, ds, weights, pairs.denominator)
    return _objective(module, penalty, x, inf, gen, kl_weight, dis, settings)


def _batch_step(module, penalty, x, train_idx, coords_train, pairs: _PairSampler, seeds,
                kl_weight, penalty_on, settings, device):
    # seeds are spot indices into x; the pair graph is numbered over train_idx
    seeds_local = np.searchsorted(train_idx, seeds)
    if not penalty_on:
        xb = dense_rows(x, seeds, device)
        inf, gen = module(xb)
        return _objective(module, penalty, xb, inf, gen, kl_weight, None, settings)
    spots, seed_pos, edges, ds, weights, denominator = pairs.batch(seeds_local)
    xb = dense_rows(x, train_idx[spots], device)
    inf, gen = module(xb)
    z = _penalty_latent(inf, settings)
    if edges is None:  # complete graph: all pairs among the seeds
        ds = pair_distances(coords_train[torch.as_tensor(spots, device=device)])
    dz = pair_distances(z, edges)
    penalty.initialize_lam(dz.detach(), ds)
    dis = penalty(dz, ds, weights, denominator)
    seed_pos = torch.as_tensor(seed_pos, device=device)
    inf_seeds = {k: v[seed_pos] for k, v in inf.items()}
    gen_seeds = {k: (v[seed_pos] if v.dim() == 2 and len(v) == len(xb) else v) for k, v in gen.items()}
    return _objective(module, penalty, xb[seed_pos], inf_seeds, gen_seeds, kl_weight, dis, settings)


@torch.no_grad()
def _validation_elbo(module: VAEModule, x_val: torch.Tensor) -> float:
    """Mean negative ELBO (KL weight 1) of the held-out spots, in eval mode."""
    module.eval()
    inf, gen = module(x_val)
    terms = module.loss_terms(x_val, inf, gen)
    module.train()
    return float((terms["reconstruction"] + terms["kl"]).mean())


def _snapshot(module, penalty):
    return copy.deepcopy(module.state_dict()), copy.deepcopy(penalty.state_dict())
