"""Does a run in the Train tab starve the rest of the app? /sample and /walk with and without a training run.

python -m bench.app_train_load --data-dir ../shared/data [--calls 40] [--epochs 20]

Starts `python app.py` with the Train tab reading MNIST from --data-dir, then measures the server-side time of /sample
(64 images) and /walk (16 steps), as bench/app_startup.py does (queue "process_starts" → "process_completed"), in three
phases on the same server: idle, while a visitor's run trains (784 → 512 → 256 → 16 on all 59,000 training images,
started through /train and stopped through /stop_training once the phase is measured), and idle again. The two idle
phases bracket the machine's noise. The target: the p50 during the run at most 3x the idle p50.

It also reports what a visitor of the Train tab waits for: Train pressed → the first training step (the child process
starting and loading the data), the run's images/s, Stop pressed → training over (the "Writing the model folder"
update), and the export (→ the model in the dropdown).

Prints a table and writes bench/results/app_train_load.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from gradio_client import Client

from bench.app_startup import call, fn_indices, free_port, start_app, stop, wait_ready
from bench.common import write_results

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 3.0
OUTPUTS = ("status", "progress", "curve", "samples", "walk", "model_name", "checkpoint", "download")


def measure(base: str, calls: int, seed: int) -> dict[str, list[float]]:
    """`calls` alternating /sample and /walk calls → their server-side times (ms)."""
    index = fn_indices(base)
    times: dict[str, list[float]] = {"sample_64": [], "walk_16": []}
    with httpx.Client(timeout=120) as http:
        for i in range(calls):
            times["sample_64"].append(call(http, base, index["sample"], [64, seed + i, 1.0, None])["server_ms"])
            walk = ["3", "7", 16, "linear", "sample" if i % 2 else "mean", seed + i, None]
            times["walk_16"].append(call(http, base, index["walk"], walk)["server_ms"])
    return times


class Run:
    """A /train job, every update stamped with the time it arrived."""

    def __init__(self, client: Client, epochs: int):
        self.client = client
        self.pressed = time.perf_counter()
        self.job = client.submit("MNIST", 16, "512 → 256", epochs, 59_000, 0, api_name="/train")
        self.updates: list[tuple[float, dict]] = []
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        seen = 0
        while True:
            done = self.job.done()
            outputs = self.job.outputs()
            for out in outputs[seen:]:
                self.updates.append((time.perf_counter(), dict(zip(OUTPUTS, out, strict=False))))
            seen = len(outputs)
            if done:
                return
            time.sleep(0.02)

    def first(self, text: str, timeout: float = 600) -> float:
        """When an update whose status or progress contains `text` arrived."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for at, update in list(self.updates):
                if text in str(update.get("status")) or text in str(update.get("progress")):
                    return at
            if self.job.done() and not self.thread.is_alive():
                break
            time.sleep(0.05)
        raise RuntimeError(f"no update with {text!r}: {[u.get('status') for _, u in self.updates][-5:]}")


def p50(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("VAE_DATA_DIR") or str(ROOT / "data"), help="MNIST root")
    parser.add_argument("--calls", type=int, default=40, help="calls of each endpoint in each phase")
    parser.add_argument("--epochs", type=int, default=20, help="the run's epochs (it is stopped before the end)")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/app_train_load.json)")
    args = parser.parse_args()

    port, log_path = free_port(), Path(tempfile.mkdtemp()) / "app.log"
    base = f"http://127.0.0.1:{port}"
    os.environ["VAE_MAX_TRAIN_EPOCHS"] = str(args.epochs)
    os.environ["VAE_MAX_TRAIN_SECONDS"] = "3600"
    with open(log_path, "w") as log:
        process = start_app(None, port, log, [str(ROOT / "app.py"), "--data-dir", str(Path(args.data_dir).resolve())])
    try:
        wait_ready(process, base, time.perf_counter())
        measure(base, 5, 10_000)  # warm-up: lazily imported modules, first PNG encodes
        idle = measure(base, args.calls, 0)
        print(f"idle: /sample p50 {p50(idle['sample_64']):.1f} ms, /walk p50 {p50(idle['walk_16']):.1f} ms", flush=True)
        client = Client(base, verbose=False, download_files=tempfile.mkdtemp())
        run = Run(client, args.epochs)
        first_step = run.first("images/s")
        print(f"the run's first step {first_step - run.pressed:.1f} s after Train", flush=True)
        training = measure(base, args.calls, 1_000)
        print(f"training: /sample p50 {p50(training['sample_64']):.1f} ms, /walk {p50(training['walk_16']):.1f} ms")
        pressed = time.perf_counter()
        client.predict(api_name="/stop_training")
        stopped = run.first("Writing the model folder")
        ready = run.first("is ready")
        run.job.result(timeout=600)
        after = measure(base, args.calls, 2_000)
        print(f"idle again: /sample p50 {p50(after['sample_64']):.1f} ms, /walk {p50(after['walk_16']):.1f} ms")
    finally:
        stop(process)

    speeds = [float(s.split(" images/s")[0].split("· ")[-1].replace(",", "")) for s in progress_texts(run)]
    results = {"calls": args.calls, "target_ratio": TARGET_RATIO, "data_dir": args.data_dir}
    for name in ("sample_64", "walk_16"):
        baseline = p50(idle[name] + after[name])
        results[name] = {
            "idle_p50_ms": round(p50(idle[name]), 2),
            "training_p50_ms": round(p50(training[name]), 2),
            "idle_again_p50_ms": round(p50(after[name]), 2),
            "ratio_training_to_idle": round(p50(training[name]) / baseline, 2),
        }
    results["train_tab"] = {
        "press_to_first_step_s": round(first_step - run.pressed, 2),
        "images_per_sec_last": speeds[-1] if speeds else None,
        "stop_to_training_over_s": round(stopped - pressed, 2),
        "export_s": round(ready - stopped, 2),
    }
    print()
    print(f"{'endpoint':<22}{'idle p50':>10}{'training':>10}{'idle again':>12}{'ratio':>8}{'target':>8}")
    for name in ("sample_64", "walk_16"):
        r = results[name]
        print(
            f"{name:<22}{r['idle_p50_ms']:>10.1f}{r['training_p50_ms']:>10.1f}{r['idle_again_p50_ms']:>12.1f}"
            f"{r['ratio_training_to_idle']:>8.2f}{TARGET_RATIO:>8.1f}"
        )
    for key, value in results["train_tab"].items():
        print(f"{key:<32}{value}")
    write_results("app_train_load", results, args.output)


def progress_texts(run: Run) -> list[str]:
    return [str(u.get("progress")) for _, u in run.updates if "images/s" in str(u.get("progress"))]


if __name__ == "__main__":
    main()
