"""Does one model of two real sections mix them (issue 19)? Full batch against minibatches.

On the two shared muscle sections (``--data``, Space Ranger folders Vis5A_2dpi and
Vis7B_5dpi; skipped with a message where absent), preprocessed together with
``library_key``, trains DPSCVI (or ``--model vae``) with the section as ``batch_key``
and without it (``library_key`` only, the penalty within sections either way), at
alpha 0 and ``--alpha``, full batch and on minibatches of ``--batch-size``, all for
``--epochs`` epochs, seeds ``--seeds``. Prints each run's iLISI, cLISI and batch
silhouette (``dpst.tl.integration_scores``; labels: 6 GMM domains of a 10-component
PCA of the expression, the same for every latent), each section's Moran's I
(``evaluate_model_by_library``), optimizer steps and train time. Found on
2026-12-07: full batch leaves the sections unmixed (iLISI 0.00 with or without
``batch_key``), minibatches of 128 mix them (DPSCVI 0.46; scvi-tools' SCVI 0.39).

    OMP_NUM_THREADS=1 python tests/benchmarks/mixing.py [--data ../shared/data/visium-muscle]
        [--model scvi] [--alpha 100] [--epochs 400] [--batch-size 128] [--seeds 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import _machine  # tests/benchmarks/_machine.py, beside this script
import anndata as ad
import pandas as pd
import scanpy as sc
import torch

import dpst

warnings.filterwarnings("ignore")
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "visium-muscle"
SECTIONS = ("Vis5A_2dpi", "Vis7B_5dpi")
LIBRARY = "library_id"


def load(folder: Path) -> ad.AnnData:
    """Both sections in one AnnData, preprocessed with ``library_key``; PCA domains as the scores' labels."""
    read = {name: dpst.io.read_spaceranger(folder / name) for name in SECTIONS}
    by_library = {next(iter(adata.uns["spatial"])): adata for adata in read.values()}
    both = ad.concat(by_library, label=LIBRARY, index_unique="-", uns_merge="unique")
    adata = dpst.pp.preprocess(both, library_key=LIBRARY)
    adata.obsm["X_pca"] = sc.pp.pca(adata.X, n_comps=10, random_state=0)
    dpst.tl.domains(adata, "X_pca", 6, seed=0, key_added="domains")
    return adata


def run(adata: ad.AnnData, args, batch: bool, alpha: float, batch_size: int | None, seed: int) -> dict:
    cls = dpst.DPSCVI if args.model == "scvi" else dpst.DPVAE
    keys = {"batch_key": LIBRARY} if batch else {"library_key": LIBRARY}
    start = time.perf_counter()
    model = cls(adata, alpha=alpha, seed=seed, **keys)
    model.train(max_epochs=args.epochs, batch_size=batch_size, progress_bar=False, device="cpu")
    seconds = time.perf_counter() - start
    adata.obsm["_codes"] = model.get_latent_representation()
    scores = dpst.tl.integration_scores(adata, "_codes", LIBRARY, "domains")
    morans = dpst.metrics.evaluate_model_by_library(model)["moran_I"]
    n_train = len(model.train_indices)
    steps = args.epochs * (1 if batch_size is None else -(-n_train // batch_size))
    return {
        "batch_key": batch,
        "alpha": alpha,
        "training": "full batch" if batch_size is None else f"batches of {batch_size}",
        "seed": seed,
        "steps": steps,
        **{k: scores[k] for k in ("iLISI", "cLISI", "silhouette_batch")},
        **{f"moran_I {name}": float(morans[name]) for name in morans.index if name != "all"},
        "train_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model", choices=["scvi", "vae"], default="scvi")
    parser.add_argument("--alpha", type=float, default=100.0)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {_machine.machine()}, {args.threads} torch thread(s), dpst {dpst.__version__}")
    folder = Path(args.data)
    if not all((folder / name / "filtered_feature_bc_matrix.h5").is_file() for name in SECTIONS):
        print(f"skipped: the muscle sections are not in {folder} (pass --data)")
        return
    adata = load(folder)
    print(f"{adata.n_obs} spots x {adata.n_vars} genes, {args.model}, {args.epochs} epochs", flush=True)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for batch_size in (None, args.batch_size):
            for alpha in (0.0, args.alpha):
                for batch in (False, True):
                    rows.append(run(adata, args, batch, alpha, batch_size, seed))
                    print(pd.DataFrame([rows[-1]]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    print()
    summary = table.groupby(["training", "alpha", "batch_key"]).mean(numeric_only=True).drop(columns="seed")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"mean over seeds {args.seeds}:")
        print(summary.round(3))


if __name__ == "__main__":
    main()
