"""Does the penalty still do its job in tiled minibatches? Full batch against minibatches.

Trains each backbone at alpha 0 and ``--alpha`` on one section, full batch and with
``--batch-size`` spots per step (tiled batches when the penalty is on, random ones
without), ``--epochs`` epochs each and the study's other defaults, and prints the
metrics of Table 1 (Moran's I, Geary's C, the distortion penalty at the best lam,
held-out MSE) side by side. Section: the default simulated one, or a Space Ranger
folder (``--spaceranger``), preprocessed with ``dpst.pp.preprocess``.

    python tests/benchmarks/minibatch_quality.py [--spaceranger DIR] [--models vae scvi]
        [--epochs 1000] [--batch-size 128] [--alpha 100] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
import warnings

import _machine  # tests/benchmarks/_machine.py, beside this script
import pandas as pd
import torch

import dpst
from dpst.metrics import evaluate_model

warnings.filterwarnings("ignore")
MODELS = {"vae": dpst.DPVAE, "scvi": dpst.DPSCVI}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spaceranger", help="a Space Ranger output folder (default: a simulated section)")
    parser.add_argument("--models", nargs="+", default=["vae", "scvi"], choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--alpha", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    raw = dpst.io.read_spaceranger(args.spaceranger) if args.spaceranger else dpst.sim.simulate_section(seed=0)
    adata = dpst.pp.preprocess(raw)
    torch.set_num_threads(args.threads)  # after scanpy, which may reset it
    print(f"machine: {_machine.machine()}, {torch.get_num_threads()} torch threads")
    print(f"section: {args.spaceranger or 'simulated'}, {adata.n_obs} spots x {adata.n_vars} genes", flush=True)
    rows = []
    for name in args.models:
        for alpha in (0.0, args.alpha):
            for batch_size in (None, args.batch_size):
                model = MODELS[name](adata, alpha=alpha, seed=args.seed)
                start = time.perf_counter()
                model.train(max_epochs=args.epochs, batch_size=batch_size, progress_bar=False, device="cpu")
                seconds = time.perf_counter() - start
                metrics, _ = evaluate_model(model)
                rows.append(
                    {
                        "model": name,
                        "alpha": alpha,
                        "batches": "full" if batch_size is None else f"{batch_size}",
                        **{key: metrics[key] for key in ("moran_I", "geary_C", "penalty", "mse_heldout")},
                        "train_s": round(seconds, 1),
                    }
                )
                print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
