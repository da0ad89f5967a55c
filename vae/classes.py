"""What a class is in latent space, defined once: the export, the figures, every tab of the app, its API and the
Train tab all use these functions, so "a 3" is the same 3 wherever it is shown (issue 31).

- A clear example: a training image at least 9 of whose 10 nearest training latents (posterior means) are of its
  class (`clear_examples`, the one threshold).
- A class's region: a Gaussian with full covariance, N(mean_c, L_c L_cᵀ), fitted to the posterior means of its clear
  examples (`fit_classes`). Its mean is *the* class mean: where walks start and end "at the class mean", where the
  sliders start from "the class mean", what the nearest class is measured to.
- A seeded example of a class: a draw from its region at half its spread (`class_latent`), by the one sampler and its
  one seed rule (`class_latents`), where a walk or the sliders start "at a random example".

The regions are stored in the model folder's steering.safetensors (vae.steering) beside the principal directions of
the sliders. Chosen by measurement on checkpoints/vae-mnist with an independent classifier (bench/class_samples.py,
500 samples per class): fitted to every training image of a class, 2, 5 and 8 came out as the digit asked for only
88-89% of the time, their Gaussians reaching over ambiguous images into the neighbouring classes; fitted to the clear
ones, every class is at least 92%, and the samples vary nearly as much as real test digits do (their mean pairwise
distance at least 0.86 of the real digits'). Adding the mean posterior variance to the covariance (the moment-matched
aggregate posterior) widened the regions and cost 1-3 points of accuracy; a mixture of 4-8 Gaussians per class did
about as well (worst class 93%) but took minutes to fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vae.errors import UserError
from vae.latent import interpolate  # and START_POINTS: "mean" or "sample", as class_latent takes them
from vae.model import VAE

NEIGHBOURS = 10  # a training image is clear when this many of its nearest latents...
CLEAR_AGREEMENT = 0.9  # ...are at least this share of its class (9 of 10)
# An example to start from is drawn at this fraction of its region's spread: on checkpoints/vae-mnist, 8% of draws at
# the full spread decode to a digit that its 10 nearest test images call another class, 1.7% at half (100 per class).
EXAMPLE_TEMPERATURE = 0.5


@dataclass
class Classes:
    """Each class's region of latent space: a Gaussian N(mean, L Lᵀ) fitted to its clear examples."""

    class_means: torch.Tensor  # (K, D) the class means
    class_scales: torch.Tensor  # (K, D, D) lower-triangular L: the region's covariance is L Lᵀ


# Fitting


def neighbour_agreement(
    latents: torch.Tensor, labels: torch.Tensor, k: int = NEIGHBOURS, rows: torch.Tensor | None = None
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


def clear_examples(latents: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mask (N,) or (M,) of the latents (all, or those at `rows`) that are clear examples of their class: at least
    CLEAR_AGREEMENT of their NEIGHBOURS nearest latents share their label."""
    return neighbour_agreement(latents, labels, NEIGHBOURS, rows) >= CLEAR_AGREEMENT


def gaussian(latents: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and Cholesky factor (D, D) of latents (N, D); the prior N(0, I) for a class with no images."""
    if len(latents) == 0:
        return torch.zeros(dim), torch.eye(dim)
    mean = latents.mean(dim=0)
    cov = torch.cov(latents.T.double()).reshape(dim, dim) if len(latents) > 1 else torch.zeros(dim, dim).double()
    ridge = 1e-6 * max(float(cov.diagonal().mean()), 1e-6)  # keeps a degenerate class (N <= D) factorable
    return mean, torch.linalg.cholesky(cov + ridge * torch.eye(dim).double()).float()


def fit_classes(latents: torch.Tensor, labels: torch.Tensor, classes: int, fit_images: int = 0) -> Classes:
    """Each class's region from posterior means (N, D) and their labels (N,), fitted to the clear examples.

    `fit_images` (0: all): only this many latents, drawn at random (seeded), are judged, each still by its neighbours
    among all N. Judging each takes a pass over all N: ~29 s for the 59,000 training images on one core, ~5 s for
    10,000 (the Train tab's: vae.live), whose ~900 clear images per class give each Gaussian the same centre and spread
    within sampling noise."""
    latents, labels, dim = latents.cpu().float(), labels.cpu(), latents.shape[1]
    judged = torch.arange(len(latents))
    if 0 < fit_images < len(latents):
        judged = torch.randperm(len(latents), generator=torch.Generator().manual_seed(0))[:fit_images].sort().values
    clear = torch.zeros(len(latents), dtype=torch.bool)
    clear[judged] = clear_examples(latents, labels, judged)
    means, scales = torch.zeros(classes, dim), torch.zeros(classes, dim, dim)
    for c in range(classes):
        members = latents[(labels == c) & clear]
        if len(members) <= dim:  # too few clear images for a full covariance: all of the class's
            members = latents[labels == c]
        means[c], scales[c] = gaussian(members, dim)
    return Classes(means, scales)


# Using them


def check_label(classes: Classes, label: int) -> None:
    if not 0 <= label < len(classes.class_means):
        raise UserError(f"No class {label}: this model's classes are 0 to {len(classes.class_means) - 1}.")


def class_latents(classes: Classes, label: int, n: int, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
    """n latents (n, D) drawn from class `label`'s region, N(mean, temperature² L Lᵀ): the one sampler of a class and
    its one seed rule, so seed s gives the same examples in every tab."""
    generator = torch.Generator().manual_seed(seed * 1_000 + label)
    eps = torch.randn(n, classes.class_means.shape[1], generator=generator)  # on CPU: the same on any device
    return classes.class_means[label].cpu() + temperature * eps @ classes.class_scales[label].cpu().T


def class_latent(classes: Classes, label: int, start: str = "mean", seed: int = 0) -> torch.Tensor:
    """A latent (D,) for class `label`: its mean, or (start "sample") its seeded example: the first draw of
    class_latents at EXAMPLE_TEMPERATURE, as the Samples tab draws that class with that seed and temperature."""
    check_label(classes, label)
    if start == "mean":
        return classes.class_means[label]
    return class_latents(classes, label, 1, seed, EXAMPLE_TEMPERATURE)[0]


@torch.no_grad()
def sample_class(
    model: VAE, classes: Classes, label: int, n: int = 16, seed: int = 0, temperature: float = 1.0
) -> torch.Tensor:
    """n images (n, C, H, W) in [0, 1] of class `label`, decoded from its region of latent space."""
    check_label(classes, label)
    return model.decode(class_latents(classes, label, n, seed, temperature).to(model.device))


def class_walk_latents(
    classes: Classes, a: int, b: int, steps: int, mode: str = "linear", start: str = "mean", seed: int = 0
) -> torch.Tensor:
    """The latents (steps, D) from class a to class b, between their means or their seeded examples."""
    return interpolate(class_latent(classes, a, start, seed), class_latent(classes, b, start, seed), steps, mode)


@torch.no_grad()
def class_walk(
    model: VAE,
    classes: Classes,
    a: int,
    b: int,
    steps: int,
    mode: str = "linear",
    start: str = "mean",
    seed: int = 0,
) -> torch.Tensor:
    """Decoded images (steps, C, H, W) from class a to class b: class_walk_latents decoded."""
    return model.decode(class_walk_latents(classes, a, b, steps, mode, start, seed).to(model.device))


def nearest_class(classes: Classes, z: torch.Tensor) -> int:
    """Index of the class whose mean is closest to z (D,)."""
    return int(torch.cdist(z[None].cpu().float(), classes.class_means.cpu().float()).argmin())
