"""The Gradio app through a real server on 127.0.0.1, called with gradio_client as any API user would.

One server (module scope) serves the committed model plus four broken copies of it, so the tests can
choose a checkpoint without the t-SNE cache, one without class means, a corrupt one and a missing one.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from safetensors.torch import load_file, save_file

import app
from bench.app_startup import free_port, launched  # noqa: F401 (other test files import them from here)
from vae import output_files, pictures, request_limits
from vae.assets import Assets, load_assets
from vae.catalog import Catalog, find_checkpoints
from vae.classes import clear_examples
from vae.errors import UserError
from vae.imaging import png, to_grid, upscale

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ["/sample", "/walk", "/slide", "/tsne", "/pick", "/encode", "/encode_drawing", "/about"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def assets() -> Assets:
    return load_assets(app.DEFAULT_CHECKPOINT)


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, str]:
    """Copies of the committed model with one thing wrong each."""
    root = tmp_path_factory.mktemp("checkpoints")
    source = app.DEFAULT_CHECKPOINT
    no_map = root / "no-map"
    no_map.mkdir()
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json", "steering.safetensors"):
        shutil.copy(source / name, no_map / name)
    no_means = root / "no-means"
    no_means.mkdir()
    shutil.copy(source / "config.json", no_means / "config.json")
    weights = {k: v for k, v in load_file(source / "model.safetensors").items() if not k.startswith("class_")}
    save_file(weights, no_means / "model.safetensors")
    corrupt = root / "corrupt"
    corrupt.mkdir()
    shutil.copy(source / "config.json", corrupt / "config.json")
    (corrupt / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:5000])
    fashion = root / "fashion-like"  # the same weights under Fashion-MNIST's class names
    shutil.copytree(source, fashion, ignore=shutil.ignore_patterns(".*"))
    config = json.loads((source / "config.json").read_text())
    (fashion / "config.json").write_text(json.dumps({**config, "class_names": FASHION}))
    return {
        "no-map": str(no_map),
        "no-means": str(no_means),
        "corrupt": str(corrupt),
        "missing": str(root / "gone"),
        "fashion-like": str(fashion),
    }


@pytest.fixture(scope="module")
def demo(assets, broken):
    return app.build_demo(assets, broken)


@pytest.fixture(scope="module")
def server(demo):
    """The demo launched on a free local port; yields its URL."""
    with launched(demo) as url:
        yield url


@pytest.fixture(scope="module")
def client(server, tmp_path_factory) -> Client:
    return Client(server, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def read(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).copy()


def frames_of_strip(path, steps: int) -> torch.Tensor:
    """The (steps, 1, 28, 28) frames of a walk strip: a one-row grid (padding 2), upscaled by an integer."""
    strip = read(path)
    scale = strip.shape[0] // 32
    assert strip.shape == (32 * scale, (steps * 30 + 2) * scale)
    assert np.array_equal(strip, upscale(strip[::scale, ::scale], scale)), "upscaled by nearest neighbour"
    small = strip[::scale, ::scale]
    return (
        torch.stack([torch.from_numpy(small[2:30, 2 + 30 * i : 30 + 30 * i].copy()) for i in range(steps)])[:, None]
        .float()
        .div(255)
    )


def looks_like(assets: Assets, images: torch.Tensor, k: int = 10) -> list[str]:
    """The class of each image by a vote of the k test images nearest to its latent (from the t-SNE cache)."""
    with torch.no_grad():
        mu, _ = assets.model.encode(images)
    nearest = torch.cdist(mu, assets.tsne["latents"]).topk(k, largest=False).indices
    votes = torch.mode(assets.tsne["labels"][nearest], dim=1).values
    return [assets.class_names[i] for i in votes.tolist()]


def clear_digits(assets: Assets, count: int) -> list[tuple[np.ndarray, str]]:
    """The first few test digits of the t-SNE cache that their neighbours agree on (uint8 28x28, class)."""
    images = load_file(app.DEFAULT_CHECKPOINT / "tsne.safetensors")["images"]
    clear = clear_examples(assets.tsne["latents"], assets.tsne["labels"]).nonzero()[:count, 0].tolist()
    return [(images[i, 0].numpy(), assets.class_names[int(assets.tsne["labels"][i])]) for i in clear]


def test_every_tab_has_a_named_endpoint(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(ENDPOINTS) <= set(api)


def test_queue_is_bounded(assets):
    demo = app.build_demo(assets)
    assert demo._queue.max_size == app.QUEUE_SIZE
    assert demo._queue.default_concurrency_limit == request_limits.CONCURRENCY


def test_all_model_work_shares_one_concurrency_budget(assets):
    """One group for every event that uses a model: at most CONCURRENCY handlers at once in all, not CONCURRENCY per
    event. The Train tab's run has a group of its own with one run at a time, so it never holds up the others."""
    fns = list(app.build_demo(assets, {"other": str(app.DEFAULT_CHECKPOINT)}).fns.values())
    train_tab = {"train", "stop_training", "push"}
    no_model = {"leave", "emptied"}  # a page closed; outputs of the previous checkpoint emptied
    model_work = [fn for fn in fns if fn.api_name not in train_tab and fn.name not in no_model]
    assert len(model_work) >= 9  # sample (button and page load), walk, tsne, encode (button, upload, drawing), …
    assert {fn.concurrency_id for fn in model_work} == {app.MODEL_WORK}
    assert {fn.concurrency_limit for fn in model_work} == {request_limits.CONCURRENCY}
    by_name = {fn.api_name: fn for fn in fns}
    assert (by_name["train"].concurrency_id, by_name["train"].concurrency_limit) == ("train", 1)
    assert by_name["stop_training"].concurrency_limit is None, "Stop never waits behind anything"


