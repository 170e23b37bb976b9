"""BANKSY's representation of a DLPFC section, for ``domains.py --external`` (issue 22).

Runs in its own environment, never in the project's:

    python -m venv /tmp/peer_banksy
    /tmp/peer_banksy/bin/pip install -r tests/benchmarks/peers/banksy.txt
    OMP_NUM_THREADS=1 /tmp/peer_banksy/bin/python tests/benchmarks/peers/banksy_latent.py \\
        151673 /tmp/peer_banksy_151673.npz

The spots are the section's with at least ``--min-counts`` counts (the rule
``dpst.pp.preprocess`` applies, so ``domains.py`` scores the same spots). From there
pybanksy's tutorial: ``normalize_total``, optionally its ``filter_hvg`` (``--hvgs``;
0, the default, keeps the files' 5,000 genes, which scored higher here than the
tutorial's 2,000), the neighbourhood matrix (``--k-geom`` spots, scaled Gaussian
weights, ``max_m=1``) mixed at ``--lam``, and its 20 principal components. BANKSY has
no training seed: its representation is deterministic. The npz holds ``obs_names``,
``latent`` (the 20 components), ``own_leiden`` (BANKSY's own leiden partition on 50
neighbours, matched to 7 labels), ``seconds`` (embedding only), ``peak_mib`` and
``n_genes``.
"""

import time
import warnings

import matplotlib

matplotlib.use("Agg")  # pybanksy imports pyplot
import numpy as np
import scanpy as sc
from _peer import parser, section_spots, write  # beside this script
from banksy.cluster_methods import run_Leiden_partition
from banksy.embed_banksy import generate_banksy_matrix
from banksy.initialize_banksy import initialize_banksy
from banksy_utils.filter_utils import filter_hvg
from banksy_utils.umap_pca import pca_umap

warnings.filterwarnings("ignore")
COORDINATES = ("xcoord", "ycoord", "coord_xy")


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--lam", type=float, default=0.2, help="BANKSY's lambda (0.2: cell typing, 0.8: domains)")
    arguments.add_argument("--k-geom", type=int, default=6)
    arguments.add_argument("--hvgs", type=int, default=0, help="0: all the file's genes")
    args = arguments.parse_args()
    adata = section_spots(args)
    start = time.perf_counter()
    adata.obsm["coord_xy"] = np.asarray(adata.obsm["spatial"], dtype=float)
    adata.obs["xcoord"], adata.obs["ycoord"] = adata.obsm["coord_xy"][:, 0], adata.obsm["coord_xy"][:, 1]
    sc.pp.normalize_total(adata)
    if args.hvgs:
        adata, _ = filter_hvg(adata, n_top_genes=args.hvgs, flavor="seurat")
    banksy = initialize_banksy(
        adata,
        COORDINATES,
        args.k_geom,
        nbr_weight_decay="scaled_gaussian",
        max_m=1,
        plt_edge_hist=False,
        plt_nbr_weights=False,
        plt_agf_angles=False,
        plt_theta=False,
    )
    banksy, _ = generate_banksy_matrix(adata, banksy, [args.lam], 1, verbose=False)
    pca_umap(banksy, pca_dims=[20], add_umap=False, plt_remaining_var=False)
    seconds = time.perf_counter() - start
    latent = np.asarray(banksy["scaled_gaussian"][args.lam]["adata"].obsm["reduced_pc_20"])
    partitions, _ = run_Leiden_partition(
        banksy, [], num_nn=50, num_iterations=-1, partition_seed=1234, match_labels=True, max_labels=7, verbose=False
    )
    own_leiden = np.asarray(partitions["labels"].iloc[0].dense)
    write(args.out, adata, latent, seconds, own_leiden=own_leiden, n_genes=adata.n_vars)


if __name__ == "__main__":
    main()
