"""The Accelerate training loop: one epoch at a time, an atomic checkpoint after each, resumable.

One `Accelerator` owns the device, the processes and mixed precision. Every process holds the whole
dataset in memory as uint8 and takes its own shard of each epoch's permutation; metrics are summed over
processes; only the main process writes files.

`train` reads as the run's steps: check the settings, load the data, prepare the output folder (and the architecture
of the checkpoint to resume), set up the model, optimizer and schedule, restore the checkpoint, then for each epoch:
train it, validate, record it, save a checkpoint; finally export the best model and push it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import pickle
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import accelerate.optimizer
import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list, parse_flag_from_env, set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from vae.architecture import ModelConfig, check_architecture
from vae.checkpoints import (
    StopSignals,
    check_one_folder,
    check_same_architecture,
    checkpoint_architecture,
    failures_reported,
    latest_checkpoint,
    lost_peers_reported,
    stop_requested,
)
from vae.compiled import Compiled, compile_step, step_loss
from vae.config import TrainConfig, save_config
from vae.data import DataSettings, ImageSet, Splits, epoch_batches, load_splits
from vae.errors import Interrupted, UserError, first_line
from vae.evaluate import elbo_sums
from vae.export import export_model
from vae.folder import (
    BEST_WEIGHTS,
    CONFIG,
    HISTORY,
    PROGRESS,
    SCHEDULE,
    STATE_DIR,
    TRAIN_CONFIG,
    atomic_write_text,
    check_output_dir,
    clean_leftovers,
    discard,
    rewriting,
    start_fresh,
    writer_lock,
)
from vae.hub import check_hub_access, push_folder
from vae.imaging import as_float
from vae.loss import ELBOParts, ELBOTotals
from vae.model import VAE
from vae.tracking import check_trackers, finish_tracking, log_epoch, start_tracking, tracker_options

# Accelerate's optimizer wrapper asks whether the lomo_optim package is installed twice every step, each time searching
# sys.path for it (accelerate 1.15: 0.3 ms a step, 6% of a 784-400-20 step here); the answer cannot change in a run.
accelerate.optimizer.is_lomo_available = functools.cache(accelerate.optimizer.is_lomo_available)

# Set by every launcher of a real multi-process run (torchrun and accelerate's GPU launch: WORLD_SIZE; mpirun: the
# others), the names Accelerate reads the number of processes from.
WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


class TrainedEpoch(NamedTuple):
    """What training an epoch gives the record."""

    totals: ELBOTotals  # summed over every process
    kl_weight: float  # at the epoch's last step
    seconds: float  # the training loop's wall clock
    cpu_seconds: float  # the same loop by this process's CPU clock (all its threads)
    stopped: bool = False  # a stop (SIGINT, SIGTERM) ended it after the step it was in
    fraction: float = 1.0  # of its steps done


@dataclass
class Training:
    """What the steps of a run work with, on every process."""

    config: TrainConfig
    accelerator: Accelerator
    model: torch.nn.Module  # a VAE, wrapped by accelerator.prepare (DistributedDataParallel with several processes)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR  # stepped once per optimizer step
    train_set: ImageSet  # on the accelerator when it fits
    val_set: ImageSet
    steps_per_epoch: int
    progress: dict  # saved as progress.json: epoch, best_val_loss, best_epoch, history (the epochs' records)
    best_state: dict[str, torch.Tensor]  # the weights of the best epoch by validation loss, on the CPU
    loss: Callable[[torch.Tensor, torch.Tensor | float], ELBOParts]  # the step's forward and loss (step_loss)
    compiled: Compiled | None = None  # the same, compiled for the full batch (compile_step), when it is


def train(
    config: TrainConfig,
    on_epoch_end: Callable[[int, VAE], None] | None = None,
    on_step: Callable[[int, int, int, int, float], None] | None = None,
    on_train_end: Callable[[], None] | None = None,
    keep_on_stop: bool = False,
    on_export: Callable[[str, int, int], None] | None = None,
    hub_checked: bool = False,
) -> Path:
    """Train, keep the best model by validation loss, and export a Hub-ready folder; returns its path.

    `on_epoch_end(epoch, model)`, if given, is called on every process after each epoch's checkpoint and record
    (metrics.jsonl is written by then; benchmarks use it to measure test loss against wall time).
    `on_step(epoch, step, steps, images, loss)` after every optimizer step (step counts from 1; images and loss: the
    batch's size and mean loss on this process). `on_train_end()` when the last epoch is done or a stop ended the
    run, before the export; `on_export(phase, number, of)` as each phase of the export starts (vae.export.EXPORT_PHASES).
    `keep_on_stop`: SIGINT or SIGTERM ends the run at the next step and exports the best weights so far (the
    current ones included) instead of raising Interrupted; the app's Stop button works this way.
    `hub_checked`: the caller has checked the Hub access for --push-to-hub already (train.py, before these imports).
    """
    check_settings(config, hub=not hub_checked)  # everything that can be checked before any work
    config = dataclasses.replace(config, mixed_precision=mixed_precision_for(config))  # "auto" → what runs
    accelerator = make_accelerator(config)
    output_dir = Path(config.output_dir)
    with run_lock(accelerator, output_dir):  # one run writes a folder at a time; held through the push
        set_seed(config.seed)
        with lost_peers_reported(accelerator, output_dir, config.ddp_timeout):
            with accelerator.main_process_first():  # one process downloads or unpacks the data, the others read it
                splits = load_splits(DataSettings.of(config))
            try:
                hooks = Hooks(on_epoch_end, on_step, on_train_end, keep_on_stop, on_export)
                with StopSignals() as signals, failures_reported(accelerator, output_dir):
                    run(config, accelerator, splits, signals, hooks)
            finally:
                finish_tracking(accelerator)
            accelerator.wait_for_everyone()
        accelerator.end_training()
        if accelerator.is_main_process and config.push_to_hub:  # after the others: a failed upload stops no one
            push_folder(output_dir, config.hub_model_id, config.hub_private)
    return output_dir


@contextlib.contextmanager
def run_lock(accelerator: Accelerator, output_dir: Path) -> Iterator[None]:
    """The output folder's writer lock (vae.folder.writer_lock), held by the main process for the whole run; when
    another process holds it, every process of this run stops with its message before anything is loaded."""
    with contextlib.ExitStack() as held:
        refusal = None
        if accelerator.is_main_process:
            try:
                held.enter_context(writer_lock(output_dir))
            except UserError as err:
                refusal = str(err)
        if accelerator.num_processes > 1:
            refusal = broadcast_object_list([refusal])[0]
        if refusal:
            raise UserError(refusal)
        yield


def check_settings(config: TrainConfig, hub: bool = True) -> None:
    """The launch, the output folder, the model's size, the trackers' packages and (`hub`) the Hub access, checked
    before any data is loaded."""
    check_launch()
    check_output_dir(config.output_dir)
    image_shape = DataSettings.of(config).image_shape
    check_architecture(image_shape, config.hidden_dims, config.latent_dim, "--hidden-dims / --latent-dim")
    check_trackers(config.report_to)
    if hub and config.push_to_hub:
        check_hub_access(config.hub_model_id)  # fail before hours of training, not after


def check_launch() -> None:
    """A process told where its run meets (MASTER_ADDR) but not how many processes the run has: `accelerate launch
    --cpu` with --num_processes or --num_machines above 1 starts each process that way (its multi-CPU launch expects
    mpirun), and every one would train alone as a "main" process writing the same folder."""
    if os.environ.get("MASTER_ADDR") and not any(os.environ.get(name) for name in WORLD_SIZE_VARS):
        raise UserError(
            f"This process was started for a distributed run (MASTER_ADDR={os.environ['MASTER_ADDR']}) but not told "
            "the number of processes (no WORLD_SIZE), so it would train alone while the others write the same "
            "folder; `accelerate launch --cpu` with --num_processes or --num_machines above 1 does this. On CPUs "
            "launch with torchrun (ACCELERATE_USE_CPU=1 torchrun --nnodes N --node_rank R --nproc_per_node P "
            "--master_addr HOST --master_port PORT train.py ...), on GPUs with accelerate launch --multi_gpu; to "
            "train in one process, unset MASTER_ADDR."
        )


class Hooks(NamedTuple):
    """What a caller of `train` adds to the run (see train)."""

    on_epoch_end: Callable[[int, VAE], None] | None = None
    on_step: Callable[[int, int, int, int, float], None] | None = None
    on_train_end: Callable[[], None] | None = None
    keep_on_stop: bool = False
    on_export: Callable[[str, int, int], None] | None = None


def run(config: TrainConfig, accelerator: Accelerator, splits: Splits, signals: StopSignals, hooks: Hooks) -> None:
    """Set up (or restore), train epoch by epoch with a checkpoint after each, and export the best model."""
    output_dir, checkpoint, architecture = prepare_output_dir(config, accelerator, splits.train)
    training = set_up(config, accelerator, architecture, splits)
    restore(training, checkpoint)
    start_tracking(accelerator, config, training.progress)
    if accelerator.is_main_process:
        accelerator.print(
            f"training on {len(splits.train)} images ({len(splits.val)} validation, {len(splits.test)} test), "
            f"{accelerator.num_processes} process(es) on {accelerator.device}, mixed precision {config.mixed_precision}"
        )
    if accelerator.num_processes > 1:  # every process, on its machine's console: which shard it trains
        print(process_line(training), flush=True)
    commit = code_commit()  # now: the code that trains, which a checkout during a long run would not be by its end
    run_start = time.perf_counter()
    steps_to_go = training.steps_per_epoch * (config.epochs - training.progress["epoch"])
    images = training.train_set.images  # compiled inside the run's time: train_wall_seconds counts the compiling
    training.compiled = compile_step(training.loss, training.model, images, steps_to_go, config, accelerator)
    signals.in_loop = True
    for epoch in range(training.progress["epoch"] + 1, config.epochs + 1):
        trained = train_epoch(training, epoch, signals, hooks.on_step)
        if trained.stopped and not hooks.keep_on_stop:
            raise Interrupted(signals.signum or signal.SIGTERM, 0)
        if trained.stopped:  # kept: the stopped epoch is recorded as far as it went, its weights kept if the best
            training.progress["stopped_in_epoch"] = epoch
        record = record_epoch(training, epoch, trained, validate(training))
        if not trained.stopped:  # a checkpoint holds whole epochs: --resume starts the next one
            save_checkpoint(training, output_dir)
        if accelerator.is_main_process:
            atomic_write_text(output_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in training.progress["history"]))
            accelerator.print(epoch_line(record, config.epochs))
        log_epoch(accelerator, record, accelerator.unwrap_model(training.model), config.seed)
        if hooks.on_epoch_end is not None:
            hooks.on_epoch_end(epoch, accelerator.unwrap_model(training.model))
        if trained.stopped:
            break
    signals.in_loop = False
    if signals.signum is not None and not hooks.keep_on_stop:  # a signal during the last validation or checkpoint
        raise Interrupted(signals.signum, 0)
    if hooks.on_train_end is not None:
        hooks.on_train_end()
    if accelerator.is_main_process:
        export(training, splits, output_dir, time.perf_counter() - run_start, commit, hooks.on_export)


def process_line(training: Training) -> str:
    accelerator = training.accelerator
    rank, world, local = accelerator.process_index, accelerator.num_processes, accelerator.local_process_index
    images = len(training.train_set) // world  # epoch_batches deals each process this many of every epoch
    return (
        f"process {rank} of {world} on {socket.gethostname()} (local process {local}, {accelerator.device}): "
        f"shard {rank} of each epoch, {images} images"
    )


def prepare_output_dir(
    config: TrainConfig, accelerator: Accelerator, train_set: ImageSet
) -> tuple[Path, Path | None, ModelConfig]:
    """The output folder, put right after a killed run; the checkpoint to resume from (None: start afresh, which
    empties the folder first so that no file of an earlier run stays beside the new ones); and the architecture to
    build, which a checkpoint fixes. A command line that contradicts it is refused before anything is written."""
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        clean_leftovers(output_dir)
    accelerator.wait_for_everyone()
    asked = config.model_config(tuple(train_set.images.shape[1:]), train_set.class_names)
    checkpoint = latest_checkpoint(output_dir) if config.resume else None
    if config.resume and checkpoint is None:
        accelerator.print(f"--resume: no complete checkpoint in {output_dir / STATE_DIR}, starting from epoch 1")
    architecture = asked
    if checkpoint is not None:  # the checkpoint fixes the architecture: these settings must not contradict it
        architecture = checkpoint_architecture(checkpoint, asked)
        check_same_architecture(checkpoint, architecture, asked)
    accelerator.wait_for_everyone()  # every process has read the earlier run's settings before they are replaced
    if accelerator.is_main_process:
        if checkpoint is None:
            start_fresh(output_dir)
        save_config(config, output_dir / TRAIN_CONFIG)
    accelerator.wait_for_everyone()
    check_one_folder(accelerator, output_dir, checkpoint)  # several machines: the same folder, the same checkpoint
    return output_dir, checkpoint, architecture


def set_up(config: TrainConfig, accelerator: Accelerator, architecture: ModelConfig, splits: Splits) -> Training:
    """The model, the optimizer and the learning-rate schedule, prepared by Accelerate; the data on the device when it
    fits there."""
    device = accelerator.device
    train_set = splits.train.to(device) if fits_on_device(splits.train, device) else splits.train
    val_set = splits.val.to(device) if fits_on_device(splits.val, device) else splits.val
    model = VAE(architecture)
    # The fused kernel updates every tensor in one pass: ~1.3x faster training of this small MLP on a CPU.
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, fused=device.type in ("cpu", "cuda"), **weight_decay(config)
    )
    steps_per_epoch = math.ceil((len(train_set) // accelerator.num_processes) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch * config.epochs))
    model, optimizer = accelerator.prepare(model, optimizer)  # the schedule is ours: saved as JSON (save_checkpoint)
    progress = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0, "history": []}
    loss = step_loss(config, accelerator, model)
    training = Training(
        config, accelerator, model, optimizer, scheduler, train_set, val_set, steps_per_epoch, progress, {}, loss
    )
    training.best_state = weights_on_cpu(training)
    return training


def weight_decay(config: TrainConfig) -> dict:
    """The optimizer's weight decay settings: AdamW's, decoupled (the decay does not pass through Adam's scaling)."""
    return {"weight_decay": config.weight_decay, "decoupled_weight_decay": True}


def restore(training: Training, checkpoint: Path | None) -> None:
    """Continue from `checkpoint` (if any): the weights, optimizer, schedule and random states of every process, the
    progress and the best weights so far."""
    if checkpoint is None:
        return
    if training.accelerator.is_main_process:  # an older version's pickled schedule, never loaded (restore_schedule)
        for pickled in checkpoint.glob("custom_checkpoint_*.pkl"):
            pickled.unlink()  # Accelerate refuses a checkpoint holding more of them than objects registered
    training.accelerator.wait_for_everyone()
    try:  # every file through weights_only loading or safetensors: a checkpoint folder is data, never code
        training.accelerator.load_state(str(checkpoint))
    except pickle.UnpicklingError as err:
        raise UserError(
            f"A file of the checkpoint {checkpoint} holds more than tensors ({first_line(err)[:200]}), and --resume "
            "loads nothing that could run code. If you did not put it there, someone else did: start afresh "
            "without --resume, or in another --output-dir."
        ) from None
    for group in training.optimizer.param_groups:  # the run's own setting, also over an older plain-Adam checkpoint
        group.update(weight_decay(training.config))
    training.progress = json.loads((checkpoint / PROGRESS).read_text())
    restore_schedule(training, checkpoint)
    training.best_state = load_file(str(checkpoint / BEST_WEIGHTS))
    epochs = training.config.epochs
    training.accelerator.print(f"resumed from {checkpoint} (epoch {training.progress['epoch']} of {epochs})")


def schedule_state(scheduler: torch.optim.lr_scheduler.LambdaLR) -> dict:
    """The learning-rate schedule's state as JSON: its step count and last rates (the factor itself is a function of
    the settings, rebuilt by set_up). Accelerate would pickle the scheduler and load it with weights_only=False."""
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def restore_schedule(training: Training, checkpoint: Path) -> None:
    scheduler = training.scheduler
    if (checkpoint / SCHEDULE).is_file():
        state = json.loads((checkpoint / SCHEDULE).read_text())
        scheduler.load_state_dict(state | {"lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    else:  # a checkpoint of an older version, whose pickled schedule is not loaded: replay its steps
        for _ in range(training.progress["epoch"] * training.steps_per_epoch):
            scheduler.step()


def train_epoch(
    training: Training,
    epoch: int,
    signals: StopSignals,
    on_step: Callable[[int, int, int, int, float], None] | None = None,
) -> TrainedEpoch:
    """One pass over this process's shard of the training set."""
    config, accelerator = training.config, training.accelerator
    training.model.train()
    world, rank = accelerator.num_processes, accelerator.process_index
    shard = epoch_batches(len(training.train_set), config.batch_size, config.seed, epoch, rank, world)
    # The epoch's indices copied to the data's device at once: a copy per step would wait for the GPU each time.
    order = torch.cat(shard).to(training.train_set.images.device) if shard else torch.empty(0, dtype=torch.long)
    batches = order.split(config.batch_size)
    totals = ELBOTotals.zeros(accelerator.device)
    bar = tqdm(
        batches,
        desc=f"epoch {epoch}/{config.epochs}",
        unit="step",
        leave=False,
        disable=not accelerator.is_local_main_process,
    )
    kl_warmup_steps = config.kl_warmup_epochs * training.steps_per_epoch
    start, cpu_start = time.perf_counter(), time.process_time()
    for step, index in enumerate(bar):
        global_step = (epoch - 1) * training.steps_per_epoch + step
        kl_weight = min(1.0, global_step / kl_warmup_steps) if kl_warmup_steps > 0 else 1.0
        parts = train_step(training, index, kl_weight)
        totals.add(parts)
        if step % 50 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{parts.loss.mean().item():.1f}")
        if on_step is not None:
            on_step(epoch, step + 1, len(batches), len(index), parts.loss.mean().item())
        if stop_requested(signals, accelerator, step):  # the step is done; the rest of the epoch is not
            stopped, done = True, step + 1  # the same step on every process: stop_requested agrees
            break
    else:
        stopped, done = False, len(batches)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    totals = ELBOTotals(accelerator.reduce(totals.sums, reduction="sum"))
    return TrainedEpoch(totals, kl_weight, seconds, cpu_seconds, stopped, done / max(len(batches), 1))


def train_step(training: Training, index: torch.Tensor, kl_weight: float) -> ELBOParts:
    """One optimizer step on the training images at `index`; returns their loss terms (-ELBO, or -L_K for iwae)."""
    images, accelerator, config = training.train_set.images, training.accelerator, training.config
    rows = images.index_select(0, index)  # faster than images[index]; index is on the images' device
    x = as_float(rows.to(accelerator.device, non_blocking=True))  # (B, C, H, W)
    if config.binarize == "dynamic":
        x = torch.bernoulli(x)  # fresh binary pixels each time an image is seen (the generator is checkpointed)
    compiled = training.compiled
    if compiled is not None and len(x) == compiled.batch:  # the weight as a tensor: a new float would recompile
        parts = compiled.loss(x, torch.full((), kl_weight, device=x.device))
    else:
        parts = training.loss(x, kl_weight)
    training.model.zero_grad(set_to_none=True)  # Accelerate's optimizer.zero_grad inspects a signature every call
    accelerator.backward(parts.loss.mean())
    training.optimizer.step()
    training.scheduler.step()
    return parts


def validate(training: Training) -> dict[str, float]:
    """Mean -ELBO, recon and KL over the validation set, each process evaluating every num_processes-th image."""
    accelerator, images = training.accelerator, training.val_set.images
    training.model.eval()
    shard = torch.arange(accelerator.process_index, len(images), accelerator.num_processes)
    model = accelerator.unwrap_model(training.model)
    totals = elbo_sums(model, images[shard.to(images.device)], training.config.eval_batch_size)
    return ELBOTotals(accelerator.reduce(totals.sums, reduction="sum")).as_means()


def record_epoch(training: Training, epoch: int, trained: TrainedEpoch, val: dict[str, float]) -> dict:
    """The epoch's record (a line of metrics.jsonl), added to the progress; the weights kept if the best so far."""
    record = {
        "epoch": epoch,
        **{f"train_{k}": round(v, 4) for k, v in trained.totals.as_means().items()},
        **{f"val_{k}": round(v, 4) for k, v in val.items()},
        "lr": training.scheduler.get_last_lr()[0],
        "kl_weight": round(trained.kl_weight, 4),
        "epoch_seconds": round(trained.seconds, 4),  # the training loop alone: no validation, checkpoint or export
        "epoch_cpu_seconds": round(trained.cpu_seconds, 3),  # the same loop by the main process's CPU clock
        "images_per_sec": round(trained.totals.images / trained.seconds, 1),  # all processes together
        **({"stopped": True, "epoch_fraction": round(trained.fraction, 4)} if trained.stopped else {}),
    }
    progress = training.progress
    progress["history"].append(record)
    progress["epoch"] = epoch
    if val["loss"] < progress["best_val_loss"]:
        progress["best_val_loss"], progress["best_epoch"] = val["loss"], epoch
        training.best_state = weights_on_cpu(training)
    return record


def weights_on_cpu(training: Training) -> dict[str, torch.Tensor]:
    model = training.accelerator.unwrap_model(training.model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def epoch_line(record: dict, epochs: int) -> str:
    stopped = f" (stopped {record['epoch_fraction']:.0%} into it)" if record.get("stopped") else ""
    return (
        f"epoch {record['epoch']}/{epochs}{stopped}  train -ELBO {record['train_loss']:.2f} "
        f"(recon {record['train_recon']:.2f}, KL {record['train_kl']:.2f})  val -ELBO {record['val_loss']:.2f}  "
        f"lr {record['lr']:.2e}  {record['epoch_seconds']:.1f}s  {record['images_per_sec']:.0f} img/s"
    )


def save_checkpoint(training: Training, output_dir: Path) -> None:
    """Write the full training state and the architecture to a temporary folder, then rename it: a kill never leaves
    half of one."""
    accelerator, progress = training.accelerator, training.progress
    state_dir = output_dir / STATE_DIR
    tmp = state_dir / f".tmp-epoch-{progress['epoch']:04d}"
    final = state_dir / f"epoch-{progress['epoch']:04d}"
    if accelerator.is_main_process:
        discard(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizer, scheduler, RNG states of every process
    accelerator.wait_for_everyone()  # save_state has no barrier at its end: all RNG files are in tmp before the rename
    if accelerator.is_main_process:
        architecture = accelerator.unwrap_model(training.model).config  # what --resume builds and checks against
        (tmp / CONFIG).write_text(json.dumps(dataclasses.asdict(architecture), indent=2, sort_keys=True) + "\n")
        save_file(training.best_state, str(tmp / BEST_WEIGHTS))
        (tmp / SCHEDULE).write_text(json.dumps(schedule_state(training.scheduler)))
        (tmp / PROGRESS).write_text(json.dumps(progress))
        discard(final)  # an incomplete one of a killed run, if any
        tmp.rename(final)
        for old in state_dir.glob("epoch-*"):
            if old != final:
                discard(old)
    accelerator.wait_for_everyone()


def export(
    training: Training,
    splits: Splits,
    output_dir: Path,
    train_seconds: float,
    commit: str | None,
    on_phase: Callable[[str, int, int], None] | None = None,
) -> None:
    """The best epoch's model as a Hub-ready folder, written beside the run's folder and swapped in for it whole
    (main process only)."""
    accelerator, config, progress = training.accelerator, training.config, training.progress
    run_info = {
        "device": str(accelerator.device),
        "num_processes": accelerator.num_processes,
        "train_data_device": str(training.train_set.images.device),  # the GPU's when the images fit there
        "mixed_precision": config.mixed_precision,
        "compiled_step": training.compiled is not None,
        **({"compile_seconds": round(training.compiled.seconds, 2)} if training.compiled else {}),
        "train_wall_seconds": round(train_seconds, 2),
        "best_epoch": progress["best_epoch"],
        "best_val_loss": progress["best_val_loss"],
        **({"stopped_in_epoch": progress["stopped_in_epoch"]} if "stopped_in_epoch" in progress else {}),
        **({"code_commit": commit} if commit else {}),
    }
    best = VAE(accelerator.unwrap_model(training.model).config)
    best.load_state_dict(training.best_state, strict=True)
    with rewriting(output_dir, keep=(TRAIN_CONFIG, HISTORY)) as staging:
        export_model(best.to(accelerator.device), splits, config, progress["history"], run_info, staging, on_phase)
    print(f"model folder: {output_dir}")


def make_accelerator(config: TrainConfig) -> Accelerator:
    try:
        return Accelerator(
            cpu=config.cpu,
            mixed_precision=config.mixed_precision,
            # how long a collective step waits for the other processes: a lost machine ends the run, not a hang
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=config.ddp_timeout))],
            **tracker_options(config),
        )
    except (ValueError, RuntimeError) as err:
        raise UserError(
            f"Cannot set up --mixed-precision {config.mixed_precision} here: {err}. Use --mixed-precision no or bf16."
        ) from None


def mixed_precision_for(config: TrainConfig, cpu_flags: set[str] | None = None) -> str:
    """The run's mixed precision: --mixed-precision itself, or for "auto" bf16 where it is fast, a CUDA GPU that has
    it or a CPU with bf16 instructions (AVX512-BF16 or AMX: 1.4-1.6x the images per second of fp32 on this project's
    VM), and "no" elsewhere (a CPU without them emulates bf16, slower than fp32; Apple's MPS). `cpu_flags`: the CPU's
    flags as /proc/cpuinfo lists them (read from there when None; none where it does not exist)."""
    if config.mixed_precision != "auto":
        return config.mixed_precision
    on_cpu = config.cpu or parse_flag_from_env("ACCELERATE_USE_CPU")  # as Accelerator decides it
    if not on_cpu and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if not on_cpu and torch.backends.mps.is_available():
        return "no"
    if cpu_flags is None:
        try:
            line = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
            cpu_flags = set(line.split(":", 1)[1].split())
        except (OSError, StopIteration):
            cpu_flags = set()
    return "bf16" if {"avx512_bf16", "amx_bf16"} & cpu_flags else "no"


def lr_factor(config: TrainConfig, total_steps: int):
    """Multiplier of the base learning rate at a step: linear warm-up, then constant or cosine decay."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def fits_on_device(data: ImageSet, device: torch.device) -> bool:
    """Keep the uint8 images on the accelerator when they take under a quarter of its free memory."""
    if device.type != "cuda":
        return device.type in ("cpu", "mps")
    free, _ = torch.cuda.mem_get_info(device)
    return data.images.numel() < free / 4


def code_commit() -> str | None:
    """The git commit of the code that trained the model, when it runs from a clone (recorded in the card)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root, capture_output=True, text=True
        )
    except OSError:  # no git here
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
