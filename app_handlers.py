"""The handlers of the model tabs (Samples, Latent walk, Sliders, t-SNE or Latent plane, Your digit, About) and of the
checkpoint dropdown: raw UI values → vae.checks → vae.pictures / vae.map_clicks → what the outputs show. A UserError
becomes the page's message (user_errors). No layout here: app.py lays the tabs out and wires these to them."""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from vae import checks, live, map_clicks, page_decoder, pictures
from vae.assets import Assets
from vae.attributes import ATTRIBUTES
from vae.card import metrics_table, with_model_id
from vae.catalog import Catalog
from vae.errors import UserError, clip
from vae.folder import looks_local
from vae.imaging import class_colours
from vae.latent import INTERPOLATIONS, START_POINTS
from vae.steering import DIRECTIONS, no_attributes

YOU_COLOUR = "#000000"  # your digit's point on the map: no class has it, so app.CSS finds that point by it
ABOUT = """
## What is a VAE?

A variational autoencoder (Kingma & Welling, 2014) learns to squeeze each image into a short vector of
numbers, its *latent*, and to rebuild the image from it. The encoder outputs a small Gaussian cloud for
every image rather than a single point, and training keeps those clouds close to a standard normal
distribution. That is what makes the latent space smooth: any point drawn from N(0, I) decodes to a
plausible image (**Samples**; choose a class to sample only where that class lives), the straight line
between two digits passes through digits (**Latent walk**), the directions along which digits vary most
change them smoothly (**Sliders**), and images of the same class sit together (**t-SNE**, or **Latent plane** for a
model with a 2-D latent; **Your digit**).

This one is a plain stack of `nn.Linear` layers, trained with the studio's `train.py`.
"""
PAPER_LINK = "- Kingma & Welling, *Auto-Encoding Variational Bayes* (2014): https://arxiv.org/abs/1312.6114"
TOOL_LINKS = "- Gradio: https://www.gradio.app · Hugging Face Hub: https://huggingface.co"


def user_errors(handler: Callable) -> Callable:
    """The handler, with a UserError it raises shown as a gr.Error: a message in the page, an AppError for
    gradio_client, no traceback in the log. Keeps the signature: the API's parameter names."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except UserError as err:  # the page renders the message as HTML: a caller's value in it is escaped
            raise gr.Error(html.escape(str(err), quote=False), print_exception=False) from None

    return run


def pixel_image(label: str, **options) -> gr.Image:
    """An output image of digits: PNG unless told otherwise, drawn without smoothing (see CSS)."""
    return gr.Image(label=label, **({"format": "png"} | options), elem_classes="pixelated", interactive=False)


@user_errors
def sample(
    catalog: Catalog, num_images, seed, temperature, checkpoint=None, class_name=checks.ANY
) -> tuple[str, list[str]]:
    """Samples tab: images decoded from z ~ N(0, temperature² I), or from one class's region of latent space → a
    grid and the same images one by one."""
    assets = catalog.get(checkpoint)
    n = checks.check_int(num_images, "Number of images", 1, checks.MAX_IMAGES)
    seed = checks.check_int(seed, "Seed", 0, checks.MAX_SEED)
    temperature = checks.check_float(temperature, "Temperature", 0.0, checks.MAX_TEMPERATURE)
    label = checks.check_sample_class(class_name, assets)
    return pictures.sample_files(assets, n, seed, temperature, label)


def checked_walk(catalog: Catalog, class_a, class_b, steps, interpolation, start, seed, checkpoint) -> tuple:
    """The Latent walk tab's raw values, checked → (assets, a, b, steps, mode, start, seed)."""
    assets = catalog.get(checkpoint)
    a, b = checks.check_class(class_a, "Class A", assets), checks.check_class(class_b, "Class B", assets)
    steps = checks.check_int(steps, "Steps", *checks.STEPS)
    mode = checks.check_choice(interpolation, "Interpolation", INTERPOLATIONS)
    start = checks.check_choice(start, "Start points", START_POINTS)
    seed = checks.check_int(seed, "Seed", 0, checks.MAX_SEED)
    return assets, a, b, steps, mode, start, seed


