"""Seconds per full-batch epoch on a simulated Visium-sized section, both backbones,
without and with the penalty; prints the penalty's overhead as a ratio.

With ``--scvi-tools``, also our scVI (DPSCVI, alpha 0) against scvi-tools' ``SCVI``
(1.4.x) in minibatches: same data (``--scvi-cells`` cells x ``--genes`` genes of sparse
counts, see ``minibatch_epoch.make_data``), batch size, architecture (1 hidden layer
of 128, latent 10, dropout 0.1, ZINB), no held-out cells, ``--scvi-epochs`` epochs per
``train()`` call (its setup included on both sides), interleaved ``--repeats`` times;
prints the ratio scvi-tools / ours of the best runs.

    python tests/benchmarks/epoch_time.py [--spots 3000] [--genes 2000] [--epochs 30] [--threads 1]
        [--scvi-tools --scvi-cells 100000 --batch-size 128 --scvi-epochs 2 --repeats 2] [--skip-full-batch]
"""

import argparse
import os
import sys
import time
import warnings

import torch

import dpst

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from minibatch_epoch import machine, make_data

warnings.filterwarnings("ignore")


def seconds_per_epoch(model, epochs: int, device: str) -> float:
    model.train(max_epochs=3, progress_bar=False, device=device)  # warm-up: allocations, lam init
    start = time.perf_counter()
    model.train(max_epochs=epochs, progress_bar=False, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / epochs


def against_scvi_tools(args) -> None:
    import scvi  # only this comparison needs it

    scvi.settings.verbosity = 40
    adata = make_data(args.scvi_cells, args.genes, 0.05)
    ours = dpst.DPSCVI(adata, alpha=0.0, seed=0)
    scvi.settings.seed = 0
    ref_adata = adata.copy()
    scvi.model.SCVI.setup_anndata(ref_adata, layer="counts")
    reference = scvi.model.SCVI(
        ref_adata, n_hidden=128, n_latent=10, n_layers=1, dropout_rate=0.1, gene_likelihood="zinb"
    )
    torch.set_num_threads(args.threads)  # scvi-tools' seeding may reset it
    times = {"dpst": [], "scvi-tools": []}
    for _ in range(args.repeats):  # interleaved
        start = time.perf_counter()
        ours.train(
            max_epochs=args.scvi_epochs,
            batch_size=args.batch_size,
            validation_fraction=0.0,
            progress_bar=False,
            device=args.device,
        )
        times["dpst"].append((time.perf_counter() - start) / args.scvi_epochs)
        start = time.perf_counter()
        reference.train(
            max_epochs=args.scvi_epochs,
            batch_size=args.batch_size,
            train_size=1.0,
            accelerator="gpu" if args.device.startswith("cuda") else "cpu",
            enable_progress_bar=False,
            check_val_every_n_epoch=None,
        )
        times["scvi-tools"].append((time.perf_counter() - start) / args.scvi_epochs)
        torch.set_num_threads(args.threads)
    best = {k: min(v) for k, v in times.items()}
    print(
        f"scVI without the penalty, {args.scvi_cells} cells x {args.genes} genes, batch {args.batch_size}: "
        f"dpst {best['dpst']:.2f} s/epoch, scvi-tools {scvi.__version__} {best['scvi-tools']:.2f} s/epoch | "
        f"ratio scvi-tools/dpst {best['scvi-tools'] / best['dpst']:.2f}x | runs "
        + ", ".join(f"{k} {[round(t, 2) for t in v]}" for k, v in times.items()),
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spots", type=int, default=3000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)")
    parser.add_argument("--scvi-tools", action="store_true")
    parser.add_argument("--scvi-cells", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--scvi-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-full-batch", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    if args.scvi_tools:
        against_scvi_tools(args)
    if args.skip_full_batch:
        return
    adata = dpst.pp.preprocess(dpst.sim.simulate_section(n_spots=args.spots, n_genes=args.genes, seed=0))
    torch.set_num_threads(args.threads)  # preprocessing (scanpy) may reset it
    print(f"{adata.n_obs} spots x {adata.n_vars} genes, device {args.device}, {torch.get_num_threads()} torch threads")
    for name, cls in (("VAE", dpst.DPVAE), ("scVI", dpst.DPSCVI)):
        off = seconds_per_epoch(cls(adata, alpha=0.0), args.epochs, args.device)
        on_model = cls(adata, alpha=100.0)
        on = seconds_per_epoch(on_model, args.epochs, args.device)
        print(
            f"{name:5s} penalty off {1e3 * off:7.1f} ms/epoch | on ({on_model.graph.n_edges} pairs) "
            f"{1e3 * on:7.1f} ms/epoch | ratio on/off {on / off:.2f}"
        )


if __name__ == "__main__":
    main()
