"""The penalty over G's edges (O(N k)) against the same penalty computed densely
(N x N distance matrices masked by G), forward + backward; prints time and the
memory of the pair tensors, with ratios dense / sparse.

    python tests/benchmarks/penalty_scaling.py [--sizes 1000 3000 10000]
"""

import argparse
import time

import numpy as np
import torch

from dpst.graph import spatial_graph
from dpst.module import DistortionPenalty, pair_distances


def hex_grid(n: int) -> np.ndarray:
    side = int(np.ceil(np.sqrt(2 * n)))
    rows, cols = np.meshgrid(np.arange(side), np.arange(2 * side), indexing="ij")
    keep = (rows + cols) % 2 == 0
    coords = np.stack([cols[keep] * 50.0, rows[keep] * 50.0 * np.sqrt(3)], axis=1)
    return coords[:n]


def timed(fn, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--latent", type=int, default=10)
    args = parser.parse_args()
    penalty = DistortionPenalty(lam=0.01)
    for n in args.sizes:
        coords = hex_grid(n)
        graph = spatial_graph(coords, "knn", n_neighbors=18)
        z = torch.randn(n, args.latent, requires_grad=True)
        edges = torch.as_tensor(graph.edges)
        ds = torch.as_tensor(graph.distances, dtype=torch.float32)
        w = torch.as_tensor(graph.weights, dtype=torch.float32)
        denom = graph.denominator("pairs")
        s = torch.as_tensor(coords, dtype=torch.float32)
        dense_g = torch.zeros(n, n)
        dense_g[edges[:, 0], edges[:, 1]] = w

        def sparse(z=z, edges=edges, ds=ds, w=w, denom=denom):
            penalty(pair_distances(z, edges), ds, w, denom).backward()

        def dense(z=z, s=s, dense_g=dense_g, denom=denom):
            gap = dense_g * torch.abs(torch.cdist(z, z) - penalty.lam * torch.cdist(s, s))
            (gap.sum() / denom).backward()

        with torch.no_grad():
            dense_value = float(
                (dense_g * torch.abs(torch.cdist(z, z) - penalty.lam * torch.cdist(s, s))).sum() / denom
            )
            sparse_value = float(penalty(pair_distances(z, edges), ds, w, denom))
        t_sparse, t_dense = timed(sparse), timed(dense)
        mem_sparse = graph.n_edges * (2 * 8 + 3 * 4 + args.latent * 4)  # edges, ds/w/dz, gathered diffs
        mem_dense = 3 * n * n * 4  # G, D_z, D_s
        print(
            f"N={n:6d} pairs={graph.n_edges:7d} | sparse {1e3 * t_sparse:8.2f} ms {mem_sparse / 2**20:7.1f} MiB"
            f" | dense {1e3 * t_dense:8.2f} ms {mem_dense / 2**20:8.1f} MiB"
            f" | dense/sparse time {t_dense / t_sparse:6.1f}x memory {mem_dense / mem_sparse:6.1f}x"
            f" | values agree: {abs(dense_value - sparse_value) / dense_value:.1e}"
        )


if __name__ == "__main__":
    main()
