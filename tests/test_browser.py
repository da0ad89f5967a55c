"""The app in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by Selenium.

The driver is given by path, so Selenium Manager never runs (and never downloads anything); the browser
starts with a fresh profile and everything that would reach the network switched off. Screenshots of
each tab are saved in the test's temporary folder.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import re
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SLICE
from gradio_client import Client
from gradio_client.exceptions import ValidationError
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from test_app import launched
from test_steering_app import STEERED, folders  # noqa: F401 (folders is a fixture)
from test_train_tab import SETTINGS, training_studio, wait_for_no_trainer

import app
from bench import screenshots
from bench.screenshots import loaded as loaded_image
from bench.screenshots import waiting
from vae import live
from vae.assets import load_assets
from vae.classes import neighbour_agreement
from vae.folder import CARD_FIGURES

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1400,1100",
]
TIMEOUT = 60  # seconds for anything to appear: a busy 2-core machine is slow to render

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def url():
    with launched(app.build_demo(load_assets(app.DEFAULT_CHECKPOINT))) as base:
        yield base + "/"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """Headless Chromium with a fresh profile, one per test module (starting one costs ~1 s of CPU)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def browser(chromium):
    """The module's Chromium on a blank page with no cookies, for a test that opens its own (tests/test_space.py and
    tests/test_app_security.py use it too)."""
    chromium.get("about:blank")
    chromium.delete_all_cookies()
    return chromium


def open_tab(driver, name: str) -> None:
    tab = waiting(driver, TIMEOUT).until(
        lambda d: next((t for t in d.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == name), False)
    )
    tab.click()
    waiting(driver, TIMEOUT).until(lambda d: tab.get_attribute("aria-selected") == "true")


def no_error_shown(driver) -> bool:
    return not [
        e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body.error, .toast-body") if "rror" in e.text
    ]


def test_click_through_the_tabs(url, browser, tmp_path):
    browser.get(url)

    # Samples: filled on page load; a new seed and a click bring new images.
    first = loaded_image(browser, "#sample-grid").get_attribute("src")
    seed = browser.find_element(By.CSS_SELECTOR, "#sample-seed input")
    seed.clear()
    seed.send_keys("5")
    browser.find_element(By.ID, "sample-button").click()
    grid = loaded_image(browser, "#sample-grid", not_src=first)
    assert grid.size["width"] >= 400, "the grid is shown large"
    waiting(browser, TIMEOUT).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sample-gallery img")) == 64)
    assert no_error_shown(browser)
    browser.save_screenshot(str(tmp_path / "samples.png"))

    # Latent walk: 3 → 7 by default, a strip and an animated GIF, there when the tab opens; Walk draws them again.
    open_tab(browser, "Latent walk")
    opened = loaded_image(browser, "#walk-strip").get_attribute("src")
    assert loaded_image(browser, "#walk-gif").get_attribute("src").endswith(".gif")
    browser.find_element(By.ID, "walk-button").click()
    strip = loaded_image(browser, "#walk-strip")
    assert strip.get_attribute("src") == opened, "the same walk: the page opened with the default one"
    assert strip.get_attribute("src").endswith(".png")
    assert loaded_image(browser, "#walk-gif").get_attribute("src").endswith(".gif")
    assert no_error_shown(browser)
    browser.save_screenshot(str(tmp_path / "walk.png"))

    # t-SNE: the clickable map, there at once.
    open_tab(browser, "t-SNE")
    loaded_image(browser, "#click-map")
    browser.save_screenshot(str(tmp_path / "tsne.png"))

    # Your digit: an example digit encoded when the tab opens; then draw a 1 with the mouse and encode it.
    open_tab(browser, "Your digit")
    example = loaded_image(browser, "#digit-input").get_attribute("src")
    loaded_image(browser, "#digit-walk")
    assert "An example to start from" in browser.find_element(By.ID, "digit-notes").text
    canvas = sketchpad_canvas(browser)
    draw_a_one(browser, canvas)
    browser.find_element(By.ID, "encode-drawing").click()
    loaded_image(browser, "#digit-input", not_src=example)  # the drawing, in place of the example
    nearest = waiting(browser, TIMEOUT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#nearest textarea, #nearest input").get_attribute("value") or False
    )
    assert nearest in load_assets(app.DEFAULT_CHECKPOINT).class_names
    loaded_image(browser, "#posterior-samples")  # what the model is unsure of in it (issue 38)
    assert "spread" in browser.find_element(By.ID, "posterior-summary").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#posterior-plane img"), "a 32-d model: no plane"
    browser.save_screenshot(str(tmp_path / "digit.png"))

    # About: the explanation and this model's metrics.
    open_tab(browser, "About")
    waiting(browser, TIMEOUT).until(lambda d: "What is a VAE?" in d.find_element(By.TAG_NAME, "body").text)
    browser.save_screenshot(str(tmp_path / "about.png"))
    assert sorted(p.name for p in Path(tmp_path).glob("*.png")) == [
        "about.png",
        "digit.png",
        "samples.png",
        "tsne.png",
        "walk.png",
    ]


