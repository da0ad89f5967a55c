"""How long the Train tab's model folder takes to write, phase by phase: the export after a visitor's run.

python -m bench.live_export --data-dir ../shared/data [--epochs 1] [--latent-dim 16]

Trains what a visitor's full run trains (vae.live.LiveSettings: MNIST, 784 → 512 → 256 → 16, all 59,000 training
images; one epoch by default, since the export's work does not grow with the epochs) with the child's settings (one
thread, TQDM off), then times each phase of the export (vae.export.EXPORT_PHASES) through the trainer's on_export hook,
the hook the Train tab's progress bar is driven by. Prints a table and writes bench/results/live_export.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from bench.common import start, write_results
from vae import live
from vae.training import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="MNIST root")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/live_export.json)")
    args = parser.parse_args(argv)
    os.environ["TQDM_DISABLE"] = "1"
    args.threads = 1  # as the Train tab's child process (vae.live.child)
    start(args)
    settings = live.LiveSettings("MNIST", args.latent_dim, "512 → 256", args.epochs, live.MAX_TRAIN_IMAGES, 0)
    marks: list[tuple[str, float]] = []  # (what starts, when)
    with tempfile.TemporaryDirectory() as tmp:
        config = settings.config(args.data_dir, Path(tmp) / "model")
        train(
            config,
            on_train_end=lambda: marks.append(("export", time.perf_counter())),
            on_export=lambda phase, number, of: marks.append((phase, time.perf_counter())),
            keep_on_stop=True,
        )
        ended = time.perf_counter()
    phases = {
        name: round(later - since, 2)
        for (name, since), (_, later) in zip(marks[1:], marks[2:] + [("", ended)], strict=True)
    }
    total = round(ended - marks[0][1], 2)
    for name, seconds in phases.items():
        print(f"{name:20s} {seconds:6.2f} s")
    print(f"{'export in all':20s} {total:6.2f} s  (training over → model folder written)")
    write_results(
        "live_export",
        {
            "settings": vars(settings),
            "torch_threads": torch.get_num_threads(),
            "export_seconds": total,
            "phase_seconds": phases,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
