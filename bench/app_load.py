"""The launched app under load: 20 gradio_client clients at once, 10 mixed calls each.

python bench/app_load.py [--clients 20] [--calls 10] [--rounds 2] [--checkpoint checkpoints/vae-mnist]

Each client makes its own connection and calls /sample (16 or 64 images), /walk (8 to 16 steps, random
classes, linear or spherical, from class means or real examples) and /encode (uploading one of a few
test digits drawn dark on white), in turn. Reports failures (target 0), the p50 and p99 latency seen by
the clients, and the server's resident memory (VmRSS) after each round of clients x calls requests
(target: no growth beyond a few MB per 200 calls). A first, warm-up round of the same load is not
counted: it starts the server's worker threads and its per-session state, a one-time cost that is
reported separately. The clients do not download
the result files (download_files=False): what is timed is the server, not gradio_client's downloads.

Prints a table and writes bench/results/app_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_startup import RESULTS, ROOT, free_port, start_app, stop, wait_ready  # noqa: E402


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
            kind = ("sample", "walk", "encode")[(index + j) % 3]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "vae-mnist"))
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp())
    digits = digit_files(Path(args.checkpoint), folder)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(folder / "app.log", "w") as log:
        started = time.perf_counter()
        process = start_app(args.checkpoint, port, log)
    try:
        wait_ready(process, base, started)
        warm = Client(base, verbose=False, download_files=False)
        rng = random.Random(0)
        for kind in ("sample", "walk", "encode") * 3:  # first calls import and allocate once
            one_call(warm, kind, rng, digits)
        memory_at_start = rss_mb(process.pid)
        clients = [Client(base, verbose=False, download_files=False) for _ in range(args.clients)]
        warm_up = run_round(clients, args.calls, digits, seed=0)
        memory = [rss_mb(process.pid)]
        print(f"warm-up round: {sum(r['error'] is not None for r in warm_up)} failed, RSS {memory[0]:.1f} MB")
        rounds = []
        for r in range(args.rounds):
            began = time.perf_counter()
            rounds.append(run_round(clients, args.calls, digits, seed=r + 1))
            wall = time.perf_counter() - began
            memory.append(rss_mb(process.pid))
            failures = sum(rec["error"] is not None for rec in rounds[-1])
            print(f"round {r + 1}: {len(rounds[-1])} calls in {wall:.1f} s, {failures} failed, RSS {memory[-1]:.1f} MB")
    finally:
        stop(process)

    records = [rec for round_records in rounds for rec in round_records]
    errors = [rec["error"] for rec in records if rec["error"]]
    seconds = [rec["seconds"] for rec in records if not rec["error"]]
    by_kind = {
        kind: [rec["seconds"] for rec in records if rec["kind"] == kind and not rec["error"]]
        for kind in ("sample", "walk", "encode")
    }
    growth = [after - before for before, after in zip(memory, memory[1:], strict=False)]
    results = {
        "clients": args.clients,
        "calls_per_client_per_round": args.calls,
        "rounds": args.rounds,
        "calls": len(records),
        "failures": len(errors),
        "first_errors": errors[:5],
        "p50_s": statistics.median(seconds) if seconds else None,
        "p99_s": percentile(seconds, 0.99) if seconds else None,
        "per_endpoint": {
            kind: {"p50_s": statistics.median(v), "p99_s": percentile(v, 0.99)} for kind, v in by_kind.items() if v
        },
        "warm_up_failures": sum(r["error"] is not None for r in warm_up),
        "rss_mb": {
            "after_first_calls": memory_at_start,
            "after_warm_up_round": memory[0],
            **{f"after_round_{i + 1}": m for i, m in enumerate(memory[1:])},
        },
        "rss_growth_mb_per_round": growth,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
    }
    print()
    print(f"{'measure':<34}{'value':>12}{'target':>12}")
    print(f"{'calls':<34}{len(records):>12}")
    print(f"{'failures':<34}{len(errors):>12}{0:>12}")
    print(f"{'latency p50 / p99 (s)':<34}{results['p50_s']:>6.3f} / {results['p99_s']:.3f}")
    for kind, row in results["per_endpoint"].items():
        print(f"{'  /' + kind + ' p50 / p99 (s)':<34}{row['p50_s']:>6.3f} / {row['p99_s']:.3f}")
    print(f"{'RSS after the first calls (MB)':<34}{memory_at_start:>12.1f}")
    print(f"{'RSS after the warm-up round (MB)':<34}{memory[0]:>12.1f}")
    for i, (m, g) in enumerate(zip(memory[1:], growth, strict=True)):
        print(f"{f'RSS after round {i + 1} (MB), growth':<34}{m:>12.1f}{g:>+12.1f}")
    print(f"\n{os.cpu_count()} CPUs, load average {results['machine']['load_avg_1m']:.2f} at the end")
    for error in errors[:5]:
        print("error:", error)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "app_load.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'app_load.json'}")


if __name__ == "__main__":
    main()