def test_every_picture_is_whole_and_uncovered_on_a_laptop_and_a_phone(url, tmp_path):
    """Every tab after its main button at 1280x900 and 390x844 (python -m bench.screenshots, which refreshes the
    screenshots in docs/): each picture inside the window with no label or toolbar over any corner of it (so a strip's
    first and last digit show), and the Sliders' digit in view while the last slider moves on a phone."""
    reports = screenshots.shoot(url, tmp_path)
    problems = [
        f"{size} #{picture}: {problem}"
        for size, pictures in reports.items()
        for picture, report in pictures.items()
        for problem in report["problems"]
    ]
    assert not problems, "\n".join(problems)
    assert (
        set(reports["phone"]) == {*reports["laptop"]} and "slide-digit while the last slider moves" in reports["phone"]
    )
    tabs = {f"{size}-{tab.lower().replace(' ', '-')}.png" for size in screenshots.SIZES for tab in screenshots.TABS}
    assert {p.name for p in tmp_path.glob("*.png")} == tabs


def sketchpad_canvas(driver) -> WebElement:
    return waiting(driver, TIMEOUT).until(
        lambda d: next(
            (c for c in d.find_elements(By.CSS_SELECTOR, "#sketchpad canvas") if c.size["height"] > 100), False
        )
    )


