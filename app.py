"""MNIST VAE studio: samples, digit-to-digit walks, the t-SNE map and your own drawing, in a Gradio app.

python app.py                                     # checkpoints/vae-mnist on http://127.0.0.1:7860
python app.py --checkpoint user/vae-mnist         # a model that train.py pushed to the Hugging Face Hub
VAE_CHECKPOINT=checkpoints/vae-fashion-mnist python app.py --host 0.0.0.0 --port 7861

Every event has an api_name, so gradio_client can call /sample, /walk, /slide, /tsne, /pick, /encode,
/encode_drawing and /about.

    /sample (num_images, seed, temperature, checkpoint, class_name="any") → grid, gallery: "any" samples the
        prior N(0, I) (what /sample gave before it took a class, so calls without one are answered as before);
        a class name (or index) samples that class's region of latent space (needs steering.safetensors).
    /slide (start, class_name, seed, offsets, digit=None, checkpoint) → one digit (PNG): start "mean" (the class
        mean), "sample" (a seeded example of the class, where /walk starts) or "digit" (the posterior mean of the
        uploaded `digit`), moved by offsets[k] standard deviations along the model's k-th principal direction (a list of
        numbers from -4 to 4, at most one per direction the model stores, 8 by default; missing ones are 0).
        Zero offsets give the start point's digit.
    /pick (point, walk_from=None, checkpoint) → map, nearest test digit, decoded digit, caption, walk: point [x, y]
        on the clickable map (t-SNE coordinates; for a model with a 2-D latent, z on its latent plane), as a click
        on the t-SNE tab's map picture; with walk_from (another point), the walk from there to point.

Inputs reach the handlers raw (preprocess=False) and each handler checks them, so an API caller gets the same
clear message as a user of the page for a count out of range or a file that is not an image. Nothing is trained
or recomputed here: the model folder carries the t-SNE map and its figure, and the steering statistics (each class's
mean and region as vae.classes defines them, the principal directions), all computed once by train.py (or
`python -m vae.steering`).

This module is the page: the handlers (raw values checked by vae.checks, the work done by vae.pictures and
vae.map_clicks), one function per tab that lays it out and wires its events, build_demo and main. The checkpoint
catalog is vae.catalog, the output files vae.output_files, the server's limits vae.request_limits.
"""

from __future__ import annotations

import argparse
import functools
import html
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from vae import checks, live, map_clicks, pictures, request_limits, server_process
from vae.assets import Assets, load_assets
from vae.card import metrics_table, with_model_id
from vae.catalog import Catalog, find_checkpoints
from vae.disk import disk_bytes_setting
from vae.errors import UserError, clip, command
from vae.folder import discard, looks_local
from vae.hub import machine_account, on_space
from vae.imaging import class_colours
from vae.latent import INTERPOLATIONS, START_POINTS
from vae.steering import DIRECTIONS
from vae.visitors import PER_VISITOR, Visitors, client_address, delete_run, proxy_hops

ROOT = Path(__file__).resolve().parent
WEB = ROOT / "web"  # the page's own JavaScript, run by the browser (tests/test_browser.py checks what it does)
CHECKPOINTS = ROOT / "checkpoints"  # the committed models, offered in the checkpoint dropdown
DEFAULT_CHECKPOINT = CHECKPOINTS / "vae-mnist"
DATA_DIR = ROOT / "data"  # where the Train tab reads MNIST and Fashion-MNIST (downloaded there when missing)

MAX_FILE_SIZE = "2mb"  # the upload route refuses bigger files (request_limits.RequestLimit caps the whole request too)
QUEUE_SIZE = 64  # requests waiting beyond this are turned away ("queue full") instead of piling up
MODEL_WORK = "model"  # the one concurrency group every event joins (bench/app_load.py sets it to None to compare)
# The sketchpad's brush radius on its 400x400 canvas: a 1 drawn down two thirds of it comes out 2.5-3 px wide in the
# 20 px box of an MNIST digit, as wide as the middle half of MNIST's 1s (tests/test_browser.py measures both).
BRUSH = 24
SESSIONS = 500  # Gradio keeps ~0.1-0.5 MB of page state per visitor; the app needs none of it between calls
YOU_COLOUR = "#000000"  # your digit's point on the map: no class has it, so the CSS below finds that point by it
CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
#digit-map .role-mark path[stroke="#000000"] {
  d: path("M8,0A8,8,0,1,1,-8,0A8,8,0,1,1,8,0"); fill: #000000; stroke: #ffffff; stroke-width: 2px;
}
#walk-gif img { width: 224px !important; height: 224px !important; object-fit: contain !important; }
#slide-digit img { width: 224px !important; height: 224px !important; object-fit: contain !important; }
/* a picture's label and toolbar sit above it, not on it (python -m bench.screenshots checks each picture) */
.pixelated .image-container, #click-map .image-container { padding-top: 34px; box-sizing: border-box; }
"""
# Rules Gradio must not scope under its container (it rewrites `css`, not `head`): on a phone, the Sliders' digit above
# the sliders and in view while they move. Gradio's container hides its overflow, which makes it a scroller that
# sticky elements stick to; `clip` hides the same and is no scroller.
HEAD = """<style>
@media (max-width: 700px) {
  #slide-view { order: -1; position: sticky; top: 0; z-index: 5; background: var(--background-fill-primary); }
  .gradio-container { overflow: clip !important; }
}
</style>"""
# The page's scripts, files of the repository read like constants: each is a function, all called when the page loads.
PAGE_SCRIPTS = ("sketchpad.js", "map.js")
PAGE_JS = "\n".join(["() => {", *[f"({(WEB / name).read_text(encoding='utf-8')})();" for name in PAGE_SCRIPTS], "}"])
LAUNCH_OPTIONS = {
    "css": CSS,
    "head": HEAD,
    "js": PAGE_JS,
    "max_file_size": MAX_FILE_SIZE,
    "show_error": False,
    "state_session_capacity": SESSIONS,
}

# bench/class_samples.py's classifier on 500 samples per class of checkpoints/vae-mnist, per class
# (python -m bench.class_samples --data-dir DIR --temperature T: bench/results/class_samples*.json)
TEMPERATURE_NOTE = (
    "How far from the middle of latent space the samples are drawn: z ~ N(0, temperature²). 1 is what the model was "
    "trained on; lower gives plainer digits, higher more varied ones, less often the digit asked for (a class's "
    "samples are that digit 92–97 % of the time at 1, 69–92 % at 1.5, 46–82 % at 2)."
)
INTERPOLATION_NOTE = (
    "linear: the straight line between the two latents; spherical: along the arc between them (slerp), each step "
    "about as far from the centre of latent space as real digits lie."
)
DIRECTION_NOTE = "The {nth}most varied direction of the test digits' latents; σ: one standard deviation along it."
ORDINALS = ["", "2nd ", "3rd ", "4th ", "5th ", "6th ", "7th ", "8th "]  # as many as steering.DIRECTIONS
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


# ---------------------------------------------------------------------------------------------------------------------
# Handlers: raw inputs → vae.checks → vae.pictures / vae.map_clicks → what the outputs show
# ---------------------------------------------------------------------------------------------------------------------


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


@user_errors
def latent_walk(
    catalog: Catalog, class_a, class_b, steps, interpolation, start, seed, checkpoint=None
) -> tuple[str, str]:
    """Latent walk tab: from class A to class B → a strip of the frames and an animated GIF."""
    assets = catalog.get(checkpoint)
    a, b = checks.check_class(class_a, "Class A", assets), checks.check_class(class_b, "Class B", assets)
    steps = checks.check_int(steps, "Steps", *checks.STEPS)
    mode = checks.check_choice(interpolation, "Interpolation", INTERPOLATIONS)
    start = checks.check_choice(start, "Start points", START_POINTS)
    seed = checks.check_int(seed, "Seed", 0, checks.MAX_SEED)
    return pictures.walk_files(assets, a, b, steps, mode, start, seed)


@user_errors
def slide(catalog: Catalog, start, class_name, seed, offsets, digit=None, checkpoint=None) -> str:
    """Sliders tab (/slide): a start point moved along the model's principal directions → the digit decoded there."""
    assets = catalog.get(checkpoint)
    offsets = checks.check_offsets(offsets, assets)
    start = checks.check_choice(start, "Start", checks.SLIDER_STARTS)
    label = checks.check_class(class_name, "Class", assets) if start != "digit" else 0
    seed = checks.check_int(seed, "Seed", 0, checks.MAX_SEED)
    if digit is not None:  # the page sends its upload whatever the start point; an API caller may send anything
        checks.image_path(digit)
    return pictures.slide_file(assets, pictures.slider_start(assets, start, label, seed, digit), offsets)


