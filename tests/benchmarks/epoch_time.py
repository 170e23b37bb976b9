"""Seconds per full-batch epoch on a simulated Visium-sized section, both backbones,
without and with the penalty; prints the penalty's overhead as a ratio.

    python tests/benchmarks/epoch_time.py [--spots 3000] [--genes 2000] [--epochs 30]
"""

import argparse
import time
import warnings

import torch

import dpst

warnings.filterwarnings("ignore")


def seconds_per_epoch(model, epochs: int, device: str) -> float:
    model.train(max_epochs=3, progress_bar=False, device=device)  # warm-up: allocations, lam init
    start = time.perf_counter()
    model.train(max_epochs=epochs, progress_bar=False, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spots", type=int, default=3000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    adata = dpst.pp.preprocess(dpst.sim.simulate_section(n_spots=args.spots, n_genes=args.genes, seed=0))
    print(f"{adata.n_obs} spots x {adata.n_vars} genes, device {args.device}, "
          f"{torch.get_num_threads()} torch threads")
    for name, cls in (("VAE", dpst.DPVAE), ("scVI", dpst.DPSCVI)):
        off = seconds_per_epoch(cls(adata, alpha=0.0), args.epochs, args.device)
        on_model = cls(adata, alpha=100.0)
        on = seconds_per_epoch(on_model, args.epochs, args.device)
        print(f"{name:5s} penalty off {1e3 * off:7.1f} ms/epoch | on ({on_model.graph.n_edges} pairs) "
              f"{1e3 * on:7.1f} ms/epoch | ratio on/off {on / off:.2f}")


if __name__ == "__main__":
    main()