def test_the_temperature_control_says_how_often_class_samples_are_the_digit_asked_for(server):
    config = httpx.get(f"{server}/config").json()
    slider = next(c for c in config["components"] if c.get("props", {}).get("label") == "Temperature")
    assert "48–80 % at 2" in (slider["props"].get("info") or ""), "said beside the control, where it is chosen"


def test_sample_returns_a_crisp_grid_and_the_same_images(client, assets):
    grid_path, gallery = client.predict(10, 3, 1.0, api_name="/sample")
    expected = (assets.model.sample(10, seed=3, temperature=1.0) * 255).round().byte()[:, 0].numpy()  # (10, 28, 28)
    images = np.stack([read(item["image"]) for item in gallery])
    assert np.array_equal(images, expected), "the gallery holds exactly the model's samples for this seed"
    grid = read(grid_path)
    scale = pictures.grid_scale(10, 4, 28)
    assert scale >= 2 and grid.shape == (92 * scale, 122 * scale)  # 3 rows x 4 columns of 28 + 2 padding
    assert np.array_equal(grid, upscale(to_grid(torch.from_numpy(expected)[:, None] / 255, nrow=4), scale))


def test_sample_is_deterministic_for_a_seed(client):
    first = client.predict(4, 7, 0.8, api_name="/sample")
    again = client.predict(4, 7, 0.8, api_name="/sample")
    other = client.predict(4, 8, 0.8, api_name="/sample")
    assert np.array_equal(read(first[0]), read(again[0]))
    assert not np.array_equal(read(first[0]), read(other[0]))


@pytest.mark.parametrize("n", [1, 256])
def test_sample_counts_at_the_limits(server, n):
    """Without downloading every file (gradio_client fetches them one by one): the grid's size and the count."""
    grid, gallery = Client(server, verbose=False, download_files=False).predict(n, 0, 1.0, api_name="/sample")
    assert len(gallery) == n
    with Image.open(io.BytesIO(httpx.get(grid["url"], timeout=30).raise_for_status().content)) as img:
        side = min(img.size)
    assert side >= 256, "even one image is shown large"


