"""What the benchmarks share: our trainer's config and metrics, machine facts, a table printer, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from vae.config import DEFAULT_CONFIG, TrainConfig, parse_config, read_yaml
from vae.folder import HISTORY

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


def bench_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The options every training benchmark has: --data-dir, --threads and --output."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=read_yaml(DEFAULT_CONFIG).get("data_dir", "data"), help="MNIST root")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for both (default: torch's own)")
    parser.add_argument("--output", type=Path, help=f"JSON file (default: bench/results/{name}.json)")
    return parser


LOAD_AT_START: list[float] = []  # the load average when start() ran; write_results records it


def start(args: argparse.Namespace) -> None:
    """Apply --threads, print the threads and the machine's load, and remember that load for the results."""
    if args.threads:
        torch.set_num_threads(args.threads)
    facts = machine()
    LOAD_AT_START[:] = facts["load_average"]
    print(f"{torch.get_num_threads()} torch thread(s); load average {facts['load_average']} on {facts['cores']} cores")


def our_config(overrides: dict) -> TrainConfig:
    """configs/mnist.yaml with `overrides` applied as command-line flags, exactly as `train.py` would."""
    argv = []
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return parse_config(argv)


def read_history(output_dir: str | Path) -> list[dict]:
    """The per-epoch records the trainer wrote to OUTPUT_DIR/metrics.jsonl."""
    lines = (Path(output_dir) / HISTORY).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def images_per_cpu_second(record: dict) -> float:
    """Training images per CPU second of an epoch's training loop (this process's CPU clock, all its threads), from
    the trainer's record: CPU seconds are far less disturbed than wall seconds by other processes on a shared
    machine. The images are those the wall-clock figures count: images_per_sec x epoch_seconds."""
    return record["images_per_sec"] * record["epoch_seconds"] / record["epoch_cpu_seconds"]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict:
    """What a reader needs to compare numbers across runs: CPU, threads, versions, load when measured."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def print_table(headers: list[str], rows: list[list]) -> None:
    """A plain fixed-width table: numbers right-aligned, text left-aligned."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def write_results(name: str, results: dict, output: Path | None = None) -> Path:
    """Write RESULTS_DIR/<name>.json (or `output`) with the machine facts added."""
    path = output or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if LOAD_AT_START:  # machine().load_average is the load at the end
        results = {**results, "load_average_start": LOAD_AT_START}
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **results}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
