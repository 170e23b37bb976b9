"""Torch modules: shared encoder/decoder blocks, the two backbones, the penalty.

Each backbone is a :class:`VAEModule`: ``inference`` (encoder), ``generative``
(decoder) and ``loss_terms`` (per-spot negative ELBO terms). The
:class:`DistortionPenalty` acts on latent and spatial distances only and
knows nothing of the backbone.
"""

from ._base import VAEModule
from ._blocks import Encoder, HiddenLayers
from ._gaussian import GaussianVAEModule
from ._likelihoods import gaussian_log_prob, nb_log_prob, zinb_log_prob
from ._penalty import DistortionPenalty, pair_distances
from ._scvi import SCVIModule

__all__ = [
    "DistortionPenalty",
    "Encoder",
    "GaussianVAEModule",
    "HiddenLayers",
    "SCVIModule",
    "VAEModule",
    "gaussian_log_prob",
    "nb_log_prob",
    "pair_distances",
    "zinb_log_prob",
]
