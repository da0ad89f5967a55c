"""Where a training step's time goes: the trainer's own step, profiled op by op, against its matrix multiplies alone.

python -m bench.step_profile --data-dir ../shared/data                       # the speedrun recipe (bf16)
python -m bench.step_profile --data-dir ../shared/data --mixed-precision no  # the same net in fp32
python -m bench.step_profile --data-dir ../shared/data --threads 1 --hidden-dims 400 --latent-dim 20 --activation relu

Any of train.py's flags after the benchmark's own changes the recipe (--config's file first, then the flags).

One epoch of the recipe trains through `vae.training.train`; torch.profiler records --steps of its optimizer steps
after --skip steps (the `on_step` hook advances the profiler's schedule), so what is measured is the trainer's step
with everything it does: batch indexing, uint8 → float, autocast, forward, loss, backward, fused Adam, the schedule
and the metric sums. Each op's self time (the calling thread's wall time inside it, its OpenMP threads included) is
put in one of the groups below, and what no op accounts for (Python, autograd's engine, the profiler itself) is the
step's wall time, by the hook's clock over the same steps, less theirs. The epoch's last steps run without the
profiler: their time is the step's own.

The limit beside it: the same GEMMs alone, in the same precision (bench.flops' GemmStep), timed right after the
epoch. "GEMM share" is that limit over the step's wall time: the fraction bench.flops reports, measured here without
the profiler; "GEMMs and Adam only" is how close a step could come if everything else (activations, loss, sampling,
sums, casts, autograd's bookkeeping) cost nothing.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from bench.common import ROOT, bench_parser, print_table, start, write_results
from bench.flops import GemmStep, flops_per_image, linear_shapes
from vae.config import parse_config

# Op name fragments → group; the first group whose fragment is in an op's name takes it.
GROUPS = {
    "matrix multiplies": ("aten::mm", "aten::addmm", "aten::bmm"),
    "optimizer (fused Adam, zero_grad)": ("adam", "zero_grad", "Optimizer."),
    "casts and copies": ("copy_", "_to_copy", "aten::to"),
}
ELEMENTWISE = "elementwise and reductions"  # activations, loss, sampling, sums, indexing: every other op
BETWEEN = "between ops (Python, autograd, profiler)"  # the step's wall time that no op accounts for


def group_of(name: str) -> str:
    lowered = name.lower()
    return next((g for g, parts in GROUPS.items() if any(p.lower() in lowered for p in parts)), ELEMENTWISE)


def main(argv: list[str] | None = None) -> dict:
    parser = bench_parser("step_profile", __doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mnist_fast.yaml", help="the recipe")
    parser.add_argument("--skip", type=int, default=50, help="steps before the profiled ones (default: 50)")
    parser.add_argument("--steps", type=int, default=200, help="steps profiled (default: 200)")
    args, trainer_flags = parser.parse_known_args(argv)  # the rest are train.py's flags
    start(args)
    output_dir = Path(tempfile.mkdtemp(prefix="bench-step-profile-"))
    argv = ["--config", str(args.config), "--data-dir", args.data_dir, "--output-dir", str(output_dir / "run")]
    argv += ["--epochs", "1", "--iw-samples", "0", "--tsne-samples", "10", "--steering-images", "100"]
    argv += ["--cpu", *trainer_flags]
    config = parse_config(argv)
    dtype = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float32
    clock: list[float] = []  # the hook's time after every step
    profiler = profile(
        activities=[ProfilerActivity.CPU],
        schedule=schedule(wait=args.skip - 1, warmup=1, active=args.steps, repeat=1),
    )

    def on_step(epoch: int, step: int, steps: int, images: int, loss: float) -> None:
        clock.append(time.perf_counter())
        profiler.step()

    try:
        from vae.training import train

        with profiler:
            train(config, on_step=on_step)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    unprofiled = len(clock) - (args.skip + args.steps + 10)  # after the profiled steps, and 10 more
    if unprofiled < 50:
        raise SystemExit(f"an epoch of this recipe has too few steps for --skip {args.skip} --steps {args.steps}")
    step_ms = (clock[args.skip + args.steps - 1] - clock[args.skip - 1]) / args.steps * 1e3  # profiler on
    bare_ms = (clock[-1] - clock[-unprofiled - 1]) / unprofiled * 1e3  # the same epoch's last steps, profiler off

    shapes = linear_shapes(config)
    gemm_flops, _ = GemmStep(shapes, config.batch_size, dtype).measure(3.0)
    gemm_ms = config.batch_size * flops_per_image(shapes) / gemm_flops * 1e3

    groups: dict[str, float] = dict.fromkeys([*GROUPS, ELEMENTWISE], 0.0)
    ops: dict[str, float] = {}  # every op's ms per step
    for event in profiler.key_averages():
        if not event.key.startswith("ProfilerStep"):
            ops[event.key] = event.self_cpu_time_total / 1e3 / args.steps
            groups[group_of(event.key)] += ops[event.key]
    groups[BETWEEN] = max(0.0, step_ms - sum(groups.values()))
    rows = [[name, round(ms, 3), round(100 * ms / step_ms, 1)] for name, ms in groups.items()]
    rows.append(["the step, profiled", round(step_ms, 3), 100.0])
    rows.append(["the step, profiler off", round(bare_ms, 3), round(100 * bare_ms / step_ms, 1)])
    rows.append(["its GEMMs alone (bench.flops' GemmStep)", round(gemm_ms, 3), round(100 * gemm_ms / step_ms, 1)])
    net = "-".join(map(str, [784, *config.hidden_dims, config.latent_dim]))
    print(f"\n{config.activation} {net}, batch {config.batch_size}, {config.mixed_precision}, "
          f"{torch.get_num_threads()} thread(s); {args.steps} steps profiled, {unprofiled} not")  # fmt: skip
    print_table(["", "ms/step", "% of the profiled step"], rows)
    top = sorted(((ms, op) for op, ms in ops.items() if group_of(op) == ELEMENTWISE), reverse=True)[:8]
    print(f"\n{ELEMENTWISE}, the most costly: " + ", ".join(f"{op} {ms:.3f}" for ms, op in top))
    adam_ms = groups["optimizer (fused Adam, zero_grad)"]
    results = {
        "config": str(args.config),
        "precision": config.mixed_precision,
        "threads": torch.get_num_threads(),
        "steps_profiled": args.steps,
        "step_ms_profiled": round(step_ms, 3),
        "step_ms": round(bare_ms, 3),
        "groups_ms": {name: round(ms, 3) for name, ms in groups.items()},
        "ops_ms": {op: round(ms, 4) for op, ms in sorted(ops.items(), key=lambda item: -item[1])},
        "gemm_alone_ms": round(gemm_ms, 3),
        "gemm_alone_gflops": round(gemm_flops / 1e9, 1),
        "gemm_share": round(gemm_ms / bare_ms, 3),
        "gemm_and_adam_share": round(gemm_ms / (gemm_ms + adam_ms), 3),
    }
    print(
        f"\nGEMM share of the step (profiler off): {results['gemm_share']:.2f} ({gemm_flops / 1e9:.0f} GFLOP/s alone). "
        f"A step of its GEMMs and Adam only would reach {results['gemm_and_adam_share']:.2f}."
    )
    write_results(f"step_profile_{config.mixed_precision}", results, args.output)
    return results


if __name__ == "__main__":
    main()
