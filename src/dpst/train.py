"""One training loop for every backbone: negative ELBO + alpha * distortion penalty.

The objective per step is

    mean_i [ -log p(x_i | z_i) + kl_weight * KL_i ]  +  alpha * dis

i.e. the study's ``loss_VAE`` divided by the number of spots (as scvi-tools
does), so ``alpha`` does not grow with N; the study's ``alpha`` is ours times N.

Full batch (``batch_size=None``) takes every training spot each step: right for
a Visium section. Minibatches with the penalty keep G's edges by being spatially
local: each epoch cuts the tissue into square tiles at a random offset and packs
whole tiles into batches, so almost every edge lies inside a batch and every spot
is encoded once per epoch, as without the penalty. Each counted edge is weighted
by the inverse of its probability of falling inside a tile, so the batch penalty
is an unbiased estimate of the full one (:class:`_PairSampler` states it exactly).
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ._checks import check_int, check_real
from .graph import SpatialGraph
from .module import BATCH_KEY, NEIGHBORS_KEY, X_KEY, DistortionPenalty, VAEModule, pair_distances, take_rows

# held-out sets above this many spots are scored chunk by chunk
VALIDATION_CHUNK = 16_384
# what each step reports, in the history's column order
_STEP_KEYS = ("loss", "reconstruction", "kl", "penalty")
# the minibatch tiles' widths with the penalty (_PairSampler)
TileWidth = Literal["wide", "narrow"]
TILE_WIDTHS = get_args(TileWidth)


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
    tiles: TileWidth = "wide"

    def __post_init__(self):
        self.max_epochs = check_int("max_epochs", self.max_epochs, minimum=1)
        self.lr = check_real("lr", self.lr, above=0)
        self.weight_decay = check_real("weight_decay", self.weight_decay, at_least=0)
        self.adam_eps = check_real("adam_eps", self.adam_eps, above=0)
        if self.batch_size is not None:
            # BatchNorm needs two spots per step
            self.batch_size = check_int("batch_size (None = full batch)", self.batch_size, minimum=2)
        self.kl_warmup_epochs = check_int("kl_warmup_epochs", self.kl_warmup_epochs, minimum=0)
        self.validation_fraction = check_real("validation_fraction", self.validation_fraction, at_least=0, below=1)
        if self.early_stopping and self.validation_fraction == 0:
            raise ValueError("early_stopping needs held-out spots: set validation_fraction > 0")
        self.patience = check_int("patience", self.patience, minimum=1)
        self.seed = check_int("seed", self.seed)
        if self.tiles not in TILE_WIDTHS:
            raise ValueError(f"tiles must be one of {TILE_WIDTHS}, got {self.tiles!r}")
        resolve_device(self.device)  # a missing GPU fails here, before any work
        if self.kl_warmup_epochs > self.max_epochs:
            warnings.warn(
                f"max_epochs={self.max_epochs} ends before the KL warm-up (kl_warmup_epochs={self.kl_warmup_epochs}): "
                f"the KL weight only reaches {self.max_epochs / self.kl_warmup_epochs:.2g} and the model never "
                "trains on the full ELBO; for a quick run lower kl_warmup_epochs too",
                UserWarning,
                stacklevel=4,
            )


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA when a GPU is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise RuntimeError(f"device {device!r} requested but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return resolved


def split_spots(n_obs: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split into sorted (train, held-out) spot indices."""
    perm = np.random.default_rng(seed).permutation(n_obs)
    n_val = round(validation_fraction * n_obs)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def dense_rows(x, rows: np.ndarray | slice, device: torch.device) -> torch.Tensor:
    """Rows of a dense or sparse matrix as a float32 tensor on ``device``."""
    block = x[rows]
    if sp.issparse(block):
        block = block.toarray()
    return torch.as_tensor(np.asarray(block, dtype=np.float32), device=device)


