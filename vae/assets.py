"""A checkpoint folder (or Hub repo) → the model and what the app shows beside it: the cached t-SNE map, the
steering statistics (class regions and principal directions), the metrics, the model card, and what is missing.
Fast: nothing is trained or recomputed here."""

from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import safe_open

from vae.architecture import FLOAT_DTYPES, safetensors_header, weights_header
from vae.errors import UserError, clip, first_line, json_kind, name_list, quote
from vae.folder import (
    APP_FILES,
    CARD,
    CARD_FIGURES,
    METRICS,
    TSNE_FIGURE,
    TSNE_MAP,
    WEIGHTS,
    is_local_folder,
    looks_local,
)
from vae.maps import ClickMap, PlaneMap, TsneMap
from vae.model import VAE
from vae.steering import Steering, read_steering

# Bounds on the side files, checked before they are read: they are shown or searched, never trusted.
MAX_TEXT_BYTES = 1_000_000  # README.md and metrics.json: a few KB when train.py writes them
MAX_MAP_POINTS = 10_000  # the largest test set vae.tsne embeds; the app's neighbour search needs points² distances
MAX_FIGURE_BYTES = 20_000_000  # tsne.png: about 150 KB as vae.tsne draws it
MAX_FIGURE_PIXELS = 4096 * 4096  # decoded to check it, and again by every browser that shows it
# metrics.json values the app and the model card print as numbers: kept only when they are finite numbers.
NUMERIC_METRICS = ("test_loss", "test_recon", "test_kl", "test_iw_nll", "iw_samples", "test_images")
NUMERIC_METRICS += ("best_val_loss", "best_epoch", "train_wall_seconds", "num_processes")
FRONT_MATTER = re.compile(r"---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(\r?\n|$)", re.DOTALL)


@dataclass
class Assets:
    """One loaded checkpoint: the model, its cached t-SNE map, metrics and card, and what is missing."""

    name: str  # what the checkpoint dropdown shows
    source: str  # the folder or Hub repo id it came from
    model: VAE
    tsne: (
        dict[str, torch.Tensor] | None
    )  # coords (N, 2), labels (N,), latents (N, D), images (N, C, H, W) of test images
    tsne_png: bytes | None  # tsne.png as drawn by the trainer: served from Gradio's cache, wherever the folder is
    metrics: dict
    card: str  # the model card's text, without front matter; its figures link to files of card_figures by name
    no_map: str | None = None  # why the t-SNE map is off, if it is
    steering: Steering | None = None  # class statistics (vae.classes) and principal directions: every class's mean,
    # region and examples, for class samples, walks, the nearest class and the sliders
    no_steering: str | None = None  # why those are off, if they are
    no_figure: str | None = None  # why the cached t-SNE figure is not shown (the interactive map may still be)
    no_card: str | None = None  # why README.md is not shown
    no_metrics: str | None = None  # why metrics.json, or some of its values, are not shown
    card_figures: dict[str, bytes] = field(default_factory=dict)  # file name → PNG, as the card links them
    map_points: pd.DataFrame | None = None  # x, y, class: the interactive t-SNE scatter
    click_map: ClickMap | None = None  # the picture a click decodes from: the latent plane (2-D), else the t-SNE map

    @property
    def class_names(self) -> list[str]:
        return self.model.class_names

    @property
    def problems(self) -> list[str]:
        """What does not work with this checkpoint: shown in the page and printed at start-up."""
        return [
            p
            for p in (
                self.no_map,
                self.no_steering,
                self.no_figure,
                self.no_card,
                self.no_metrics,
            )
            if p
        ]


def checkpoint_folder(source: str) -> Path:
    """A local folder as is; a Hub repo id downloaded (or found in the cache offline): "user/name" at its branch main,
    "user/name@REVISION" at a commit, branch or tag (a Space's preload_from_hub pins a commit, under which the cache
    then holds the files: docs/space.md)."""
    if is_local_folder(source):
        return Path(source)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    from vae.hub import HUB_ERRORS

    repo_id, _, revision = source.partition("@")  # no repo id holds an "@"
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=APP_FILES))
    except (*HUB_ERRORS, HFValidationError) as err:  # offline and not cached, no such repo, private without a token
        raise UserError(
            f"Could not get {clip(source)} from the Hugging Face Hub ({type(err).__name__}: {first_line(err)}). "
            "Check the repo id, the network and HF_TOKEN for a private repo, or pass a local folder."
        ) from None


