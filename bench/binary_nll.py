"""Dynamically binarised MNIST: test NLL against training wall time, for a recipe such as configs/mnist_binary.yaml.

python -m bench.binary_nll --data-dir ../shared/data --threads 1 --output-dir runs/vae-mnist-binary
python -m bench.binary_nll --config configs/mnist_binary.yaml --epochs 20 --every 5 --curve-images 500

Trains through `vae.training.train` (the run `train.py --config CONFIG` does) and, every --every epochs, keeps a copy
of the weights with the wall-clock and CPU seconds since `train` was called; copying them is taken off both clocks.
After the run, each copy's test NLL is estimated with K = --curve-k importance samples on the first --curve-images
images of the fixed binarised test set: the curve. The final model's figure on the whole test set with K = 5000 is
`python -m vae.evaluate --checkpoint OUTPUT_DIR --iw-samples 5000` (minutes on a laptop CPU).

Prints a table and writes bench/results/binary_nll.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import bench_parser, print_table, read_history, start, write_results
from vae.config import parse_config
from vae.data import DataSettings, load_splits
from vae.evaluate import iw_nll
from vae.model import VAE
from vae.training import train

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    parser = bench_parser("binary_nll", __doc__)
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist_binary.yaml"), help="the recipe")
    parser.add_argument("--output-dir", help="the run's model folder (default: the config's)")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--every", type=int, default=10, help="epochs between points of the curve")
    parser.add_argument("--curve-images", type=int, default=1000, help="test images for each point of the curve")
    parser.add_argument("--curve-k", type=int, default=1000, help="importance samples per image for the curve")
    args = parser.parse_args(argv)
    start(args)
    flags = ["--config", args.config, "--data-dir", args.data_dir, "--cpu"]
    flags += ["--output-dir", args.output_dir] if args.output_dir else []
    flags += ["--epochs", str(args.epochs)] if args.epochs else []
    config = parse_config(flags)

    snapshots, paused = [], {"wall": 0.0, "cpu": 0.0}
    began, cpu_began = time.perf_counter(), time.process_time()

    def keep(epoch: int, model: VAE) -> None:
        hook, cpu_hook = time.perf_counter(), time.process_time()
        if epoch % args.every == 0 or epoch == config.epochs:
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            wall, cpu = hook - began - paused["wall"], cpu_hook - cpu_began - paused["cpu"]
            snapshots.append({"epoch": epoch, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "weights": weights})
        paused["wall"] += time.perf_counter() - hook
        paused["cpu"] += time.process_time() - cpu_hook

    output_dir = train(config, on_epoch_end=keep)
    test = load_splits(DataSettings.of(config)).test.images[: args.curve_images]  # the fixed binarisation
    model = VAE.from_pretrained(output_dir).eval()
    rows = []
    for snapshot in snapshots:
        model.load_state_dict(snapshot.pop("weights"))
        nll = iw_nll(model, test, args.curve_k)
        rows.append({**snapshot, f"test_nll_k{args.curve_k}": round(nll, 2)})
        print(f"epoch {snapshot['epoch']}: {nll:.2f} nats after {snapshot['wall_s']:.0f} s", flush=True)
    history = read_history(output_dir)
    results = {
        "config": args.config,
        "output_dir": str(output_dir),
        "curve_images": len(test),
        "curve_k": args.curve_k,
        "curve": rows,
        "train_seconds": round(sum(r["epoch_seconds"] for r in history), 1),
        "train_cpu_seconds": round(sum(r["epoch_cpu_seconds"] for r in history), 1),
        "epochs": len(history),
    }
    print_table(
        ["epoch", "wall s", "CPU s", f"test NLL (K={args.curve_k}, {len(test)} images)"],
        [[r["epoch"], r["wall_s"], r["cpu_s"], r[f"test_nll_k{args.curve_k}"]] for r in rows],
    )
    write_results("binary_nll", results, args.output)
    return results


if __name__ == "__main__":
    main()