@user_errors
def latent_walk(
    catalog: Catalog, class_a, class_b, steps, interpolation, start, seed, checkpoint=None
) -> tuple[str, str]:
    """Latent walk tab: from class A to class B → a strip of the frames and an animated GIF."""
    return pictures.walk_files(*checked_walk(catalog, class_a, class_b, steps, interpolation, start, seed, checkpoint))


@user_errors
def walk_latents(catalog: Catalog, class_a, class_b, steps, interpolation, start, seed, checkpoint=None) -> str:
    """The page: the latents of the walk's frames, for its scrubber (web/decoder.js); "" when the walk is off."""
    assets, *walk = checked_walk(catalog, class_a, class_b, steps, interpolation, start, seed, checkpoint)
    if assets.steering is None:
        return ""
    return page_decoder.latents_data(assets, pictures.walk_latents(assets, *walk))


@user_errors
def slide_with_start(
    catalog: Catalog, start, class_name, seed, offsets, digit=None, checkpoint=None, amounts=None
) -> tuple[str, str]:
    """Sliders tab: a start point moved along the model's principal directions (and by `amounts`, attribute name →
    standard deviations, along its attribute directions) → the digit decoded there (a PNG file), and the start point
    for the page's own decoder (web/decoder.js)."""
    assets = catalog.get(checkpoint)
    offsets = checks.check_offsets(offsets, assets)
    amounts = checks.check_amounts(amounts or {}, assets)
    start = checks.check_choice(start, "Start", checks.SLIDER_STARTS)
    label = checks.check_class(class_name, "Class", assets) if start != "digit" else 0
    seed = checks.check_int(seed, "Seed", 0, checks.MAX_SEED)
    if digit is not None:  # the page sends its upload whatever the start point; an API caller may send anything
        checks.image_path(digit)
    z = pictures.slider_start(assets, start, label, seed, digit)  # (D,)
    return pictures.slide_file(assets, z, offsets, amounts), page_decoder.latents_data(assets, z[None])


def slide(catalog: Catalog, start, class_name, seed, offsets, digit=None, checkpoint=None) -> str:
    """/slide: a start point moved along the model's principal directions → the digit decoded there."""
    return slide_with_start(catalog, start, class_name, seed, offsets, digit, checkpoint)[0]


@user_errors
def attribute(catalog: Catalog, start, class_name, seed, name, amount, digit=None, checkpoint=None) -> str:
    """/attribute: a start point (as /slide's) made bolder or more slanted: moved `amount` standard deviations along
    the attribute's direction (thickness or slant, vae.attributes) → the digit decoded there."""
    assets = catalog.get(checkpoint)
    if (why := no_attributes(assets.steering)) is not None:
        raise UserError(why)
    name = checks.check_choice(name, "Attribute", ATTRIBUTES)
    amount = checks.check_float(amount, "Amount", -checks.MAX_OFFSET, checks.MAX_OFFSET)
    return slide_with_start(catalog, start, class_name, seed, [], digit, checkpoint, {name: amount})[0]


def move_sliders(catalog: Catalog, start, class_name, seed, digit, checkpoint, *values) -> tuple[str, str]:
    """The page's sliders, one value each (DIRECTIONS principal ones, then one per attribute) → /slide's list of
    offsets (as many as the checkpoint has directions) and the attributes' amounts; the digit, and its start point for
    the page's own decoder."""
    offsets = list(values[: slider_count(catalog, checkpoint)])
    amounts = dict(zip(ATTRIBUTES, values[DIRECTIONS:], strict=True))
    return slide_with_start(catalog, start, class_name, seed, offsets, digit, checkpoint, amounts)


def slider_count(catalog: Catalog, checkpoint) -> int:
    """How many sliders the checkpoint moves: one per principal direction it stores (2 for a 2-D latent)."""
    try:
        steering = catalog.get(checkpoint).steering
    except UserError:
        steering = None  # slide says why
    return len(steering.spreads) if steering is not None else DIRECTIONS