def draw_a_one(driver, canvas: WebElement, slant: int = 0) -> None:
    """A drag down the middle two thirds of the sketchpad, as a visitor draws a 1 (leaning `slant` px to the right)."""
    height = canvas.size["height"]
    ActionChains(driver).move_to_element_with_offset(canvas, -slant, -height // 3).click_and_hold().move_by_offset(
        slant, height // 3
    ).move_by_offset(slant, height // 3).release().perform()


def stroke_width(digit: np.ndarray) -> float:
    """The ink of a 28x28 digit in [0, 1] per row across its middle (rows 10-17): a vertical stroke's width in px."""
    return float(digit[10:18].sum(axis=1).mean())


def test_the_sketchpad_draws_on_the_first_drag_with_an_mnist_sized_brush(url, browser):
    """No tool to pick first: a drag right after the page opens draws (and again after "Clear canvas"), and the 1 it
    draws is as wide, as the model sees it, as the middle half of MNIST's 1s."""
    browser.get(url)
    open_tab(browser, "Your digit")
    example = loaded_image(browser, "#digit-input").get_attribute("src")  # the test digit the page opens with
    canvas = sketchpad_canvas(browser)
    draw_a_one(browser, canvas)
    browser.find_element(By.ID, "encode-drawing").click()
    seen = loaded_image(browser, "#digit-input", not_src=example)
    assert no_error_shown(browser), "the drag drew: there is a drawing to encode"
    with Image.open(io.BytesIO(urllib.request.urlopen(seen.get_attribute("src")).read())) as img:
        digit = np.asarray(img.convert("L"), dtype=np.float32)[::8, ::8] / 255  # 224x224, upscaled 8x → 28x28
    with gzip.open(SLICE / "t10k-images-idx3-ubyte.gz") as images, gzip.open(SLICE / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)  # after the IDX header
        ones = np.frombuffer(images.read(), np.uint8, offset=16).reshape(-1, 28, 28)[labels == 1] / 255
    ones = [stroke_width(one) for one in ones]
    assert np.percentile(ones, 25) <= stroke_width(digit) <= np.percentile(ones, 75)

    # "Clear canvas" takes the pad back to its first state: the next drag draws too.
    browser.find_element(By.CSS_SELECTOR, "#sketchpad button[aria-label='Clear canvas']").click()
    waiting(browser, TIMEOUT).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#sketchpad .empty.wrap"))
    draw_a_one(browser, canvas, slant=canvas.size["width"] // 8)
    browser.find_element(By.ID, "encode-drawing").click()
    loaded_image(browser, "#digit-input", not_src=seen.get_attribute("src"))  # the leaning 1, not the first
    assert no_error_shown(browser)


def test_your_digit_stands_out_on_the_map(url, browser):
    """Issue 29: your digit's point is drawn several times the size of the test digits' points, and its note is a
    sentence that says which point it is."""
    browser.get(url)
    open_tab(browser, "Your digit")
    example = loaded_image(browser, "#digit-input").get_attribute("src")  # the test digit the page opens with
    draw_a_one(browser, sketchpad_canvas(browser))
    browser.find_element(By.ID, "encode-drawing").click()
    loaded_image(browser, "#digit-input", not_src=example)
    waiting(browser, TIMEOUT).until(
        lambda d: d.find_element(By.ID, "digit-notes").text.startswith("Your digit"), "the drawing's note"
    )
    points = "#digit-map .role-mark path"
    waiting(browser, TIMEOUT).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, points)) > 1000)
    sizes = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(p => {"
        "  const box = p.getBoundingClientRect(); return [p.getAttribute('stroke'), box.width * box.height]; })",
        points,
    )
    yours = [area for colour, area in sizes if colour == app.YOU_COLOUR]
    others = sorted(area for colour, area in sizes if colour != app.YOU_COLOUR)
    assert len(yours) == 1 and yours[0] > 4 * others[len(others) // 2], "four times the area of a typical point"
    note = browser.find_element(By.ID, "digit-notes").text
    assert re.fullmatch(r"Your digit is the large black dot on the t-SNE map, at \(\S+, \S+\): .+\.", note), note


def test_about_is_the_model_card_with_its_figures(url, browser):
    """Issue 29: the About tab shows the card's six figures (served from the app, the model folder's own files), one
    Links section, a table header with words, and numbers as people read them."""
    browser.get(url)
    open_tab(browser, "About")
    folder = app.DEFAULT_CHECKPOINT
    figures = [name for name in CARD_FIGURES if (folder / name).is_file()]
    assert len(figures) == 6

    def loaded(d):
        images = d.find_elements(By.CSS_SELECTOR, "#about img")
        done = [img for img in images if d.execute_script("return arguments[0].naturalWidth > 0", img)]
        return images if len(images) == len(figures) and len(done) == len(images) else False

    images = waiting(browser, TIMEOUT).until(loaded, "the card's figures never all loaded")
    for name, img in zip(figures, images, strict=True):
        src = img.get_attribute("src")
        assert src.startswith(url) and src.endswith(f"/{name}")
        assert urllib.request.urlopen(src).read() == (folder / name).read_bytes(), name
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#about h2")]
    assert headings.count("Links") == 1 and "Figures" in headings
    assert all(th.text.strip() for th in browser.find_elements(By.CSS_SELECTOR, "#about th")), "no empty header"
    text = browser.find_element(By.ID, "about").text
    assert "in 8 min 43 s." in text and "KL warm-up 10 epochs" in text and "compiled by torch.compile" in text
    assert 'VAE.from_pretrained("checkpoints/vae-mnist")' in text and "path/or/user-repo" not in text


@pytest.fixture(scope="module")
def steered_url(folders):  # noqa: F811 (the fixture imported above)
    """The studio for a copy of the committed model with its steering statistics (see tests/test_steering_app.py)."""
    with launched(app.build_demo(load_assets(folders[STEERED], STEERED))) as base:
        yield base + "/"


def choose(driver, elem_id: str, option: str) -> None:
    """Pick `option` in the dropdown #elem_id, as a user does: open its list, click the item."""
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
    waiting(driver, TIMEOUT).until(
        lambda d: next((li for li in d.find_elements(By.CSS_SELECTOR, "li.item") if li.text.strip() == option), 0)
    ).click()


def test_class_samples_and_sliders(steered_url, browser, tmp_path):
    """Samples of class 5 (screenshot), then the Sliders tab with its first slider moved (screenshot), saved under
    $VAE_SCREENSHOTS when it is set."""
    shots = Path(os.environ.get("VAE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    browser.get(steered_url)
    first = loaded_image(browser, "#sample-grid").get_attribute("src")
    choose(browser, "sample-class", "5")
    browser.find_element(By.ID, "sample-button").click()
    loaded_image(browser, "#sample-grid", not_src=first)
    assert no_error_shown(browser)
    browser.save_screenshot(str(shots / "samples-class-5.png"))

    open_tab(browser, "Sliders")
    start = loaded_image(browser, "#slide-digit").get_attribute("src")  # the start point, shown when the tab opens
    slider = browser.find_element(By.CSS_SELECTOR, "#slide-1 input[type=range]")
    drawn = browser.execute_script("return window.studioDecoder.drawn")
    slider.send_keys(*[Keys.ARROW_RIGHT] * 15)  # +1.5 σ along the first direction, one input event a step
    waiting(browser, TIMEOUT).until(lambda d: d.execute_script("return window.studioDecoder.drawn") > drawn)
    assert browser.find_element(By.ID, "slide-canvas").is_displayed(), "drawn by the page (tests/test_page_decoder.py)"
    value = browser.find_element(By.CSS_SELECTOR, "#slide-1 input[type=number]").get_attribute("value")
    assert float(value) == pytest.approx(1.5)
    assert no_error_shown(browser)
    browser.save_screenshot(str(shots / "sliders.png"))
    browser.find_element(By.ID, "slide-reset").click()
    waiting(browser, TIMEOUT).until(
        lambda d: float(d.find_element(By.CSS_SELECTOR, "#slide-1 input[type=number]").get_attribute("value")) == 0
    )
    assert loaded_image(browser, "#slide-digit").get_attribute("src") == start, "reset: back to the start point"


@pytest.fixture(scope="module")
def map_url(tmp_path_factory):
    """The studio for copies of the committed MNIST model and the 2-D one, in a folder whose path has spaces."""
    root = tmp_path_factory.mktemp("browser maps") / "my models"
    copies = {
        name: shutil.copytree(app.CHECKPOINTS / name, root / name, ignore=shutil.ignore_patterns(".*"))
        for name in ("vae-mnist", "vae-mnist-2d")
    }
    default = load_assets(copies["vae-mnist"])
    with launched(app.build_demo(default, {"vae-mnist-2d": str(copies["vae-mnist-2d"])})) as base:
        yield base + "/"


def pointer_on_picture(driver, selector: str, px: float, py: float) -> ActionChains:
    """The pointer moved over the <img> under `selector` to where pixel (px, py) of the picture itself is shown (it
    may be scaled)."""
    img = loaded_image(driver, selector)
    width, height, natural = (
        img.size["width"],
        img.size["height"],
        driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img),
    )
    scale = min(width / natural[0], height / natural[1], 1)  # as Gradio's own click handler computes it
    left, top = (width - natural[0] * scale) / 2, (height - natural[1] * scale) / 2
    dx, dy = left + px * scale - width / 2, top + py * scale - height / 2  # Selenium: offsets from the centre
    return ActionChains(driver).move_to_element_with_offset(img, round(dx), round(dy))


def click_picture(driver, selector: str, px: float, py: float) -> None:
    """Click the <img> under `selector` where pixel (px, py) of the picture itself is shown."""
    pointer_on_picture(driver, selector, px, py).click().perform()


def caption_says(driver, text: str) -> str:
    return waiting(driver, TIMEOUT).until(
        lambda d: text in (caption := d.find_element(By.ID, "pick-caption").text) and caption, f"no '{text}'"
    )


def test_clicks_on_the_map_and_on_the_latent_plane(map_url, browser, tmp_path):
    """Click the cluster of 3s on the t-SNE map (screenshot), then the 7s: a walk from the 3 (screenshot); then the
    2-D model, whose map is the latent plane: a click decodes that point (screenshot), and its Sliders tab has two
    sliders. Screenshots under $VAE_SCREENSHOTS when it is set."""
    shots = Path(os.environ.get("VAE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    mnist = load_assets(app.CHECKPOINTS / "vae-mnist")
    coords, labels = mnist.tsne["coords"], mnist.tsne["labels"]
    clear = neighbour_agreement(coords, labels) == 1.0
    browser.get(map_url)
    open_tab(browser, "t-SNE")
    for digit in (3, 7):
        points = coords[clear & (labels == digit)]
        point = points[(points - points.median(0).values).norm(dim=1).argmin()].tolist()
        click_picture(browser, "#click-map", *mnist.click_map.to_pixel(*point))
        caption_says(browser, f"is a {digit}")
        loaded_image(browser, "#pick-decoded")
        assert no_error_shown(browser)
        browser.save_screenshot(str(shots / f"map-click-{digit}.png"))
    assert "walk" in caption_says(browser, "is a 7")
    assert loaded_image(browser, "#pick-walk").size["width"] > 200

    choose(browser, "checkpoint", "vae-mnist-2d")
    waiting(browser, TIMEOUT).until(lambda d: "latent plane" in d.find_element(By.ID, "click-map").text)
    tabs = lambda d: [t.text for t in d.find_elements(By.CSS_SELECTOR, "[role=tab]")]  # noqa: E731
    waiting(browser, TIMEOUT).until(lambda d: "Latent plane" in tabs(d), "the tab is named for its map")
    assert "t-SNE" not in tabs(browser)
    click_picture(browser, "#click-map", 15.5 * 28, 4.5 * 28)  # the middle of row 4, column 15
    caption = caption_says(browser, "decoded exactly there")
    plane = load_assets(app.CHECKPOINTS / "vae-mnist-2d").click_map
    shown_z = [float(v) for v in re.search(r"z = \((\S+), (\S+)\)", caption).groups()]
    assert shown_z == pytest.approx(plane.to_map(15.5 * 28, 4.5 * 28), abs=0.03), "within a pixel or two"
    loaded_image(browser, "#pick-decoded")
    assert no_error_shown(browser)
    browser.save_screenshot(str(shots / "latent-plane-click.png"))
    open_tab(browser, "Sliders")
    shown = [browser.find_elements(By.ID, f"slide-{k}") for k in range(1, 9)]
    assert [bool(s) and s[0].is_displayed() for s in shown] == [True, True] + [False] * 6, "one per direction"


def hover_picture(driver, selector: str, px: float, py: float) -> None:
    """Move the pointer over the <img> under `selector` to pixel (px, py) of the picture."""
    pointer_on_picture(driver, selector, px, py).perform()


def hovered(driver, not_index: str | None = None) -> dict:
    """The thumbnail shown beside the pointer (a new digit's, if not_index is given): the digit's index, the picture's
    pixel under the pointer, the caption and the canvas's pixels (H, W) in grey levels."""

    def shown(d):
        thumb = d.find_element(By.ID, "map-thumb")
        index = thumb.get_attribute("data-index")
        return thumb.is_displayed() and index is not None and index != not_index and thumb

    thumb = waiting(driver, TIMEOUT).until(shown, "no thumbnail beside the pointer")
    data = driver.execute_script(
        "return arguments[0].toDataURL('image/png')", thumb.find_element(By.TAG_NAME, "canvas")
    )
    with Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))) as png:
        pixels = np.asarray(png.convert("RGBA"))
    assert (pixels[..., 3] == 255).all() and (pixels[..., 0] == pixels[..., 2]).all(), "an opaque grey digit"
    return {
        "index": int(thumb.get_attribute("data-index")),
        "pixel": [int(v) for v in thumb.get_attribute("data-pixel").split(",")],
        "caption": thumb.text,
        "pixels": pixels[..., 0],
    }


def hover_data(driver) -> str:
    """The map tab's hover data (map_clicks.map_hover), as the page holds it for web/map.js."""
    return driver.execute_script("return document.querySelector('#map-hover textarea, #map-hover input').value")


def no_thumbnail(driver) -> bool:
    return not driver.find_element(By.ID, "map-thumb").is_displayed()


def test_the_map_is_shown_once_and_hovering_shows_each_test_digit(map_url, browser):
    """Issue 29: one map on the tab (no cached figure, no second scatter); the pointer over a dot of the 3s shows that
    test digit, its 28x28 pixels upscaled 4x without smoothing, exactly the nearest test digit that /pick shows for a
    click at that pixel; over the 7s another digit; over the legend nothing. Then the 2-D model: over its latent
    plane, the test digit whose latent is nearest the point there, as /pick finds it for that model."""
    from gradio_client import Client

    client = Client(map_url, verbose=False)

    def check(thumbnail: dict, assets, checkpoint: str) -> None:
        digit = assets.tsne["images"][thumbnail["index"], 0].numpy()  # (28, 28) uint8
        assert np.array_equal(thumbnail["pixels"], np.kron(digit, np.ones((4, 4), np.uint8))), "the digit, 4x"
        point = list(assets.click_map.to_map(*thumbnail["pixel"]))
        real = client.predict(point, None, checkpoint, api_name="/pick")[1]
        assert np.array_equal(np.asarray(Image.open(real))[::8, ::8], digit), "the digit a click there shows"
        label = assets.class_names[int(assets.tsne["labels"][thumbnail["index"]])]
        name = f"{'an' if label == '8' else 'a'} {label}"  # on the plane, beside the point decoded (web/decoder.js)
        assert thumbnail["caption"] in (name, f"{thumbnail['caption'].split(' · ')[0]} · nearest test digit: {name}")

    mnist = load_assets(app.CHECKPOINTS / "vae-mnist")
    coords, labels = mnist.tsne["coords"], mnist.tsne["labels"]
    clear = neighbour_agreement(coords, labels) == 1.0
    browser.get(map_url)
    open_tab(browser, "t-SNE")
    loaded_image(browser, "#click-map")
    tab = browser.find_element(By.ID, "map-tab")
    assert not browser.find_elements(By.ID, "tsne-figure")
    assert [i.get_attribute("src") for i in tab.find_elements(By.TAG_NAME, "img") if i.is_displayed()] == [
        loaded_image(browser, "#click-map").get_attribute("src")
    ], "one picture on the tab: the clickable map"
    assert not [c for c in tab.find_elements(By.CSS_SELECTOR, "canvas, .vega-embed") if c.is_displayed()], "no plot"
    assert "Hover" in browser.find_element(By.ID, "pick-caption").text

    seen = []
    for digit in (3, 7):
        points = coords[clear & (labels == digit)]
        point = points[(points - points.median(0).values).norm(dim=1).argmin()].tolist()
        target = mnist.click_map.to_pixel(*point)
        hover_picture(browser, "#click-map", *target)
        thumbnail = hovered(browser, seen[-1]["index"] if seen else None)
        assert np.hypot(*np.subtract(thumbnail["pixel"], target)) <= 2, "the pixel under the pointer"
        check(thumbnail, mnist, "vae-mnist")
        assert thumbnail["caption"] == f"a {digit}"
        seen.append(thumbnail)
    assert not np.array_equal(seen[0]["pixels"], seen[1]["pixels"])
    hover_picture(browser, "#click-map", 560 + 60, 100)  # the legend: no digit there
    waiting(browser, TIMEOUT).until(no_thumbnail, "a thumbnail over the legend")

    before = hover_data(browser)
    choose(browser, "checkpoint", "vae-mnist-2d")
    waiting(browser, TIMEOUT).until(lambda d: "latent plane" in d.find_element(By.ID, "click-map").text)
    waiting(browser, TIMEOUT).until(lambda d: hover_data(d) not in ("", before), "the old model's hover data")
    plane = load_assets(app.CHECKPOINTS / "vae-mnist-2d")
    pixel = (15.5 * 28, 4.5 * 28)  # the middle of row 4, column 15
    hover_picture(browser, "#click-map", *pixel)
    thumbnail = hovered(browser)
    assert np.hypot(*np.subtract(thumbnail["pixel"], pixel)) <= 2, "the pixel under the pointer"
    on_the_map = torch.tensor([mnist.click_map.to_map(*thumbnail["pixel"])])  # the t-SNE map's digit there: not it
    assert thumbnail["index"] != int(torch.cdist(on_the_map, coords)[0].argmin()), "the 2-D model's own hover data"
    check(thumbnail, plane, "vae-mnist-2d")
    assert no_error_shown(browser)


@pytest.fixture(scope="module")
def train_url(tmp_path_factory, mnist_dir):
    """The studio whose Train tab reads the committed MNIST slice from a folder whose path has spaces."""
    with training_studio(mnist_dir, tmp_path_factory) as base:
        yield base + "/"


def test_train_in_the_page_then_sample_the_new_model(train_url, browser, tmp_path):
    """Train tab: a 3-epoch run whose status, progress bar, loss curve and sample grid update as it goes (screenshot),
    ending with the new model selected in the checkpoint dropdown; then the Samples tab samples it."""
    shots = Path(os.environ.get("VAE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    browser.get(train_url)
    first = loaded_image(browser, "#sample-grid").get_attribute("src")  # the page is up, with the default's samples
    open_tab(browser, "Train")
    epochs = browser.find_element(By.CSS_SELECTOR, "#train-epochs input[type=number]")
    epochs.send_keys(Keys.CONTROL, "a")
    epochs.send_keys("3", Keys.ENTER)
    # Every text the status line and every picture the sample grid shows during the run, as the page shows them.
    browser.execute_script(
        """
        window.seen = {status: [], samples: []};
        const record = () => {
            const text = document.querySelector('#train-status').innerText;
            if (window.seen.status.at(-1) !== text) window.seen.status.push(text);
            const img = document.querySelector('#train-samples img');
            if (img && window.seen.samples.at(-1) !== img.src) window.seen.samples.push(img.src);
        };
        new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                             attributes: true});
        """
    )
    browser.find_element(By.ID, "train-button").click()
    status = lambda d: d.find_element(By.ID, "train-status").text  # noqa: E731
    waiting(browser, 180).until(lambda d: "is ready" in status(d), "the run did not end")
    seen = browser.execute_script("return window.seen")
    for epoch in (1, 2, 3):
        assert any(s.startswith(f"Epoch {epoch}: train −ELBO") for s in seen["status"]), seen["status"]
    assert len(seen["samples"]) >= 3, "a new sample grid each epoch"
    assert browser.find_elements(By.CSS_SELECTOR, "#train-curve canvas, #train-curve svg"), "the loss curve"
    legend = browser.find_element(By.CSS_SELECTOR, "#train-curve .role-legend").text.split()
    assert legend == ["train", "validation"], f"the legend names the series, no title (issue 29): {legend}"
    points = browser.find_elements(By.CSS_SELECTOR, "#train-curve .role-mark path, #train-curve .role-mark circle")
    assert len(points) >= 6, f"a train and a validation point per epoch: {len(points)} marks"
    assert "done · 100%" in browser.find_element(By.ID, "train-progress").text
    assert no_error_shown(browser)
    browser.save_screenshot(str(shots / "train-tab.png"))
    name = re.search(r"(mnist-z\d+-\d{4}-[a-z2-7]{8})", status(browser)).group(1)
    assert browser.find_element(By.CSS_SELECTOR, "#checkpoint input").get_attribute("value") == name

    open_tab(browser, "Samples")  # already the new model's samples (issue 29), and a new seed samples it again
    shown = loaded_image(browser, "#sample-grid", not_src=first).get_attribute("src")
    seed = browser.find_element(By.CSS_SELECTOR, "#sample-seed input")
    seed.clear()
    seed.send_keys("5")
    browser.find_element(By.ID, "sample-button").click()
    loaded_image(browser, "#sample-grid", not_src=shown)
    assert no_error_shown(browser)
    assert name in browser.find_element(By.TAG_NAME, "body").text, "the status line names the new model"

    # Leaving the page (Gradio's unload event) deletes the visitor's models.
    kept = list(Path(tempfile.gettempdir()).glob(f"vae-studio-visitors-*/*/{name}"))
    assert len(kept) == 1 and (kept[0] / "model.safetensors").is_file()
    browser.get("about:blank")
    waiting(browser, 120).until(lambda d: not kept[0].exists(), "the model outlived the visit")


def test_a_refused_train_press_says_why_like_every_other_error(full_mnist_dir, browser):
    """Issue 27: a press of Train that the server refuses before it queues (here its training queue, of one, is taken by
    another visitor's run) shows the reason as the app's other errors show (a toast), not as a validation error
    pinned over the Dataset choice; a gradio_client caller gets the same reason as a ValidationError."""
    limits = live.Limits(data_dir=full_mnist_dir, max_epochs=20, max_seconds=60, max_train_jobs=1)
    with launched(app.build_demo(load_assets(app.DEFAULT_CHECKPOINT), limits=limits)) as base:
        other = Client(base, verbose=False, download_files=False)
        going = other.submit(**(SETTINGS | {"epochs": 20, "train_images": 59_000}), api_name="/train")
        try:
            browser.get(base + "/")
            open_tab(browser, "Train")
            browser.find_element(By.ID, "train-button").click()
            reason = "The server's training queue is full: 1 run is going or waiting."
            toast = lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".toast-body") if reason in e.text]  # noqa: E731
            assert waiting(browser, TIMEOUT).until(toast), "the reason, in a toast"
            assert not going.done(), "the other visitor's run was going all along"
            pinned = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".validation-error") if e.text]
            assert not pinned, f"not pinned to an input: {pinned}"
            assert "Starting the trainer" not in browser.find_element(By.ID, "train-status").text
            with pytest.raises(ValidationError, match=reason):
                Client(base, verbose=False, download_files=False).predict(**SETTINGS, api_name="/train")
        finally:
            going.cancel()
            wait_for_no_trainer()