class SpotData:
    """What a module reads of each spot, addressable by rows: the input matrix and batch codes.

    Built by a model's data registration (:mod:`dpst.model`); the training loop
    and inference take batches of it as the dictionary of tensors the modules
    read (:data:`dpst.module.X_KEY`, :data:`dpst.module.BATCH_KEY`).

    Parameters
    ----------
    x
        ``(n_obs, n_input)`` dense or sparse model input; kept as is (dense rows
        are made per batch).
    batch
        ``(n_obs,)`` integer batch codes, or None without batches.
    neighbors
        ``(n_obs, n_input)`` mean input of each spot's spatial neighbours, or None.
    """

    def __init__(self, x, batch: np.ndarray | None = None, neighbors=None):
        self.x, self.neighbors = x, neighbors
        self.batch = None if batch is None else np.asarray(batch, dtype=np.int64)
        if self.batch is not None and self.batch.shape != (x.shape[0],):
            raise ValueError(f"batch codes must have shape ({x.shape[0]},), got {self.batch.shape}")

    @property
    def n_obs(self) -> int:
        """Number of spots."""
        return self.x.shape[0]

    def rows(self, rows: np.ndarray | slice, device: torch.device) -> dict[str, torch.Tensor]:
        """The tensors of spots ``rows`` on ``device``."""
        tensors = {X_KEY: dense_rows(self.x, rows, device)}
        if self.batch is not None:
            tensors[BATCH_KEY] = torch.as_tensor(self.batch[rows], device=device)
        if self.neighbors is not None:
            tensors[NEIGHBORS_KEY] = dense_rows(self.neighbors, rows, device)
        return tensors


# Edges whose chance of falling inside one tile is below this are not left to the tiles
# (their 1 / p weight would be large): each is counted in the batch of its first spot.
LONG_EDGE_INCLUSION = 0.25
# Wide tiles (the default): twice this quantile of the edges' largest axis extent, so p >= 1/4 below it.
TILE_EXTENT_QUANTILE = 0.99
# Narrow tiles: this quantile of the edges' own sides (where p = LONG_EDGE_INCLUSION), so at most
# 8% of the edges are long; narrower would make most of a dense grid's edges long.
NARROW_TILE_QUANTILE = 0.92


def _own_tile_sides(extent: np.ndarray) -> np.ndarray:
    """Each edge's tile side ``t`` at which it falls inside one tile with probability ``LONG_EDGE_INCLUSION``.

    ``(1 - dx / t)(1 - dy / t) = c`` is the quadratic ``(1 - c) t^2 - (dx + dy) t + dx dy = 0``;
    its larger root is the one above both extents.
    """
    dx, dy = extent[:, 0], extent[:, 1]
    keep = 1.0 - LONG_EDGE_INCLUSION
    spread = dx + dy
    return (spread + np.sqrt(spread**2 - 4.0 * keep * dx * dy)) / (2.0 * keep)


@dataclass
class _Batch:
    """One minibatch step of a tiled epoch.

    ``spots`` (training-graph numbering) are encoded; the first ``n_elbo`` of them
    carry the ELBO, the rest are far endpoints of long edges. ``edges`` index
    ``spots``; ``ds``, ``weights`` (sampling correction folded in) and ``groups`` (each
    pair's lam, None for one lam) belong to them.
    """

    spots: np.ndarray
    n_elbo: int
    edges: torch.Tensor
    ds: torch.Tensor
    weights: torch.Tensor
    groups: torch.Tensor | None = None


