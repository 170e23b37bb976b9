"""What both backbones share: the encoder, the prior, the per-spot loss terms."""

from __future__ import annotations

import torch
from torch import nn

from dpst._checks import check_int, check_real
from dpst.module._blocks import Encoder


class VAEModule(nn.Module):
    """A VAE over spots with a standard normal prior on z.

    Subclasses define how the input becomes the encoder's input
    (:meth:`encoder_input`), the decoder (:meth:`generative`), the observation
    log-likelihood (:meth:`log_likelihood`) and the reconstruction in
    log-normalized space (:meth:`log_normalized`). The training loop
    (:func:`dpst.train.train_module`) needs nothing else, which is how both
    backbones share it and the penalty.

    Parameters
    ----------
    n_input
        Number of genes.
    n_latent
        Dimension of the latent space.
    n_hidden
        Units per hidden layer of the encoder (and of the subclasses' decoders).
    n_layers
        Number of hidden layers.
    dropout_rate
        Dropout after each hidden layer of the encoder, in ``[0, 1)``.

    Raises
    ------
    TypeError, ValueError
        When a size is not a positive integer or the dropout rate is outside
        ``[0, 1)``; the message names the parameter.
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
        """What the encoder sees of the input ``x``: ``x`` itself unless a subclass transforms it."""
        return x

    def inference(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode a batch of spots.

        Parameters
        ----------
        x
            ``(n, n_input)`` input of the backbone.

        Returns
        -------
        dict
            ``qz_mean`` and ``qz_var``, the posterior's mean and variance, and
            ``z``, one reparameterized sample; each ``(n, n_latent)``.
        """
        qz_mean, qz_var, z = self.encoder(self.encoder_input(x))
        return {"qz_mean": qz_mean, "qz_var": qz_var, "z": z}

    def generative(self, z: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode latent codes into the parameters of the observation model.

        Parameters
        ----------
        z
            ``(n, n_latent)`` latent codes.
        x
            ``(n, n_input)`` input of the same spots (scVI reads the library
            size from it).

        Returns
        -------
        dict
            The decoder's outputs, named by the subclass.

        Raises
        ------
        NotImplementedError
            In this base class.
        """
        raise NotImplementedError

    def log_likelihood(self, x: torch.Tensor, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        """Elementwise log-likelihood of ``x`` under the decoder's outputs ``gen``.

        Parameters
        ----------
        x
            ``(n, n_input)`` observations.
        gen
            Outputs of :meth:`generative`.

        Returns
        -------
        torch.Tensor
            ``(n, n_input)`` log-likelihoods.

        Raises
        ------
        NotImplementedError
            In this base class.
        """
        raise NotImplementedError

    def log_normalized(self, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reconstruction in log1p(1e4-normalized) space.

        Parameters
        ----------
        gen
            Outputs of :meth:`generative`.

        Returns
        -------
        torch.Tensor
            ``(n, n_input)`` reconstruction.

        Raises
        ------
        NotImplementedError
            In this base class.
        """
        raise NotImplementedError

    def forward(self, x: torch.Tensor, use_mean: bool = False):
        """Encode, then decode the sampled code (or the posterior mean with ``use_mean``).

        Parameters
        ----------
        x
            ``(n, n_input)`` input.
        use_mean
            Decode the posterior mean instead of the sample.

        Returns
        -------
        tuple of dict
            ``(inf, gen)``: the outputs of :meth:`inference` and :meth:`generative`.
        """
        inf = self.inference(x)
        gen = self.generative(inf["qz_mean"] if use_mean else inf["z"], x)
        return inf, gen

    def loss_terms(
        self, x: torch.Tensor, inf: dict[str, torch.Tensor], gen: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per-spot terms of the negative ELBO.

        Parameters
        ----------
        x
            ``(n, n_input)`` input.
        inf, gen
            The outputs of :meth:`inference` and :meth:`generative` for ``x``.

        Returns
        -------
        dict
            ``reconstruction``, the negative log-likelihood summed over genes,
            and ``kl``, KL(q(z | x) || N(0, I)); each of shape ``(n,)``.
        """
        reconstruction = -self.log_likelihood(x, gen).sum(-1)
        mean, var = inf["qz_mean"], inf["qz_var"]
        kl = 0.5 * (var + mean**2 - 1.0 - torch.log(var)).sum(-1)
        return {"reconstruction": reconstruction, "kl": kl}
