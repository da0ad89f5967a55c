"""The GPU check: one command for the day a CUDA machine is lent, under 5 minutes on one GPU.

python -m bench.gpu_check --data-dir ../shared/data             # or: bench/gpu_check.sh --data-dir ../shared/data
python -m bench.gpu_check --allow-cpu --data-dir ../shared/data # the same steps on the CPU, to test this script

1. Trains configs/mnist.yaml's model for --epochs epochs in bf16 through the trainer's own code (vae.training.train,
   as train.py runs it), the images on the GPU, and reads the run's figures: the last epoch's training-loop seconds
   and images/s (the first epoch pays for CUDA's start-up), the peak GPU memory, the test -ELBO. On CUDA it also
   counts the calls that made the CPU wait for the GPU (torch.cuda.set_sync_debug_mode) during the last epoch.
2. Times the work behind the app's /sample (64 images from the prior: decode on the model's device, PNG-encode the
   grid and each image, write them to the app's file cache; vae.pictures.sample_files, what app.sample calls) over
   --sample-calls calls, with the model on the GPU and, for comparison, on the CPU; and the decode alone.
3. Checks that the run trained on CUDA in bf16 with its images on the GPU, every loss is finite, the validation
   -ELBO fell from the first epoch to the last, and /sample wrote its 65 files. Any failure: a one-paragraph
   message and exit code 1. --allow-cpu expects the CPU instead of CUDA and is marked as a dry run.

Prints the figures and writes bench/results/gpu_check.json (--output); the run's folder is a temporary folder beside
that file, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from bench.common import RESULTS_DIR, our_config, print_table, read_history, write_results
from vae.errors import UserError, command

SAMPLE_IMAGES = 64  # as bench.app_startup times /sample


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="MNIST root (DATA_DIR/MNIST/raw)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default: configs/mnist.yaml's)")
    parser.add_argument("--sample-calls", type=int, default=30, help="timed /sample calls on each device")
    parser.add_argument("--allow-cpu", action="store_true", help="no CUDA device: run the same steps on the CPU")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "gpu_check.json", help="JSON file of the figures")
    return parser.parse_args(argv)


def pick_device(allow_cpu: bool) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if not allow_cpu:
        raise UserError(
            f"No CUDA device: torch {torch.version.__version__} (CUDA build: {torch.version.cuda or 'no'}) sees no "
            "GPU here, and this check measures one. Run it on a CUDA machine, or pass --allow-cpu for a dry run of "
            "the same steps on the CPU."
        )
    return torch.device("cpu")


class SyncCounter:
    """Counts the warnings of torch.cuda.set_sync_debug_mode("warn"): each is a call that made the CPU wait for the
    GPU (an .item(), a blocking copy). Switched on for the last epoch only, through the trainer's epoch hook."""

    def __init__(self, device: torch.device, last_epoch: int):
        self.device, self.last_epoch, self.count = device, last_epoch, 0
        self.original = warnings.showwarning

    def __call__(self, epoch: int, model) -> None:  # on_epoch_end: after epoch `epoch`'s checkpoint
        if self.device.type != "cuda":
            return
        if epoch == self.last_epoch - 1:
            warnings.simplefilter("always")
            warnings.showwarning = self.show
            torch.cuda.set_sync_debug_mode("warn")
        elif epoch == self.last_epoch:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = self.original

    def show(self, message, category, *args, **kwargs) -> None:
        if "synchroniz" in str(message):
            self.count += 1
        else:
            self.original(message, category, *args, **kwargs)


def train_run(args: argparse.Namespace, device: torch.device, run_dir: Path) -> dict:
    """Train through vae.training.train; the figures of its metrics.jsonl and metrics.json, and the peak memory."""
    from vae.training import train  # after the device check: importing Accelerate takes seconds

    overrides = {
        "data_dir": args.data_dir,
        "output_dir": str(run_dir),
        "epochs": args.epochs,
        "cpu": device.type == "cpu",
    }
    config = our_config(overrides | {"batch_size": args.batch_size, "mixed_precision": "bf16", "report_to": "none"})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    syncs = SyncCounter(device, args.epochs)
    start = time.perf_counter()
    train(config, on_epoch_end=syncs)
    wall = time.perf_counter() - start
    history, metrics = read_history(run_dir), json.loads((run_dir / "metrics.json").read_text())
    last = history[-1]
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20  # tensors of the whole run, export included
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak RSS (Linux: KiB)
    return {
        "device": metrics["device"],
        "train_data_device": metrics["train_data_device"],
        "mixed_precision": metrics["mixed_precision"],
        "epochs": len(history),
        "steps_per_epoch": math.ceil(round(last["images_per_sec"] * last["epoch_seconds"]) / args.batch_size),
        "epoch_seconds": last["epoch_seconds"],
        "images_per_sec": last["images_per_sec"],
        "peak_memory_mb": round(peak_mb, 1),
        "first_val_loss": history[0]["val_loss"],
        "last_val_loss": last["val_loss"],
        "test_loss": metrics["test_loss"],
        "losses": [r[k] for r in history for k in ("train_loss", "val_loss")] + [metrics["test_loss"]],
        "syncs_last_epoch": syncs.count if device.type == "cuda" else None,
        "run_wall_seconds": round(wall, 1),
    }


