"""What the app needs as a long-running server, apart from its page: the checkpoints on offer, the checks on raw
inputs, the work each tab asks of the model, the output files and their disk budget, and the process's limits.

Everything a caller sends is checked here first, since an API caller is not held to the page's sliders: a bad value
is a UserError whose message names the input and its bounds, and repeats the value cut short. The app turns it into
the message its page and gradio_client show. No layout here: app.py builds the page and wires it to these functions.

Two things tie this module to Gradio, each where it is needed: uploads are read from Gradio's upload folder (the only
files a caller may name), and output files are written into Gradio's cache and registered as a static path, so that
Gradio serves them where they are (see OutputStore).
"""

from __future__ import annotations

import ctypes
import hashlib
import html
import itertools
import json
import math
import os
import re
import reprlib
import shutil
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch
from gradio.utils import get_upload_folder
from PIL import Image, ImageOps

from vae.assets import Assets, is_finite_number, load_assets
from vae.classes import class_latent, class_walk, nearest_class, sample_class
from vae.disk import DISK, DiskBudget
from vae.errors import UserError, clip
from vae.folder import recover_all
from vae.imaging import as_float, png, prepare_drawing, to_gif, to_grid, to_uint8
from vae.latent import START_POINTS, place_on_map, walk
from vae.maps import ClickMap
from vae.steering import slide
from vae.visitors import client_address

# What a caller may ask for.
MAX_IMAGES = 256  # samples per request
STEPS = (2, 32)  # frames in a walk
MAX_TEMPERATURE = 2.0
MAX_SEED = 2**32 - 1
ANY = "any"  # the Samples tab's class choice for samples of the prior, N(0, I): what /sample gave before classes
MAX_OFFSET = 4.0  # a slider's reach, in standard deviations of the test digits along its direction
SLIDER_STARTS = (*START_POINTS, "digit")  # a class mean, a seeded example of the class (vae.classes), your digit
MAX_UPLOAD_PIXELS = 4096 * 4096  # larger images are refused before they are decoded
WORK_SIZE = 1024  # uploads are shrunk to fit this box before centring: plenty for a 28x28 digit
ECHO = 120  # characters of a caller's value that an error message repeats: a 5 MB class name is not sent back
# What the tabs compute and show.
ENCODE_WALK_STEPS = 10
GRID_WIDTH = 720  # sample grids and walk strips are upscaled (nearest neighbour) to about this width
GIF_SCALE = 4
MAP_NEIGHBOURS = 10
HOVER_RADIUS = 10  # pixels of the t-SNE picture: a thumbnail shows while the pointer is this near a test digit's dot
SLIDE_SIZE = 224  # the Sliders tab's digit is upscaled (nearest neighbour) to about this many pixels a side
DIGIT_LATENTS = 64  # posterior means of uploaded digits kept, so that moving a slider does not encode it again
YOU = "your digit"  # the extra class of the point placed on the t-SNE map
# What the server holds at once.
CONCURRENCY = 2  # requests computed at once, over all events: one per core of a small Space
OUTPUTS = "vae-studio"  # the app's folder in Gradio's cache: every PNG and GIF it serves, pruned to the budgets below
OUTPUT_BYTES = 200 * 2**20  # on disk for them at most: ~180 requests of 256 samples (1.1 MB each in 4 kB blocks)
OUTPUT_FILES = 50_000  # and at most this many files: about as many as fit in OUTPUT_BYTES at one block each
KEEP_NEWEST = 2 * CONCURRENCY  # request folders never pruned: those in flight and as many just answered
MAX_REQUEST_BYTES = 64 * 1024  # a request body other than an upload (the page's calls send under 2 kB)
UPLOAD_ROUTE = "/gradio_api/upload"  # the one route that takes files (multipart bodies)
MAX_UPLOAD_BYTES = 2 * 2**20  # an upload request's body: a drawing or a photo of a digit is well under 1 MB
MAX_UPLOAD_FILES = 4  # files in one upload request (the page sends one or a sketchpad's few layers)
UPLOAD_BURST, UPLOADS_PER_MINUTE = 30, 30  # upload requests per client address: at once, then a minute
RATE_ADDRESSES = 10_000  # client addresses whose upload rate is remembered
UPLOAD_AGE = 600  # seconds an upload is kept (Gradio's delete_cache, checked every UPLOAD_SWEEP seconds)
UPLOAD_SWEEP = 60
UPLOAD_BYTES = 256 * 2**20  # upload bodies received in the last UPLOAD_AGE + UPLOAD_SWEEP seconds, from everyone


