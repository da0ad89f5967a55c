"""A Hugging Face Space emulated end to end, without the network: train.py writes a model, vae.hub.push_folder
uploads it (the Hub's side recorded), the upload lands in the Hugging Face cache under the Space's HOME in
huggingface_hub's own layout, and `python app.py` serves it as a Space runs it (VAE_CHECKPOINT=user/repo).

The cache is inside neither the app's working directory nor its temp directories, the only places Gradio
serves files from unless the app copies them into its own cache: what a Space does and a local run does not.
Every endpoint is called with gradio_client and every tab is clicked in headless Chromium.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import huggingface_hub.hf_api
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from huggingface_hub import CommitInfo, ModelCard, RepoUrl, snapshot_download
from huggingface_hub.utils.sha import git_hash
from PIL import Image
from safetensors.torch import load_file
from selenium.webdriver.common.by import By
from test_app import free_port, read
from test_browser import (  # noqa: F401 (browser and chromium are fixtures)
    TIMEOUT,
    browser,
    chromium,
    click_picture,
    hover_picture,
    hovered,
    loaded_image,
    open_tab,
    waiting,
)
from test_training import HUB_FILES, run_train

import app
from bench.screenshots import ran
from vae import pictures
from vae.assets import load_assets
from vae.card import with_model_id
from vae.config import shareable_config
from vae.errors import UserError
from vae.hub import push_folder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
REPO_ID = "someone/vae-space"
COMMIT = hashlib.sha1(b"the pushed commit").hexdigest()  # 40 hex digits, as the Hub answers
START_UP = 120  # seconds for `python app.py` to answer on a busy 2-core machine
HF_LOCATIONS = ["HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_XET_CACHE", "XDG_CACHE_HOME"]
# The tabs that show a model import none of the trainer's packages (they start fast, and run where those are missing):
# the packages only training needs are made unimportable in the app's process, so a code path of those tabs that needs
# one fails here. The Train tab then says what to install (tests/test_train_tab.py).
TRAINING_ONLY = """
import sys

BLOCKED = {"torchvision", "accelerate", "sklearn", "scipy", "matplotlib"}


class NotOnTheSpace:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}: blocked, as in an install without the trainer")


