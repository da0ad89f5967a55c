"""The objective: the negative ELBO against a hand computation, and the importance-weighted bound
(Burda et al. 2015) against the ELBO it tightens, on real MNIST digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vae import VAE
from vae.config import build_config
from vae.data import DataSettings, load_splits
from vae.imaging import as_float
from vae.loss import ELBOTotals, bernoulli_nll, importance_weighted_nll, negative_elbo, softplus

LOGITS = [[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]]
PIXELS = [[1.0, 0.0, 0.25], [0.0, 1.0, 0.75]]  # grayscale values in [0, 1] are Bernoulli means
MU = [[0.5, -1.0], [0.0, 2.0]]
LOGVAR = [[0.0, -0.5], [1.0, -2.0]]


def hand_recon(logits: list[float], pixels: list[float]) -> float:
    """-Σ x log p + (1 - x) log(1 - p), with p = sigmoid(logit)."""
    total = 0.0
    for logit, x in zip(logits, pixels, strict=True):
        p = 1 / (1 + math.exp(-logit))
        total -= x * math.log(p) + (1 - x) * math.log(1 - p)
    return total


def hand_kl(mu: list[float], logvar: list[float]) -> float:
    """KL(N(mu, sigma²) || N(0, 1)) = ½ (mu² + sigma² - 1 - log sigma²), summed over dimensions."""
    return sum(0.5 * (m * m + math.exp(lv) - 1 - lv) for m, lv in zip(mu, logvar, strict=True))


@pytest.mark.parametrize("kl_weight", [1.0, 0.3, 0.0])
def test_negative_elbo_matches_a_hand_computation(kl_weight):
    parts = negative_elbo(
        torch.tensor(LOGITS), torch.tensor(PIXELS).view(2, 1, 1, 3), torch.tensor(MU), torch.tensor(LOGVAR), kl_weight
    )
    assert parts.loss.shape == parts.recon.shape == parts.kl.shape == (2,)
    for i in range(2):
        recon, kl = hand_recon(LOGITS[i], PIXELS[i]), hand_kl(MU[i], LOGVAR[i])
        assert parts.recon[i].item() == pytest.approx(recon, rel=1e-6)
        assert parts.kl[i].item() == pytest.approx(kl, rel=1e-6)
        assert parts.loss[i].item() == pytest.approx(recon + kl_weight * kl, rel=1e-6)


def test_the_reconstruction_term_is_torchs_binary_cross_entropy_with_its_gradient():
    """vae.loss.softplus (written with vectorised kernels) against torch's own, over the logits a decoder can give."""
    logits = torch.cat([torch.linspace(-120, 120, 2401), torch.tensor([0.0, -1e-6, 1e-6, 88.0, -88.0])])
    logits = logits[torch.randperm(len(logits), generator=torch.Generator().manual_seed(0))].view(6, -1)
    x = torch.rand(logits.shape, generator=torch.Generator().manual_seed(1))
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    mine = bernoulli_nll(ours, x)
    torchs = F.binary_cross_entropy_with_logits(theirs, x, reduction="none").sum(1)
    assert torch.allclose(mine, torchs, rtol=1e-6, atol=1e-4)  # 401 pixels a row
    assert torch.allclose(softplus(logits), F.softplus(logits), rtol=1e-6, atol=1.2e-7)
    (mine.sum() + torchs.sum()).backward()
    assert torch.allclose(ours.grad, theirs.grad, atol=1e-6) and torch.isfinite(ours.grad).all()


def test_negative_elbo_is_computed_in_float32_from_half_precision_inputs():
    args = [torch.tensor(LOGITS), torch.tensor(PIXELS), torch.tensor(MU), torch.tensor(LOGVAR)]
    full = negative_elbo(*args)
    half = negative_elbo(*(a.bfloat16() for a in args))
    assert half.loss.dtype == torch.float32
    assert torch.allclose(half.loss, full.loss, rtol=2e-2)


