"""Spatial domains on the shared DLPFC sections (issue 22): dpst latents and PCA, every clusterer.

For each section in ``--data`` (the curated 10x Visium DLPFC files, labels in
``obs["domain"]``; skipped with a message when the folder is absent), preprocesses
with ``dpst.pp.preprocess``'s defaults except ``min_counts`` (``--min-counts``; the
files hold 5,000 genes, ~29% of each spot's counts, so the default 500 drops many
spots: both settings' kept spots and Layer-1 spots are printed) and ``n_top_genes``
(``--n-top-genes``, default the library's 2,000), then builds the representations:

- ``PCA 30``: scanpy's PCA (30 components) of the log-normalized highly variable genes;
- dpst models over the grid ``--models`` x ``--neighborhoods`` x ``--alphas`` x
  ``--penalty-latents`` x ``--seeds`` (alpha 0 is trained once per seed: the penalty's
  latent is moot there; ``--neighborhoods`` are the models' ``neighborhood`` settings),
  ``--epochs`` epochs full batch (``--scvi-epochs`` for DPSCVI; minibatches of
  ``--batch-size`` where given), the other settings the library's defaults.

Each trained latent is cached in ``--cache-dir`` (one npz per section, model, alpha,
penalty latent, seed, epochs and min_counts, with its train time and peak memory), so a
rerun skips what is there: a long run can be stopped and continued, or limited with
``--time-limit`` (no new training starts after that many minutes; what is cached is
scored). Training order is seed-major (seed 0 of everything first).

Every representation is clustered into as many domains as the annotation has (7) by
every clusterer of ``dpst.tl.domains``: GMM full, GMM tied, leiden to 7, each with and
without ``refine`` (majority vote of 18 spatial neighbours), over ``--fit-seeds``
(the seed of the GMM's initialization or of leiden's graph and runs), and scored with
``dpst.tl.domain_scores`` (ARI and NMI on annotated spots, CHAOS, PAS). The table gives
means with the sd over training seeds x fit seeds, train time (mean, one thread) and
peak memory (the process's peak resident set during training, VmHWM reset before
each; torch's allocations are invisible to tracemalloc); the published and the
issue's own peer figures are printed beside it. ``--out`` gets the table as TSV,
``--fits-out`` every single fit.

``--external NAME=PATH`` (repeatable; ``{section}`` in PATH is replaced by the section,
``{seed}`` by each of ``--seeds``, the peer's training seeds) scores a representation
computed elsewhere, e.g. a peer run in its own environment by the scripts in
``tests/benchmarks/peers/``: an npz with ``obs_names`` (the same spots as the
preprocessed section) and ``latent``, optionally ``seconds`` and ``peak_mib``.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python tests/benchmarks/domains.py
        [--data ../shared/data/dlpfc] [--sections 151673,151674] [--min-counts 100] [--n-top-genes 2000]
        [--models vae,scvi] [--neighborhoods none,reconstructed] [--alphas 0,100]
        [--penalty-latents sample,mean] [--seeds 0,1,2]
        [--epochs 1000] [--scvi-epochs 500] [--batch-size 128] [--fit-seeds 0,1,2,3,4] [--no-pca]
        [--cache-dir /tmp/dpst_domains_cache] [--time-limit 75] [--out domains.tsv]
        [--fits-out fits.tsv] [--external "NAME=/tmp/peer_{section}.npz" ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import resource
import time
import warnings
from pathlib import Path

import _machine  # tests/benchmarks/_machine.py, beside this script
import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import torch

import dpst

warnings.filterwarnings("ignore")
MODELS = {"vae": dpst.DPVAE, "scvi": dpst.DPSCVI}
MODEL_NAMES = {"vae": "DPVAE", "scvi": "DPSCVI"}
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "dlpfc"
TRUTH = "domain"
LIBRARY_N_TOP_GENES = inspect.signature(dpst.pp.preprocess).parameters["n_top_genes"].default
# name: (method, covariance_type, refine)
CLUSTERERS = {
    "GMM full": ("gmm", "full", False),
    "GMM full+refine": ("gmm", "full", True),
    "GMM tied": ("gmm", "tied", False),
    "GMM tied+refine": ("gmm", "tied", True),
    "leiden": ("leiden", "tied", False),
    "leiden+refine": ("leiden", "tied", True),
}
PEERS = """\
peers, for reference (151673 unless marked; ARI; peers run here come in with --external):
  GraphST   published 0.64 (R mclust EEE); measured in issue 22: GMM tied+refine 0.48 (151674: 0.59),
            GMM full 0.42, leiden 0.45 (graphst-modern, 600 epochs, 400-470 s, 1 thread)
  STAGATE   published 0.55; measured in issue 22: GMM tied 0.53 (151674: 0.44), GMM full 0.47,
            leiden 0.40 (stagate-modern, 1000 epochs, 1,000-1,200 s)
  BANKSY    measured in issue 22: leiden 0.54 (151674: 0.52), GMM full 0.26
            (pybanksy 1.3.5, lambda 0.2, k_geom 6, 35-65 s)
  issue 22's own dpst figures (151673, min_counts 500, 1 training seed, 5 GMM fits): PCA 0.28,
            DPVAE alpha 0 0.375, alpha 100 0.366; DPSCVI (500 epochs) 0.328 / 0.324"""


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def words(text: str) -> list[str]:
    return [v for v in text.split(",") if v]


# ------------------------------------------------------------------ memory
def reset_peak() -> bool:
    """Reset the process's peak resident set (Linux VmHWM); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_mib() -> float:
    """The process's peak resident set since the last reset (VmHWM), else since it started (ru_maxrss)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ data
def load_sections(args) -> dict[str, ad.AnnData]:
    sections = {}
    for name in words(args.sections):
        path = Path(args.data) / f"dlpfc_{name}.h5ad"
        if not path.exists():
            print(f"skipped section {name}: {path} is absent")
            continue
        raw = ad.read_h5ad(path)
        totals = np.asarray(raw.X.sum(axis=1)).ravel()
        layer1 = (raw.obs[TRUTH] == "Layer1").to_numpy()
        for threshold in sorted({500, args.min_counts}):
            kept = totals >= threshold
            print(
                f"{name}: min_counts={threshold:<4d} keeps {kept.sum():5d} of {raw.n_obs} spots "
                f"({100 * kept.mean():5.1f}%), {(kept & layer1).sum():4d} of {layer1.sum()} Layer-1 spots "
                f"({100 * (kept & layer1).sum() / layer1.sum():5.1f}%)"
                + ("  <- used" if threshold == args.min_counts else "  (library default)")
            )
        adata = dpst.pp.preprocess(raw, min_counts=args.min_counts, n_top_genes=args.n_top_genes)
        print(
            f"{name}: preprocessed {adata.n_obs} spots x {adata.n_vars} genes, "
            f"{adata.obs[TRUTH].notna().sum()} annotated, {adata.obs[TRUTH].nunique()} domains",
            flush=True,
        )
        sections[name] = adata
    return sections


# ------------------------------------------------------------------ representations
def configs(args) -> list[tuple[str, float, str, str]]:
    """(model, alpha, penalty latent, neighborhood) of the grid; alpha 0 once (its penalty latent does nothing)."""
    out = []
    for model in words(args.models):
        for neighborhood in words(args.neighborhoods):
            for alpha in floats(args.alphas):
                for latent in ["sample"] if alpha == 0 else words(args.penalty_latents):
                    out.append((model, alpha, latent, neighborhood))
    return out


def representation(model: str, alpha: float, latent: str, args, neighborhood: str = "none") -> str:
    epochs = args.scvi_epochs if model == "scvi" else args.epochs
    name = f"{MODEL_NAMES[model]} a{alpha:g}"
    if alpha > 0:
        name += f" {latent}"
    if neighborhood != "none":
        name += f" nbhd-{neighborhood}"
    batches = f", batch {args.batch_size}" if args.batch_size else ""
    return f"{name} ({epochs} ep{batches})"


def cache_path(
    args, section: str, model: str, alpha: float, latent: str, seed: int, neighborhood: str = "none"
) -> Path:
    epochs = args.scvi_epochs if model == "scvi" else args.epochs
    setting = "" if neighborhood == "none" else f"_n{neighborhood}"  # names of caches before the option kept
    if args.batch_size:
        setting += f"_b{args.batch_size}"
    if args.n_top_genes != LIBRARY_N_TOP_GENES:  # unnamed in the caches made before the option
        setting += f"_g{args.n_top_genes}"
    name = f"{section}_{model}_a{alpha:g}_{latent}{setting}_s{seed}_e{epochs}_mc{args.min_counts}.npz"
    return Path(args.cache_dir) / name


def load_cached(path: Path, adata: ad.AnnData) -> dict:
    """A cached latent, checked to belong to the section's spots in their order."""
    result = dict(np.load(path))
    if list(result["obs_names"]) != list(adata.obs_names):
        raise ValueError(f"{path}: its spots differ from the section's; remove it")
    return result