def move_sliders(catalog: Catalog, start, class_name, seed, digit, checkpoint, *values) -> str:
    """The page's sliders, one value each, → /slide's list of offsets (as many as the checkpoint has directions)."""
    offsets = list(values[: slider_count(catalog, checkpoint)])
    return slide(catalog, start, class_name, seed, offsets, digit, checkpoint)


def slider_count(catalog: Catalog, checkpoint) -> int:
    """How many sliders the checkpoint moves: one per principal direction it stores (2 for a 2-D latent)."""
    try:
        steering = catalog.get(checkpoint).steering
    except UserError:
        steering = None  # slide says why
    return len(steering.spreads) if steering is not None else DIRECTIONS


def show_sliders(catalog: Catalog, checkpoint) -> list:
    """A checkpoint chosen: only its sliders shown."""
    count = slider_count(catalog, checkpoint)
    return [gr.update(visible=k < count) for k in range(DIRECTIONS)]


def reset_sliders(catalog: Catalog, start, class_name, seed, digit, checkpoint) -> list:
    """Reset, or a new start point: every slider back to 0 and the start point's own digit."""
    return [*[0.0] * DIRECTIONS, slide(catalog, start, class_name, seed, [], digit, checkpoint)]


@user_errors
def tsne_map(catalog: Catalog, checkpoint=None) -> tuple[str | None, pd.DataFrame]:
    """/tsne: the cached figure and the saved coordinates, coloured by class (nothing is computed). The page shows
    neither: its map is the clickable one, with the test digits' thumbnails on hover (map_clicks.map_hover)."""
    assets = catalog.get(checkpoint)
    if assets.tsne is None:
        raise UserError(assets.no_map)
    return pictures.tsne_figure(assets), assets.map_points


@user_errors
def pick(catalog: Catalog, point, walk_from=None, checkpoint=None) -> tuple:
    """t-SNE tab (/pick): a point of the clickable map, and optionally the one clicked before it → the map with both
    marked, the nearest test digit, the latent there decoded, a caption, and the walk between the two."""
    assets = catalog.get(checkpoint)
    point = map_clicks.check_point(point, "Point", assets)
    before = map_clicks.check_point(walk_from, "Walk from", assets) if walk_from is not None else None
    found = map_clicks.pick(assets, point, before)
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
            + ("Hover to see the test digit whose latent is nearest. " if hover else "")
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
def digit_example(catalog: Catalog, target_class, checkpoint=None) -> tuple:
    """Your digit tab as the page opens: a real test digit of the walk's start class, encoded as a drawing is, so the
    tab shows what it does before anything is drawn. Empty for a model without its test digits (no t-SNE map)."""
    assets = catalog.get(checkpoint)
    start = default_pair(assets)[0]
    example = None if start is None else pictures.test_digit(assets, assets.class_names.index(start))
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


# The Train tab --------------------------------------------------------------------------------------------------------


@dataclass
class Training:
    """What the Train tab's handlers share on this server."""

    catalog: Catalog
    visitors: Visitors
    limits: live.Limits
    runs: live.Runs = field(default_factory=live.Runs)
    machine_token: bool = False  # app.py --push-with-machine-token: a push without a login uses the machine's token
    machine_account: str | None = None  # whose that token is, as the page says

    def refusal(self, calls: list[tuple[str, str]], caller: tuple[str, str]) -> str | None:
        """Why a /train call from `caller` (session, client address) is refused before it takes a place in the queue,
        given the /train calls going or waiting: one going and one waiting per visitor (a session, or any session from
        the same address), limits.max_train_jobs on the server."""
        session, address = caller
        if sum(s == session or a == address for s, a in calls) >= 2:
            return (
                "You already have a training run going or waiting on this server: wait for it to finish, or press Stop "
                "to end it (it keeps the best weights so far), then press Train again."
            )
        if len(calls) >= self.limits.max_train_jobs:
            runs = f"{len(calls)} run{'s' * (len(calls) != 1)} {'are' if len(calls) != 1 else 'is'}"
            return (
                f"The server's training queue is full: {runs} going or waiting. Try again in a few minutes, or run "
                "the studio on your own machine."
            )
        return None


class TrainView(NamedTuple):
    """One update of the Train tab: a value (or gr.skip()) for each of /train's outputs, in train_tab's order."""

    status: Any
    progress: Any
    curve: Any
    samples: Any
    walk: Any
    model_name: Any
    checkpoint: Any
    download: Any


