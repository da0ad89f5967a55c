"""Latent-space maths the app and the figures share: posterior means, walks, the 2-D latent plane, and placing a new
latent on the t-SNE map. What a class is in latent space (its mean, region, examples) is vae.classes'.

Pure functions of (model, latents): no files, no images, no UI. The Gradio handlers and the trainer's figures call
these same functions, so a walk in the app is the walk in the model card.
"""

from __future__ import annotations

import torch

from vae.imaging import as_float
from vae.model import VAE

START_POINTS = ("mean", "sample")  # a walk's ends and the sliders' start in a class: vae.classes.class_latent
INTERPOLATIONS = ("linear", "spherical")
PLANE_QUANTILES = (0.05, 0.95)  # the 2-D latent plane is shown from the 5% to the 95% quantile of N(0, 1) on each axis


@torch.no_grad()
def posterior_means(model: VAE, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The posterior means (N, D) of uint8 images (N, C, H, W), encoded batch by batch on the model's device."""
    return torch.cat([model.encode(as_float(batch.to(model.device)))[0] for batch in images.split(batch_size)])


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for VAE latents): keeps the norm typical of N(0, I)."""
    cos = torch.nn.functional.cosine_similarity(z0, z1, dim=0).clamp(-1 + 1e-6, 1 - 1e-6)
    omega = torch.acos(cos)
    if omega.abs() < 1e-4:  # nearly parallel: slerp → lerp
        return z0 + t[:, None] * (z1 - z0)
    return (torch.sin((1 - t) * omega)[:, None] * z0 + torch.sin(t * omega)[:, None] * z1) / torch.sin(omega)


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int, mode: str = "linear") -> torch.Tensor:
    """`steps` latents (steps, D) from z0 to z1 inclusive, along a line or a great circle."""
    t = torch.linspace(0, 1, steps, device=z0.device)
    if mode == "spherical":
        return slerp(z0, z1, t)
    return z0 + t[:, None] * (z1 - z0)  # (steps, D)


def plane_axis(n: int) -> torch.Tensor:
    """The n values (n,) of z1 (and of z2) at which a 2-D model's latent plane is decoded: evenly spaced Normal
    quantiles, so that each cell of the grid holds the same prior mass (Kingma & Welling, 2014, figure 4)."""
    return torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(*PLANE_QUANTILES, n))


def plane_grid(n: int) -> torch.Tensor:
    """The latents (n*n, 2) of a 2-D model's latent plane as a grid of n x n images, row by row from the top: z1
    grows to the right, z2 upwards."""
    q = plane_axis(n)
    return torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), dim=-1).reshape(-1, 2)


@torch.no_grad()
def walk(model: VAE, z0: torch.Tensor, z1: torch.Tensor, steps: int, mode: str = "linear") -> torch.Tensor:
    """Decoded images (steps, C, H, W) along the path from z0 to z1."""
    return model.decode(interpolate(z0, z1, steps, mode).to(model.device))


def place_on_map(z: torch.Tensor, latents: torch.Tensor, coords: torch.Tensor, k: int = 10) -> torch.Tensor:
    """A point (2,) on a t-SNE map for a new latent: the medoid of the map positions of its k nearest latents.

    t-SNE has no transform for new points; its neighbourhoods are what it preserves, so a point placed
    among its nearest neighbours in latent space lands where it belongs. The medoid (the neighbour closest
    to the others on the map) rather than the mean: when a few neighbours sit in another cluster, a mean
    would land in the empty space between the two.
    """
    dist = torch.cdist(z[None].float(), latents.float())[0]  # (N,)
    nearest = coords[dist.topk(min(k, len(dist)), largest=False).indices].float()  # (k, 2)
    return nearest[torch.cdist(nearest, nearest).sum(dim=1).argmin()]
