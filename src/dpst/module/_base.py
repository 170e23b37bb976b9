"""What both backbones share: the encoder, the prior, the per-spot loss terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dpst._checks import check_int, check_real
from dpst.module._blocks import Encoder

# The keys of the tensor dictionary every method of a module takes (scvi-tools' style):
X_KEY = "x"  # (n, n_input) float32 model input: log-normalized expression (VAE) or counts (scVI)
BATCH_KEY = "batch"  # (n,) int64 batch code of each spot; absent when the module has no batches
NEIGHBORS_KEY = "x_neighbors"  # (n, n_input) mean input of each spot's spatial neighbours; with encode_neighbors


def take_rows(tensors: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """The first ``n`` rows of every tensor of a dictionary (of spots, or of a module's outputs)."""
    return {key: value[:n] for key, value in tensors.items()}


class VAEModule(nn.Module):
    """A VAE over spots with a standard normal prior on z.

    Every method takes a dictionary of tensors (:data:`X_KEY`, the model input,
    and with ``n_batch > 0`` :data:`BATCH_KEY`, each spot's batch code), as
    scvi-tools' modules do, so that covariates reach the networks without
    changing a signature. Subclasses define how the input becomes the encoder's
    input (:meth:`encoder_input`), the decoder (:meth:`generative`), the
    observation log-likelihood (:meth:`log_likelihood`) and the reconstruction
    in log-normalized space (:meth:`log_normalized`). The training loop
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
    n_batch
        Number of batches; with more than 0, each spot's batch (one-hot) is
        appended to the encoder's and the decoder's input. 0: no batches, and
        the networks are exactly those of a module without them.
    neighborhood
        ``"none"``; ``"encoder"``: the encoder also reads the mean input of each
        spot's spatial neighbours (:data:`NEIGHBORS_KEY`, through the same
        :meth:`encoder_input`), the generative model p(x | z) is unchanged;
        ``"reconstructed"``: besides, the decoder reconstructs that mean, p(x,
        x_neighbours | z), so z describes the spot and its neighbourhood.

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
        n_batch: int = 0,
        neighborhood: str = "none",
    ):
        super().__init__()
        n_input = check_int("n_input (number of genes)", n_input, minimum=1)
        n_latent = check_int("n_latent", n_latent, minimum=1)
        n_hidden = check_int("n_hidden", n_hidden, minimum=1)
        n_layers = check_int("n_layers", n_layers, minimum=1)
        # dropout 1 zeroes every hidden unit: the encoder would see no input
        dropout_rate = check_real("dropout_rate", dropout_rate, at_least=0, below=1)
        self.n_batch = check_int("n_batch", n_batch, minimum=0)
        self.n_input = n_input
        self.n_latent = n_latent
        if neighborhood not in ("none", "encoder", "reconstructed"):
            raise ValueError(f"neighborhood must be 'none', 'encoder' or 'reconstructed', got {neighborhood!r}")
        self.neighborhood = neighborhood
        self.encode_neighbors = neighborhood != "none"
        self.reconstructs_neighbors = neighborhood == "reconstructed"
        n_encoded = n_input * (2 if self.encode_neighbors else 1) + self.n_batch
        self.encoder = Encoder(n_encoded, n_latent, n_hidden, n_layers, dropout_rate)

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder sees of the input ``x``: ``x`` itself unless a subclass transforms it."""
        return x

    def with_batch(self, h: torch.Tensor, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """``h`` with each spot's batch one-hot appended (``h`` itself without batches)."""
        if not self.n_batch:
            return h
        one_hot = F.one_hot(tensors[BATCH_KEY], self.n_batch).to(h.dtype)
        return torch.cat([h, one_hot], dim=-1)

    def inference(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Encode a batch of spots.

        Parameters
        ----------
        tensors
            :data:`X_KEY`, the ``(n, n_input)`` input of the backbone,
            :data:`BATCH_KEY` with batches and :data:`NEIGHBORS_KEY` with
            ``encode_neighbors``.

        Returns
        -------
        dict
            ``qz_mean`` and ``qz_var``, the posterior's mean and variance, and
            ``z``, one reparameterized sample; each ``(n, n_latent)``.
        """
        encoded = self.encoder_input(tensors[X_KEY])
        if self.encode_neighbors:
            encoded = torch.cat([encoded, self.encoder_input(tensors[NEIGHBORS_KEY])], dim=-1)
        encoded = self.with_batch(encoded, tensors)
        qz_mean, qz_var, z = self.encoder(encoded)
        return {"qz_mean": qz_mean, "qz_var": qz_var, "z": z}

    def generative(self, z: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decode latent codes into the parameters of the observation model.

        Parameters
        ----------
        z
            ``(n, n_latent)`` latent codes.
        tensors
            The same spots' tensors (scVI reads the library size from the
            input; with batches, the decoder reads the batch).

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

    def neighborhood_log_likelihood(self, x_neighbors: torch.Tensor, gen: dict[str, torch.Tensor]) -> torch.Tensor:
        """Elementwise log-likelihood of the neighbourhood's mean input (``neighborhood="reconstructed"``).

        Parameters
        ----------
        x_neighbors
            ``(n, n_input)`` mean input of each spot's neighbours.
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

    def forward(self, tensors: dict[str, torch.Tensor], use_mean: bool = False):
        """Encode, then decode the sampled code (or the posterior mean with ``use_mean``).

        Parameters
        ----------
        tensors
            The spots' tensors (see :meth:`inference`).
        use_mean
            Decode the posterior mean instead of the sample.

        Returns
        -------
        tuple of dict
            ``(inf, gen)``: the outputs of :meth:`inference` and :meth:`generative`.
        """
        inf = self.inference(tensors)
        gen = self.generative(inf["qz_mean"] if use_mean else inf["z"], tensors)
        return inf, gen

    def loss_terms(
        self, tensors: dict[str, torch.Tensor], inf: dict[str, torch.Tensor], gen: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per-spot terms of the negative ELBO.

        Parameters
        ----------
        tensors
            The spots' tensors.
        inf, gen
            The outputs of :meth:`inference` and :meth:`generative` for them.

        Returns
        -------
        dict
            ``reconstruction``, the negative log-likelihood summed over genes,
            and ``kl``, KL(q(z | x) || N(0, I)); each of shape ``(n,)``.
        """
        reconstruction = -self.log_likelihood(tensors[X_KEY], gen).sum(-1)
        if self.reconstructs_neighbors:
            reconstruction = reconstruction - self.neighborhood_log_likelihood(tensors[NEIGHBORS_KEY], gen).sum(-1)
        mean, var = inf["qz_mean"], inf["qz_var"]
        kl = 0.5 * (var + mean**2 - 1.0 - torch.log(var)).sum(-1)
        return {"reconstruction": reconstruction, "kl": kl}
