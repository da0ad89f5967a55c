"""Samples of a chosen class and the latent sliders (issue 12), through a real server and gradio_client.

One server (module scope) serves a copy of the committed model with its steering statistics (the committed file,
or fitted here on the committed MNIST slice when the folder has none yet) and a copy without them.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from test_app import clear_digits, frames_of_strip, launched, read

import app
from bench.app_startup import call as timed_call
from bench.app_startup import fn_indices
from vae import checks, pictures
from vae.assets import load_assets
from vae.catalog import Catalog
from vae.classes import class_latent, sample_class
from vae.data import read_split
from vae.imaging import to_grid, to_uint8
from vae.steering import STEERING, fit_steering, slide_latent, write_steering

STEERED, PLAIN = "steered", "plain"


@pytest.fixture(scope="module")
def folders(tmp_path_factory, mnist_dir) -> dict[str, Path]:
    """A copy of the committed model with steering.safetensors (fitted on the slice if it has none) and one
    without it."""
    root = tmp_path_factory.mktemp("steering")
    ignore = shutil.ignore_patterns(".*", STEERING)
    steered = shutil.copytree(app.DEFAULT_CHECKPOINT, root / STEERED, ignore=shutil.ignore_patterns(".*"))
    plain = shutil.copytree(app.DEFAULT_CHECKPOINT, root / PLAIN, ignore=ignore)
    if not (steered / STEERING).is_file():
        model = load_assets(steered).model
        raw = mnist_dir / "MNIST" / "raw"
        train, test = (read_split(raw, split, model.class_names) for split in ("train", "t10k"))
        write_steering(steered, fit_steering(model, train, test))
    return {STEERED: steered, PLAIN: plain}


@pytest.fixture(scope="module")
def assets(folders):
    return load_assets(folders[STEERED], STEERED)


@pytest.fixture(scope="module")
def server(assets, folders):
    with launched(app.build_demo(assets, {PLAIN: str(folders[PLAIN])})) as url:
        yield url


@pytest.fixture(scope="module")
def client(server, tmp_path_factory) -> Client:
    return Client(server, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def gallery_pixels(gallery) -> np.ndarray:
    return np.stack([read(item["image"]) for item in gallery])


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) in [0, 1] → (N, H, W) uint8, as the gallery's PNGs hold them."""
    return to_uint8(images)[:, 0]