def train(
    adata: ad.AnnData, args, model: str, alpha: float, latent: str, seed: int, neighborhood: str = "none"
) -> dict:
    torch.set_num_threads(args.threads)  # scanpy may reset it
    epochs = args.scvi_epochs if model == "scvi" else args.epochs
    reset = reset_peak()
    start = time.perf_counter()
    trained = MODELS[model](adata, alpha=alpha, penalty_latent=latent, neighborhood=neighborhood, seed=seed)
    trained.train(max_epochs=epochs, batch_size=args.batch_size, progress_bar=False, device="cpu")
    seconds = time.perf_counter() - start
    key = trained.write_results(key_added="_latent")
    codes = adata.obsm.pop(key)
    adata.uns.pop(key)
    return {
        "latent": codes,
        "obs_names": np.asarray(adata.obs_names, dtype=str),
        "seconds": seconds,
        "peak_mib": peak_mib(),
        "peak_is_own": reset,
        "lam": float(trained.lam),  # NaN at alpha 0
    }


def trained_latents(sections: dict[str, ad.AnnData], args, started: float) -> dict:
    """{(section, representation): [result per seed]} from the cache, training what is missing."""
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    out: dict = {}
    skipped = []
    for seed in ints(args.seeds):
        for section, adata in sections.items():
            for model, alpha, latent, neighborhood in configs(args):
                path = cache_path(args, section, model, alpha, latent, seed, neighborhood)
                rep = representation(model, alpha, latent, args, neighborhood)
                if path.exists():
                    result, status = load_cached(path, adata), "cached"
                elif args.time_limit and time.perf_counter() - started > 60 * args.time_limit:
                    skipped.append(f"{section} {rep} seed {seed}")
                    continue
                else:
                    result = train(adata, args, model, alpha, latent, seed, neighborhood)
                    np.savez(path, **result)
                    status = "trained"
                out.setdefault((section, rep), []).append(result | {"seed": seed})
                print(
                    f"{status:7s} {section} {rep:28s} seed {seed}: {float(result['seconds']):6.0f} s, "
                    f"peak {float(result['peak_mib']):6.0f} MiB, lam {float(result['lam']):.3g}  "
                    f"[{(time.perf_counter() - started) / 60:.1f} min]",
                    flush=True,
                )
    if skipped:
        print(f"--time-limit {args.time_limit} min reached; not trained: " + "; ".join(skipped), flush=True)
    return out


