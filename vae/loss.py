"""The VAE objective: the negative evidence lower bound and the importance-weighted bound, in nats; and the sums of
its parts over a dataset, which the trainer and the evaluation add up the same way."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class ELBOParts(NamedTuple):
    """Per-image terms, each shaped (N,): loss = recon + kl_weight * kl."""

    loss: torch.Tensor
    recon: torch.Tensor  # -log p(x|z): Bernoulli cross-entropy summed over pixels
    kl: torch.Tensor  # KL(q(z|x) || N(0, I))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, in closed form (Kingma & Welling 2014, Appendix B)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)  # (N,)


class Softplus(torch.autograd.Function):
    """log(1 + exp(l)) as max(l, 0) - log σ(|l|), with its exact gradient σ(l): kernels that torch's CPU build
    vectorises, where F.softplus, F.logsigmoid and F.binary_cross_entropy_with_logits use log1p, which it does not.
    The reconstruction term's forward + backward takes half the time (docs/benchmarks.md, "Where a step's time
    goes"); the values agree with F.softplus to float32 rounding (σ(|l|) rounds to 1 where exp(-|l|) < 6e-8)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits)
        return F.relu(logits) - torch.log(torch.sigmoid(logits.abs()))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (logits,) = ctx.saved_tensors
        return grad * torch.sigmoid(logits)


softplus = Softplus.apply


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) for grayscale pixels x in [0, 1] read as Bernoulli means, summed over pixels → (N,):
    Σ softplus(logit) - x · logit, the binary cross-entropy with logits."""
    return (softplus(logits) - x.flatten(1) * logits).sum(dim=1)


def bernoulli_nll_samples(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """bernoulli_nll of K samples' logits (K*N, P), sample by sample, against their N images → (K, N), without
    copying the images K times: -log p(x|z) = Σ softplus(logit) - x · logit, for any x in [0, 1]."""
    n = len(x)
    x = x.flatten(1).to(logits.dtype)  # (N, P)
    dot = torch.einsum("knp,np->kn", logits.view(-1, n, x.shape[1]), x)  # (K, N)
    return softplus(logits).sum(dim=1).view(-1, n) - dot


def negative_elbo(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kl_weight: float = 1.0
) -> ELBOParts:
    """-ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z)), estimated with the one z that produced `logits`."""
    recon = bernoulli_nll(logits.float(), x)
    kl = gaussian_kl(mu.float(), logvar.float())
    return ELBOParts(recon + kl_weight * kl, recon, kl)


def importance_weighted_bound(
    logits: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    z: torch.Tensor,
    kl_weight: float = 1.0,
) -> ELBOParts:
    """-L_K, the importance-weighted bound of Burda et al. (2015, eq. 8), for K = len(z) / len(x) samples per image:
    -log (1/K) Σ_k p(x|z_k) p(z_k)^β / q(z_k|x)^β, with β = kl_weight (1: the bound itself). K = 1 is the ELBO.

    Its gradient weighs each sample by its normalised importance weight. recon and kl are reported as for the ELBO,
    E_q[-log p(x|z)] over the K samples and the closed-form KL, so that a run's records read the same either way.
    """
    n = len(x)
    k = len(z) // n
    recon = bernoulli_nll_samples(logits.float(), x)  # (K, N)
    z = z.float().view(k, n, -1)
    log_ratio = log_normal(z, mu.float(), logvar.float()) - log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
    log_w = -recon - kl_weight * log_ratio  # (K, N)
    loss = -(torch.logsumexp(log_w, dim=0) - math.log(k))
    return ELBOParts(loss, recon.mean(0), gaussian_kl(mu.float(), logvar.float()))


def sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for sums over a dataset, except on Apple MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


class ELBOTotals:
    """Sums over images of the negative ELBO (with a KL weight of 1), its two parts, and the number of images.

    Sums rather than means, in one tensor: the shards of several processes add up exactly, with one all-reduce of
    `sums` (`ELBOTotals(accelerator.reduce(totals.sums, reduction="sum"))`).
    """

    FIELDS = ("loss", "recon", "kl", "images")  # the order of `sums`

    def __init__(self, sums: torch.Tensor):
        self.sums = sums  # (4,) in the order of FIELDS

    @classmethod
    def zeros(cls, device: torch.device) -> ELBOTotals:
        return cls(torch.zeros(len(cls.FIELDS), dtype=sum_dtype(device), device=device))

    @torch.no_grad()
    def add(self, parts: ELBOParts) -> None:
        """Add a batch's per-image terms; `loss` is recon + KL whatever KL weight the batch was trained with."""
        images = parts.recon.new_full((), float(len(parts.recon)))  # made on the device: no wait for a GPU
        self.sums += torch.stack([(parts.recon + parts.kl).sum(), parts.recon.sum(), parts.kl.sum(), images])

    @property
    def images(self) -> float:
        return self.sums[self.FIELDS.index("images")].item()

    def as_means(self) -> dict[str, float]:
        """Per-image means: {"loss", "recon", "kl"}."""
        *sums, n = self.sums.tolist()
        return {name: total / n for name, total in zip(self.FIELDS, sums, strict=False)}


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(dim=-1)


@torch.no_grad()
def importance_weighted_nll(
    model: torch.nn.Module, x: torch.Tensor, k: int, chunk: int = 100, generator: torch.Generator | None = None
) -> torch.Tensor:
    """-log p(x) estimated with k importance samples from q(z|x) (Burda et al. 2015, eq. 8) → (N,).

    log p(x) ≈ log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x); it is a lower bound on log p(x) that tightens
    as k grows. Samples are drawn `chunk` at a time so memory stays at N * chunk * pixels.
    """
    mu, logvar = model.encode(x)  # (N, D)
    n, d = mu.shape
    log_weights = []
    for start in range(0, k, chunk):
        m = min(chunk, k - start)
        eps = torch.randn(m, n, d, generator=generator, device=mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)  # (m, N, D)
        logits = model.decode_logits(z.reshape(m * n, d)).float()  # (m*N, P)
        log_px_z = -bernoulli_nll_samples(logits, x)  # (m, N)
        log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))  # (m, N)
        log_qz_x = log_normal(z, mu, logvar)  # (m, N)
        log_weights.append(log_px_z + log_pz - log_qz_x)
    log_w = torch.cat(log_weights)  # (k, N)
    return -(torch.logsumexp(log_w, dim=0) - math.log(k))