def test_walk_from_3_to_7_starts_like_3_and_ends_like_7(client, assets):
    for mode in ("linear", "spherical"):
        strip, gif = client.predict("3", "7", 12, mode, "mean", 0, api_name="/walk")
        frames = frames_of_strip(strip, 12)
        assert looks_like(assets, frames[[0, -1]]) == ["3", "7"]
        with Image.open(gif) as animation:
            assert animation.n_frames == 2 * 12 - 2  # forth and back
            assert animation.size == (28 * pictures.GIF_SCALE, 28 * pictures.GIF_SCALE)


@pytest.mark.parametrize(
    ("a", "b", "seed"), [("0", "6", 0), ("1", "4", 1), ("2", "5", 2), ("8", "9", 3), ("3", "7", 4)]
)
def test_walk_between_random_examples_ends_at_the_classes_asked_for(client, assets, a, b, seed):
    strip, _ = client.predict(a, b, 8, "spherical", "sample", seed, api_name="/walk")
    frames = frames_of_strip(strip, 8)
    assert looks_like(assets, frames[[0, -1]]) == [a, b]
    again, _ = client.predict(a, b, 8, "spherical", "sample", seed, api_name="/walk")
    assert np.array_equal(read(strip), read(again)), "seeded"


def test_walk_step_limits(client):
    for steps in (2, 32):
        strip, _ = client.predict("3", "7", steps, "linear", "mean", 0, api_name="/walk")
        assert frames_of_strip(strip, steps).shape == (steps, 1, 28, 28)


def test_tsne_is_the_cached_figure_and_points(client, assets):
    start = time.perf_counter()
    figure, points = client.predict(api_name="/tsne")
    assert time.perf_counter() - start < 5
    assert Path(figure).read_bytes() == (app.DEFAULT_CHECKPOINT / "tsne.png").read_bytes()
    assert len(points["data"]) == len(assets.tsne["labels"])
    assert {row[2] for row in points["data"]} == set(assets.class_names)


def test_encode_an_uploaded_digit(client, assets, tmp_path):
    """Real test digits, uploaded as dark-on-light pictures, come back recognised and placed among their kind."""
    recognised = 0
    for index, (digit, label) in enumerate(clear_digits(assets, 8)):
        path = tmp_path / f"digit-{index}.{'png' if index % 2 else 'jpg'}"  # drawn large, dark on white paper
        Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR).save(path)
        model_input, reconstruction, nearest, points, walk_strip, note = client.predict(
            handle_file(path), "7", api_name="/encode"
        )
        assert read(model_input).shape == read(reconstruction).shape == (224, 224)
        seen = read(model_input)[::8, ::8]
        assert np.abs(seen / 255 - digit / 255).mean() < 0.08, "converted back to (nearly) the MNIST original"
        x = torch.from_numpy(seen.copy()).float().div(255)[None, None]
        assert looks_like(assets, x) == [label], "the model sees the digit it was given"
        recognised += nearest == label
        you = points["data"][-1]
        assert you[2] == pictures.YOU
        on_map = torch.tensor(you[:2])
        neighbours = torch.cdist(on_map[None], assets.tsne["coords"])[0].topk(5, largest=False).indices
        assert label in {assets.class_names[int(i)] for i in assets.tsne["labels"][neighbours]}, "placed among its kind"
        assert looks_like(assets, frames_of_strip(walk_strip, pictures.ENCODE_WALK_STEPS)[[-1]]) == ["7"]
        assert "t-SNE" in note
    assert recognised >= 6, f"nearest class mean right for only {recognised} of 8 clear test digits"


def test_encode_a_sketchpad_drawing(client, tmp_path):
    """The Sketchpad sends RGBA layers composited on transparency: a black 1 drawn on nothing."""
    canvas = np.zeros((400, 400, 4), np.uint8)
    canvas[80:320, 190:215] = (0, 0, 0, 255)
    Image.fromarray(canvas).save(tmp_path / "drawing.png")
    drawing = {"background": None, "layers": [], "composite": handle_file(tmp_path / "drawing.png"), "id": None}
    _, _, nearest, _, _, _ = client.predict(drawing, "3", api_name="/encode_drawing")
    assert nearest == "1"