def read_model(folder: Path, source: str) -> VAE:
    """The VAE, strictly, except that a model saved without its class_means and class_stds buffers still loads: the
    app reads the class statistics from steering.safetensors (vae.classes), never from the weights."""
    weights = folder / WEIGHTS
    keys = set(weights_header(weights, clip(source)))  # before from_pretrained: it needs to know about class_means
    buffers = {"class_means", "class_stds"}
    try:
        model = VAE.from_pretrained(folder, strict=buffers <= keys).eval()
    except UserError:
        raise
    except Exception as err:  # from_pretrained reports every mistake it knows of: this is for the ones it does not
        raise UserError(
            f"Could not load the model in {clip(source)} ({type(err).__name__}: {first_line(err)}). Pass a folder "
            "written by train.py, or train a new one with `python train.py`."
        ) from None
    lost = [name for name in model.state_dict() if name not in keys | buffers]
    if lost:
        raise UserError(
            f"Could not load the model in {clip(source)}: its {WEIGHTS} lacks {name_list(lost)}, so it is not "
            "a complete VAE. Export the model again with train.py."
        )
    return model


def read_tsne(folder: Path, model: VAE, source: str) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """The cached t-SNE map (checked against the model, shapes before values), or None and the reason."""
    path = folder / TSNE_MAP
    source = clip(source)
    fix = f"run `python -m vae.tsne --checkpoint {source}` to compute it again"
    if not path.is_file():
        return None, f"{source} has no cached t-SNE map, so the map tab and placing your digit on it are off: {fix}."
    try:
        header = safetensors_header(path)
        problem = map_problem(header, model)
        if problem is None:
            names = ["coords", "labels", "latents", *(["images"] if "images" in header else [])]
            with safe_open(path, framework="pt") as f:
                tsne = {name: f.get_tensor(name) for name in names}
            tsne |= {
                "coords": tsne["coords"].float(),
                "labels": tsne["labels"].long(),
                "latents": tsne["latents"].float(),
            }
            problem = map_values_problem(tsne, model)
    except ValueError as err:  # from safetensors_header: not a safetensors file
        problem = f"is not a readable safetensors file ({err})"
    except Exception as err:  # reading the tensors the header announced failed: the file changed meanwhile
        problem = f"could not be read ({type(err).__name__}: {first_line(err)})"
    if problem:
        return None, (
            f"The cached t-SNE map {source}/{TSNE_MAP} {problem}, so the map tab and placing your digit on it "
            f"are off: {fix}."
        )
    return tsne, None


def map_problem(header: dict, model: VAE) -> str | None:
    """What is wrong with tsne.safetensors' tensors, from their shapes and dtypes alone."""
    lacking = [name for name in ("coords", "labels", "latents") if name not in header]
    if lacking:
        return f"lacks {', '.join(lacking)}"
    (coords, coords_type), (labels, labels_type), (latents, latents_type) = (
        header[name] for name in ("coords", "labels", "latents")
    )
    if len(labels) != 1 or not 2 <= labels[0] <= MAX_MAP_POINTS:
        return f"has labels shaped {list(labels)}, where a map has 2 to {MAX_MAP_POINTS:,} points"
    n = labels[0]
    if labels_type[0] not in "IU":  # I8…I64, U8…U64
        return f"has labels of type {labels_type}, where class numbers are integers"
    if coords != (n, 2) or coords_type not in FLOAT_DTYPES:
        return f"has coords {list(coords)} of {coords_type}, where {n:,} points need [{n}, 2] floats"
    if latents != (n, model.latent_dim) or latents_type not in FLOAT_DTYPES:
        return (
            f"has latents {list(latents)} of {latents_type}, where this model's {n:,} points need "
            f"[{n}, {model.latent_dim}] floats: it was computed for another model"
        )
    if "images" in header:  # the test images themselves (uint8): a click on the map shows the real digit
        images, images_type = header["images"]
        if images != (n, *model.image_shape) or images_type != "U8":
            return (
                f"has images {list(images)} of {images_type}, where this model's {n:,} points need "
                f"[{n}, {', '.join(map(str, model.image_shape))}] U8 images: it was computed for another model"
            )
    return None


