"""Checking raw inputs: what an API caller sends is not held to the page's sliders, so every value is checked here
first. A bad value is a UserError whose message names the input and its bounds, and repeats the value cut short; the
app turns it into the message its page and gradio_client show. Uploads are read only from Gradio's upload folder (the
only files a caller may name)."""

from __future__ import annotations

import html
import math
import os
import re
import reprlib
from pathlib import Path

import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image, ImageOps

from vae.assets import Assets, is_finite_number
from vae.errors import UserError, clip
from vae.latent import START_POINTS
from vae.steering import no_attributes

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


def check_amounts(values: dict, assets: Assets) -> dict[str, float]:
    """Amounts along the attribute directions (vae.attributes), name → standard deviations within ±MAX_OFFSET; all 0
    for a model without them (the page hides their sliders), which an API call asks for in vain."""
    if no_attributes(assets.steering) is not None:
        if any(check_float(v, f"Amount of {name}", -MAX_OFFSET, MAX_OFFSET) for name, v in values.items()):
            raise UserError(no_attributes(assets.steering))
        return {}
    return {name: check_float(v, f"Amount of {name}", -MAX_OFFSET, MAX_OFFSET) for name, v in values.items()}


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
