"""Attribute directions: "thickness" and "slant", measured on images, each fitted as one direction in latent space
along which a digit gets bolder or leans further right (the attribute vectors of Carter & Nielsen's font explorer,
2017, and of Latent Space Cartography, Liu et al. 2019).

- thickness: the digit's ink, the sum of its pixel intensities (in pixels of full ink);
- slant: the shear of its second moments, -mu11 / mu02 over the ink (y down the image): 0 upright, > 0 when the top
  leans right; the shear that deskewing removes (x' = x + slant * (y - y_mean)).

A direction is the covariance of the training images' posterior means with the attribute, both centred within each
class (what makes a 3 bolder, not what makes a 1 a 1, whose ink is least) or across classes: its unit vector, and the
standard deviation of the latents along it, the unit of the sliders.
`python -m bench.attributes` measures what moving along them does to the decoded digits.
"""

from __future__ import annotations

import torch

ATTRIBUTES = ("thickness", "slant")


def thickness(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] → their ink (N,): the sum of pixel intensities, over channels averaged."""
    return images.float().mean(dim=1).flatten(1).sum(dim=1)


def slant(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] → the shear of their second moments (N,): > 0 when the top leans right."""
    ink = images.float().mean(dim=1)  # (N, H, W)
    height, width = ink.shape[-2:]
    ys = torch.arange(height, dtype=torch.float32)[:, None]  # (H, 1), down the image
    xs = torch.arange(width, dtype=torch.float32)[None, :]  # (1, W)
    mass = ink.sum(dim=(1, 2)).clamp_min(1e-6)  # (N,)
    x_mean = (ink * xs).sum(dim=(1, 2)) / mass
    y_mean = (ink * ys).sum(dim=(1, 2)) / mass
    dx = xs - x_mean[:, None, None]  # (N, 1, W)
    dy = ys - y_mean[:, None, None]  # (N, H, 1)
    mu11 = (ink * dx * dy).sum(dim=(1, 2)) / mass
    mu02 = (ink * dy * dy).sum(dim=(1, 2)) / mass
    return -mu11 / mu02.clamp_min(1e-6)


MEASURES = {"thickness": thickness, "slant": slant}


def measure(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] → every attribute of each (N, len(ATTRIBUTES))."""
    return torch.stack([MEASURES[name](images) for name in ATTRIBUTES], dim=1)


def centred(values: torch.Tensor, labels: torch.Tensor, within_class: bool) -> torch.Tensor:
    """values (N, ...) less the mean of their class (within_class) or of them all."""
    values = values.double()
    if not within_class:
        return values - values.mean(dim=0)
    out = values.clone()
    for label in labels.unique():
        rows = labels == label
        out[rows] -= values[rows].mean(dim=0)
    return out


def fit_directions(
    latents: torch.Tensor, labels: torch.Tensor, values: torch.Tensor, within_class: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means (N, D), their classes (N,) and attributes (N, A) → unit directions (A, D) along which each
    attribute grows, and the latents' standard deviation along each (A,), both measured within each class or across
    classes. A direction is the latents' covariance with the attribute: the mean shift of the latents per unit of it,
    as attribute vectors are formed (White 2016, "Sampling generative networks"). A least-squares fit of the attribute
    on the latents would point where the latents hardly vary (an unused dimension explains a little of it for free):
    one of its standard deviations changed the decoded digits by 1 % of one of the attribute's."""
    z = centred(latents, labels, within_class)  # (N, D)
    v = centred(values, labels, within_class)  # (N, A)
    covariance = z.T @ v / len(z)  # (D, A)
    directions = (covariance / covariance.norm(dim=0).clamp_min(1e-12)).T  # (A, D)
    spreads = (z @ directions.T).std(dim=0)  # (A,)
    return directions.float(), spreads.float()
