"""Isometric vs one-sided distortion penalty on the DLPFC domains (issue 22, part 4).

Hypothesis under test: the study's isometric penalty ``sum w |d_z - lam d_s|`` asks
neighbours across a layer boundary to stay as close in the latent as neighbours
within a layer, so it fights the boundaries the domains are made of; a one-sided
(Lipschitz-type) bound ``sum w relu(d_z - slack * lam * d_s)``, lam fixed at its
first-step value (the median ratio d_z / d_s, as the library initializes it), lets
boundaries form while keeping neighbours from being torn apart.

The one-sided form lives in this script only (:class:`OneSidedPenalty`, a subclass
of ``dpst.module.DistortionPenalty``); it replaces ``model.penalty`` of a
``dpst.DPVAE`` before ``train()`` (``train_module`` receives ``model.penalty``, and
the optimizer takes only parameters with ``requires_grad``, so a fixed lam stays out).

Compared per section (``--sections``): DPVAE alpha 0 and isometric alpha 100 (the
latents cached by ``tests/benchmarks/domains.py`` in ``--cache-dir``; this script
never trains them) and one-sided alpha 100 for each ``--slacks`` (trained here over
``--seeds``, cached in ``--own-cache-dir``; ``--slack-sections`` limits a slack to
some sections, e.g. ``1=151673``). Scoring is domains.py's: ``dpst.pp.preprocess``
with ``min_counts`` 100, 7 domains, GMM full and tied with and without refine, fit
seeds ``--fit-seeds``. Also printed: Moran's I of the latent (mean over dimensions,
``dpst.metrics.spatial_autocorrelation`` on ``obsp["spatial_connectivities"]``) and
``L_0.1`` (``dpst.metrics.distortion`` on the model's graph G, lam at its optimum).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python tests/benchmarks/penalty_forms.py
        [--data ../shared/data/dlpfc] [--sections 151673,151674] [--seeds 0,1,2]
        [--slacks 0.5,1] [--slack-sections 1=151673] [--epochs 1000] [--time-limit 30]
        [--penalty-latent sample|mean] [--neighborhood none|reconstructed]
        [--fit-seeds 0,1,2,3,4] [--cache-dir /tmp/dpst_domains_cache]
        [--own-cache-dir /tmp/dpst_penalty_forms_cache] [--fits-out fits.tsv]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import _machine  # tests/benchmarks/_machine.py, beside this script
import domains  # tests/benchmarks/domains.py: data loading, caches and clusterers
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import dpst

CLUSTERERS = {name: spec for name, spec in domains.CLUSTERERS.items() if spec[0] == "gmm"}
ALPHA = 100.0


class OneSidedPenalty(dpst.module.DistortionPenalty):
    """``sum_e w_e relu(d_z(e) - slack * lam * d_s(e)) / denominator``, lam fixed at its first value.

    lam is set by the inherited :meth:`initialize_lam` at the first step (median
    d_z / d_s of the pairs, exactly as the isometric penalty) and then frozen
    (``requires_grad`` False: the training loop's optimizer leaves it out).
    """

    def __init__(self, slack: float = 0.5):
        super().__init__(lam=None, learn_lam=True)  # lam from the data; frozen just below
        self.log_lam.requires_grad_(False)
        self.slack = float(slack)

    def forward(self, dz, ds, weights, denominator, groups=None):
        gap = F.relu(dz - self.slack * torch.exp(self.log_lam) * ds)
        total = gap.sum() if weights is None else (weights * gap).sum()
        return total / denominator


def one_sided_path(args, section: str, slack: float, seed: int) -> Path:
    # the settings that were the only ones before the options keep their old cache names
    latent = "" if args.penalty_latent == "sample" else f"_{args.penalty_latent}"
    setting = "" if args.neighborhood == "none" else f"_n{args.neighborhood}"
    name = f"{section}_vae_a{ALPHA:g}_onesided{slack:g}{latent}{setting}_s{seed}_e{args.epochs}_mc{args.min_counts}.npz"
    return Path(args.own_cache_dir) / name


def train_one_sided(adata, args, slack: float, seed: int) -> dict:
    torch.set_num_threads(args.threads)  # scanpy may reset it
    start = time.perf_counter()
    model = dpst.DPVAE(
        adata, alpha=ALPHA, penalty_latent=args.penalty_latent, neighborhood=args.neighborhood, seed=seed
    )
    model.penalty = OneSidedPenalty(slack)
    model.train(max_epochs=args.epochs, progress_bar=False, device="cpu")
    seconds = time.perf_counter() - start
    lam_start, lam_end = float(model.history["lam"].dropna().iloc[0]), model.penalty.lam
    if not np.isclose(lam_start, lam_end, rtol=1e-6):
        raise RuntimeError(f"lam moved during training: {lam_start} -> {lam_end}")
    return {
        "latent": model.get_latent_representation(),
        "obs_names": np.asarray(adata.obs_names, dtype=str),
        "seconds": seconds,
        "lam": lam_end,
    }


def latents(sections, args, started) -> dict:
    """{(section, representation): [result per seed]}: cached alpha 0 / 100, one-sided trained or cached."""
    out: dict = {}
    for section, adata in sections.items():
        for seed in domains.ints(args.seeds):
            for alpha, latent, rep in ((0.0, "sample", "alpha 0"), (ALPHA, args.penalty_latent, "isometric a100")):
                path = domains.cache_path(args, section, "vae", alpha, latent, seed, args.neighborhood)
                if not path.exists():
                    print(f"missing {path}: run tests/benchmarks/domains.py first; skipped")
                    continue
                result = domains.load_cached(path, adata)
                out.setdefault((section, rep), []).append(result | {"seed": seed})
    Path(args.own_cache_dir).mkdir(parents=True, exist_ok=True)
    limited = dict(part.split("=") for part in domains.words(args.slack_sections))
    skipped = []
    for slack in domains.floats(args.slacks):
        allowed = domains.words(limited.get(f"{slack:g}", ",".join(sections)).replace("+", ","))
        for seed in domains.ints(args.seeds):
            for section, adata in sections.items():
                if section not in allowed:
                    continue
                path = one_sided_path(args, section, slack, seed)
                rep = f"one-sided {slack:g} a100"
                if path.exists():
                    result, status = domains.load_cached(path, adata), "cached"
                elif args.time_limit and time.perf_counter() - started > 60 * args.time_limit:
                    skipped.append(f"{section} {rep} seed {seed}")
                    continue
                else:
                    result, status = train_one_sided(adata, args, slack, seed), "trained"
                    np.savez(path, **result)
                out.setdefault((section, rep), []).append(result | {"seed": seed})
                print(
                    f"{status:7s} {section} {rep} seed {seed}: {float(result['seconds']):4.0f} s, "
                    f"lam {float(result['lam']):.4g}  [{(time.perf_counter() - started) / 60:.1f} min]",
                    flush=True,
                )
    if skipped:
        print(f"--time-limit {args.time_limit} min reached; not trained: " + "; ".join(skipped), flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(domains.DEFAULT_DATA), help="folder of dlpfc_<section>.h5ad")
    parser.add_argument("--sections", default="151673,151674")
    parser.add_argument("--min-counts", type=int, default=100)
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--slacks", default="0.5", help="comma-separated slacks of the one-sided bound")
    parser.add_argument("--slack-sections", default="", help="e.g. 1=151673: train slack 1 on 151673 only")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--fit-seeds", default="0,1,2,3,4")
    parser.add_argument("--penalty-latent", default="sample", choices=["sample", "mean"])
    parser.add_argument("--neighborhood", default="none", choices=["none", "reconstructed"])
    parser.add_argument("--cache-dir", default="/tmp/dpst_domains_cache", help="domains.py's cache")
    parser.add_argument("--own-cache-dir", default="/tmp/dpst_penalty_forms_cache")
    parser.add_argument("--time-limit", type=float, default=None, help="minutes after which no training starts")
    parser.add_argument("--fits-out", help="TSV of every single fit")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {_machine.machine()}, {torch.get_num_threads()} torch threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, dpst {dpst.__version__}"
    )
    if not Path(args.data).is_dir():
        print(f"skipped: the DLPFC folder {args.data} is absent (see issue 22; pass --data)")
        return
    sections = domains.load_sections(args)
    if not sections:
        print("skipped: no section file found")
        return
    reps = latents(sections, args, started)
    fit_seeds = domains.ints(args.fit_seeds)
    fits, quality = [], []
    for (section, rep), results in reps.items():
        adata = sections[section]
        graph = dpst.DPVAE(adata, alpha=ALPHA, seed=0).graph  # the model's G (coordinates only)
        for result in results:
            codes = np.asarray(result["latent"])
            moran = dpst.metrics.spatial_autocorrelation(codes, adata.obsp["spatial_connectivities"])
            dist = dpst.metrics.distortion(codes, graph)
            quality.append(
                {
                    "section": section,
                    "representation": rep,
                    "train_seed": int(result["seed"]),
                    "moran_I": float(moran["moran_I"].mean()),
                    "L_0.1": float(dist["L_0.1"]),
                }
            )
            for row in domains.score(adata, codes, fit_seeds, CLUSTERERS):
                fits.append({"section": section, "representation": rep, "train_seed": int(result["seed"]), **row})
        print(f"scored {section} {rep}", flush=True)
    fits, quality = pd.DataFrame(fits), pd.DataFrame(quality)
    keys = ["section", "representation", "clusterer"]
    order = {rep: i for i, rep in enumerate(dict.fromkeys(rep for _, rep in reps))}
    per_seed = fits.groupby([*keys, "train_seed"], sort=False)["ARI"].mean().unstack("train_seed")
    per_seed.columns = [f"seed {s}" for s in per_seed.columns]
    overall = fits.groupby(keys, sort=False)["ARI"].agg(["mean", "std", "size"])
    table = pd.DataFrame(
        {
            "ARI mean (sd)": [f"{m:.3f} ({s:.3f})" for m, s in zip(overall["mean"], overall["std"], strict=True)],
            "n": overall["size"],
        },
        index=overall.index,
    ).join(per_seed.round(3))
    table = table.sort_index(key=lambda idx: idx.map(order) if idx.name == "representation" else idx)
    pd.set_option("display.width", 200)
    print("\nARI over training seeds x fit seeds (sd), and the mean over fit seeds of each training seed:")
    print(table.to_string())
    q = quality.groupby(["section", "representation"], sort=False).agg(
        moran_I=("moran_I", "mean"), moran_sd=("moran_I", "std"), L01=("L_0.1", "mean"), L01_sd=("L_0.1", "std")
    )
    q_seed = quality.pivot_table(
        index=["section", "representation"], columns="train_seed", values=["moran_I", "L_0.1"], sort=False
    )
    print("\nlatent quality, mean (sd) over training seeds; per seed beside:")
    shown = pd.DataFrame(
        {
            "Moran's I": [f"{m:.3f} ({s:.3f})" for m, s in zip(q["moran_I"], q["moran_sd"], strict=True)],
            "L_0.1": [f"{m:.2f} ({s:.2f})" for m, s in zip(q["L01"], q["L01_sd"], strict=True)],
        },
        index=q.index,
    )
    q_seed.columns = [f"{name} s{seed}" for name, seed in q_seed.columns]
    print(shown.join(q_seed.round(3)).sort_index().to_string())
    print(f"\nwall time {(time.perf_counter() - started) / 60:.1f} min")
    if args.fits_out:
        fits.to_csv(args.fits_out, sep="\t", index=False)


if __name__ == "__main__":
    main()
