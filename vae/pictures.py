"""The work of each tab: checked values → vae.classes / vae.latent / vae.imaging → files in the app's output store
and the values the page shows. No layout and no checks of raw values here (vae.checks)."""

from __future__ import annotations

import math
import re
import threading
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from vae.assets import Assets
from vae.checks import image_path, literal, read_image
from vae.classes import class_latent, class_walk_latents, nearest_class, sample_class
from vae.errors import UserError
from vae.imaging import png, prepare_drawing, to_gif, to_grid, to_uint8
from vae.latent import place_on_map, walk
from vae.output_files import FILE_ROUTE, cache_files
from vae.posterior import active_dimensions, ellipse, kl_per_dimension, posterior_samples, spread
from vae.steering import attribute_latent, slide_latent

ENCODE_WALK_STEPS = 10
GRID_WIDTH = 720  # sample grids and walk strips are upscaled (nearest neighbour) to about this width
GIF_SCALE = 4
MAP_NEIGHBOURS = 10
SLIDE_SIZE = 224  # the Sliders tab's digit is upscaled (nearest neighbour) to about this many pixels a side
DIGIT_LATENTS = 64  # posterior means of uploaded digits kept, so that moving a slider does not encode it again
YOU = "your digit"  # the extra class of the point placed on the t-SNE map


def grid_scale(images: int, nrow: int, width: int) -> int:
    """The nearest-neighbour factor that brings a grid of `nrow` columns to about GRID_WIDTH pixels."""
    return max(1, min(8, round(GRID_WIDTH / (min(images, nrow) * (width + 2) + 2))))


def strip(images: torch.Tensor) -> bytes:
    """Images (N, C, H, W) in one row, upscaled, as a PNG."""
    return png(to_grid(images, nrow=len(images), scale=grid_scale(len(images), len(images), images.shape[-1])))


def sample_files(
    assets: Assets, n: int, seed: int, temperature: float, label: int | None = None
) -> tuple[str, list[str]]:
    """n images decoded from z ~ N(0, temperature² I), or from the region of class `label` (its mean and covariance,
    the spread scaled by temperature) → a square-ish grid and each image alone, as PNG files."""
    if label is None:
        images = assets.model.sample(n, seed=seed, temperature=temperature)  # (n, C, H, W)
    else:
        images = sample_class(assets.model, assets.steering, label, n, seed, temperature)  # (n, C, H, W)
    nrow = math.ceil(math.sqrt(n))
    grid = to_grid(images, nrow=nrow, scale=grid_scale(n, nrow, images.shape[-1]))
    pixels = to_uint8(images).transpose(0, 2, 3, 1)  # (n, H, W, C)
    singles = {f"sample-{i}.png": png(p.squeeze(-1) if p.shape[-1] == 1 else p) for i, p in enumerate(pixels)}
    grid_path, *singles_paths = cache_files({"samples.png": png(grid), **singles})
    return grid_path, singles_paths


def walk_latents(assets: Assets, a: int, b: int, steps: int, mode: str, start: str, seed: int) -> torch.Tensor:
    """The latents (steps, D) of the walk from class a to class b, which walk_files decodes."""
    if assets.steering is None:
        raise UserError(f"Walks between classes are off for this checkpoint. {assets.no_steering}")
    return class_walk_latents(assets.steering, a, b, steps, mode, start, seed)


def walk_files(assets: Assets, a: int, b: int, steps: int, mode: str, start: str, seed: int) -> tuple[str, str]:
    """The walk from class a to class b → a strip of its frames (PNG) and an animation (GIF)."""
    with torch.no_grad():
        images = assets.model.decode(walk_latents(assets, a, b, steps, mode, start, seed).to(assets.model.device))
    # Files named by class index: names such as Fashion-MNIST's "T-shirt/top" cannot be file names.
    files = {f"walk-{a}-{b}.png": strip(images), "walk.gif": to_gif(images, scale=GIF_SCALE)}
    strip_path, gif_path = cache_files(files)
    return strip_path, gif_path


CARD_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(([^)\s]*)\)")  # ![caption](target) in a model card


def card_with_figures(assets: Assets, card: str) -> str:
    """The model card with its figures shown: each `![caption](name.png)` that names one of the folder's card figures
    (Assets.card_figures) links to a copy in the app's cache, where Gradio serves it; any other image (a file the
    folder lacks, or a picture elsewhere on the web) is left out, so that the page loads nothing from outside."""
    figures = assets.card_figures
    paths = dict(zip(figures, cache_files(figures, pin=assets.name), strict=True)) if figures else {}

    def shown(image: re.Match) -> str:
        path = paths.get(image[2])
        return f"![{image[1]}]({FILE_ROUTE}{urllib.parse.quote(path)})" if path else ""

    return CARD_IMAGE.sub(shown, card)


def tsne_figure_file(assets: Assets) -> str | None:
    """The checkpoint's cached t-SNE figure as a file in Gradio's cache. Gradio serves only files in its cache,
    the working directory or the temp directory, and a Hub checkpoint lives in the Hugging Face cache."""
    return cache_files({"tsne.png": assets.tsne_png}, pin=assets.name)[0] if assets.tsne_png else None


