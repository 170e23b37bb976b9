"""GraphST's representation of a DLPFC section, for ``domains.py --external`` (issue 22).

Runs in its own environment, never in the project's (GraphST pins its own stack):

    python -m venv /tmp/peer_graphst
    /tmp/peer_graphst/bin/pip install torch==2.13.0      # the CPU build first
    /tmp/peer_graphst/bin/pip install -r tests/benchmarks/peers/graphst.txt
    OMP_NUM_THREADS=1 /tmp/peer_graphst/bin/python tests/benchmarks/peers/graphst_latent.py \\
        151673 /tmp/peer_graphst_151673_s0.npz --seed 0

The spots are the section's with at least ``--min-counts`` counts (the rule
``dpst.pp.preprocess`` applies, so ``domains.py`` scores the same spots). From there
GraphST's own tutorial: its preprocessing (3,000 seurat_v3 genes, normalize, log1p,
scale), its graph (3 nearest spots), 600 epochs on the CPU with ``random_seed``
``--seed``, and the 20 principal components of its embedding that its own
``clustering`` hands to mclust. The npz holds ``obs_names``, ``latent`` (those
components), ``seconds`` (model and training) and ``peak_mib`` (the process's peak
resident memory).
"""

import argparse
import re
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch
from GraphST import GraphST
from sklearn.decomposition import PCA

DEFAULT_DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "dlpfc"


def peak_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section")
    parser.add_argument("out")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of dlpfc_<section>.h5ad")
    parser.add_argument("--min-counts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="GraphST's random_seed")
    parser.add_argument("--epochs", type=int, default=600, help="GraphST's default and its tutorial's")
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = ad.read_h5ad(Path(args.data) / f"dlpfc_{args.section}.h5ad")
    adata = raw[np.asarray(raw.X.sum(axis=1)).ravel() >= args.min_counts].copy()
    adata.var_names_make_unique()
    start = time.perf_counter()
    model = GraphST.GraphST(adata, device=torch.device("cpu"), random_seed=args.seed, epochs=args.epochs)
    adata = model.train()
    seconds = time.perf_counter() - start
    latent = PCA(n_components=20, random_state=42).fit_transform(adata.obsm["emb"])
    np.savez(
        args.out,
        obs_names=np.asarray(adata.obs_names, dtype=str),
        latent=latent,
        seconds=seconds,
        peak_mib=peak_mib(),
    )
    print(f"{args.section} seed {args.seed}: {latent.shape[0]} spots, {seconds:.0f} s, peak {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