def pca_latent(adata: ad.AnnData) -> dict:
    reset = reset_peak()
    start = time.perf_counter()
    codes = sc.pp.pca(adata.X, n_comps=30, random_state=0)
    seconds = time.perf_counter() - start
    return {"latent": codes, "seconds": seconds, "peak_mib": peak_mib(), "peak_is_own": reset, "seed": 0}


def external_latent(adata: ad.AnnData, path: str, seed: int = 0) -> dict:
    stored = np.load(path)
    names = pd.Index(stored["obs_names"].astype(str))
    if set(names) != set(adata.obs_names):
        raise ValueError(f"{path}: its {len(names)} spots are not the section's {adata.n_obs}")
    codes = np.asarray(stored["latent"])[names.get_indexer(adata.obs_names)]
    extra = {key: float(stored[key]) if key in stored else np.nan for key in ("seconds", "peak_mib")}
    return {"latent": codes, **extra, "seed": seed}


# ------------------------------------------------------------------ scoring
def score(adata: ad.AnnData, codes: np.ndarray, fit_seeds: list[int], clusterers: dict | None = None) -> list[dict]:
    """One row per clusterer (default: all of CLUSTERERS) and fit seed: the domains' scores."""
    adata.obsm["_codes"] = np.asarray(codes, dtype=np.float64)
    n_domains = adata.obs[TRUTH].nunique()
    rows = []
    for clusterer, (method, covariance, refine) in (clusterers or CLUSTERERS).items():
        for fit_seed in fit_seeds:
            dpst.tl.domains(
                adata,
                "_codes",
                n_domains,
                method=method,
                covariance_type=covariance,
                refine=refine,
                seed=fit_seed,
                key_added="_domains",
            )
            found = adata.obs["_domains"].nunique()
            scores = dpst.tl.domain_scores(adata, "_domains", truth_key=TRUTH).loc["all"]
            rows.append(
                {
                    "clusterer": clusterer,
                    "fit_seed": fit_seed,
                    "n_found": found,
                    **{k: float(scores[k]) for k in ("ARI", "NMI", "CHAOS", "PAS")},
                }
            )
    del adata.obsm["_codes"], adata.obs["_domains"], adata.uns["_domains"], adata.uns["_domains_scores"]
    return rows


