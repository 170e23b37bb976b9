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

Several sections, comma-separated (``151673,151674 /tmp/peer_banksy_joint_{section}.npz``),
are stacked as BANKSY's multi-sample use does: on the genes they share (the two DLPFC files
share 2,340 of their 5,000), each section's matrix from its own spots and neighbours, then
one PCA of them all; one npz per section (no ``own_leiden``), so that
``domains.py --external`` scores each section's rows of the shared components.
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
from sklearn.decomposition import PCA

warnings.filterwarnings("ignore")
COORDINATES = ("xcoord", "ycoord", "coord_xy")


def banksy_matrix(adata, args):
    """pybanksy's tutorial up to the BANKSY matrix (own and neighbourhood expression, mixed at lambda)."""
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
    return adata, banksy


def stacked(args) -> None:
    """Several sections: each one's BANKSY matrix (its own neighbours), one PCA of them all."""
    names = args.section.split(",")
    start = time.perf_counter()
    spots = [section_spots(args, name) for name in names]
    shared = spots[0].var_names
    for adata in spots[1:]:
        shared = shared.intersection(adata.var_names, sort=False)
    print(f"{len(shared)} genes shared by {', '.join(names)}")
    built = [banksy_matrix(adata[:, shared].copy(), args) for adata in spots]
    if any(not adata.var_names.equals(built[0][0].var_names) for adata, _ in built):
        raise SystemExit("the sections' genes differ after --hvgs: their matrices cannot be stacked")
    matrices = [banksy["scaled_gaussian"][args.lam]["adata"].X for _, banksy in built]
    dense = np.vstack([m.toarray() if hasattr(m, "toarray") else np.asarray(m) for m in matrices])
    dense[np.isnan(dense)] = 0  # as pybanksy's pca_umap does
    latent = PCA(n_components=20, random_state=0).fit_transform(dense)  # pybanksy leaves its PCA unseeded
    seconds = time.perf_counter() - start
    first = 0
    for name, (adata, _) in zip(names, built, strict=True):
        rows = latent[first : first + adata.n_obs]
        first += adata.n_obs
        write(args.out.replace("{section}", name), adata, rows, seconds, n_genes=adata.n_vars)


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--lam", type=float, default=0.2, help="BANKSY's lambda (0.2: cell typing, 0.8: domains)")
    arguments.add_argument("--k-geom", type=int, default=6)
    arguments.add_argument("--hvgs", type=int, default=0, help="0: all the file's genes")
    args = arguments.parse_args()
    if "," in args.section:
        if "{section}" not in args.out:
            arguments.error("several sections write one npz each: put {section} in OUT")
        stacked(args)
        return
    start = time.perf_counter()
    adata, banksy = banksy_matrix(section_spots(args), args)
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
