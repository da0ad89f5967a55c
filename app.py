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

This module is the page: the constants of its look, one function per tab that lays it out and wires its events,
build_demo and main. The model tabs' handlers are app_handlers.py (raw values checked by vae.checks, the work done by
vae.pictures and vae.map_clicks), the Train tab is app_train.py, and what the app overrides of Gradio's own behaviour
is gradio6.py. The checkpoint catalog is vae.catalog, the output files vae.output_files, the server's limits
vae.request_limits.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from app_handlers import (
    YOU_COLOUR,
    CheckpointView,
    about,
    attribute,
    attributes_shown,
    click_map,
    colours,
    default_pair,
    digit_example,
    encode,
    latent_walk,
    map_hint,
    map_label,
    map_tab_label,
    move_sliders,
    on_plane,
    pick,
    pixel_image,
    posterior,
    posterior_example,
    posterior_view,
    reset_sliders,
    sample,
    select_checkpoint,
    show_map,
    show_sliders,
    slide,
    slider_count,
    status,
    tsne_map,
    walk_latents,
)
from app_train import TrainTab, train_tab
from app_train import push_model as push_model  # tests/test_train_tab.py calls them as app.*
from app_train import visitor_message as visitor_message
from gradio6 import Studio, serialized
from vae import checks, live, map_clicks, page_decoder, request_limits, server_process
from vae.assets import Assets, load_assets
from vae.catalog import Catalog, find_checkpoints
from vae.disk import disk_bytes_setting
from vae.errors import command
from vae.hub import machine_account, on_space
from vae.latent import INTERPOLATIONS
from vae.steering import DIRECTIONS
from vae.visitors import Visitors, proxy_hops

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
CSS = f"""
.pixelated img, .pixelated canvas {{ image-rendering: pixelated; }}
#digit-map .role-mark path[stroke="{YOU_COLOUR}"] {{
  d: path("M8,0A8,8,0,1,1,-8,0A8,8,0,1,1,8,0"); fill: {YOU_COLOUR}; stroke: #ffffff; stroke-width: 2px;
}}
#walk-gif img {{ width: 224px !important; height: 224px !important; object-fit: contain !important; }}
#slide-digit img {{ width: 224px !important; height: 224px !important; object-fit: contain !important; }}
/* a picture's label and toolbar sit above it, not on it (python -m bench.screenshots checks each picture) */
.pixelated .image-container, #click-map .image-container {{ padding-top: 34px; box-sizing: border-box; }}
"""
# Rules Gradio must not scope under its container (it rewrites `css`, not `head`): the Sliders' digit in view while they
# move (ten sliders are taller than a laptop's window), and on a phone above them. Gradio's container hides its
# overflow, which makes it a scroller that sticky elements stick to; `clip` hides the same and is no scroller.
HEAD = """<style>
#slide-view { position: sticky; top: 0; z-index: 5; align-self: flex-start; background: var(--background-fill-primary); }
.gradio-container { overflow: clip !important; }
@media (max-width: 700px) {
  #slide-view { order: -1; align-self: stretch; }
}
</style>"""
# The page's scripts, files of the repository read like constants: each is a function, all called when the page loads.
PAGE_SCRIPTS = ("sketchpad.js", "decoder.js", "map.js")  # map.js draws the plane with decoder.js's window.studioDecoder
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
    "samples are that digit 93–98 % of the time at 1, 72–89 % at 1.5, 48–80 % at 2)."
)
INTERPOLATION_NOTE = (
    "linear: the straight line between the two latents; spherical: along the arc between them (slerp), each step "
    "about as far from the centre of latent space as real digits lie."
)
DIRECTION_NOTE = "The {nth}most varied direction of the test digits' latents; σ: one standard deviation along it."
ATTRIBUTE_SLIDERS = {  # vae.attributes.ATTRIBUTES: what each does, for its label and note
    "thickness": (
        "bolder (σ)",
        "More ink to the right, less to the left: the direction along which the training digits "
        "of each class get bolder.",
    ),
    "slant": (
        "slanted (σ)",
        "Leaning right to the right, left to the left: the direction along which the training "
        "digits of each class slant more.",
    ),
}
ORDINALS = ["", "2nd ", "3rd ", "4th ", "5th ", "6th ", "7th ", "8th "]  # as many as steering.DIRECTIONS


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
                with gr.Row():
                    gif = pixel_image("Animated", format="gif", height=260, elem_id="walk-gif")
                    gr.HTML('<div class="scrub"></div>', elem_id="walk-scrubber")  # web/decoder.js fills it
        latents = gr.Textbox(visible="hidden", elem_id="walk-latents")  # the frames' latents, for the scrubber
    inputs = [class_a, class_b, steps, interpolation, start, seed, checkpoint]
    button.click(functools.partial(latent_walk, catalog), inputs, [strip, gif], api_name="walk", **model_work())
    demo.load(functools.partial(latent_walk, catalog), inputs, [strip, gif], api_visibility="private", **model_work())
    for trigger in (button.click, demo.load):  # the page's scrubber: the same walk's latents, no image
        trigger(functools.partial(walk_latents, catalog), inputs, [latents], api_visibility="private", **model_work())
    cleared_on_switch(checkpoint, [strip, gif, latents])
    return {"class_a": class_a, "class_b": class_b}  # what shows the checkpoint, by CheckpointView's fields