def digit_pixels(assets, z: torch.Tensor) -> np.ndarray:
    """The Sliders tab's image of a latent z (D,): decoded, upscaled by whole pixels, no padding."""
    with torch.no_grad():
        x = assets.model.decode(z[None])
    return to_grid(x, nrow=1, scale=pictures.SLIDE_SIZE // 28, padding=0)


# ---------------------------------------------------------------------------------------------------------------------
# Samples of a chosen class
# ---------------------------------------------------------------------------------------------------------------------


def test_the_api_lists_the_new_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    sample = {p["parameter_name"]: p for p in api["/sample"]["parameters"]}
    assert list(sample)[-1] == "class_name" and sample["class_name"]["parameter_default"] == checks.ANY
    assert [p["parameter_name"] for p in api["/slide"]["parameters"]] == [
        "start",
        "class_name",
        "seed",
        "offsets",
        "digit",
        "checkpoint",
    ]


def test_class_samples_are_seeded_and_come_from_the_class(client, assets):
    _, gallery = client.predict(8, 3, 1.0, class_name="5", api_name="/sample")
    _, again = client.predict(8, 3, 1.0, STEERED, "5", api_name="/sample")
    _, other = client.predict(8, 4, 1.0, class_name="5", api_name="/sample")
    _, by_index = client.predict(8, 3, 1.0, class_name=5, api_name="/sample")
    images = gallery_pixels(gallery)
    assert np.array_equal(images, gallery_pixels(again)) and np.array_equal(images, gallery_pixels(by_index))
    assert not np.array_equal(images, gallery_pixels(other))
    expected = as_uint8(sample_class(assets.model, assets.steering, 5, 8, 3, 1.0))
    assert np.array_equal(images, expected), "exactly vae.steering's samples of class 5 for this seed"


def test_any_is_the_prior_as_before(client, assets):
    """Calls without a class (3 or 4 arguments, or "any") give what /sample gave before classes existed."""
    expected = as_uint8(assets.model.sample(6, seed=9, temperature=0.7))
    for args in [(6, 9, 0.7), (6, 9, 0.7, STEERED), (6, 9, 0.7, STEERED, "any"), (6, 9, 0.7, PLAIN, "any")]:
        _, gallery = client.predict(*args, api_name="/sample")
        assert np.array_equal(gallery_pixels(gallery), expected), args


def test_a_raw_http_call_without_the_class_still_works(server):
    """Gradio's plain route with the four inputs /sample took before (bench/app_startup.py and curl users send
    those): answered as "any"; three inputs are still refused."""

    def stream(data: list) -> str:
        body = json.dumps({"data": data})
        event = httpx.post(
            f"{server}/gradio_api/call/sample", content=body, headers={"content-type": "application/json"}
        )
        return httpx.get(f"{server}/gradio_api/call/sample/{event.json()['event_id']}", timeout=30).text

    assert "event: complete" in stream([4, 1, 1.0, STEERED])
    assert "event: complete" in stream([4, 1, 1.0, STEERED, "7"])
    assert "event: error" in stream([4, 1, 1.0])


@pytest.mark.parametrize("bad", ["eleven", "10", 10, -1, 2.5, True, [3], {"class": 3}, "x" * 10_000])
def test_a_bad_class_is_a_clear_error(client, bad):
    with pytest.raises(AppError, match=f"Class must be one of the classes of {STEERED}: 0, 1, 2"):
        client.predict(4, 0, 1.0, class_name=bad, api_name="/sample")
    assert len(client.predict(2, 0, 1.0, class_name="3", api_name="/sample")[1]) == 2, "the server keeps answering"


def test_a_folder_without_steering_loads_and_says_how_to_add_it(client, folders):
    plain = load_assets(folders[PLAIN], PLAIN)
    assert plain.steering is None and plain.no_steering in plain.problems
    fix = f"python -m vae.steering --checkpoint {folders[PLAIN]}"
    assert fix in plain.no_steering
    assert fix in app.status(plain), "the page's status line says it"
    with pytest.raises(AppError, match="python -m vae.steering --checkpoint"):
        client.predict(4, 0, 1.0, PLAIN, "3", api_name="/sample")
    with pytest.raises(AppError, match="python -m vae.steering --checkpoint"):
        client.predict("mean", "3", 0, [0.5], None, PLAIN, api_name="/slide")
    with pytest.raises(AppError, match="python -m vae.steering --checkpoint"):  # class means are the steering file's
        client.predict("3", "7", 8, "linear", "mean", 0, PLAIN, api_name="/walk")
    digit = handle_file(app.DEFAULT_CHECKPOINT / "samples.png")
    _, _, nearest, _, walk, note = client.predict(digit, "7", PLAIN, api_name="/encode")
    assert nearest == "" and walk is None and "python -m vae.steering --checkpoint" in note
    assert len(client.predict(4, 0, 1.0, PLAIN, "any", api_name="/sample")[1]) == 4, "'any' still works"


def test_choosing_a_checkpoint_updates_the_class_choices(assets, folders):
    catalog = Catalog(assets, {PLAIN: str(folders[PLAIN])})
    view = app.select_checkpoint(catalog, PLAIN)
    assert view.sample_class["choices"] == [checks.ANY, *assets.class_names] and view.sample_class["value"] == "any"
    assert view.slider_class["choices"] == assets.class_names


# ---------------------------------------------------------------------------------------------------------------------
# The latent sliders
# ---------------------------------------------------------------------------------------------------------------------


def test_zero_offsets_give_the_start_point(client, assets):
    steering = assets.steering
    starts = {
        ("mean", "4", 0): steering.class_means[4],
        ("sample", "4", 11): class_latent(steering, 4, "sample", 11),
    }
    for (start, name, seed), z in starts.items():
        for zeros in ([], [0.0], [0.0] * len(steering.spreads)):
            image = read(client.predict(start, name, seed, zeros, None, api_name="/slide"))
            assert image.shape == (224, 224)
            assert np.array_equal(image, digit_pixels(assets, z)), (start, zeros)


def test_your_digit_with_zero_offsets_is_its_reconstruction(client, assets, tmp_path):
    digit, _ = clear_digits(assets, 1)[0]
    path = tmp_path / "digit.png"
    Image.fromarray(255 - digit).resize((140, 140), Image.Resampling.BILINEAR).save(path)
    _, reconstruction, *_ = client.predict(handle_file(path), "7", STEERED, api_name="/encode")
    moved = client.predict("digit", "3", 0, [0.0] * 3, handle_file(path), api_name="/slide")
    assert np.array_equal(read(moved), read(reconstruction))
    with pytest.raises(AppError, match="No image"):
        client.predict("digit", "3", 0, [1.0], None, api_name="/slide")


def test_offsets_move_along_the_directions(client, assets):
    offsets = [2.0, -1.5, 0.0, 0.7]
    image = read(client.predict("mean", "3", 0, offsets, None, api_name="/slide"))
    start = read(client.predict("mean", "3", 0, [], None, api_name="/slide"))
    assert not np.array_equal(image, start)
    assert np.array_equal(
        image, digit_pixels(assets, slide_latent(assets.steering, assets.steering.class_means[3], offsets))
    )


def test_the_walk_the_sliders_and_the_nearest_class_agree_on_each_class_mean(client, assets, tmp_path):
    """Issue 31: one mean per class. The walk from class c at its mean and the sliders from c's mean with every offset
    0 show the same digit, pixel for pixel; that digit, uploaded as a drawing, is of class c by the nearest class."""
    names, zeros = assets.class_names, [0.0] * len(assets.steering.spreads)
    for c, name in enumerate(names):
        strip, _ = client.predict(name, names[(c + 1) % len(names)], 2, "linear", "mean", 0, api_name="/walk")
        walked = (frames_of_strip(strip, 2)[0, 0] * 255).round().byte().numpy()  # (28, 28): the walk's first frame
        slid = read(client.predict("mean", name, 0, zeros, None, api_name="/slide"))
        scale = slid.shape[0] // walked.shape[0]
        differ = int((slid != np.kron(walked, np.ones((scale, scale), np.uint8))).sum())
        assert differ == 0, f"class {name}: the walk's first frame and the sliders' digit differ in {differ} pixels"
        path = tmp_path / f"mean-{c}.png"
        Image.fromarray(slid).save(path)
        nearest = client.predict(handle_file(path), name, api_name="/encode")[2]
        assert nearest == name, f"the mean of {name} is nearest to {nearest}"


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ([5.0], "Offsets must be a list of at most 8 numbers from -4.0 to 4.0"),
        ([0.0, -4.5], "direction 2 is -4.5"),
        ([0.0] * 9, "at most 8 numbers"),
        (["1"], "direction 1 is '1'"),
        ([True], "direction 1 is True"),
        ([[1.0]], "direction 1 is"),
        ("1, 2", "Offsets must be a list"),
        ({"a": 1}, "Offsets must be a list"),
        (1e308, "Offsets must be a list"),
    ],
)
def test_bad_offsets_are_refused(client, offsets, message):
    with pytest.raises(AppError, match=message):
        client.predict("mean", "3", 0, offsets, None, api_name="/slide")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("middle", "3", 0, []), "Start must be one of mean, sample, digit"),
        (("mean", "eleven", 0, []), "Class must be one of the classes"),
        (("sample", 10, 0, []), "Class must be one of the classes"),
        (("sample", "3", -1, []), "Seed must be"),
    ],
)
def test_bad_start_points_are_refused(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, None, api_name="/slide")