def test_the_words_of_the_controls_are_explained():
    """Issue 29: temperature, spherical, the sliders' directions and σ each get a line under their control."""
    demo = app.build_demo(load_assets(app.DEFAULT_CHECKPOINT))
    info = {block.label: block.info for block in demo.blocks.values() if getattr(block, "info", None)}
    assert "N(0, temperature²)" in info["Temperature"]
    assert "spherical: along the arc" in info["Interpolation"] and "linear: the straight line" in info["Interpolation"]
    for k in range(1, 9):
        assert "latents; σ: one standard deviation along it" in info[f"direction {k} (σ)"]
    assert info["direction 1 (σ)"].startswith("The most varied direction of the test digits' latents")
    assert info["direction 8 (σ)"].startswith("The 8th most varied direction")


def test_about_shows_the_card_metrics(client):
    text = client.predict(api_name="/about")
    assert "What is a VAE?" in text
    metrics = json.loads((app.DEFAULT_CHECKPOINT / "metrics.json").read_text())
    assert f"{metrics['test_loss']:.2f}" in text


def bad_files(folder: Path) -> dict[str, Path]:
    files = {"empty": folder / "empty.png", "text": folder / "notes.png", "truncated": folder / "cut.png"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("not an image at all\n" * 100)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), np.uint8)).save(folder / "whole.png")
    files["truncated"].write_bytes((folder / "whole.png").read_bytes()[:2000])  # of about 40 kB
    files["huge"] = folder / "huge.png"  # 25 megapixels but a few kB: refused before it is decoded
    Image.new("L", (5000, 5000), 255).save(files["huge"])
    files["blank"] = folder / "blank.png"
    Image.new("RGB", (300, 300), "white").save(files["blank"])
    return files


BAD_CALLS = [
    ("/sample", (0, 0, 1.0), "Number of images must be a whole number from 1 to 256"),
    ("/sample", (257, 0, 1.0), "from 1 to 256"),
    ("/sample", (10**9, 0, 1.0), "from 1 to 256"),
    ("/sample", (2.5, 0, 1.0), "whole number"),
    ("/sample", ("many", 0, 1.0), "whole number"),
    ("/sample", (None, 0, 1.0), "whole number"),
    ("/sample", (4, -1, 1.0), "Seed must be"),
    ("/sample", (4, 2**64, 1.0), "Seed must be"),
    ("/sample", (4, 0, -0.5), "Temperature must be a number from 0.0 to 2.0"),
    ("/sample", (4, 0, 1e9), "Temperature must be"),
    ("/sample", (4, 0, "hot"), "Temperature must be"),
    ("/walk", ("3", "10", 8, "linear", "mean", 0), "Class B must be one of the classes"),
    ("/walk", ("three", "7", 8, "linear", "mean", 0), "Class A must be one of the classes"),
    ("/walk", (-1, "7", 8, "linear", "mean", 0), "Class A must be one of the classes"),
    ("/walk", ("3", "7", 1, "linear", "mean", 0), "Steps must be a whole number from 2 to 32"),
    ("/walk", ("3", "7", 33, "linear", "mean", 0), "Steps must be"),
    ("/walk", ("3", "7", 10**7, "linear", "mean", 0), "Steps must be"),
    ("/walk", ("3", "7", 8, "cubic", "mean", 0), "Interpolation must be one of linear, spherical"),
    ("/walk", ("3", "7", 8, "linear", "median", 0), "Start points must be one of mean, sample"),
    ("/walk", ("3", "7", 8, "linear", "sample", -5), "Seed must be"),
    ("/encode", (None, "7"), "No image"),
    ("/encode", ("empty", "7"), "not an image this app can read"),
    ("/encode", ("text", "7"), "not an image this app can read"),
    ("/encode", ("truncated", "7"), "not an image this app can read"),
    ("/encode", ("huge", "7"), "5000x5000 pixels"),
    ("/encode", ("blank", "7"), "The image is blank"),
    ("/encode", ("whole", "eleven"), "Walk to class must be one of the classes"),
    ("/encode_drawing", ({"background": None, "layers": [], "composite": None, "id": None}, "7"), "No image"),
    ("/sample", (4, 0, 1.0, "nope"), "Unknown checkpoint 'nope'"),
    ("/sample", (4, 0, 1.0, "corrupt"), "Could not load the model in"),
    ("/sample", (4, 0, 1.0, "missing"), "No such checkpoint folder"),
    ("/tsne", ("no-map",), "python -m vae.tsne --checkpoint"),
    ("/walk", ("3", "7", 8, "linear", "mean", 0, "no-means"), "no steering.safetensors, so class samples, walks"),
]