def map_values_problem(tsne: dict[str, torch.Tensor], model: VAE) -> str | None:
    for name in ("coords", "latents"):
        if not torch.isfinite(tsne[name]).all():
            return f"has NaN or infinite {name}"
    labels = tsne["labels"]
    if not (0 <= labels.min() and labels.max() < len(model.class_names)):
        last = len(model.class_names) - 1
        return f"has labels from {int(labels.min())} to {int(labels.max())}, where this model's classes are 0 to {last}"
    return None


def read_figure(folder: Path, source: str) -> tuple[bytes | None, str | None]:
    """tsne.png's bytes, once they have been decoded as a PNG of a sensible size; else None and the reason."""
    path = folder / TSNE_FIGURE
    source = clip(source)
    off = (
        "so the map tab shows no cached figure (the interactive map still works): run "
        f"`python -m vae.tsne --checkpoint {source}` to draw it again"
    )
    if not path.is_file():
        return None, f"{source} has no {TSNE_FIGURE}, {off}."
    size = path.stat().st_size
    if size > MAX_FIGURE_BYTES:
        return None, f"{source}/{TSNE_FIGURE} is {size:,} bytes, more than a figure of the map takes, {off}."
    data = path.read_bytes()
    problem = png_problem(data)
    return (None, f"{source}/{TSNE_FIGURE} {problem}, {off}.") if problem else (data, None)


def png_problem(data: bytes) -> str | None:
    """Why these bytes are not a PNG of a sensible size that a browser can show, or None when they are one."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:  # reads the header only
            if img.width * img.height > MAX_FIGURE_PIXELS:
                raise ValueError(f"{img.width}x{img.height} pixels, over {MAX_FIGURE_PIXELS:,}")
            img.verify()  # the chunks and their checksums, up to the end
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:  # verify() leaves an image unusable
            img.load()  # every pixel: a truncated or damaged image fails here
    except UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        return "is not a PNG image"
    except Exception as err:  # Pillow raises many types (OSError, SyntaxError, DecompressionBombError, zlib.error…)
        return f"is not a PNG image the app can show ({type(err).__name__}: {first_line(err)})"
    return None


def read_card_figures(folder: Path, tsne_png: bytes | None) -> dict[str, bytes]:
    """The figures the model card shows (vae.folder.CARD_FIGURES, files of the folder itself: nothing else of it is
    served) that are PNGs a browser can show; the cached t-SNE figure as read already. One that is not is left out
    of the About tab, its caption kept."""
    figures = {}
    for name in CARD_FIGURES:
        path = folder / name
        if name == TSNE_FIGURE:
            data = tsne_png
        elif path.is_file() and path.stat().st_size <= MAX_FIGURE_BYTES:
            data = path.read_bytes()
            data = None if png_problem(data) else data
        else:
            data = None
        if data is not None:
            figures[name] = data
    return figures


def read_text(path: Path, source: str) -> tuple[str | None, str | None]:
    """A side file's text, or None and the reason (too big, not UTF-8, binary); (None, None) when there is none."""
    if not path.is_file():
        return None, None
    where = f"{clip(source)}/{path.name}"
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        return None, f"{where} is {size:,} bytes, far more than train.py writes ({MAX_TEXT_BYTES:,} at most)"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"{where} is not UTF-8 text (byte {err.start:,} cannot be decoded)"
    if "\0" in text:
        return None, f"{where} holds NUL characters: it is binary, not text"
    return text, None


