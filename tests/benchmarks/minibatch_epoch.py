"""Cost of the penalty in minibatch training at 10^5 to 10^6 cells: epoch with / epoch without.

Data: ``--cells`` cells on a jittered 10 um grid, ``--genes`` genes of sparse counts
(``--density`` non-zero, CSR), kNN graph (k=18). Both backbones, alpha 0 (penalty
off, random batches) against alpha 100 (penalty on, tiled batches), same batch size,
no held-out spots (``validation_fraction=0``).

``--sections N`` splits the cells into N sections of equal size, each on its own grid
from the origin (their planes overlap, as real sections' do), one model over all of
them with ``batch_key`` the section (issue 19): the graph is built per section and
tiles never span two; both sides get the batch covariate, so the ratio is the
penalty's alone.

``--mode epoch`` times whole ``model.train(max_epochs=--epochs)`` calls, off and on
interleaved, ``--repeats`` times; the per-epoch time includes the setup of a
``train()`` call (split, subgraph, sampler), which is also printed.
``--mode steps`` (for 10^6 cells) times ``--steps`` optimizer steps of each kind through
the training loop's own step functions, interleaved in blocks, plus the per-epoch
batch assembly, and prints the epoch as assembly + K x mean step (K steps per epoch).

    python tests/benchmarks/minibatch_epoch.py [--cells 100000] [--genes 2000] [--batch-size 128]
        [--mode epoch|steps] [--epochs 1] [--repeats 2] [--steps 200] [--models vae scvi]
        [--sections 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import _machine  # tests/benchmarks/_machine.py, beside this script
import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

import dpst
from dpst import train as T

warnings.filterwarnings("ignore")


def machine() -> str:
    """CPU model, cores and torch threads."""
    return f"{_machine.machine()}, {torch.get_num_threads()} torch threads"


def make_data(cells: int, genes: int, density: float, sections: int = 1, seed: int = 0) -> ad.AnnData:
    """Sparse counts (sorted distinct columns per cell), log-normalized X, coordinates in um.

    With ``sections`` > 1, ``obs["section"]`` splits the cells into that many equal
    sections, each laid on its own grid from the origin.
    """
    rng = np.random.default_rng(seed)
    section = np.arange(cells) * sections // cells
    within = np.arange(cells) - np.searchsorted(section, section)  # each cell's place in its section
    side = math.isqrt(-(-cells // sections) - 1) + 1
    coords = np.stack(np.divmod(within, side), axis=1) * 10.0 + rng.uniform(-3, 3, size=(cells, 2))
    nnz = max(1, round(density * genes))
    stride = genes // nnz
    indices = (rng.integers(0, stride, size=(cells, 1)) + stride * np.arange(nnz)).ravel().astype(np.int32)
    data = (1 + rng.poisson(2.0, size=cells * nnz)).astype(np.float32)
    indptr = np.arange(0, cells * nnz + 1, nnz, dtype=np.int64)
    counts = sp.csr_matrix((data, indices, indptr), shape=(cells, genes))
    library = np.asarray(counts.sum(axis=1)).ravel()
    lognorm = counts.copy()
    lognorm.data = np.log1p(1e4 * lognorm.data / np.repeat(library, nnz)).astype(np.float32)
    adata = ad.AnnData(X=lognorm, layers={"counts": counts})
    adata.obsm["spatial"] = coords
    if sections > 1:
        adata.obs["section"] = pd.Categorical([f"s{i}" for i in section])
    return adata


def build_models(cls, adata: ad.AnnData) -> dict:
    """alpha 0 and 100 on ``adata``, one model over its sections where ``obs["section"]`` has them."""
    batch_key = "section" if "section" in adata.obs else None
    return {alpha: cls(adata, alpha=alpha, seed=0, batch_key=batch_key) for alpha in (0.0, 100.0)}


def sampler_of(model, device: str):
    """The tiled sampler ``train()`` builds for ``model`` on all its cells, and its setup seconds."""
    start = time.perf_counter()
    sampler = T._PairSampler(
        model.graph.subgraph(np.arange(model.adata.n_obs)),
        "pairs",
        torch.device(device),
        model.coords,
        model.libraries.groups(),
    )
    return sampler, time.perf_counter() - start


def epoch_mode(cls, adata, args):
    models = build_models(cls, adata)
    graph = models[100.0].graph
    sampler, setup = sampler_of(models[100.0], args.device)
    start = time.perf_counter()
    batches = sampler.epoch(np.random.default_rng(0), args.batch_size)
    assembly = time.perf_counter() - start
    extras = sum(len(b.spots) - b.n_elbo for b in batches)
    counted = sum(len(b.edges) for b in batches)
    print(
        f"  {graph.n_edges} pairs; tile {sampler.tile:.1f} um; {len(batches)} batches/epoch; "
        f"{counted / graph.n_edges:.1%} of pairs counted per epoch; {extras} extra encodes "
        f"({extras / adata.n_obs:.2%}); sampler setup {setup:.2f} s, batch assembly {assembly:.2f} s/epoch"
    )
    times = {0.0: [], 100.0: []}
    for _ in range(args.repeats):
        for alpha, model in models.items():  # interleaved
            start = time.perf_counter()
            model.train(
                max_epochs=args.epochs,
                batch_size=args.batch_size,
                validation_fraction=0.0,
                kl_warmup_epochs=10,
                progress_bar=False,
                device=args.device,
            )
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[alpha].append((time.perf_counter() - start) / args.epochs)
    return min(times[0.0]), min(times[100.0]), times


def steps_mode(cls, adata, args):
    device = torch.device(args.device)
    models = build_models(cls, adata)
    settings = T.PenaltySettings(alpha=100.0)
    graph = models[100.0].graph
    train_idx = np.arange(adata.n_obs)
    sampler, setup = sampler_of(models[100.0], args.device)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    tiled = sampler.epoch(rng, args.batch_size)
    assembly = time.perf_counter() - start
    start = time.perf_counter()
    order = train_idx[rng.permutation(len(train_idx))]
    plain = [order[b : b + args.batch_size] for b in range(0, len(order), args.batch_size)]
    plain_assembly = time.perf_counter() - start
    data = models[0.0].registry.spot_data(adata)
    for model in models.values():
        model.module.to(device).train()
        model.penalty.to(device)
    optimizers = {
        alpha: torch.optim.Adam([*m.module.parameters(), *m.penalty.parameters()], lr=1e-3, eps=0.01)
        for alpha, m in models.items()
    }

    def step(alpha, i):
        m = models[alpha]
        if alpha == 0.0:
            out = T._step(m.module, m.penalty, data.rows(plain[i], device), None, None, 1.0, settings)
        else:
            batch = tiled[i]
            tensors = data.rows(train_idx[batch.spots], device)
            out = T._step(m.module, m.penalty, tensors, sampler.tile_args(batch), batch.n_elbo, 1.0, settings)
        optimizers[alpha].zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizers[alpha].step()

    n_steps = min(args.steps, len(tiled), len(plain))
    for alpha in (0.0, 100.0):  # warm-up
        step(alpha, 0)
    times = {0.0: 0.0, 100.0: 0.0}
    block = max(1, n_steps // 10)
    for b in range(0, n_steps, block):
        for alpha in (0.0, 100.0):  # interleaved blocks
            start = time.perf_counter()
            for i in range(b, min(b + block, n_steps)):
                step(alpha, i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[alpha] += time.perf_counter() - start
    off_step, on_step = times[0.0] / n_steps, times[100.0] / n_steps
    extras = sum(len(b.spots) - b.n_elbo for b in tiled)
    print(
        f"  {graph.n_edges} pairs; tile {sampler.tile:.1f} um; {len(tiled)} tiled batches/epoch "
        f"(mean {adata.n_obs / len(tiled):.0f} cells), {len(plain)} plain; {extras} extra encodes; "
        f"sampler setup {setup:.2f} s (once per train call); assembly {assembly:.2f} s/epoch tiled, "
        f"{plain_assembly:.3f} s plain; {n_steps} steps each measured: {1e3 * off_step:.2f} ms/step off, "
        f"{1e3 * on_step:.2f} ms/step on"
    )
    off = plain_assembly + len(plain) * off_step
    on = assembly + len(tiled) * on_step
    return off, on, times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--mode", choices=["epoch", "steps"], default="epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=["vae", "scvi"])
    parser.add_argument("--sections", type=int, default=1, help="sections in one model (batch_key)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.sections < 1 or args.sections > args.cells:
        parser.error(f"--sections must be between 1 and --cells ({args.cells}), got {args.sections}")
    adata = make_data(args.cells, args.genes, args.density, args.sections)
    print(
        f"machine: {machine()}; {args.cells} cells x {args.genes} genes ({args.density:.0%} non-zero), "
        f"{args.sections} section(s), "
        f"batch {args.batch_size}, kNN k=18, device {args.device}, mode {args.mode}"
    )
    for name in args.models:
        cls = {"vae": dpst.DPVAE, "scvi": dpst.DPSCVI}[name]
        print(f"{name}:")
        off, on, times = (epoch_mode if args.mode == "epoch" else steps_mode)(cls, adata, args)
        print(
            f"  {name}: epoch without the penalty {off:.2f} s, with it {on:.2f} s | ratio on/off {on / off:.2f}"
            + (
                f" | runs off {[round(t, 2) for t in times[0.0]]} on {[round(t, 2) for t in times[100.0]]}"
                if args.mode == "epoch"
                else ""
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
