"""What a studio that serves no one costs: its CPU time per second while idle, with Gradio's queue polling as Gradio
sets it and as the studio sets it (gradio6.IDLE_POLL_SECONDS).

python -m bench.idle_server [--seconds 8] [--rounds 3]

Builds the app as `python app.py` serves it, in this process, and measures the process's CPU time (user + system)
over --seconds of no calls, alternating the two settings --rounds times each so that the machine's load falls on
both. Prints a table and writes bench/results/idle_server.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRADIOS_OWN = (0.001, 0.01)  # gradio.queueing.Queue: sleep_when_free, progress_update_sleep_when_free (Linux)


def idle_cpu(polls: tuple[float, float], seconds: float) -> float:
    """CPU seconds per second of a served, idle studio whose queue polls every `polls` seconds."""
    import app
    from bench.app_startup import launched
    from vae.assets import load_assets

    demo = app.build_demo(load_assets(app.DEFAULT_CHECKPOINT))
    with launched(demo):
        demo._queue.sleep_when_free, demo._queue.progress_update_sleep_when_free = polls
        time.sleep(2)  # the start's own work done
        started = time.process_time()
        time.sleep(seconds)
        return (time.process_time() - started) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="idle time measured per server")
    parser.add_argument("--rounds", type=int, default=3, help="servers started with each setting")
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio6 import IDLE_POLL_SECONDS

    settings = {"gradio": GRADIOS_OWN, "studio": IDLE_POLL_SECONDS}
    measured: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, polls in settings.items():
            measured[name].append(idle_cpu(polls, args.seconds))
    results = {
        name: {"polls_s": settings[name], "cpu_per_s": statistics.median(runs), "runs": runs}
        for name, runs in measured.items()
    }
    results["ratio"] = results["gradio"]["cpu_per_s"] / results["studio"]["cpu_per_s"]
    results["machine"] = {
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
    }
    print(f"\n{'queue polls (s)':<22}{'idle CPU (% of a core)':>24}")
    for name in settings:
        print(f"{str(settings[name]) + ' ' + name:<22}{100 * results[name]['cpu_per_s']:>24.2f}")
    print(f"ratio {results['ratio']:.2f}x; load average {results['machine']['load_avg_1m']:.2f}")
    out = ROOT / "bench" / "results" / "idle_server.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
