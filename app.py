"""MNIST VAE studio: samples, digit-to-digit walks, the t-SNE map and your own drawing, in a Gradio app.

python app.py                                     # checkpoints/vae-mnist on http://127.0.0.1:7860
python app.py --checkpoint user/vae-mnist         # a model that train.py pushed to the Hugging Face Hub
VAE_CHECKPOINT=checkpoints/vae-fashion-mnist python app.py --host 0.0.0.0 --port 7861

Every event has an api_name, so gradio_client can call /sample, /walk, /tsne, /encode, /encode_drawing
and /about. Inputs reach the handlers raw (preprocess=False) and each handler checks them, so an API
caller gets the same clear message as a user of the page for a count out of range or a file that is
not an image. Nothing is trained or recomputed here: the model folder carries the class means, the
t-SNE map and its figure, all computed once by train.py.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import html
import itertools
import math
import os
import reprlib
import shutil
import sys
import threading
from collections import Counter, OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch
from gradio.utils import get_upload_folder
from PIL import Image, ImageOps
from starlette.middleware import Middleware

from vae.assets import Assets, load_assets
from vae.errors import UserError, clip
from vae.folder import looks_local
from vae.hub import metrics_table
from vae.imaging import class_colours, png, prepare_drawing, to_gif, to_grid, to_uint8
from vae.latent import INTERPOLATIONS, START_POINTS, class_latent, class_walk, nearest_class, place_on_map, walk

ROOT = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "vae-mnist"

MAX_IMAGES = 256  # samples per request
STEPS = (2, 32)  # frames in a walk
MAX_TEMPERATURE = 2.0
MAX_SEED = 2**32 - 1
MAX_UPLOAD_PIXELS = 4096 * 4096  # larger images are refused before they are decoded
WORK_SIZE = 1024  # uploads are shrunk to fit this box before centring: plenty for a 28x28 digit
MAX_FILE_SIZE = "10mb"  # the upload route refuses bigger files
QUEUE_SIZE = 64  # requests waiting beyond this are turned away ("queue full") instead of piling up
CONCURRENCY = 2  # requests computed at once, over all events: one per core of a small Space
MODEL_WORK = "model"  # the one concurrency group every event joins
ENCODE_WALK_STEPS = 10
GRID_WIDTH = 720  # sample grids and walk strips are upscaled (nearest neighbour) to about this width
GIF_SCALE = 4
MAP_NEIGHBOURS = 10
YOU = "your digit"  # the extra class of the point placed on the t-SNE map
ECHO = 120  # characters of a caller's value that an error message repeats: a 5 MB class name is not sent back
OUTPUTS = "vae-studio"  # the app's folder in Gradio's cache: every PNG and GIF it serves, pruned to the budgets below
OUTPUT_BYTES = 200 * 2**20  # on disk for them at most: ~180 requests of 256 samples (1.1 MB each in 4 kB blocks)
OUTPUT_FILES = 50_000  # and at most this many files: about as many as fit in OUTPUT_BYTES at one block each
KEEP_NEWEST = 2 * CONCURRENCY  # request folders never pruned: those in flight and as many just answered

CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
#walk-gif img { width: 224px !important; height: 224px !important; object-fit: contain !important; }
"""
SESSIONS = 500  # Gradio keeps ~0.1-0.5 MB of page state per visitor; the app needs none of it between calls
MAX_REQUEST_BYTES = 64 * 1024  # a request body other than an upload (the page's calls send under 2 kB)
LAUNCH_OPTIONS = {"css": CSS, "max_file_size": MAX_FILE_SIZE, "show_error": False, "state_session_capacity": SESSIONS}

ABOUT = """
## What is a VAE?

A variational autoencoder (Kingma & Welling, 2014) learns to squeeze each image into a short vector of
numbers, its *latent*, and to rebuild the image from it. The encoder outputs a small Gaussian cloud for
every image rather than a single point, and training keeps those clouds close to a standard normal
distribution. That is what makes the latent space smooth: any point drawn from N(0, I) decodes to a
plausible image (**Samples**), the straight line between two digits passes through digits
(**Latent walk**), and images of the same class sit together (**t-SNE**, **Your digit**).

This one is a plain stack of `nn.Linear` layers, trained with the studio's `train.py`.
"""
LINKS = """
## Links

- Kingma & Welling, *Auto-Encoding Variational Bayes* (2014): https://arxiv.org/abs/1312.6114
- Gradio: https://www.gradio.app · Hugging Face Hub: https://huggingface.co
"""


