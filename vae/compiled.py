"""The training step compiled by torch.compile (train.py's --compile): when a run compiles it, and how.

`compile_step` compiles the step's forward pass and loss, and so its backward pass, on one full batch before the first
epoch; `vae.training.train_step` runs the compiled code on every batch of that size and the plain code on an epoch's
last, smaller batch. docs/training.md says when it pays; `python -m bench.compile_step` measures it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from accelerate import Accelerator

from vae.config import TrainConfig
from vae.errors import Interrupted, UserError, first_line
from vae.imaging import as_float
from vae.loss import ELBOParts, importance_weighted_bound, negative_elbo

# --compile's default: compile the step when the run has this many steps to go. Compiling takes up to ~30 s (seconds when
# torch's cache already holds the kernels), and the default net's step is then 1.3x faster on a 2-core CPU (a 256-image
# step saves ~2.7 ms: the time back after ~10,000 steps), so a run this long gains at least as much as it waits.
COMPILE_MIN_STEPS = 20_000


class Compiled(NamedTuple):
    """The step's forward and loss as torch.compile made them, for batches of `batch` images."""

    loss: Callable[[torch.Tensor, torch.Tensor], ELBOParts]
    batch: int
    seconds: float  # compiling it took


def step_loss(config: TrainConfig, accelerator: Accelerator, model: torch.nn.Module):
    """The part of a step torch.compile takes: the forward pass and the loss terms of a batch, at a KL weight."""

    def loss(x: torch.Tensor, kl_weight: torch.Tensor | float) -> ELBOParts:
        with accelerator.autocast():
            out = model(x, samples=config.train_samples)
        if config.objective == "iwae":
            return importance_weighted_bound(out.logits, x, out.mu, out.logvar, out.z, kl_weight)
        return negative_elbo(out.logits, x, out.mu, out.logvar, kl_weight)

    return loss


def compiles(config: TrainConfig, steps_to_go: int, device: torch.device) -> bool:
    """Whether the run compiles its step: --compile or --no-compile, else when it is long enough to pay (on a CPU or a
    CUDA GPU; torch.compile is still a prototype on Apple's MPS)."""
    if config.compile is not None:
        return config.compile
    return device.type in ("cpu", "cuda") and steps_to_go >= COMPILE_MIN_STEPS


@contextlib.contextmanager
def quiet_compiler() -> Iterator[None]:
    """Without torch's warnings that say nothing to a user about their run: "No CUDA runtime is found" on every CPU,
    and that DistributedDataParallel's profiler labels are left out of the compiled code."""
    loggers = [logging.getLogger(name) for name in ("torch.utils.cpp_extension", "torch._dynamo.variables.ctx_manager")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def compile_step(
    loss: Callable,
    model: torch.nn.Module,
    images: torch.Tensor,
    steps_to_go: int,
    config: TrainConfig,
    accelerator: Accelerator,
) -> Compiled | None:
    """The step's `loss` (step_loss) compiled now, on a full batch of `images`, so that the first epoch's time is the
    step's own; None where the run does not compile (`compiles`) or, by default, cannot. The run's random state is left
    as it was, and no weight of `model` changes. The last, smaller batch of an epoch runs uncompiled: one shape, no
    recompiling."""
    if not compiles(config, steps_to_go, accelerator.device):
        return None
    accelerator.print("compiling the training step with torch.compile (up to ~30 s, once; --no-compile to skip it)")
    start = time.perf_counter()
    batch = min(config.batch_size, len(images) // accelerator.num_processes)
    x = as_float(images[:batch].to(accelerator.device))
    compiled = torch.compile(loss)
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), quiet_compiler():
            compiled(x, torch.ones((), device=accelerator.device)).loss.mean().backward()
    except Interrupted:
        raise
    except Exception as err:  # noqa: BLE001 - torch.compile fails in many ways (no C++ compiler, an unsupported op)
        if config.compile:
            raise UserError(
                f"--compile: torch.compile cannot compile the training step here ({first_line(err)[:300]}). On a CPU "
                "it needs a C++ compiler (gcc or clang) on the PATH. Train without it: --no-compile."
            ) from None
        accelerator.print(f"torch.compile failed here ({first_line(err)[:200]}): training uncompiled")
        return None
    finally:
        model.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    accelerator.print(f"compiled in {seconds:.1f} s")
    return Compiled(compiled, batch, seconds)
