"""Torch modules: shared encoder/decoder blocks, the two backbones, the penalty.

Each backbone is a :class:`VAEModule`: ``inference`` (encoder), ``generative``
(decoder) and ``loss_terms`` (per-spot negative ELBO terms), each over a
dictionary of tensors (:data:`X_KEY`, the input; :data:`BATCH_KEY`, batch codes). The
:class:`DistortionPenalty` acts on latent and spatial distances only and
knows nothing of the backbone.
"""

from ._base import BATCH_KEY, NEIGHBORS_KEY, X_KEY, VAEModule, take_rows
from ._blocks import Encoder, HiddenLayers
from ._gaussian import GaussianVAEModule
from ._likelihoods import gaussian_log_prob, nb_log_prob, zinb_log_prob
from ._penalty import DistortionPenalty, pair_distances
from ._scvi import SCVIModule

__all__ = [
    "BATCH_KEY",
    "NEIGHBORS_KEY",
    "X_KEY",
    "DistortionPenalty",
    "Encoder",
    "GaussianVAEModule",
    "HiddenLayers",
    "SCVIModule",
    "VAEModule",
    "gaussian_log_prob",
    "nb_log_prob",
    "pair_distances",
    "take_rows",
    "zinb_log_prob",
]