@dataclass
class Encoded:
    """One image as the model sees it, and what the Your digit tab shows of it."""

    model_input: str  # PNG: the image made MNIST-like, upscaled
    reconstruction: str  # PNG: decoded from its posterior mean
    nearest: str  # the class whose mean is nearest (vae.classes); "" without the class statistics
    points: pd.DataFrame | None  # the t-SNE map with the image's point (class YOU); None without a map
    walk: str | None  # PNG: the walk from it to the target class's mean; None without the class statistics
    notes: str  # where it lands on the map, and what is off


def encode_image(assets: Assets, image: np.ndarray, target: int | None) -> Encoded:
    """An image (H, W[, C]) uint8 → its input, reconstruction, nearest class, place on the map and a walk to
    `target` (a class index; None when the checkpoint has no class statistics)."""
    model = assets.model
    x = prepare_drawing(image, model.image_shape)  # (1, C, H, W), MNIST-style
    if not x.any():
        raise UserError("The image is blank: draw a digit (any colour on a plain background) or upload one.")
    with torch.no_grad():
        mu, _ = model.encode(x.to(model.device))  # (1, D)
        reconstruction = model.decode(mu)
    scale = max(1, 224 // model.image_shape[-1])
    files = {
        name: png(to_grid(t, nrow=1, scale=scale, padding=0))
        for name, t in (("input.png", x), ("rec.png", reconstruction))
    }
    notes, nearest = [], ""
    if assets.steering is not None:
        nearest = assets.class_names[nearest_class(assets.steering, mu[0])]
        files[f"to-{target}.png"] = strip(walk(model, mu[0], class_latent(assets.steering, target), ENCODE_WALK_STEPS))
    else:
        notes.append(literal(assets.no_steering))
    points, note = map_with_point(assets, mu[0])
    notes.append(note)
    model_input, reconstruction_path, *walk_path = cache_files(files)
    return Encoded(model_input, reconstruction_path, nearest, points, (walk_path or [None])[0], "\n\n".join(notes))


def test_digit(assets: Assets, label: int) -> tuple[np.ndarray, str] | None:
    """The first test digit of class `label` on the model's map (any class's when it has none) as an (H, W[, C]) uint8
    image, and its class; None when the folder keeps no test digits."""
    images = None if assets.tsne is None else assets.tsne.get("images")  # (N, C, H, W) uint8
    if images is None or len(images) == 0:
        return None
    labels = assets.tsne["labels"]
    index = int(torch.nonzero(labels == label)[0, 0]) if bool((labels == label).any()) else 0
    return images[index].permute(1, 2, 0).squeeze(-1).numpy(), assets.class_names[int(labels[index])]


def slider_start(assets: Assets, start: str, label: int, seed: int, image) -> torch.Tensor:
    """Where the sliders start: class `label`'s mean, a seeded random point of its region, or the posterior mean of
    the uploaded `image` (a payload, read and encoded once, then remembered) → a latent (D,)."""
    if start != "digit":  # "mean" or "sample": the walk's start points too (vae.classes)
        return class_latent(assets.steering, label, start, seed)
    path = image_path(image)
    key = (assets.name, assets.source, path)
    with DIGIT_LOCK:
        if key in DIGITS:
            DIGITS.move_to_end(key)
            return DIGITS[key]
    model = assets.model
    x = prepare_drawing(read_image(image), model.image_shape)  # (1, C, H, W)
    if not x.any():
        raise UserError("The image is blank: upload a picture of a digit (any colour on a plain background).")
    with torch.no_grad():
        mu = model.encode(x.to(model.device))[0][0].cpu()  # (D,)
    with DIGIT_LOCK:
        DIGITS[key] = mu
        while len(DIGITS) > DIGIT_LATENTS:
            DIGITS.popitem(last=False)
    return mu


DIGITS: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()  # (checkpoint, upload) → posterior mean
DIGIT_LOCK = threading.Lock()


def digit_png(assets: Assets, z: torch.Tensor) -> bytes:
    """One latent (D,) decoded → a PNG of the digit, upscaled by a whole factor to about SLIDE_SIZE pixels."""
    model = assets.model
    with torch.no_grad():
        x = model.decode(z[None].to(model.device)).cpu()  # (1, C, H, W)
    return png(to_grid(x, nrow=1, scale=max(1, SLIDE_SIZE // model.image_shape[-1]), padding=0))


def slide_file(
    assets: Assets, start: torch.Tensor, offsets: list[float], amounts: dict[str, float] | None = None
) -> str:
    """The start latent moved by offsets[k] standard deviations along principal direction k, and by amounts[name] along
    attribute `name`'s direction (vae.attributes) → a PNG file of the digit."""
    z = slide_latent(assets.steering, start, offsets)
    for attribute, amount in (amounts or {}).items():
        z = attribute_latent(assets.steering, z, attribute, amount)
    return cache_files({"slide.png": digit_png(assets, z)})[0]


def map_with_point(assets: Assets, z: torch.Tensor) -> tuple[pd.DataFrame | None, str]:
    """The t-SNE map's points with one for the latent z (D,) added, as class YOU, and a note that says where it
    is; without a map, None and why."""
    if assets.tsne is None:
        return None, literal(assets.no_map)
    x, y = place_on_map(z, assets.tsne["latents"], assets.tsne["coords"], MAP_NEIGHBOURS).tolist()
    you = pd.DataFrame({"x": [x], "y": [y], "class": [YOU]})
    points = pd.concat([assets.map_points, you], ignore_index=True)
    note = (
        f"Your digit is the large black dot on the t-SNE map, at ({x:.1f}, {y:.1f}): it is placed among its "
        f"{MAP_NEIGHBOURS} nearest test images in latent space."
    )
    return points, note


def article(name: str) -> str:
    """The indefinite article a class name reads with: a 3, an 8, an 11, an Ankle boot, a T-shirt/top."""
    return "an" if re.match(r"[aeiou8]|1[18](?!\d)", name, re.IGNORECASE) else "a"


POSTERIOR_SAMPLES = 16  # digits decoded from samples of q(z|x) in the Your digit tab's grid


@dataclass
class Posterior:
    """What the Your digit tab shows of an image's posterior q(z|x) (vae.posterior)."""

    samples: str  # PNG: POSTERIOR_SAMPLES digits decoded from z ~ q(z|x), seeded
    kl: pd.DataFrame  # dimension, KL (nats), active: one bar per latent dimension
    summary: str  # the spread, the KL and the active dimensions, in words
    plane: str | None  # PNG: a 2-D model's latent plane with the posterior at 1 and 2 sd; None for another model


def active_count(assets: Assets) -> tuple[torch.Tensor | None, str]:
    """The model's active dimensions (vae.posterior's rule) and where they were counted: over the whole test set by
    vae.evaluate or the trainer (metrics.json), else over the test digits of its map; None without either."""
    latents = assets.tsne.get("latents") if assets.tsne is not None else None
    active = active_dimensions(latents) if latents is not None else None
    counted = assets.metrics.get("test_active_dims") if isinstance(assets.metrics, dict) else None
    if isinstance(counted, int) and not isinstance(counted, bool):
        return active, f"{counted} of its {assets.model.latent_dim} latent dimensions are active over the test set"
    if active is not None:
        return active, (
            f"{int(active.sum())} of its {assets.model.latent_dim} latent dimensions are active over the "
            f"{len(latents):,} test digits of its map"
        )
    return None, ""


def posterior_files(assets: Assets, image: np.ndarray, seed: int = 0) -> Posterior:
    """An image (H, W[, C]) uint8 → its posterior q(z|x): digits decoded from samples of it, the KL of each latent
    dimension, the spread over the active dimensions and, for a 2-D model, its ellipses on the latent plane."""
    model = assets.model
    x = prepare_drawing(image, model.image_shape)  # (1, C, H, W)
    if not x.any():
        raise UserError("The image is blank: draw a digit (any colour on a plain background) or upload one.")
    with torch.no_grad():
        mu, logvar = (t[0].cpu() for t in model.encode(x.to(model.device)))  # (D,), (D,)
    images = posterior_samples(model, mu, logvar, POSTERIOR_SAMPLES, seed)  # (16, C, H, W)
    kl = kl_per_dimension(mu, logvar)  # (D,)
    active, counted = active_count(assets)
    flags = active.tolist() if active is not None else [True] * len(kl)
    bars = pd.DataFrame(
        {
            "dimension": [f"z{d + 1:0{len(str(len(kl)))}d}" for d in range(len(kl))],  # z01 … z32: in order as text
            "KL (nats)": [round(float(v), 4) for v in kl],
            "active": ["active" if a else "inactive" for a in flags],
        }
    )
    total = float(spread(logvar, active))
    summary = (
        f"**{POSTERIOR_SAMPLES} digits decoded from z ~ q(z|x)**, the encoder's distribution for this image: where they "
        f"differ, the model is unsure. Its spread (the total variance of q(z|x) over the active dimensions) is "
        f"**{total:.3f}**; its KL from the prior is {float(kl.sum()):.2f} nats, "
        f"{float(kl[active].sum()) if active is not None else float(kl.sum()):.2f} of them in the active dimensions. "
        + (
            f"The model: {counted} (the variance of their posterior mean above 0.01, Burda et al. 2015)."
            if counted
            else ""
        )
    )
    files = {"posterior.png": png(to_grid(images, nrow=8, scale=grid_scale(POSTERIOR_SAMPLES, 8, images.shape[-1])))}
    plane = assets.click_map if assets.click_map is not None and assets.click_map.kind == "plane" else None
    if plane is not None:
        files["posterior-plane.png"] = png(plane.with_curves([ellipse(mu, logvar, 1.0), ellipse(mu, logvar, 2.0)]))
    paths = cache_files(files)
    return Posterior(paths[0], bars, summary, paths[1] if plane is not None else None)