@pytest.mark.parametrize(("api_name", "args", "message"), BAD_CALLS, ids=[f"{c[0]}-{c[2][:20]}" for c in BAD_CALLS])
def test_bad_input_is_a_clear_error(client, tmp_path, api_name, args, message):
    files = bad_files(tmp_path)
    if api_name == "/encode" and args[0] in (*files, "whole"):
        args = (handle_file(files.get(args[0], tmp_path / "whole.png")), *args[1:])
    with pytest.raises(AppError, match=message.replace("(", r"\(")):
        client.predict(*args, api_name=api_name)


@pytest.mark.parametrize(
    ("api_name", "data", "message"),
    [
        ("sample", [4, 0], "/sample takes 5 inputs (Number of images, Seed, Temperature, Checkpoint, Class), got 2."),
        ("walk", ["3"], "/walk takes 7 inputs (From class, To class, Steps"),
        ("about", [], "/about takes 1 input (Checkpoint), got 0."),
        ("pick", [], "/pick takes 3 inputs"),
    ],
)
def test_a_raw_call_short_of_inputs_is_told_which_it_takes(server, api_name, data, message):
    """Gradio's plain HTTP route (POST /gradio_api/call/NAME): a call short of inputs is answered with the app's
    message, not Gradio's error without one ("error": null)."""
    event = httpx.post(f"{server}/gradio_api/call/{api_name}", json={"data": data}, timeout=30).json()["event_id"]
    answer = httpx.get(f"{server}/gradio_api/call/{api_name}/{event}", timeout=60).text
    assert answer.startswith("event: error") and message in answer, answer


def test_nan_and_infinite_numbers_are_refused(server):
    """JSON from other clients can carry NaN and Infinity, which gradio_client cannot send."""
    for body, message in [
        ('{"data": [4, 1, NaN, "vae-mnist"]}', "Temperature must be"),
        ('{"data": [4, 1, -Infinity, "vae-mnist"]}', "Temperature must be"),
        ('{"data": [NaN, 1, 1.0, "vae-mnist"]}', "Number of images must be"),
        ('{"data": [Infinity, 1, 1.0, "vae-mnist"]}', "Number of images must be"),
    ]:
        event = httpx.post(
            f"{server}/gradio_api/call/sample", content=body, headers={"content-type": "application/json"}
        )
        stream = httpx.get(f"{server}/gradio_api/call/sample/{event.json()['event_id']}", timeout=30).text
        assert "event: error" in stream and message in stream


def test_oversized_upload_is_refused(server, client, tmp_path):
    """Over MAX_FILE_SIZE: gradio_client refuses to send it, and the server refuses it if sent anyway."""
    big = tmp_path / "big.png"
    big.write_bytes(np.random.default_rng(0).bytes(11 * 1024 * 1024))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(big), "7", api_name="/encode")
    with open(big, "rb") as f:
        response = httpx.post(f"{server}/gradio_api/upload", files=[("files", ("big.png", f))], timeout=60)
    assert response.status_code == 413


def test_server_files_cannot_be_passed_as_uploads(server):
    """A path on the server that was not uploaded is refused by Gradio before any handler opens it."""
    image = {"path": str(app.DEFAULT_CHECKPOINT / "samples.png"), "meta": {"_type": "gradio.FileData"}}
    body = json.dumps({"data": [image, "7", "vae-mnist"]})
    event = httpx.post(f"{server}/gradio_api/call/encode", content=body, headers={"content-type": "application/json"})
    stream = httpx.get(f"{server}/gradio_api/call/encode/{event.json()['event_id']}", timeout=30).text
    assert "event: error" in stream and "event: complete" not in stream


