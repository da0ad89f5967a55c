"""Screenshots of every tab as a newcomer sees it, at a laptop's 1280×900 and a phone's 390×844, each tab after its
main button, and a check of each picture on screen: whole, inside the window, nothing (a label, a toolbar) over it.

python -m bench.screenshots [--checkpoint checkpoints/vae-mnist] [--out docs/screenshots] [--data-dir ../shared/data]

Needs Debian's chromium and chromium-driver (as the browser tests). Writes OUT/{laptop,phone}-{tab}.png and
OUT/screenshots.json (each picture's box and what covers it), and prints the problems found. With --data-dir (MNIST
there), the Train tab is shot after a short run (3 epochs of 5,000 images, ~30 s on a 2-core CPU) at the laptop's
size, as OUT/laptop-train.png.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from bench.app_startup import launched

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
FLAGS += ["--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]
SIZES = {"laptop": (1280, 900), "phone": (390, 844)}
TIMEOUT = 60  # seconds for anything to appear on a busy machine

# Each tab: its main button (None: its pictures come when it opens) and the pictures it shows then.
TABS = {
    "Samples": ("sample-button", ["sample-grid"]),
    "Latent walk": ("walk-button", ["walk-strip", "walk-gif"]),
    "Sliders": (None, ["slide-digit"]),
    "t-SNE": ("click-map", ["click-map", "pick-real", "pick-decoded", "pick-walk"]),
    "Your digit": ("encode-drawing", ["digit-input", "digit-reconstruction", "digit-walk"]),
    "Train": (None, []),
    "About": (None, []),
}

# What lies over a picture, in the page's coordinates: the element at each of its corners and its middle (inset by
# 3 px), compared with the picture itself. A label or a toolbar drawn over the image is found this way.
COVERED = """
const img = arguments[0], r = img.getBoundingClientRect(), style = getComputedStyle(img);
const [nw, nh] = [img.naturalWidth, img.naturalHeight];
let [left, top, width, height] = [r.left, r.top, r.width, r.height];
if (style.objectFit === "contain" || style.objectFit === "scale-down") {  // the picture as drawn inside its box
  const scale = Math.min(r.width / nw, r.height / nh, style.objectFit === "scale-down" ? 1 : Infinity);
  [width, height] = [nw * scale, nh * scale];
  [left, top] = [r.left + (r.width - width) / 2, r.top + (r.height - height) / 2];
}
const points = {"top left": [left + 3, top + 3], "top right": [left + width - 3, top + 3],
  "bottom left": [left + 3, top + height - 3], "bottom right": [left + width - 3, top + height - 3],
  "middle": [left + width / 2, top + height / 2]};
const covers = {};
for (const [name, [x, y]] of Object.entries(points)) {
  const over = document.elementFromPoint(x, y);
  if (over && over !== img && !img.contains(over)) covers[name] = over.tagName.toLowerCase() + (typeof
    over.className === "string" && over.className.trim() ? "." + over.className.trim().split(/\\s+/).join(".") : "");
}
// a label or toolbar that lets clicks through (pointer-events: none) is not found by elementFromPoint: by its box
const block = img.closest(".block");
for (const over of block ? block.querySelectorAll("[data-testid=block-label], .icon-button-wrapper") : []) {
  const o = over.getBoundingClientRect();
  const [dx, dy] = [Math.min(o.right, left + width) - Math.max(o.left, left), Math.min(o.bottom, top + height) -
    Math.max(o.top, top)];
  if (o.width > 0 && o.height > 0 && dx > 1 && dy > 1)
    covers[over.matches("label") ? "label" : "toolbar"] = `${dx.toFixed(0)}x${dy.toFixed(0)} px of it`;
}
return {box: [left, top, width, height], natural: [nw, nh], fit: style.objectFit,
  window: [window.innerWidth, window.innerHeight], covers: covers};
