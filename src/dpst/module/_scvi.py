"""The scVI backbone (Lopez et al. 2018) on raw counts, as scvi-tools' ``SCVI`` defaults."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ._base import VAEModule
from ._blocks import HiddenLayers
from ._likelihoods import nb_log_prob, zinb_log_prob


class SCVIModule(VAEModule):
    """Encoder on log1p(counts); decoder softmax scale x observed library size.

    Likelihood: zero-inflated negative binomial (``zinb``) or negative binomial
    (``nb``) with one learned inverse dispersion per gene.
    """

    def __init__(self, n_input: int, n_latent: int = 10, n_hidden: int = 128, n_layers: int = 1,
                 dropout_rate: float = 0.1, likelihood: Literal["zinb", "nb"] = "zinb"):
        super().__init__(n_input, n_latent, n_hidden, n_layers, dropout_rate)
        if likelihood not in ("zinb", "nb"):
            raise ValueError(f"likelihood must be 'zinb' or 'nb', got {likelihood!r}")
        self.likelihood = likelihood
        self.decoder = HiddenLayers(n_latent, n_hidden, n_layers, dropout_rate=0.0)
        self.scale = nn.Sequential(nn.Linear(n_hidden, n_input), nn.Softmax(dim=-1))
        self.zi_logits = nn.Linear(n_hidden, n_input)
        self.log_theta = nn.Parameter(torch.randn(n_input))

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log1p(x)

    def generative(self, z: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.decoder(z)
        scale = self.scale(h)
        library = x.sum(-1, keepdim=True)  # observed library size
        return {
            "scale": scale,
            "mu": library * scale,
            "theta": torch.exp(self.log_theta),
            "zi_logits": self.zi_logits(h),
        }

    def log_likelihood(self, x: torch.Tensor, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.likelihood == "nb":
            return nb_log_prob(x, gen["mu"], gen["theta"])
        return zinb_log_prob(x, gen["mu"], gen["theta"], gen["zi_logits"])

    def log_normalized(self, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.log1p(1e4 * gen["scale"])
