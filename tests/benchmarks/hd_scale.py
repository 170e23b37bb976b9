"""A Visium HD section at its real size, end to end on this machine: time and peak memory per stage.

Issue 20, part 3: an 8 um bin section of ``--bins`` bins (a real one holds 5-7e5)
goes through every stage a user runs: written as Space Ranger writes a bin folder,
read (:func:`dpst.io.read_visium_hd`), preprocessed (:func:`dpst.pp.preprocess`,
square-lattice graph), trained in minibatches with and without the penalty (the
penalty's share of the training time), latent codes, the metrics
(:func:`dpst.metrics.evaluate_model`: Moran's I and Geary's C on the sparse graph,
distortion on G, ellipses) and spatial domains (:func:`dpst.tl.domains`, GMM).

The bins come from the simulator: ``--tile-bins`` bins of ``simulate_section(...,
bin_size_um=8)`` (shallow counts, ``--library-size`` per bin, graded boundaries and
mixed bins) placed side by side on one square lattice until ``--bins`` are laid.
Every tile is the same simulated section (one seed), so that a domain means the
same genes in every tile and the ARI of the domains against the simulated ones is
meaningful (a dense simulation of 6e5 bins at once would need tens of GB). Every
stage runs in this process; a sampler thread reads the process's resident memory
every 20 ms, and its peak during each stage is printed beside the stage's wall time
(the peak of the whole run is the largest).

    OMP_NUM_THREADS=2 python tests/benchmarks/hd_scale.py [--bins 600000] [--tile-bins 20000]
        [--genes 2000] [--epochs 2] [--batch-size 1024] [--threads 2] [--workdir /tmp/dpst_hd]
        [--limit-gb 16]
"""

from __future__ import annotations

import argparse
import math
import shutil
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import _machine  # tests/benchmarks/_machine.py, beside this script
import anndata as ad
import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp
import torch

import dpst

BIN_UM = 8


class PeakMemory:
    """Resident memory of this process, sampled every ``interval`` seconds; peak since the last reset."""

    def __init__(self, interval: float = 0.02):
        self.process, self.interval = psutil.Process(), interval
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def reset(self) -> int:
        self.peak = self.process.memory_info().rss
        return self.peak

    def stop(self):
        self._stop.set()
        self._thread.join()


ROWS: list[dict] = []


@contextmanager
def stage(name: str, memory: PeakMemory):
    before = memory.reset()
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    memory.peak = max(memory.peak, memory.process.memory_info().rss)
    ROWS.append({"stage": name, "seconds": seconds, "peak GiB": memory.peak / 2**30, "start GiB": before / 2**30})
    print(f"{name:32s} {seconds:8.1f} s  peak {memory.peak / 2**30:6.2f} GiB", flush=True)


