"""Images in and out of the model: uint8 pixels to floats and back, grids, PNG and GIF bytes, a drawing or photo
made MNIST-like, and the class colours every view uses.

Only numpy, torch and PIL are imported here (no torchvision, no matplotlib), so the app starts in the time it takes
to import those.
"""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import torch
from PIL import Image

# matplotlib's tab10 and tab20 palettes, as hex: the t-SNE figure (matplotlib) and the app's map (Gradio) colour
# classes alike without the app importing matplotlib.
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
TAB20 = [
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
    "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
]  # fmt: skip


def class_colours(class_names: list[str]) -> dict[str, str]:
    """Class name → colour: tab10 for up to 10 classes, tab20 (repeating) beyond."""
    palette = TAB10 if len(class_names) <= 10 else TAB20
    return {name: palette[i % len(palette)] for i, name in enumerate(class_names)}


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [0, 1], on their own device."""
    return images.float().div_(255)


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