"""


# Gradio shows a status tracker (a timer, then "Error" if the handler failed) on an event's outputs while it
# runs. An observer notes that one appeared, so an event that has not started yet is not taken for done.
WATCH_STATUS = """
window.statusSeen = 0;
window.statusObserver?.disconnect();
window.statusObserver = new MutationObserver(records => {
  for (const r of records) if (r.target.matches('.wrap.full:not(.hide)')) window.statusSeen += 1;
});
window.statusObserver.observe(document.body, {attributes: true, attributeFilter: ['class'], subtree: true});
"""
SETTLED = """return window.statusSeen > 0 && [...document.querySelectorAll('.wrap.full')].every(
  e => e.classList.contains('hide') || e.innerText.includes('Error'))"""


def waiting(driver, timeout: float = TIMEOUT) -> WebDriverWait:
    """A wait that looks every 50 ms: Selenium's default looks every 500 ms, so each wait ended up to half a second
    after what it waited for had happened (11 s of the screenshot check's 36 s were such sleeps)."""
    return WebDriverWait(driver, timeout, poll_frequency=0.05)


def ran(driver, start, what: str = "the event") -> None:
    """start() (a click) and wait until the event it starts has run (its outputs' status trackers came and went)."""
    driver.execute_script(WATCH_STATUS)
    start()
    waiting(driver).until(lambda d: d.execute_script(SETTLED), f"{what}: not done")


def chromium(width: int, height: int, profile: str) -> webdriver.Chrome:
    """Headless Chromium whose page is `width`×`height` CSS pixels (a phone's as a phone shows it: headless windows
    are at least 500 wide, so the size is set as the developer tools' device mode sets it)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--window-size={max(width, 500)},{height}", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver


@contextlib.contextmanager
def served(checkpoint: str | None, data_dir: Path | None = None) -> Iterator[str]:
    """The studio on a free local port, as `python app.py` serves it (its Train tab reading `data_dir`); its URL."""
    import app
    from vae import live
    from vae.assets import load_assets

    limits = live.Limits.from_env(data_dir, default_data_dir=app.DATA_DIR)
    with launched(app.build_demo(load_assets(checkpoint or app.DEFAULT_CHECKPOINT), limits=limits)) as url:
        yield url + "/"


def open_tab(driver, name: str) -> None:
    """Click the tab `name`, in the tab bar or, where it does not fit (a phone), in its "More tabs" menu."""
    for tab in driver.find_elements(By.CSS_SELECTOR, "[role=tab]"):
        if tab.text.strip() == name and tab.is_displayed():
            tab.click()
            waiting(driver).until(lambda d, t=tab: t.get_attribute("aria-selected") == "true")
            return
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='More tabs']").click()
    item = waiting(driver).until(
        lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, ".overflow-dropdown button") if b.text == name), 0),
        f"no tab {name}",
    )
    item.click()
    time.sleep(0.5)


def loaded(driver, selector: str, not_src: str | None = None):
    """The <img> under `selector` once it has loaded a picture (a new one, if not_src is given)."""

    def ready(d):
        for img in d.find_elements(By.CSS_SELECTOR, f"{selector} img"):
            if img.get_attribute("src") != not_src and d.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", img
            ):
                return img
        return False

    return waiting(driver).until(ready, f"no picture loaded in {selector}")


def draw_a_one(driver) -> None:
    canvas = waiting(driver).until(
        lambda d: next((c for c in d.find_elements(By.CSS_SELECTOR, "#sketchpad canvas") if c.size["height"] > 100), 0)
    )
    third = canvas.size["height"] // 3
    chain = ActionChains(driver).move_to_element_with_offset(canvas, 0, -third).click_and_hold()
    chain.move_by_offset(0, third).move_by_offset(0, third).release().perform()


def picture_report(driver, elem_id: str) -> dict:
    """Where #elem_id's picture is, and what covers it or cuts it: scrolled into view first, as a user would."""
    img = loaded(driver, f"#{elem_id}")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    report = driver.execute_script(COVERED, img)
    left, top, width, height = report["box"]
    problems = [f"{where}: {what}" for where, what in report["covers"].items()]
    if left < -1 or left + width > report["window"][0] + 1:
        problems.append(f"cut by the window's edge (x {left:.0f} to {left + width:.0f} of {report['window'][0]})")
    natural_ratio = report["natural"][0] / report["natural"][1]
    if abs(width / height - natural_ratio) > 0.02 * natural_ratio:
        problems.append(f"shown {width:.0f}x{height:.0f}, not in its own proportions {report['natural']}")
    if top < -1 or top + height > report["window"][1] + 1:
        problems.append(f"taller than the window ({height:.0f} of {report['window'][1]} px)")
    return report | {"problems": problems}


def moving_slider_report(driver) -> dict:
    """The Sliders' digit as the last visible slider moves, scrolled into view as a user scrolls to reach it: the
    digit must change and stay in the window."""
    slider = [s for s in driver.find_elements(By.CSS_SELECTOR, "[id^=slide-] input[type=range]") if s.is_displayed()][
        -1
    ]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", slider)
    img = loaded(driver, "#slide-digit")
    before = img.get_attribute("src"), driver.execute_script("return window.studioDecoder?.drawn")
    slider.send_keys(*[Keys.ARROW_RIGHT] * 10)
    # A new digit: drawn by the page (web/decoder.js, over the server's picture) or, where it cannot, by the server.
    waiting(driver).until(
        lambda d: (img.get_attribute("src"), d.execute_script("return window.studioDecoder?.drawn")) != before,
        "the digit did not change",
    )
    report = driver.execute_script(COVERED, img)
    left, top, width, height = report["box"]
    inside = -1 <= top and top + height <= report["window"][1] + 1 and -1 <= left
    report["problems"] = [] if inside else [f"out of view while the slider moves (top {top:.0f}, {height:.0f} high)"]
    return report


def set_number(driver, elem_id: str, value: int) -> None:
    field = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value), Keys.TAB)