# ---------------------------------------------------------------------------------------------------------------------
# The checkpoints on offer
# ---------------------------------------------------------------------------------------------------------------------


def find_checkpoints(default: Assets, folder: Path) -> dict[str, str]:
    """Other model folders committed beside the default (e.g. Fashion-MNIST), by name; loaded when chosen. A folder
    whose rewrite a kill cut short is put right first (vae.folder.complete_swap)."""
    recover_all(folder)
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
        self.visiting: dict[str, str] = {}  # visitors' models (vae.visitors): served by name, in no shared dropdown
        self.lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """The checkpoints every visitor's dropdown offers."""
        return list(self.sources)

    def get(self, name) -> Assets:
        """The checkpoint a caller chose by name (None or "" for the default), or a UserError."""
        if name is None or name == "":
            name = self.default
        source = (self.sources.get(name) or self.visiting.get(name)) if isinstance(name, str) else None
        if source is None:
            raise UserError(f"Unknown checkpoint {shown(name)}: choose one of {', '.join(self.sources)}.")
        if name not in self.loaded:  # loaded ones are served without waiting for the lock
            with self.lock:  # one load at a time, and each checkpoint once
                if name not in self.loaded:
                    self.loaded[name] = load_assets(source, name)
        return self.loaded[name]

    def add(self, name: str, folder: str | Path) -> None:
        """A visitor's model, loaded now (so that a bad one is refused here, not by the next tab)."""
        assets = load_assets(str(folder), name)
        with self.lock:
            self.visiting[name], self.loaded[name] = str(folder), assets

    def remove(self, name: str) -> None:
        """A visitor's model is gone: forget it, and delete the figures served for it."""
        with self.lock:
            self.visiting.pop(name, None)
            self.loaded.pop(name, None)
        release_files(name)


# ---------------------------------------------------------------------------------------------------------------------
# Checking raw inputs (what an API caller sends is not limited by the page's sliders)
# ---------------------------------------------------------------------------------------------------------------------


SHORT_REPR = reprlib.Repr()  # a few items and levels of a list or dict: big or deeply nested input stays cheap to show
SHORT_REPR.maxlevel, SHORT_REPR.maxstring, SHORT_REPR.maxother = 3, 40, 40


def shown(value) -> str:
    """A caller's value as an error message repeats it: its repr, cut to about ECHO characters."""
    try:
        text = repr(value[: ECHO + 1]) if isinstance(value, str) else SHORT_REPR.repr(value)
    except Exception:  # an int past Python's 4,300-digit repr limit, and the like
        text = f"a {type(value).__name__}"
    return text if len(text) <= ECHO else text[: ECHO - 1] + "…"


MARKUP = re.compile(r"([\\`*_\[\]|~$@])")  # emphasis, code, links, tables, strikethrough, Gradio's LaTeX, e-mail links
AUTOLINK = re.compile(r"(?i)\b(https?|ftp):(?=//)|\b(www)\.")  # GFM makes links of bare URLs
LINE_START = re.compile(r"^([ \t]*)([#+=-]|\d+(?=[.)]))", re.MULTILINE)  # headings, lists, rules


def literal(text) -> str:
    """Text for a gr.Markdown that shows exactly as written: a class name, model name, path or message from a model
    folder or a caller. HTML is escaped (no element is made, nothing fetched), and what Markdown would read as markup
    is backslash-escaped: **, _, `, [ ], |, ~~, $$, a bare URL's :// or www., a heading's # or a list's - at a line's
    start. The rest (-, ., / in names and paths) is left as it is, so the Markdown reads as the text does."""
    text = MARKUP.sub(r"\\\1", html.escape(str(text), quote=False))
    text = AUTOLINK.sub(lambda m: f"{m[1]}\\:" if m[1] else f"{m[2]}\\.", text)
    return LINE_START.sub(lambda m: f"{m[1]}{m[2]}\\" if m[2][0].isdigit() else f"{m[1]}\\{m[2]}", text)