def attributes_shown(steering) -> tuple[bool, str]:
    """Whether a model's thickness and slant sliders show, and else why not ("" for a model without any steering: the
    tab says so already)."""
    if steering is None:
        return False, ""
    why = no_attributes(steering)
    return why is None, why or ""


def show_sliders(catalog: Catalog, checkpoint) -> list:
    """A checkpoint chosen: only its sliders shown; its thickness and slant sliders when it has them, else why not."""
    try:
        steering = catalog.get(checkpoint).steering
    except UserError:
        steering = None  # select_checkpoint says why
    has, why = attributes_shown(steering)
    principal = [gr.update(visible=k < slider_count(catalog, checkpoint)) for k in range(DIRECTIONS)]
    return [*principal, *[gr.update(visible=has) for _ in ATTRIBUTES], gr.update(value=why, visible=bool(why))]


def reset_sliders(catalog: Catalog, start, class_name, seed, digit, checkpoint) -> list:
    """Reset, or a new start point: every slider back to 0, the start point's own digit and the start point itself."""
    zeros = [0.0] * (DIRECTIONS + len(ATTRIBUTES))
    return [*zeros, *slide_with_start(catalog, start, class_name, seed, [], digit, checkpoint)]


@user_errors
def tsne_map(catalog: Catalog, checkpoint=None) -> tuple[str | None, pd.DataFrame]:
    """/tsne: the cached figure and the saved coordinates, coloured by class (nothing is computed). The page shows
    neither: its map is the clickable one, with the test digits' thumbnails on hover (map_clicks.map_hover)."""
    assets = catalog.get(checkpoint)
    if assets.tsne is None:
        raise UserError(assets.no_map)
    return pictures.tsne_figure_file(assets), assets.map_points


@user_errors
def pick(catalog: Catalog, point, walk_from=None, checkpoint=None) -> tuple:
    """t-SNE tab (/pick): a point of the clickable map, and optionally the one clicked before it → the map with both
    marked, the nearest test digit, the latent there decoded, a caption, and the walk between the two."""
    assets = catalog.get(checkpoint)
    point = map_clicks.check_point(point, "Point", assets)
    before = map_clicks.check_point(walk_from, "Walk from", assets) if walk_from is not None else None
    found = map_clicks.pick_files(assets, point, before)
    return found.picture, found.real, found.decoded, found.caption, found.walk


@user_errors
def click_map(catalog: Catalog, before, checkpoint, event: gr.SelectData) -> tuple:
    """The page: a click on the map picture → what /pick shows for the point there, walking from the click before;
    and that point, remembered for the next click."""
    point = map_clicks.clicked_point(catalog.get(checkpoint), event.index)
    return *pick(catalog, list(point), before, checkpoint), list(point)


def show_map(catalog: Catalog, checkpoint) -> tuple:
    """A checkpoint chosen: its clickable map, unmarked, and nothing picked yet; the tab named for the map."""
    try:
        assets = catalog.get(checkpoint)
    except UserError:
        return gr.update(value=None), None, None, "", None, None, gr.update()  # select_checkpoint says why
    picture = gr.update(value=map_clicks.map_picture(assets), label=map_label(assets))
    return picture, None, None, map_hint(assets), None, None, gr.update(label=map_tab_label(assets))


def on_plane(assets: Assets) -> bool:
    return assets.click_map is not None and assets.click_map.kind == "plane"


def map_label(assets: Assets) -> str:
    return "The latent plane: click anywhere" if on_plane(assets) else "The t-SNE map: click a point"


def map_tab_label(assets: Assets) -> str:
    """The map tab's name: what its clickable map is (a 2-D model's latent plane itself, else a t-SNE map of it)."""
    return "Latent plane" if on_plane(assets) else "t-SNE"