def check_settings(limits: live.Limits, dataset, latent_dim, hidden_layers, epochs, train_images, seed):
    return live.LiveSettings(
        checks.check_choice(dataset, "Dataset", tuple(live.DATASETS)),
        checks.check_int(latent_dim, "Latent size", *live.LATENT_DIMS),
        checks.check_choice(hidden_layers, "Hidden layers", tuple(live.HIDDEN_LAYERS)),
        checks.check_int(epochs, "Epochs", 1, limits.max_epochs),
        checks.check_int(train_images, "Training images", live.MIN_TRAIN_IMAGES, live.MAX_TRAIN_IMAGES),
        checks.check_int(seed, "Seed", 0, checks.MAX_SEED),
    )


def train(
    training: Training, dataset, latent_dim, hidden_layers, epochs, train_images, seed, visitor: str, address: str = ""
):
    """Train tab (/train): the trainer run in a child process → an update at least once per epoch (the loss curve,
    samples and the first → second class walk from the current weights, images/s, time left, a progress bar), and at
    the end the model: named, added to this visitor's checkpoint dropdown and selected, ready as a zip. `visitor` is
    the session, `address` the client's (the model counts against both: vae.visitors)."""
    try:
        if missing := live.missing_packages():
            raise UserError(
                f"This server cannot train: it lacks {', '.join(missing)}. Install the studio's requirements.txt "
                "(pip install -r requirements.txt) and restart it."
            )
        settings = check_settings(training.limits, dataset, latent_dim, hidden_layers, epochs, train_images, seed)
        name, folder = training.visitors.new_folder(visitor, settings.label)
        config = settings.config(training.limits.data_dir, folder)
    except UserError as err:
        raise gr.Error(html.escape(str(err), quote=False), print_exception=False) from None
    run = training.runs.start(visitor, config)
    view = LiveView()
    finished = False
    try:
        yield view.update(status=f"Starting the trainer: loading {settings.dataset}…")
        for event in run.events(training.limits.max_seconds):
            if event["event"] == "done":
                finished = True
                yield finish(training, view, run, name, Path(event["folder"]), visitor, address)
                return
            if event["event"] == "error":
                finished = True
                discard(folder)  # what the run wrote of it; its pictures stay on the page (swept with the rest)
                message = event["message"]
                print(f"Training run {name} failed: {message}", file=sys.stderr)  # the server's paths: its log only
                message = visitor_message(message, settings.dataset, name, folder, training.limits.data_dir)
                yield view.update(status=f"⚠️ {checks.literal(message)}")
                raise gr.Error(html.escape(message, quote=False), print_exception=False)
            if event["event"] == "wait":  # the export: a yield, where Gradio ends the run if its visitor left
                yield TrainView(*[gr.skip()] * len(TrainView._fields))
                continue
            yield view.read(event, run.stop_reason)
    finally:
        training.runs.finish(run)
        if not finished and not run.closed:  # the visitor's job was cancelled: stop it and drop what it wrote
            run.close()
            delete_run(folder)
        # Closed before (the visitor left, the server exits): whoever closed it deletes the folders, and does so
        # whole; deleting here too would race them.


def visitor_message(message: str, dataset: str, name: str, folder: Path, data_dir: Path) -> str:
    """A trainer's error as the Train tab shows it: no folder of the server's (its log has the message whole)."""
    if str(data_dir) in message:  # missing or broken data: the server's operator fixes it, not the visitor
        return (
            f"This server could not read the {dataset} data it trains on, so it cannot train now. Its log says why "
            "and how to fix it: please tell whoever runs it."
        )
    return message.replace(str(folder), name)


def finish(
    training: Training, view: LiveView, run: live.LiveRun, name: str, folder: Path, visitor: str, address: str = ""
) -> TrainView:
    """The run's model folder → the catalog (by name), the visitor's dropdown (selected), a zip to download."""
    training.catalog.add(name, folder)
    dropped = training.visitors.add(name, visitor, folder, address)
    metrics = checks.numbers(training.catalog.get(name).metrics)
    how = (
        f"stopped ({run.stop_reason}) in epoch {int(metrics['stopped_in_epoch'])}"
        if "stopped_in_epoch" in metrics
        else "done"
    )
    status = (
        f"**{name}** is ready ({how}): test −ELBO {metrics.get('test_loss', float('nan')):.2f} nats/image, best epoch "
        f"{int(metrics.get('best_epoch', 0))}, {metrics.get('train_wall_seconds', 0):.0f} s of training. It is selected "
        "in the checkpoint dropdown above: every tab now shows it. It is deleted when you leave or after an hour."
    )
    if dropped:
        status += f" Your oldest model ({', '.join(dropped)}) was deleted: the server keeps {PER_VISITOR} per visitor."
    choices = [*training.catalog.names, *training.visitors.names(visitor)]
    return view.update(
        status=status,
        progress=progress_bar(1.0, "done"),
        model_name=name,
        checkpoint=gr.update(choices=choices, value=name, visible=True),
        download=gr.update(value=str(training.visitors.zip(name)), visible=True),
    )


CURVE_COLUMNS = ["epoch", "loss", "data", "reconstruction", "KL"]  # the loss curve: −ELBO = reconstruction + KL


