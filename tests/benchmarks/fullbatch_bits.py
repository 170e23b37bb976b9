"""The study's full-batch CPU training path gives the same bits as a reference implementation.

Trains DPVAE and DPSCVI (alpha 0 and 100, ``--epochs`` full-batch epochs, seed 0) on
a simulated section preprocessed with ``dpst.pp.preprocess``, once with the
reference ``src`` (e.g. ``git worktree add /tmp/perf_base HEAD``) and once with this
checkout, each in its own child process, and compares latents, reconstructions,
lam and the history exactly.

    python tests/benchmarks/fullbatch_bits.py --reference /tmp/perf_base/src [--epochs 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import sys, warnings
import numpy as np
import dpst
warnings.filterwarnings("ignore")
out, epochs = sys.argv[1], int(sys.argv[2])
adata = dpst.pp.preprocess(dpst.sim.simulate_section(seed=0))
arrays = {}
for name, cls in (("vae", dpst.DPVAE), ("scvi", dpst.DPSCVI)):
    for alpha in (0.0, 100.0):
        model = cls(adata, alpha=alpha, seed=0)
        model.train(max_epochs=epochs, progress_bar=False, device="cpu")
        key = f"{name}_{alpha:g}"
        arrays[key + "_latent"] = model.get_latent_representation()
        arrays[key + "_recon"] = model.get_reconstruction()
        arrays[key + "_lam"] = np.array(model.penalty.lam)
        history = model.history.select_dtypes("number")
        arrays[key + "_history"] = history.to_numpy(dtype=np.float64)
        arrays[key + "_history_columns"] = np.array(list(history.columns))
np.savez(out, **arrays)
"""


def run(src: str, out: str, epochs: int, threads: int) -> None:
    # With 2 threads on a loaded machine, even one implementation is not repeatable run to run
    # (DPVAE, alpha 100: last-bit differences from epoch ~15 on), so the comparison pins the threads.
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    subprocess.run([sys.executable, "-c", CHILD, out, str(epochs)], env=env, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="src folder of the reference implementation")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of each run")
    parser.add_argument("--keep", default=None, help="folder for the two .npz files (default: a temporary one)")
    args = parser.parse_args()
    here = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or tmp
        ref, cand = os.path.join(tmp, "reference.npz"), os.path.join(tmp, "candidate.npz")
        run(os.path.abspath(args.reference), ref, args.epochs, args.threads)
        run(here, cand, args.epochs, args.threads)
        a, b = np.load(ref), np.load(cand)
        same = True
        for key in sorted(a.files):
            nan = a[key].dtype.kind == "f"
            equal = key in b.files and a[key].shape == b[key].shape and np.array_equal(a[key], b[key], equal_nan=nan)
            same &= equal
            print(f"{key:28s} {'identical' if equal else 'DIFFERENT'}")
        print("full-batch CPU training bitwise identical:", same)
        sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
