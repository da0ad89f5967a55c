"""The app against what a careless or hostile caller sends, and against bad side files in a model folder.

Fast tests call the functions of app.py and the vae modules it uses directly: metrics and cards holding anything, error
messages that must not echo a 5 MB input back, the output store's disk budget. The slow ones start one real server
(`python app.py` in a subprocess, with its own Gradio cache, a lowered output budget and its log in a file)
and send it a seeded, bounded fuzz pass over every endpoint through Gradio's raw HTTP API (which, unlike
gradio_client, can send NaN, Infinity, integers past a float's range and payloads of any shape), then a
flood of /sample calls, and check what it answered, what it logged, its memory and its disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image
from test_app import bad_files, free_port, launched

import app
from vae import checks, output_files, pictures, request_limits
from vae.assets import Assets, load_assets
from vae.catalog import Catalog
from vae.errors import UserError
from vae.folder import pictures_dir
from vae.latent import INTERPOLATIONS, START_POINTS
from vae.steering import DIRECTIONS, STEERING
from vae.visitors import Visitors

ROOT = Path(__file__).resolve().parent.parent
HUGE = "x" * 5_000_000  # a 5 MB string: what an error message must not send back
ECHO_LIMIT = 400  # characters of an error message, at most, whatever the input (the value is cut to ~120)
START_UP = 120  # seconds for `python app.py` to answer on a busy 2-core machine
FUZZ_SECONDS = 60  # the fuzz pass must end within this
SERVER_BUDGET = {"OUTPUT_BYTES": 8 * 2**20, "OUTPUT_FILES": 2_000}  # lowered so that a short flood crosses it
MAX_RSS_GROWTH_MB = 150  # per test: Gradio keeps up to ~0.6 MB per session (SESSIONS of them) and little else


# ---------------------------------------------------------------------------------------------------------------------
# Bad side files: metrics.json and the model card may hold anything; a checkpoint may have one class
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assets() -> Assets:
    return load_assets(app.DEFAULT_CHECKPOINT)


JUNK_METRICS = [
    {"test_loss": "93.9"},
    {"test_loss": None},
    {"test_loss": [93.9]},
    {"test_loss": {"value": 93.9}},
    {"test_loss": True},
    {"test_loss": math.nan, "test_kl": math.inf},
    {"test_loss": 10**400, "test_recon": -(10**400)},  # json.loads gives Python ints past a float's range
    {"test_loss": 93.9, "iw_samples": HUGE, "test_iw_nll": "90"},
    [1, 2, 3],
    "metrics",
    None,
    42,
]


@pytest.mark.parametrize("metrics", JUNK_METRICS, ids=[f"metrics-{i}" for i in range(len(JUNK_METRICS))])
def test_status_and_about_survive_any_metrics(assets, metrics):
    broken = dataclasses.replace(assets, metrics=metrics)
    line = app.status(broken)
    assert line.startswith(f"**{assets.name}**") and len(line) < 2000
    text = app.about(Catalog(broken))
    assert "What is a VAE?" in text and len(text) < 100_000
    if isinstance(metrics, dict) and metrics.get("test_loss") == 93.9:
        assert "test −ELBO 93.90" in line, "a number is still shown"


@pytest.mark.parametrize("card", [None, b"\x89PNG\r\n", 42, {"a": 1}, "# A card\n\n" + "text " * 100_000])
def test_about_survives_any_card(assets, card):
    text = app.about(Catalog(dataclasses.replace(assets, card=card)))
    assert "What is a VAE?" in text


def test_about_links_only_the_model_folders_card_figures(assets):
    """A card's images are shown only when they name one of the folder's card figures, copied into the app's cache;
    a card that names another file of the folder, a file elsewhere on the machine or a picture on the web gets no
    image for it (and its About tab still one Links section)."""
    card = assets.card.replace("](samples.png)", "](../../../etc/passwd)").replace("](tsne.png)", "](config.json)")
    card += "\n\n![web](https://example.com/x.png) ![abs](/etc/hosts)"
    text = app.about(Catalog(dataclasses.replace(assets, card=card)))
    images = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", text)
    assert len(images) == len(assets.card_figures) - 2 == 4  # class samples, reconstructions, walk, loss curve
    output_dir = Path(output_files.output_store().root)
    for link in images:
        path = Path(urllib.parse.unquote(link.removeprefix(output_files.FILE_ROUTE)))
        assert link.startswith(output_files.FILE_ROUTE) and path.parent.parent == output_dir
        assert path.read_bytes() == assets.card_figures[path.name]
    assert "passwd" not in text and "example.com" not in text and "hosts" not in text and "config.json" not in text
    assert text.count("## Links") == 1


def test_about_without_a_card_shows_the_metrics_that_are_numbers(assets):
    metrics = {"test_loss": 93.93, "test_kl": "23", "iw_samples": 1000, "test_iw_nll": 90.38, "test_recon": math.nan}
    text = app.about(Catalog(dataclasses.replace(assets, card="", metrics=metrics)))
    assert "| test negative ELBO (nats / image) | 93.93 |" in text and "k=1000 | 90.38 |" in text
    assert "KL" not in text and "reconstruction" not in text


def test_start_up_and_checkpoint_switch_survive_bad_side_files(assets, tmp_path):
    """A folder whose metrics.json has a string for the test loss and whose README.md is binary junk: the page
    is built, its status line shown, and choosing it in the dropdown works."""
    folder = tmp_path / "bad-side-files"
    shutil.copytree(app.DEFAULT_CHECKPOINT, folder, ignore=shutil.ignore_patterns(".*"))
    (folder / "metrics.json").write_text(json.dumps({"test_loss": "93.9", "test_kl": [1], "iw_samples": {}}))
    (folder / "README.md").write_bytes(b"---\nlicense: [\n---\n\x00\xff\xfe" + os.urandom(2000))
    bad = load_assets(folder)
    demo = app.build_demo(bad, {"default": str(app.DEFAULT_CHECKPOINT)})
    assert demo is not None
    status, class_a, class_b, *_ = app.select_checkpoint(Catalog(assets, {"bad": str(folder)}), "bad")
    assert "bad" in status and class_a["value"] == "3" and class_b["value"] == "7"


def test_default_pair_for_few_classes():
    for names, pair in [
        (["only"], ("only", "only")),
        (["a", "b"], ("a", "b")),
        ([str(d) for d in range(10)], ("3", "7")),
    ]:
        assert app.default_pair(SimpleNamespace(class_names=names)) == pair
    assert app.default_pair(SimpleNamespace(class_names=[])) == (None, None)


# ---------------------------------------------------------------------------------------------------------------------
# Error messages: what the caller sent is cut, never echoed whole
# ---------------------------------------------------------------------------------------------------------------------


def error_of(function, *args) -> str:
    try:
        function(*args)
    except app.gr.Error as err:  # from a handler of app.py
        return err.message
    except UserError as err:  # from vae.checks or vae.pictures
        return str(err)
    raise AssertionError(f"{function.__name__} accepted {str(args)[:100]}")


ECHOED = [HUGE, [HUGE], {"a": [HUGE] * 3}, [[[[[[[[[[[[1]]]]]]]]]]]], 10**400, -(10**400), 1e308]


@pytest.mark.parametrize("value", ECHOED, ids=["5MB", "list", "dict", "nested", "huge-int", "-huge-int", "1e308"])
def test_errors_cut_the_value_they_echo(assets, value):
    catalog = Catalog(assets)
    messages = {
        "check_int": error_of(checks.check_int, value, "Steps", 2, 32),
        "check_float": error_of(checks.check_float, value, "Temperature", 0.0, 2.0),
        "check_choice": error_of(checks.check_choice, value, "Interpolation", ("linear", "spherical")),
        "check_class": error_of(checks.check_class, value, "Class A", assets),
        "catalog": error_of(catalog.get, value),
        "sample": error_of(app.sample, catalog, value, 0, 1.0),
        "walk": error_of(app.latent_walk, catalog, value, "7", 4, "linear", "mean", 0),
    }
    for where, message in messages.items():
        assert len(message) <= ECHO_LIMIT, f"{where}: {len(message)} characters"
        assert "must" in message or "Unknown checkpoint" in message, where
    if isinstance(value, str):
        assert "…" in messages["check_class"] and "xxxxxxxxxx" in messages["check_class"], "cut, not dropped"


def test_image_payloads_must_be_uploads(assets):
    """A path the caller made up (a file of the server's, a device) is refused before anything opens it."""
    catalog = Catalog(assets)
    for path in (str(app.DEFAULT_CHECKPOINT / "samples.png"), "/etc/passwd", "/dev/zero", "/proc/self/fd/0"):
        for payload in ({"path": path}, {"composite": {"path": path}}):
            assert "upload" in error_of(app.encode, catalog, payload, "7"), path


# ---------------------------------------------------------------------------------------------------------------------
# The output store: what the app keeps on disk, bounded in bytes and files whatever the request rate
# ---------------------------------------------------------------------------------------------------------------------


def disk_use(folder: Path, skip: set[str] = frozenset()) -> tuple[int, int]:
    """Bytes on disk (allocated blocks, folders included) and files under `folder`, except the paths in skip."""
    used, files = 0, 0
    for parent, dirs, names in os.walk(folder):
        for name in [*dirs, *names]:
            path = os.path.join(parent, name)
            if path in skip:
                continue
            try:
                used += os.lstat(path).st_blocks * 512
            except FileNotFoundError:  # pruned while walking
                continue
            files += name in names
    return used, files


def small_budget(monkeypatch, tmp_path, bytes_: int = 6 * 2**20, files: int = 1500) -> Path:
    """A store in tmp_path with small budgets, still above what the KEEP_NEWEST newest requests can hold."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.setattr(output_files, "OUTPUT_BYTES", bytes_)
    monkeypatch.setattr(output_files, "OUTPUT_FILES", files)
    return tmp_path / output_files.OUTPUTS


def request_files(rng: random.Random, i: int) -> dict[str, bytes]:
    """Files like a request's: a grid and up to 256 small images, or a walk, of seeded random content."""
    count = rng.choice([1, 2, 16, 64, 256])
    files = {"samples.png": rng.randbytes(rng.randrange(1000, 60_000)) + str(i).encode()}
    return files | {f"sample-{k}.png": rng.randbytes(rng.randrange(300, 900)) for k in range(count)}


def test_output_store_stays_under_its_budgets(monkeypatch, tmp_path):
    outputs = small_budget(monkeypatch, tmp_path)
    rng = random.Random(0)
    history = []
    for i in range(60):
        files = request_files(rng, i)
        paths = output_files.cache_files(files)
        history.append((files, paths))
        assert all(Path(p).read_bytes() == data for p, data in zip(paths, files.values(), strict=True))
        used, count = disk_use(outputs)
        assert used <= output_files.OUTPUT_BYTES and count <= output_files.OUTPUT_FILES, (
            f"call {i}: {used} bytes, {count} files"
        )
    for _, paths in history[-output_files.KEEP_NEWEST :]:
        assert all(Path(p).is_file() for p in paths), "the newest requests' files are kept"
    files, paths = history[0]
    assert not Path(paths[0]).exists(), "the oldest were pruned"
    assert output_files.cache_files(files) == paths and all(Path(p).is_file() for p in paths), "and are written again"


def test_a_removed_models_figures_are_deleted_with_it(assets, monkeypatch, tmp_path):
    """A checkpoint's t-SNE figure is pinned (its page links to it) while the checkpoint is served; when a visitor's
    model is removed from the catalog, its figure is deleted (no longer downloadable, out of the budget), but not a
    figure another checkpoint shares. Before, every visitor's model left its pinned figures for good."""
    outputs = small_budget(monkeypatch, tmp_path)
    catalog = Catalog(assets)
    rng = random.Random(5)
    shared = rng.randbytes(50_000)
    models = {name: SimpleNamespace(name=name, tsne_png=rng.randbytes(200_000)) for name in ("run-1", "run-2")}
    models["run-3"] = SimpleNamespace(name="run-3", tsne_png=shared)
    models["kept"] = SimpleNamespace(name="kept", tsne_png=shared)
    figures = {name: pictures.tsne_figure_file(model) for name, model in models.items()}
    for i in range(40):  # a flood of unpinned outputs over the budget: pinned figures stay
        output_files.cache_files(request_files(rng, i))
    assert all(Path(path).is_file() for path in figures.values())
    before, _ = disk_use(outputs)
    for name in ("run-1", "run-3"):
        catalog.visiting[name] = "somewhere"
        catalog.remove(name)
    assert not Path(figures["run-1"]).exists() and not Path(figures["run-1"]).parent.exists()
    assert Path(figures["run-2"]).is_file() and Path(figures["kept"]).is_file(), "others' figures stay"
    after, _ = disk_use(outputs)
    assert before - after >= 200_000
    store = output_files.output_store()
    assert store.bytes >= after and store.bytes <= output_files.OUTPUT_BYTES, "the store counts what is on disk"


def test_a_visitors_zip_and_pictures_are_served_in_place_and_go_with_the_model(tmp_path, monkeypatch):
    """A handler that returns a visitor's zip or live picture: Gradio serves the file where Visitors wrote it (inside
    its MAX_BYTES, deleted with the model), not a copy in its cache (outside every budget, kept up to two hours and
    downloadable after the model was deleted)."""
    cache = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    visitors = Visitors(tmp_path / "visitors")
    name, folder = visitors.new_folder("session1")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    picture = pictures_dir(folder) / "epoch-001-samples.png"
    picture.parent.mkdir(parents=True)
    Image.new("L", (28, 28)).save(picture)
    visitors.add(name, "session1", folder)
    with gr.Blocks() as demo:
        button, download, image = gr.Button(), gr.File(), gr.Image()
        button.click(lambda: (str(visitors.zip(name)), str(picture)), None, [download, image], api_name="files")
    with launched(demo) as url:
        zip_data, image_data = Client(url, verbose=False, download_files=False).predict(api_name="/files")
        assert zip_data["path"] == str(visitors.zip(name)) and image_data["path"] == str(picture)
        assert not [p for p in cache.rglob("*") if p.suffix in (".zip", ".png")], "no copies in Gradio's cache"
        assert httpx.get(zip_data["url"], timeout=30).status_code == 200
        visitors.remove(name)
        assert httpx.get(zip_data["url"], timeout=30).status_code in (403, 404), "gone with the model"
        assert httpx.get(image_data["url"], timeout=30).status_code in (403, 404)


def test_uploads_are_deleted_after_upload_age(assets, tmp_path, monkeypatch):
    """An upload is deleted UPLOAD_AGE seconds after it arrived (checked every UPLOAD_SWEEP seconds): here 2 and 1."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.setattr(request_limits, "UPLOAD_AGE", 2)
    monkeypatch.setattr(request_limits, "UPLOAD_SWEEP", 1)
    with launched(app.build_demo(assets)) as url:
        files = [("files", ("digit.png", b"\x89PNG" + b"0" * 1000))]
        path = Path(
            httpx.post(f"{url}{request_limits.UPLOAD_ROUTE}", files=files, timeout=60).raise_for_status().json()[0]
        )
        assert path.is_file()
        deadline = time.monotonic() + 30
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not path.exists(), "the upload outlived UPLOAD_AGE"


def test_output_store_keeps_the_newest_requests_over_the_budget(monkeypatch, tmp_path):
    """Requests larger than the whole budget: the newest KEEP_NEWEST are never pruned (their files may still be
    on their way to the client); everything older is."""
    outputs = small_budget(monkeypatch, tmp_path, bytes_=50_000, files=10)
    rng = random.Random(1)
    paths = [output_files.cache_files({f"{k}.png": rng.randbytes(5000) for k in range(20)}) for _ in range(10)]
    assert all(Path(p).is_file() for request in paths[-output_files.KEEP_NEWEST :] for p in request)
    assert not any(Path(p).exists() for request in paths[: -output_files.KEEP_NEWEST] for p in request)
    assert len(list(outputs.iterdir())) == output_files.KEEP_NEWEST


def test_output_store_counts_what_an_earlier_run_left(monkeypatch, tmp_path):
    """Files left by a server that was killed are found at start-up and pruned like any others, oldest first."""
    outputs = tmp_path / output_files.OUTPUTS
    rng = random.Random(2)
    for i in range(40):
        folder = outputs / f"{i:040x}"
        folder.mkdir(parents=True)
        for k in range(50):
            (folder / f"sample-{k}.png").write_bytes(rng.randbytes(600))
        os.utime(folder, (1_000_000 + i, 1_000_000 + i))
    (outputs / "stray.txt").write_text("not a request folder")
    small_budget(monkeypatch, tmp_path, files=500)
    output_files.cache_files({"new.png": b"new"})
    used, count = disk_use(outputs)
    assert used <= output_files.OUTPUT_BYTES and count <= output_files.OUTPUT_FILES
    assert (outputs / f"{39:040x}").is_dir() and not (outputs / f"{0:040x}").exists(), "the oldest went first"


def test_output_store_is_safe_across_threads(monkeypatch, tmp_path):
    """Four writers at once: none has its folder pruned under it while it writes (it would fail), and the
    budgets hold."""
    outputs = small_budget(monkeypatch, tmp_path)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(15):
            files = request_files(rng, i)
            paths = output_files.cache_files(files)
            assert Path(paths[-1]).read_bytes() == list(files.values())[-1]

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    used, count = disk_use(outputs)
    assert used <= output_files.OUTPUT_BYTES and count <= output_files.OUTPUT_FILES


def test_gradio_neither_copies_nor_tracks_the_outputs(assets, tmp_path, monkeypatch):
    """The files a handler returns are served where the store wrote them: Gradio makes no copy of them, and does
    not keep their paths (it would keep every path it ever served: a pruned file is never found to delete)."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    demo = app.build_demo(assets)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_OPTIONS)
    try:
        client = Client(f"http://127.0.0.1:{port}", verbose=False, download_files=False)
        grid, gallery = client.predict(16, 5, 1.0, api_name="/sample")
        strip, gif = client.predict("3", "7", 4, "linear", "mean", 0, api_name="/walk")
        outputs = str(tmp_path / output_files.OUTPUTS)
        for item in [grid, gallery[0]["image"], strip, gif]:
            assert item["path"].startswith(outputs + os.sep), item["path"]
            assert httpx.get(item["url"], timeout=30).status_code == 200
        copies = [p for p in tmp_path.rglob("*.png") if not str(p).startswith(outputs)]
        assert not copies, f"Gradio copied outputs: {copies[:3]}"
        tracked = {path for files in demo.temp_file_sets for path in files}
        assert not {path for path in tracked if path.startswith(outputs)}, "Gradio tracks the outputs' paths"
    finally:
        demo.close()


def test_request_limit_counts_every_body_and_takes_files_only_on_the_upload_route():
    """The middleware `python app.py` runs with, as an ASGI app: a body over the limit gets 413 whether its length
    is declared or not (chunked), and the app sees none of it; a smaller one and a GET reach the app whole; a multipart
    body is refused on any route but the upload route, which takes a larger body of at most MAX_UPLOAD_FILES files."""

    async def send_request(path: str, headers: list, chunks: list[bytes]) -> tuple[int, bytes]:
        seen = {}

        async def inner(scope, receive, send):
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            seen["body"] = body
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        sent = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "client": ("1.2.3.4", 5)}
        await request_limits.RequestLimit(inner, limit=1000, upload_limit=3000)(scope, receive, send)
        assert len([m for m in sent if m["type"] == "http.response.start"]) == 1
        return sent[0]["status"], seen.get("body")

    json_type = (b"content-type", b"application/json")
    form = (b"content-type", b"multipart/form-data; boundary=xyz")
    join, upload = "/gradio_api/queue/join", request_limits.UPLOAD_ROUTE
    files = [b"--xyz\r\n" + b"f" * 100 + b"\r\n" for _ in range(request_limits.MAX_UPLOAD_FILES)]
    too_many = files + [b"--x", b"yz\r\n..."]  # one delimiter more, split between two chunks
    for path, headers, chunks, expected in [
        (join, [json_type, (b"content-length", b"5000")], [b"x" * 5000], (413, None)),
        (join, [json_type], [b"x" * 600, b"x" * 600], (413, None)),  # chunked
        (join, [json_type], [b"x" * 600, b"y" * 300], (200, b"x" * 600 + b"y" * 300)),
        (join, [json_type, (b"content-length", b"900")], [b"x" * 900], (200, b"x" * 900)),
        (join, [], [b""], (200, b"")),  # a GET
        (join, [form], [b"x" * 500], (413, None)),  # files elsewhere than the upload route
        (upload, [form], [*files, b"--xyz--\r\n"], (200, b"".join(files) + b"--xyz--\r\n")),
        (upload, [form], [*too_many, b"--xyz--\r\n"], (413, None)),
        (upload, [form], [b"x" * 2000, b"x" * 2000], (413, None)),
        (upload, [form, (b"content-length", b"4000")], [b"x" * 4000], (413, None)),
    ]:
        assert asyncio.run(send_request(path, headers, chunks)) == expected, (path, headers, len(chunks))


