"""Several sections in one model (issue 19): joint vs alone, query mapping with label transfer, mixing.

On the two shared DLPFC sections (adjacent sections of one donor, 7 manual layers in
``obs["domain"]``; skipped with a message where ``--data`` is absent), preprocessed together
(``dpst.pp.preprocess`` with ``library_key``, ``min_counts`` 100, highly variable genes chosen
per section), so every representation reads the same genes:

- **alone**: the dpst model (``--model``: DPVAE or DPSCVI) on each section by itself;
- **joint**: one model of both, ``batch_key`` the section (the penalty within sections);
- **mapped**: a reference model of ``--reference`` (with ``batch_key``), the other section mapped
  onto it with ``load_query_data`` (scArches-style: only its batch columns train), and the
  reference's layers carried over with ``dpst.tl.transfer_labels`` (kNN 15 in the latent);
- **joint PCA**: 30 principal components of both sections' log-expression, layers transferred
  the same way;
- **scvi-tools** (``--scvi-tools``): ``scvi.model.SCVI`` on the reference's counts with the
  section as batch, ``SCVI.load_query_data`` + training on the query, layers transferred the same way.

Each dpst model at each of ``--alphas`` (``penalty_latent`` ``--penalty-latent``,
``neighborhood`` ``--neighborhood``), ``--epochs`` full-batch epochs, training seeds ``--seeds``;
the joint model on minibatches of ``--joint-batch-size`` for ``--joint-epochs`` with a KL warm-up
of ``--joint-kl-warmup-epochs`` and tiles ``--joint-tiles`` where given (one model mixes its
sections only with many optimizer steps); ``--parts`` picks which runs.
Printed per section: domain ARI of each section's own latent (GMM tied, 7 domains, fit seeds 0-4,
``dpst.tl.domains``) alone and in the joint model; for the query, the ARI of the transferred
layers against its own annotation; the joint latents' mixing and conservation scores from
scib-metrics (iLISI and cLISI on a 90-NN graph, silhouette of the layers and of the sections);
and train time: the joint run against the sum of the two single runs. Means (sd) over seeds.

    OMP_NUM_THREADS=1 python tests/benchmarks/sections.py [--data ../shared/data/dlpfc]
        [--reference 151673] [--query 151674] [--model vae] [--epochs 1000] [--alphas 0,100]
        [--penalty-latent mean] [--neighborhood none] [--seeds 0,1,2] [--no-pca] [--scvi-tools]
        [--joint-batch-size 128] [--joint-epochs 200] [--joint-kl-warmup-epochs 200] [--joint-tiles narrow]
        [--parts joint,alone,mapped]
        [--threads 1] [--out sections.tsv] [--latents-dir DIR]

``--latents-dir`` keeps each joint latent as ``joint_{model}_a{alpha}_{section}_s{seed}.npz``, which
``domains.py --external "joint=DIR/joint_vae_a100_{section}_s{seed}.npz" --seeds 0,1,2`` scores
with every clusterer, beside the peers (``peers/``, which can also stack sections).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import _machine  # tests/benchmarks/_machine.py, beside this script
import anndata as ad
import domains  # tests/benchmarks/domains.py: data path, clusterers and scoring
import numpy as np
import pandas as pd
import scanpy as sc
import torch
from sklearn.metrics import adjusted_rand_score

import dpst
from dpst.train import TILE_WIDTHS

warnings.filterwarnings("ignore")
SECTION = "section"
TRUTH = domains.TRUTH
CLUSTERERS = {"GMM tied": domains.CLUSTERERS["GMM tied"]}
FIT_SEEDS = [0, 1, 2, 3, 4]


def load(args) -> ad.AnnData | None:
    raw = {}
    for name in (args.reference, args.query):
        path = Path(args.data) / f"dlpfc_{name}.h5ad"
        if not path.exists():
            print(f"skipped: {path} is absent (pass --data)")
            return None
        raw[name] = ad.read_h5ad(path)
    both = ad.concat(raw, label=SECTION, index_unique="-", uns_merge="unique")
    both.uns["spatial_unit"] = "um"
    return dpst.pp.preprocess(both, min_counts=args.min_counts, library_key=SECTION)


def section_ari(adata: ad.AnnData, codes: np.ndarray) -> float:
    """Mean ARI of the domains of one section's codes over the fit seeds."""
    rows = domains.score(adata, codes, FIT_SEEDS, CLUSTERERS)
    return float(np.mean([row["ARI"] for row in rows]))


def transfer_ari(reference: ad.AnnData, query: ad.AnnData, ref_codes, query_codes) -> float:
    reference, query = reference.copy(), query.copy()
    reference.obsm["_codes"], query.obsm["_codes"] = ref_codes, query_codes
    labels = dpst.tl.transfer_labels(reference, query, TRUTH, "_codes")
    known = query.obs[TRUTH].notna().to_numpy()
    return float(adjusted_rand_score(query.obs[TRUTH][known].astype(str), labels[known].astype(str)))


