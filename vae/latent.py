"""Latent-space maths the app and the figures share: class points, walks between them, nearest classes, and
placing a new latent on the t-SNE map.

Pure functions of (model, latents): no files, no images, no UI. The Gradio handlers and the trainer's figures call
these same functions, so a walk in the app is the walk in the model card.
"""

from __future__ import annotations

import torch

from vae.imaging import as_float
from vae.model import VAE

START_POINTS = ("mean", "sample")
INTERPOLATIONS = ("linear", "spherical")
# Drawn start points use this fraction of a class's spread: at the full spread about one draw in four
# decodes to a digit that its nearest test images say is another class; at half, about one in thirty.
SAMPLE_SPREAD = 0.5
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


def has_class_statistics(model: VAE) -> bool:
    """Whether the trainer filled in the class means (a freshly built VAE holds zeros)."""
    return bool(model.class_means.abs().sum() > 0)


def neighbour_agreement(
    latents: torch.Tensor, labels: torch.Tensor, k: int = 10, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """For each latent (N, D), or each of those at the indices `rows` (M,), the share (N,) or (M,) of its k nearest
    other latents (among all N) that have its label. Distances are taken a block of rows at a time, so N may be a whole
    training set: the time grows with N × M."""
    k = min(k, len(latents) - 1)
    rows = torch.arange(len(latents)) if rows is None else rows
    if k < 1:
        return torch.ones(len(rows))
    latents, shared = latents.float(), []
    for block in rows.split(1024):
        dist = torch.cdist(latents[block], latents)  # (B, N)
        dist[torch.arange(len(block)), block] = float("inf")  # not itself
        nearest = dist.topk(k, largest=False).indices  # (B, k)
        shared.append((labels[nearest] == labels[block, None]).float().mean(dim=1))
    return torch.cat(shared)


def typical(latents: torch.Tensor, labels: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Mask (N,) of the examples whose k nearest other latents mostly share their label: clear examples."""
    return neighbour_agreement(latents, labels, k) > 0.5


def class_latent(
    model: VAE,
    label: int,
    start: str = "mean",
    seed: int = 0,
    bank: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """A latent (D,) for a class: its mean over the training set, or a seeded "real-looking" one.

    With a bank of real latents and their labels (the cached t-SNE's test images, filtered by `typical`)
    the seeded one is the posterior mean of a real test image of that class; without, a draw from
    N(mean, (SAMPLE_SPREAD * std)²).
    """
    mean, std = model.class_means[label], model.class_stds[label]
    if start == "mean":
        return mean
    generator = torch.Generator().manual_seed(seed * 1_000 + label)
    if bank is not None:
        members = (bank[1] == label).nonzero()[:, 0]
        if len(members):
            pick = members[torch.randint(len(members), (1,), generator=generator)[0]]
            return bank[0][pick].to(mean.device, mean.dtype)
    return mean + SAMPLE_SPREAD * std * torch.randn(model.latent_dim, generator=generator).to(mean.device)


@torch.no_grad()
def walk(model: VAE, z0: torch.Tensor, z1: torch.Tensor, steps: int, mode: str = "linear") -> torch.Tensor:
    """Decoded images (steps, C, H, W) along the path from z0 to z1."""
    return model.decode(interpolate(z0, z1, steps, mode))


@torch.no_grad()
def class_walk(
    model: VAE,
    a: int,
    b: int,
    steps: int,
    mode: str = "linear",
    start: str = "mean",
    seed: int = 0,
    bank: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Walk from class a to class b, starting and ending at class means or at seeded samples of each class."""
    z0, z1 = class_latent(model, a, start, seed, bank), class_latent(model, b, start, seed, bank)
    return walk(model, z0, z1, steps, mode)


@torch.no_grad()
def nearest_class(model: VAE, z: torch.Tensor) -> int:
    """Index of the class whose mean latent is closest to z (D,)."""
    return int(torch.cdist(z[None], model.class_means).argmin())


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
