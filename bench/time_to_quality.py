"""Time to quality: wall time until the default recipe's test negative ELBO first reaches 100 nats.

python -m bench.time_to_quality --data-dir ../shared/data
python -m bench.time_to_quality --data-dir ../shared/data --threads 1 --max-seconds 600 --no-reference

Ours: the default config (configs/mnist.yaml, whatever it holds when run) on the CPU through
`vae.training.train`. The clock starts when `train` is called (data loading, setup, validation and the
per-epoch checkpoints all count) and is read at the start of the `on_epoch_end` hook after each epoch.
The hook then computes the negative ELBO of the full 10,000-image test set (vae.evaluate.elbo_sums, fixed
posterior noise); that is not part of training, so the hook's time is taken off the clock. The run stops
at the first epoch at or under the threshold (or past --max-seconds). Seconds since the process started
(imports included, the hooks excluded) are reported too, and so are the CPU seconds used until then:
with one thread, about what the run would take on a machine to itself.

The reference (bench/reference.py, the pytorch/examples VAE) trains in the same process, on its own clock
and its own random stream, from our hook: after each of our epochs it trains whole epochs until its clock
has caught up with ours, so both see the same machine load. Its clock starts with building its DataLoaders
and pauses while it evaluates its test loss after each epoch (the example's own `test`). Its loss at our
time to quality is reported both as that of its last epoch finished by then and linearly interpolated
between the epochs either side.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time

import psutil
import torch

from bench.common import bench_parser, our_config, print_table, read_history, start, write_results
from bench.reference import make_loaders, make_model, test_loss, train_epoch
from vae.data import DataSettings, load_splits
from vae.evaluate import elbo_sums

THRESHOLD = 100.0  # nats: test negative ELBO to reach
TARGET_SECONDS = 120.0


class StopTraining(Exception):
    """Raised from the hook to end the run early; caught right outside `train`."""


class Reference:
    """The reference, trained in slices on its own (wall) clock and its own random stream."""

    def __init__(self, data_dir: str):
        self.seconds, self.epochs = 0.0, []
        self.rng_state = torch.get_rng_state()
        with self.own_random_stream():
            with self.clock():
                self.train_loader, self.test_loader = make_loaders(data_dir)
                self.model, self.optimizer = make_model()  # seeds the stream as the example does
            self.record()

    @contextlib.contextmanager
    def own_random_stream(self):
        """Leave the caller's random stream (our trainer's) exactly as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng_state)
            yield
            self.rng_state = torch.get_rng_state()

    @contextlib.contextmanager
    def clock(self):
        start = time.perf_counter()
        yield
        self.seconds += time.perf_counter() - start

    def record(self) -> None:
        """Test loss now, off the clock."""
        loss = test_loss(self.model, self.test_loader)
        self.epochs.append({"epoch": len(self.epochs), "seconds": round(self.seconds, 2), "test_loss": round(loss, 3)})
        print(f"  reference epoch {len(self.epochs) - 1}: {self.seconds:.1f}s  test loss {loss:.2f}")

    def catch_up(self, seconds: float) -> None:
        """Train whole epochs until this clock has reached `seconds`."""
        while self.seconds < seconds:
            with self.own_random_stream():
                with self.clock():
                    train_epoch(self.model, self.optimizer, self.train_loader)
                self.record()


