"""Issue 36: the decoder in the page (vae/page_decoder.py, web/decoder.js). The Sliders' digit, the Latent walk's
scrubber and the 2-D model's plane under the pointer are decoded by the browser, with no request to the server, and
match the server's own pictures (/slide, /walk, /pick) to within 1/255 on average; a model whose decoder the page
cannot run is drawn by the server, and the page says so. In headless Chromium, on copies of the committed models in a
folder whose path has spaces."""

from __future__ import annotations

import base64
import io
import json
import shutil
import urllib.parse

import numpy as np
import pytest
import torch
from gradio_client import Client
from PIL import Image
from safetensors.torch import load
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from test_app import launched
from test_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    TIMEOUT,
    choose,
    hover_picture,
    no_error_shown,
    open_tab,
)
from test_browser import pytestmark as in_chromium

import app
from bench.screenshots import loaded as loaded_image
from bench.screenshots import waiting
from vae import page_decoder
from vae.assets import load_assets
from vae.folder import CONFIG
from vae.imaging import to_uint8
from vae.output_files import FILE_ROUTE
from vae.pictures import GRID_WIDTH, grid_scale

MODELS = ("vae-mnist", "vae-mnist-2d")
GELU = "vae-mnist-2d-gelu"  # the 2-D model with GELU between its layers: a decoder the page cannot run


def browser_test(test):
    """Slow, and run where Chromium is (as every test of tests/test_browser.py)."""
    for mark in in_chromium:
        test = mark(test)
    return test


def decoder_weights(data: dict) -> dict[str, torch.Tensor]:
    """The weights file that #decoder-data names, read from Gradio's cache as the page fetches it."""
    path = data["weights"].removeprefix(FILE_ROUTE)
    with open(urllib.parse.unquote(path), "rb") as file:
        return load(file.read())


@pytest.mark.parametrize("name", MODELS)
def test_the_weights_the_page_gets_decode_what_the_model_decodes(name):
    """The page's weights: every linear layer of the decoder in order, float16, decoding the same digits as the model
    to 1 grey level at most (0.01 on average over 500 latents); and the sliders' directions and spreads."""
    assets = load_assets(app.CHECKPOINTS / name)
    data = json.loads(page_decoder.decoder_data(assets))
    assert data["name"] == assets.name and data["activation"] == "elu" and data["image_shape"] == [1, 28, 28]
    weights = decoder_weights(data)
    assert {t.dtype for t in weights.values()} == {torch.float16} and len(weights) == 2 * data["layers"]
    assert sum(t.numel() for t in weights.values()) == sum(p.numel() for p in assets.model.decoder.parameters())
    z = torch.randn(500, assets.model.latent_dim, generator=torch.Generator().manual_seed(0)) * 1.5
    h = z.double()
    for i in range(data["layers"]):
        h = h @ weights[f"layers.{i}.weight"].double().T + weights[f"layers.{i}.bias"].double()
        h = torch.nn.functional.elu(h) if i < data["layers"] - 1 else torch.sigmoid(h)
    page = to_uint8(h.view(-1, 1, 28, 28)).astype(int)
    with torch.no_grad():
        server = to_uint8(assets.model.decode(z)).astype(int)
    assert np.abs(page - server).max() <= 1 and np.abs(page - server).mean() < 0.05
    assert torch.tensor(data["directions"]).shape == assets.steering.directions.shape
    assert data["spreads"] == pytest.approx(assets.steering.spreads.tolist())


