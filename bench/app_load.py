"""The launched app under load, in two wirings of its queue: 20 gradio_client clients at once, 10 mixed calls each.

python -m bench.app_load [--clients 20] [--calls 10] [--rounds 4] [--checkpoint checkpoints/vae-mnist]

Two servers of the same app run side by side on two ports, and take the same load in turn:
- one group (`python app.py`, the app as it ships): every event joins the concurrency group app.MODEL_WORK,
  so at most CONCURRENCY handlers run at once over all events;
- per-event queues, the baseline (`app.MODEL_WORK = None` before build_demo): Gradio gives each event its own
  queue of CONCURRENCY handlers, so up to CONCURRENCY handlers of every event run at once.

Each client makes its own connection and calls /sample (16 or 64 images), /walk (8 to 16 steps, random
classes, linear or spherical, from class means or real examples) and /encode (uploading one of a few
test digits drawn dark on white), in turn. A first, warm-up round of the same load on each server is not
counted: it starts the server's worker threads and its per-session state, a one-time cost that is reported
separately. Then the measured rounds alternate between the servers (one group, per-event, one group, ...),
with the same seeds for both, so that the noise of a shared machine falls on both alike; the idle server
only waits. The clients do not download the result files (download_files=False): what is timed is the
server, not gradio_client's downloads.

Reports for each wiring: failures (target 0), the p50 and p99 latency seen by the clients, and the server's
resident memory (VmRSS) after each round of clients x calls requests (target: no growth beyond a few MB per
200 calls); and the p50 and p99 of the one group over those of the per-event queues (above 1: slower).

Prints a table and writes bench/results/app_load.json: the one group's figures at the top level, the
baseline's under "baseline_per_event_queues", the ratios under "ratio_one_group_to_per_event".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image
from safetensors.torch import load_file

from bench.app_startup import RESULTS, ROOT, free_port, start_app, stop, wait_ready

KINDS = ("sample", "walk", "encode")
VARIANTS = {  # name → (how it is started: start_app's `program`, what it is)
    "one_group": (
        None,
        "python app.py: every event in the concurrency group app.MODEL_WORK, CONCURRENCY handlers at once in all",
    ),
    "per_event_queues": (
        ["-c", "import sys, app; app.MODEL_WORK = None; app.main(sys.argv[1:])"],
        "app.MODEL_WORK = None before build_demo: each event its own queue of CONCURRENCY handlers (Gradio's default)",
    ),
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def digit_files(checkpoint: Path, folder: Path, count: int = 5) -> list[Path]:
    """A few test digits of the checkpoint's t-SNE cache, drawn large and dark on white like an upload."""
    images = load_file(checkpoint / "tsne.safetensors")["images"][:count, 0].numpy()
    paths = []
    for i, digit in enumerate(images):
        paths.append(folder / f"digit-{i}.png")
        Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR).save(paths[-1])
    return paths


def one_call(client: Client, kind: str, rng: random.Random, digits: list[Path]) -> None:
    if kind == "sample":
        _, gallery = client.predict(rng.choice([16, 64]), rng.randrange(10**6), 1.0, api_name="/sample")
        assert len(gallery) in (16, 64)
    elif kind == "walk":
        a, b = rng.sample([str(d) for d in range(10)], 2)
        mode, start = rng.choice(["linear", "spherical"]), rng.choice(["mean", "sample"])
        client.predict(a, b, rng.randrange(8, 17), mode, start, rng.randrange(1000), api_name="/walk")
    else:
        result = client.predict(handle_file(rng.choice(digits)), str(rng.randrange(10)), api_name="/encode")
        assert result[2] in {str(d) for d in range(10)}


