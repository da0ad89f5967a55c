"""The MNIST-VAE speedrun: how fast a recipe reaches its test −ELBO on this machine, seed after seed.

python -m bench.speedrun [--config configs/mnist_fast.yaml] [--seeds 0 1 2] [--reference-epochs 10]
                         [--data-dir DIR] [--threads N]

The rules (docs/benchmarks.md, "The speedrun"):
- Training time only: the trainer's training loops, summed over the epochs (metrics.jsonl's epoch_seconds, and
  epoch_cpu_seconds: this process's CPU clock, all its threads). The data is in memory before the clock starts;
  the validation after each epoch, the test evaluation, the figures and the model folder are timed apart, and the
  whole `train()` call beside them.
- Quality: the test −ELBO on all 10,000 MNIST test images as `vae.evaluate` computes it (the trainer's final
  evaluation calls the same function), of the best epoch's weights.
- Every seed trains from scratch in this process; the table gives each seed and their mean and spread.
- The baseline, in the same run: the pytorch/examples VAE loop (bench.reference: 784-400-20, batch 128, Adam 1e-3,
  a DataLoader of PIL images), --reference-epochs epochs, its time and its test −ELBO by its own `test`.
- The machine's 1-minute load average before and after each run, beside its figures.

Prints a table and writes bench/results/speedrun.json.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import reference
from bench.common import bench_parser, print_table, read_history, start, write_results
from vae.config import parse_config
from vae.folder import METRICS

ROOT = Path(__file__).resolve().parent.parent
TARGET_NATS, TARGET_TRAIN_SECONDS = 100.0, 40.0


def load() -> float:
    return round(os.getloadavg()[0], 2)


def run_recipe(config_file: Path, data_dir: str, seed: int, output_dir: Path) -> dict:
    """One seed of the recipe through vae.training.train, as `python train.py --config CONFIG_FILE` trains it."""
    from vae.training import train

    argv = ["--config", str(config_file), "--data-dir", data_dir, "--seed", str(seed), "--output-dir", str(output_dir)]
    config = parse_config(argv)
    marks: dict[str, float] = {}
    before = load()
    began = time.perf_counter()
    train(config, on_train_end=lambda: marks.setdefault("trained", time.perf_counter()))
    ended = time.perf_counter()
    history = read_history(output_dir)
    metrics = json.loads((output_dir / METRICS).read_text())
    loops = sum(r["epoch_seconds"] for r in history)
    return {
        "seed": seed,
        "test_elbo": metrics["test_loss"],
        "train_seconds": round(loops, 2),
        "train_cpu_seconds": round(sum(r["epoch_cpu_seconds"] for r in history), 2),
        "train_with_validation_seconds": metrics["train_wall_seconds"],
        "export_seconds": round(ended - marks["trained"], 2),  # test evaluation, figures, t-SNE map, folder
        "whole_call_seconds": round(ended - began, 2),  # data loading included
        "epochs": len(history),
        "images_per_second": round(sum(r["images_per_sec"] * r["epoch_seconds"] for r in history) / loops, 1),
        "load_before": before,
        "load_after": load(),
    }


def run_reference(data_dir: str, epochs: int) -> dict:
    """The pytorch/examples loop, as bench.reference writes it: its epochs' time and its final test −ELBO."""
    before = load()
    train_loader, test_loader = reference.make_loaders(data_dir)
    model, optimizer = reference.make_model()
    runs = [reference.train_epoch(model, optimizer, train_loader) for _ in range(epochs)]
    return {
        "epochs": epochs,
        "test_elbo": round(reference.test_loss(model, test_loader), 2),
        "train_seconds": round(sum(r["seconds"] for r in runs), 2),
        "train_cpu_seconds": round(sum(r["cpu_seconds"] for r in runs), 2),
        "images_per_second": round(sum(r["images"] for r in runs) / sum(r["seconds"] for r in runs), 1),
        "load_before": before,
        "load_after": load(),
    }


def spread(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 2), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    parser = bench_parser("speedrun", __doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mnist_fast.yaml", help="the recipe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run from scratch per seed")
    parser.add_argument(
        "--reference-epochs", type=int, default=10, help="epochs of the pytorch/examples loop (0: none)"
    )
    args = parser.parse_args(argv)
    start(args)
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            runs.append(run_recipe(args.config, args.data_dir, seed, Path(scratch) / f"seed {seed}"))
            print(f"seed {seed}: {runs[-1]['test_elbo']:.2f} nats in {runs[-1]['train_seconds']:.1f} s", flush=True)
    baseline = run_reference(args.data_dir, args.reference_epochs) if args.reference_epochs else None

    headers = ["run", "test -ELBO", "train s", "train CPU s", "+ val s", "export s", "whole s", "images/s", "load"]
    rows = [
        [f"seed {r['seed']}", r["test_elbo"], r["train_seconds"], r["train_cpu_seconds"],
         r["train_with_validation_seconds"], r["export_seconds"], r["whole_call_seconds"], r["images_per_second"],
         f"{r['load_before']}→{r['load_after']}"]
        for r in runs
    ]  # fmt: skip
    if baseline:
        rows.append([f"pytorch/examples, {baseline['epochs']} epochs", baseline["test_elbo"], baseline["train_seconds"],
                     baseline["train_cpu_seconds"], "", "", "", baseline["images_per_second"],
                     f"{baseline['load_before']}→{baseline['load_after']}"])  # fmt: skip
    print()
    print_table(headers, rows)
    summary = {
        "test_elbo": spread([r["test_elbo"] for r in runs]),
        "train_seconds": spread([r["train_seconds"] for r in runs]),
        "whole_call_seconds": spread([r["whole_call_seconds"] for r in runs]),
    }
    held = all(r["test_elbo"] <= TARGET_NATS for r in runs) and summary["train_seconds"]["max"] <= TARGET_TRAIN_SECONDS
    print(
        f"\nmean {summary['test_elbo']['mean']:.2f} nats ({summary['test_elbo']['min']:.2f}-"
        f"{summary['test_elbo']['max']:.2f}) in {summary['train_seconds']['mean']:.1f} s of training "
        f"({summary['train_seconds']['min']:.1f}-{summary['train_seconds']['max']:.1f}); target ≤ {TARGET_NATS:.0f} "
        f"nats every seed in ≤ {TARGET_TRAIN_SECONDS:.0f} s: {'held' if held else 'NOT held'}"
    )
    results = {
        "config": str(args.config.resolve().relative_to(ROOT)) if args.config.resolve().is_relative_to(ROOT) else
        str(args.config),
        "runs": runs,
        "summary": summary,
        "reference": baseline,
        "targets": {"test_elbo": TARGET_NATS, "train_seconds": TARGET_TRAIN_SECONDS},
        "held": held,
    }  # fmt: skip
    write_results("speedrun", results, args.output)
    return results


if __name__ == "__main__":
    main()