def test_a_decoder_the_page_cannot_run_is_named_with_why(tmp_path):
    folder = shutil.copytree(app.CHECKPOINTS / "vae-mnist-2d", tmp_path / GELU)
    config = json.loads((folder / CONFIG).read_text())
    (folder / CONFIG).write_text(json.dumps(config | {"activation": "gelu"}))
    data = json.loads(page_decoder.decoder_data(load_assets(folder)))
    assert data == {
        "name": GELU,
        "unsupported": "This model is drawn by the server: its decoder has a GELU layer, "
        "which the page cannot compute.",
    }


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """The studio for copies of the committed MNIST and 2-D models, and a GELU copy of the 2-D one."""
    root = tmp_path_factory.mktemp("page decoder") / "my models"
    copies = {name: shutil.copytree(app.CHECKPOINTS / name, root / name) for name in MODELS}
    copies[GELU] = shutil.copytree(app.CHECKPOINTS / "vae-mnist-2d", root / GELU)
    config = json.loads((copies[GELU] / CONFIG).read_text())
    (copies[GELU] / CONFIG).write_text(json.dumps(config | {"activation": "gelu"}))
    others = {name: str(folder) for name, folder in copies.items() if name != "vae-mnist"}
    with launched(app.build_demo(load_assets(copies["vae-mnist"]), others)) as base:
        yield base + "/"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """Headless Chromium (as tests/test_browser.py starts it) that logs every request the page makes."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def page(chromium, url):
    chromium.get("about:blank")
    chromium.delete_all_cookies()
    chromium.get(url)
    waiting(chromium, TIMEOUT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#checkpoint input"), "no page")
    return chromium


def canvas_pixels(driver, canvas) -> np.ndarray:
    """A canvas's pixels (H, W) in grey levels, checked to be an opaque grey picture."""
    data = driver.execute_script("return arguments[0].toDataURL('image/png')", canvas)
    with Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))) as png:
        pixels = np.asarray(png.convert("RGBA")).astype(int)
    assert (pixels[..., 3] == 255).all() and (pixels[..., 0] == pixels[..., 2]).all(), "an opaque grey digit"
    return pixels[..., 0]


def server_pixels(path: str, scale: int) -> np.ndarray:
    """A digit picture the server drew, upscaled by `scale`, back at one pixel a digit pixel."""
    with Image.open(path) as png:
        return np.asarray(png.convert("L")).astype(int)[::scale, ::scale]


def decoded_here(driver, checkpoint: str) -> None:
    """Wait for the checkpoint's decoder to be loaded into the page."""
    waiting(driver, TIMEOUT).until(
        lambda d: d.execute_script("return window.studioDecoder?.model") == checkpoint,
        f"the decoder of {checkpoint} never loaded into the page",
    )


def switch_to(driver, checkpoint: str) -> None:
    choose(driver, "checkpoint", checkpoint)
    waiting(driver, TIMEOUT).until(lambda d: f"{checkpoint}:" in d.find_element(By.ID, "checkpoint-status").text)


def requests_to_the_server(driver) -> list[str]:
    """The URLs the page has asked for since this was last called (Chromium's log of its network, drained)."""
    sent = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    return [m["params"]["request"]["url"] for m in sent if m["method"] == "Network.requestWillBeSent"]


def start_latent(driver) -> str:
    return driver.execute_script("return document.querySelector('#slide-latent textarea, #slide-latent input').value")


def start_from(driver, start: str, checkpoint: str) -> None:
    """Choose the Sliders' start point (if it is not chosen yet), and wait for the checkpoint's start latent."""
    label = {"mean": "class mean", "sample": "random sample of the class"}[start]
    choice = driver.find_element(By.XPATH, f"//*[@id='slide-start']//label[contains(., '{label}')]")
    before = start_latent(driver)
    if not choice.find_element(By.TAG_NAME, "input").is_selected():
        choice.click()
        waiting(driver, TIMEOUT).until(lambda d: start_latent(d) != before, "no new start point")
    waiting(driver, TIMEOUT).until(
        lambda d: (text := start_latent(d)) and json.loads(text)["name"] == checkpoint, "no start point"
    )


def set_sliders(driver, offsets: list[float], amounts: dict[str, float] | None = None) -> np.ndarray:
    """Move the principal sliders to `offsets` and the attribute sliders to `amounts` (the others to 0) as a drag does
    (input events, no release) → the digit the page draws."""
    amounts = amounts or {}
    driver.execute_script(
        """const set = (id, value) => {
             const range = document.querySelector(`#${id} input[type=range]`);
             if (!range) return;
             range.value = String(value);
             range.dispatchEvent(new Event('input', {bubbles: true}));
           };
           for (let k = 0; k < 8; k++) set(`slide-${k + 1}`, arguments[0][k] ?? 0);
           for (const name of ['thickness', 'slant']) set(`slide-${name}`, arguments[1][name] ?? 0);""",
        offsets,
        amounts,
    )
    data = json.loads(driver.execute_script("return document.querySelector('#decoder-data textarea').value"))
    principal = [float(v) for v in [*offsets, *[0] * 8][: len(data["directions"])]]
    wanted = principal + [float(amounts.get(a["slider"].removeprefix("slide-"), 0)) for a in data["attributes"]]
    waiting(driver, TIMEOUT).until(
        lambda d: d.execute_script("return window.studioDecoder.offsets") == wanted, "not drawn"
    )
    canvas = driver.find_element(By.ID, "slide-canvas")
    assert canvas.is_displayed() and canvas.size["width"] >= 200, "the digit drawn over the server's, as large"
    return canvas_pixels(driver, canvas)