def run_round(clients: list[Client], calls: int, digits: list[Path], seed: int) -> list[dict]:
    """Every client makes `calls` calls, all clients at once; one record per call."""
    records: list[dict] = []
    lock = threading.Lock()
    start_together = threading.Barrier(len(clients))

    def work(index: int, client: Client) -> None:
        rng = random.Random(seed * 1000 + index)
        start_together.wait()
        for j in range(calls):
            kind = KINDS[(index + j) % 3]
            began = time.perf_counter()
            try:
                one_call(client, kind, rng, digits)
                error = None
            except Exception as err:  # every failure is counted, whatever its kind
                error = f"{type(err).__name__}: {err}"[:300]
            with lock:
                records.append({"kind": kind, "seconds": time.perf_counter() - began, "error": error})

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


@dataclass
class Server:
    """One wiring's running server, its clients and what was measured on it."""

    name: str
    process: subprocess.Popen
    base: str
    clients: list[Client] = field(default_factory=list)
    warm_up: list[dict] = field(default_factory=list)
    rounds: list[list[dict]] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)  # when → RSS in MB


def warm(server: Server, clients: int, calls: int, digits: list[Path]) -> None:
    """First calls (imports, allocations), then the clients' warm-up round; neither is counted."""
    first = Client(server.base, verbose=False, download_files=False)
    rng = random.Random(0)
    for kind in KINDS * 3:
        one_call(first, kind, rng, digits)
    server.memory["after_first_calls"] = rss_mb(server.process.pid)
    server.clients = [Client(server.base, verbose=False, download_files=False) for _ in range(clients)]
    server.warm_up = run_round(server.clients, calls, digits, seed=0)
    server.memory["after_warm_up_round"] = rss_mb(server.process.pid)
    failures = sum(r["error"] is not None for r in server.warm_up)
    print(f"{server.name}: warm-up round {failures} failed, RSS {server.memory['after_warm_up_round']:.1f} MB")


def measure(server: Server, calls: int, digits: list[Path], seed: int) -> None:
    began = time.perf_counter()
    server.rounds.append(run_round(server.clients, calls, digits, seed))
    server.round_seconds.append(time.perf_counter() - began)
    server.memory[f"after_round_{len(server.rounds)}"] = rss_mb(server.process.pid)
    failures = sum(r["error"] is not None for r in server.rounds[-1])
    print(
        f"round {len(server.rounds)}, {server.name + ':':<17} {len(server.rounds[-1])} calls in"
        f" {server.round_seconds[-1]:.1f} s, {failures} failed, RSS {list(server.memory.values())[-1]:.1f} MB",
        flush=True,
    )


def summarize(server: Server) -> dict:
    """Failures, latency and memory of one server's measured rounds (the fields of app_load.json)."""
    records = [rec for round_records in server.rounds for rec in round_records]
    errors = [rec["error"] for rec in records if rec["error"]]
    seconds = [rec["seconds"] for rec in records if not rec["error"]]
    by_kind = {kind: [rec["seconds"] for rec in records if rec["kind"] == kind and not rec["error"]] for kind in KINDS}
    memory = list(server.memory.values())[1:]  # after the warm-up round, then after each measured round
    return {
        "calls": len(records),
        "failures": len(errors),
        "first_errors": errors[:5],
        "p50_s": statistics.median(seconds) if seconds else None,
        "p99_s": percentile(seconds, 0.99) if seconds else None,
        "per_endpoint": {
            kind: {"p50_s": statistics.median(v), "p99_s": percentile(v, 0.99)} for kind, v in by_kind.items() if v
        },
        "round_wall_s": server.round_seconds,
        "warm_up_failures": sum(r["error"] is not None for r in server.warm_up),
        "rss_mb": server.memory,
        "rss_growth_mb_per_round": [after - before for before, after in zip(memory, memory[1:], strict=False)],
    }