def train_a_little(driver) -> None:
    """The Train tab's run of 3 epochs on 5,000 images, to its end: the curve, samples and walk it leaves on screen."""
    set_number(driver, "train-epochs", 3)
    set_number(driver, "train-images", 5000)
    driver.find_element(By.ID, "train-button").click()
    waiting(driver, 300).until(
        lambda d: "is ready" in d.find_element(By.ID, "train-status").text, "the run never finished"
    )
    name = driver.find_element(By.CSS_SELECTOR, "#train-model input, #train-model textarea").get_attribute("value")
    waiting(driver).until(  # the page's header names the model the dropdown now shows
        lambda d: name in d.find_element(By.ID, "checkpoint-status").text, f"the header never named {name}"
    )


def visit(driver, url: str, size: str, out: Path, train: bool = False) -> dict[str, dict]:
    """Every tab at one window size: its main button pressed, its pictures checked, a screenshot of it (the Train
    tab's after a short run when `train`)."""
    driver.get(url)
    loaded(driver, "#sample-grid")
    reports = {}
    for tab, (button, pictures) in TABS.items():
        open_tab(driver, tab)
        if tab == "Your digit":
            draw_a_one(driver)
        if tab == "Train" and train:
            train_a_little(driver)
        if button:
            before = {p: _src(driver, p) for p in pictures}
            if button == "click-map":  # the tab's action is a click on the map: twice, for a walk between the two
                for dx, shows in ((-0.2, "pick-real"), (0.2, "pick-walk")):
                    img = loaded(driver, f"#{button}")
                    ActionChains(driver).move_to_element_with_offset(img, dx * img.size["width"], 0).click().perform()
                    loaded(driver, f"#{shows}")
            else:  # a new picture, or the same one again (the same seed gives the same samples): the event ran
                ran(driver, driver.find_element(By.ID, button).click, f"{tab}: #{button}")
            for picture in pictures:
                if picture != button and before[picture] is None:
                    loaded(driver, f"#{picture}")
        for picture in pictures:
            reports[picture] = picture_report(driver, picture)
        if tab == "Sliders":
            reports["slide-digit while the last slider moves"] = moving_slider_report(driver)
        full_page_png(driver, out / f"{size}-{tab.lower().replace(' ', '-')}.png")
    return reports


def full_page_png(driver, path: Path) -> None:
    """The whole page, not only the window (a phone's page is several screens long), from its top."""
    driver.execute_script("window.scrollTo(0, 0)")
    width, height = driver.execute_script(
        "return [document.documentElement.clientWidth, document.documentElement.scrollHeight]"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    with Image.open(io.BytesIO(base64.b64decode(shot["data"]))) as page:  # 256 colours: a third of the bytes in git
        page.convert("RGB").quantize(256).save(path, optimize=True)


def _src(driver, elem_id: str) -> str | None:
    imgs = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    return imgs[0].get_attribute("src") if imgs else None


def shoot(url: str, out: Path, train: bool = False) -> dict[str, dict[str, dict]]:
    """Screenshots of every tab at every size in `out` (the Train tab's after a run at the laptop's size when
    `train`); each picture's report, by size."""
    out.mkdir(parents=True, exist_ok=True)
    reports = {}
    for size, (width, height) in SIZES.items():
        with tempfile.TemporaryDirectory() as profile:
            driver = chromium(width, height, profile)
            try:
                reports[size] = visit(driver, url, size, out, train=train and size == "laptop")
            finally:
                driver.quit()
    return reports


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="the model to show (default: the app's default)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    parser.add_argument("--data-dir", type=Path, help="MNIST for a short run in the Train tab before its screenshot")
    args = parser.parse_args(argv)
    with served(args.checkpoint, args.data_dir) as url:
        reports = shoot(url, args.out, train=args.data_dir is not None)
    (args.out / "screenshots.json").write_text(json.dumps(reports, indent=1) + "\n")
    for size, pictures in reports.items():
        for picture, report in pictures.items():
            print(f"{size:7s} #{picture:14s} {'; '.join(report['problems']) or 'whole and uncovered'}")
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