def direction_sliders(count: int) -> list[gr.Slider]:
    """One slider per principal direction the page may show (steering.DIRECTIONS), the first `count` visible."""
    return [
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


def attribute_sliders(assets: Assets) -> tuple[list[gr.Slider], gr.Markdown]:
    """One slider per attribute direction (vae.attributes), shown when the model has them; else a note saying why."""
    has, why = attributes_shown(assets.steering)
    sliders = [
        gr.Slider(-3.0, 3.0, value=0.0, step=0.1, label=label, info=note, elem_id=f"slide-{name}", visible=has)
        for name, (label, note) in ATTRIBUTE_SLIDERS.items()
    ]
    return sliders, gr.Markdown(why, visible=bool(why), elem_id="attribute-note")


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
                sliders = direction_sliders(slider_count(catalog, default.name))
                attributes, attribute_note = attribute_sliders(default)
            with gr.Column(scale=1, elem_id="slide-view"):
                view = pixel_image("The digit", elem_id="slide-digit", height=260)
        offsets = gr.JSON(visible=False)  # /slide's offsets: inside the tab, or it would split the row of tabs in two
        attribute_name, amount = gr.Textbox(visible=False), gr.Number(visible=False)  # /attribute's, as /slide's
        start_latent = gr.Textbox(visible="hidden", elem_id="slide-latent")  # the start point, for web/decoder.js
    # The page: a slider let go (web/decoder.js draws while it moves), or a new start point. always_last: while one
    # update runs, only the newest waits.
    start_point = [start, class_name, seed, digit, checkpoint]
    moved = [s.release for s in sliders + attributes]
    gr.on(
        moved,
        functools.partial(move_sliders, catalog),
        [*start_point, *sliders, *attributes],
        [view, start_latent],
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
        [*sliders, *attributes, view, start_latent],
        api_visibility="private",
        trigger_mode="always_last",
        **model_work(),
    )
    show = functools.partial(show_sliders, catalog)
    checkpoint.change(
        show, [checkpoint], [*sliders, *attributes, attribute_note], api_visibility="private", **model_work()
    )
    cleared_on_switch(checkpoint, [view, start_latent])
    # The API: offsets as one list. Wired to a hidden component that the page never changes, so only calls run it.
    offsets.change(
        functools.partial(slide, catalog),
        [start, class_name, seed, offsets, digit, checkpoint],
        [view],
        api_name="slide",
        **model_work(),
    )
    attribute_name.change(
        functools.partial(attribute, catalog),
        [start, class_name, seed, attribute_name, amount, digit, checkpoint],
        [view],
        api_name="attribute",
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
                with gr.Accordion("What the model is unsure of: the posterior q(z|x)", elem_id="posterior"):
                    with gr.Row():
                        samples = pixel_image("Decoded from samples of q(z|x)", elem_id="posterior-samples")
                        plane = pixel_image(
                            "q(z|x) on the latent plane: 1 sd (red) and 2 sd (white)",
                            elem_id="posterior-plane",
                            visible=on_plane(default),
                        )
                    bars = gr.BarPlot(
                        x="dimension",
                        y="KL (nats)",
                        color="active",
                        label="KL of each latent dimension from the prior",
                        sort=None,
                        height=220,
                        elem_id="posterior-kl",
                    )
                    summary = gr.Markdown(elem_id="posterior-summary")
                walk = pixel_image("Walk to the chosen class", elem_id="digit-walk")
                plot = scatter("Where it lands on the t-SNE map", default, elem_id="digit-map")
                notes = gr.Markdown(label="Notes", elem_id="digit-notes")
        posterior_api = gr.Button(visible=False)  # /posterior's trigger: the API's, not the page's
    shown_posterior = [samples, bars, summary, plane]
    view = functools.partial(posterior_view, catalog)
    posterior_api.click(
        functools.partial(posterior, catalog),
        [upload, checkpoint],
        shown_posterior,
        api_name="posterior",
        **model_work(),
    )
    for trigger, image in ((encode_upload.click, upload), (upload.upload, upload), (encode_drawing.click, sketch)):
        trigger(view, [image, checkpoint], shown_posterior, api_visibility="private", **model_work())
    at_load = functools.partial(posterior_example, catalog)  # the example digit's, as the page opens
    demo.load(at_load, [checkpoint], shown_posterior, api_visibility="private", **model_work())
    cleared_on_switch(checkpoint, [samples, bars, summary, plane])
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
    training = TrainTab(catalog, Visitors(catalog=catalog), limits, machine_token=machine_token)
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
        # The selected model's decoder, for the page's own (web/decoder.js): in the page, never shown
        decoder = gr.Textbox(page_decoder.decoder_data(default), visible="hidden", elem_id="decoder-data")
        samples = samples_tab(demo, catalog, checkpoint, default)
        walk = walk_tab(demo, catalog, checkpoint, default)
        sliders = sliders_tab(catalog, checkpoint, default)
        tsne = tsne_tab(catalog, checkpoint, default)
        digit = digit_tab(demo, catalog, checkpoint, default)
        about_text = about_tab(catalog, checkpoint, default)
        train_tab(demo, training, checkpoint)
        shown = CheckpointView(
            status=status_text, decoder=decoder, **walk, **tsne, **digit, about=about_text, **samples, **sliders
        )
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
