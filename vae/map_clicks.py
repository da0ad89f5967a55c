"""The clickable map of the t-SNE and latent-plane tabs: the t-SNE map or a 2-D model's latent plane (vae.maps) as
a picture, a click on it → the latent there, and the hover data of the page's web/map.js."""

from __future__ import annotations

import json
import math
import urllib.parse
from dataclasses import dataclass

import torch

from vae.assets import Assets, is_finite_number
from vae.checks import literal, shown
from vae.errors import UserError
from vae.imaging import as_float, png, to_grid
from vae.latent import walk
from vae.maps import ClickMap
from vae.output_files import FILE_ROUTE, cache_files
from vae.pictures import ENCODE_WALK_STEPS, SLIDE_SIZE, article, digit_png, strip

HOVER_RADIUS = 10  # pixels of the t-SNE picture: a thumbnail shows while the pointer is this near a test digit's dot


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
    (latent_at) and, on a 2-D model's plane, the point there decoded (by web/decoder.js): JSON text, "" without a
    clickable map, or on a t-SNE map without its test images. The checkpoint's name and the map's kind, the map's units
    at each pixel column and row (ClickMap.axes), each test digit's point in them, its class, and a sprite sheet of the
    digits (one PNG, in Gradio's cache like the map picture, pinned to the checkpoint; none without test images): digit
    i is the cell at row i // columns, column i % columns. On the t-SNE map a thumbnail shows only near a dot; on the
    latent plane, where no dots are drawn, the nearest test digit always shows, as a click picks it."""
    clickable, tsne = assets.click_map, assets.tsne
    images = tsne.get("images") if tsne is not None else None
    if clickable is None or (images is None and clickable.kind != "plane"):
        return ""
    columns = math.ceil(math.sqrt(len(images))) if images is not None else 1
    sprite = None
    if images is not None:
        grid = png(to_grid(as_float(images), nrow=columns, padding=0))
        sprite = FILE_ROUTE + urllib.parse.quote(cache_files({"digits.png": grid}, pin=assets.name)[0])
    xs, ys = clickable.axes()
    points = [] if images is None else (tsne["latents"] if clickable.kind == "plane" else tsne["coords"]).tolist()
    extent = clickable.extent
    radius = HOVER_RADIUS * (extent.x[1] - extent.x[0]) / clickable.size if clickable.kind == "tsne" else None
    return json.dumps(
        {
            "name": assets.name,
            "kind": clickable.kind,
            "xs": [round(x, 5) for x in xs],
            "ys": [round(y, 5) for y in ys],
            "points": [[round(x, 5), round(y, 5)] for x, y in points],
            "labels": [] if images is None else tsne["labels"].tolist(),
            "captions": [f"{article(name)} {name}" for name in map(str, assets.class_names)],
            "radius": radius,
            "sprite": sprite,
            "cell": list(assets.model.image_shape[-2:]),
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


def pick_files(assets: Assets, point: tuple[float, float], before: tuple[float, float] | None = None) -> Picked:
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