sys.meta_path.insert(0, NotOnTheSpace())
"""


@dataclass
class Pushed:
    folder: Path  # what train.py wrote (under a path with spaces)
    files: dict[str, bytes]  # path in repo → contents, as create_commit received them
    url: str | None  # what push_folder returned


@dataclass
class Space:
    url: str
    log: Path
    snapshot: Path  # the pushed commit in the Hugging Face cache under the Space's HOME
    env: dict[str, str]  # the app process's environment


def record_push(folder: Path) -> Pushed:
    """push_folder with a real HfApi whose calls to the Hub are replaced by recorders.

    With hf_xet installed, upload_folder streams files through Xet storage and commits from module-level
    functions, below any HfApi method; without it, it sends the same files in one HfApi.create_commit, the
    path taken here so that the commit can be recorded. HF_HUB_OFFLINE=1 stops any call left unrecorded.
    """
    api = huggingface_hub.HfApi()
    commits = []

    def create_commit(repo_id, operations, **kwargs):
        assert repo_id == REPO_ID
        files = {}
        for operation in operations:  # read now, as the Hub's upload does: push_folder sends a temporary copy
            with operation.as_file() as f:
                files[operation.path_in_repo] = f.read()
        commits.append(files)
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{COMMIT}",
            commit_message=kwargs.get("commit_message", ""),
            commit_description="",
            oid=COMMIT,
        )

    errors = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(errors):
        patch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False)
        patch.setattr(api, "create_repo", lambda repo_id, **kwargs: RepoUrl(f"https://huggingface.co/{repo_id}"))
        patch.setattr(api, "_validate_yaml", lambda content, **kwargs: None)  # a POST to the Hub; checked below
        patch.setattr(api, "create_commit", create_commit)
        url = push_folder(folder, REPO_ID, api=api)
    assert len(commits) == 1, f"push_folder made {len(commits)} commits; it said: {errors.getvalue()[-2000:]}"
    return Pushed(folder, commits[0], url)


def blob_name(data: bytes) -> str:
    """A file's name in the cache's blobs/: its ETag on the Hub, the sha256 of an LFS file (binary files are
    stored in LFS) or the git blob sha1 of a regular one."""
    return hashlib.sha256(data).hexdigest() if b"\0" in data[:8192] else git_hash(data)


def write_hub_cache(cache: Path, repo_id: str, commit: str, files: dict[str, bytes]) -> Path:
    """The files of one commit as huggingface_hub stores a download: blobs, a snapshot of relative symlinks to
    them, and refs/main naming the commit. Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for path_in_repo, data in files.items():
        blob = repo / "blobs" / blob_name(data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path_in_repo
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def copy_repository(target: Path) -> None:
    """The repository's tracked files, as a Space's git checkout holds them (checkpoints included)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():  # (a tracked file deleted in the working tree is not there)
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)


def log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"


def upload_image(pushed: Pushed, folder: Path) -> Path:
    """A real test digit as a user would photograph it: dark on white paper, enlarged."""
    digit = load_file(pushed.folder / "tsne.safetensors")["images"][0, 0].numpy()  # (28, 28) uint8
    path = folder / "digit.png"
    Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR).save(path)
    return path


def wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_UP
    while True:
        assert process.poll() is None, f"app.py exited with {process.returncode}:\n{log_tail(log)}"
        try:
            Client(url, verbose=False, download_files=False)
            return
        except Exception:  # not listening yet
            assert time.monotonic() < deadline, f"no server after {START_UP} s:\n{log_tail(log)}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def pushed(mnist_dir, tmp_path_factory) -> Pushed:
    """A small model trained by train.py (into a path with spaces, as user folders often are) and pushed."""
    folder = tmp_path_factory.mktemp("runs") / "trained models" / "vae mnist"
    run_train(mnist_dir, folder, "--epochs", "1", "--cpu")
    return record_push(folder)


@pytest.fixture(scope="module")
def space(pushed, tmp_path_factory):
    """`python app.py` on a Space's disk: the repository in app/ (the working directory), HOME, TMPDIR and
    GRADIO_TEMP_DIR beside it, and the pushed model only in the Hugging Face cache under HOME."""
    disk = tmp_path_factory.mktemp("space") / "space disk"
    app_dir, home, tmp, gradio_tmp = (disk / name for name in ("app", "home", "tmp", "gradio-tmp"))
    for folder in (app_dir, home, tmp, gradio_tmp):
        folder.mkdir(parents=True)
    copy_repository(app_dir)
    (disk / "site").mkdir()
    (disk / "site" / "sitecustomize.py").write_text(TRAINING_ONLY)  # imported by Python at start-up
    snapshot = write_hub_cache(home / ".cache" / "huggingface" / "hub", REPO_ID, COMMIT, pushed.files)

    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in HF_LOCATIONS}  # the cache is HOME's
    env |= {
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "GRADIO_TEMP_DIR": str(gradio_tmp),
        "HF_HUB_OFFLINE": "1",
        "VAE_CHECKPOINT": REPO_ID,
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(disk / "site"),
    }
    log = disk / "app.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_server(url, process, log)
        yield Space(url, log, snapshot, env)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(space, tmp_path_factory) -> Client:
    return Client(space.url, verbose=False, download_files=str(tmp_path_factory.mktemp("space-downloads")))


def call(client: Client, space: Space, *args, api_name: str):
    """client.predict, and on an error the app's log: the page only says "Error", the log says why."""
    try:
        return client.predict(*args, api_name=api_name)
    except AppError as err:
        pytest.fail(f"{api_name} failed on the Space: {err}\n--- app.py's log ---\n{log_tail(space.log)}")


def test_push_sends_the_model_folder_in_one_commit(pushed):
    assert set(pushed.files) == HUB_FILES, "the model files, not the training state"
    for name, data in pushed.files.items():
        local = (pushed.folder / name).read_bytes()
        if name == "train_config.yaml":
            local = shareable_config(local.decode()).encode()
        elif name == "README.md":  # the card's code sample loads the repo it was pushed to
            local = with_model_id(local.decode(), REPO_ID).encode()
        assert data == local, name
    assert str(pushed.folder).encode() not in pushed.files["train_config.yaml"], "no place on the pushing machine"
    assert pushed.url is None or REPO_ID in pushed.url
    card = ModelCard(pushed.files["README.md"].decode())  # the front matter the Hub validates
    assert card.data.library_name == "pytorch" and "vae" in card.data.tags


def test_the_cached_snapshot_resolves_offline(pushed, space, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = space.snapshot.parents[2]
    folder = Path(snapshot_download(REPO_ID, cache_dir=cache, allow_patterns=["*.json", "*.safetensors"]))
    assert folder == space.snapshot
    assert {p.name for p in folder.iterdir()} == HUB_FILES
    assert {(folder / name).resolve().parent.name for name in HUB_FILES} == {"blobs"}
    assert all((folder / name).read_bytes() == data for name, data in pushed.files.items())


def test_a_model_preloaded_at_a_commit_is_found_in_the_cache_with_no_download(pushed, tmp_path, monkeypatch):
    """A Space's preload_from_hub pinned to a commit fills the Hugging Face cache at build time under that commit and
    no branch: VAE_CHECKPOINT=user/name@COMMIT finds the model there with the Hub offline; the bare id, which means
    the branch main, says what it could not get."""
    cache = tmp_path / "hub cache"
    snapshot = write_hub_cache(cache, REPO_ID, COMMIT, pushed.files)
    (snapshot.parents[1] / "refs" / "main").unlink()  # preloaded by commit: no branch points at it
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assets = load_assets(f"{REPO_ID}@{COMMIT}")
    assert assets.model.source_folder == snapshot and assets.tsne is not None and assets.steering is not None
    with pytest.raises(UserError, match=f"Could not get {REPO_ID} from the Hugging Face Hub"):
        load_assets(REPO_ID)


def test_the_model_from_the_hub_cache_is_the_trained_one(pushed, space, monkeypatch):
    """VAE.from_pretrained("user/repo") from the cache a download fills: every tensor, the classes, the class
    means and the card are those train.py wrote."""
    from vae import VAE

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(space.snapshot.parents[2]))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    downloaded, trained = VAE.from_pretrained(REPO_ID), VAE.from_pretrained(pushed.folder)
    assert downloaded.state_dict().keys() == trained.state_dict().keys()
    for key, tensor in trained.state_dict().items():
        assert torch.equal(downloaded.state_dict()[key], tensor), key
    assert downloaded.class_names == trained.class_names and torch.equal(downloaded.class_means, trained.class_means)
    assert downloaded.source_folder == space.snapshot
    assert (space.snapshot / "README.md").read_bytes() == pushed.files["README.md"]
    assert ModelCard.load(space.snapshot / "README.md").data == ModelCard.load(pushed.folder / "README.md").data


def test_the_space_process_cannot_import_training_packages(space):
    """The Space's process runs without the trainer's packages; every endpoint but /train is called through it."""
    for package in ("torchvision", "accelerate", "sklearn", "matplotlib"):
        result = subprocess.run([sys.executable, "-c", f"import {package}"], env=space.env, capture_output=True)
        assert b"blocked, as in an install without the trainer" in result.stderr, package


def test_tsne_serves_the_pushed_figure(client, space, pushed):
    """The defect this module was written for: the figure lives in the Hugging Face cache, which Gradio does
    not serve from (InvalidPathError), so the app must hand Gradio a copy in its own cache."""
    figure, points = call(client, space, api_name="/tsne")
    assert Path(figure).read_bytes() == pushed.files["tsne.png"]
    assert len(points["data"]) == len(load_file(pushed.folder / "tsne.safetensors")["labels"])


def test_every_other_endpoint_answers(client, space, pushed, tmp_path):
    grid, gallery = call(client, space, 16, 3, 1.0, api_name="/sample")
    assert read(grid).ndim == 2 and len(gallery) == 16

    strip, gif = call(client, space, "3", "7", 12, "linear", "mean", 0, api_name="/walk")
    assert read(strip).shape[0] >= 32
    with Image.open(gif) as animation:
        assert animation.n_frames == 2 * 12 - 2

    digit = upload_image(pushed, tmp_path)
    model_input, reconstruction, nearest, points, walk_strip, note = call(
        client, space, handle_file(digit), "7", api_name="/encode"
    )
    assert read(model_input).shape == read(reconstruction).shape == (224, 224)
    assert nearest in [str(d) for d in range(10)] and points["data"][-1][2] == pictures.YOU and walk_strip
    assert "t-SNE" in note

    canvas = np.zeros((400, 400, 4), np.uint8)  # a black 1 on a transparent sketchpad
    canvas[80:320, 190:215] = (0, 0, 0, 255)
    Image.fromarray(canvas).save(tmp_path / "drawing.png")
    drawing = {"background": None, "layers": [], "composite": handle_file(tmp_path / "drawing.png"), "id": None}
    _, _, nearest, *_ = call(client, space, drawing, "3", api_name="/encode_drawing")
    assert nearest in [str(d) for d in range(10)]

    text = call(client, space, api_name="/about")
    metrics = json.loads(pushed.files["metrics.json"])
    assert "What is a VAE?" in text and f"https://huggingface.co/{REPO_ID}" in text
    assert f"{metrics['test_loss']:.2f}" in text


@pytest.fixture(scope="module")
def original(pushed):
    """The app in this process on the folder train.py wrote, as `python app.py --checkpoint <folder>` serves it."""
    demo = app.build_demo(load_assets(pushed.folder))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_OPTIONS)
    yield f"http://127.0.0.1:{port}"
    demo.close()