def map_hint(assets: Assets) -> str:
    if assets.click_map is None:
        return checks.literal(assets.no_map or "")
    hover = assets.tsne is not None and "images" in assets.tsne  # as map_clicks.map_hover tells
    if assets.click_map.kind == "plane":
        return (
            "This model's latent is 2-D, so the map is the latent plane itself: each digit is decoded from its point "
            "(z1 to the right, z2 upwards, from the 5% to the 95% quantile of N(0, 1)). "
            + "Hover to see the point under the pointer decoded"
            + (" beside the test digit whose latent is nearest. " if hover else ". ")
            + "Click anywhere to decode exactly that point; click again to walk from there."
        )
    return (
        "Each dot is a test digit in its class's colour; t-SNE keeps neighbours together, but the distances between "
        "clusters mean little. "
        + ("Hover over a dot to see that digit. " if hover else "")
        + "Click one to see it beside its reconstruction; click another to walk between the two."
    )


@user_errors
def encode(catalog: Catalog, image, target_class, checkpoint=None) -> tuple:
    """Your digit tab: an image → the model's input, its reconstruction, the nearest class, its place on
    the t-SNE map and a walk from it to the chosen class."""
    assets = catalog.get(checkpoint)
    target = checks.check_class(target_class, "Walk to class", assets) if assets.steering is not None else None
    found = pictures.encode_image(assets, checks.read_image(image), target)
    return found.model_input, found.reconstruction, found.nearest, found.points, found.walk, found.notes


@user_errors
def posterior(catalog: Catalog, image, checkpoint=None) -> tuple:
    """Your digit tab (/posterior): an image → digits decoded from samples of its posterior q(z|x), the KL of each
    latent dimension (a bar chart's rows), the spread and active dimensions in words, and for a 2-D model its ellipses
    at 1 and 2 sd on the latent plane (None for another model)."""
    assets = catalog.get(checkpoint)
    found = pictures.posterior_files(assets, checks.read_image(image))
    return found.samples, found.kl, found.summary, found.plane


def example_digit(assets: Assets):
    """The Your digit tab's example: the first test digit of the walk's start class and its class, or None."""
    start = default_pair(assets)[0]
    return None if start is None else pictures.test_digit(assets, assets.class_names.index(start))


def posterior_view(catalog: Catalog, image, checkpoint=None) -> tuple:
    """The page's /posterior: the plane's picture shown only for a model whose latent is that plane."""
    *shown, plane = posterior(catalog, image, checkpoint)
    return *shown, gr.update(value=plane, visible=plane is not None)


@user_errors
def posterior_example(catalog: Catalog, checkpoint=None) -> tuple:
    """The posterior of the Your digit tab's example (digit_example's test digit) as the page opens."""
    assets = catalog.get(checkpoint)
    example = example_digit(assets)
    if example is None:
        return None, None, "", gr.update(value=None, visible=False)
    found = pictures.posterior_files(assets, example[0])
    return found.samples, found.kl, found.summary, gr.update(value=found.plane, visible=found.plane is not None)


@user_errors
def digit_example(catalog: Catalog, target_class, checkpoint=None) -> tuple:
    """Your digit tab as the page opens: a real test digit of the walk's start class, encoded as a drawing is, so the
    tab shows what it does before anything is drawn. Empty for a model without its test digits (no t-SNE map)."""
    assets = catalog.get(checkpoint)
    example = example_digit(assets)
    if example is None:
        return None, None, "", None, None, "Draw a digit on the left, or upload one, then press Encode."
    image, name = example
    target = checks.check_class(target_class, "Walk to class", assets) if assets.steering is not None else None
    found = pictures.encode_image(assets, image, target)
    note = (
        f"An example to start from: {pictures.article(name)} **{checks.literal(name)}** from the test set. Draw your "
        "own digit on the left, or upload one, and press Encode."
    )
    return (
        found.model_input,
        found.reconstruction,
        found.nearest,
        found.points,
        found.walk,
        f"{note}\n\n{found.notes}",
    )