def find_checkpoints(default: Assets, folder: Path = ROOT / "checkpoints") -> dict[str, str]:
    """Other model folders committed beside the default (e.g. Fashion-MNIST), by name; loaded when chosen."""
    found = {}
    for path in sorted(folder.glob("*/config.json")) if folder.is_dir() else []:
        checkpoint = path.parent
        if checkpoint.resolve() != Path(default.source).resolve() and checkpoint.name != default.name:
            found[checkpoint.name] = str(checkpoint)
    return found


class Catalog:
    """The checkpoints on offer, each loaded on first use and then kept (a model is a few MB)."""

    def __init__(self, default: Assets, others: dict[str, str] | None = None):
        self.default = default.name
        self.sources = {default.name: default.source, **(others or {})}
        self.loaded = {default.name: default}
        self.lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.sources)

    def get(self, name) -> Assets:
        if name is None or name == "":
            name = self.default
        if not isinstance(name, str) or name not in self.sources:
            raise fail(f"Unknown checkpoint {shown(name)}: choose one of {', '.join(self.sources)}.")
        if name not in self.loaded:  # loaded ones are served without waiting for the lock
            with self.lock:  # one load at a time, and each checkpoint once
                if name not in self.loaded:
                    try:
                        self.loaded[name] = load_assets(self.sources[name], name)
                    except UserError as err:
                        raise fail(str(err)) from None
        return self.loaded[name]


# ---------------------------------------------------------------------------------------------------------------------
# Checking raw inputs (what an API caller sends is not limited by the page's sliders)
# ---------------------------------------------------------------------------------------------------------------------


def fail(message: str) -> gr.Error:
    """An error for the user: a message in the page, an AppError for gradio_client; no traceback in the log."""
    return gr.Error(html.escape(message, quote=False), print_exception=False)  # the page renders it as HTML


SHORT_REPR = reprlib.Repr()  # a few items and levels of a list or dict: big or deeply nested input stays cheap to show
SHORT_REPR.maxlevel, SHORT_REPR.maxstring, SHORT_REPR.maxother = 3, 40, 40


def shown(value) -> str:
    """A caller's value as an error message repeats it: its repr, cut to about ECHO characters."""
    try:
        text = repr(value[: ECHO + 1]) if isinstance(value, str) else SHORT_REPR.repr(value)
    except Exception:  # an int past Python's 4,300-digit repr limit, and the like
        text = f"a {type(value).__name__}"
    return text if len(text) <= ECHO else text[: ECHO - 1] + "…"