def ratios(group: dict, baseline: dict) -> dict:
    """group / baseline for p50 and p99, overall and per endpoint (above 1: the one group is slower)."""

    def ratio(a: dict, b: dict) -> dict:
        return {q: a[f"{q}_s"] / b[f"{q}_s"] if a[f"{q}_s"] and b[f"{q}_s"] else None for q in ("p50", "p99")}

    kinds = [kind for kind in KINDS if kind in group["per_endpoint"] and kind in baseline["per_endpoint"]]
    per_endpoint = {kind: ratio(group["per_endpoint"][kind], baseline["per_endpoint"][kind]) for kind in kinds}
    return {**ratio(group, baseline), "per_endpoint": per_endpoint}


def print_table(new: dict, old: dict, ratio: dict) -> None:
    """The one group (new) beside the per-event queues (old), and new / old."""

    def row(label: str, a, b, r: str = "", target: str = "") -> None:
        print(f"{label:<34}{a:>12}{b:>18}{r:>8}{target:>8}")

    row("measure", *VARIANTS, "ratio", "target")
    row("calls", new["calls"], old["calls"])
    row("failures", new["failures"], old["failures"], "", "0")
    row("warm-up round failures", new["warm_up_failures"], old["warm_up_failures"], "", "0")
    for q in ("p50", "p99"):
        row(f"latency {q} (s)", f"{new[f'{q}_s']:.3f}", f"{old[f'{q}_s']:.3f}", f"{ratio[q]:.2f}")
    for kind in ratio["per_endpoint"]:
        for q in ("p50", "p99"):
            a, b = new["per_endpoint"][kind][f"{q}_s"], old["per_endpoint"][kind][f"{q}_s"]
            row(f"  /{kind} {q} (s)", f"{a:.3f}", f"{b:.3f}", f"{ratio['per_endpoint'][kind][q]:.2f}")
    row(
        "round wall time, median (s)",
        f"{statistics.median(new['round_wall_s']):.1f}",
        f"{statistics.median(old['round_wall_s']):.1f}",
    )
    for when in new["rss_mb"]:
        row(f"RSS {when.replace('_', ' ')} (MB)", f"{new['rss_mb'][when]:.1f}", f"{old['rss_mb'][when]:.1f}")
    for i, (a, b) in enumerate(zip(new["rss_growth_mb_per_round"], old["rss_growth_mb_per_round"], strict=True)):
        row(f"  growth in round {i + 1} (MB)", f"{a:+.1f}", f"{b:+.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=4, help="measured rounds of each wiring, alternated")
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "vae-mnist"))
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    digits = digit_files(Path(args.checkpoint), folder)
    servers = []
    print(f"server logs in {folder}")
    try:
        for name, (program, _) in VARIANTS.items():
            port = free_port()
            with open(folder / f"{name}.log", "w") as log:
                servers.append(Server(name, start_app(args.checkpoint, port, log, program), f"http://127.0.0.1:{port}"))
        for server in servers:
            wait_ready(server.process, server.base, time.perf_counter())
            warm(server, args.clients, args.calls, digits)
        for r in range(args.rounds):
            for server in servers:  # one group, per-event, one group, ...: the same load, the same seeds
                measure(server, args.calls, digits, seed=r + 1)
    finally:
        for server in servers:
            stop(server.process)

    new, old = summarize(servers[0]), summarize(servers[1])  # the one group, the per-event queues
    ratio = ratios(new, old)
    results = {
        "variant": "one_group",
        "clients": args.clients,
        "calls_per_client_per_round": args.calls,
        "rounds": args.rounds,
        **new,
        "baseline_per_event_queues": old,
        "ratio_one_group_to_per_event": ratio,
        "variants": {name: description for name, (_, description) in VARIANTS.items()},
        "rounds_alternate": True,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
    }
    print()
    print_table(new, old, ratio)
    print(f"\n{os.cpu_count()} CPUs, load average {results['machine']['load_avg_1m']:.2f} at the end")
    for name, summary in zip(VARIANTS, (new, old), strict=True):
        for error in summary["first_errors"]:
            print(f"error ({name}):", error)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "app_load.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'app_load.json'}")


if __name__ == "__main__":
    main()