class LiveView:
    """The Train tab's outputs, built up from the run's events."""

    def __init__(self):
        self.rows: list[dict] = []  # the loss curve: two points per epoch (train, validation), CURVE_COLUMNS
        self.samples = self.walk = None
        self.line = ""

    def read(self, event: dict, stop_reason: str | None) -> TrainView:
        kind = event["event"]
        if kind == "step":
            fraction = ((event["epoch"] - 1) * event["steps"] + event["step"]) / (event["epochs"] * event["steps"])
            speed = f"{event['images_per_sec']:,.0f} images/s" if event["images_per_sec"] else ""
            left = f"about {duration(event['seconds_left'])} left" if event["seconds_left"] is not None else ""
            loss = f"−ELBO {event['loss']:.1f}"  # a running mean of the batches': the curve has the epochs' means
            label = " · ".join(t for t in (f"epoch {event['epoch']}/{event['epochs']}", loss, speed, left) if t)
            stopping = f"Stopping ({stop_reason}): the best weights so far become the model…" if stop_reason else ""
            return self.update(
                status=stopping or self.line or "Training…", progress=progress_bar(fraction, label), curve=gr.skip()
            )  # the curve: at the epoch's end
        if kind == "epoch":
            record = event["record"]
            for data, prefix in (("train", "train_"), ("validation", "val_")):
                parts = [record[prefix + part] for part in ("loss", "recon", "kl")]
                epoch = str(record["epoch"])  # a category: one tick per epoch, not 1.0, 1.1, 1.2…
                self.rows.append(dict(zip(CURVE_COLUMNS, [epoch, parts[0], data, *parts[1:]], strict=True)))
            self.samples, self.walk = event["samples"], event["walk"]
            stopped = f" (stopped {record['epoch_fraction']:.0%} into it)" if record.get("stopped") else ""
            self.line = (
                f"Epoch {record['epoch']}{stopped}: train −ELBO {record['train_loss']:.2f}, validation −ELBO "
                f"{record['val_loss']:.2f} nats/image (reconstruction {record['val_recon']:.2f} + KL "
                f"{record['val_kl']:.2f}), {record['images_per_sec']:,.0f} images/s."
            )
            return self.update(status=self.line)
        if kind == "export" and "phase" in event:  # the bar is the export's own from here: its phase, and how far
            label = f"writing the model folder: {event['phase']} ({event['number']}/{event['of']})"
            return self.update(progress=progress_bar((event["number"] - 1) / event["of"], label))
        if kind == "export":
            ended = f"Stopped ({stop_reason}): the best weights so far become the model." if stop_reason else self.line
            return self.update(
                status=f"{ended} Writing the model folder: figures, t-SNE map, class regions, card…",
                progress=progress_bar(0.0, "writing the model folder"),
            )
        return self.update()

    def update(self, **changes) -> TrainView:
        # The curve is sent from the first epoch's end on, with both of its series: the plot fixes its legend and
        # colours by the series of the first frame it gets, and an empty frame's columns would reach it as categories.
        curve = pd.DataFrame(self.rows, columns=CURVE_COLUMNS) if self.rows else gr.skip()
        view = TrainView(
            status=gr.skip(),
            progress=gr.skip(),
            curve=curve,
            samples=self.samples,
            walk=self.walk,
            model_name=gr.skip(),
            checkpoint=gr.skip(),
            download=gr.skip(),
        )
        return view._replace(**changes)


def progress_bar(fraction: float, label: str) -> str:
    percent = max(0.0, min(1.0, fraction)) * 100
    return (
        f'<div id="train-bar"><progress value="{percent:.1f}" max="100" style="width:100%"></progress>'
        f"<div>{html.escape(label)} · {percent:.0f}%</div></div>"
    )


def push_note(training: Training) -> str:
    """What the Train tab says under its Push heading: whose token a push uses, or why there is none."""
    if os.environ.get("OAUTH_CLIENT_ID"):
        return "Sign in above: your model is pushed with your own Hugging Face login, to an account of yours."
    if on_space():
        return (
            "Pushing needs visitors to sign in with Hugging Face, which this Space's owner turns on with "
            "hf_oauth: true in its README.md. Meanwhile download the model folder and push it yourself."
        )
    if training.machine_token:
        account = checks.literal(training.machine_account or "the account of HF_TOKEN or hf auth login")
        return (
            f"Pushes as **{account}**, with the Hugging Face token of the machine this app runs on "
            "(started with --push-with-machine-token)."
        )
    return (
        "Pushing is off: this app pushes with the Hugging Face token of the machine it runs on only when started with "
        "python app.py --push-with-machine-token (or VAE_PUSH_WITH_MACHINE_TOKEN=1). Or download the model folder and "
        "push it with python -m vae.hub."
    )


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def stop_training(training: Training, visitor: str) -> str:
    """Stop (/stop_training): ends this visitor's run at the end of its current step; the best weights so far are
    exported as its model."""
    if training.runs.stop(visitor):
        return "Stopping: the best weights so far become the model…"
    return "You have no run going."


@user_errors
def push_model(training: Training, model_name, repo_id, private, token: str | None, visitor: str) -> str:
    """Push (/push): a model this visitor (session) trained here → their Hub repo, through the trainer's own push path,
    with the visitor's login (`token`), or the machine's token only where the owner turned that on (see
    hub.app_push_token). Another session's model is refused as if it did not exist: a name is not a key."""
    from huggingface_hub import HfApi

    from vae.hub import app_push_token, check_hub_access, check_repo_id, push_folder

    folder = training.visitors.own_folder(model_name, visitor) if isinstance(model_name, str) else None
    if folder is None:
        raise UserError(f"No model {checks.shown(model_name)} of yours to push: train one in this tab first.")
    repo_id = check_repo_id(repo_id if isinstance(repo_id, str) else None)
    api = HfApi(token=app_push_token(token, training.machine_token))  # never None: no fallback to the machine's
    account = check_hub_access(repo_id, api)
    url = push_folder(folder, repo_id, private=bool(private), api=api, model=model_name)
    whose = "your Hugging Face login" if token else "this machine's Hugging Face token"
    account = checks.literal(account or "the token's account")  # model_name is one of ours, url the Hub's answer
    return f"Pushed **{model_name}** to {url} as **{account}**, with {whose}."


class CheckpointView(NamedTuple):
    """What shows the chosen checkpoint. build_demo makes one of the components (the outputs of the dropdown's
    change event, gathered by name from the tabs) and select_checkpoint one of their new values: the two are matched
    by field, not by position."""

    status: Any  # the line under the title
    class_a: Any  # the walk's classes and the Your digit tab's target: the checkpoint's classes
    class_b: Any
    target: Any
    map_hover: Any  # the map tab's hover data (web/map.js): the new model's test digits under the pointer
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


def serialized(handler: Callable, outputs: list[gr.components.Component]) -> Callable:
    """The handler, returning its values in the outputs' wire format, for an event with postprocess=False.

    With postprocess on, Gradio converts the outputs and checks the path of every returned file twice (once for
    the session's copy of the page, once for the reply); converted here, one pass is left. For /sample (65 files
    for 64 images) that is a third of its time: 26-28 ms on the server instead of 38-56 ms (bench/app_startup.py,
    three alternating runs of 60 calls each, Gradio 6.31, a busy 2-core machine).
    """

    @functools.wraps(handler)  # keeps the signature: the API's parameter names
    def run(*args):
        return [output.postprocess(value).model_dump() for output, value in zip(outputs, handler(*args), strict=True)]

    return run


# ---------------------------------------------------------------------------------------------------------------------
# Layout and wiring: one function per tab, its events wired below its components
# ---------------------------------------------------------------------------------------------------------------------


