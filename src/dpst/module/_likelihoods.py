"""Log-likelihoods of the observation models, elementwise (spots x genes)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Guards log(0) when a rate or a dispersion underflows.
_EPS = 1e-8


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
    logarithms when ``mu`` or ``theta`` underflow.

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
    return (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
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
