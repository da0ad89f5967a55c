"""What the app and the figures compute from a trained model: samples, latent walks, encoding a drawing.

Pure functions of (model, inputs): no files, no UI. The Gradio handlers and the trainer's figures call
these same functions, so a walk in the app is the walk in the model card.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vae.model import VAE

START_POINTS = ("mean", "sample")
INTERPOLATIONS = ("linear", "spherical")


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


def class_latent(model: VAE, label: int, start: str = "mean", seed: int = 0) -> torch.Tensor:
    """A latent (D,) for a class: its mean over the training set, or a seeded draw from N(mean, std²)."""
    mean, std = model.class_means[label], model.class_stds[label]
    if start == "mean":
        return mean
    generator = torch.Generator().manual_seed(seed * 1_000 + label)
    return mean + std * torch.randn(model.latent_dim, generator=generator).to(mean.device)


@torch.no_grad()
def walk(model: VAE, z0: torch.Tensor, z1: torch.Tensor, steps: int, mode: str = "linear") -> torch.Tensor:
    """Decoded images (steps, C, H, W) along the path from z0 to z1."""
    return model.decode(interpolate(z0, z1, steps, mode))


@torch.no_grad()
def class_walk(
    model: VAE, a: int, b: int, steps: int, mode: str = "linear", start: str = "mean", seed: int = 0
) -> torch.Tensor:
    """Walk from class a to class b, starting and ending at class means or at seeded samples of each class."""
    return walk(model, class_latent(model, a, start, seed), class_latent(model, b, start, seed), steps, mode)


@torch.no_grad()
def nearest_class(model: VAE, z: torch.Tensor) -> int:
    """Index of the class whose mean latent is closest to z (D,)."""
    return int(torch.cdist(z[None], model.class_means).argmin())


def place_on_map(z: torch.Tensor, latents: torch.Tensor, coords: torch.Tensor, k: int = 10) -> torch.Tensor:
    """A point (2,) on a t-SNE map for a new latent: the mean of the map positions of its k nearest latents.

    t-SNE has no transform for new points; its neighbourhoods are what it preserves, so a point placed
    among its nearest neighbours in latent space lands where it belongs.
    """
    dist = torch.cdist(z[None].float(), latents.float())[0]  # (N,)
    nearest = dist.topk(min(k, len(dist)), largest=False).indices
    return coords[nearest].float().mean(dim=0)


def prepare_drawing(image: np.ndarray, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """A drawing or photo → a (1, C, H, W) tensor in [0, 1] made the way MNIST was made.

    MNIST digits are white on black, size-normalised to fit a 20x20 box (keeping the aspect ratio) and
    centred by centre of mass in a 28x28 field (LeCun et al. 1998). Dark-on-light input is inverted
    first. Non-square models (custom data) just get a resize.
    """
    channels, height, width = image_shape
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 4:  # RGBA from a sketchpad: composite over white paper
        alpha = array[..., 3:4].astype(np.float32) / 255
        array = (array[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    img = Image.fromarray(array.astype(np.uint8))
    if channels == 3:
        out = np.asarray(img.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
        return torch.from_numpy(out / 255).permute(2, 0, 1)[None]
    gray = np.asarray(img.convert("L"), dtype=np.float32) / 255
    if np.median(gray) > 0.5:  # dark strokes on a light background → MNIST's light on dark
        gray = 1 - gray
    box = int(round(min(height, width) * 20 / 28))
    ys, xs = np.nonzero(gray > 0.1)
    if len(ys) == 0:
        return torch.zeros(1, 1, height, width)
    crop = gray[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    scale = box / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = (
        np.asarray(
            Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS), dtype=np.float32
        )
        / 255
    )
    canvas = np.zeros((height, width), dtype=np.float32)
    cy, cx = np.array(np.nonzero(small > -1)).reshape(2, -1) @ small.ravel() / max(small.sum(), 1e-6)  # centre of mass
    top = int(np.clip(round(height / 2 - cy), 0, height - small.shape[0]))
    left = int(np.clip(round(width / 2 - cx), 0, width - small.shape[1]))
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return torch.from_numpy(canvas)[None, None]
