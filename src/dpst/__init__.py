"""Distance-preserving generative models for spatial transcriptomics.

Submodules
----------
io      read Space Ranger output (filtered h5 + spatial/) into AnnData
pp      preprocessing: QC, normalization, highly variable genes, spatial graphs
        (the grid graph; penalty_graph: the penalty's pair graph G in obsp)
sim     simulate Visium sections and write them in the Space Ranger layout
graph   spatial pair graphs G (knn, radius, gaussian, all) as edge lists
module  torch modules: shared blocks, VAE and scVI backbones, the penalty
train   the training loop shared by both backbones
model   user-facing model classes `DPVAE` and `DPSCVI`
metrics Moran's I / Geary's C, reconstruction MSE, distortion, local ellipses
tl      the metrics on a latent stored in AnnData, written back under key_added
pl      plots: local-metric ellipses on the tissue; saving figures

The study's reproduction (published Table 1, Figures 4-6, the workflow's steps)
is not part of this package: it lives with the Snakemake workflow, in
``workflow/dpst_study``.
"""

from importlib.metadata import version

from . import graph, io, metrics, pl, pp, sim, tl
from .model import DPSCVI, DPVAE
from .train import TrainingDivergedError

__version__ = version("dpst")
__all__ = [
    "DPSCVI",
    "DPVAE",
    "TrainingDivergedError",
    "__version__",
    "graph",
    "io",
    "metrics",
    "pl",
    "pp",
    "sim",
    "tl",
]
