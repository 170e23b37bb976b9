"""Distance-preserving generative models for spatial transcriptomics.

Submodules
----------
io      read Space Ranger output (filtered h5 + spatial/) into AnnData
pp      preprocessing: QC, normalization, highly variable genes, spatial graph
sim     simulate Visium sections and write them in the Space Ranger layout
graph   spatial pair graphs G (knn, radius, gaussian, all) as edge lists
module  torch modules: shared blocks, VAE and scVI backbones, the penalty
train   the training loop shared by both backbones
model   user-facing model classes `DPVAE` and `DPSCVI`
metrics Moran's I / Geary's C, reconstruction MSE, distortion, local ellipses
pl      figures: local-metric ellipses (Figure 4), MSE (5), sensitivity (6)
tables  Table 1 in CSV, Markdown and LaTeX, beside the published values
workflow the steps of the Snakemake workflow, called by its scripts
"""

from importlib.metadata import version

from . import graph, io, metrics, pl, pp, sim, tables
from .model import DPSCVI, DPVAE
from .train import TrainingDivergedError

__version__ = version("dpst")
__all__ = [
    "DPSCVI",
    "DPVAE",
    "TrainingDivergedError",
    "graph",
    "io",
    "metrics",
    "pl",
    "pp",
    "sim",
    "tables",
    "__version__",
]