class _PairSampler:
    """Edges of the training graph as tensors, and their minibatch estimates.

    Minibatches of a sparse graph are spatially local (:meth:`epoch`): each epoch
    lays a square grid of side ``tile`` over the tissue at a uniformly random
    offset, visits its tiles in random order and packs them into about
    ``N / batch_size`` batches, so every spot is encoded once per epoch, as
    without the penalty. A batch's penalty sums the edges whose two spots share a
    tile, each weighted ``K w_e / p_e / denominator`` (``K`` batches in the epoch):
    an edge with axis extents ``(dx, dy)`` shares a tile with probability
    ``p_e = (1 - dx / tile)(1 - dy / tile)`` over the offset. Long edges
    (``p_e < 1/4``) are instead counted in the batch of their first spot, with
    ``p_e = 1``, their other spot encoded as an extra (no ELBO). ``tiles="wide"``
    sets the side at twice the 99th percentile of the edges' larger extent (few
    long edges); ``"narrow"`` at the narrowest side that leaves at most 8% of them
    long (many more, smaller patches per batch). With several
    sections (``libraries``), a tile holds the spots of one section only; G has no
    pair across sections, so the inclusion probabilities are unchanged.

    Unbiasedness: for fixed latent codes, the mean of the batch penalties over one
    epoch is ``sum_e w_e |d_z - lam d_s| 1[e counted] / (p_e D)``, whose expectation
    over the offset is the full penalty ``sum_e w_e |d_z - lam d_s| / D`` with ``D``
    the full objective's normalizer (``sum w`` for ``pairs``, ``N^2 / 2`` for ``n2``).
    So a step drawn uniformly from an epoch is an unbiased estimate of the full
    penalty, its value and its gradient.

    The complete graph (``all``) is estimated from all pairs among random seeds instead.
    """

    def __init__(
        self,
        graph: SpatialGraph,
        normalization: Literal["pairs", "n2"],
        device: torch.device,
        coords: np.ndarray | None = None,
        libraries: np.ndarray | None = None,
        lam_per_library: bool = False,
        tiles: TileWidth = "wide",
    ):
        self.graph = graph
        self.libraries = libraries
        self.complete = graph.is_complete
        self.denominator = graph.denominator(normalization)
        # the complete graph goes through pdist: its N(N-1)/2 indices stay off the device
        self.edges = None if self.complete else torch.as_tensor(graph.edges, device=device)
        self.ds = torch.as_tensor(graph.distances, dtype=torch.float32, device=device)
        self.weights = torch.as_tensor(graph.weights, dtype=torch.float32, device=device)
        # each pair's lam: its section's (G has no pair across sections), or None for one lam
        self.groups = None
        if lam_per_library:
            if self.complete:
                raise ValueError("a lam per library needs a sparse graph G, not the complete graph 'all'")
            codes = np.zeros(graph.n_obs, dtype=np.int64) if libraries is None else libraries  # one library
            self.groups = torch.as_tensor(codes[graph.edges[:, 0]], dtype=torch.int64, device=device)
        self.device = device
        self.coords = None if coords is None else np.asarray(coords, dtype=np.float64)
        if self.complete or self.coords is None:
            return
        if self.coords.shape != (graph.n_obs, 2):
            raise ValueError(f"coords must have shape ({graph.n_obs}, 2), got {self.coords.shape}")
        extent = np.abs(self.coords[graph.edges[:, 1]] - self.coords[graph.edges[:, 0]])
        own_sides = _own_tile_sides(extent)
        if tiles == "narrow":
            self.tile = float(np.quantile(own_sides, NARROW_TILE_QUANTILE))
        else:
            self.tile = 2.0 * float(np.quantile(extent.max(axis=1), TILE_EXTENT_QUANTILE))
        # p < LONG_EDGE_INCLUSION exactly when an edge needs a wider tile (no rounding at lattice ties)
        self.long = own_sides > self.tile
        inclusion = np.prod(np.clip(1.0 - extent / self.tile, 0.0, None), axis=1)
        self.inverse_inclusion = graph.weights / np.where(self.long, 1.0, inclusion)

    def full_args(self) -> tuple:
        """The penalty's ``(edges or None for all pairs, ds, weights, denominator, groups)`` over the whole graph."""
        return self.edges, self.ds, None if self.complete else self.weights, self.denominator, self.groups

    def seeds_args(self, seeds: np.ndarray, coords: torch.Tensor) -> tuple:
        """Complete graph: all pairs among ``seeds`` (training-graph numbering), scaled to the full number of pairs.

        ``coords`` are the training spots' coordinates on the device. Returns the
        penalty's ``(None, ds, None, denominator, None)``.
        """
        n_pairs = len(seeds) * (len(seeds) - 1) / 2
        scale = (self.graph.n_obs * (self.graph.n_obs - 1) / 2) / n_pairs
        ds = pair_distances(coords[torch.as_tensor(seeds, device=coords.device)])
        return None, ds, None, self.denominator / scale, None

    def tile_args(self, batch: _Batch) -> tuple:
        """The penalty's ``(edges, ds, weights, denominator, groups)`` of a tiled batch."""
        return batch.edges, batch.ds, batch.weights, self.denominator, batch.groups

    def tiles(self, rng: np.random.Generator) -> np.ndarray:
        """Each spot's tile (0, 1, ...) for a grid of side ``tile`` at a random offset, within its section."""
        assert self.coords is not None, "tiled batches need the spots' coordinates"
        cell_xy = np.floor((self.coords + rng.uniform(0.0, self.tile, size=2)) / self.tile).astype(np.int64)
        cell_xy -= cell_xy.min(axis=0)
        cell = cell_xy[:, 0] * (cell_xy[:, 1].max() + 1) + cell_xy[:, 1]
        if self.libraries is not None:  # sections may overlap in the plane: a tile is a cell of one section
            cell = self.libraries * (cell.max() + 1) + cell
        return np.unique(cell, return_inverse=True)[1]

    def epoch(self, rng: np.random.Generator, batch_size: int) -> list[_Batch]:
        """The batches of one tiled epoch (see the class docstring), every spot once."""
        n = self.graph.n_obs
        tile_of = self.tiles(rng)
        n_tiles = int(tile_of.max()) + 1
        rank = rng.permutation(n_tiles)[tile_of]  # each spot's tile's place in the epoch
        order = np.argsort(rank, kind="stable")  # spots tile by tile, tiles in epoch order
        tile_sizes = np.bincount(rank, minlength=n_tiles)
        n_target = max(1, round(n / batch_size))
        # a tile opens batch floor(start * K / N): batches of about N / K spots, tiles never split
        tile_batch = (np.cumsum(tile_sizes) - tile_sizes) * n_target // n
        sizes = np.bincount(tile_batch, weights=tile_sizes, minlength=n_target).astype(np.int64)
        sizes = _merge_small(sizes[sizes > 0])  # BatchNorm needs two spots
        k = len(sizes)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        batch_of = np.empty(n, dtype=np.int64)
        batch_of[order] = np.repeat(np.arange(k), sizes)
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n) - bounds[batch_of[order]]

        first, second = self.graph.edges[:, 0], self.graph.edges[:, 1]
        counted = self.long | (tile_of[first] == tile_of[second])
        ids = np.flatnonzero(counted)
        edge_batch = batch_of[first[ids]]
        sort = np.argsort(edge_batch, kind="stable")
        ids, edge_batch = ids[sort], edge_batch[sort]
        local = np.stack([position[first[ids]], position[second[ids]]], axis=1)
        # far spots of long edges that lie in another batch become extras of this one
        outside = batch_of[second[ids]] != edge_batch
        keys = edge_batch[outside] * n + second[ids[outside]]
        extra_keys, extra_of = np.unique(keys, return_inverse=True)
        extra_batch, extra_spot = np.divmod(extra_keys, n)
        extra_rank = np.arange(len(extra_keys)) - np.searchsorted(extra_batch, extra_batch)
        local[outside, 1] = sizes[extra_batch][extra_of] + extra_rank[extra_of]
        edge_bounds = np.searchsorted(edge_batch, np.arange(k + 1))
        extra_bounds = np.searchsorted(extra_batch, np.arange(k + 1))

        # one transfer per epoch; the batches are views
        ids_t = torch.as_tensor(ids, device=self.device)
        edges_t = torch.as_tensor(local, device=self.device)
        ds_t = self.ds[ids_t]
        groups_t = None if self.groups is None else self.groups[ids_t]
        weights_t = torch.as_tensor(k * self.inverse_inclusion[ids], dtype=torch.float32, device=self.device)
        batches = []
        for b in range(k):
            e0, e1 = edge_bounds[b], edge_bounds[b + 1]
            spots = np.concatenate(
                [order[bounds[b] : bounds[b + 1]], extra_spot[extra_bounds[b] : extra_bounds[b + 1]]]
            )
            groups = None if groups_t is None else groups_t[e0:e1]
            batches.append(_Batch(spots, int(sizes[b]), edges_t[e0:e1], ds_t[e0:e1], weights_t[e0:e1], groups))
        return batches


