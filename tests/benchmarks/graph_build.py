"""Seconds and peak host memory to build the penalty's pair graph at 10^6 cells.

Each measurement runs in a fresh child process that first holds the data a model
would hold (random sparse counts, ``--genes`` x ``--cells`` at ``--density``
non-zero, float32 CSR, and the coordinates), then times
:func:`dpst.graph.spatial_graph`; the child's peak resident memory
(``ru_maxrss``) covers the counts and the graph together. Coordinates are a
jittered square grid 10 um apart (single-cell spacing) in a square tissue.

Pass ``--reference SRC`` (a ``src`` folder, e.g. of ``git worktree add /tmp/perf_base HEAD``)
to time that implementation in the same run, interleaved, and print ratios.

    python tests/benchmarks/graph_build.py [--cells 1000000] [--genes 2000] [--repeats 1]
        [--kinds knn radius] [--reference /tmp/perf_base/src]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _machine import machine  # tests/benchmarks/_machine.py, beside this script

CHILD = r"""
import json, resource, sys, time
import numpy as np
import scipy.sparse as sp
cells, genes, density = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
kind, with_counts = sys.argv[4], sys.argv[5] == "1"
from dpst.graph import spatial_graph
rng = np.random.default_rng(0)
side = int(np.ceil(np.sqrt(cells)))
grid = np.stack(np.divmod(np.arange(cells), side), axis=1).astype(np.float64) * 10.0
coords = grid + rng.uniform(-3.0, 3.0, size=grid.shape)
if with_counts:  # what a model holds beside the graph: sparse counts, CSR float32, sorted distinct columns
    nnz_per_row = int(round(density * genes))
    stride = genes // nnz_per_row
    indices = (rng.integers(0, stride, size=(cells, 1), dtype=np.int32)
               + stride * np.arange(nnz_per_row, dtype=np.int32)).ravel()
    data = (1.0 + rng.poisson(2.0, size=cells * nnz_per_row)).astype(np.float32)
    indptr = np.arange(0, cells * nnz_per_row + 1, nnz_per_row, dtype=np.int64)
    counts = sp.csr_matrix((data, indices, indptr), shape=(cells, genes))
    del indices, data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
params = {"knn": {"n_neighbors": 18}, "radius": {"radius": 25.0}, "gaussian": {"sigma": 8.0}}[kind]
start = time.perf_counter()
graph = spatial_graph(coords, kind, **params)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({"seconds": seconds, "peak_gib": peak / 2**20, "before_gib": before / 2**20,
                  "edges": int(graph.n_edges), "edge_checksum": int(graph.edges[::9973].sum())}))
"""


def measure(src: str, cells: int, genes: int, density: float, kind: str, with_counts: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(cells), str(genes), str(density), kind, "1" if with_counts else "0"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--kinds", nargs="+", default=["knn", "radius"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-counts", action="store_true", help="build the graph without counts in memory")
    parser.add_argument("--reference", default=None, help="src folder of the reference implementation")
    args = parser.parse_args()
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
    sides = [("candidate", os.path.abspath(here))]
    if args.reference:
        sides.insert(0, ("reference", os.path.abspath(args.reference)))
    print(f"machine: {machine()}; {args.cells} cells, {args.genes} genes, counts in memory: {not args.no_counts}")
    for kind in args.kinds:
        results = {name: [] for name, _ in sides}
        for _ in range(args.repeats):
            for name, src in sides:  # interleaved
                r = measure(src, args.cells, args.genes, args.density, kind, not args.no_counts)
                results[name].append(r)
                print(
                    f"  {kind:8s} {name:9s} {r['seconds']:7.2f} s  peak RSS {r['peak_gib']:5.2f} GiB "
                    f"(data alone {r['before_gib']:5.2f} GiB)  {r['edges']} pairs",
                    flush=True,
                )
        best = {name: min(r["seconds"] for r in rs) for name, rs in results.items()}
        peak = {name: max(r["peak_gib"] for r in rs) for name, rs in results.items()}
        line = f"{kind}: candidate {best['candidate']:.2f} s, peak {peak['candidate']:.2f} GiB"
        if args.reference:
            same = {r["edge_checksum"] for rs in results.values() for r in rs}
            line += (
                f" | reference {best['reference']:.2f} s, peak {peak['reference']:.2f} GiB"
                f" | time ratio reference/candidate {best['reference'] / best['candidate']:.2f}x"
                f" | same pairs: {len(same) == 1}"
            )
        print(line)


if __name__ == "__main__":
    main()
