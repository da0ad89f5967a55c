"""How close our trainer comes to this machine's limit: its FLOP/s against plain matrix multiplies.

python -m bench.flops --data-dir ../shared/data               # 2 epochs of the default recipe
python -m bench.flops --data-dir ../shared/data --epochs 1 --threads 1
python -m bench.flops --data-dir ../shared/data --mixed-precision bf16   # bf16 autocast against bf16 GEMMs

The default recipe (configs/mnist.yaml: hidden_dims, latent_dim, batch_size) trains through
`vae.training.train`; its images per second (the trainer's own clock over the training loop, from
metrics.jsonl) times the FLOPs per image gives its achieved FLOP/s. The FLOPs counted are the matrix
multiplies of every Linear layer, with B images of a layer in → out:
  forward          2·B·in·out   (addmm)
  grad of weight   2·B·in·out   (mm)
  grad of input    2·B·in·out   (mm), except the encoder's first layer, whose input (the images) needs none
Biases, activations, the loss and Adam add work but no FLOPs counted here: they are what the ratio measures.

The limit: the same GEMMs (same shapes, same transposes as nn.Linear) with torch.addmm / torch.mm into
preallocated tensors, back to back, timed before the first epoch and after every epoch (from the trainer's
`on_epoch_end` hook), so each epoch is compared with the GEMM speed measured on either side of it.
Both are also timed by the CPU clock (this process's CPU seconds; ours by the trainer, `epoch_cpu_seconds` in
metrics.jsonl), which other processes on a shared machine disturb less; `--threads 1` keeps OpenMP threads from waiting on each other there.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import time

import torch

from bench.common import (
    bench_parser,
    images_per_cpu_second,
    median,
    our_config,
    print_table,
    read_history,
    start,
    write_results,
)
from vae.config import TrainConfig

TARGET = 0.7  # our FLOP/s as a fraction of the plain GEMMs'
COLUMNS = [
    "images_per_sec",
    "ours_gflops",
    "gemm_gflops",
    "ratio",
    "ours_gflops_per_cpu_sec",
    "gemm_gflops_per_cpu_sec",
    "cpu_ratio",
]
PIXELS = 28 * 28  # MNIST


def linear_shapes(config: TrainConfig, pixels: int = PIXELS) -> list[tuple[int, int, bool]]:
    """(in, out, needs grad of input) of every Linear of the VAE, encoder then decoder (as vae.model builds it)."""
    encoder = [pixels, *config.hidden_dims, 2 * config.latent_dim]
    decoder = [config.latent_dim, *reversed(config.hidden_dims), pixels]
    pairs = [*itertools.pairwise(encoder), *itertools.pairwise(decoder)]
    return [(i, o, k > 0) for k, (i, o) in enumerate(pairs)]  # the images (layer 0's input) need no gradient


def flops_per_image(shapes: list[tuple[int, int, bool]]) -> int:
    """Forward + backward matrix-multiply FLOPs per training image (a multiply-add counts 2)."""
    return sum(2 * i * o * (3 if needs_grad_input else 2) for i, o, needs_grad_input in shapes)


class GemmStep:
    """One training step's GEMMs for batch size B on preallocated tensors of `dtype`: the machine's limit for them."""

    def __init__(self, shapes: list[tuple[int, int, bool]], batch_size: int, dtype: torch.dtype = torch.float32):
        self.batch_size, self.shapes = batch_size, shapes
        self.layers = []
        for i, o, needs_grad_input in shapes:
            b = batch_size
            layer = {
                "x": torch.randn(b, i),  # layer input, kept for the weight gradient
                "weight": torch.randn(o, i) * i**-0.5,  # (out, in) as nn.Linear stores it
                "bias": torch.zeros(o),
                "y": torch.empty(b, o),
                "grad_y": torch.randn(b, o),
                "grad_weight": torch.empty(o, i),
                "grad_x": torch.empty(b, i) if needs_grad_input else None,
            }
            self.layers.append({k: v if v is None else v.to(dtype) for k, v in layer.items()})

    def run(self) -> None:
        for layer in self.layers:  # forward
            torch.addmm(layer["bias"], layer["x"], layer["weight"].t(), out=layer["y"])  # (B, out)
        for layer in reversed(self.layers):  # backward
            torch.mm(layer["grad_y"].t(), layer["x"], out=layer["grad_weight"])  # (out, in)
            if layer["grad_x"] is not None:
                torch.mm(layer["grad_y"], layer["weight"], out=layer["grad_x"])  # (B, in)

    def measure(self, seconds: float) -> tuple[float, float]:
        """(FLOP per wall second, FLOP per CPU second) of back-to-back steps for about `seconds`."""
        for _ in range(5):
            self.run()
        steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - start) < seconds or steps < 10:
            self.run()
            steps += 1
        flops = steps * self.batch_size * flops_per_image(self.shapes)
        return flops / elapsed, flops / (time.process_time() - cpu_start)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("flops", __doc__)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of our trainer (default: 2)")
    parser.add_argument("--gemm-seconds", type=float, default=3.0, help="seconds per GEMM measurement (default: 3)")
    parser.add_argument(
        "--mixed-precision",
        choices=("no", "bf16"),
        default="no",
        help="the trainer's, and the GEMMs' dtype (default: no)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start(args)
    output_dir = tempfile.mkdtemp(prefix="bench-flops-")
    config = our_config(
        {
            "data_dir": args.data_dir,
            "output_dir": output_dir,
            "epochs": args.epochs,
            "cpu": True,
            "mixed_precision": args.mixed_precision,
            "iw_samples": 0,  # keep the export after the last epoch short; it is not timed anyway
            "tsne_samples": 10,
        }
    )
    shapes = linear_shapes(config)
    per_image = flops_per_image(shapes)
    gemm = GemmStep(shapes, config.batch_size, torch.bfloat16 if args.mixed_precision == "bf16" else torch.float32)
    gemm_flops: list[tuple[float, float]] = []  # (per wall second, per CPU second)

    def measure_gemm(*_) -> None:
        gemm_flops.append(gemm.measure(args.gemm_seconds))
        print(f"plain GEMMs: {gemm_flops[-1][0] / 1e9:.1f} GFLOP/s")

    try:
        from vae.training import train

        measure_gemm()
        train(config, on_epoch_end=measure_gemm)
        history = read_history(output_dir)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)

    epochs, rows = [], []
    for record, before, after in zip(history, gemm_flops[:-1], gemm_flops[1:], strict=True):
        ours, limit = record["images_per_sec"] * per_image, (before[0] + after[0]) / 2
        # the same per CPU second: less disturbed by other processes
        ours_cpu, limit_cpu = images_per_cpu_second(record) * per_image, (before[1] + after[1]) / 2
        epoch = {
            "epoch": record["epoch"],
            "images_per_sec": record["images_per_sec"],
            "ours_gflops": round(ours / 1e9, 2),
            "gemm_gflops": round(limit / 1e9, 2),
            "ratio": round(ours / limit, 3),
            "ours_gflops_per_cpu_sec": round(ours_cpu / 1e9, 2),
            "gemm_gflops_per_cpu_sec": round(limit_cpu / 1e9, 2),
            "cpu_ratio": round(ours_cpu / limit_cpu, 3),
        }
        epochs.append(epoch)
        rows.append([record["epoch"], *(epoch.get(key, float("nan")) for key in COLUMNS)])
    summary = {key: round(median([e[key] for e in epochs]), 3) for key in COLUMNS if key in epochs[0]}
    ratio = summary["ratio"]
    rows.append(["median", *(summary.get(key, float("nan")) for key in COLUMNS)])
    print()
    layers = ", ".join(f"{i}→{o}" for i, o, _ in shapes)
    print(f"layers {layers}; batch {config.batch_size}; {per_image / 1e6:.3f} MFLOP per training image")
    print_table(
        ["epoch", "img/s", "ours GFLOP/s", "GEMM GFLOP/s", "ours/GEMM", "per CPU-s: ours", "GEMM", "ours/GEMM"], rows
    )
    print(
        f"\nours / plain GEMMs, wall clock (median of per-epoch ratios): {ratio:.2f}  target >= {TARGET}: {ratio >= TARGET}"
    )
    if "cpu_ratio" in summary:
        print(f"ours / plain GEMMs, per CPU-second: {summary['cpu_ratio']:.2f} (less disturbed by other processes)")
    results = {
        "timed": "our training loop (metrics.jsonl: epoch_seconds, epoch_cpu_seconds) vs the same forward+backward GEMMs alone "
        "(see bench/flops.py)",
        "threads": torch.get_num_threads(),
        "precision": args.mixed_precision,
        "layers": [{"in": i, "out": o, "grad_input": g} for i, o, g in shapes],
        "batch_size": config.batch_size,
        "flops_per_image": per_image,
        "epochs": epochs,
        "gemm_gflops_each": [round(wall / 1e9, 2) for wall, _ in gemm_flops],
        "gemm_gflops_per_cpu_sec_each": [round(cpu / 1e9, 2) for _, cpu in gemm_flops],
        **summary,
        "target": TARGET,
        "met": ratio >= TARGET,
    }
    write_results("flops" if args.mixed_precision == "no" else f"flops_{args.mixed_precision}", results, args.output)
    return results


if __name__ == "__main__":
    main()
