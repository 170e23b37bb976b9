"""The Gaussian VAE backbone on log-normalized expression."""

from __future__ import annotations

import torch
from torch import nn

from ._base import VAEModule
from ._blocks import HiddenLayers
from ._likelihoods import gaussian_log_prob


class GaussianVAEModule(VAEModule):
    """The Gaussian VAE backbone of :class:`dpst.DPVAE`.

    Input: log1p of counts normalized to 1e4 (highly variable genes).
    Decoder: hidden layers (no dropout), then a linear mean; one learned
    variance per gene.

    Parameters
    ----------
    n_input, n_latent, n_hidden, n_layers, dropout_rate, n_batch, neighborhood
        As for :class:`VAEModule`. With ``"reconstructed"`` the mean and the
        variances cover the spot's genes, then its neighbourhood's.
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
    ):
        super().__init__(n_input, n_latent, n_hidden, n_layers, dropout_rate, n_batch, neighborhood)
        n_output = n_input * (2 if self.reconstructs_neighbors else 1)
        self.decoder = HiddenLayers(n_latent + self.n_batch, n_hidden, n_layers, dropout_rate=0.0)
        self.mean = nn.Linear(n_hidden, n_output)
        self.log_var = nn.Parameter(torch.zeros(n_output))

    def generative(self, z: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decode ``z``.

        Parameters
        ----------
        z
            ``(n, n_latent)`` latent codes.
        tensors
            The same spots' tensors: the decoder reads their batch, if any.

        Returns
        -------
        dict
            ``mean`` and ``log_var``, each ``(n, n_input)``; with a reconstructed
            neighbourhood also ``neighbors_mean`` and ``neighbors_log_var``.
        """
        h = self.decoder(self.with_batch(z, tensors))
        mean, log_var = self.mean(h), self.log_var.expand(len(z), -1)
        if not self.reconstructs_neighbors:
            return {"mean": mean, "log_var": log_var}
        own, neighbors = mean.split(self.n_input, dim=-1)
        own_log_var, neighbors_log_var = log_var.split(self.n_input, dim=-1)
        return {
            "mean": own,
            "log_var": own_log_var,
            "neighbors_mean": neighbors,
            "neighbors_log_var": neighbors_log_var,
        }

    def log_likelihood(self, x: torch.Tensor, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        """Elementwise Gaussian log-density of ``x`` (see :func:`gaussian_log_prob`)."""
        return gaussian_log_prob(x, gen["mean"], gen["log_var"])

    def neighborhood_log_likelihood(self, x_neighbors: torch.Tensor, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        """Elementwise Gaussian log-density of the neighbourhood's mean expression."""
        return gaussian_log_prob(x_neighbors, gen["neighbors_mean"], gen["neighbors_log_var"])

    def log_normalized(self, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        """The decoder mean: the input is already log-normalized."""
        return gen["mean"]