def model_work(**options) -> dict:
    """Options of every event. Inputs arrive raw (preprocess=False): the handlers check them. All events share one
    concurrency group: CONCURRENCY handlers at once in all, not per event."""
    return {
        "preprocess": False,
        "concurrency_id": MODEL_WORK,
        "concurrency_limit": request_limits.CONCURRENCY,
        **options,
    }


def cleared_on_switch(checkpoint: gr.Dropdown, outputs: list[gr.components.Component]) -> None:
    """A new checkpoint (chosen, or a Train run's model selected): these outputs showed the previous model's work,
    so they are emptied rather than left beside the new model's name."""
    empty = None if len(outputs) == 1 else [None] * len(outputs)  # one output takes the value itself, not a list

    def emptied():  # no model work: outside the queue, at once
        return empty

    checkpoint.change(emptied, None, outputs, api_visibility="private", queue=False)


def scatter(label: str, assets: Assets, value: pd.DataFrame | None = None, **options) -> gr.ScatterPlot:
    axes = {"x": "x", "y": "y", "color": "class", "x_title": "t-SNE 1", "y_title": "t-SNE 2"}
    return gr.ScatterPlot(value, **axes, color_map=colours(assets), label=label, height=480, **options)


def pixel_image(label: str, **options) -> gr.Image:
    """An output image of digits: PNG unless told otherwise, drawn without smoothing (see CSS)."""
    return gr.Image(label=label, **({"format": "png"} | options), elem_classes="pixelated", interactive=False)


def samples_tab(demo: gr.Blocks, catalog: Catalog, checkpoint: gr.Dropdown, default: Assets) -> dict[str, gr.Dropdown]:
    with gr.Tab("Samples"):
        with gr.Row():
            with gr.Column(scale=1):
                num_images = gr.Slider(1, checks.MAX_IMAGES, value=64, step=1, label="Number of images")
                seed = gr.Number(
                    0, label="Seed", precision=0, minimum=0, maximum=checks.MAX_SEED, elem_id="sample-seed"
                )
                temperature = gr.Slider(
                    0.0,
                    checks.MAX_TEMPERATURE,
                    value=1.0,
                    step=0.05,
                    label="Temperature",
                    info=TEMPERATURE_NOTE,
                    elem_id="sample-temperature",
                )
                class_name = gr.Dropdown(
                    [checks.ANY, *default.class_names], value=checks.ANY, label="Class", elem_id="sample-class"
                )
                button = gr.Button("Sample", variant="primary", elem_id="sample-button")
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
    inputs, outputs = [num_images, seed, temperature, checkpoint, class_name], [grid, gallery]
    run = serialized(functools.partial(sample, catalog), outputs)
    button.click(run, inputs, outputs, api_name="sample", **model_work(postprocess=False))
    demo.load(run, inputs, outputs, api_visibility="private", **model_work(postprocess=False))  # a page opens with some
    # A new checkpoint: the same draw from it, of any class (the class choice is reset to "any" at the same time).
    checkpoint.change(run, inputs[:4], outputs, api_visibility="private", **model_work(postprocess=False))
    return {"sample_class": class_name}


def walk_tab(demo: gr.Blocks, catalog: Catalog, checkpoint: gr.Dropdown, default: Assets) -> dict[str, gr.Dropdown]:
    names, (a, b) = default.class_names, default_pair(default)
    with gr.Tab("Latent walk"):
        with gr.Row():
            with gr.Column(scale=1):
                class_a = gr.Dropdown(names, value=a, label="From class")
                class_b = gr.Dropdown(names, value=b, label="To class")
                steps = gr.Slider(*checks.STEPS, value=10, step=1, label="Steps")
                interpolation = gr.Radio(
                    list(INTERPOLATIONS), value="linear", label="Interpolation", info=INTERPOLATION_NOTE
                )
                ends = [("class means", "mean"), ("random examples of each class", "sample")]
                start = gr.Radio(ends, value="mean", label="Start and end points")
                seed = gr.Number(0, label="Seed (random examples)", precision=0, minimum=0, maximum=checks.MAX_SEED)
                button = gr.Button("Walk", variant="primary", elem_id="walk-button")
            with gr.Column(scale=3):
                strip = pixel_image("The walk", elem_id="walk-strip")
                gif = pixel_image("Animated", format="gif", height=260, elem_id="walk-gif")
    inputs = [class_a, class_b, steps, interpolation, start, seed, checkpoint]
    button.click(functools.partial(latent_walk, catalog), inputs, [strip, gif], api_name="walk", **model_work())
    demo.load(functools.partial(latent_walk, catalog), inputs, [strip, gif], api_visibility="private", **model_work())
    cleared_on_switch(checkpoint, [strip, gif])
    return {"class_a": class_a, "class_b": class_b}  # what shows the checkpoint, by CheckpointView's fields


def sliders_tab(catalog: Catalog, checkpoint: gr.Dropdown, default: Assets) -> dict[str, gr.Dropdown]:
    with gr.Tab("Sliders") as tab:
        gr.Markdown(
            "Each slider moves the digit along one of the directions in which the test digits' latents vary most "
            "(their principal components), in standard deviations of that spread."
        )
        with gr.Row():
            with gr.Column(scale=1):
                starts = [("class mean", "mean"), ("random sample of the class", "sample"), ("your digit", "digit")]
                start = gr.Radio(starts, value="mean", label="Start from", elem_id="slide-start")
                class_name = gr.Dropdown(
                    default.class_names, value=default_pair(default)[0], label="Class", elem_id="slide-class"
                )
                seed = gr.Number(0, label="Seed (random sample)", precision=0, minimum=0, maximum=checks.MAX_SEED)
                digit = gr.Image(
                    label="Your digit", sources=["upload", "clipboard"], type="filepath", image_mode=None, height=160
                )
                reset = gr.Button("Reset", elem_id="slide-reset")
            with gr.Column(scale=1):
                count = slider_count(catalog, default.name)
                sliders = [
                    gr.Slider(
                        -3.0,
                        3.0,
                        value=0.0,
                        step=0.1,
                        label=f"direction {k + 1} (σ)",
                        info=DIRECTION_NOTE.format(nth=ORDINALS[k]),
                        elem_id=f"slide-{k + 1}",
                        visible=k < count,
                    )
                    for k in range(DIRECTIONS)
                ]
            with gr.Column(scale=1, elem_id="slide-view"):
                view = pixel_image("The digit", elem_id="slide-digit", height=260)
        offsets = gr.JSON(visible=False)  # /slide's offsets: inside the tab, or it would split the row of tabs in two
    # The page: a slider moved, or a new start point. always_last: while one update runs, only the newest waits.
    start_point = [start, class_name, seed, digit, checkpoint]
    moved = [s.input for s in sliders]
    gr.on(
        moved,
        functools.partial(move_sliders, catalog),
        [*start_point, *sliders],
        [view],
        api_visibility="private",
        trigger_mode="always_last",
        show_progress="hidden",
        **model_work(),
    )
    again = [reset.click, tab.select, start.input, class_name.input, seed.submit, digit.upload]
    gr.on(
        again,
        functools.partial(reset_sliders, catalog),
        start_point,
        [*sliders, view],
        api_visibility="private",
        trigger_mode="always_last",
        **model_work(),
    )
    show = functools.partial(show_sliders, catalog)
    checkpoint.change(show, [checkpoint], sliders, api_visibility="private", **model_work())
    cleared_on_switch(checkpoint, [view])
    # The API: offsets as one list. Wired to a hidden component that the page never changes, so only calls run it.
    offsets.change(
        functools.partial(slide, catalog),
        [start, class_name, seed, offsets, digit, checkpoint],
        [view],
        api_name="slide",
        **model_work(),
    )
    return {"slider_class": class_name}