@browser_test
def test_sliders_move_the_digit_in_the_page_with_no_request_as_the_server_draws_it(page, url):
    """On the default model and on the 2-D one: moving sliders makes no request; the page's digit matches /slide's for
    the same start and offsets (mean absolute difference at most 1/255), and /attribute's for the attribute sliders;
    letting go of a slider asks the server; the next visit fetches no weights."""
    client = Client(url, verbose=False)
    cases = {
        "vae-mnist": [("mean", [0.0]), ("mean", [1.5, -2.0, 0.5, 0, 0, 0, 0, 3.0]), ("sample", [-1.0, 2.5])],
        "vae-mnist-2d": [("mean", [2.0, -1.5]), ("sample", [-3.0, 0.7])],
    }
    for checkpoint, moves in cases.items():
        if checkpoint != "vae-mnist":
            switch_to(page, checkpoint)
        open_tab(page, "Sliders")
        decoded_here(page, checkpoint)
        note = page.find_element(By.ID, "decoder-mode")
        assert note.text == "Decoded in your browser as you drag." and note.get_attribute("data-name") == checkpoint
        for start, offsets in moves:
            start_from(page, start, checkpoint)
            requests_to_the_server(page)
            shown = set_sliders(page, offsets)
            assert requests_to_the_server(page) == [], "no request while the sliders move"
            server = client.predict(start, "3", 0, offsets, None, checkpoint, api_name="/slide")
            expected = server_pixels(server, 8)
            difference = np.abs(shown - expected)
            assert difference.mean() <= 1, f"{checkpoint} {start} {offsets}: {difference.mean():.3f} grey levels apart"
            assert difference.max() <= 2
        for name in ("thickness", "slant"):  # the attribute sliders (issue 37), as /attribute draws them
            shown = set_sliders(page, [], {name: -1.5})
            expected = server_pixels(
                client.predict(start, "3", 0, name, -1.5, None, checkpoint, api_name="/attribute"), 8
            )
            assert np.abs(shown - expected).mean() <= 1 and np.abs(shown - expected).max() <= 2, name
    # Let go of a slider: the server is asked for the same digit (its picture and the API stay in step).
    requests_to_the_server(page)
    ActionChains(page).click(page.find_element(By.CSS_SELECTOR, "#slide-1 input[type=range]")).perform()
    waiting(page, TIMEOUT).until(lambda d: any("queue/join" in n for n in requests_to_the_server(d)), "no call")
    assert no_error_shown(page)
    # The next visit reads both models' weights from the browser's cache: their URLs name their contents.
    page.get(url)
    decoded_here(page, "vae-mnist")
    switch_to(page, "vae-mnist-2d")
    decoded_here(page, "vae-mnist-2d")
    assert not [u for u in requests_to_the_server(page) if u.endswith("decoder.safetensors")], "from the cache"