def time_sample(run_dir: Path, device: torch.device, calls: int) -> dict:
    """Milliseconds of the work behind /sample (median of `calls`), and of the decode alone, on `device`."""
    from vae import pictures
    from vae.assets import load_assets

    assets = load_assets(run_dir)
    assets.model.to(device)
    files = []
    for i in range(3):  # warm-up: CUDA kernels, lazily imported modules
        files = pictures.sample_files(assets, SAMPLE_IMAGES, 10_000 + i, 1.0)
    whole, decode = [], []
    for i in range(calls):
        start = time.perf_counter()
        pictures.sample_files(assets, SAMPLE_IMAGES, i, 1.0)
        whole.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        assets.model.sample(SAMPLE_IMAGES, seed=i).cpu()  # (64, C, H, W), back on the host as /sample needs it
        decode.append((time.perf_counter() - start) * 1000)
    grid, singles = files
    return {
        "ms": round(statistics.median(whole), 2),
        "decode_ms": round(statistics.median(decode), 3),
        "files": len(singles) + 1 if Path(grid).is_file() else 0,
    }


def check(figures: dict, expected: str) -> list[str]:
    """What went wrong, in words; empty when all is well."""
    problems = []
    if not figures["device"].startswith(expected):
        problems.append(f"trained on {figures['device']}, not {expected}")
    if not figures["train_data_device"].startswith(expected):
        problems.append(f"the training images stayed on {figures['train_data_device']}")
    if figures["mixed_precision"] != "bf16":
        problems.append(f"mixed precision {figures['mixed_precision']}, not bf16")
    if not all(math.isfinite(x) for x in figures["losses"]):
        problems.append("a loss is not finite")
    if not figures["last_val_loss"] < figures["first_val_loss"]:
        problems.append(f"validation -ELBO did not fall ({figures['first_val_loss']} → {figures['last_val_loss']})")
    if figures["sample_files"] != SAMPLE_IMAGES + 1:
        problems.append(f"/sample wrote {figures['sample_files']} files, not {SAMPLE_IMAGES + 1}")
    return problems


def report(figures: dict) -> None:
    rows = [
        ["epoch time (last epoch's training loop)", f"{figures['epoch_seconds']:.2f} s"],
        ["images/s (last epoch)", f"{figures['images_per_sec']:,.0f}"],
        ["peak memory" + (" (GPU, allocated)" if figures["device"].startswith("cuda") else " (CPU process RSS)"),
         f"{figures['peak_memory_mb']:,.0f} MB"],
        ["test -ELBO", f"{figures['test_loss']:.2f} nats"],
        [f"/sample, {SAMPLE_IMAGES} images, model on {figures['device']}", f"{figures['sample_64_ms']:.1f} ms"],
        ["  of which decode + copy to host", f"{figures['sample_64_decode_ms']:.2f} ms"],
    ]  # fmt: skip
    if "sample_64_cpu_ms" in figures:
        rows.append([f"/sample, {SAMPLE_IMAGES} images, model on cpu", f"{figures['sample_64_cpu_ms']:.1f} ms"])
    if figures["syncs_last_epoch"] is not None:
        steps = figures["steps_per_epoch"]
        rows.append(["CPU waits for the GPU in the last epoch", f"{figures['syncs_last_epoch']} ({steps} steps)"])
    print_table(["figure", "value"], rows)


@command
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.allow_cpu)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run: --allow-cpu)"
    print(f"GPU check on {name}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.output.parent) as tmp:
        os.environ["GRADIO_TEMP_DIR"] = str(Path(tmp) / "gradio")  # /sample's files go with the run's folder
        run_dir = Path(tmp) / "vae"
        figures = {"gpu": name, "dry_run": device.type == "cpu", **train_run(args, device, run_dir)}
        sample = time_sample(run_dir, device, args.sample_calls)
        figures |= {"sample_64_ms": sample["ms"], "sample_64_decode_ms": sample["decode_ms"]}
        figures["sample_files"] = sample["files"]
        if device.type == "cuda":
            figures["sample_64_cpu_ms"] = time_sample(run_dir, torch.device("cpu"), args.sample_calls)["ms"]
    report(figures)
    problems = check(figures, device.type)
    write_results("gpu_check", {**figures, "problems": problems}, args.output)
    if problems:
        raise UserError(f"GPU check failed: {'; '.join(problems)}. The figures are in {args.output}.")
    print("all checks passed")
    return figures


if __name__ == "__main__":
    main()