def tsne_tab(catalog: Catalog, checkpoint: gr.Dropdown, default: Assets) -> dict[str, gr.Component]:
    with gr.Tab(map_tab_label(default), elem_id="map-tab") as tab:
        gr.Markdown("Where the model puts the test digits, and what it decodes there.")
        with gr.Row():
            picture = gr.Image(
                map_clicks.map_picture(default),
                label=map_label(default),
                format="png",
                interactive=False,
                elem_id="click-map",
                scale=3,
            )
            with gr.Column(scale=2):
                with gr.Row():
                    real = pixel_image("Nearest test digit", elem_id="pick-real", height=240)
                    decoded = pixel_image("Decoded", elem_id="pick-decoded", height=240)
                caption = gr.Markdown(map_hint(default), label="What was clicked", elem_id="pick-caption")
                walk = pixel_image("Walk from the click before", elem_id="pick-walk")
        # The test digits under the pointer, for web/map.js: in the page, never shown (visible=False would leave it out)
        hover = gr.Textbox(map_clicks.map_hover(default), visible="hidden", elem_id="map-hover")
        point, walk_from = gr.JSON(visible=False), gr.JSON(visible=False)  # /pick's inputs: the API's, not the page's
        api = gr.Button(visible=False)  # /tsne's trigger, and its outputs: the API's, not the page's
        figure, plot = gr.Image(visible=False, format="png"), scatter("t-SNE map", default, visible=False)
    before = gr.State(None)  # the page's click before, in map units: the next click walks from it
    shown = [picture, real, decoded, caption, walk]
    api.click(functools.partial(tsne_map, catalog), [checkpoint], [figure, plot], api_name="tsne", **model_work())

    def clicked(before, checkpoint, event: gr.SelectData):  # not a partial: Gradio finds `event` by its type hint
        return click_map(catalog, before, checkpoint, event)

    picture.select(clicked, [before, checkpoint], [*shown, before], api_visibility="private", **model_work())
    show = functools.partial(show_map, catalog)
    checkpoint.change(show, [checkpoint], [*shown, before, tab], api_visibility="private", **model_work())
    # The API: wired to a hidden component that the page never changes, so only calls run it.
    point.change(
        functools.partial(pick, catalog), [point, walk_from, checkpoint], shown, api_name="pick", **model_work()
    )
    return {"map_hover": hover}


def digit_tab(demo: gr.Blocks, catalog: Catalog, checkpoint: gr.Dropdown, default: Assets) -> dict[str, gr.Component]:
    with gr.Tab("Your digit"):
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tab("Draw"):
                    sketch = gr.Sketchpad(
                        label="Draw a digit",
                        elem_id="sketchpad",
                        canvas_size=(400, 400),
                        brush=gr.Brush(default_size=BRUSH, colors=["#000000"], color_mode="fixed"),
                        format="png",
                        type="filepath",
                    )
                    encode_drawing = gr.Button("Encode the drawing", variant="primary", elem_id="encode-drawing")
                with gr.Tab("Upload"):
                    upload = gr.Image(
                        label="Upload an image", sources=["upload", "clipboard"], type="filepath", image_mode=None
                    )
                    encode_upload = gr.Button("Encode the image", variant="primary")
                target = gr.Dropdown(default.class_names, value=default_pair(default)[1], label="Walk to class")
            with gr.Column(scale=2):
                with gr.Row():
                    model_input = pixel_image("As the model sees it", elem_id="digit-input")
                    reconstruction = pixel_image("Reconstruction", elem_id="digit-reconstruction")
                    nearest = gr.Textbox(label="Nearest class mean", interactive=False, elem_id="nearest")
                walk = pixel_image("Walk to the chosen class", elem_id="digit-walk")
                plot = scatter("Where it lands on the t-SNE map", default, elem_id="digit-map")
                notes = gr.Markdown(label="Notes", elem_id="digit-notes")
    run, outputs = functools.partial(encode, catalog), [model_input, reconstruction, nearest, plot, walk, notes]
    encode_upload.click(run, [upload, target, checkpoint], outputs, api_name="encode", **model_work())
    upload.upload(run, [upload, target, checkpoint], outputs, api_visibility="private", **model_work())  # at once
    encode_drawing.click(run, [sketch, target, checkpoint], outputs, api_name="encode_drawing", **model_work())
    example = functools.partial(digit_example, catalog)
    demo.load(example, [target, checkpoint], outputs, api_visibility="private", **model_work())
    cleared_on_switch(checkpoint, [model_input, reconstruction, nearest, walk, notes])  # the map: select_checkpoint
    return {"target": target, "encode_map": plot}


def about_tab(catalog: Catalog, checkpoint: gr.Dropdown, default: Assets) -> gr.Markdown:
    with gr.Tab("About") as tab:
        text = gr.Markdown(about(catalog, default.name), elem_id="about")
    tab.select(functools.partial(about, catalog), [checkpoint], [text], api_name="about", **model_work())
    return text