def _merge_small(sizes: np.ndarray, minimum: int = 2) -> np.ndarray:
    """Merge batches below ``minimum`` spots into their predecessor (or successor)."""
    merged = list(sizes)
    i = 0
    while i < len(merged) and len(merged) > 1:
        if merged[i] < minimum:
            j = i - 1 if i > 0 else i + 1
            merged[j] += merged.pop(i)
            i = max(i - 1, 0)
        else:
            i += 1
    return np.asarray(merged, dtype=np.int64)


# on a GPU, the per-epoch history stays on the device and is read back this often
GPU_READBACK_EVERY = 50


def _readback_every(device: torch.device, settings: TrainingSettings) -> int:
    """Epochs between read-backs: every epoch on the CPU (free) and for early stopping (it decides each epoch)."""
    if device.type == "cpu" or settings.early_stopping:
        return 1
    return GPU_READBACK_EVERY


class _EpochLog:
    """The per-epoch history, kept on the device until read back (a read-back waits for the device).

    A record holds the mean of each of :data:`_STEP_KEYS` over the epoch's steps
    (float64 means of the float32 step values), ``lam`` (NaN while the penalty is
    off), ``kl_weight`` and, with held-out spots, ``validation_elbo``.
    """

    def __init__(self, checked_each_step: bool, lr: float, alpha: float):
        self.checked_each_step = checked_each_step
        self.lr, self.alpha = lr, alpha  # named in the error of a diverged run
        self.pending: list[tuple] = []
        self.records: list[dict] = []

    def add(self, epoch: int, kl_weight: float, steps: list[dict], lam, validation) -> None:
        """Keep one epoch's step values, lam and validation ELBO (tensors, or None) for the next read-back."""
        values = torch.stack([torch.stack([step[key] for key in _STEP_KEYS]) for step in steps])
        self.pending.append((epoch, kl_weight, values, lam, validation))

    def read_back(self) -> list[dict]:
        """The pending epochs' records, in one transfer; raises for the first step whose loss was not finite."""
        parts = []
        for _, _, values, lam, validation in self.pending:
            parts.append(values.double().flatten())
            parts.extend(value.double().view(1) for value in (lam, validation) if value is not None)
        flat = torch.cat(parts).cpu().numpy()
        records, at = [], 0
        for epoch, kl_weight, values, lam, validation in self.pending:
            steps = flat[at : at + values.numel()].reshape(values.shape)
            at += values.numel()
            if not self.checked_each_step:  # as the per-step check reports it
                for i in np.flatnonzero(~np.isfinite(steps[:, 0]))[:1]:
                    step = dict(zip(_STEP_KEYS, map(torch.tensor, steps[i]), strict=True))
                    _check_finite(step, epoch, self.lr, self.alpha)
            columns = np.ascontiguousarray(steps.T)  # np.mean of a contiguous row: as of a list of floats
            record = {
                "epoch": epoch,
                **{key: float(np.mean(column)) for key, column in zip(_STEP_KEYS, columns, strict=True)},
                "lam": math.nan,
                "kl_weight": kl_weight,
            }
            if lam is not None:
                record["lam"], at = float(flat[at]), at + 1
            if validation is not None:
                record["validation_elbo"], at = float(flat[at]), at + 1
            records.append(record)
        self.records.extend(records)
        self.pending = []
        return records


