"""What one API call from a new session costs the server: its CPU time and the caller's round trip.

python -m bench.api_call_cost [--calls 120] [--rounds 2]

Every raw API call (POST /gradio_api/call/NAME) and every new gradio_client is a new session. Gradio builds a copy of
every component's config for each new session (for deep links), which the studio builds only when a deep link asks
for it (gradio6.build_session_configs_lazily). This starts `python app.py` with and without that, alternately
(--rounds times each, so that the machine's load falls on both), and times --calls calls of each kind: a refused
/sample (count 0: the server's fixed cost) and a real /sample of 4 images. Server CPU is the server process's user +
system time over the calls (psutil), divided by their number.

Prints a table and writes bench/results/api_call_cost.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.app_startup import free_port, start_app

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EAGER = "import sys, gradio6; gradio6.build_session_configs_lazily = lambda: None; import app; app.main(sys.argv[1:])"
CALLS = {"refused /sample (count 0)": ("sample", [0, 0, 1.0, "vae-mnist"]), "/sample of 4": ("sample", None)}


def call(base: str, api: str, data: list) -> str:
    posted = httpx.post(f"{base}/gradio_api/call/{api}", json={"data": data}, timeout=60)
    return httpx.get(f"{base}/gradio_api/call/{api}/{posted.raise_for_status().json()['event_id']}", timeout=60).text


def measure(lazy: bool, calls: int) -> dict[str, dict[str, float]]:
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        server = start_app(None, port, log, None if lazy else ["-c", EAGER])
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if "complete" in call(base, "sample", [4, 0, 1.0, "vae-mnist"]):
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, "the app did not start"
                time.sleep(0.3)
            process, results = psutil.Process(server.pid), {}
            for kind, (api, data) in CALLS.items():
                cpu, began = sum(process.cpu_times()[:2]), time.perf_counter()
                for seed in range(calls):
                    call(base, api, data or [4, seed, 1.0, "vae-mnist"])
                results[kind] = {
                    "server_cpu_ms": 1000 * (sum(process.cpu_times()[:2]) - cpu) / calls,
                    "round_trip_ms": 1000 * (time.perf_counter() - began) / calls,
                }
            return results
        finally:
            server.terminate()
            server.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=120, help="calls of each kind per server start")
    parser.add_argument("--rounds", type=int, default=2, help="server starts of each version, alternating")
    args = parser.parse_args(argv)
    runs: dict[str, list] = {"eager": [], "lazy": []}
    for _ in range(args.rounds):
        for version in runs:
            runs[version].append(measure(version == "lazy", args.calls))
    table = {
        version: {
            kind: {key: statistics.median(r[kind][key] for r in results) for key in results[0][kind]} for kind in CALLS
        }
        for version, results in runs.items()
    }
    print(f"{'per new-session call':28s} {'server CPU ms':>22s} {'round trip ms':>22s}")
    for kind in CALLS:
        eager, lazy = table["eager"][kind], table["lazy"][kind]
        ratio = eager["server_cpu_ms"] / lazy["server_cpu_ms"]
        cpu = f"{eager['server_cpu_ms']:.1f} → {lazy['server_cpu_ms']:.1f} ({ratio:.2f}x)"
        trip = f"{eager['round_trip_ms']:.1f} → {lazy['round_trip_ms']:.1f}"
        print(f"{kind:28s} {cpu:>22s} {trip:>22s}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"calls": args.calls, "rounds": args.rounds, "machine": platform.processor() or platform.machine()}
    record |= {"median": table, "runs": runs}
    (RESULTS / "api_call_cost.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RESULTS / 'api_call_cost.json'}")


if __name__ == "__main__":
    main()