def test_the_space_shows_the_samples_of_the_trained_folder(client, space, original, tmp_path):
    """The round trip train.py → push → Hub cache → app loses nothing: the same seed gives the same images."""
    local = Client(original, verbose=False, download_files=str(tmp_path))
    grid, gallery = call(client, space, 16, 3, 1.0, api_name="/sample")
    local_grid, local_gallery = local.predict(16, 3, 1.0, api_name="/sample")
    assert Path(grid).read_bytes() == Path(local_grid).read_bytes()
    assert len(gallery) == len(local_gallery) == 16
    for ours, theirs in zip(gallery, local_gallery, strict=True):
        assert Path(ours["image"]).read_bytes() == Path(theirs["image"]).read_bytes()


ERRORS = """return [...document.querySelectorAll('.wrap.full, .toast-body')].map(e => e.innerText)
  .filter(text => text.includes('rror'))"""


def run_event(driver, space: Space, what: str, start) -> None:
    """start() (a click) and wait until the event it starts has run; fail, with the app's log, if it failed."""
    ran(driver, start, what)
    assert_no_error(driver, space, what)


def assert_no_error(driver, space: Space, what: str) -> None:
    errors = driver.execute_script(ERRORS)
    assert not errors, f"{what}: the page shows {errors}\n--- app.py's log ---\n{log_tail(space.log)}"


