"""Training throughput of our trainer against the pytorch/examples VAE, the same net on the same data.

python -m bench.throughput --data-dir ../shared/data            # 3 epochs of each, alternated
python -m bench.throughput --data-dir ../shared/data --epochs 1 --threads 1

Both train the 784-400-20 VAE with Adam at 1e-3 and batch 128 on MNIST: the reference as pytorch/examples
does (bench/reference.py), ours through `vae.training.train` with `--hidden-dims 400 --latent-dim 20
--lr-schedule constant`. Epochs alternate in one process (reference, ours, reference, ours, ...) so that
both see the same machine load; the reference's epochs run from our trainer's `on_epoch_end` hook.

What is timed, for both: training images per second of the training loop alone.
  ours       the trainer's own clock (`epoch_seconds` in metrics.jsonl): batch indexing and uint8 → float,
             forward, loss, backward, Adam, LR schedule and metric sums; not validation, checkpoints,
             the hook or the final export. Ours trains on 55,000 images (5,000 are held out).
  reference  its whole `for data, _ in train_loader` loop: DataLoader + ToTensor per image, forward,
             loss, backward, `loss.item()`, Adam; not its test pass. It trains on all 60,000 images.
The same loops are also timed by the CPU clock (this process's CPU seconds; ours by the trainer itself,
`epoch_cpu_seconds` in metrics.jsonl), which other processes on a shared machine disturb less.
On a machine shared with other work, `--threads 1` keeps OpenMP threads from waiting on each other.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile

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
from bench.reference import make_loaders, make_model, train_epoch

TARGET = 3.0  # ours must train at least this many times faster than the reference
COLUMNS = [
    "reference_images_per_sec",
    "ours_images_per_sec",
    "ratio",
    "reference_images_per_cpu_sec",
    "ours_images_per_cpu_sec",
    "cpu_ratio",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("throughput", __doc__)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each, alternated (default: 3)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start(args)
    train_loader, _ = make_loaders(args.data_dir)
    ref_model, ref_optimizer = make_model()
    reference: list[dict] = []

    def reference_epoch() -> None:
        with torch.random.fork_rng(devices=[]):  # leave our trainer's random stream as it would be alone
            reference.append(train_epoch(ref_model, ref_optimizer, train_loader))
        r = reference[-1]
        print(f"reference epoch {len(reference)}: {r['seconds']:.1f}s  {r['images'] / r['seconds']:.0f} img/s")

    def on_epoch_end(epoch: int, model) -> None:
        if epoch < args.epochs:
            reference_epoch()

    output_dir = tempfile.mkdtemp(prefix="bench-throughput-")
    try:
        config = our_config(
            {
                "data_dir": args.data_dir,
                "output_dir": output_dir,
                "hidden_dims": [400],
                "activation": "relu",  # the reference net exactly
                "latent_dim": 20,
                "batch_size": 128,
                "lr": 1e-3,
                "lr_schedule": "constant",
                "warmup_steps": 0,
                "kl_warmup_epochs": 0.0,
                "dropout": 0.0,
                "epochs": args.epochs,
                "mixed_precision": "no",
                "cpu": True,
                "iw_samples": 0,  # keep the export after the last epoch short; it is not timed anyway
                "tsne_samples": 10,
            }
        )
        from vae.training import train  # after the config: a bad flag fails before torch work starts

        reference_epoch()
        train(config, on_epoch_end=on_epoch_end)
        history = read_history(output_dir)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)

    pairs, rows = [], []
    for epoch, (ref, record) in enumerate(zip(reference, history, strict=True), start=1):
        pair = {
            "epoch": epoch,
            "reference_images": ref["images"],
            "reference_seconds": round(ref["seconds"], 3),
            "reference_images_per_sec": round(ref["images"] / ref["seconds"], 1),
            "reference_images_per_cpu_sec": round(ref["images"] / ref["cpu_seconds"], 1),
            "ours_seconds": record["epoch_seconds"],
            "ours_images_per_sec": record["images_per_sec"],  # the trainer's own figures, metrics.jsonl
            "ours_images_per_cpu_sec": round(images_per_cpu_second(record), 1),
        }
        pair["ratio"] = round(pair["ours_images_per_sec"] / pair["reference_images_per_sec"], 3)
        pair["cpu_ratio"] = round(pair["ours_images_per_cpu_sec"] / pair["reference_images_per_cpu_sec"], 3)
        pairs.append(pair)
        rows.append([epoch, *(pair.get(key, float("nan")) for key in COLUMNS)])
    summary = {key: round(median([p[key] for p in pairs]), 3) for key in COLUMNS if key in pairs[0]}
    ratio = summary["ratio"]
    rows.append(["median", *(summary.get(k, float("nan")) for k in COLUMNS)])
    print()
    print_table(
        ["epoch", "ref img/s", "ours img/s", "ours/ref", "ref img/cpu-s", "ours img/cpu-s", "cpu ours/ref"], rows
    )
    print(
        f"\nours / reference, wall clock (median of per-epoch ratios): {ratio:.2f}x  target >= {TARGET}x: {ratio >= TARGET}"
    )
    if "cpu_ratio" in summary:
        print(f"ours / reference, per CPU-second: {summary['cpu_ratio']:.2f}x (less disturbed by other processes)")
    results = {
        "timed": "training images per second of the training loop only, wall and CPU clocks (see bench/throughput.py)",
        "threads": torch.get_num_threads(),
        "net": "784-400-20 ReLU, batch 128, Adam 1e-3, constant LR",
        "epochs": pairs,
        **summary,
        "target": TARGET,
        "met": ratio >= TARGET,
    }
    write_results("throughput", results, args.output)
    return results


if __name__ == "__main__":
    main()
