"""Figures of a trained model: sample grids (of the prior and of each class), reconstructions, latent walks, the 2-D
latent grid, t-SNE.

Image grids are built as uint8 arrays (crisp, exact pixels, written as PNG); plots with axes and legends are
matplotlib Figures drawn without pyplot: no display, no global backend to switch, nothing kept after saving.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from PIL import Image

from vae.classes import Classes, class_walk, sample_class
from vae.folder import CLASS_SAMPLES, LATENT_WALK, atomic_write
from vae.imaging import as_float, class_colours, to_grid
from vae.latent import plane_grid
from vae.model import VAE

WALK_PAIRS = [(3, 7), (0, 6), (1, 4), (2, 5), (8, 9)]  # 3 → 7 first: the original tutorial's walk
SAMPLES_PER_CLASS = 10  # the class-samples figure: one row per class


def save_png(array: np.ndarray, path: str | Path) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def save_figure(fig: Figure, path: str | Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def samples_grid(model: VAE, n: int = 64, seed: int = 0, temperature: float = 1.0, scale: int = 2) -> np.ndarray:
    return to_grid(model.sample(n, seed=seed, temperature=temperature), nrow=int(np.ceil(np.sqrt(n))), scale=scale)


def class_samples_grid(model: VAE, classes: Classes, per_class: int = 10, seed: int = 0, scale: int = 2) -> np.ndarray:
    """One row per class: `per_class` seeded samples from the class's region of latent space."""
    rows = [sample_class(model, classes, c, per_class, seed) for c in range(len(model.class_names))]
    return to_grid(torch.cat(rows), nrow=per_class, scale=scale)


def write_class_figures(folder: str | Path, model: VAE, classes: Classes, seed: int = 0) -> None:
    """The figures of the classes, drawn from their statistics (vae.classes): the walks between class means and
    each class's samples. The export draws them, and `python -m vae.steering` again when it refits the classes."""
    save_png(latent_walk_grid(model, classes), Path(folder) / LATENT_WALK)
    save_png(class_samples_grid(model, classes, SAMPLES_PER_CLASS, seed), Path(folder) / CLASS_SAMPLES)


@torch.no_grad()
def reconstructions_grid(model: VAE, images: torch.Tensor, scale: int = 2) -> np.ndarray:
    """Test images (uint8, N, C, H, W) in the top row, their reconstructions (posterior means) below."""
    x = as_float(images.to(model.device))
    mu, _ = model.encode(x)
    return to_grid(torch.cat([x, model.decode(mu)]), nrow=len(x), scale=scale)


def latent_walk_grid(model: VAE, classes: Classes, pairs=WALK_PAIRS, steps: int = 10, scale: int = 2) -> np.ndarray:
    """One row per (class a, class b) pair: the decoded line between their class means (the Latent walk tab's)."""
    pairs = [(a, b) for a, b in pairs if max(a, b) < len(model.class_names)] or [(0, len(model.class_names) - 1)]
    return to_grid(torch.cat([class_walk(model, classes, a, b, steps) for a, b in pairs]), nrow=steps, scale=scale)


@torch.no_grad()
def latent_grid(model: VAE, n: int = 20, scale: int = 2) -> np.ndarray:
    """For a 2-D latent: decode an n x n grid at Normal quantiles, the manifold figure of Kingma & Welling (2014)."""
    return to_grid(model.decode(plane_grid(n).to(model.device)), nrow=n, scale=scale, padding=0)


def tsne_figure(
    coords: np.ndarray, labels: np.ndarray, class_names: list[str], images: np.ndarray, thumbs_per_class: int = 2
) -> Figure:
    """Scatter of t-SNE coordinates coloured by class, with a legend and a few image thumbnails on top."""
    fig = Figure(figsize=(9, 8))
    ax = fig.subplots()
    colours = list(class_colours(class_names).values())
    for c, name in enumerate(class_names):
        mask = labels == c
        ax.scatter(coords[mask, 0], coords[mask, 1], s=6, color=colours[c], label=name, alpha=0.7)
    rng = np.random.default_rng(0)
    for c in range(len(class_names)):
        members = np.flatnonzero(labels == c)
        for i in rng.choice(members, size=min(thumbs_per_class, len(members)), replace=False):
            thumb = images[i].transpose(1, 2, 0).squeeze()
            box = OffsetImage(thumb, zoom=0.9, cmap="gray" if thumb.ndim == 2 else None)
            ax.add_artist(AnnotationBbox(box, coords[i], frameon=True, pad=0.1, bboxprops={"edgecolor": colours[c]}))
    ax.legend(markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class")
    ax.set_title(f"t-SNE of the posterior means of {len(labels)} test images")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def loss_curve_figure(history: list[dict]) -> Figure:
    """Train and validation -ELBO per epoch, with the KL part on a second panel."""
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 3.5))
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [r["train_loss"] for r in history], label="train")
    left.plot(epochs, [r["val_loss"] for r in history], label="validation")
    left.set(xlabel="epoch", ylabel="-ELBO (nats / image)", title="loss")
    left.legend()
    right.plot(epochs, [r["train_kl"] for r in history], label="train KL")
    right.plot(epochs, [r["val_kl"] for r in history], label="validation KL")
    right.set(xlabel="epoch", ylabel="nats / image", title="KL(q(z|x) || p(z))")
    right.legend()
    fig.tight_layout()
    return fig