def train_tab(demo: gr.Blocks, training: Training, checkpoint: gr.Dropdown) -> None:
    limits = training.limits
    with gr.Tab("Train"):
        gr.Markdown(
            "Train a VAE here, with the same trainer as `train.py`, and watch its samples sharpen. When the run ends "
            "(or you press Stop, which keeps the best weights so far) the model is selected in the checkpoint "
            "dropdown above, so every tab shows it. Your models are deleted when you leave or after an hour. "
            f"One run at a time on this server, at most {limits.max_epochs} epochs and "
            f"{duration(limits.max_seconds)}; others wait in a queue (one run going and one waiting per visitor, "
            f"{limits.max_train_jobs} in all)."  # where the data is: the server's log (main), not the visitors' page
        )
        with gr.Row():
            with gr.Column(scale=1):
                dataset = gr.Radio(list(live.DATASETS), value="MNIST", label="Dataset", elem_id="train-dataset")
                latent_dim = gr.Slider(*live.LATENT_DIMS, value=16, step=1, label="Latent size", elem_id="train-latent")
                hidden = gr.Dropdown(list(live.HIDDEN_LAYERS), value="512 → 256", label="Hidden layers (encoder)")
                epochs = gr.Slider(
                    1,
                    limits.max_epochs,
                    value=min(5, limits.max_epochs),
                    step=1,
                    label="Epochs",
                    elem_id="train-epochs",
                )
                images = gr.Slider(
                    live.MIN_TRAIN_IMAGES,
                    live.MAX_TRAIN_IMAGES,
                    value=live.MAX_TRAIN_IMAGES,
                    step=100,
                    label="Training images",
                    elem_id="train-images",
                )
                seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=checks.MAX_SEED)
                with gr.Row():
                    start = gr.Button("Train", variant="primary", elem_id="train-button")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop-button")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="train-status")
                progress = gr.HTML(elem_id="train-progress")
                # Points, not lines: a line needs two epochs, and the first epoch's points are the first news. The
                # y-axis fits the epochs' means (the first steps' ~550 nats are no point of it); hovering a point
                # shows its reconstruction and KL parts.
                curve = gr.ScatterPlot(
                    x="epoch",
                    y="loss",
                    color="data",
                    x_title="epoch",
                    sort=[str(epoch) for epoch in range(1, limits.max_epochs + 1)],  # 1, 2, … 10, not 1, 10, 2
                    y_title="−ELBO (nats/image)",
                    color_title="",  # the legend reads "train", "validation", not the column's name
                    color_map={"train": "#1f77b4", "validation": "#ff7f0e"},
                    tooltip=["reconstruction", "KL"],
                    label="Loss per epoch: train (blue, the epoch's mean) and validation (orange, at its end)",
                    height=330,  # the legend (train, validation) sits below the axes
                    elem_id="train-curve",
                )
                samples = pixel_image("Samples from the current weights", elem_id="train-samples", height=300)
                walk = pixel_image("Walk between two class means (3 → 7)", elem_id="train-walk", height=120)
                model_name = gr.Textbox(label="Your model", interactive=False, elem_id="train-model")
                download = gr.DownloadButton(
                    "Download the model folder (.zip)", visible=False, elem_id="train-download"
                )
                with gr.Accordion("Push it to the Hugging Face Hub", open=False):
                    if os.environ.get("OAUTH_CLIENT_ID"):  # a Space with hf_oauth: true: visitors push as themselves
                        gr.LoginButton()
                    gr.Markdown(push_note(training), elem_id="push-note")
                    repo_id = gr.Textbox(label="Repo id", placeholder="your-name/vae-mnist")
                    private = gr.Checkbox(True, label="Private repo")
                    push = gr.Button("Push", elem_id="push-button")
                    pushed = gr.Markdown()
    outputs = TrainView(status, progress, curve, samples, walk, model_name, checkpoint, download)

    # Closures, not partials: Gradio injects gr.Request and gr.OAuthToken by their type hints.
    def run(dataset, latent_dim, hidden_layers, epochs, train_images, seed, request: gr.Request):
        visitor, address = request.session_hash, client_address(request.headers, request.client.host)
        yield from train(training, dataset, latent_dim, hidden_layers, epochs, train_images, seed, visitor, address)

    def halt(request: gr.Request) -> str:
        return stop_training(training, request.session_hash)

    def upload(model_name, repo_id, private, oauth_token: gr.OAuthToken | None, request: gr.Request) -> str:
        token = oauth_token.token if oauth_token else None
        return push_model(training, model_name, repo_id, private, token, request.session_hash)

    def leave(request: gr.Request) -> None:  # the run first: it would go on writing into the folders deleted here
        training.runs.close(request.session_hash)
        training.visitors.forget(request.session_hash)

    inputs = [dataset, latent_dim, hidden, epochs, images, seed]
    # One run at a time in the whole server (its own concurrency group: the other tabs keep theirs). The queue's
    # max_size counts every event's waiting calls together, so /train's own bounds are checked before a call waits.
    start.click(
        run, inputs, list(outputs), api_name="train", preprocess=False, concurrency_id="train", concurrency_limit=1
    )
    demo.admit("train", training.refusal)
    stop.click(halt, None, [status], api_name="stop_training", concurrency_id="stop", concurrency_limit=None)
    push.click(upload, [model_name, repo_id, private], [pushed], api_name="push", preprocess=False)
    demo.unload(leave)