def test_server_keeps_answering_and_other_checkpoints_keep_working(client):
    """After every bad call above, and for checkpoints that miss a part, what can work still works."""
    grid, gallery = client.predict(4, 0, 1.0, "no-means", api_name="/sample")
    assert len(gallery) == 4
    strip, _ = client.predict("3", "7", 4, "linear", "mean", 0, "no-map", api_name="/walk")
    assert read(strip).shape[0] >= 32
    *_, points, walk_strip, note = client.predict(
        handle_file(app.DEFAULT_CHECKPOINT / "samples.png"), "7", "no-map", api_name="/encode"
    )
    assert points is None and walk_strip and "vae.tsne" in note
    assert len(client.predict(2, 0, 1.0, api_name="/sample")[1]) == 2


def test_another_checkpoint_brings_its_own_classes(client, assets, broken):
    """A second checkpoint (like Fashion-MNIST) is chosen by name; its class names are what walks take."""
    strip, _ = client.predict("T-shirt/top", "Sneaker", 6, "linear", "mean", 0, "fashion-like", api_name="/walk")
    assert frames_of_strip(strip, 6).shape == (6, 1, 28, 28)
    with pytest.raises(AppError, match="Class A must be one of the classes of fashion-like: T-shirt/top"):
        client.predict("3", "7", 6, "linear", "mean", 0, "fashion-like", api_name="/walk")
    catalog = Catalog(assets, {"fashion-like": broken["fashion-like"]})
    status, class_a, class_b, target, *_ = app.select_checkpoint(catalog, "fashion-like")
    assert "fashion-like" in status
    assert class_a["choices"] == class_b["choices"] == target["choices"] == FASHION
    assert (class_a["value"], class_b["value"]) == ("Dress", "Sneaker")


@pytest.fixture
def away_from_temp(tmp_path) -> Path:
    """A folder where a user keeps models: under HOME, outside both the working directory and the temp directory
    (the only places Gradio serves files from besides its own cache). Removed afterwards."""
    home = Path.home() / ".cache"
    home.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="vae-studio-test-", dir=home))
    assert not folder.is_relative_to(Path.cwd()) and not folder.is_relative_to(tempfile.gettempdir())
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_every_tab_works_wherever_the_checkpoint_lives(away_from_temp, monkeypatch):
    """An absolute path with spaces, a relative path and a Hub snapshot in the Hugging Face cache, all outside
    the working directory and the temp directory: every tab's endpoint answers for each of them."""
    import huggingface_hub.constants

    ignore = shutil.ignore_patterns(".*", "eval.json")
    spaced = away_from_temp / "my models" / "vae mnist"
    shutil.copytree(app.DEFAULT_CHECKPOINT, spaced, ignore=ignore)
    relative = os.path.relpath(shutil.copytree(app.DEFAULT_CHECKPOINT, away_from_temp / "relative", ignore=ignore))
    cache = away_from_temp / "hf-cache"
    snapshot = cache / "models--someone--vae-mnist" / "snapshots" / ("b" * 40)
    shutil.copytree(app.DEFAULT_CHECKPOINT, snapshot, ignore=ignore)
    (cache / "models--someone--vae-mnist" / "refs").mkdir()
    (cache / "models--someone--vae-mnist" / "refs" / "main").write_text("b" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    demo = app.build_demo(load_assets(str(spaced)), {"relative": relative, "hub": "someone/vae-mnist"})
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_OPTIONS)
    try:
        client = Client(f"http://127.0.0.1:{port}", verbose=False, download_files=str(away_from_temp / "downloads"))
        digit = away_from_temp / "digit.png"
        Image.fromarray(255 - clear_digits(load_assets(spaced), 1)[0][0]).resize((140, 140)).save(digit)
        figure = (app.DEFAULT_CHECKPOINT / "tsne.png").read_bytes()
        for name in ("vae mnist", "relative", "hub"):
            assert Path(client.predict(name, api_name="/tsne")[0]).read_bytes() == figure, name
            assert len(client.predict(4, 0, 1.0, name, api_name="/sample")[1]) == 4
            assert client.predict("3", "7", 4, "linear", "mean", 0, name, api_name="/walk")[1].endswith(".gif")
            assert client.predict(handle_file(digit), "7", name, api_name="/encode")[2] in [str(d) for d in range(10)]
            assert "What is a VAE?" in client.predict(name, api_name="/about")
    finally:
        demo.close()