def check_int(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        whole = False
    else:  # an int is compared as it is: JSON has ints past a float's range, which math.isfinite cannot take
        whole = isinstance(value, int) or (math.isfinite(value) and value == int(value))
    if not whole or not low <= value <= high:
        raise fail(f"{name} must be a whole number from {low} to {high}, got {shown(value)}.")
    return int(value)


def check_float(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:  # NaN fails too
        raise fail(f"{name} must be a number from {low} to {high}, got {shown(value)}.")
    return float(value)


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise fail(f"{name} must be one of {', '.join(choices)}, got {shown(value)}.")
    return value


def check_class(value, name: str, assets: Assets) -> int:
    """A class name of the checkpoint (or its index) → its index."""
    names = assets.class_names
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    classes = clip(", ".join(map(str, names)), 200)  # a checkpoint may have many classes
    raise fail(f"{name} must be one of the classes of {assets.name}: {classes}; got {shown(value)}.")


def require_class_statistics(assets: Assets) -> None:
    if assets.no_class_means:
        raise fail(assets.no_class_means)


def image_path(payload) -> str:
    """The uploaded file in an Image payload ({"path": ...}) or a Sketchpad one ({"composite": {...}})."""
    if isinstance(payload, dict) and "composite" in payload:
        payload = payload.get("composite")
    if payload is None:
        raise fail("No image: draw a digit on the sketchpad or upload a picture of one.")
    path = payload.get("path") if isinstance(payload, dict) else None
    if not isinstance(path, str) or not path:
        raise fail("Expected an image file (an upload), got something else.")
    # Gradio checks that a file payload was uploaded only when it is marked as one ("meta"); an unmarked
    # {"path": ...} reaches the handler as sent, and could name any file of the server, or a pipe that blocks.
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(os.path.realpath(get_upload_folder())) or not real.is_file():
        raise fail("Expected an image file that was uploaded to this app; the path sent is not one.")
    return path


def read_image(payload) -> np.ndarray:
    """An uploaded or drawn image → an RGB(A) uint8 array at most WORK_SIZE on a side, or a clear gr.Error."""
    path = image_path(payload)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise fail(
                    f"The image is {width}x{height} pixels; this app takes images of up to "
                    f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels. A digit needs far fewer: shrink it first."
                )
            img.draft("RGB", (WORK_SIZE, WORK_SIZE))  # JPEG: decode at a fraction of the size directly
            img = ImageOps.exif_transpose(img)  # photos from phones
            img.thumbnail((WORK_SIZE, WORK_SIZE))
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    except gr.Error:
        raise
    except Image.DecompressionBombError:  # a header claiming billions of pixels: PIL refuses it at open
        raise fail(
            f"The image is larger than this app takes ({MAX_UPLOAD_PIXELS // 1_000_000} megapixels at most). "
            "A digit needs far fewer: shrink it first."
        ) from None
    except Exception as err:  # PIL raises many kinds for files that are not images or are cut short
        raise fail(
            f"That file is not an image this app can read ({type(err).__name__}). Upload a PNG, JPEG, WebP, "
            "GIF or BMP picture of a digit."
        ) from None


# ---------------------------------------------------------------------------------------------------------------------
# Output files: PNGs and GIFs written once into the app's folder of Gradio's cache, served from there, pruned
# ---------------------------------------------------------------------------------------------------------------------


class OutputStore:
    """The app's output files on disk: one folder per distinct request under `root`, named by the hash of its
    files, pruned least recently used first to OUTPUT_BYTES on disk and OUTPUT_FILES files, at any request rate.

    Left to Gradio's delete_cache (files older than an hour, removed hourly), one client looping over /sample
    with 256 images (257 files, 1.1 MB on disk a call) left 13 GB and 2.8 M files an hour.
    - The index (folder → bytes, files) is kept in memory: a call costs O(1) bookkeeping besides the files it
      writes and deletes. What an earlier run left in `root` (a killed server) is counted once, at opening.
    - A folder is counted before its files are written and old folders are deleted before the lock is
      released, so the disk holds at most the budgets, in whole blocks as du counts them, unless the
      KEEP_NEWEST newest folders alone exceed them (4 x 1.1 MB at most).
    - The KEEP_NEWEST newest folders are never pruned (the client of a request just answered has still to
      fetch its files), nor one whose files are being written. A pruned folder asked for again is written
      again. Pinned folders (the t-SNE figures a page links to when it is built) are counted, never pruned.
    - `root` is one of Gradio's static paths, so Gradio serves the files where they are: it neither copies
      them nor records their paths for delete_cache (it would keep every path it ever served: a file pruned
      here is never found again, so its path would never be dropped).
    """

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.Lock()
        self.folders: OrderedDict[str, tuple[int, int]] = OrderedDict()  # name → (bytes, files), oldest first
        self.pinned: dict[str, tuple[int, int]] = {}
        self.writing: Counter[str] = Counter()  # folders whose files a call is writing now
        self.bytes = self.files = 0
        root.mkdir(parents=True, exist_ok=True)
        self.block = os.statvfs(root).f_frsize if hasattr(os, "statvfs") else 4096
        gr.set_static_paths([root])
        for _, used, count, name in sorted(self.earlier_folders()):  # oldest first, by modification time
            self.count(name, used, count)
        with self.lock:
            self.prune()

    def earlier_folders(self) -> list[tuple[float, int, int, str]]:
        """(modified, bytes on disk, files, name) of each folder already in root."""
        found = []
        for entry in os.scandir(self.root):
            if not entry.is_dir(follow_symlinks=False):
                continue
            used, count = self.disk_use(entry.stat(follow_symlinks=False)), 0
            for parent, dirs, names in os.walk(entry.path):
                for name in dirs + names:
                    used += self.disk_use(os.lstat(os.path.join(parent, name)))
                count += len(names)
            found.append((entry.stat(follow_symlinks=False).st_mtime, used, count, entry.name))
        return found

    def disk_use(self, stat: os.stat_result) -> int:
        blocks = getattr(stat, "st_blocks", None)  # 512-byte units, on POSIX
        return blocks * 512 if blocks is not None else self.whole_blocks(stat.st_size)

    def whole_blocks(self, size: int) -> int:
        return -(-size // self.block) * self.block

    def footprint(self, files: dict[str, bytes]) -> tuple[int, int]:
        """Bytes on disk and files of a folder holding `files`: each file in whole blocks, and the folder's own
        blocks (128 bytes an entry is generous for a name and the temporary name it is written under)."""
        used = sum(self.whole_blocks(len(data)) for data in files.values())
        return used + self.whole_blocks(128 * len(files)) + self.block, len(files)

    def count(self, name: str, used: int, files: int) -> None:
        self.folders[name] = (used, files)
        self.bytes += used
        self.files += files

    def prune(self) -> None:
        """Delete the least recently used folders while over a budget, but not the KEEP_NEWEST newest nor those
        being written. Called under the lock; the oldest folder is nearly always the one deleted, so O(1) a folder."""
        while self.bytes > OUTPUT_BYTES or self.files > OUTPUT_FILES:
            prunable = itertools.islice(self.folders, max(0, len(self.folders) - KEEP_NEWEST))
            name = next((name for name in prunable if name not in self.writing), None)
            if name is None:
                return
            used, files = self.folders.pop(name)
            shutil.rmtree(self.root / name, ignore_errors=True)
            self.bytes -= used
            self.files -= files

    def put(self, files: dict[str, bytes], pin: bool = False) -> list[str]:
        """Named contents → their paths, in a folder named by their hash. Each file is written beside its name
        and renamed into place, so no reader sees half a file; one already there is not written again."""
        digest = hashlib.sha256()
        for name, data in files.items():
            digest.update(name.encode() + b"\0" + data)
        key = digest.hexdigest()[:40]
        with self.lock:
            if key in self.folders:
                self.folders.move_to_end(key)
            elif key not in self.pinned:
                self.count(key, *self.footprint(files))
            if pin and key in self.folders:
                self.pinned[key] = self.folders.pop(key)
            self.writing[key] += 1
            self.prune()
        try:
            folder = self.root / key
            folder.mkdir(parents=True, exist_ok=True)
            paths = []
            for name, data in files.items():
                path = folder / name
                if not path.is_file():
                    writing = folder / f".{name}.{os.getpid()}-{threading.get_ident()}"
                    writing.write_bytes(data)
                    os.replace(writing, path)
                paths.append(str(path))
            os.utime(folder)  # recency on disk, for the order in which a restarted server prunes
        finally:
            with self.lock:
                self.writing -= Counter({key: 1})
        return paths


STORES: dict[Path, OutputStore] = {}  # one per Gradio cache (GRADIO_TEMP_DIR is read when a file is written)
STORES_LOCK = threading.Lock()


def cache_files(files: dict[str, bytes], pin: bool = False) -> list[str]:
    """Named contents → files in the app's folder of Gradio's cache (see OutputStore), served from there."""
    root = Path(get_upload_folder()) / OUTPUTS
    with STORES_LOCK:
        if root not in STORES:
            STORES[root] = OutputStore(root)
    return STORES[root].put(files, pin)


def grid_scale(images: int, nrow: int, width: int) -> int:
    """The nearest-neighbour factor that brings a grid of `nrow` columns to about GRID_WIDTH pixels."""
    return max(1, min(8, round(GRID_WIDTH / (min(images, nrow) * (width + 2) + 2))))


def strip(images: torch.Tensor) -> bytes:
    """Images (N, C, H, W) in one row, upscaled, as a PNG."""
    return png(to_grid(images, nrow=len(images), scale=grid_scale(len(images), len(images), images.shape[-1])))


# ---------------------------------------------------------------------------------------------------------------------
# Handlers: raw inputs → checked → vae.latent / vae.imaging → files and values for the outputs
# ---------------------------------------------------------------------------------------------------------------------


def sample(catalog: Catalog, num_images, seed, temperature, checkpoint=None) -> tuple[str, list[str]]:
    """Samples tab: images decoded from z ~ N(0, temperature² I) → a grid and the same images one by one."""
    assets = catalog.get(checkpoint)
    n = check_int(num_images, "Number of images", 1, MAX_IMAGES)
    seed = check_int(seed, "Seed", 0, MAX_SEED)
    temperature = check_float(temperature, "Temperature", 0.0, MAX_TEMPERATURE)
    images = assets.model.sample(n, seed=seed, temperature=temperature)  # (n, C, H, W)
    nrow = math.ceil(math.sqrt(n))
    grid = to_grid(images, nrow=nrow, scale=grid_scale(n, nrow, images.shape[-1]))
    pixels = to_uint8(images).transpose(0, 2, 3, 1)  # (n, H, W, C)
    singles = {f"sample-{i}.png": png(p.squeeze(-1) if p.shape[-1] == 1 else p) for i, p in enumerate(pixels)}
    grid_path, *gallery = cache_files({"samples.png": png(grid), **singles})
    return grid_path, gallery


def latent_walk(
    catalog: Catalog, class_a, class_b, steps, interpolation, start, seed, checkpoint=None
) -> tuple[str, str]:
    """Latent walk tab: from class A to class B → a strip of the frames and an animated GIF."""
    assets = catalog.get(checkpoint)
    a, b = check_class(class_a, "Class A", assets), check_class(class_b, "Class B", assets)
    steps = check_int(steps, "Steps", *STEPS)
    mode = check_choice(interpolation, "Interpolation", INTERPOLATIONS)
    start = check_choice(start, "Start points", START_POINTS)
    seed = check_int(seed, "Seed", 0, MAX_SEED)
    require_class_statistics(assets)
    images = class_walk(assets.model, a, b, steps, mode, start, seed, assets.bank)  # (steps, C, H, W)
    # Files named by class index: names such as Fashion-MNIST's "T-shirt/top" cannot be file names.
    files = {f"walk-{a}-{b}.png": strip(images), "walk.gif": to_gif(images, scale=GIF_SCALE)}
    return tuple(cache_files(files))


def tsne_figure(assets: Assets) -> str | None:
    """The checkpoint's cached t-SNE figure as a file in Gradio's cache. Gradio serves only files in its cache,
    the working directory or the temp directory, and a Hub checkpoint lives in the Hugging Face cache."""
    return cache_files({"tsne.png": assets.tsne_figure}, pin=True)[0] if assets.tsne_figure else None


def tsne_map(catalog: Catalog, checkpoint=None) -> tuple[str | None, pd.DataFrame]:
    """t-SNE tab: the cached figure and the saved coordinates, coloured by class (nothing is computed)."""
    assets = catalog.get(checkpoint)
    if assets.tsne is None:
        raise fail(assets.no_map)
    return tsne_figure(assets), assets.map_points


def encode(catalog: Catalog, image, target_class, checkpoint=None):
    """Your digit tab: an image → the model's input, its reconstruction, the nearest class, its place on
    the t-SNE map and a walk from it to the chosen class."""
    assets = catalog.get(checkpoint)
    model = assets.model
    stats = assets.no_class_means is None
    target = check_class(target_class, "Walk to class", assets) if stats else None
    x = prepare_drawing(read_image(image), model.image_shape)  # (1, C, H, W), MNIST-style
    if not x.any():
        raise fail("The image is blank: draw a digit (any colour on a plain background) or upload one.")
    with torch.no_grad():
        mu, _ = model.encode(x.to(model.device))  # (1, D)
        reconstruction = model.decode(mu)
    scale = max(1, 224 // model.image_shape[-1])
    files = {
        name: png(to_grid(t, nrow=1, scale=scale, padding=0))
        for name, t in (("input.png", x), ("rec.png", reconstruction))
    }
    notes = []
    nearest = ""
    if stats:
        nearest = assets.class_names[nearest_class(model, mu[0])]
        frames = walk(model, mu[0], class_latent(model, target), ENCODE_WALK_STEPS)
        files[f"to-{target}.png"] = strip(frames)
    else:
        notes.append(assets.no_class_means)
    points = None
    if assets.tsne is not None:
        x_map, y_map = place_on_map(mu[0], assets.tsne["latents"], assets.tsne["coords"], MAP_NEIGHBOURS).tolist()
        you = pd.DataFrame({"x": [x_map], "y": [y_map], "class": [YOU]})
        points = pd.concat([assets.map_points, you], ignore_index=True)
        notes.append(
            f"On the t-SNE map at ({x_map:.1f}, {y_map:.1f}): among its {MAP_NEIGHBOURS} nearest test images in latent space."
        )
    else:
        notes.append(assets.no_map)
    model_input, reconstruction_path, *walk_path = cache_files(files)
    return model_input, reconstruction_path, nearest, points, (walk_path or [None])[0], "\n\n".join(notes)


def finite(value) -> bool:
    """Whether a value is a finite number: metrics.json may hold strings, lists, NaN or ints past a float's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def numbers(metrics) -> dict[str, int | float]:
    """The metrics that are finite numbers: the only ones the page formats."""
    return {key: value for key, value in metrics.items() if finite(value)} if isinstance(metrics, dict) else {}


def about(catalog: Catalog, checkpoint=None) -> str:
    """About tab: what a VAE is, this checkpoint's card and metrics, links."""
    assets = catalog.get(checkpoint)
    metrics = numbers(assets.metrics)
    card = assets.card if isinstance(assets.card, str) else ""
    card = card or (f"## Test metrics\n\n{metrics_table(metrics)}" if metrics else "")
    hub = "" if looks_local(assets.source) else f"\n- This model on the Hub: https://huggingface.co/{assets.source}"
    return f"{ABOUT}\n{card}\n{LINKS}{hub}\n"


def status(assets: Assets) -> str:
    m = assets.model
    line = f"**{assets.name}**: {m.latent_dim}-d latent, classes {clip(', '.join(map(str, assets.class_names)), 300)}"
    if (loss := numbers(assets.metrics).get("test_loss")) is not None:
        line += f", test −ELBO {loss:.2f} nats/image"
    return "\n\n".join([line, *[f"⚠️ {p}" for p in assets.problems]])


def default_pair(assets: Assets) -> tuple[str | None, str | None]:
    names = assets.class_names
    if not names:  # nothing to walk between (load_assets refuses such a checkpoint; the page still builds)
        return None, None
    return (names[3], names[7]) if len(names) > 7 else (names[0], names[-1])  # 3 → 7: the original tutorial's walk


def select_checkpoint(catalog: Catalog, checkpoint):
    """The checkpoint dropdown: class choices, the map and the About text of the chosen model."""
    assets = catalog.get(checkpoint)
    a, b = default_pair(assets)
    names = assets.class_names
    return (
        status(assets),
        gr.update(choices=names, value=a),
        gr.update(choices=names, value=b),
        gr.update(choices=names, value=b),
        tsne_figure(assets),
        gr.update(value=assets.map_points, color_map=colours(assets)),
        gr.update(value=None, color_map=colours(assets)),
        about(catalog, checkpoint),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Layout and wiring
# ---------------------------------------------------------------------------------------------------------------------


def colours(assets: Assets) -> dict[str, str]:
    """Class → colour as in the cached figure, and black for the point of the user's digit."""
    return class_colours(assets.class_names) | {YOU: "#000000"}


def serialized(handler, outputs: list[gr.components.Component]):
    """The handler, returning its values in the outputs' wire format, for an event with postprocess=False.

    Gradio checks the path of every returned file twice, once per pass, and these checks are most of
    the time /sample takes (100 of 150 ms for a 64-image gallery on a busy 2-core machine). Converted
    here, one pass is left.
    """

    @functools.wraps(handler)  # keeps the signature: the API's parameter names
    def run(*args):
        return [output.postprocess(value).model_dump() for output, value in zip(outputs, handler(*args), strict=True)]

    return run


def scatter(label: str, assets: Assets, value: pd.DataFrame | None = None) -> gr.ScatterPlot:
    return gr.ScatterPlot(
        value,
        x="x",
        y="y",
        color="class",
        color_map=colours(assets),
        label=label,
        height=480,
        x_title="t-SNE 1",
        y_title="t-SNE 2",
    )


def pixel_image(label: str, **options) -> gr.Image:
    """An output image of digits: PNG unless told otherwise, drawn without smoothing (see CSS)."""
    return gr.Image(label=label, **({"format": "png"} | options), elem_classes="pixelated", interactive=False)


def build_demo(default: Assets, others: dict[str, str] | None = None) -> gr.Blocks:
    """The studio for `default` (and the other checkpoints by name → folder or Hub id), queue on."""
    catalog = Catalog(default, others)
    names = default.class_names
    a, b = default_pair(default)

    with gr.Blocks(title="MNIST VAE studio", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# MNIST VAE studio\nA variational autoencoder: sample it, walk between digits, draw your own.")
        with gr.Row():
            checkpoint = gr.Dropdown(
                catalog.names, value=default.name, label="Checkpoint", visible=len(catalog.names) > 1, scale=1
            )
            status_text = gr.Markdown(status(default))

        with gr.Tab("Samples"):
            with gr.Row():
                with gr.Column(scale=1):
                    num_images = gr.Slider(1, MAX_IMAGES, value=64, step=1, label="Number of images")
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED, elem_id="sample-seed")
                    temperature = gr.Slider(0.0, MAX_TEMPERATURE, value=1.0, step=0.05, label="Temperature")
                    sample_button = gr.Button("Sample", variant="primary", elem_id="sample-button")
                with gr.Column(scale=3):
                    grid = pixel_image("Samples", elem_id="sample-grid")
                    gallery = gr.Gallery(
                        label="The same images",
                        format="png",
                        columns=16,
                        elem_classes="pixelated",
                        height="auto",
                        elem_id="sample-gallery",
                    )

        with gr.Tab("Latent walk"):
            with gr.Row():
                with gr.Column(scale=1):
                    class_a = gr.Dropdown(names, value=a, label="From class")
                    class_b = gr.Dropdown(names, value=b, label="To class")
                    steps = gr.Slider(*STEPS, value=10, step=1, label="Steps")
                    interpolation = gr.Radio(list(INTERPOLATIONS), value="linear", label="Interpolation")
                    start = gr.Radio(
                        [("class means", "mean"), ("random examples of each class", "sample")],
                        value="mean",
                        label="Start and end points",
                    )
                    walk_seed = gr.Number(0, label="Seed (random examples)", precision=0, minimum=0, maximum=MAX_SEED)
                    walk_button = gr.Button("Walk", variant="primary", elem_id="walk-button")
                with gr.Column(scale=3):
                    walk_strip = pixel_image("The walk", elem_id="walk-strip")
                    walk_gif = pixel_image("Animated", format="gif", height=260, elem_id="walk-gif")

        with gr.Tab("t-SNE") as tsne_tab:
            gr.Markdown("The posterior means of test images, laid out in 2-D by t-SNE when the model was exported.")
            with gr.Row():
                tsne_image = gr.Image(tsne_figure(default), label="Cached figure", format="png", interactive=False)
                tsne_plot = scatter("Interactive map", default, default.map_points)

        with gr.Tab("Your digit"):
            with gr.Row():
                with gr.Column(scale=1):
                    with gr.Tab("Draw"):
                        sketch = gr.Sketchpad(
                            label="Draw a digit: pick the brush on the left, then draw",
                            elem_id="sketchpad",
                            canvas_size=(400, 400),
                            brush=gr.Brush(default_size=14, colors=["#000000"], color_mode="fixed"),
                            format="png",
                            type="filepath",
                        )
                        encode_drawing_button = gr.Button(
                            "Encode the drawing", variant="primary", elem_id="encode-drawing"
                        )
                    with gr.Tab("Upload"):
                        upload = gr.Image(
                            label="Upload an image", sources=["upload", "clipboard"], type="filepath", image_mode=None
                        )
                        encode_upload_button = gr.Button("Encode the image", variant="primary")
                    target = gr.Dropdown(names, value=b, label="Walk to class")
                with gr.Column(scale=2):
                    with gr.Row():
                        model_input = pixel_image("As the model sees it")
                        reconstruction = pixel_image("Reconstruction")
                        nearest = gr.Textbox(label="Nearest class mean", interactive=False, elem_id="nearest")
                    encode_walk = pixel_image("Walk to the chosen class")
                    encode_plot = scatter("Where it lands on the t-SNE map", default)
                    encode_note = gr.Markdown(label="Notes")

        with gr.Tab("About") as about_tab:
            about_text = gr.Markdown(about(catalog, default.name))

        # Inputs arrive raw (preprocess=False): the handlers check them and raise gr.Error with a clear message.
        # All events share one concurrency group: CONCURRENCY handlers at once in all, not per event.
        raw = {"preprocess": False, "concurrency_id": MODEL_WORK, "concurrency_limit": CONCURRENCY}
        sample_inputs, sample_outputs = [num_images, seed, temperature, checkpoint], [grid, gallery]
        sample_fn = serialized(functools.partial(sample, catalog), sample_outputs)
        sample_button.click(sample_fn, sample_inputs, sample_outputs, api_name="sample", postprocess=False, **raw)
        demo.load(sample_fn, sample_inputs, sample_outputs, api_visibility="private", postprocess=False, **raw)
        walk_button.click(
            functools.partial(latent_walk, catalog),
            [class_a, class_b, steps, interpolation, start, walk_seed, checkpoint],
            [walk_strip, walk_gif],
            api_name="walk",
            **raw,
        )
        tsne_tab.select(
            functools.partial(tsne_map, catalog), [checkpoint], [tsne_image, tsne_plot], api_name="tsne", **raw
        )
        encode_outputs = [model_input, reconstruction, nearest, encode_plot, encode_walk, encode_note]
        encode_inputs = [upload, target, checkpoint]
        encode_fn = functools.partial(encode, catalog)
        encode_upload_button.click(encode_fn, encode_inputs, encode_outputs, api_name="encode", **raw)
        upload.upload(encode_fn, encode_inputs, encode_outputs, api_visibility="private", **raw)  # at once
        encode_drawing_button.click(
            encode_fn,
            [sketch, target, checkpoint],
            encode_outputs,
            api_name="encode_drawing",
            **raw,
        )
        about_tab.select(functools.partial(about, catalog), [checkpoint], [about_text], api_name="about", **raw)
        checkpoint.change(
            functools.partial(select_checkpoint, catalog),
            [checkpoint],
            [status_text, class_a, class_b, target, tsne_image, tsne_plot, encode_plot, about_text],
            api_visibility="private",
            **raw,
        )
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


class RequestLimit:
    """ASGI middleware for `python app.py`: a request body over MAX_REQUEST_BYTES, other than a file upload
    (multipart, which max_file_size bounds), is refused with 413 before Gradio reads it.

    Gradio's API takes JSON of any size, and keeps each session's last inputs in memory until SESSIONS newer
    sessions push them out (each raw API call is a session of its own): 25 calls with a 5 MB class name grew
    the server by 125 MB, for good. With the limit it keeps at most SESSIONS x 64 kB of inputs.
    """

    def __init__(self, app, limit: int = MAX_REQUEST_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["type"] != "http" or headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
            return await self.app(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None:  # the server reads no more than it says
            if not length.isdigit() or int(length) > self.limit:
                return await self.refuse(send)
            return await self.app(scope, receive, send)
        body = b""  # chunked, or no body: read it here, up to the limit, and hand it on
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await self.refuse(send)
            if not message.get("more_body"):
                break
        first = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay():  # then the real receive: event streams watch it for the client going away
            return first.pop() if first else await receive()

        return await self.app(scope, replay, send)

    async def refuse(self, send) -> None:
        text = f"Request body too large: this app takes at most {self.limit} bytes besides uploads.".encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": text})


def tune_server_process() -> None:
    """Settings for the whole process, made only when serving (`python app.py`), not when tests import app.

    - One torch thread: the model is tiny, a second intra-op thread only adds contention (64 samples take
      80 ms instead of 3 ms on a busy 2-core machine), and the queue runs CONCURRENCY requests side by side.
    - Two glibc malloc arenas (as MALLOC_ARENA_MAX=2 would, unless the environment sets it): glibc gives
      every thread that allocates its own arena, and Gradio serves from a pool of up to 40 threads; under
      load the server then grew by 30-60 MB per 200 requests, and by 2-5 MB with two arenas.
    - matplotlib's backend named: Gradio imports matplotlib on the first request to set it, and choosing
      one itself costs 0.5 s more.
    """
    torch.set_num_threads(1)
    if "MALLOC_ARENA_MAX" not in os.environ and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # -8 is M_ARENA_MAX in glibc's malloc.h
        except (OSError, AttributeError):  # not glibc: nothing to cap
            pass
    os.environ.setdefault("MPLBACKEND", "Agg")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        default=os.environ.get("VAE_CHECKPOINT") or str(DEFAULT_CHECKPOINT),
        help="model folder written by train.py, or a Hub repo id user/name (default: $VAE_CHECKPOINT, else %(default)s)",
    )
    parser.add_argument("--host", help="address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT, else the first free from 7860)")
    args = parser.parse_args(argv)
    try:
        default = load_assets(args.checkpoint)
    except UserError as err:
        sys.exit(f"error: {err}")
    for problem in default.problems:
        print(f"warning: {problem}", file=sys.stderr)
    tune_server_process()
    demo = build_demo(default, find_checkpoints(default))
    # A fresh app_kwargs on each launch: Gradio adds its own entries to the dict it is given.
    limit = {"middleware": [Middleware(RequestLimit)]}
    demo.launch(server_name=args.host, server_port=args.port, app_kwargs=limit, **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
