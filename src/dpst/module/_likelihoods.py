"""Log-likelihoods of the observation models, elementwise (spots x genes)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Guards log(0) when a rate or a dispersion underflows.
_EPS = 1e-8
# Above this fraction of non-zero counts, gathering them costs more than the dense lgamma and
# digamma save (measured break-even 0.37-0.42 at 128 and 2,700 spots x 2,000 genes, 1 thread).
SPARSE_LGAMMA_MAX_DENSITY = 0.35


class _LgammaOfCounts(torch.autograd.Function):
    """``lgamma(x + theta)`` with lgamma and digamma evaluated on the non-zero counts only.

    ``x`` (contiguous counts, no gradient) has the output's shape; ``theta``, of
    ``x``'s dtype, broadcasts to it; ``nonzero`` holds the flat indices of the
    non-zero counts. Where a count is 0, ``x + theta`` is exactly ``theta``:
    lgamma (forward) and digamma (backward, the most expensive op of a CPU
    training step) are evaluated once per gene there. Every element gets the
    bits of ``torch.lgamma(x + theta)`` and of its autograd backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, theta: torch.Tensor, nonzero: torch.Tensor) -> torch.Tensor:
        counts = x.reshape(-1)[nonzero]
        out = torch.lgamma(theta).expand(x.shape).contiguous().view(-1)  # a new tensor: written below
        out[nonzero] = torch.lgamma(counts + theta.expand(x.shape).reshape(-1)[nonzero])
        ctx.save_for_backward(theta, nonzero, counts)
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        theta, nonzero, counts = ctx.saved_tensors
        # recomputed from theta, not saved: under create_graph the second derivative sees it
        shifted = counts + theta.expand(grad.shape).reshape(-1)[nonzero]
        digamma = torch.digamma(theta).expand(grad.shape).contiguous().view(-1)
        digamma = digamma.index_put((nonzero,), torch.digamma(shifted))
        # the product and the sum over spots are autograd's own for lgamma(x + theta)
        return None, (grad * digamma.view(grad.shape)).sum_to_size(theta.shape), None


def _count_lgammas(x: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``lgamma(x + theta)`` and ``lgamma(x + 1)``; evaluated sparsely on sparse CPU counts.

    Counts are mostly zero, and lgamma(1) is exactly 0. The sparse path gives the
    dense formula's bits for contiguous ``x`` (the layout the models pass). On a
    GPU the dense kernels are cheap, and finding the non-zero entries would wait
    for the device.
    """
    sparse = (
        x.device.type == "cpu"
        and not x.requires_grad
        and x.is_contiguous()
        and x.dtype in (torch.float32, torch.float64)
        and theta.dtype == x.dtype
        and torch.broadcast_shapes(x.shape, theta.shape) == x.shape
    )
    flat = x.view(-1) if sparse else x
    # numpy counts 10x faster than torch.count_nonzero on one thread (a view of x, no copy)
    if not sparse or np.count_nonzero(flat.numpy()) > SPARSE_LGAMMA_MAX_DENSITY * flat.numel():
        return torch.lgamma(x + theta), torch.lgamma(x + 1.0)
    nonzero = flat.nonzero().squeeze(1)
    log_factorial = torch.zeros_like(flat)
    log_factorial[nonzero] = torch.lgamma(flat[nonzero] + 1.0)
    return _LgammaOfCounts.apply(x, theta, nonzero), log_factorial.view(x.shape)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Elementwise Gaussian log-density, log N(x | mean, exp(log_var)).

    Parameters
    ----------
    x
        Observations.
    mean
        Means, broadcastable to ``x``.
    log_var
        Log-variances, broadcastable to ``x``.

    Returns
    -------
    torch.Tensor
        Log-densities, the shape of ``x``.
    """
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def nb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Elementwise negative binomial log-probability.

    The variance is ``mu + mu**2 / theta``. A small constant guards the
    logarithms when ``mu`` or ``theta`` underflow. On the CPU, with at most 35%
    non-zero counts, lgamma and digamma run at the non-zero counts only (a custom
    autograd function, not supported by ``torch.func`` transforms), with the
    same result bit for bit.

    Parameters
    ----------
    x
        Counts.
    mu
        Means, broadcastable to ``x``.
    theta
        Inverse dispersions, broadcastable to ``x``.

    Returns
    -------
    torch.Tensor
        Log-probabilities, the shape of ``x``.
    """
    log_theta_mu = torch.log(theta + mu + _EPS)
    lgamma_shifted, log_factorial = _count_lgammas(x, theta)
    return (
        lgamma_shifted
        - torch.lgamma(theta)
        - log_factorial
        + theta * (torch.log(theta + _EPS) - log_theta_mu)
        + x * (torch.log(mu + _EPS) - log_theta_mu)
    )


def zinb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise zero-inflated negative binomial log-probability.

    With probability ``sigmoid(zi_logits)`` a count is a structural zero;
    otherwise it is drawn from the negative binomial of :func:`nb_log_prob`.

    Parameters
    ----------
    x
        Counts.
    mu, theta
        Mean and inverse dispersion of the negative binomial part.
    zi_logits
        Logits of the structural-zero probability.

    Returns
    -------
    torch.Tensor
        Log-probabilities, the shape of ``x``.
    """
    log_pi = F.logsigmoid(zi_logits)  # log P(structural zero)
    log_not_pi = F.logsigmoid(-zi_logits)
    nb = nb_log_prob(x, mu, theta)
    nb_zero = theta * (torch.log(theta + _EPS) - torch.log(theta + mu + _EPS))
    at_zero = torch.logaddexp(log_pi, log_not_pi + nb_zero)
    return torch.where(x < 0.5, at_zero, log_not_pi + nb)
