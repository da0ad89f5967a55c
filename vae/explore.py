"""What the app and the figures compute from a trained model: samples, latent walks, encoding a drawing.

Pure functions of (model, inputs): no files, no UI. The Gradio handlers and the trainer's figures call
these same functions, so a walk in the app is the walk in the model card. Only torch, numpy and PIL are
imported here (no torchvision, no matplotlib), so the app starts in the time it takes to import those.
"""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import torch
from PIL import Image

from vae.model import VAE

START_POINTS = ("mean", "sample")
INTERPOLATIONS = ("linear", "spherical")
# Drawn start points use this fraction of a class's spread: at the full spread about one draw in four
# decodes to a digit that its nearest test images say is another class; at half, about one in thirty.
SAMPLE_SPREAD = 0.5


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


def has_class_statistics(model: VAE) -> bool:
    """Whether the trainer filled in the class means (a freshly built VAE holds zeros)."""
    return bool(model.class_means.abs().sum() > 0)


def typical(latents: torch.Tensor, labels: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Mask (N,) of the examples whose k nearest other latents mostly share their label: clear examples."""
    dist = torch.cdist(latents.float(), latents.float())  # (N, N)
    dist.fill_diagonal_(float("inf"))
    nearest = dist.topk(min(k, len(latents) - 1), largest=False).indices  # (N, k)
    return (labels[nearest] == labels[:, None]).float().mean(dim=1) > 0.5


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


def prepare_drawing(image: np.ndarray, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """A drawing or photo (H, W), (H, W, 3) or (H, W, 4) uint8 → a (1, C, H, W) tensor in [0, 1] made the
    way MNIST was made.

    MNIST digits are white on black, size-normalised to fit a 20x20 box (keeping the aspect ratio) and
    centred by centre of mass in a 28x28 field (LeCun et al. 1998). Dark-on-light input is inverted and
    its contrast stretched (paper → 0, the strongest stroke → 1) first. A blank image gives zeros.
    Colour models (custom data) just get a resize.
    """
    channels, height, width = image_shape
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 4:  # RGBA from a sketchpad: composite over white paper
        alpha = array[..., 3:4].astype(np.float32) / 255
        array = (array[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    img = Image.fromarray(array.astype(np.uint8))
    if channels == 3:
        out = np.asarray(img.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
        return torch.from_numpy(out / 255).permute(2, 0, 1)[None]
    gray = np.asarray(img.convert("L"), dtype=np.float32) / 255  # (H, W)
    if np.median(gray) > 0.5:  # dark strokes on a light background → MNIST's light on dark
        gray = 1 - gray
    background, peak = float(np.median(gray)), float(gray.max())
    blank = torch.zeros(1, 1, height, width)
    if peak - background < 0.1:  # nothing drawn
        return blank
    gray = np.clip((gray - background) / (peak - background), 0, 1)
    ys, xs = np.nonzero(gray > 0.1)
    crop = gray[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    box = int(round(min(height, width) * 20 / 28))
    scale = box / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))  # (w, h) for PIL
    small = Image.fromarray((crop * 255).round().astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    small = np.asarray(small, dtype=np.float32) / 255  # (h, w)
    if small.sum() == 0:
        return blank
    rows, cols = np.indices(small.shape)
    cy, cx = (rows * small).sum() / small.sum(), (cols * small).sum() / small.sum()  # centre of mass
    top = int(np.clip(round(height / 2 - cy), 0, height - small.shape[0]))
    left = int(np.clip(round(width / 2 - cx), 0, width - small.shape[1]))
    canvas = np.zeros((height, width), dtype=np.float32)
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    return torch.from_numpy(canvas)[None, None]


def to_grid(images: torch.Tensor, nrow: int, scale: int = 1, padding: int = 2, pad_value: float = 0.5) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] → one uint8 array (H', W') or (H', W', 3), nearest-neighbour upscaled.

    The layout and pixels of torchvision's make_grid, in numpy, so the app need not import torchvision at
    start-up; the trainer's figures use it too.
    """
    x = to_uint8(images)  # (N, C, H, W)
    n, channels, height, width = x.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    fill = int(torch.tensor(pad_value * 255).round())  # 128, as make_grid rounds it
    grid = np.full((rows * (height + padding) + padding, cols * (width + padding) + padding, channels), fill, np.uint8)
    for i in range(n):
        top, left = padding + (i // cols) * (height + padding), padding + (i % cols) * (width + padding)
        grid[top : top + height, left : left + width] = x[i].transpose(1, 2, 0)
    return upscale(grid[..., 0] if channels == 1 else grid, scale)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [0, 1] → uint8 pixels, rounded as torchvision's make_grid and save_image round them."""
    return (images.detach().float().cpu().clamp(0, 1) * 255).round().byte().numpy()


def upscale(array: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of an image array (H, W[, C]) by an integer factor: crisp pixels."""
    return array.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else array


def to_gif(images: torch.Tensor, scale: int = 4, frame_ms: int = 80, hold_ms: int = 600) -> bytes:
    """Images (N, C, H, W) in [0, 1] → an animated GIF that plays them forward then back, looping,
    holding the first and last frames so the two ends can be seen."""
    frames = [Image.fromarray(to_grid(image[None], nrow=1, scale=scale, padding=0)) for image in images]
    frames += frames[-2:0:-1]  # ping-pong: back to the start without repeating the ends
    durations = [hold_ms if i in (0, len(images) - 1) else frame_ms for i in range(len(frames))]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False
    )
    return buffer.getvalue()


def png(array: np.ndarray) -> bytes:
    """uint8 pixels (H, W) or (H, W, 3) → a PNG, written directly: for 28x28 digits PIL's fixed cost per
    image would be most of the work (64 images: 9 ms instead of 19)."""
    height, width = array.shape[:2]
    rows = np.zeros((height, 1 + array[0].size), np.uint8)  # each row starts with its filter type: 0, none
    rows[:, 1:] = array.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if array.ndim == 2 else 2, 0, 0, 0)  # 8-bit grey or RGB

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
        + chunk(b"IEND", b"")
    )
