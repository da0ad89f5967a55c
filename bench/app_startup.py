"""How fast the app is ready, and what /sample, /walk and /pick cost on the server.

python -m bench.app_startup [--runs 3] [--calls 30] [--checkpoint checkpoints/vae-mnist]

1. Ready: `python app.py` started as a subprocess → its first successful /sample response (64 images),
   the median of --runs fresh starts. Target on a 2-core machine: 8 s.
2. Server-side time of /sample (64 images) and /walk (16 steps), the median of --calls calls with
   different seeds (so every call computes and writes its images). It is the time between the queue's
   "process_starts" and "process_completed" messages, read from the same event stream the page uses:
   checking the inputs, the model, encoding PNGs and the GIF, writing them, Gradio's post-processing.
   Gradio's own "duration" (the handler alone) and the client's round trip are shown beside it.
   Target: 50 ms each.
3. The same for /pick, a click on the t-SNE map that walks from the click before (the map marked, two digits and
   a 10-step walk): what a click on the page costs. Target: 50 ms.

Prints a table and writes bench/results/app_startup.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGETS = {"ready_s": 8.0, "sample_64_ms": 50.0, "walk_16_ms": 50.0, "pick_walk_ms": 50.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def launched(demo) -> Iterator[str]:
    """A built demo served in this process on a free local port, as `python app.py` serves it; yields its URL (no
    trailing slash). The tests and bench.screenshots serve the app this way."""
    import app

    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_OPTIONS)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


def start_app(checkpoint: str | None, port: int, log, program: list[str] | None = None) -> subprocess.Popen:
    """`python app.py --port …` from the repository root; `program` replaces `app.py` (e.g. `["-c", code]`)."""
    command = [sys.executable, *(program or [str(ROOT / "app.py")]), "--port", str(port)]
    command += ["--checkpoint", checkpoint] if checkpoint else []
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


def fn_indices(base: str) -> dict[str, int]:
    """api_name → the event's index, from the app's config (what the page itself uses)."""
    config = httpx.get(f"{base}/config", timeout=30).json()
    return {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}


def call(http: httpx.Client, base: str, fn_index: int, data: list) -> dict:
    """One queued call over the page's protocol; times measured from its event stream."""
    session = uuid.uuid4().hex
    start = time.perf_counter()
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    http.post(f"{base}/gradio_api/queue/join", json=body).raise_for_status()
    began = None
    with http.stream("GET", f"{base}/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("msg") == "process_starts":
                began = time.perf_counter()
            elif message.get("msg") == "process_completed":
                end = time.perf_counter()
                if not message.get("success"):
                    raise RuntimeError(f"call failed: {message.get('output')}")
                return {
                    "server_ms": (end - (began or start)) * 1000,
                    "handler_ms": message["output"]["duration"] * 1000,
                    "round_trip_ms": (end - start) * 1000,
                }
    raise RuntimeError("the event stream ended without a result")


def wait_ready(process: subprocess.Popen, base: str, started: float, timeout: float = 120) -> float:
    """Seconds from `started` to the first successful /sample of 64 images."""
    with httpx.Client(timeout=30) as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode}")
            try:
                index = fn_indices(base)["sample"]
                call(http, base, index, [64, 0, 1.0, None])
                return time.perf_counter() - started
            except (httpx.HTTPError, KeyError, ValueError):
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"no answer from {base} after {timeout} s") from None
                time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="fresh starts to time")
    parser.add_argument("--calls", type=int, default=30, help="timed calls of each endpoint")
    parser.add_argument("--checkpoint", help="passed to app.py (default: its own default)")
    args = parser.parse_args()

    ready, log_path = [], Path(tempfile.mkdtemp()) / "app.log"
    timings: dict[str, list[dict]] = {"sample_64": [], "walk_16": [], "pick_walk": []}
    for run in range(args.runs):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with open(log_path, "w") as log:
            started = time.perf_counter()
            process = start_app(args.checkpoint, port, log)
        try:
            ready.append(wait_ready(process, base, started))
            print(f"start {run + 1}: ready in {ready[-1]:.2f} s", flush=True)
            if run < args.runs - 1:
                continue
            index = fn_indices(base)
            with httpx.Client(timeout=60) as http:
                for i in range(3):  # warm-up: first calls load lazily imported modules
                    call(http, base, index["sample"], [64, 10_000 + i, 1.0, None])
                    call(http, base, index["walk"], ["3", "7", 16, "linear", "mean", 10_000 + i, None])
                for i in range(args.calls):
                    timings["sample_64"].append(call(http, base, index["sample"], [64, i, 1.0, None]))
                    start = "sample" if i % 2 else "mean"  # half from class means, half from real examples
                    mode = "spherical" if i % 4 >= 2 else "linear"
                    timings["walk_16"].append(call(http, base, index["walk"], ["3", "7", 16, mode, start, i, None]))
                    clicks = [[(i % 10) - 5.0, (i % 7) - 3.0], [5.0 - (i % 9), 0.5 * i % 4], None]  # inside any map
                    timings["pick_walk"].append(call(http, base, index["pick"], clicks))
        finally:
            stop(process)

    def median(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    results = {
        "ready_s": statistics.median(ready),
        "ready_runs_s": ready,
        "sample_64_ms": median(timings["sample_64"], "server_ms"),
        "sample_64_handler_ms": median(timings["sample_64"], "handler_ms"),
        "sample_64_round_trip_ms": median(timings["sample_64"], "round_trip_ms"),
        "walk_16_ms": median(timings["walk_16"], "server_ms"),
        "walk_16_handler_ms": median(timings["walk_16"], "handler_ms"),
        "walk_16_round_trip_ms": median(timings["walk_16"], "round_trip_ms"),
        "pick_walk_ms": median(timings["pick_walk"], "server_ms"),
        "pick_walk_handler_ms": median(timings["pick_walk"], "handler_ms"),
        "pick_walk_round_trip_ms": median(timings["pick_walk"], "round_trip_ms"),
        "calls": args.calls,
        "targets": TARGETS,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "python": platform.python_version()},
    }
    print()
    print(f"{'measure':<38}{'median':>10}{'target':>10}")
    print(f"{'python app.py → first /sample (s)':<38}{results['ready_s']:>10.2f}{TARGETS['ready_s']:>10.1f}")
    for name, label in [("sample_64", "/sample, 64 images"), ("walk_16", "/walk, 16 steps"), ("pick_walk", "/pick")]:
        print(f"{label + ', server (ms)':<38}{results[name + '_ms']:>10.1f}{TARGETS[name + '_ms']:>10.1f}")
        print(f"{'  of which the handler (ms)':<38}{results[name + '_handler_ms']:>10.1f}")
        print(f"{'  client round trip (ms)':<38}{results[name + '_round_trip_ms']:>10.1f}")
    print(f"\n{os.cpu_count()} CPUs, load average {results['machine']['load_avg_1m']:.2f} at the end")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "app_startup.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'app_startup.json'}")


if __name__ == "__main__":
    main()