def test_click_through_the_tabs_on_the_space(space, pushed, browser, tmp_path):  # noqa: F811 (the fixture)
    """Every tab as a visitor of the Space uses it; a screenshot of each in $VAE_SCREENSHOTS or tmp_path."""
    shots = Path(os.environ.get("VAE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    browser.get(space.url)

    # Samples: filled on page load; a new seed and a click bring new images.
    first = loaded_image(browser, "#sample-grid").get_attribute("src")
    seed = browser.find_element(By.CSS_SELECTOR, "#sample-seed input")
    seed.clear()
    seed.send_keys("5")
    run_event(browser, space, "Sample", browser.find_element(By.ID, "sample-button").click)
    loaded_image(browser, "#sample-grid", not_src=first)
    waiting(browser, TIMEOUT).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sample-gallery img")) == 64)
    browser.save_screenshot(str(shots / "samples.png"))

    # Latent walk: a strip and an animated GIF.
    open_tab(browser, "Latent walk")
    run_event(browser, space, "Walk", browser.find_element(By.ID, "walk-button").click)
    assert loaded_image(browser, "#walk-strip").get_attribute("src").endswith(".png")
    assert loaded_image(browser, "#walk-gif").get_attribute("src").endswith(".gif")
    browser.save_screenshot(str(shots / "walk.png"))

    # The map tab (a 2-D model's: its latent plane), one map: hovering over it shows the test digit whose latent is
    # nearest there, from the pushed tsne.safetensors (read from the Hugging Face cache), 4x, with its class.
    open_tab(browser, "Latent plane")
    assert not browser.find_elements(By.ID, "tsne-figure")
    hover_picture(browser, "#click-map", 280, 280)
    thumbnail = hovered(browser)
    tsne = load_file(pushed.folder / "tsne.safetensors")
    digit = tsne["images"][thumbnail["index"], 0].numpy()  # (28, 28) uint8
    assert np.array_equal(thumbnail["pixels"], np.kron(digit, np.ones((4, 4), np.uint8)))
    assert thumbnail["caption"].split()[-1] == str(int(tsne["labels"][thumbnail["index"]]))
    assert_no_error(browser, space, "hovering over the map")
    # A click in the middle of the map (drawn from the pushed tsne.safetensors) shows a test digit and its decoding.
    run_event(browser, space, "a click on the map", lambda: click_picture(browser, "#click-map", 280, 280))
    loaded_image(browser, "#pick-decoded")
    assert re.search(r" is an? ", browser.find_element(By.ID, "pick-caption").text)  # the nearest test digit's class
    browser.save_screenshot(str(shots / "tsne.png"))

    # Your digit: a picture of a test digit uploaded from disk is encoded at once.
    open_tab(browser, "Your digit")
    open_tab(browser, "Upload")
    file_input = browser.execute_script(
        "return [...document.querySelectorAll('.block')].find(b => b.getClientRects().length"
        " && b.innerText.includes('Upload an image')).querySelector('input[type=file]')"
    )
    file_input.send_keys(str(upload_image(pushed, tmp_path)))
    nearest = waiting(browser, TIMEOUT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#nearest textarea, #nearest input").get_attribute("value") or False
    )
    assert nearest in [str(d) for d in range(10)]
    assert_no_error(browser, space, "the upload")
    browser.save_screenshot(str(shots / "digit.png"))

    # About: the explanation and this model's metrics, from its card.
    run_event(browser, space, "the About tab", lambda: open_tab(browser, "About"))
    metrics = json.loads(pushed.files["metrics.json"])
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "What is a VAE?" in body and f"{metrics['test_loss']:.2f}" in body
    browser.save_screenshot(str(shots / "about.png"))


def test_train_says_what_to_install_where_the_trainer_is_missing(client):
    """A server installed without the trainer's packages serves every other tab; /train says what it lacks."""
    settings = {"dataset": "MNIST", "latent_dim": 8, "hidden_layers": "256", "epochs": 1, "train_images": 200}
    with pytest.raises(AppError, match=r"This server cannot train: it lacks accelerate, torchvision, sklearn, mat"):
        client.predict(**settings, seed=0, api_name="/train")
