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

import time

import numpy as np
import torch
from _peer import parser, section_spots, write  # beside this script
from GraphST import GraphST
from sklearn.decomposition import PCA


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--seed", type=int, default=0, help="GraphST's random_seed")
    arguments.add_argument("--epochs", type=int, default=600, help="GraphST's default and its tutorial's")
    args = arguments.parse_args()
    torch.set_num_threads(1)
    adata = section_spots(args)
    adata.var_names_make_unique()
    start = time.perf_counter()
    model = GraphST.GraphST(adata, device=torch.device("cpu"), random_seed=args.seed, epochs=args.epochs)
    adata = model.train()
    seconds = time.perf_counter() - start
    # what GraphST's own clustering hands to mclust
    latent = PCA(n_components=20, random_state=42).fit_transform(adata.obsm["emb"])
    write(args.out, adata, np.asarray(latent), seconds)


if __name__ == "__main__":
    main()
