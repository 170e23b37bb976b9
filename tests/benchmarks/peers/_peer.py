"""What every peer runner shares: its command line, the section's spots, and the npz it writes.

Standard library, numpy and anndata only: each runner imports it in its own environment.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import anndata as ad
import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "dlpfc"


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments of every runner: section, output npz, data folder and ``--min-counts``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section")
    parser.add_argument("out")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of dlpfc_<section>.h5ad")
    parser.add_argument("--min-counts", type=int, default=100, help="the spots dpst.pp.preprocess keeps")
    return parser


def section_spots(args: argparse.Namespace, section: str | None = None) -> ad.AnnData:
    """A section's spots (default ``args.section``) with at least ``--min-counts`` counts
    (``dpst.pp.preprocess``'s rule), all genes."""
    raw = ad.read_h5ad(Path(args.data) / f"dlpfc_{section or args.section}.h5ad")
    return raw[np.asarray(raw.X.sum(axis=1)).ravel() >= args.min_counts].copy()


def peak_mib() -> float:
    """The process's peak resident memory so far."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def write(path: str, adata: ad.AnnData, latent: np.ndarray, seconds: float, **extra) -> None:
    """The npz ``domains.py --external`` reads: ``obs_names``, ``latent``, ``seconds``, ``peak_mib`` and ``extra``."""
    names = np.asarray(adata.obs_names, dtype=str)
    np.savez(path, obs_names=names, latent=latent, seconds=seconds, peak_mib=peak_mib(), **extra)
    print(f"{path}: {latent.shape[0]} spots x {latent.shape[1]}, {seconds:.0f} s, peak {peak_mib():.0f} MiB")
