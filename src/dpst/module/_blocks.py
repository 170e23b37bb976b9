"""The fully connected building blocks shared by both backbones."""

from __future__ import annotations

import torch
from torch import nn


class HiddenLayers(nn.Sequential):
    """``n_layers`` x (Linear -> BatchNorm -> ReLU -> Dropout).

    BatchNorm momentum 0.01 and eps 1e-3 follow scvi-tools, so our scVI matches it.

    Parameters
    ----------
    n_in
        Input features.
    n_hidden
        Units of each layer.
    n_layers
        Number of layers.
    dropout_rate
        Dropout after each layer; 0 adds no dropout layer.
    use_batch_norm
        Add batch normalization after each linear layer.
    """

    def __init__(
        self,
        n_in: int,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        use_batch_norm: bool = True,
    ):
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(n_in if i == 0 else n_hidden, n_hidden))
            if use_batch_norm:
                layers.append(nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3))
            layers.append(nn.ReLU())
            if dropout_rate > 0:
                layers.append(nn.Dropout(dropout_rate))
        super().__init__(*layers)


class Encoder(nn.Module):
    """Gaussian posterior q(z | x) = N(mean, var) with reparameterized sampling.

    :class:`HiddenLayers`, then one linear layer for the mean and one for the
    log-variance. The variance is floored at ``VAR_EPS`` = 1e-4, as in
    scvi-tools.

    Parameters
    ----------
    n_in
        Input features.
    n_latent
        Dimension of the latent space.
    n_hidden, n_layers, dropout_rate, use_batch_norm
        Passed to :class:`HiddenLayers`.
    """

    # Floor on the posterior variance, as in scvi-tools, keeps log-variances finite.
    VAR_EPS = 1e-4

    def __init__(
        self,
        n_in: int,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        use_batch_norm: bool = True,
    ):
        super().__init__()
        self.hidden = HiddenLayers(n_in, n_hidden, n_layers, dropout_rate, use_batch_norm)
        self.mean = nn.Linear(n_hidden, n_latent)
        self.log_var = nn.Linear(n_hidden, n_latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Posterior of a batch, and one sample from it.

        Parameters
        ----------
        x
            ``(n, n_in)`` input.

        Returns
        -------
        tuple of torch.Tensor
            ``(qz_mean, qz_var, z)``: mean, variance and a reparameterized
            sample, each ``(n, n_latent)``.
        """
        h = self.hidden(x)
        qz_mean = self.mean(h)
        qz_var = torch.exp(self.log_var(h)) + self.VAR_EPS
        z = qz_mean + qz_var.sqrt() * torch.randn_like(qz_mean)
        return qz_mean, qz_var, z