@pytest.fixture(scope="module")
def two_models_url():
    fashion = {"vae-fashion-mnist": str(app.CHECKPOINTS / "vae-fashion-mnist")}
    with launched(app.build_demo(load_assets(app.DEFAULT_CHECKPOINT), fashion)) as base:
        yield base + "/"


def test_a_new_checkpoint_leaves_no_picture_of_the_old_one(two_models_url, browser):
    """Issue 29: switching the model refreshes the samples (the API's images for the new model, pixel for pixel) and
    empties the walk, the slid digit and your digit's results, which showed the old model's work."""
    import io

    import httpx
    import numpy as np
    from gradio_client import Client
    from PIL import Image

    url = two_models_url
    browser.get(url)
    before = loaded_image(browser, "#sample-grid").get_attribute("src")
    open_tab(browser, "Latent walk")
    browser.find_element(By.ID, "walk-button").click()
    loaded_image(browser, "#walk-strip")
    open_tab(browser, "Sliders")
    old_digit = loaded_image(browser, "#slide-digit").get_attribute("src")
    choose(browser, "checkpoint", "vae-fashion-mnist")  # while the Sliders tab is open: its digit goes at once
    waiting(browser, TIMEOUT).until(
        lambda d: (
            "vae-fashion-mnist" in d.find_element(By.ID, "checkpoint-status").text
            and all(i.get_attribute("src") != old_digit for i in d.find_elements(By.CSS_SELECTOR, "#slide-digit img"))
        ),
        "the Sliders tab still shows the old model's digit",
    )

    open_tab(browser, "Samples")
    shown = loaded_image(browser, "#sample-grid", not_src=before).get_attribute("src")
    expected, _ = Client(url, verbose=False).predict(64, 0, 1.0, "vae-fashion-mnist", api_name="/sample")
    page = Image.open(io.BytesIO(httpx.get(shown, timeout=30).content))
    assert np.array_equal(np.asarray(page), np.asarray(Image.open(expected))), "the new model's samples"
    open_tab(browser, "Latent walk")
    waiting(browser, TIMEOUT).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, "#walk-strip img"), "the walk still shows the old model's"
    )
    assert no_error_shown(browser)
