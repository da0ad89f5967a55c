"""The encoder's uncertainty: a VAE's encoder returns q(z|x) = N(mu, diag(exp(logvar))), a cloud of latents per
image, not a point. What the Your digit tab shows of it (/posterior), and the one rule for an active dimension that
the page, the model card and `vae.evaluate` share.

- Active dimension (Burda et al. 2015, section 5.2): a latent dimension d is active when the variance over the test
  set of its posterior mean, Cov_x(E_q(z|x)[z_d]), exceeds ACTIVE_VARIANCE. An inactive one carries no information
  about the image: q(z_d|x) is the prior N(0, 1) whatever x is.
- Spread: the total variance of q(z|x) over the active dimensions, sum_d exp(logvar_d). The inactive ones add their
  prior variance, about 1 each, to every image alike.
- KL per dimension: KL(q(z_d|x) || N(0, 1)) = (mu_d^2 + exp(logvar_d) - 1 - logvar_d) / 2 nats, the terms of the
  ELBO's KL (Kingma & Welling 2014, appendix B): how much the image moved each dimension away from the prior.
"""

from __future__ import annotations

import math

import torch

from vae.model import VAE

ACTIVE_VARIANCE = 0.01


def active_dimensions(means: torch.Tensor) -> torch.Tensor:
    """Posterior means (N, D) of the test images → which dimensions are active (D,) bool (Burda et al. 2015)."""
    return means.double().var(dim=0) > ACTIVE_VARIANCE


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) of each dimension, in nats: mu, logvar (..., D) → (..., D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)


def spread(logvar: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """The total variance of q(z|x) over the active dimensions (all when `active` is None): logvar (..., D) → (...)."""
    variance = logvar.exp()
    return (variance if active is None else variance[..., active]).sum(dim=-1)


@torch.no_grad()
def posterior_samples(model: VAE, mu: torch.Tensor, logvar: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n latents drawn from q(z|x) (mu, logvar: (D,)), seeded, decoded → images (n, C, H, W): what the model thinks
    the image could be."""
    noise = torch.randn(n, len(mu), generator=torch.Generator().manual_seed(seed))  # (n, D)
    z = mu.cpu() + (0.5 * logvar.cpu()).exp() * noise
    return model.decode(z.to(model.device)).cpu()


def ellipse(mu: torch.Tensor, logvar: torch.Tensor, sds: float, points: int = 72) -> list[tuple[float, float]]:
    """The curve of a 2-D posterior at `sds` standard deviations (its axes are z1 and z2: the covariance is
    diagonal), as `points` latents around it."""
    sd = (0.5 * logvar.cpu()).exp()
    return [
        (float(mu[0] + sds * sd[0] * math.cos(t)), float(mu[1] + sds * sd[1] * math.sin(t)))
        for t in (2 * math.pi * i / points for i in range(points))
    ]