def read_card(folder: Path, source: str) -> tuple[str, str | None]:
    """The model card's text, without its front matter, or "" and why it is not shown. Its figures are linked by
    name: the app serves them (read_card_figures)."""
    text, problem = read_text(folder / CARD, source)
    fix = f"so the About tab shows no model card: put back the {CARD} train.py wrote, or delete it"
    if problem:
        return "", f"{problem}, {fix}."
    if text is None:
        return "", None
    if text.startswith("---"):
        front_matter = FRONT_MATTER.match(text)
        if front_matter is None:
            return (
                "",
                f"{clip(source)}/{CARD} starts its front matter with --- but never ends it with another, {fix}.",
            )
        text = text[front_matter.end() :]
    return text.strip(), None


def read_metrics(folder: Path, source: str) -> tuple[dict, str | None]:
    """metrics.json with its known figures checked (finite numbers): the bad ones dropped, and why."""
    text, problem = read_text(folder / METRICS, source)
    where = f"{clip(source)}/{METRICS}"
    fix = f"run `python -m vae.evaluate --checkpoint {clip(source)} --update-card` to measure them again"
    if text is None:
        return {}, problem and f"{problem}, so no test metrics are shown: {fix}."
    try:
        metrics = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, numbers too long; nesting too deep
        return {}, f"{where} is not valid JSON ({first_line(err)[:100]}), so no test metrics are shown: {fix}."
    if not isinstance(metrics, dict):
        return {}, f"{where} holds {json_kind(metrics)}, not an object of metrics, so none are shown: {fix}."
    bad = [key for key in NUMERIC_METRICS if key in metrics and not is_finite_number(metrics[key])]
    if bad:
        shown = (f"{key} = {quote(metrics[key], 40)}" for key in bad)
        they = "it is" if len(bad) == 1 else "they are"
        return {k: v for k, v in metrics.items() if k not in bad}, (
            f"{where} has {name_list(shown)}, where a finite number belongs, so {they} not shown: {fix}."
        )
    return metrics, None


def is_finite_number(value) -> bool:
    """Whether a value is a finite number: metrics.json may hold strings, lists, NaN or ints past a float's range."""
    try:
        return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    except OverflowError:  # an integer too big for a float: it would not print with :.2f either
        return False


def load_assets(source: str | Path, name: str | None = None) -> Assets:
    """Everything one checkpoint needs, read from its folder: fast (no training, no t-SNE), or a UserError. Only the
    model can fail it: a bad side file leaves its part off, and a problem that says why and how to fix it. The
    messages name the folder, except on a Space, whose visitors see them: there they name the checkpoint."""
    source = str(source)
    name = name or checkpoint_name(source)
    shown = name if looks_local(source) and os.environ.get("SPACE_ID") else source  # as vae.hub.on_space tells
    folder = checkpoint_folder(source)
    model = read_model(folder, shown)
    tsne, no_map = read_tsne(folder, model, shown)
    figure, no_figure = read_figure(folder, shown) if tsne is not None else (None, None)
    steering, no_steering = read_steering(folder, model, shown)  # never raises: a bad file is a problem
    metrics, no_metrics = read_metrics(folder, shown)
    card, no_card = read_card(folder, shown)
    assets = Assets(
        name=name,
        source=source,
        model=model,
        tsne=tsne,
        tsne_png=figure,
        metrics=metrics,
        card=card,
        no_map=no_map,
        steering=steering,
        no_steering=no_steering,
        no_figure=no_figure,
        no_card=no_card,
        no_metrics=no_metrics,
        card_figures=read_card_figures(folder, figure) if card else {},
    )
    if tsne is not None:
        assets.map_points = pd.DataFrame(
            {
                "x": tsne["coords"][:, 0].numpy(),
                "y": tsne["coords"][:, 1].numpy(),
                "class": [model.class_names[i] for i in tsne["labels"].tolist()],
            }
        )
    if model.latent_dim == 2:  # the latent plane itself is the map: a click decodes exactly the point clicked
        assets.click_map = PlaneMap(model)
    elif tsne is not None:
        assets.click_map = TsneMap(tsne["coords"], tsne["labels"], model.class_names)
    return assets


def checkpoint_name(source: str) -> str:
    return Path(source).name if looks_local(source) else source