def test_kl_is_zero_only_at_the_prior():
    zeros = torch.zeros(1, 4)
    parts = negative_elbo(torch.zeros(1, 3), torch.zeros(1, 3), zeros, zeros)
    assert parts.kl.item() == 0.0
    assert parts.recon.item() == pytest.approx(3 * math.log(2))  # p = ½ for every pixel
    assert negative_elbo(torch.zeros(1, 3), torch.zeros(1, 3), zeros + 0.1, zeros).kl.item() > 0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: extra threads only contend for the cores (seconds instead of tenths on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(mnist_dir) -> torch.Tensor:
    """Sixteen real test digits as floats in [0, 1], (16, 1, 28, 28)."""
    splits = load_splits(DataSettings.of(build_config({"data_dir": str(mnist_dir), "val_size": 100})))
    return as_float(splits.test.images[:16])


@pytest.fixture(scope="module")
def trained(mnist_dir) -> VAE:
    """A small VAE trained for a few seconds on the 1,200-digit slice: its posterior is far from the prior."""
    splits = load_splits(DataSettings.of(build_config({"data_dir": str(mnist_dir), "val_size": 100})))
    images = as_float(splits.train.images)
    torch.manual_seed(0)
    model = VAE(hidden_dims=(64,), latent_dim=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(5):
        for index in torch.randperm(len(images)).split(64):
            x = images[index]
            out = model(x)
            loss = negative_elbo(out.logits, x, out.mu, out.logvar).loss.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def test_importance_weighted_nll_with_one_sample_is_the_single_sample_elbo(trained, digits):
    """k = 1: -log p(x|z) - log p(z) + log q(z|x) at the z drawn from the generator."""
    estimate = importance_weighted_nll(trained, digits, k=1, generator=torch.Generator().manual_seed(3))
    out = trained(digits, generator=torch.Generator().manual_seed(3))  # the same eps, hence the same z
    recon = negative_elbo(out.logits, digits, out.mu, out.logvar).recon
    prior = torch.distributions.Normal(0.0, 1.0)
    posterior = torch.distributions.Normal(out.mu, torch.exp(0.5 * out.logvar))
    by_hand = recon - prior.log_prob(out.z).sum(1) + posterior.log_prob(out.z).sum(1)
    assert estimate.shape == (16,)
    assert torch.allclose(estimate, by_hand, atol=1e-3)


def test_importance_weighted_nll_matches_burda_equation_8_by_hand(trained, digits):
    """-log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x) with z_i = mu + sigma * eps_i, eps drawn as (k, N, D)."""
    k = 5
    estimate = importance_weighted_nll(trained, digits, k=k, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        mu, logvar = trained.encode(digits)
        eps = torch.randn(k, *mu.shape, generator=torch.Generator().manual_seed(4))
        log_w = []
        for i in range(k):
            z = mu + eps[i] * torch.exp(0.5 * logvar)
            log_px_z = -negative_elbo(trained.decode_logits(z), digits, mu, logvar).recon
            log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
            log_qz = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
            log_w.append(log_px_z + log_pz - log_qz)
        by_hand = -(torch.logsumexp(torch.stack(log_w), dim=0) - math.log(k))
    assert torch.allclose(estimate, by_hand, atol=1e-3)


def test_importance_weighted_nll_with_one_sample_averages_to_the_negative_elbo(trained, digits):
    """E_q[log q(z|x) - log p(z)] is the closed-form KL, so over many draws the two estimates agree.

    Both use the same z for each draw, so the reconstruction terms cancel and only the KL estimate differs.
    """
    draws = 1000
    x = digits.repeat(draws, 1, 1, 1)  # (draws * 16, 1, 28, 28)
    with torch.no_grad():
        iw = importance_weighted_nll(trained, x, k=1, generator=torch.Generator().manual_seed(0))
        out = trained(x, generator=torch.Generator().manual_seed(0))
        parts = negative_elbo(out.logits, x, out.mu, out.logvar)
    iw_mean, elbo_mean = iw.view(draws, 16).mean(0), parts.loss.view(draws, 16).mean(0)  # per image
    assert parts.kl.mean() > 5  # a real posterior, not the prior: the comparison would be trivial otherwise
    assert not torch.allclose(iw, parts.loss, atol=0.1)  # single draws differ: a Monte Carlo KL vs the exact one
    assert torch.allclose(iw_mean, elbo_mean, atol=0.3), (iw_mean - elbo_mean).abs().max()
    assert iw_mean.mean().item() == pytest.approx(elbo_mean.mean().item(), abs=0.1)


def test_more_importance_samples_give_a_tighter_bound(trained, digits):
    """-log p(x) ≤ IW bound (k = 100) ≤ IW bound (k = 10) ≤ negative ELBO, on average (Burda et al. Thm 1)."""
    generator = torch.Generator().manual_seed(0)
    k1 = importance_weighted_nll(trained, digits.repeat(50, 1, 1, 1), k=1, generator=generator).mean()
    k10 = importance_weighted_nll(trained, digits, k=10, generator=generator).mean()
    k100 = importance_weighted_nll(trained, digits, k=100, chunk=30, generator=generator).mean()
    out = trained(digits.repeat(50, 1, 1, 1), generator=generator)
    elbo = negative_elbo(out.logits, digits.repeat(50, 1, 1, 1), out.mu, out.logvar).loss.mean()
    assert k100 < k10 < k1
    assert k100 < k10 < elbo
    assert elbo - k100 > 0.5  # a trained model's bound tightens by whole nats, not rounding noise
    assert 60 < k100 < 250  # nats per MNIST digit for a small briefly trained model


def test_importance_weighted_nll_is_fixed_by_the_generator_seed(trained, digits):
    a = importance_weighted_nll(trained, digits, k=20, chunk=7, generator=torch.Generator().manual_seed(0))
    b = importance_weighted_nll(trained, digits, k=20, chunk=7, generator=torch.Generator().manual_seed(0))
    c = importance_weighted_nll(trained, digits, k=20, chunk=7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.allclose(a, c, rtol=0.05)  # a different draw of the same estimate


def test_elbo_totals_sum_the_parts_of_batches_and_give_the_means_per_image(trained, digits):
    """The trainer and the evaluation add up batches with ELBOTotals: summing in two batches is summing in one, the
    loss counted is recon + KL whatever the KL weight, and the fields are named where they are kept."""
    with torch.no_grad():
        out = trained(digits, generator=torch.Generator().manual_seed(0))
    whole = ELBOTotals.zeros(torch.device("cpu"))
    whole.add(negative_elbo(out.logits, digits, out.mu, out.logvar))
    halves = ELBOTotals.zeros(torch.device("cpu"))
    for rows in (slice(0, 5), slice(5, 16)):
        halves.add(negative_elbo(out.logits[rows], digits[rows], out.mu[rows], out.logvar[rows], kl_weight=0.1))
    assert ELBOTotals.FIELDS == ("loss", "recon", "kl", "images") and whole.sums.dtype == torch.float64
    assert whole.images == halves.images == 16
    assert torch.allclose(whole.sums, halves.sums, rtol=1e-6)
    means = whole.as_means()
    parts = negative_elbo(out.logits, digits, out.mu, out.logvar)
    assert means.keys() == {"loss", "recon", "kl"}
    assert means["loss"] == pytest.approx(parts.loss.mean().item(), rel=1e-5)
    assert means["recon"] == pytest.approx(parts.recon.mean().item(), rel=1e-5)
    assert means["kl"] == pytest.approx(parts.kl.mean().item(), rel=1e-5)
    reduced = ELBOTotals(whole.sums + halves.sums)  # what an all-reduce over two processes adds up
    assert reduced.images == 32 and reduced.as_means() == pytest.approx(means)