def test_nan_offsets_are_refused(server):
    """NaN and Infinity come only from other clients' JSON."""
    for offsets in ("[NaN]", "[0, Infinity]"):
        body = f'{{"data": ["mean", "3", 0, {offsets}, null, "{STEERED}"]}}'
        event = httpx.post(
            f"{server}/gradio_api/call/slide", content=body, headers={"content-type": "application/json"}
        )
        stream = httpx.get(f"{server}/gradio_api/call/slide/{event.json()['event_id']}", timeout=30).text
        assert "event: error" in stream and "Offsets must be" in stream


def test_slide_server_time(server, assets):
    """The server's time per /slide (process_starts → process_completed on the event stream, as
    bench/app_startup.py measures /sample), median of 30: the target is 20 ms. Asserted loosely (a shared machine),
    printed for the record."""
    index = fn_indices(server)["slide"]
    rng = np.random.default_rng(0)
    with httpx.Client(timeout=30) as http:
        timed_call(http, server, index, ["mean", "3", 0, [0.0], None, STEERED])  # warm
        times = [
            timed_call(http, server, index, ["mean", "3", 0, rng.uniform(-3, 3, 8).round(1).tolist(), None, STEERED])
            for _ in range(30)
        ]
    server_ms = statistics.median(t["server_ms"] for t in times)
    handler_ms = statistics.median(t["handler_ms"] for t in times)
    round_trip_ms = statistics.median(t["round_trip_ms"] for t in times)
    catalog = Catalog(assets)
    began = []
    for i in range(30):
        start = time.perf_counter()
        app.slide(catalog, "mean", "3", 0, [0.1 * (i % 7)] * 8)
        began.append((time.perf_counter() - start) * 1000)
    print(
        f"\n/slide: server {server_ms:.1f} ms, handler {handler_ms:.1f} ms (Gradio's duration), "
        f"round trip {round_trip_ms:.1f} ms, "
        f"in process {statistics.median(began):.1f} ms; median of 30"
    )
    assert server_ms < 100 and handler_ms < 100