async def accept_upload(scope, receive, send) -> None:
    """An app behind the request limit that reads the whole body and answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def upload_through(middleware, address: str, chunks: list[bytes], declare: bool) -> tuple[int, bytes]:
    """An upload from `address` whose body arrives in `chunks` (its length declared or not): (status, answer)."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    headers = [(b"content-type", b"multipart/form-data; boundary=xyz")]
    if declare:
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": request_limits.UPLOAD_ROUTE, "headers": headers}
    await middleware(scope | {"client": (address, 1)}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_uploads_from_everyone_stay_under_the_upload_budget(monkeypatch):
    """Upload bodies received over the time an upload is kept are counted: past UPLOAD_BYTES (here 5,000), every
    address gets 429 with the wait, whether the length is declared or not, until the oldest have been deleted."""
    clock = [1000.0]
    monkeypatch.setattr(request_limits.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(request_limits, "UPLOAD_BYTES", 5000)

    middleware = request_limits.RequestLimit(accept_upload)

    def post(address: str, chunks: list[bytes], declare: bool) -> tuple[int, bytes]:
        return asyncio.run(upload_through(middleware, address, chunks, declare))

    assert post("a", [b"x" * 2000], True)[0] == 200
    assert post("b", [b"x" * 1000, b"x" * 1000], False)[0] == 200
    status, text = post("c", [b"x" * 2000], True)
    assert status == 429 and b"as many uploads as it keeps" in text and b"try again in 660 s" in text
    assert post("d", [b"x" * 900, b"x" * 900], False)[0] == 429, "refused while it streams"
    clock[0] += request_limits.UPLOAD_AGE + request_limits.UPLOAD_SWEEP + 1
    assert post("c", [b"x" * 2000], True)[0] == 200


def test_one_disk_budget_bounds_outputs_models_and_uploads(monkeypatch, tmp_path):
    """Pictures, the visitors' models and uploads share one disk budget: a model that fills it prunes the pictures,
    refuses uploads (429) and the next Train run, and all three hold no more than the budget; once the model is
    deleted, each is taken again."""
    from vae import disk

    limit = 3 * 2**20
    budget = disk.DiskBudget(limit)
    monkeypatch.setattr(disk, "RUN_BYTES", 2**20)
    monkeypatch.setattr(output_files, "OUTPUT_BYTES", limit)  # the pictures' own share allows the whole budget
    store = output_files.OutputStore(tmp_path / "outputs", budget)
    visitors = Visitors(tmp_path / "visitors root", budget=budget)
    rng = random.Random(0)
    for i in range(80):  # 80 requests' pictures of ~50 kB: the budget prunes them, not their share
        store.put({"grid.png": rng.randbytes(50_000) + bytes([i])})
    assert 1.8 * 2**20 < store.bytes <= limit - disk.RUN_BYTES, "the pictures use what is free, but a run's room"

    name, folder = visitors.new_folder("session1")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(rng.randbytes(5 * 2**19))  # a trained model: 2.5 MB
    visitors.add(name, "session1", folder)
    store.put({"grid.png": rng.randbytes(50_000)})
    folders = [tmp_path / "outputs", tmp_path / "visitors root"]
    assert budget.used() <= limit and sum(disk_use(f)[0] for f in folders) <= limit, "in whole blocks"
    assert len(store.folders) == output_files.KEEP_NEWEST, "the pictures were pruned to the newest to make room"

    middleware = request_limits.RequestLimit(accept_upload, budget=budget)

    def post(size: int) -> tuple[int, bytes]:
        return asyncio.run(upload_through(middleware, "1.2.3.4", [b"x" * size], declare=True))

    status, text = post(1000)
    assert status == 429 and b"disk holds as much as it keeps (3 MB" in text, text
    with pytest.raises(UserError, match="disk holds as much as it keeps"):
        visitors.new_folder("session2")
    assert budget.used() <= limit

    visitors.remove(name)
    assert post(1000)[0] == 200, "the model's bytes are free again"
    assert visitors.new_folder("session2")[1].parent.name == "session2"
    assert budget.used() <= limit


def test_the_disk_budget_comes_from_the_environment(monkeypatch):
    from vae import disk

    monkeypatch.setenv("VAE_DISK_BYTES", "500")
    assert disk.DiskBudget().limit == 500 * 2**20
    monkeypatch.setenv("VAE_DISK_BYTES", "lots")
    with pytest.raises(SystemExit) as stopped:
        app.main(["--checkpoint", "/nonexistent"])
    assert "VAE_DISK_BYTES='lots' must be a positive whole number of megabytes" in str(stopped.value.code)


def test_upload_rate_is_a_token_bucket_per_address(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(request_limits.time, "monotonic", lambda: clock[0])
    rate = request_limits.UploadRate(burst=3, per_minute=6)  # one every 10 s
    assert [rate.take("a") for _ in range(3)] == [0, 0, 0]
    assert rate.take("a") == pytest.approx(10) and rate.take("b") == 0, "a's wait; b has its own bucket"
    clock[0] += 10
    assert rate.take("a") == 0 and rate.take("a") > 0


# ---------------------------------------------------------------------------------------------------------------------
# One real server, fuzzed
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    base: str
    process: subprocess.Popen
    log: Path
    cache: Path  # its GRADIO_TEMP_DIR
    uploads: set[str] = dataclasses.field(default_factory=set)  # paths of what the tests uploaded

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback (most recent call last)")

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            response = httpx.post(f"{self.base}/gradio_api/upload", files=[("files", (path.name, f))], timeout=60)
        uploaded = response.raise_for_status().json()[0]
        self.uploads.add(uploaded)
        return {"path": uploaded, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def outputs_on_disk(self) -> tuple[int, int]:
        """Bytes and files of everything in the server's Gradio cache but what the tests uploaded (and their
        folders): the app's outputs and any copies Gradio made of them."""
        skip = self.uploads | {str(Path(p).parent) for p in self.uploads}
        return disk_use(self.cache, skip)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    """`python app.py` (both committed checkpoints) with its own Gradio cache and a lowered output budget."""
    folder = tmp_path_factory.mktemp("fuzzed-server")
    cache, log = folder / "gradio", folder / "server.log"
    port = free_port()
    budget = "; ".join(f"vae.output_files.{name} = {value}" for name, value in SERVER_BUDGET.items())
    code = f"import sys, app, vae.output_files; {budget}; app.main(sys.argv[1:])"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(cache), "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, cache)
    try:
        wait_for_server(server.base, process, log)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_server(base: str, process: subprocess.Popen, log: Path) -> None:
    """Until `python app.py` at `base` answers; its log's end if it dies, an error after START_UP seconds."""
    deadline = time.monotonic() + START_UP
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            httpx.get(f"{base}/gradio_api/info", timeout=5).raise_for_status()
            return
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"no server after {START_UP} s"
            time.sleep(0.5)


@dataclasses.dataclass
class Outcome:
    kind: str  # complete, clear (a gr.Error's message), generic (an error without one), too large (HTTP 413),
    # refused (another HTTP error), hung
    message: str = ""


def call(server: Server, api: str, data: list | None = None, body: str | None = None) -> Outcome:
    """One call through Gradio's raw API: POST the inputs, then read the event stream to its end."""
    body = body if body is not None else json.dumps({"data": data})  # NaN, Infinity and huge ints as JS would send
    try:
        posted = httpx.post(
            f"{server.base}/gradio_api/call/{api}",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        if posted.status_code != 200:
            return Outcome("too large" if posted.status_code == 413 else "refused", posted.text[:200])
        stream = httpx.get(f"{server.base}/gradio_api/call/{api}/{posted.json()['event_id']}", timeout=60).text
    except httpx.TimeoutException:
        return Outcome("hung")
    events = [block.split("\n", 1) for block in stream.strip().split("\n\n") if block.startswith("event:")]
    event, data_line = events[-1][0].removeprefix("event: "), events[-1][1].removeprefix("data: ")
    if event == "complete":
        return Outcome("complete")
    error = json.loads(data_line)
    message = error.get("error") if isinstance(error, dict) else error
    if isinstance(message, str) and message.strip() and message.strip() != "Error":
        return Outcome("clear", message)
    return Outcome("generic", str(message))


# What each endpoint's inputs accept, mirroring the handlers' checks: the fuzz knows which calls must succeed.
def whole(low: int, high: int):
    def accepts(v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return (isinstance(v, int) or math.isfinite(v)) and v == int(v) and low <= v <= high

    return accepts


def number(low: float, high: float):
    return lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and low <= v <= high


def one_of(*choices):
    return lambda v: isinstance(v, str) and v in choices


DIGITS = [str(d) for d in range(10)]
digit_class = lambda v: (isinstance(v, str) and v in DIGITS) or (type(v) is int and 0 <= v <= 9)  # noqa: E731
checkpoint = lambda v: v in (None, "", "vae-mnist")  # noqa: E731  (the fuzz never sends vae-fashion-mnist)
no_file = lambda v: False  # noqa: E731  (the good upload is never in the junk)
# Class samples and the sliders work only for a checkpoint with steering statistics; otherwise each is a clear error.
STEERED = (app.DEFAULT_CHECKPOINT / STEERING).is_file()
sample_class = lambda v: v in (None, checks.ANY) or (STEERED and digit_class(v))  # noqa: E731


def offsets(v) -> bool:
    if v is None:
        return True
    numbers = isinstance(v, list) and len(v) <= DIRECTIONS
    return numbers and all(number(-checks.MAX_OFFSET, checks.MAX_OFFSET)(x) for x in v)


@functools.cache
def map_extent():
    return load_assets(app.DEFAULT_CHECKPOINT).click_map.extent


def map_point(v) -> bool:
    """A point [x, y] inside the default model's clickable map."""
    pair = isinstance(v, list) and len(v) == 2 and all(number(-math.inf, math.inf)(x) for x in v)
    return pair and all(math.isfinite(x) for x in v) and map_extent().contains(*v)


SIGNATURES = {  # endpoint → (what each input accepts, in order); the last input is the checkpoint
    "sample": [
        whole(1, checks.MAX_IMAGES),
        whole(0, checks.MAX_SEED),
        number(0, checks.MAX_TEMPERATURE),
        checkpoint,
        sample_class,
    ],
    "walk": [
        digit_class,
        digit_class,
        whole(*checks.STEPS),
        one_of(*INTERPOLATIONS),
        one_of(*START_POINTS),
        whole(0, checks.MAX_SEED),
        checkpoint,
    ],
    "slide": [
        one_of("mean", "sample"),  # "digit" needs an upload: never in the junk
        digit_class,
        whole(0, checks.MAX_SEED),
        offsets,
        lambda v: v is None,  # the digit: checked when given, even when the start point does not use it
        checkpoint,
    ],
    "tsne": [checkpoint],
    "pick": [map_point, lambda v: v is None or map_point(v), checkpoint],
    "encode": [no_file, digit_class, checkpoint],
    "encode_drawing": [no_file, digit_class, checkpoint],
    "about": [checkpoint],
}
FILE_INPUTS = {("encode", 0), ("encode_drawing", 0), ("slide", 4)}  # Gradio validates these itself before the handler


def junk_values(rng: random.Random) -> tuple[list, list]:
    """Values every input is tried with, and a pool a seeded few are drawn from for each input."""
    nested = [0]
    for _ in range(40):
        nested = [nested]
    unicode = "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(300))
    always = [None, True, -1, 1e308, 10**400, math.nan, -math.inf, "", [], {"a": {"b": [1, {"c": None}]}}]
    pool = [
        0,
        3,
        2.5,
        -1e308,
        10**30,
        2**64,
        math.inf,
        "3",
        "linear",
        "vae-mnist",
        unicode,
        "../../../etc/passwd",
        "<script>alert(1)</script>&amp;",
        "\x00\r\n\t",
        "x" * 100_000,
        [1, 2],
        nested,
        {"path": "/etc/passwd"},
        {"path": str(app.DEFAULT_CHECKPOINT / "samples.png"), "meta": {"_type": "gradio.FileData"}},
        {"composite": {"path": "/etc/hostname"}},
    ]
    return always, pool


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height and holds a few bytes: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def odd_files(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Files that are not usable images (each must be a clear error), and odd images that must be encoded."""
    bad = bad_files(folder)  # empty, text, truncated, huge (5000x5000), blank
    (folder / "bomb.png").write_bytes(png_header(100_000, 100_000))
    (folder / "wide.png").write_bytes(png_header(20_000, 1_000))
    (folder / "page.png").write_text("<html><script>alert(1)</script></html>")
    (folder / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><circle r="9"/></svg>')
    bad |= {name: folder / f"{name}.{ext}" for name, ext in [("bomb", "png"), ("wide", "png"), ("page", "png")]}
    bad["svg"] = folder / "drawing.svg"
    digit = np.zeros((60, 60), np.uint8)
    digit[10:50, 27:33] = 255  # a white 1 on black
    good = {}
    for name, image in [
        ("l16", Image.fromarray(digit.astype(np.uint16) * 257)),
        ("cmyk.jpg", Image.fromarray(255 - digit).convert("CMYK")),
        ("la", Image.fromarray(np.stack([255 - digit, digit], -1), "LA")),
        ("palette", Image.fromarray(255 - digit).convert("P")),
        ("tiny", Image.fromarray(255 - digit).resize((3, 3))),
    ]:
        good[name] = folder / (name if "." in name else f"{name}.png")
        image.save(good[name])
    frames = [Image.fromarray(np.roll(255 - digit, k, axis=1)) for k in range(50)]
    good["animated"] = folder / "animated.gif"
    frames[0].save(good["animated"], save_all=True, append_images=frames[1:])
    return bad, good


@dataclasses.dataclass
class Case:
    label: str
    api: str
    data: list
    must_succeed: bool
    junk_at: int | None = None  # the input that holds the junk value

    @property
    def gradio_may_refuse(self) -> bool:
        """Junk in a file input, or a file payload anywhere: Gradio checks those itself before the handler runs
        (its data model, and that files were uploaded), and refuses them with its own generic error."""
        value = self.data[self.junk_at] if self.junk_at is not None else None
        file_payload = isinstance(value, dict) and value.get("meta") == {"_type": "gradio.FileData"}
        return (self.api, self.junk_at) in FILE_INPUTS or file_payload


def fuzz_cases(server: Server, folder: Path, seed: int = 0) -> list[Case]:
    """Each input of each endpoint set to junk in turn, the other inputs good; bad and odd files."""
    rng = random.Random(seed)
    digit = folder / "digit.png"
    Image.fromarray(255 - np.pad(np.full((20, 6), 255, np.uint8), 4)).resize((140, 140)).save(digit)
    image = server.upload(digit)
    good = {
        "sample": [4, 1, 1.0, "vae-mnist", "any"],
        "slide": ["mean", "3", 0, [0.5, -1.0], None, "vae-mnist"],
        "walk": ["3", "7", 4, "linear", "mean", 0, "vae-mnist"],
        "tsne": ["vae-mnist"],
        "pick": [[0.0, 0.0], [5.0, -5.0], "vae-mnist"],
        "encode": [image, "7", "vae-mnist"],
        "encode_drawing": [{"background": None, "layers": [], "composite": image, "id": None}, "7", "vae-mnist"],
        "about": ["vae-mnist"],
    }
    always, pool = junk_values(rng)
    works = {api: api != "slide" or STEERED for api in good}  # the sliders need the checkpoint's steering
    cases = [Case(f"{api} good", api, args, works[api]) for api, args in good.items()]
    cases.append(Case("sample without the class", "sample", [4, 1, 1.0, "vae-mnist"], True))  # as before it had one
    for api, accepts in SIGNATURES.items():
        for position, accept in enumerate(accepts):
            for value in always + rng.sample(pool, 4):
                data = [*good[api][:position], value, *good[api][position + 1 :]]
                ok = accept(value) and works[api]
                cases.append(Case(f"{api}[{position}]={str(value)[:30]!r}", api, data, ok, position))
    for api, position in [
        ("sample", 3),
        ("sample", 4),
        ("walk", 0),
        ("walk", 3),
        ("slide", 3),
        ("pick", 0),
        ("encode", 1),
        ("about", 0),
    ]:
        data = [*good[api][:position], HUGE, *good[api][position + 1 :]]
        cases.append(Case(f"{api}[{position}]=5MB", api, data, False, position))
    bad, odd = odd_files(folder)
    for name, path in bad.items():
        cases.append(Case(f"encode bad file {name}", "encode", [server.upload(path), "7", "vae-mnist"], False))
    for name, path in odd.items():
        cases.append(Case(f"encode odd image {name}", "encode", [server.upload(path), "7", "vae-mnist"], True))
    for path in (app.DEFAULT_CHECKPOINT / "samples.png", Path("/dev/zero")):  # the server's files, not uploads
        cases.append(Case(f"encode server file {path}", "encode", [{"path": str(path)}, "7", "vae-mnist"], False))
    drawing = {"background": None, "layers": [], "composite": server.upload(bad["text"]), "id": None}
    cases.append(Case("encode_drawing text file", "encode_drawing", [drawing, "7", "vae-mnist"], False))
    return cases


# Calls Gradio itself refuses before any handler runs, with its own generic error: too few inputs, a file input
# that is not a file payload, a body that is not the API's JSON. Counted apart: app.py cannot word those.
GRADIO_REFUSES = [
    ("too few inputs", "sample", [4, 0, 1.0], None),
    ("no inputs", "walk", [], None),
    ("data not a list", "sample", None, '{"data": 5}'),
    ("not JSON", "sample", None, "not json {"),
    ("JSON nested 5,000 deep", "sample", None, '{"data": [' + "[" * 5000 + "]" * 5000 + "]}"),
    ("file input a string", "encode", ["/etc/passwd", "7", "vae-mnist"], None),
    ("file input a number", "encode", [5, "7", "vae-mnist"], None),
    ("drawing input a list", "encode_drawing", [[1, 2], "7", "vae-mnist"], None),
]


def run_cases(server: Server, cases: list[Case], outcomes: Counter, wrong: list[str]) -> None:
    """Each case's outcome counted, and those that are not what the case must give listed in `wrong`. Four calls at a
    time, as several visitors' would come."""
    with ThreadPoolExecutor(4) as pool:
        outcomes_in_order = list(pool.map(lambda case: call(server, case.api, case.data), cases))
    for case, outcome in zip(cases, outcomes_in_order, strict=True):
        kind = "refused by Gradio" if case.gradio_may_refuse and outcome.kind == "generic" else outcome.kind
        outcomes[kind] += 1
        if len(json.dumps({"data": case.data})) > request_limits.MAX_REQUEST_BYTES:  # refused before Gradio reads it
            expected = ("too large",)
        else:
            expected = ("complete",) if case.must_succeed else ("clear", "refused by Gradio")
        if kind not in expected:
            wrong.append(f"{case.label}: {outcome.kind} {outcome.message[:150]!r}")
        elif len(outcome.message) > ECHO_LIMIT:
            wrong.append(f"{case.label}: an error of {len(outcome.message)} characters")


@pytest.mark.slow
def test_fuzz_every_endpoint(server, tmp_path):
    """Every bad call is a clear error (a gr.Error's message, cut short), every good one succeeds, nothing the
    caller does leaves a traceback in the log, and the server keeps answering with its memory bounded.

    The calls that reach the handlers run first, and must leave no traceback; then those that Gradio may
    refuse itself (junk in a file input, a request of the wrong shape), whose tracebacks are Gradio's."""
    cases = fuzz_cases(server, tmp_path)
    assert call(server, "sample", [4, 1, 1.0, "vae-mnist"]).kind == "complete"
    rss_before, tracebacks = server.rss_mb(), server.tracebacks()
    began = time.monotonic()
    outcomes, wrong = Counter(), []
    run_cases(server, [case for case in cases if not case.gradio_may_refuse], outcomes, wrong)
    app_tracebacks = server.tracebacks() - tracebacks
    run_cases(server, [case for case in cases if case.gradio_may_refuse], outcomes, wrong)
    gradio_outcomes = Counter(call(server, api, data, body).kind for _, api, data, body in GRADIO_REFUSES)
    gradio_tracebacks = server.tracebacks() - tracebacks - app_tracebacks
    seconds = time.monotonic() - began
    still_up = call(server, "sample", [16, 2, 1.0, "vae-mnist"]).kind == "complete"
    rss_after = server.rss_mb()
    calls = len(cases) + len(GRADIO_REFUSES)
    print(
        f"\nfuzz: {calls} calls in {seconds:.1f} s; {len(cases)} cases, {sum(not c.must_succeed for c in cases)} "
        f"of them bad: {dict(outcomes)}; {app_tracebacks} tracebacks from calls that reached the app; "
        f"{len(GRADIO_REFUSES)} malformed requests: {dict(gradio_outcomes)}; {gradio_tracebacks} tracebacks from "
        f"calls Gradio refused; server still up: {still_up}; RSS {rss_before:.0f} → {rss_after:.0f} MB"
    )
    assert not wrong, f"{len(wrong)} wrong outcomes:\n" + "\n".join(wrong[:40])
    assert app_tracebacks == 0, server.log.read_text(errors="replace")[-4000:]
    assert gradio_outcomes["complete"] == gradio_outcomes["hung"] == 0
    assert still_up and seconds < FUZZ_SECONDS
    assert rss_after - rss_before < MAX_RSS_GROWTH_MB


@pytest.mark.slow
def test_sample_flood_keeps_the_outputs_under_the_budget(server):
    """48 /sample calls of 64 to 256 images, four at a time: without a bound they would leave ~36 MB and ~8,000 files,
    4 times the server's lowered budget; what is on disk stays under it all along, and the last answer is served."""
    rng = random.Random(3)
    requests = [(rng.choice([64, 128, 256]), 1000 + i) for i in range(48)]
    rss_before = server.rss_mb()
    peak = [0, 0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            used, files = server.outputs_on_disk()
            peak[:] = max(peak[0], used), max(peak[1], files)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    began = time.monotonic()
    try:
        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(lambda r: call(server, "sample", [r[0], r[1], 1.0, "vae-mnist"]), requests))
    finally:
        done.set()
        watcher.join()
    seconds = time.monotonic() - began
    used, files = server.outputs_on_disk()
    last = httpx.post(
        f"{server.base}/gradio_api/call/sample",
        json={"data": [256, 7, 1.0, "vae-mnist"]},
        timeout=60,
    ).json()["event_id"]
    stream = httpx.get(f"{server.base}/gradio_api/call/sample/{last}", timeout=60).text
    grid_url = json.loads(stream.split("data: ", 1)[1].split("\n", 1)[0])[0]["url"]
    print(
        f"\nflood: {len(requests)} /sample calls in {seconds:.1f} s, {Counter(o.kind for o in outcomes)}; outputs on "
        f"disk {used / 2**20:.1f} MB, {files} files (peak {peak[0] / 2**20:.1f} MB, {peak[1]} files; budget "
        f"{SERVER_BUDGET['OUTPUT_BYTES'] / 2**20:.0f} MB, {SERVER_BUDGET['OUTPUT_FILES']} files); "
        f"RSS {rss_before:.0f} → {server.rss_mb():.0f} MB"
    )
    assert all(o.kind == "complete" for o in outcomes)
    assert max(peak[0], used) <= SERVER_BUDGET["OUTPUT_BYTES"] and max(peak[1], files) <= SERVER_BUDGET["OUTPUT_FILES"]
    assert httpx.get(grid_url, timeout=30).status_code == 200, "the newest answer's files are there"
    assert server.rss_mb() - rss_before < MAX_RSS_GROWTH_MB
