"""The count likelihoods: right values, and the sparse CPU path gives the dense path's bits."""

import numpy as np
import pytest
import scipy.stats
import torch

from dpst.module import _likelihoods, nb_log_prob, zinb_log_prob


@pytest.fixture
def sparse_calls(monkeypatch):
    """Counts the calls that take the sparse path."""
    calls = []
    sparse_apply = _likelihoods._LgammaOfCounts.apply

    def counted(*args):
        calls.append(args[0].shape)
        return sparse_apply(*args)

    monkeypatch.setattr(_likelihoods._LgammaOfCounts, "apply", counted)
    return calls


def _counts_and_parameters(density: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    shape = (64, 300)
    counts = torch.poisson(torch.full(shape, 3.0), generator=gen) + 1.0
    x = torch.where(torch.rand(shape, generator=gen) < density, counts, torch.zeros(shape))
    mu = (torch.rand(shape, generator=gen) * 5 + 0.01).requires_grad_()
    theta = torch.exp(torch.randn(shape[1], generator=gen)).requires_grad_()
    zi_logits = torch.randn(shape, generator=gen).requires_grad_()
    return x, mu, theta, zi_logits


def _dense_nb(x, mu, theta):
    """The textbook formula, every element through torch.lgamma and its autograd."""
    eps = 1e-8
    log_theta_mu = torch.log(theta + mu + eps)
    return (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
        + theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
    )


def _value_and_grads(fn, inputs):
    out = fn()
    # a weighted sum, so each element's gradient is different
    weights = torch.linspace(-1.0, 2.0, out.numel()).view(out.shape)
    grads = torch.autograd.grad((out * weights).sum(), inputs)
    return out.detach(), grads


@pytest.mark.parametrize(("density", "sparse"), [(0.0, True), (0.05, True), (0.3, True), (1.0, False)])
def test_nb_is_bitwise_the_dense_formula(density, sparse, sparse_calls):
    x, mu, theta, _ = _counts_and_parameters(density)
    got, got_grads = _value_and_grads(lambda: nb_log_prob(x, mu, theta), (mu, theta))
    want, want_grads = _value_and_grads(lambda: _dense_nb(x, mu, theta), (mu, theta))
    assert len(sparse_calls) == sparse
    assert torch.equal(got, want)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert torch.equal(g, w)


@pytest.mark.parametrize("density", [0.05, 0.3])
def test_zinb_gradients_are_bitwise_those_of_the_dense_formula(density, sparse_calls):
    x, mu, theta, zi_logits = _counts_and_parameters(density)

    def zinb_with(nb_log_prob):
        # the library's order of operations: autograd accumulates theta's gradient in that order
        log_pi, log_not_pi = torch.nn.functional.logsigmoid(zi_logits), torch.nn.functional.logsigmoid(-zi_logits)
        nb = nb_log_prob(x, mu, theta)
        nb_zero = theta * (torch.log(theta + 1e-8) - torch.log(theta + mu + 1e-8))
        at_zero = torch.logaddexp(log_pi, log_not_pi + nb_zero)
        return torch.where(x < 0.5, at_zero, log_not_pi + nb)

    inputs = (mu, theta, zi_logits)
    got, got_grads = _value_and_grads(lambda: zinb_log_prob(x, mu, theta, zi_logits), inputs)
    want, want_grads = _value_and_grads(lambda: zinb_with(_dense_nb), inputs)
    assert len(sparse_calls) == 1
    assert torch.equal(got, want)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert torch.equal(g, w)


def test_nb_matches_scipy():
    x, mu, theta, _ = _counts_and_parameters(0.3)
    mu, theta = mu.detach().double(), theta.detach().double()
    got = nb_log_prob(x.double(), mu, theta).numpy()
    # scipy's nbinom(n, p): n = theta, p = theta / (theta + mu)
    want = scipy.stats.nbinom.logpmf(x.numpy(), theta.numpy(), (theta / (theta + mu)).numpy())
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_zinb_matches_its_mixture():
    x, mu, theta, zi_logits = _counts_and_parameters(0.3)
    x, mu, theta, zi = x.double(), mu.detach().double(), theta.detach().double(), zi_logits.detach().double()
    pi = torch.sigmoid(zi).numpy()
    nb = scipy.stats.nbinom.pmf(x.numpy(), theta.numpy(), (theta / (theta + mu)).numpy())
    want = np.log(pi * (x.numpy() == 0) + (1 - pi) * nb)
    np.testing.assert_allclose(zinb_log_prob(x, mu, theta, zi).numpy(), want, rtol=1e-6, atol=1e-6)


def test_second_derivatives_match_the_dense_formula(sparse_calls):
    x, mu, theta, _ = _counts_and_parameters(0.1)
    x, mu, theta = x.double(), mu.detach().double(), theta.detach().double().requires_grad_()

    def hessian_diagonal(nb):
        (grad,) = torch.autograd.grad(nb(x, mu, theta).sum(), theta, create_graph=True)
        return torch.autograd.grad(grad.sum(), theta)[0]

    got, want = hessian_diagonal(nb_log_prob), hessian_diagonal(_dense_nb)
    assert len(sparse_calls) == 1
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-10)


def test_mixed_dtypes_and_layouts_take_the_dense_path(sparse_calls):
    x, mu, theta, _ = _counts_and_parameters(0.1)
    for counts, dispersion in ((x.double(), theta), (x.long(), theta), (x.T.contiguous().T, theta)):
        got = nb_log_prob(counts, mu, dispersion)
        assert torch.equal(got, _dense_nb(counts, mu, dispersion))
    assert sparse_calls == []


def test_per_element_dispersion_and_differentiable_counts(sparse_calls):
    x, mu, _, _ = _counts_and_parameters(0.3)
    theta = torch.exp(torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).requires_grad_()
    got, got_grads = _value_and_grads(lambda: nb_log_prob(x, mu, theta), (mu, theta))
    want, want_grads = _value_and_grads(lambda: _dense_nb(x, mu, theta), (mu, theta))
    assert torch.equal(got, want)
    assert all(torch.equal(g, w) for g, w in zip(got_grads, want_grads, strict=True))
    assert len(sparse_calls) == 1  # a per-element theta broadcasts too
    # a gradient with respect to the counts themselves (lgamma(x + 1) included): the dense path
    x_grad = x.clone().requires_grad_()
    (g_x,) = torch.autograd.grad(nb_log_prob(x_grad, mu.detach(), theta.detach()).sum(), x_grad)
    (w_x,) = torch.autograd.grad(_dense_nb(x_grad, mu.detach(), theta.detach()).sum(), x_grad)
    assert torch.equal(g_x, w_x)
    assert len(sparse_calls) == 1