def mixing(adata: ad.AnnData, codes: np.ndarray) -> dict:
    """scib-metrics' iLISI, cLISI and silhouettes on the joint codes (annotated spots)."""
    scores = dpst.metrics.integration_scores(codes, adata.obs[SECTION].to_numpy(), adata.obs[TRUTH].to_numpy())
    del scores["n_scored"]
    return scores


def write_latents(folder: str, label: str, seed: int, both: ad.AnnData, codes: np.ndarray, own: dict) -> None:
    """Each section's rows of ``codes`` as ``{label}_{section}_s{seed}.npz``, named by the section's own barcodes."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, rows in own.items():
        barcodes = both.obs_names[rows].str.removesuffix(f"-{name}")
        np.savez(
            Path(folder) / f"{label}_{name}_s{seed}.npz", obs_names=np.asarray(barcodes, dtype=str), latent=codes[rows]
        )


def fit(adata: ad.AnnData, args, alpha: float, seed: int, training: dict | None = None, **kwargs):
    """A ``--model`` trained ``--epochs`` full batch, or as ``training`` (arguments of ``train``) says, and its seconds."""
    torch.set_num_threads(args.threads)  # scanpy may reset it
    start = time.perf_counter()
    model = domains.MODELS[args.model](
        adata, alpha=alpha, penalty_latent=args.penalty_latent, neighborhood=args.neighborhood, seed=seed, **kwargs
    )
    model.train(**{"max_epochs": args.epochs, **(training or {})}, progress_bar=False, device="cpu")
    return model, time.perf_counter() - start


def joint_training(args) -> dict:
    """The ``train`` arguments the ``--joint-*`` options set (none: the joint model trains as the others)."""
    given = {
        "max_epochs": args.joint_epochs,
        "batch_size": args.joint_batch_size,
        "kl_warmup_epochs": args.joint_kl_warmup_epochs,
        "tiles": args.joint_tiles,
    }
    return {key: value for key, value in given.items() if value is not None}


def map_query(reference_model, query: ad.AnnData, args, seed: int):
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = domains.MODELS[args.model].load_query_data(query, reference_model, seed=seed)
    model.train(max_epochs=args.epochs, progress_bar=False, device="cpu")
    return model, time.perf_counter() - start


def scvi_tools_transfer(reference: ad.AnnData, query: ad.AnnData, args, seed: int) -> tuple[float, float]:
    import scvi

    scvi.settings.seed = seed
    reference, query = reference.copy(), query.copy()
    scvi.model.SCVI.setup_anndata(reference, layer="counts", batch_key=SECTION)
    start = time.perf_counter()
    model = scvi.model.SCVI(reference)
    model.train(max_epochs=args.scvi_epochs, accelerator="cpu", enable_progress_bar=False)
    mapped = scvi.model.SCVI.load_query_data(query, model)
    mapped.train(
        max_epochs=args.scvi_epochs, accelerator="cpu", enable_progress_bar=False, plan_kwargs={"weight_decay": 0.0}
    )
    seconds = time.perf_counter() - start
    return transfer_ari(
        reference, query, model.get_latent_representation(), mapped.get_latent_representation()
    ), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(domains.DEFAULT_DATA))
    parser.add_argument("--reference", default="151673")
    parser.add_argument("--query", default="151674")
    parser.add_argument("--min-counts", type=int, default=100)
    parser.add_argument("--model", choices=sorted(domains.MODELS), default="vae", help="the dpst model: vae or scvi")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--scvi-epochs", type=int, default=400, help="scvi-tools' epochs (its default for ~7k cells)")
    parser.add_argument("--alphas", default="0,100")
    parser.add_argument("--penalty-latent", default="mean")
    parser.add_argument("--neighborhood", default="none")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--joint-batch-size", type=int, help="minibatches of the joint model (default full batch)")
    parser.add_argument("--joint-epochs", type=int, help="epochs of the joint model (default --epochs)")
    parser.add_argument(
        "--joint-kl-warmup-epochs", type=int, help="KL warm-up of the joint model (default the library's)"
    )
    parser.add_argument(
        "--joint-tiles", choices=TILE_WIDTHS, help="minibatch tiles of the joint model (default the library's)"
    )
    parser.add_argument("--parts", default="joint,alone,mapped", help="which dpst runs: joint, alone, mapped")
    parser.add_argument("--no-pca", action="store_true", help="leave out joint PCA (e.g. in a second process)")
    parser.add_argument("--scvi-tools", action="store_true", help="also scvi-tools' SCVI with load_query_data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="TSV of every run")
    parser.add_argument(
        "--latents-dir", help="also write each joint latent, one npz per section, for domains.py --external"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {_machine.machine()}, {args.threads} torch thread(s), dpst {dpst.__version__}")
    if not Path(args.data).is_dir():
        print(f"skipped: the DLPFC folder {args.data} is absent (pass --data)")
        return
    both = load(args)
    if both is None:
        return
    names = (args.reference, args.query)
    parts = {name: both[both.obs[SECTION] == name].copy() for name in names}
    for part in parts.values():  # one section each: its graphs and its coordinates alone
        part.obs[SECTION] = part.obs[SECTION].astype(str)
    print(f"{both.n_obs} spots ({', '.join(f'{n}: {p.n_obs}' for n, p in parts.items())}) x {both.n_vars} genes")
    started = time.perf_counter()
    rows = []
    run = set(domains.words(args.parts))
    training = joint_training(args)
    model_name = domains.MODEL_NAMES[args.model]
    joint_label = "".join(f" {key} {value}" for key, value in training.items())
    own = {name: (both.obs[SECTION] == name).to_numpy() for name in names}
    if not args.no_pca:
        pca = sc.pp.pca(both.X, n_comps=30, random_state=0)
        rows.append(
            {
                "method": "joint PCA 30",
                "seed": 0,
                "transfer_ARI": transfer_ari(
                    parts[args.reference], parts[args.query], pca[own[names[0]]], pca[own[names[1]]]
                ),
                **{f"ARI_{name}": section_ari(parts[name], pca[own[name]]) for name in names},
                **mixing(both, pca),
            }
        )
    for seed in domains.ints(args.seeds):
        for alpha in domains.floats(args.alphas):
            label = f"a{alpha:g}"
            alone = {name: fit(parts[name], args, alpha, seed) for name in names} if "alone" in run else {}
            if "joint" in run:
                joint, joint_seconds = fit(both, args, alpha, seed, training, batch_key=SECTION)
                codes = joint.get_latent_representation()
                if args.latents_dir:
                    write_latents(args.latents_dir, f"joint_{args.model}_a{alpha:g}", seed, both, codes, own)
                rows.append(
                    {
                        "method": f"{model_name} joint {label}{joint_label}",
                        "seed": seed,
                        **{f"ARI_{name}": section_ari(parts[name], codes[own[name]]) for name in names},
                        **mixing(both, codes),
                        "train_s": joint_seconds,
                        "train_s_alone_sum": sum(seconds for _, seconds in alone.values()) if alone else np.nan,
                    }
                )
            if alone:
                rows.append(
                    {
                        "method": f"{model_name} alone {label}",
                        "seed": seed,
                        **{
                            f"ARI_{n}": section_ari(parts[n], m.get_latent_representation())
                            for n, (m, _) in alone.items()
                        },
                    }
                )
            if "mapped" in run:
                reference, _ = fit(parts[args.reference], args, alpha, seed, batch_key=SECTION)
                mapped, mapped_seconds = map_query(reference, parts[args.query], args, seed)
                rows.append(
                    {
                        "method": f"{model_name} mapped {label}",
                        "seed": seed,
                        "transfer_ARI": transfer_ari(
                            parts[args.reference],
                            parts[args.query],
                            reference.get_latent_representation(),
                            mapped.get_latent_representation(),
                        ),
                        f"ARI_{args.query}": section_ari(parts[args.query], mapped.get_latent_representation()),
                        "train_s": mapped_seconds,
                    }
                )
            print(f"seed {seed} alpha {alpha:g} done [{(time.perf_counter() - started) / 60:.1f} min]", flush=True)
        if args.scvi_tools:
            ari, seconds = scvi_tools_transfer(parts[args.reference], parts[args.query], args, seed)
            rows.append({"method": "scvi-tools SCVI mapped", "seed": seed, "transfer_ARI": ari, "train_s": seconds})
    table = pd.DataFrame(rows)
    summary = table.drop(columns="seed").groupby("method", sort=False).agg(["mean", "std"])
    shown = pd.DataFrame(index=summary.index)
    for column in table.columns.drop(["method", "seed"]):
        mean, sd = summary[(column, "mean")], summary[(column, "std")].fillna(0)
        digits = 0 if column.startswith("train") else 3
        shown[column] = [
            f"{m:.{digits}f} ({s:.{digits}f})" if np.isfinite(m) else "" for m, s in zip(mean, sd, strict=True)
        ]
    print()
    print(f"mean (sd) over training seeds {args.seeds}; ARI: GMM tied, 7 domains, fits {FIT_SEEDS}")
    print(shown.to_string())
    print(f"\nwall time {(time.perf_counter() - started) / 60:.1f} min")
    if args.out:
        table.to_csv(args.out, sep="\t", index=False)


if __name__ == "__main__":
    main()
