"""The scVI backbone (Lopez et al. 2018) on raw counts, as scvi-tools' ``SCVI`` defaults."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ._base import BATCH_KEY, NEIGHBORS_KEY, X_KEY, VAEModule
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
    n_input, n_latent, n_hidden, n_layers, dropout_rate, n_batch, neighborhood
        As for :class:`VAEModule`. A reconstructed neighbourhood (its mean
        counts) has its own softmax scale and a negative binomial with the
        spots' dispersion and the neighbourhood's mean library size.
    likelihood
        ``"zinb"`` or ``"nb"``.
    dispersion
        ``"gene"``: one inverse dispersion per gene; ``"gene-batch"``: one per
        gene and batch (scvi-tools' names).

    Raises
    ------
    ValueError
        When ``likelihood`` or ``dispersion`` is none of its values, or
        ``"gene-batch"`` is asked without batches.
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        n_batch: int = 0,
        neighborhood: str = "none",
        likelihood: Literal["zinb", "nb"] = "zinb",
        dispersion: Literal["gene", "gene-batch"] = "gene",
    ):
        super().__init__(n_input, n_latent, n_hidden, n_layers, dropout_rate, n_batch, neighborhood)
        if likelihood not in ("zinb", "nb"):
            raise ValueError(f"likelihood must be 'zinb' or 'nb', got {likelihood!r}")
        if dispersion not in ("gene", "gene-batch"):
            raise ValueError(f"dispersion must be 'gene' or 'gene-batch', got {dispersion!r}")
        if dispersion == "gene-batch" and not self.n_batch:
            raise ValueError("dispersion='gene-batch' needs batches (batch_key)")
        self.likelihood, self.dispersion = likelihood, dispersion
        self.decoder = HiddenLayers(n_latent + self.n_batch, n_hidden, n_layers, dropout_rate=0.0)
        self.scale = nn.Sequential(nn.Linear(n_hidden, n_input), nn.Softmax(dim=-1))
        self.zi_logits = nn.Linear(n_hidden, n_input)
        per_batch = (self.n_batch,) if dispersion == "gene-batch" else ()
        self.log_theta = nn.Parameter(torch.randn(*per_batch, n_input))
        if self.reconstructs_neighbors:  # built last: without it every other weight is drawn as before
            self.neighbors_scale = nn.Sequential(nn.Linear(n_hidden, n_input), nn.Softmax(dim=-1))

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """log1p of the counts."""
        return torch.log1p(x)

    def generative(self, z: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decode ``z`` with the library size observed in the same spots' counts.

        Parameters
        ----------
        z
            ``(n, n_latent)`` latent codes.
        tensors
            The same spots' tensors: counts, and batch codes with batches.

        Returns
        -------
        dict
            ``scale`` (gene proportions, rows sum to 1), ``mu`` (scale times
            the library size), ``theta`` (inverse dispersion per gene, or per
            spot and gene with ``"gene-batch"``) and ``zi_logits`` (logits of a
            structural zero).
        """
        h = self.decoder(self.with_batch(z, tensors))
        scale = self.scale(h)
        library = tensors[X_KEY].sum(-1, keepdim=True)  # observed library size
        log_theta = self.log_theta[tensors[BATCH_KEY]] if self.dispersion == "gene-batch" else self.log_theta
        gen = {
            "scale": scale,
            "mu": library * scale,
            "theta": torch.exp(log_theta),
            "zi_logits": self.zi_logits(h),
        }
        if self.reconstructs_neighbors:
            neighbors_library = tensors[NEIGHBORS_KEY].sum(-1, keepdim=True)
            gen["neighbors_mu"] = neighbors_library * self.neighbors_scale(h)
        return gen

    def log_likelihood(self, x: torch.Tensor, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        """Elementwise ZINB or NB log-probability of the counts ``x``."""
        if self.likelihood == "nb":
            return nb_log_prob(x, gen["mu"], gen["theta"])
        return zinb_log_prob(x, gen["mu"], gen["theta"], gen["zi_logits"])

    def neighborhood_log_likelihood(self, x_neighbors: torch.Tensor, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        """Elementwise NB log-probability of the neighbourhood's mean counts (lgamma extends it to non-integers)."""
        return nb_log_prob(x_neighbors, gen["neighbors_mu"], gen["theta"])

    def log_normalized(self, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log1p(1e4 * scale)``: the reconstruction in log-normalized space."""
        return torch.log1p(1e4 * gen["scale"])