@user_errors
def about(catalog: Catalog, checkpoint=None) -> str:
    """About tab: what a VAE is, then this checkpoint's model card (its metrics, figures and links), or its metrics
    alone when it has none."""
    assets = catalog.get(checkpoint)
    metrics = checks.numbers(assets.metrics)
    card = html.escape(assets.card, quote=False) if isinstance(assets.card, str) else ""  # Markdown, but no HTML
    card = card or (f"## Test metrics\n\n{metrics_table(metrics)}" if metrics else "")
    links = [TOOL_LINKS]
    if not looks_local(assets.source):  # its card loads the repo it was pushed to, and says so
        card = with_model_id(card, assets.source)
        links.append(f"- This model on the Hub: https://huggingface.co/{assets.source}")
    return f"{ABOUT}\n{with_links(pictures.card_with_figures(assets, card), links)}\n"


def with_links(card: str, links: list[str]) -> str:
    """The card with the page's links added to its own Links section (one section, not two), or in a new one."""
    start = card.find("## Links\n")
    if start < 0:
        return f"{card}\n\n## Links\n\n" + "\n".join([PAPER_LINK, *links])
    end = card.find("\n## ", start + 1)
    end = len(card) if end < 0 else end
    return card[:end].rstrip() + "\n" + "\n".join(links) + "\n\n" + card[end:].lstrip()


class CheckpointView(NamedTuple):
    """What shows the chosen checkpoint. build_demo makes one of the components (the outputs of the dropdown's
    change event, gathered by name from the tabs) and select_checkpoint one of their new values: the two are matched
    by field, not by position."""

    status: Any  # the line under the title
    class_a: Any  # the walk's classes and the Your digit tab's target: the checkpoint's classes
    class_b: Any
    target: Any
    map_hover: Any  # the map tab's hover data (web/map.js): the new model's test digits under the pointer
    decoder: Any  # the page's decoder (web/decoder.js): the new model's weights and directions
    encode_map: Any  # the Your digit tab's map: cleared, in the checkpoint's colours
    about: Any  # the About tab's text
    sample_class: Any  # the Samples tab's class: "any" and the checkpoint's classes
    slider_class: Any  # the Sliders tab's class: the checkpoint's classes


@user_errors
def select_checkpoint(catalog: Catalog, checkpoint) -> CheckpointView:
    """The checkpoint dropdown: class choices, the map and the About text of the chosen model."""
    assets = catalog.get(checkpoint)
    a, b = default_pair(assets)
    names = assets.class_names
    return CheckpointView(
        status=status(assets),
        class_a=gr.update(choices=names, value=a),
        class_b=gr.update(choices=names, value=b),
        target=gr.update(choices=names, value=b),
        map_hover=map_clicks.map_hover(assets),
        decoder=page_decoder.decoder_data(assets),
        encode_map=gr.update(value=None, color_map=colours(assets)),
        about=about(catalog, checkpoint),
        sample_class=gr.update(choices=[checks.ANY, *names], value=checks.ANY),
        slider_class=gr.update(choices=names, value=a),
    )


def status(assets: Assets) -> str:
    m, classes = assets.model, clip(", ".join(map(str, assets.class_names)), 300)
    line = f"**{checks.literal(assets.name)}**: {m.latent_dim}-d latent, classes {checks.literal(classes)}"
    if (loss := checks.numbers(assets.metrics).get("test_loss")) is not None:
        line += f", test −ELBO {loss:.2f} nats/image"
    return "\n\n".join([line, *[f"⚠️ {checks.literal(p)}" for p in assets.problems]])


def default_pair(assets: Assets) -> tuple[str | None, str | None]:
    names = assets.class_names
    if not names:  # nothing to walk between (load_assets refuses such a checkpoint; the page still builds)
        return None, None
    a, b = live.walk_classes(len(names))  # 3 → 7: the original tutorial's walk; the Train tab shows the same
    return names[a], names[b]


def colours(assets: Assets) -> dict[str, str]:
    """Class → colour as in the cached figure, and YOU_COLOUR for the point of the user's digit (drawn large: CSS)."""
    return class_colours(assets.class_names) | {pictures.YOU: YOU_COLOUR}
