"""The scVI backbone (Lopez et al. 2018) on raw counts, as scvi-tools' ``SCVI`` defaults."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ._base import VAEModule
from ._blocks import HiddenLayers
from ._likelihoods import nb_log_prob, zinb_log_prob


class SCVIModule(VAEModule):
    """The scVI backbone of :class:`dpst.DPSCVI`, on raw counts.

    Encoder on log1p(counts); decoder softmax scale times the observed library
    size. Likelihood: zero-inflated negative binomial (``zinb``) or negative
    binomial (``nb``) with one learned inverse dispersion per gene. These are
    the defaults of scvi-tools' ``SCVI``.

    Parameters
    ----------
    n_input, n_latent, n_hidden, n_layers, dropout_rate
        As for :class:`VAEModule`.
    likelihood
        ``"zinb"`` or ``"nb"``.

    Raises
    ------
    ValueError
        When ``likelihood`` is neither.
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        likelihood: Literal["zinb", "nb"] = "zinb",
    ):
        super().__init__(n_input, n_latent, n_hidden, n_layers, dropout_rate)
        if likelihood not in ("zinb", "nb"):
            raise ValueError(f"likelihood must be 'zinb' or 'nb', got {likelihood!r}")
        self.likelihood = likelihood
        self.decoder = HiddenLayers(n_latent, n_hidden, n_layers, dropout_rate=0.0)
        self.scale = nn.Sequential(nn.Linear(n_hidden, n_input), nn.Softmax(dim=-1))
        self.zi_logits = nn.Linear(n_hidden, n_input)
        self.log_theta = nn.Parameter(torch.randn(n_input))

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """log1p of the counts."""
        return torch.log1p(x)

    def generative(self, z: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode ``z`` with the library size observed in ``x``.

        Parameters
        ----------
        z
            ``(n, n_latent)`` latent codes.
        x
            ``(n, n_input)`` counts of the same spots.

        Returns
        -------
        dict
            ``scale`` (gene proportions, rows sum to 1), ``mu`` (scale times
            the library size), ``theta`` (inverse dispersion per gene) and
            ``zi_logits`` (logits of a structural zero).
        """
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
        """Elementwise ZINB or NB log-probability of the counts ``x``."""
        if self.likelihood == "nb":
            return nb_log_prob(x, gen["mu"], gen["theta"])
        return zinb_log_prob(x, gen["mu"], gen["theta"], gen["zi_logits"])

    def log_normalized(self, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log1p(1e4 * scale)``: the reconstruction in log-normalized space."""
        return torch.log1p(1e4 * gen["scale"])
