"""The trainer's step compiled by torch.compile (train.py's --compile) against the same step uncompiled, interleaved.

python -m bench.compile_step --data-dir ../shared/data                    # the default recipe (configs/mnist.yaml)
python -m bench.compile_step --data-dir ../shared/data --batch-size 256   # any train.py flag after the benchmark's own

Two copies of the recipe's model, optimizer and schedule are set up by `vae.training.set_up`, as a run sets them up;
one compiles its step (`vae.compiled.compile_step`, timed: what a run waits for before its first epoch). Both then
train on MNIST through `vae.training.train_step` in blocks of --block full batches taken in turn (ABBA order), so that
both see the same machine. The ratio of their median block times is the speed-up; the compiling time over the time
each step saves is how many steps a run needs before compiling pays (`vae.compiled.COMPILE_MIN_STEPS` is the rule's).
Torch's compiled-kernel cache (/tmp/torchinductor_<user>) makes a second compile of the same step faster: the first
run on a machine shows the cold figure.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from bench.common import bench_parser, our_config, print_table, start, write_results
from vae.compiled import COMPILE_MIN_STEPS, compile_step
from vae.config import build_parser
from vae.data import DataSettings, load_splits
from vae.training import Training, make_accelerator, mixed_precision_for, set_up, train_step


def block(training: Training, order: torch.Tensor, steps: int, at: int) -> float:
    """Milliseconds a step over `steps` full batches of `order` from batch `at`, at the KL weight of a run's end."""
    batch = training.config.batch_size
    began = time.perf_counter()
    for i in range(at, at + steps):
        train_step(training, order[i * batch : (i + 1) * batch], 1.0)
    return (time.perf_counter() - began) / steps * 1e3


def main(argv: list[str] | None = None) -> dict:
    parser = bench_parser("compile_step", __doc__)
    parser.add_argument("--rounds", type=int, default=12, help="blocks of each (default: 12)")
    parser.add_argument("--block", type=int, default=40, help="steps per block (default: 40)")
    args, flags = parser.parse_known_args(argv)
    start(args)
    overrides = vars(build_parser().parse_args(flags))
    overrides.pop("config")
    config = our_config({"data_dir": args.data_dir, **overrides, "compile": True})
    config = dataclasses.replace(config, mixed_precision=mixed_precision_for(config))
    splits = load_splits(DataSettings.of(config))
    accelerator = make_accelerator(config)
    architecture = config.model_config(tuple(splits.train.images.shape[1:]), splits.train.class_names)
    trainings = {}
    for name in ("uncompiled", "compiled"):
        torch.manual_seed(config.seed)
        trainings[name] = set_up(config, accelerator, architecture, splits)
    fast = trainings["compiled"]
    fast.compiled = compile_step(fast.loss, fast.model, splits.train.images, 1, config, accelerator)
    compiling = fast.compiled.seconds
    order = torch.randperm(len(splits.train)).to(splits.train.images.device)
    per_round = args.block * config.batch_size
    order = order.repeat(-(-(args.rounds * per_round + per_round) // len(order)))
    for training in trainings.values():
        block(training, order, 5, 0)  # warm-up: the first steps of each allocate what the others reuse
    ms: dict[str, list[float]] = {name: [] for name in trainings}
    for r in range(args.rounds):
        for name in trainings if r % 2 == 0 else reversed(trainings):
            ms[name].append(block(trainings[name], order, args.block, r * args.block))
    ratios = [a / b for a, b in zip(ms["uncompiled"], ms["compiled"], strict=True)]
    rows = [[name, round(statistics.median(v), 3), round(min(v), 3), round(max(v), 3)] for name, v in ms.items()]
    print_table(["step", "ms/step (median)", "min", "max"], rows)
    speedup = statistics.median(ratios)
    saved_ms = statistics.median(ms["uncompiled"]) - statistics.median(ms["compiled"])
    pays_after = round(compiling / (saved_ms / 1e3)) if saved_ms > 0 else None
    print(f"\nthe compiled step is {speedup:.2f}x faster (median of {len(ratios)} paired blocks; {min(ratios):.2f}-"
          f"{max(ratios):.2f}), batch {config.batch_size}, {config.mixed_precision}, {torch.get_num_threads()} "
          f"thread(s); compiling took {compiling:.1f} s and pays after {pays_after} steps (the default compiles "
          f"runs of {COMPILE_MIN_STEPS:,} steps or more)")  # fmt: skip
    results = {
        "precision": config.mixed_precision,
        "threads": torch.get_num_threads(),
        "device": str(accelerator.device),
        "net": f"{'-'.join(map(str, [784, *config.hidden_dims, config.latent_dim]))} {config.activation}, batch "
        f"{config.batch_size}, fused Adam",
        "ms_per_step": {name: round(statistics.median(v), 3) for name, v in ms.items()},
        "speedup": round(speedup, 3),
        "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "compile_seconds": round(compiling, 2),
        "pays_after_steps": pays_after,
        "compile_min_steps": COMPILE_MIN_STEPS,
    }
    write_results(f"compile_step_b{config.batch_size}", results, args.output)
    return results


if __name__ == "__main__":
    main()