def tiled_bins(n_bins: int, tile_bins: int, n_genes: int, library_size: float) -> ad.AnnData:
    """``n_bins`` simulated 8 um bins: copies of one simulated tile side by side on one square lattice."""
    template = dpst.sim.simulate_section(
        n_spots=tile_bins,
        n_genes=n_genes,
        n_domains=5,
        seed=0,
        mean_library_size=library_size,
        boundary_width=40.0,
        mixing=0.2,
        bin_size_um=BIN_UM,
    )
    entry = template.uns.pop("spatial").popitem()[1]
    n_tiles = math.ceil(n_bins / tile_bins)
    per_row = math.ceil(math.sqrt(n_tiles))
    side = dpst.sim.square_grid(tile_bins)[0].max() + 1  # a tile's lattice is side x side
    pixels_per_bin = BIN_UM / entry["scalefactors"]["microns_per_pixel"]
    tiles = []
    for k in range(n_tiles):
        tile = template[: min(tile_bins, n_bins - k * tile_bins)].copy()
        row_offset, col_offset = (k // per_row) * side, (k % per_row) * side
        tile.obs["array_row"] += row_offset
        tile.obs["array_col"] += col_offset
        tile.obsm["spatial"] = tile.obsm["spatial"] + np.array([col_offset, row_offset]) * pixels_per_bin
        rows, cols = tile.obs["array_row"].to_numpy(), tile.obs["array_col"].to_numpy()
        tile.obs_names = [f"s_{BIN_UM:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)]
        tiles.append(tile)
    bins = ad.concat(tiles, merge="same")
    bins.X = sp.csr_matrix(bins.X)
    bins.obs["domain"] = bins.obs["domain"].astype("category")
    bins.uns["spatial"] = {"hd_bench": {"images": {}, "scalefactors": dict(entry["scalefactors"])}}
    return bins


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bins", type=int, default=600_000)
    parser.add_argument("--tile-bins", type=int, default=20_000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument(
        "--library-size", type=float, default=300.0, help="mean counts per bin (8 um HD: a few hundred)"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/dpst_hd")
    parser.add_argument("--limit-gb", type=float, default=16.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=SyntaxWarning)  # docrep's, on importing squidpy
    print(f"machine: {_machine.machine()}, {torch.get_num_threads()} torch threads, dpst {dpst.__version__}")
    print(f"{args.bins} bins of {BIN_UM} um, {args.genes} genes, tiles of {args.tile_bins}, {args.epochs} epochs")
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    memory = PeakMemory()
    started = time.perf_counter()

    with stage("simulate (the benchmark's own)", memory):
        bins = tiled_bins(args.bins, args.tile_bins, args.genes, args.library_size)
        truth = bins.obs["domain"].copy()
    print(
        f"  {bins.n_obs} bins, {bins.X.nnz / bins.n_obs:.0f} genes and {bins.X.sum() / bins.n_obs:.0f} counts per bin"
    )
    with stage("write bin folder (h5, parquet)", memory):
        dpst.sim.write_visium_hd(bins, workdir / "outs")
    del bins
    with stage("read_visium_hd", memory):
        bins = dpst.io.read_visium_hd(workdir / "outs", bin_size=BIN_UM)
    with stage("preprocess", memory):
        dpst.pp.preprocess(bins, min_counts=50, min_cells=10, n_top_genes=2000)
    graph = bins.uns["spatial_neighbors"]["params"]
    print(f"  kept {bins.n_obs} bins x {bins.n_vars} genes; graph {graph['kind']} {graph['geometry']}")

    # a warm-up on a slice (first-call costs of torch), then both trainings with the same settings
    settings = {"batch_size": args.batch_size, "kl_warmup_epochs": args.epochs, "progress_bar": False, "device": "cpu"}
    dpst.DPVAE(bins[:5000].copy(), alpha=100.0, seed=0).train(max_epochs=1, **settings)
    seconds = {}
    for alpha in (0.0, 100.0):
        with stage(f"train alpha {alpha:g} ({args.epochs} epochs)", memory):
            model = dpst.DPVAE(bins, alpha=alpha, seed=0)
            start = time.perf_counter()
            model.train(max_epochs=args.epochs, **settings)
            seconds[alpha] = (time.perf_counter() - start) / args.epochs
    print(
        f"  per epoch: {seconds[0.0]:.1f} s without the penalty, {seconds[100.0]:.1f} s with it "
        f"(penalty's share {1 - seconds[0.0] / seconds[100.0]:.0%})"
    )
    with stage("latent", memory):
        bins.obsm["X_dpst"] = model.get_latent_representation()
    with stage("metrics (evaluate_model)", memory):
        metrics, _ = dpst.metrics.evaluate_model(model)
    print(f"  Moran's I {metrics['moran_I']:.3f}, Geary's C {metrics['geary_C']:.3f}, L_0.1 {metrics['L_0.1']:.2f}")
    with stage("domains (GMM tied, 5)", memory):
        labels = dpst.tl.domains(bins, "X_dpst", 5, method="gmm", seed=0)
    ari = dpst.metrics.domain_agreement(labels, truth.reindex(bins.obs_names))["ARI"]
    print(f"  ARI against the simulated domains {ari:.3f} (after {args.epochs} epochs; the bins' own truth)")
    memory.stop()

    table = pd.DataFrame(ROWS).set_index("stage")
    pd.set_option("display.width", 160)
    print(f"\n{bins.n_obs} bins; time and peak resident memory per stage:")
    print(table[["seconds", "peak GiB"]].round(2).to_string())
    peak = table["peak GiB"].max()
    print(
        f"\npeak {peak:.2f} GiB (limit {args.limit_gb:g} GB = {args.limit_gb * 1e9 / 2**30:.2f} GiB): "
        f"{'within' if peak * 2**30 <= args.limit_gb * 1e9 else 'OVER'}; wall {(time.perf_counter() - started) / 60:.1f} min"
    )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