@browser_test
def test_the_plane_under_the_pointer_is_decoded_in_the_page_as_a_click_decodes_it(page, url):
    client = Client(url, verbose=False)
    switch_to(page, "vae-mnist-2d")
    open_tab(page, "Latent plane")
    loaded_image(page, "#click-map")
    decoded_here(page, "vae-mnist-2d")
    plane = load_assets(app.CHECKPOINTS / "vae-mnist-2d").click_map
    hover_picture(page, "#click-map", 100, 100)  # the test digits' sprite loads with the first hover, once
    waiting(page, TIMEOUT).until(lambda d: d.find_element(By.ID, "map-thumb").get_attribute("data-index"), "sprite")
    seen = []
    for pixel in [(15.5 * 28, 4.5 * 28), (3 * 28, 17 * 28), (10 * 28, 10 * 28)]:
        requests_to_the_server(page)
        hover_picture(page, "#click-map", *pixel)

        def decoded_at(d, target=pixel):  # the plane's digit under the pointer, once it is over `target`
            thumb, canvas = d.find_element(By.ID, "map-thumb"), d.find_element(By.ID, "map-decoded")
            under = thumb.get_attribute("data-pixel")
            near = under and np.hypot(*np.subtract([int(v) for v in under.split(",")], target)) <= 2
            return near and canvas.is_displayed() and canvas

        canvas = waiting(page, TIMEOUT).until(decoded_at, "no decoded digit beside the pointer")
        shown = canvas_pixels(page, canvas)
        assert requests_to_the_server(page) == [], "nothing asked of the server while the pointer moves"
        under = page.find_element(By.ID, "map-thumb").get_attribute("data-pixel").split(",")
        point = list(plane.to_map(*map(int, under)))
        decoded = client.predict(point, None, "vae-mnist-2d", api_name="/pick")[2]
        difference = np.abs(shown - server_pixels(decoded, 8))
        assert difference.mean() <= 1 and difference.max() <= 2, f"{pixel}: {difference.mean():.3f} apart"
        assert "decoded at z = " in page.find_element(By.ID, "map-thumb").text
        seen.append(shown)
    assert not np.array_equal(seen[0], seen[1])


@browser_test
def test_the_walk_scrubber_shows_the_walks_frames(page, url):
    client = Client(url, verbose=False)
    open_tab(page, "Latent walk")
    loaded_image(page, "#walk-strip")
    decoded_here(page, "vae-mnist")
    strip = client.predict("3", "7", 10, "linear", "mean", 0, "vae-mnist", api_name="/walk")[0]
    scale = grid_scale(10, 10, 28)
    assert GRID_WIDTH // 2 < 10 * 30 * scale
    with Image.open(strip) as png:
        cells = np.asarray(png.convert("L")).astype(int)[::scale, ::scale]  # the strip at one pixel a digit pixel
    box = waiting(page, TIMEOUT).until(
        lambda d: (
            (b := d.find_elements(By.CSS_SELECTOR, "#walk-scrubber .scrub"))
            and b[0].get_attribute("data-drawn")
            and b[0]
        )
    )
    scrub = box.find_element(By.TAG_NAME, "input")
    assert scrub.get_attribute("max") == "9"
    for frame in (0, 4, 9):
        page.execute_script(
            "arguments[0].value = String(arguments[1]); arguments[0].dispatchEvent(new Event('input', {bubbles: true}))",
            scrub,
            frame,
        )
        waiting(page, TIMEOUT).until(lambda d, f=frame: box.get_attribute("data-frame") == str(f))
        shown = canvas_pixels(page, box.find_element(By.TAG_NAME, "canvas"))
        expected = cells[2 : 2 + 28, 2 + frame * 30 : 2 + frame * 30 + 28]
        difference = np.abs(shown - expected)
        assert difference.mean() <= 1 and difference.max() <= 2, f"frame {frame}: {difference.mean():.3f} apart"
    assert "frame 10 of 10" in box.text


@browser_test
def test_a_decoder_the_page_cannot_run_is_drawn_by_the_server_and_the_page_says_so(page):
    switch_to(page, GELU)
    open_tab(page, "Sliders")
    before = loaded_image(page, "#slide-digit").get_attribute("src")
    note = waiting(page, TIMEOUT).until(
        lambda d: (n := d.find_elements(By.ID, "decoder-mode")) and n[0].get_attribute("data-mode") == "server" and n[0]
    )
    assert "GELU" in note.text and "drawn by the server" in note.text
    assert not [c for c in page.find_elements(By.ID, "slide-canvas") if c.is_displayed()]
    page.find_element(By.CSS_SELECTOR, "#slide-1 input[type=range]").send_keys(*[Keys.ARROW_RIGHT] * 10)
    loaded_image(page, "#slide-digit", not_src=before)  # the keyboard's move, drawn by the server
    assert no_error_shown(page)