class Studio(gr.Blocks):
    """gr.Blocks that answers API calls made before an event gained its newest inputs. gradio_client fills in a
    left-out input with its default itself; Gradio's plain HTTP route (POST /call/NAME {"data": [...]}) refuses a
    call one input short. Here the last LATER_INPUTS[api_name] inputs may be left out: they reach the handler as
    None, which it reads as the default ("any" class for /sample). A call short of more is answered with a message
    that lists the inputs (Gradio's own ValueError reached the caller as an error with no message: "null")."""

    LATER_INPUTS = {"sample": 1}  # /sample's class_name

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.admissions: dict[str, Callable[[list[tuple[str, str]], tuple[str, str]], str | None]] = {}
        self.entering: dict[str, list[tuple[str, str]]] = {}  # calls admitted, not yet in the queue

    def admit(self, api_name: str, refusal: Callable[[list[tuple[str, str]], tuple[str, str]], str | None]) -> None:
        """Put each call of the event `api_name` to refusal(calls going or waiting, caller), each call a (session,
        client address), before it joins the queue: a message refuses it at once. (Gradio's queue has one max_size
        for all events' waiting calls together, and an event's validator runs too late to count the calls
        reliably: it awaits before the call joins the queue.) A page shows the message as the app's other errors (a
        validation error would pin it over the event's first input, the Dataset choice); gradio_client raises it as a
        ValidationError (a plain error would reach it as "400 Bad Request", without the message)."""
        self.admissions[api_name] = refusal

    def queue(self, *args, **kwargs):
        super().queue(*args, **kwargs)
        push = self._queue.push

        async def push_admitted(body, request, username):
            fn = self.fns.get(body.fn_index) if body.fn_index is not None else None
            refusal = self.admissions.get(fn.api_name) if fn is not None else None
            if refusal is None:
                return await push(body, request, username)
            caller = (body.session_hash or "", caller_address(request))
            entering = self.entering.setdefault(fn.api_name, [])
            # Checked and counted with no await between: two calls at once cannot both take the last place.
            if message := refusal([*self.calls(fn.api_name), *entering], caller):
                if request.headers.get("x-gradio-user") == "api":  # gradio_client: a ValidationError with the message
                    refused = {"__type__": "validate", "is_valid": False, "message": message, "parameter_name": "Train"}
                    return False, [refused], "validator_error"
                return False, message, "error"  # a page: shown as the app's other errors are, not on the first input
            entering.append(caller)
            try:
                return await push(body, request, username)
            finally:
                entering.remove(caller)

        self._queue.push = push_admitted
        return self

    def calls(self, api_name: str) -> list[tuple[str, str]]:
        """The calls of the event `api_name` waiting in the queue or running, each as (session, client address)."""
        queue = self._queue
        waiting = [event for events in queue.event_queue_per_concurrency_id.values() for event in events.queue]
        running = [event for job in queue.active_jobs if job for event in job]
        return [(e.session_hash, caller_address(e.request)) for e in waiting + running if e.fn.api_name == api_name]

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
        missing = len(block_fn.inputs) - len(inputs)
        if 0 < missing <= self.LATER_INPUTS.get(block_fn.api_name, 0):
            inputs = [*inputs, *[None] * missing]
        elif missing > 0:
            count = len(block_fn.inputs)
            names = ", ".join(getattr(c, "label", None) or type(c).__name__ for c in block_fn.inputs)
            raise gr.Error(
                f"/{block_fn.api_name} takes {count} input{'s' * (count != 1)} ({names}), got {len(inputs)}.",
                print_exception=False,
            )
        return await super().preprocess_data(block_fn, inputs, state, explicit_call)


def caller_address(request) -> str:
    """A queued call's client address (vae.visitors.client_address) from its HTTP request."""
    if request is None:
        return "unknown"
    return client_address(request.headers, request.client.host if request.client else None)


def build_demo(
    default: Assets,
    others: dict[str, str] | None = None,
    limits: live.Limits | None = None,
    machine_token: bool = False,
) -> gr.Blocks:
    """The studio for `default` (and the other checkpoints by name → folder or Hub id), queue on; the Train tab within
    `limits` (default: from the environment, data in DATA_DIR), pushing without a visitor's login with the machine's
    Hugging Face token only when `machine_token` is on (never on a Space)."""
    catalog = Catalog(default, others)
    limits = limits or live.Limits.from_env(default_data_dir=DATA_DIR)
    machine_token = machine_token and not on_space()
    account = machine_account() if machine_token else None
    training = Training(catalog, Visitors(on_remove=catalog.remove), limits, machine_token=machine_token)
    training.machine_account = account
    # Uploads (and the copies Gradio makes of files a handler returns from outside its cache) are deleted
    # UPLOAD_AGE seconds after they were written.
    with Studio(
        title="MNIST VAE studio", delete_cache=(request_limits.UPLOAD_SWEEP, request_limits.UPLOAD_AGE)
    ) as demo:
        gr.Markdown("# MNIST VAE studio\nA variational autoencoder: sample it, walk between digits, draw your own.")
        with gr.Row():
            checkpoint = gr.Dropdown(
                catalog.names,
                value=default.name,
                label="Checkpoint",
                visible=len(catalog.names) > 1,
                scale=1,
                elem_id="checkpoint",
            )
            status_text = gr.Markdown(status(default), elem_id="checkpoint-status")
        samples = samples_tab(demo, catalog, checkpoint, default)
        walk = walk_tab(demo, catalog, checkpoint, default)
        sliders = sliders_tab(catalog, checkpoint, default)
        tsne = tsne_tab(catalog, checkpoint, default)
        digit = digit_tab(demo, catalog, checkpoint, default)
        about_text = about_tab(catalog, checkpoint, default)
        train_tab(demo, training, checkpoint)
        shown = CheckpointView(status=status_text, **walk, **tsne, **digit, about=about_text, **samples, **sliders)
        select = functools.partial(select_checkpoint, catalog)
        checkpoint.change(select, [checkpoint], list(shown), api_visibility="private", **model_work())
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=request_limits.CONCURRENCY)
    return demo


@command  # a UserError (a checkpoint that does not load) ends the process with its message, no traceback
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        default=os.environ.get("VAE_CHECKPOINT") or str(DEFAULT_CHECKPOINT),
        help="model folder written by train.py, or a Hub repo id user/name (default: $VAE_CHECKPOINT, else %(default)s)",
    )
    parser.add_argument("--host", help="address to serve on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT, else the first free from 7860)")
    parser.add_argument(
        "--data-dir", help=f"where the Train tab reads (or downloads) MNIST (default: $VAE_DATA_DIR, else {DATA_DIR})"
    )
    parser.add_argument(
        "--push-with-machine-token",
        action="store_true",
        default=os.environ.get("VAE_PUSH_WITH_MACHINE_TOKEN", "") not in ("", "0"),
        help="let the Train tab's Push use this machine's Hugging Face token (HF_TOKEN or hf auth login) for visitors "
        "who have not signed in; off by default, never on a Space (default: $VAE_PUSH_WITH_MACHINE_TOKEN)",
    )
    args = parser.parse_args(argv)
    limits = live.Limits.from_env(args.data_dir, DATA_DIR)
    proxy_hops(), disk_bytes_setting()  # a bad VAE_PROXY_HOPS or VAE_DISK_BYTES stops the start, not a request
    default = load_assets(args.checkpoint)
    for problem in default.problems:
        print(f"warning: {problem}", file=sys.stderr)
    server_process.tune_server_process()
    print(f"Train tab: data in {limits.data_dir} (VAE_DATA_DIR or --data-dir; downloaded there when missing)")
    demo = build_demo(default, find_checkpoints(default, CHECKPOINTS), limits, args.push_with_machine_token)
    # A fresh app_kwargs on each launch: Gradio adds its own entries to the dict it is given.
    limit = {"middleware": [Middleware(request_limits.RequestLimit)]}
    demo.launch(server_name=args.host, server_port=args.port, app_kwargs=limit, **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