def run(args: argparse.Namespace) -> tuple[list[dict], Reference | None, dict]:
    output_dir = tempfile.mkdtemp(prefix="bench-ttq-")
    overrides = {"data_dir": args.data_dir, "output_dir": output_dir, "cpu": True, "iw_samples": 0, "tsne_samples": 10}
    config = our_config(overrides)
    test_images = load_splits(DataSettings.of(config)).test.images  # before the clock starts; the trainer loads its own
    reference = Reference(args.data_dir) if args.reference else None
    from vae.training import train

    epochs: list[dict] = []
    excluded, cpu_excluded = 0.0, 0.0  # wall and CPU seconds spent in the hook: our test loss, the reference
    process_start = psutil.Process().create_time()  # time.time() seconds

    def on_epoch_end(epoch: int, model) -> None:
        nonlocal excluded, cpu_excluded
        entered, cpu_entered = time.perf_counter(), time.process_time()
        seconds = entered - start - excluded
        cpu_seconds = cpu_entered - cpu_start - cpu_excluded  # what a machine to ourselves would take, 1 thread
        since_process = time.time() - process_start - excluded
        was_training = model.training
        model.eval()
        loss = elbo_sums(model, test_images, config.eval_batch_size).as_means()["loss"]
        model.train(was_training)
        epochs.append(
            {
                "epoch": epoch,
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu_seconds, 2),
                "test_loss": round(loss, 3),
            }
        )
        # of which the training loop itself (the rest: setup, validation, checkpoints), as the trainer recorded it
        epochs[-1]["train_loop_seconds"] = round(read_history(output_dir)[-1]["epoch_seconds"], 2)
        print(f"  ours epoch {epoch}: {seconds:.1f}s ({cpu_seconds:.1f} CPU-s)  test -ELBO {loss:.2f}")
        if reference is not None:
            reference.catch_up(seconds)
        excluded += time.perf_counter() - entered
        cpu_excluded += time.process_time() - cpu_entered
        if loss <= args.threshold or seconds > args.max_seconds:
            epochs[-1]["seconds_since_process_start"] = round(since_process, 2)
            raise StopTraining

    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        train(config, on_epoch_end=on_epoch_end)
    except StopTraining:
        pass
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    recipe = ("hidden_dims", "latent_dim", "batch_size", "lr", "lr_schedule", "warmup_steps", "min_lr_ratio")
    recipe += ("kl_warmup_epochs", "dropout", "epochs", "seed", "mixed_precision")
    settings = {key: getattr(config, key) for key in recipe}
    return epochs, reference, settings


def loss_at(epochs: list[dict], seconds: float) -> tuple[float, float]:
    """(loss of the last epoch finished by `seconds`, loss linearly interpolated at `seconds`)."""
    done = [e for e in epochs if e["seconds"] <= seconds] or epochs[:1]
    after = next((e for e in epochs if e["seconds"] > seconds), None)
    last = done[-1]
    if after is None:
        return last["test_loss"], last["test_loss"]
    share = (seconds - last["seconds"]) / (after["seconds"] - last["seconds"])
    return last["test_loss"], last["test_loss"] + share * (after["test_loss"] - last["test_loss"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench_parser("time_to_quality", __doc__)
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="test -ELBO to reach, nats (default: 100)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="give up after this (default: 600)")
    parser.add_argument(
        "--reference", action=argparse.BooleanOptionalAction, default=True, help="also run the reference"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start(args)
    ours, reference, settings = run(args)
    reached = ours[-1]["test_loss"] <= args.threshold
    seconds = ours[-1]["seconds"]
    results = {
        "timed": "wall seconds from calling train() to the end of the first epoch at or under the threshold, "
        "minus the benchmark's hook (our test evaluations, the reference's epochs; see bench/time_to_quality.py)",
        "threads": torch.get_num_threads(),
        "threshold": args.threshold,
        "config": settings,
        "ours": ours,
        "reached": reached,
        "seconds": seconds if reached else None,
        "seconds_since_process_start": ours[-1]["seconds_since_process_start"] if reached else None,
        "cpu_seconds": ours[-1]["cpu_seconds"] if reached else None,
        "epoch": ours[-1]["epoch"] if reached else None,
        "target_seconds": TARGET_SECONDS,
        "met": reached and seconds <= TARGET_SECONDS,
    }
    rows = [["ours", ours[-1]["epoch"], seconds, ours[-1]["test_loss"]]]
    if reference is not None:
        last, interpolated = loss_at(reference.epochs, seconds)
        results["reference"] = reference.epochs
        results["reference_loss_at_seconds"] = {"last_finished_epoch": last, "interpolated": round(interpolated, 3)}
        finished = [e for e in reference.epochs if e["seconds"] <= seconds] or reference.epochs[:1]
        rows.append(["reference (last epoch done)", finished[-1]["epoch"], finished[-1]["seconds"], last])
        rows.append(["reference (interpolated)", "", seconds, interpolated])
    print()
    print_table(["run", "epoch", "seconds", "test -ELBO"], rows)
    verdict = f"reached {args.threshold} nats in {seconds:.1f}s" if reached else f"not reached in {seconds:.1f}s"
    verdict += f" ({ours[-1]['cpu_seconds']:.1f} CPU-seconds)"
    print(f"\nours {verdict}; target <= {TARGET_SECONDS:.0f}s: {results['met']}")
    write_results("time_to_quality", results, args.output)
    return results


if __name__ == "__main__":
    main()