def check_int(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        whole = False
    else:  # an int is compared as it is: JSON has ints past a float's range, which math.isfinite cannot take
        whole = isinstance(value, int) or (math.isfinite(value) and value == int(value))
    if not whole or not low <= value <= high:
        raise UserError(f"{name} must be a whole number from {low} to {high}, got {shown(value)}.")
    return int(value)


def check_float(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:  # NaN fails too
        raise UserError(f"{name} must be a number from {low} to {high}, got {shown(value)}.")
    return float(value)


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}, got {shown(value)}.")
    return value


def check_class(value, name: str, assets: Assets) -> int:
    """A class name of the checkpoint (or its index) → its index."""
    names = assets.class_names
    if isinstance(value, str) and value in names:
        return names.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    classes = clip(", ".join(map(str, names)), 200)  # a checkpoint may have many classes
    raise UserError(f"{name} must be one of the classes of {assets.name}: {classes}; got {shown(value)}.")


def check_sample_class(value, assets: Assets) -> int | None:
    """The Samples tab's class: ANY (or None, from a caller that leaves it out) → None, else a class index, which
    needs the checkpoint's steering statistics."""
    if value is None or value == ANY:
        return None
    label = check_class(value, "Class", assets)
    if assets.steering is None:
        raise UserError(f"Samples of one class are off for this checkpoint; choose {ANY!r}. {assets.no_steering}")
    return label


def check_offsets(value, assets: Assets) -> list[float]:
    """The sliders' offsets: a list of at most K finite numbers within ±MAX_OFFSET (missing ones are 0)."""
    if assets.steering is None:
        raise UserError(f"The latent sliders are off for this checkpoint. {assets.no_steering}")
    k = len(assets.steering.spreads)
    what = f"Offsets must be a list of at most {k} numbers from {-MAX_OFFSET} to {MAX_OFFSET} (standard deviations)"
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or len(value) > k:
        raise UserError(f"{what}, got {shown(value)}.")
    for i, offset in enumerate(value):
        if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not -MAX_OFFSET <= offset <= MAX_OFFSET:
            raise UserError(f"{what}; direction {i + 1} is {shown(offset)}.")
    return [float(offset) for offset in value]


def image_path(payload) -> str:
    """The uploaded file in an Image payload ({"path": ...}) or a Sketchpad one ({"composite": {...}})."""
    if isinstance(payload, dict) and "composite" in payload:
        payload = payload.get("composite")
    if payload is None:
        raise UserError("No image: draw a digit on the sketchpad or upload a picture of one.")
    path = payload.get("path") if isinstance(payload, dict) else None
    if not isinstance(path, str) or not path:
        raise UserError("Expected an image file (an upload), got something else.")
    # Gradio checks that a file payload was uploaded only when it is marked as one ("meta"); an unmarked
    # {"path": ...} reaches the handler as sent, and could name any file of the server, or a pipe that blocks.
    # Gradio's upload folder is where every upload lands, so it is the one folder a caller may name.
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(os.path.realpath(get_upload_folder())) or not real.is_file():
        raise UserError("Expected an image file that was uploaded to this app; the path sent is not one.")
    return path


def read_image(payload) -> np.ndarray:
    """An uploaded or drawn image → an RGB(A) uint8 array at most WORK_SIZE on a side, or a clear UserError."""
    path = image_path(payload)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise UserError(
                    f"The image is {width}x{height} pixels; this app takes images of up to "
                    f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels. A digit needs far fewer: shrink it first."
                )
            img.draft("RGB", (WORK_SIZE, WORK_SIZE))  # JPEG: decode at a fraction of the size directly
            img = ImageOps.exif_transpose(img)  # photos from phones
            img.thumbnail((WORK_SIZE, WORK_SIZE))
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    except UserError:
        raise
    except Image.DecompressionBombError:  # a header claiming billions of pixels: PIL refuses it at open
        raise UserError(
            f"The image is larger than this app takes ({MAX_UPLOAD_PIXELS // 1_000_000} megapixels at most). "
            "A digit needs far fewer: shrink it first."
        ) from None
    except Exception as err:  # PIL raises many kinds for files that are not images or are cut short
        raise UserError(
            f"That file is not an image this app can read ({type(err).__name__}). Upload a PNG, JPEG, WebP, "
            "GIF or BMP picture of a digit."
        ) from None


def numbers(metrics) -> dict[str, int | float]:
    """The metrics that are finite numbers: the only ones the page formats."""
    return (
        {key: value for key, value in metrics.items() if is_finite_number(value)} if isinstance(metrics, dict) else {}
    )


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
      again. Pinned folders (a checkpoint's t-SNE figure and map picture, which a page links to when it is built)
      are counted and never pruned, but belong to their checkpoint: `release(owner)` deletes them when it is
      removed (a visitor's model, vae.visitors), so that they neither stay downloadable nor pile up.
    - `root` is one of Gradio's static paths, so Gradio serves the files where they are: it neither copies
      them nor records their paths for delete_cache (it would keep every path it ever served: a file pruned
      here is never found again, so its path would never be dropped).
    """

    def __init__(self, root: Path, budget: DiskBudget = DISK):
        self.root, self.budget = root, budget
        self.lock = threading.Lock()
        self.folders: OrderedDict[str, tuple[int, int]] = OrderedDict()  # name → (bytes, files), oldest first
        self.pinned: dict[str, tuple[int, int]] = {}
        self.owners: dict[str, set[str]] = {}  # pinned folder → the checkpoints it belongs to
        self.writing: Counter[str] = Counter()  # folders whose files a call is writing now
        self.bytes = self.files = 0
        root.mkdir(parents=True, exist_ok=True)
        self.block = os.statvfs(root).f_frsize if hasattr(os, "statvfs") else 4096
        gr.set_static_paths([root])  # Gradio serves the files from here, uncopied and untracked (see above)
        budget.add(self)
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

    def disk_bytes(self) -> int:
        """What the store holds, for the server's disk budget (read without the lock: prune asks it under the lock)."""
        return self.bytes

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
        """Delete the least recently used folders while over a budget (the store's own share, or the server's disk
        budget less the room kept for a Train run), but not the KEEP_NEWEST newest nor those being written. Called under the lock; the oldest
        folder is nearly always the one deleted, so O(1) a folder."""
        while self.bytes > OUTPUT_BYTES or self.files > OUTPUT_FILES or self.budget.spare() < 0:
            prunable = itertools.islice(self.folders, max(0, len(self.folders) - KEEP_NEWEST))
            name = next((name for name in prunable if name not in self.writing), None)
            if name is None:
                return
            used, files = self.folders.pop(name)
            shutil.rmtree(self.root / name, ignore_errors=True)
            self.bytes -= used
            self.files -= files

    def put(self, files: dict[str, bytes], pin: str | None = None) -> list[str]:
        """Named contents → their paths, in a folder named by their hash, pinned for checkpoint `pin` if given. Each
        file is written beside its name and renamed into place, so no reader sees half a file; one already there is
        not written again."""
        digest = hashlib.sha256()
        for name, data in files.items():
            digest.update(name.encode() + b"\0" + data)
        key = digest.hexdigest()[:40]
        with self.lock:
            if key in self.folders:
                self.folders.move_to_end(key)
            elif key not in self.pinned:
                self.count(key, *self.footprint(files))
            if pin is not None:
                if key in self.folders:
                    self.pinned[key] = self.folders.pop(key)
                self.owners.setdefault(key, set()).add(pin)
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

    def release(self, owner: str) -> None:
        """The checkpoint `owner` is gone: delete the pinned folders that belonged to it alone."""
        with self.lock:
            for key in [key for key, owners in self.owners.items() if owner in owners]:
                self.owners[key].discard(owner)
                if self.owners[key]:
                    continue
                del self.owners[key]
                if self.writing[key]:  # a call is writing it now: it becomes an unpinned folder, pruned in turn
                    self.folders[key] = self.pinned.pop(key)
                    continue
                used, files = self.pinned.pop(key)
                shutil.rmtree(self.root / key, ignore_errors=True)
                self.bytes -= used
                self.files -= files


STORES: dict[Path, OutputStore] = {}  # one per Gradio cache (GRADIO_TEMP_DIR is read when a file is written)
STORES_LOCK = threading.Lock()


def output_store() -> OutputStore:
    """The store in the app's folder of Gradio's cache (GRADIO_TEMP_DIR, else the temp directory's gradio/)."""
    root = Path(get_upload_folder()) / OUTPUTS
    with STORES_LOCK:
        if root not in STORES:
            STORES[root] = OutputStore(root)
        return STORES[root]


def cache_files(files: dict[str, bytes], pin: str | None = None) -> list[str]:
    """Named contents → files in the app's folder of Gradio's cache (see OutputStore), served from there; pinned
    for checkpoint `pin` until release_files(pin)."""
    return output_store().put(files, pin)


def release_files(owner: str) -> None:
    """Delete the pinned output files of checkpoint `owner` (see OutputStore.release)."""
    output_store().release(owner)


# ---------------------------------------------------------------------------------------------------------------------
# The work of each tab: checked values → vae.latent / vae.imaging → files in the app's cache and values to show
# ---------------------------------------------------------------------------------------------------------------------


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


def walk_files(assets: Assets, a: int, b: int, steps: int, mode: str, start: str, seed: int) -> tuple[str, str]:
    """The walk from class a to class b → a strip of its frames (PNG) and an animation (GIF)."""
    if assets.steering is None:
        raise UserError(f"Walks between classes are off for this checkpoint. {assets.no_steering}")
    images = class_walk(assets.model, assets.steering, a, b, steps, mode, start, seed)  # (steps, C, H, W)
    # Files named by class index: names such as Fashion-MNIST's "T-shirt/top" cannot be file names.
    files = {f"walk-{a}-{b}.png": strip(images), "walk.gif": to_gif(images, scale=GIF_SCALE)}
    strip_path, gif_path = cache_files(files)
    return strip_path, gif_path


CARD_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(([^)\s]*)\)")  # ![caption](target) in a model card
FILE_ROUTE = "gradio_api/file="  # where Gradio serves a file of its cache, relative to the page


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


def tsne_figure(assets: Assets) -> str | None:
    """The checkpoint's cached t-SNE figure as a file in Gradio's cache. Gradio serves only files in its cache,
    the working directory or the temp directory, and a Hub checkpoint lives in the Hugging Face cache."""
    return cache_files({"tsne.png": assets.tsne_figure}, pin=assets.name)[0] if assets.tsne_figure else None


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


def slide_file(assets: Assets, start: torch.Tensor, offsets: list[float]) -> str:
    """The start latent moved by offsets[k] standard deviations along direction k → a PNG file of the digit."""
    return cache_files({"slide.png": digit_png(assets, slide(assets.steering, start, offsets))})[0]


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


# ---------------------------------------------------------------------------------------------------------------------
# The clickable map: the t-SNE map, or a 2-D model's latent plane (vae.maps)
# ---------------------------------------------------------------------------------------------------------------------


def clickable_map(assets: Assets) -> ClickMap:
    """The checkpoint's clickable map, or a UserError saying why it has none."""
    if assets.click_map is None:
        raise UserError(assets.no_map)
    return assets.click_map


def is_pair(value) -> bool:
    """[x, y]: a list or tuple of two finite numbers."""
    return isinstance(value, list | tuple) and len(value) == 2 and all(is_finite_number(v) for v in value)


def check_point(value, name: str, assets: Assets) -> tuple[float, float]:
    """A point of the checkpoint's clickable map: [x, y], two numbers inside the map (t-SNE units, or z itself)."""
    clickable = clickable_map(assets)
    extent = clickable.extent
    if not is_pair(value) or not extent.contains(*value):
        units = "z1, z2 of the latent plane" if clickable.kind == "plane" else "t-SNE coordinates"
        raise UserError(
            f"{name} must be a point [x, y] of the map ({units}): x from {extent.x[0]:.2f} to {extent.x[1]:.2f} and "
            f"y from {extent.y[0]:.2f} to {extent.y[1]:.2f}, got {shown(value)}."
        )
    return float(value[0]), float(value[1])


def map_picture(assets: Assets) -> str | None:
    """The checkpoint's clickable map without marks, as a file in Gradio's cache (pinned: a page links to it)."""
    return cache_files({"map.png": png(assets.click_map.image)}, pin=assets.name)[0] if assets.click_map else None


def map_hover(assets: Assets) -> str:
    """What the page's web/map.js needs to show, under the pointer, the test digit that a click there would pick
    (latent_at): JSON text, "" when the map has no test images. The map's units at each pixel column and row
    (ClickMap.axes), each test digit's point in them, its class, and a sprite sheet of the digits (one PNG, in
    Gradio's cache like the map picture, pinned to the checkpoint): digit i is the cell at row i // columns, column
    i % columns. On the t-SNE map a thumbnail shows only near a dot; on the latent plane, where no dots are drawn,
    the nearest test digit always shows, as a click picks it."""
    clickable, tsne = assets.click_map, assets.tsne
    images = tsne.get("images") if tsne is not None else None
    if clickable is None or images is None:
        return ""
    columns = math.ceil(math.sqrt(len(images)))
    sprite = cache_files({"digits.png": png(to_grid(as_float(images), nrow=columns, padding=0))}, pin=assets.name)[0]
    xs, ys = clickable.axes()
    points = tsne["latents"] if clickable.kind == "plane" else tsne["coords"]  # what latent_at measures in
    extent = clickable.extent
    radius = HOVER_RADIUS * (extent.x[1] - extent.x[0]) / clickable.size if clickable.kind == "tsne" else None
    return json.dumps(
        {
            "xs": [round(x, 5) for x in xs],
            "ys": [round(y, 5) for y in ys],
            "points": [[round(x, 5), round(y, 5)] for x, y in points.tolist()],
            "labels": tsne["labels"].tolist(),
            "captions": [f"{article(name)} {name}" for name in map(str, assets.class_names)],
            "radius": radius,
            "sprite": FILE_ROUTE + urllib.parse.quote(sprite),
            "cell": list(images.shape[-2:]),
            "columns": columns,
        },
        separators=(",", ":"),
    )


def clicked_point(assets: Assets, index) -> tuple[float, float]:
    """Where a click on the map picture landed: Gradio's [x, y] in the picture's pixels → the point of the map."""
    clickable = clickable_map(assets)
    if not is_pair(index):
        raise UserError("Click on the map picture itself.")  # Gradio sends null for a click beside the picture
    if not clickable.in_plot(*index):
        raise UserError("Click inside the map: the legend beside it is not part of it.")
    return clickable.to_map(*index)


@dataclass
class Picked:
    """What a click on the map shows."""

    picture: str  # PNG: the map with this click and the one before marked
    real: str | None  # PNG: the test image nearest the click; None when the map has no images
    decoded: str  # PNG: the latent there, decoded
    caption: str  # what was clicked
    walk: str | None  # PNG: the walk from the click before; None for a first click


def latent_at(assets: Assets, point: tuple[float, float]) -> tuple[torch.Tensor, int | None, str]:
    """A point of the map → the latent (D,) to decode, the test image nearest it (an index into the map, or None
    without one) and a caption. On the t-SNE map, the latent of the nearest test image (its posterior mean); on a
    2-D model's plane, exactly the point clicked."""
    tsne, x, y = assets.tsne, *point
    if assets.click_map.kind == "plane":
        z = torch.tensor([x, y])
        if tsne is None:
            return z, None, f"z = ({x:.2f}, {y:.2f}), decoded."
        distance, index = torch.cdist(z[None], tsne["latents"])[0].min(0)
        name = assets.class_names[int(tsne["labels"][index])]
        return (
            z,
            int(index),
            (
                f"z = ({x:.2f}, {y:.2f}), decoded exactly there. The test digit whose latent is nearest "
                f"({float(distance):.2f} away) is {article(name)} **{literal(name)}**."
            ),
        )
    index = int(torch.cdist(torch.tensor([[x, y]]), tsne["coords"])[0].argmin())
    name = assets.class_names[int(tsne["labels"][index])]
    return (
        tsne["latents"][index],
        index,
        (
            f"The test digit nearest ({x:.1f}, {y:.1f}) on the map is {article(name)} **{literal(name)}**: beside the real "
            "digit, its latent "
            "(the posterior mean) decoded, which is the model's reconstruction of it."
        ),
    )


def pick(assets: Assets, point: tuple[float, float], before: tuple[float, float] | None = None) -> Picked:
    """A click on the map (and the click before it) → what it shows: see Picked."""
    z, index, caption = latent_at(assets, point)
    files = {
        "map.png": png(assets.click_map.marked([p for p in (before, point) if p is not None])),
        "decoded.png": digit_png(assets, z),
    }
    images = assets.tsne.get("images") if assets.tsne is not None else None
    if index is not None and images is not None:
        files["real.png"] = png(
            to_grid(
                as_float(images[index : index + 1]), nrow=1, scale=max(1, SLIDE_SIZE // images.shape[-1]), padding=0
            )
        )
    if before is not None:
        files["walk.png"] = strip(walk(assets.model, latent_at(assets, before)[0], z, ENCODE_WALK_STEPS))
        caption += " Below: the walk from your click before this one."
    paths = dict(zip(files, cache_files(files), strict=True))
    return Picked(paths["map.png"], paths.get("real.png"), paths["decoded.png"], caption, paths.get("walk.png"))


# ---------------------------------------------------------------------------------------------------------------------
# The server process: request sizes and process-wide settings, made only by `python app.py`
# ---------------------------------------------------------------------------------------------------------------------


class TooLarge(Exception):
    """Raised into the app by RequestLimit's receive once a body passed its cap: the app stops reading it."""


class UploadRate:
    """A token bucket per client address: UPLOAD_BURST uploads at once, then UPLOADS_PER_MINUTE. At most
    RATE_ADDRESSES addresses are remembered (the least recently seen forgotten: a full bucket again)."""

    def __init__(self, burst: int = UPLOAD_BURST, per_minute: float = UPLOADS_PER_MINUTE):
        self.burst, self.per_second = burst, per_minute / 60
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address → (tokens, when)
        self.lock = threading.Lock()

    def take(self, address: str) -> float:
        """One upload for `address`: 0 if allowed, else the seconds until the next one is."""
        now = time.monotonic()
        with self.lock:
            tokens, when = self.buckets.pop(address, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.per_second)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.per_second
            self.buckets[address] = (tokens - 1 if tokens >= 1 else tokens, now)
            while len(self.buckets) > RATE_ADDRESSES:
                self.buckets.popitem(last=False)
        return wait


class UploadLedger:
    """The bytes of upload bodies received in the last UPLOAD_AGE + UPLOAD_SWEEP seconds: no upload is older than that
    (Gradio's delete_cache), so they bound what the uploads hold on disk without walking the upload folder. They count
    toward the server's disk budget, and UPLOAD_BYTES of it at most."""

    def __init__(self, budget: DiskBudget = DISK):
        self.received: deque[tuple[float, int]] = deque()  # (when, bytes), oldest first
        self.total = 0
        self.lock = threading.Lock()
        self.budget = budget
        budget.add(self)

    def disk_bytes(self) -> int:
        self.expire()
        return self.total

    def expire(self) -> None:
        cutoff = time.monotonic() - (UPLOAD_AGE + UPLOAD_SWEEP)
        with self.lock:
            while self.received and self.received[0][0] < cutoff:
                self.total -= self.received.popleft()[1]

    def refusal(self, size: int) -> str | None:
        """Why `size` more bytes may not be received now (the uploads' share or the disk budget is full), or None."""
        self.expire()
        if self.total + size > UPLOAD_BYTES:
            share = UPLOAD_BYTES // 2**20
            return f"This server holds as many uploads as it keeps ({share} MB): try again in {self.wait()} s."
        if self.budget.spare() < size:
            return (
                f"This server's disk holds as much as it keeps ({self.budget.limit // 2**20:,} MB for pictures, "
                "uploads and the models visitors trained): try again in a few minutes."
            )
        return None

    def add(self, size: int) -> None:
        with self.lock:
            self.received.append((time.monotonic(), size))
            self.total += size

    def wait(self) -> int:
        """Seconds until the oldest bytes counted leave the window."""
        with self.lock:
            oldest = self.received[0][0] if self.received else time.monotonic()
        return max(1, math.ceil(oldest + UPLOAD_AGE + UPLOAD_SWEEP - time.monotonic()))


class RequestLimit:
    """ASGI middleware for `python app.py`: every request body is counted as it arrives, and refused with 413 as soon
    as it passes its cap (or when its Content-Length says it will), before the app has read it whole:
    MAX_REQUEST_BYTES on every route but UPLOAD_ROUTE, where MAX_UPLOAD_BYTES and MAX_UPLOAD_FILES files a request,
    UPLOAD_BURST then UPLOADS_PER_MINUTE requests per client address, and UPLOAD_BYTES from everyone over the time
    an upload is kept (429 past those). A multipart body (files) is refused on any other route.

    Gradio's API takes JSON of any size, and keeps each session's last inputs in memory until app.SESSIONS newer
    sessions push them out (each raw API call is a session of its own): 25 calls with a 5 MB class name grew
    the server by 125 MB, for good. With the limit it keeps at most SESSIONS x 64 kB of inputs. Multipart bodies
    were let through whole to every route: one 200 MiB body to /gradio_api/queue/join grew the server by 830 MB,
    and the upload route took 1,000 files of 10 MB a request.
    """

    def __init__(
        self, app, limit: int = MAX_REQUEST_BYTES, upload_limit: int = MAX_UPLOAD_BYTES, budget: DiskBudget = DISK
    ):
        self.app, self.limit, self.upload_limit = app, limit, upload_limit
        self.rate = UploadRate()
        self.ledger = UploadLedger(budget)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").lower()
        upload = scope.get("path", "").rstrip("/") == UPLOAD_ROUTE
        limit = self.upload_limit if upload else self.limit
        what = f"at most {limit // 1024} kB a request"
        if upload:
            what += f" and {MAX_UPLOAD_FILES} files"
        if content_type.startswith(b"multipart/") and not upload:
            return await self.refuse(send, 413, f"Files are taken only by {UPLOAD_ROUTE}.")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self.refuse(send, 413, f"Request body too large: this route takes {what}.")
        if upload and scope.get("method") == "POST":
            forwarded = {"x-forwarded-for": headers.get(b"x-forwarded-for", b"").decode("latin-1")}
            wait = self.rate.take(
                client_address(forwarded, (scope.get("client") or (None,))[0])
            )  # the Train tab's rule
            if wait:
                minute = f"{UPLOAD_BURST} at once, then {UPLOADS_PER_MINUTE} a minute"
                return await self.refuse(send, 429, f"Too many uploads ({minute}): try again in {math.ceil(wait)} s.")
            if full := self.ledger.refusal(int(length) if length is not None else 1):
                return await self.refuse(send, 429, full)
        boundary = re.search(rb"boundary=\"?([^\";]+)", content_type) if upload else None
        # Each part of a multipart body begins with this line; one more, the closing one, ends the body.
        delimiter = b"--" + boundary[1] if boundary else None
        state = {"bytes": 0, "parts": 0, "tail": b"", "started": False, "refused": False}

        async def counted():
            message = await receive()
            if message["type"] != "http.request" or state["refused"]:
                return message
            chunk = message.get("body", b"")
            state["bytes"] += len(chunk)
            problem, full = None, None
            if upload:
                self.ledger.add(len(chunk))  # counted as it arrives: a body refused later may have left a file
                full = self.ledger.refusal(0)
            if state["bytes"] > limit:
                problem = f"Request body too large: this route takes {what}."
            elif full:
                problem = full
            elif delimiter is not None:  # counted across chunk edges: the tail of the chunk before is searched too
                seen = state["tail"] + chunk
                state["parts"] += seen.count(delimiter)
                state["tail"] = seen[-(len(delimiter) - 1) :]
                if state["parts"] > MAX_UPLOAD_FILES + 1:
                    problem = f"Too many files: {UPLOAD_ROUTE} takes at most {MAX_UPLOAD_FILES} a request."
            if problem is None:
                return message
            state["refused"] = True
            if not state["started"]:
                await self.refuse(send, 429 if problem == full else 413, problem)
            raise TooLarge(problem)

        async def guarded(message):
            if state["refused"]:  # the app's own answer to the body it did not get: the 413 is sent already
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except TooLarge:
            pass

    async def refuse(self, send, status: int, message: str) -> None:
        text = message.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text})


def exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # the exit status a shell reports for a process ended by the signal


def tune_server_process() -> None:
    """Settings for the whole process, made only when serving (`python app.py`), not when tests import app.

    - One torch thread: the model is tiny, a second intra-op thread only adds contention (64 samples take
      80 ms instead of 3 ms on a busy 2-core machine), and the queue runs CONCURRENCY requests side by side.
    - Two glibc malloc arenas (as MALLOC_ARENA_MAX=2 would, unless the environment sets it): glibc gives
      every thread that allocates its own arena, and Gradio serves from a pool of up to 40 threads; under
      load the server then grew by 30-60 MB per 200 requests, and by 2-5 MB with two arenas.
    - SIGTERM (how a Space, systemd or docker stop a server) exits through Python's exit, so that what the server
      registered to remove at exit (the visitors' models, a training child) is removed; its default ends the process
      on the spot.
    - matplotlib's backend named: Gradio imports matplotlib on the first request to set it, and choosing
      one itself costs 0.5 s more.
    """
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    if "MALLOC_ARENA_MAX" not in os.environ and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # -8 is M_ARENA_MAX in glibc's malloc.h
        except (OSError, AttributeError):  # not glibc: nothing to cap
            pass
    os.environ.setdefault("MPLBACKEND", "Agg")
