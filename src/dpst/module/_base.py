"""What both backbones share: the encoder, the prior, the per-spot loss terms."""

from __future__ import annotations

import torch
from torch import nn

from ._blocks import Encoder
from .._checks import check_int, check_real


class VAEModule(nn.Module):
    """A VAE over spots with a standard normal prior on z.

    Subclasses define how the input becomes the encoder's input
    (``encoder_input``), the decoder (``generative``), the observation
    log-likelihood (``log_likelihood``) and the reconstruction in
    log-normalized space (``log_normalized``).
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int = 10,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
    ):
        super().__init__()
        n_input = check_int("n_input (number of genes)", n_input, minimum=1)
        n_latent = check_int("n_latent", n_latent, minimum=1)
        n_hidden = check_int("n_hidden", n_hidden, minimum=1)
        n_layers = check_int("n_layers", n_layers, minimum=1)
        # dropout 1 zeroes every hidden unit: the encoder would see no input
        dropout_rate = check_real("dropout_rate", dropout_rate, at_least=0, below=1)
        self.n_input = n_input
        self.n_latent = n_latent
        self.encoder = Encoder(n_input, n_latent, n_hidden, n_layers, dropout_rate)

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inference(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        qz_mean, qz_var, z = self.encoder(self.encoder_input(x))
        return {"qz_mean": qz_mean, "qz_var": qz_var, "z": z}

    def generative(self, z: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def log_likelihood(self, x: torch.Tensor, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def log_normalized(self, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, use_mean: bool = False):
        inf = self.inference(x)
        gen = self.generative(inf["qz_mean"] if use_mean else inf["z"], x)
        return inf, gen

    def loss_terms(
        self, x: torch.Tensor, inf: dict[str, torch.Tensor], gen: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per-spot reconstruction NLL and KL(q(z|x) || N(0, I)), each of shape (n,)."""
        reconstruction = -self.log_likelihood(x, gen).sum(-1)
        mean, var = inf["qz_mean"], inf["qz_var"]
        kl = 0.5 * (var + mean**2 - 1.0 - torch.log(var)).sum(-1)
        return {"reconstruction": reconstruction, "kl": kl}
