"""The Sliders' digit decoded in the page (web/decoder.js) against a round trip to the server for each move.

python -m bench.page_decoder [--frames 240] [--calls 60]

Serves the studio (the committed default model), opens its Sliders tab in headless Chromium and measures, in the
same run:
- the page: --frames animation frames in which the first slider moves to a new value (an input event, as a drag
  sends); frames per second at which the digit is redrawn, and the page's own time for one decode + draw;
- the server: --calls calls of /slide with a new offset each, one after another from gradio_client on this machine
  (no network between them: a visitor far away adds 100-300 ms to each), the path a slider took before;
- the requests the page made while its slider moved (0 expected), and the size of the weights it fetched once.

Prints a table and writes bench/results/page_decoder.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from gradio_client import Client
from selenium.webdriver.common.by import By

from bench.common import RESULTS_DIR, machine
from bench.screenshots import chromium, served, waiting

FRAMES_PER_SECOND = """
const [frames, done] = [arguments[0], arguments[arguments.length - 1]];
const range = document.querySelector('#slide-1 input[type=range]');
const studio = window.studioDecoder;
const drawn = studio.drawn;
let frame = 0, start = null;
const step = (now) => {
  if (start === null) start = now;
  if (frame === frames) {
    requestAnimationFrame((end) => done({frames, drawn: studio.drawn - drawn, seconds: (end - start) / 1000}));
    return;
  }
  range.value = String((Math.round(frame * 0.3 * 10) % 61 - 30) / 10);  // -3 ... 3 in steps of 0.1, then again
  range.dispatchEvent(new Event('input', {bubbles: true}));
  frame += 1;
  requestAnimationFrame(step);
};
requestAnimationFrame(step);
"""
DECODE_TIME = """
const canvas = document.createElement('canvas'), times = [];
const name = window.studioDecoder.model, dims = JSON.parse(document.querySelector('#decoder-data textarea').value);
const size = dims.directions[0].length;
for (let i = 0; i < arguments[0]; i++) {
  const z = Array.from({length: size}, (_, d) => Math.sin(i * 7 + d));
  const t0 = performance.now();
  window.studioDecoder.decode(name, z, canvas);
  times.push(performance.now() - t0);
}
return times;
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=240, help="animation frames in which the slider moves")
    parser.add_argument("--calls", type=int, default=60, help="/slide calls, one after another")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "page_decoder.json")
    args = parser.parse_args(argv)
    facts = machine()
    print(f"load average {facts['load_average']} on {facts['cores']} cores")
    with served(None) as url, tempfile.TemporaryDirectory() as profile:
        driver = chromium(1280, 900, profile)
        driver.execute_cdp_cmd("Network.enable", {})
        try:
            driver.get(url)
            waiting(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "[role=tab]"))
            next(t for t in driver.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == "Sliders").click()
            waiting(driver).until(lambda d: d.execute_script("return window.studioDecoder.model"), "no decoder")
            waiting(driver).until(lambda d: d.find_elements(By.ID, "slide-canvas"), "no digit drawn")
            weights = driver.execute_script(
                "return performance.getEntriesByType('resource').filter(e => e.name.endsWith('decoder.safetensors'))"
                ".map(e => e.encodedBodySize)"
            )
            # Room for every entry from here on (the page's load may have filled the default 250), none kept before.
            driver.execute_script("performance.setResourceTimingBufferSize(100000); performance.clearResourceTimings()")
            page = driver.execute_async_script(FRAMES_PER_SECOND, args.frames)
            requests = driver.execute_script("return performance.getEntriesByType('resource').length")
            decode_ms = driver.execute_script(DECODE_TIME, 200)
        finally:
            driver.quit()
        client = Client(url, verbose=False)
        client.predict("mean", "3", 0, [0.0], api_name="/slide")  # warm
        seconds = []
        for i in range(args.calls):
            t0 = time.perf_counter()
            client.predict("mean", "3", 0, [((i * 3) % 61 - 30) / 10], api_name="/slide")
            seconds.append(time.perf_counter() - t0)
    server_ms = statistics.median(seconds) * 1000
    page_fps = page["drawn"] / page["seconds"]
    results = {
        "page": {
            "frames": page["frames"],
            "digits_drawn": page["drawn"],
            "seconds": round(page["seconds"], 3),
            "digits_per_second": round(page_fps, 1),
            "decode_and_draw_ms_median": round(statistics.median(decode_ms), 3),
            "requests_while_moving": requests,
            "weights_bytes": weights[0] if weights else None,
        },
        "server": {
            "slide_calls": args.calls,
            "round_trip_ms_median": round(server_ms, 1),
            "digits_per_second": round(1000 / server_ms, 1),
        },
        "page_vs_server_digits_per_second": round(page_fps / (1000 / server_ms), 1),
        "machine": facts,
        "load_average_at_end": machine()["load_average"],
    }
    print(f"{'':34} {'digits/s':>9} {'ms each':>8}")
    print(f"{'page (web/decoder.js)':34} {page_fps:9.1f} {statistics.median(decode_ms):8.2f}")
    print(f"{'server (/slide, one after another)':34} {1000 / server_ms:9.1f} {server_ms:8.1f}")
    print(f"requests while the slider moved: {requests}; weights fetched once: {results['page']['weights_bytes']} B")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