def summarize(fits: pd.DataFrame) -> pd.DataFrame:
    keys = ["section", "representation", "clusterer"]
    grouped = fits.groupby(keys, sort=False)
    table = grouped.agg(
        n_train=("train_seed", "nunique"),
        n_fits=("ARI", "size"),
        ARI=("ARI", "mean"),
        ARI_sd=("ARI", "std"),
        NMI=("NMI", "mean"),
        NMI_sd=("NMI", "std"),
        CHAOS=("CHAOS", "mean"),
        PAS=("PAS", "mean"),
        not_k=("n_found", lambda found: int((found != 7).sum())),
        train_s=("train_s", "mean"),
        peak_mib=("peak_mib", "max"),
    )
    return table.reset_index()


def show(table: pd.DataFrame) -> str:
    shown = pd.DataFrame(
        {
            "section": table["section"],
            "representation": table["representation"],
            "clusterer": table["clusterer"],
            "seeds x fits": [f"{a} x {b // a}" for a, b in zip(table["n_train"], table["n_fits"], strict=True)],
            "ARI mean (sd)": [f"{m:.3f} ({s:.3f})" for m, s in zip(table["ARI"], table["ARI_sd"], strict=True)],
            "NMI mean (sd)": [f"{m:.3f} ({s:.3f})" for m, s in zip(table["NMI"], table["NMI_sd"], strict=True)],
            "CHAOS": table["CHAOS"].map("{:.4f}".format),
            "PAS": table["PAS"].map("{:.3f}".format),
            "k!=7": table["not_k"],
            "train s": table["train_s"].map("{:.0f}".format),
            "peak MiB": table["peak_mib"].map("{:.0f}".format),
        }
    )
    return shown.to_string(index=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of dlpfc_<section>.h5ad")
    parser.add_argument("--sections", default="151673,151674")
    parser.add_argument("--min-counts", type=int, default=100, help="preprocess's min_counts (library default 500)")
    parser.add_argument(
        "--n-top-genes", type=int, default=LIBRARY_N_TOP_GENES, help="preprocess's highly variable genes"
    )
    parser.add_argument("--models", default="vae", help="comma-separated: vae, scvi")
    parser.add_argument("--neighborhoods", default="none", help="comma-separated: none, encoder, reconstructed")
    parser.add_argument("--alphas", default="0,100")
    parser.add_argument("--penalty-latents", default="sample", help="comma-separated: sample, mean")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--scvi-epochs", type=int, default=None, help="DPSCVI's epochs (default: --epochs)")
    parser.add_argument("--batch-size", type=int, default=None, help="minibatch size (default: full batch)")
    parser.add_argument("--fit-seeds", default="0,1,2,3,4", help="seeds of each GMM / leiden fit")
    parser.add_argument("--no-pca", action="store_true")
    parser.add_argument("--cache-dir", default="/tmp/dpst_domains_cache")
    parser.add_argument("--time-limit", type=float, default=None, help="minutes after which no training starts")
    parser.add_argument("--out", help="TSV of the table")
    parser.add_argument("--fits-out", help="TSV of every single fit")
    parser.add_argument("--external", action="append", default=[], help="NAME=PATH of a latent computed elsewhere")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)")
    args = parser.parse_args()
    args.scvi_epochs = args.scvi_epochs or args.epochs
    for name in words(args.models):
        if name not in MODELS:
            parser.error(f"--models: {name!r} is not one of {', '.join(MODELS)}")
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {_machine.machine()}, {torch.get_num_threads()} torch threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, dpst {dpst.__version__}"
    )
    if not Path(args.data).is_dir():
        print(f"skipped: the DLPFC folder {args.data} is absent (see issue 22; pass --data)")
        return
    sections = load_sections(args)
    if not sections:
        print("skipped: no section file found")
        return
    latents = trained_latents(sections, args, started)
    if not args.no_pca:
        for section, adata in sections.items():
            latents[(section, "PCA 30")] = [pca_latent(adata)]
    for spec in args.external:
        name, _, pattern = spec.partition("=")
        seeds = ints(args.seeds) if "{seed}" in pattern else [0]
        for section, adata in sections.items():
            found = []
            for seed in seeds:
                path = pattern.replace("{section}", section).replace("{seed}", str(seed))
                if Path(path).exists():
                    found.append(external_latent(adata, path, seed))
                else:
                    print(f"--external {name}: {path} is absent, skipped")
            if found:
                latents[(section, name)] = found
    fit_seeds = ints(args.fit_seeds)
    fits = []
    order = sorted(latents, key=lambda key: (key[0], key[1] != "PCA 30"))
    for section, rep in order:
        adata = sections[section]
        score_start = time.perf_counter()
        for result in latents[(section, rep)]:
            for row in score(adata, result["latent"], fit_seeds):
                fits.append(
                    {
                        "section": section,
                        "representation": rep,
                        "train_seed": int(result["seed"]),
                        **row,
                        "train_s": float(result["seconds"]),
                        "peak_mib": float(result["peak_mib"]),
                    }
                )
        print(f"scored {section} {rep} in {time.perf_counter() - score_start:.0f} s", flush=True)
    fits = pd.DataFrame(fits)
    table = summarize(fits)
    print()
    print(show(table))
    print()
    wide = table.pivot_table(index=["section", "representation"], columns="clusterer", values="ARI", sort=False)
    print("ARI mean by clusterer:")
    print(wide[list(CLUSTERERS)].round(3).to_string())
    print()
    print(PEERS)
    print(f"\nwall time {(time.perf_counter() - started) / 60:.1f} min")
    if args.out:
        table.to_csv(args.out, sep="\t", index=False)
    if args.fits_out:
        fits.to_csv(args.fits_out, sep="\t", index=False)


if __name__ == "__main__":
    main()