def test_find_checkpoints_offers_the_folders_beside_the_default(assets, tmp_path):
    for name in ("vae-mnist", "vae-fashion-mnist", "not-a-model"):
        (tmp_path / name).mkdir()
    for name in ("vae-mnist", "vae-fashion-mnist"):
        (tmp_path / name / "config.json").write_text("{}")
    assert find_checkpoints(assets, tmp_path) == {"vae-fashion-mnist": str(tmp_path / "vae-fashion-mnist")}


def test_a_hub_repo_id_loads_through_the_hub_cache(tmp_path, monkeypatch):
    """`--checkpoint user/repo` goes through huggingface_hub (here its offline cache: the tests never go online)."""
    import huggingface_hub.constants

    repo = tmp_path / "models--someone--vae-mnist"
    shutil.copytree(app.DEFAULT_CHECKPOINT, repo / "snapshots" / ("a" * 40), ignore=shutil.ignore_patterns(".*"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub = load_assets("someone/vae-mnist")
    assert hub.name == "someone/vae-mnist" and hub.tsne is not None and not hub.problems
    about = app.about(Catalog(hub))
    assert "https://huggingface.co/someone/vae-mnist" in about and about.count("## Links") == 1
    assert 'VAE.from_pretrained("someone/vae-mnist")' in about, "the card's code loads the model shown"
    assert about.count(f"]({output_files.FILE_ROUTE}") == 6, "its figures, served by the app"
    with pytest.raises(UserError, match="Could not get someone/nothing from the Hugging Face Hub"):
        load_assets("someone/nothing")


def test_load_assets_reports_what_is_missing(broken):
    no_map = load_assets(broken["no-map"])
    assert no_map.tsne is None and "vae.tsne" in no_map.no_map and no_map.no_steering is None
    no_means = load_assets(broken["no-means"])  # weights without class statistics, and no steering file: it loads
    assert "python -m vae.steering --checkpoint" in no_means.no_steering and no_means.tsne is None
    for name, message in [("corrupt", "Could not load the model"), ("missing", "No such checkpoint folder")]:
        with pytest.raises(UserError, match=message):
            load_assets(broken[name])


def test_a_missing_default_checkpoint_stops_start_up_with_a_message(broken, monkeypatch):
    with pytest.raises(SystemExit, match="error: No such checkpoint folder"):
        app.main(["--checkpoint", broken["missing"]])
    monkeypatch.setenv("VAE_CHECKPOINT", broken["missing"])
    with pytest.raises(SystemExit, match="error: No such checkpoint folder"):
        app.main([])
    with pytest.raises(SystemExit, match="error: Could not load the model"):
        app.main(["--checkpoint", broken["corrupt"]])


def test_handlers_check_inputs_without_a_server(assets):
    catalog = Catalog(assets)
    with pytest.raises(app.gr.Error, match="Temperature"):
        app.sample(catalog, 4, 0, math.nan)
    with pytest.raises(app.gr.Error, match="Temperature"):
        app.sample(catalog, 4, 0, -math.inf)
    with pytest.raises(app.gr.Error, match="whole number"):
        app.sample(catalog, True, 0, 1.0)
    with pytest.raises(app.gr.Error, match="Expected an image"):
        app.encode(catalog, {"path": None}, "7")
    with pytest.raises(app.gr.Error, match="Expected an image"):
        app.encode(catalog, "/etc/passwd", "7")


@pytest.mark.slow
def test_python_app_py_serves_the_default_model(tmp_path):
    """The real entry point: `python app.py --port N` answers /sample, without importing what only training needs."""
    port = free_port()
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--port", str(port)],
            cwd=tmp_path,  # the default checkpoint is found from app.py's folder, not the working directory
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "PYTHONUNBUFFERED": "1"},  # logs each import, in order
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                client = Client(f"http://127.0.0.1:{port}", verbose=False, download_files=str(tmp_path))
                break
            except Exception:
                assert time.monotonic() < deadline, "no server after 90 s"
                time.sleep(0.5)
        _, gallery = client.predict(3, 0, 1.0, api_name="/sample")
        assert len(gallery) == 3
    finally:
        process.terminate()
        process.wait(timeout=30)
    start_up = log.read_text().split("Running on")[0].splitlines()  # (Gradio imports matplotlib at the first call)
    imported = {line.split("|")[-1].strip() for line in start_up if line.startswith("import time:")}
    assert "gradio" in imported and "vae.latent" in imported and "vae.imaging" in imported
    assert not {"torchvision", "matplotlib", "sklearn", "vae.figures", "vae.training"} & imported


def test_cache_files_rewrites_what_gradio_cleaned_up(tmp_path, monkeypatch):
    """Gradio deletes its cached files on shutdown but keeps the folders: a later identical call writes again."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    first = output_files.cache_files({"a.png": b"one", "b.gif": b"two"})
    assert [Path(p).read_bytes() for p in first] == [b"one", b"two"]
    for path in first:
        Path(path).unlink()
    assert output_files.cache_files({"a.png": b"one", "b.gif": b"two"}) == first
    assert all(Path(p).is_file() for p in first)
    assert output_files.cache_files({"a.png": b"other", "b.gif": b"two"})[0] != first[0], "named by content"


def test_png_writer_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    for array in (rng.integers(0, 256, (28, 28), np.uint8), rng.integers(0, 256, (5, 7, 3), np.uint8)):
        with Image.open(io.BytesIO(png(array))) as img:
            assert np.array_equal(np.asarray(img), array)


def test_your_digit_opens_with_a_real_test_digit_encoded(assets):
    """Issue 29: the Your digit tab is not a row of empty boxes when the page opens: a test digit of the walk's start
    class (3), encoded as a drawing is, with its walk to the chosen class and a note that says what it is."""
    catalog = Catalog(assets)
    model_input, reconstruction, nearest, points, walk_strip, note = app.digit_example(catalog, "7")
    first_three = assets.tsne["images"][assets.tsne["labels"] == assets.class_names.index("3")][0]  # (1, 28, 28)
    seen = read(model_input)[::8, ::8]
    assert np.abs(seen.astype(int) - first_three[0].numpy().astype(int)).max() <= 1, "that test digit, as it is"
    assert read(reconstruction).shape == (224, 224) and nearest == "3"
    assert looks_like(assets, frames_of_strip(walk_strip, pictures.ENCODE_WALK_STEPS)[[-1]]) == ["7"]
    assert points["class"].iloc[-1] == pictures.YOU, "its place on the map"
    assert note.startswith("An example to start from: a **3** from the test set.")


def test_a_new_session_builds_no_page_config_until_a_deep_link_asks(demo, server, tmp_path_factory):
    """Each raw API call and each gradio_client is a new session, for which Gradio built a copy of the config of every
    block of the page (half the server's CPU for a small call: bench/api_call_cost.py). gradio6 builds them when a
    deep link first reads them: a call builds its own inputs' and outputs' (Gradio records their values in them), and
    the deep-link route still gets every block's."""
    client = Client(server, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    client.predict(4, 0, 1.0, "vae-mnist", api_name="/sample")
    state = demo.state_holder[client.session_hash]
    built, blocks = dict.__len__(state.config_values), len(demo.blocks)
    assert built <= 8 and blocks > 100, f"only the call's inputs and outputs: {built} of {blocks} blocks' configs"
    answer = httpx.get(f"{server}/gradio_api/deep_link", params={"session_hash": client.session_hash}, timeout=30)
    assert answer.status_code == 200 and answer.text.strip('"'), answer.text
    assert dict.__len__(state.config_values) == blocks, "every block's, for the link"