def train_module(
    module: VAEModule,
    penalty: DistortionPenalty,
    data: SpotData,
    coords: np.ndarray,
    graph: SpatialGraph,
    penalty_settings: PenaltySettings,
    settings: TrainingSettings,
    libraries: np.ndarray | None = None,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Fit ``module`` (and ``penalty``'s lam) on the spots of ``data`` with coordinates ``coords``.

    ``libraries`` (each spot's section code, or None for one section) keeps
    minibatch tiles within sections. Returns the per-epoch history and the
    (train, held-out) spot indices.
    """
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    train_idx, val_idx = split_spots(data.n_obs, settings.validation_fraction, settings.seed)
    if len(train_idx) < 2:  # BatchNorm needs two spots
        raise ValueError(
            f"{len(train_idx)} training spot(s) left of {data.n_obs} after holding out "
            f"validation_fraction={settings.validation_fraction:g}; training needs at least 2"
        )
    train_graph = graph.subgraph(train_idx)
    if penalty_settings.alpha > 0 and train_graph.n_edges == 0:
        raise ValueError(
            f"the {graph.kind!r} graph has no pairs among the {len(train_idx)} training spots "
            f"(each of its {graph.n_edges} pairs touches a held-out spot): the penalty would be empty"
        )
    pairs = _PairSampler(
        train_graph,
        penalty_settings.normalization,
        device,
        coords[train_idx],
        None if libraries is None else libraries[train_idx],
        lam_per_library=penalty.n_groups is not None,
        tiles=settings.tiles,
    )
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
    batch_size = settings.batch_size or len(train_idx)  # spots per step when not full batch
    train_tensors = data.rows(train_idx, device) if full_batch else None
    # a large held-out set stays sparse on the host and is scored in chunks (10^5 x 2,000 genes dense: 800 MB)
    chunked_val = len(val_idx) > VALIDATION_CHUNK
    val_tensors = data.rows(val_idx, device) if len(val_idx) and not chunked_val else None

    # on the CPU a per-step check costs nothing; on a GPU it would wait for every step
    check_each_step = device.type == "cpu"
    # a read-back waits for the device: on a GPU, once every GPU_READBACK_EVERY epochs
    readback_every = _readback_every(device, settings)
    log = _EpochLog(check_each_step, settings.lr, penalty_settings.alpha)
    best, stale = (math.inf, None), 0
    progress = _Progress(settings.max_epochs, settings.progress_bar, penalty_settings.alpha > 0)
    for epoch in progress.epochs:
        kl_weight = min(1.0, epoch / settings.kl_warmup_epochs) if settings.kl_warmup_epochs else 1.0
        penalty_on = penalty_settings.alpha > 0 and epoch >= penalty_settings.warmup_epochs
        module.train()
        batches: list
        if full_batch:
            batches = [None]
        elif penalty_on and not pairs.complete:
            batches = pairs.epoch(rng, batch_size)
        else:
            order = train_idx[rng.permutation(len(train_idx))]
            batches = [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
            batches = [seeds for seeds in batches if len(seeds) >= 2]  # BatchNorm needs two spots
        steps = []
        for batch in batches:
            if batch is None:
                tensors, pair_args, n_elbo = train_tensors, (pairs.full_args() if penalty_on else None), None
            elif isinstance(batch, _Batch):
                tensors, pair_args, n_elbo = (
                    data.rows(train_idx[batch.spots], device),
                    pairs.tile_args(batch),
                    batch.n_elbo,
                )
            else:
                tensors, n_elbo = data.rows(batch, device), None
                pair_args = pairs.seeds_args(np.searchsorted(train_idx, batch), coords_train) if penalty_on else None
            step = _step(module, penalty, tensors, pair_args, n_elbo, kl_weight, penalty_settings)
            if check_each_step:
                _check_finite(step, epoch, settings.lr, penalty_settings.alpha)
            optimizer.zero_grad(set_to_none=True)
            step["loss"].backward()
            optimizer.step()
            step["loss"] = step["loss"].detach()
            steps.append(step)
        validation: torch.Tensor | None
        if val_tensors is not None:
            validation = _validation_elbo(module, val_tensors)
        elif chunked_val:
            validation = _chunked_validation_elbo(module, data, val_idx, device)
        else:
            validation = None
        lam = penalty.lam_tensor() if penalty_on else None
        log.add(epoch, kl_weight, steps, lam, validation)
        if len(log.pending) < readback_every and epoch < settings.max_epochs - 1:
            continue
        records = log.read_back()
        progress.show(records[-1])
        if settings.early_stopping:
            (record,) = records  # read back every epoch: the snapshot is of this epoch's weights
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
    return pd.DataFrame(log.records), train_idx, val_idx


class _Progress:
    """A tqdm bar on a terminal; in a file (a workflow job's log), a plain line every tenth of the epochs.

    A bar redrawn in a file is thousands of carriage returns; the plain lines say
    the same in about ten lines. The penalty is shown only when it is on.
    """

    LINES = 10

    def __init__(self, max_epochs: int, enabled: bool, with_penalty: bool):
        self.max_epochs, self.with_penalty = max_epochs, with_penalty
        self.interactive = enabled and sys.stderr.isatty()
        self.plain = enabled and not self.interactive
        self.every = max(1, math.ceil(max_epochs / self.LINES))
        self.next_line = self.every
        self.start = time.perf_counter()
        epochs = range(max_epochs)
        self.epochs = tqdm(epochs, desc="Training", unit="epoch") if self.interactive else epochs

    def show(self, record: dict) -> None:
        shown = {"loss": f"{record['loss']:.4g}"}
        if self.with_penalty:
            shown["penalty"] = f"{record['penalty']:.3g}"
        if self.interactive:
            assert isinstance(self.epochs, tqdm)
            self.epochs.set_postfix(shown)
        elif self.plain:
            epoch = int(record["epoch"]) + 1
            if epoch >= self.next_line or epoch == self.max_epochs:  # records may come in groups (GPU)
                self.next_line = (epoch // self.every + 1) * self.every
                values = ", ".join(f"{name} {value}" for name, value in shown.items())
                elapsed = time.perf_counter() - self.start
                print(f"epoch {epoch}/{self.max_epochs}: {values} ({elapsed:.0f} s)", file=sys.stderr, flush=True)


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
    bad = [
        name
        for name, value in [*module.state_dict().items(), *penalty.state_dict().items()]
        if value.is_floating_point() and not torch.isfinite(value).all()
    ]
    if bad:
        raise TrainingDivergedError(
            f"training diverged: {len(bad)} weight tensors ({bad[0]}, ...) became NaN or infinite; "
            f"lower the learning rate lr={lr:g}" + (f" or alpha={alpha:g}" if alpha > 0 else "")
        )


def _objective(module, tensors, inf, gen, kl_weight, dis, settings):
    terms = module.loss_terms(tensors, inf, gen)
    reconstruction, kl = terms["reconstruction"].mean(), terms["kl"].mean()
    loss = reconstruction + kl_weight * kl
    if dis is not None:
        loss = loss + settings.alpha * dis
    nan = torch.full((), math.nan, device=loss.device)
    return {
        "loss": loss,
        "reconstruction": reconstruction.detach(),
        "kl": kl.detach(),
        "penalty": nan if dis is None else dis.detach(),
    }


def _penalty_latent(inf, settings: PenaltySettings) -> torch.Tensor:
    return inf["z"] if settings.latent == "sample" else inf["qz_mean"]


def _pair_penalty(penalty: DistortionPenalty, z: torch.Tensor, edges, ds, weights, denominator, groups) -> torch.Tensor:
    """The penalty of the pairs ``edges`` of ``z`` (None: all pairs), setting lam on its first call."""
    dz = pair_distances(z, edges)
    penalty.initialize_lam(dz.detach(), ds, groups)
    return penalty(dz, ds, weights, denominator, groups)


def _step(module, penalty, tensors, pair_args, n_elbo, kl_weight, settings: PenaltySettings) -> dict:
    """One step's objective, the same for full batch, random minibatches and tiles.

    Every spot of ``tensors`` is encoded; the first ``n_elbo`` (None: all) are
    decoded and carry the ELBO, the rest are the far ends of long pairs (tiles).
    ``pair_args`` are the penalty's ``(edges, ds, weights, denominator, groups)``,
    None when the penalty is off.
    """
    inf = module.inference(tensors)

    def distortion():
        return None if pair_args is None else _pair_penalty(penalty, _penalty_latent(inf, settings), *pair_args)

    # autograd sums z's two gradients in the order their consumers were built: tiles measure
    # the penalty before decoding, the other steps after, as before they shared this function,
    # so that every run repeats its earlier results to the bit
    dis = distortion() if n_elbo is not None else None
    if n_elbo is not None and n_elbo < len(inf["z"]):
        elbo_tensors, elbo_inf = take_rows(tensors, n_elbo), take_rows(inf, n_elbo)
    else:
        elbo_tensors, elbo_inf = tensors, inf
    gen = module.generative(elbo_inf["z"], elbo_tensors)
    if n_elbo is None:
        dis = distortion()
    return _objective(module, elbo_tensors, elbo_inf, gen, kl_weight, dis, settings)


def _negative_elbo(module: VAEModule, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-spot negative ELBO with KL weight 1."""
    inf, gen = module(tensors)
    terms = module.loss_terms(tensors, inf, gen)
    return terms["reconstruction"] + terms["kl"]


@torch.no_grad()
def _validation_elbo(module: VAEModule, val_tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative ELBO (KL weight 1) of the held-out spots, in eval mode, on the device."""
    module.eval()
    mean = _negative_elbo(module, val_tensors).mean()
    module.train()
    return mean


@torch.no_grad()
def _chunked_validation_elbo(
    module: VAEModule, data: SpotData, val_idx: np.ndarray, device: torch.device
) -> torch.Tensor:
    """:func:`_validation_elbo` over ``VALIDATION_CHUNK`` held-out spots at a time (eval mode: no batch effects)."""
    module.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(val_idx), VALIDATION_CHUNK):
        chunk = data.rows(val_idx[start : start + VALIDATION_CHUNK], device)
        total += _negative_elbo(module, chunk).double().sum()
    module.train()
    return total / len(val_idx)  # float64 division on the device: the bits of the host's


def _snapshot(module, penalty):
    return copy.deepcopy(module.state_dict()), copy.deepcopy(penalty.state_dict())
