"""The Accelerate training loop: one epoch at a time, an atomic checkpoint after each, resumable.

One `Accelerator` owns the device, the processes and mixed precision. Every process holds the whole
dataset in memory as uint8 and takes its own shard of each epoch's permutation; metrics are summed over
processes; only the main process writes files.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from vae.architecture import check_architecture
from vae.config import TrainConfig, save_config
from vae.data import ImageSet, Splits, epoch_batches, load_splits
from vae.errors import Interrupted, UserError
from vae.evaluate import as_means, elbo_sums, sum_dtype
from vae.export import export_model
from vae.folder import (
    STATE_DIR,
    atomic_write_text,
    check_output_dir,
    clean_leftovers,
    discard,
    replace_folder,
    staging_dir,
    start_fresh,
)
from vae.hub import check_hub_access, push_folder
from vae.imaging import as_float
from vae.loss import negative_elbo
from vae.model import VAE

STOP_CHECK_STEPS = 20  # with several processes, how often they agree on stopping after SIGINT / SIGTERM


def make_accelerator(config: TrainConfig) -> Accelerator:
    try:
        return Accelerator(cpu=config.cpu, mixed_precision=config.mixed_precision)
    except (ValueError, RuntimeError) as err:
        raise UserError(
            f"Cannot set up --mixed-precision {config.mixed_precision} here: {err}. Use --mixed-precision no or bf16."
        ) from None


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


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete epoch checkpoint: folders are renamed into place only once fully written (progress.json
    last), and renamed away before they are deleted, so every epoch-* folder with progress.json is whole."""
    folders = sorted(p for p in (output_dir / STATE_DIR).glob("epoch-*") if (p / "progress.json").is_file())
    return folders[-1] if folders else None


def save_checkpoint(accelerator: Accelerator, output_dir: Path, progress: dict, best_state: dict) -> None:
    """Write the full training state to a temporary folder, then rename it: a kill never leaves half of one."""
    state_dir = output_dir / STATE_DIR
    tmp = state_dir / f".tmp-epoch-{progress['epoch']:04d}"
    final = state_dir / f"epoch-{progress['epoch']:04d}"
    if accelerator.is_main_process:
        discard(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizer, scheduler, RNG states of every process
    if accelerator.is_main_process:
        save_file(best_state, str(tmp / "best_model.safetensors"))
        (tmp / "progress.json").write_text(json.dumps(progress))
        discard(final)  # an incomplete one of a killed run, if any
        tmp.rename(final)
        for old in state_dir.glob("epoch-*"):
            if old != final:
                discard(old)
    accelerator.wait_for_everyone()


class StopSignals:
    """SIGINT and SIGTERM while training: inside the loop they stop it at the next step boundary (`signum` is set
    and the loop checks it), elsewhere they raise Interrupted at once. A second signal acts as it normally would.
    Handlers are set only in the main thread, the only one Python lets set them."""

    def __init__(self):
        self.signum: int | None = None
        self.in_loop = False
        self.previous: dict[int, object] = {}

    def handle(self, signum, frame):
        signal.signal(signum, self.previous[signum])
        if not self.in_loop:
            raise Interrupted(signum, 0)
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for signum, action in self.previous.items():
            signal.signal(signum, action)


def stop_requested(signals: StopSignals, accelerator: Accelerator, step: int) -> bool:
    """Whether to stop after this step; with several processes all must stop at the same step, so they agree
    every STOP_CHECK_STEPS steps (a small all-reduce), or a process would wait for the others forever."""
    if accelerator.num_processes == 1:
        return signals.signum is not None
    if step % STOP_CHECK_STEPS:
        return False
    flag = torch.tensor(0.0 if signals.signum is None else 1.0, device=accelerator.device)
    return accelerator.reduce(flag, reduction="sum").item() > 0


def prepare_output_dir(config: TrainConfig, accelerator: Accelerator) -> tuple[Path, Path | None]:
    """The output folder, put right after a killed run, and the checkpoint to resume from (None: start afresh,
    which empties the folder first so that no file of an earlier run stays beside the new ones)."""
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        clean_leftovers(output_dir)
    accelerator.wait_for_everyone()
    checkpoint = latest_checkpoint(output_dir) if config.resume else None
    if config.resume and checkpoint is None:
        accelerator.print(f"--resume: no complete checkpoint in {output_dir / STATE_DIR}, starting from epoch 1")
    if accelerator.is_main_process:
        if checkpoint is None:
            start_fresh(output_dir)
        save_config(config, output_dir / "train_config.yaml")
    accelerator.wait_for_everyone()
    return output_dir, checkpoint


def train(config: TrainConfig, on_epoch_end: Callable[[int, VAE], None] | None = None) -> Path:
    """Train, keep the best model by validation loss, and export a Hub-ready folder; returns its path.

    `on_epoch_end(epoch, model)`, if given, is called on every process after each epoch's checkpoint
    (benchmarks use it to measure test loss against wall time).
    """
    check_settings(config)  # everything that can be checked before any work
    accelerator = make_accelerator(config)
    set_seed(config.seed)
    main = accelerator.is_main_process
    with accelerator.main_process_first():  # one process downloads or unpacks the data, the others then read it
        splits: Splits = load_splits(config)
    output_dir = Path(config.output_dir)
    with StopSignals() as signals:
        try:
            run(config, accelerator, splits, signals, on_epoch_end)
        except (Interrupted, OSError, SafetensorError) as err:
            if main:
                clean_leftovers(output_dir)  # temporary folders, a half-done swap
            latest = latest_checkpoint(output_dir)
            if isinstance(err, Interrupted):
                err.resume_epoch = json.loads((latest / "progress.json").read_text())["epoch"] if latest else 0
                raise
            if not is_write_failure(err):
                raise
            raise UserError(
                f"Writing the run's files failed ({type(err).__name__}: {str(err)[:300]}). "
                f"{'The last complete checkpoint, ' + latest.name + ', is kept' if latest else 'No epoch was saved'}"
                f" in {output_dir / STATE_DIR}: free some disk space or fix the folder's permissions, then run the same "
                "command with --resume."
            ) from None
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if main and config.push_to_hub:  # after the other processes are done: a failed upload stops no one midway
        push_folder(output_dir, config.hub_model_id, config.hub_private)
    return output_dir


def check_settings(config: TrainConfig) -> None:
    """The output folder, the model's size and the Hub access, checked before any data is loaded."""
    check_output_dir(config.output_dir)
    image_shape = (
        (config.channels, config.image_size, config.image_size) if config.dataset == "imagefolder" else (1, 28, 28)
    )
    check_architecture(image_shape, config.hidden_dims, config.latent_dim, "--hidden-dims / --latent-dim")
    if config.push_to_hub:
        check_hub_access(config.hub_model_id)  # fail before hours of training, not after


def is_write_failure(err: BaseException) -> bool:
    """A full disk, a read-only or forbidden folder: the machine's state, not a bug, so a message and not a traceback."""
    if isinstance(err, SafetensorError):  # safetensors reports the OS error in its message
        return "No space left" in str(err) or "os error 28" in str(err)
    return isinstance(err, OSError) and err.errno in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
    )


def run(
    config: TrainConfig,
    accelerator: Accelerator,
    splits: Splits,
    signals: StopSignals,
    on_epoch_end: Callable[[int, VAE], None] | None,
) -> None:
    """Set up, train epoch by epoch with a checkpoint after each, and export the best model (main process)."""
    main = accelerator.is_main_process
    device = accelerator.device
    train_set = splits.train.to(device) if fits_on_device(splits.train, device) else splits.train
    val_set = splits.val.to(device) if fits_on_device(splits.val, device) else splits.val

    architecture = config.model_config(tuple(splits.train.images.shape[1:]), splits.train.class_names)
    model = VAE(architecture)
    # The fused kernel updates every tensor in one pass: ~1.3x faster training of this small MLP on a CPU.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=device.type in ("cpu", "cuda"))
    steps_per_epoch = math.ceil((len(train_set) // accelerator.num_processes) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # stepped by us, once per optimizer step

    progress = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0, "history": []}
    best_state = {k: v.detach().cpu().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    output_dir, checkpoint = prepare_output_dir(config, accelerator)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        progress = json.loads((checkpoint / "progress.json").read_text())
        best_state = load_file(str(checkpoint / "best_model.safetensors"))
        accelerator.print(f"resumed from {checkpoint} (epoch {progress['epoch']} of {config.epochs})")
    if main:
        accelerator.print(
            f"training on {len(splits.train)} images ({len(splits.val)} validation, {len(splits.test)} test), "
            f"{accelerator.num_processes} process(es) on {device}, mixed precision {config.mixed_precision}"
        )

    kl_warmup_steps = config.kl_warmup_epochs * steps_per_epoch
    run_start = time.perf_counter()
    signals.in_loop = True
    for epoch in range(progress["epoch"] + 1, config.epochs + 1):
        model.train()
        batches = epoch_batches(
            len(train_set), config.batch_size, config.seed, epoch, accelerator.process_index, accelerator.num_processes
        )
        totals = torch.zeros(4, dtype=sum_dtype(device), device=device)  # loss, recon, kl, images
        bar = tqdm(
            batches,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="step",
            leave=False,
            disable=not accelerator.is_local_main_process,
        )
        epoch_start = time.perf_counter()
        for step, index in enumerate(bar):
            global_step = (epoch - 1) * steps_per_epoch + step
            kl_weight = min(1.0, global_step / kl_warmup_steps) if kl_warmup_steps > 0 else 1.0
            rows = train_set.images.index_select(0, index.to(train_set.images.device))  # faster than images[index]
            x = as_float(rows.to(device, non_blocking=True))  # (B, C, H, W)
            with accelerator.autocast():
                out = model(x)
            parts = negative_elbo(out.logits, x, out.mu, out.logvar, kl_weight)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(parts.loss.mean())
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                totals += torch.stack(
                    [
                        (parts.recon + parts.kl).sum(),
                        parts.recon.sum(),
                        parts.kl.sum(),
                        torch.tensor(float(len(x)), device=device),
                    ]
                )
            if step % 50 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{parts.loss.mean().item():.1f}")
            if stop_requested(signals, accelerator, step):  # the step is done; the epoch is abandoned
                raise Interrupted(signals.signum or signal.SIGTERM, 0)
        train_seconds = time.perf_counter() - epoch_start
        train_totals = accelerator.reduce(totals, reduction="sum")

        model.eval()
        shard = torch.arange(accelerator.process_index, len(val_set), accelerator.num_processes)
        val_totals = accelerator.reduce(
            elbo_sums(
                accelerator.unwrap_model(model), val_set.images[shard.to(val_set.images.device)], config.eval_batch_size
            ),
            reduction="sum",
        )
        train_metrics, val_metrics = as_means(train_totals), as_means(val_totals)
        record = {
            "epoch": epoch,
            **{f"train_{k}": round(v, 4) for k, v in train_metrics.items()},
            **{f"val_{k}": round(v, 4) for k, v in val_metrics.items()},
            "lr": scheduler.get_last_lr()[0],
            "kl_weight": round(kl_weight, 4),
            "epoch_seconds": round(train_seconds, 3),
            "images_per_sec": round(train_totals[3].item() / train_seconds, 1),
        }
        progress["history"].append(record)
        progress["epoch"] = epoch
        if val_metrics["loss"] < progress["best_val_loss"]:
            progress["best_val_loss"], progress["best_epoch"] = val_metrics["loss"], epoch
            best_state = {k: v.detach().cpu().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        save_checkpoint(accelerator, output_dir, progress, best_state)
        if on_epoch_end is not None:
            on_epoch_end(epoch, accelerator.unwrap_model(model))
        if main:
            lines = "".join(json.dumps(r) + "\n" for r in progress["history"])
            atomic_write_text(output_dir / "metrics.jsonl", lines)
            accelerator.print(
                f"epoch {epoch}/{config.epochs}  train -ELBO {record['train_loss']:.2f} "
                f"(recon {record['train_recon']:.2f}, KL {record['train_kl']:.2f})  val -ELBO {record['val_loss']:.2f}  "
                f"lr {record['lr']:.2e}  {record['epoch_seconds']:.1f}s  {record['images_per_sec']:.0f} img/s"
            )

    signals.in_loop = False
    if signals.signum is not None:  # a signal during the last validation or checkpoint
        raise Interrupted(signals.signum, 0)
    if main:
        run_info = {
            "device": str(device),
            "num_processes": accelerator.num_processes,
            "mixed_precision": config.mixed_precision,
            "train_wall_seconds": round(time.perf_counter() - run_start, 2),
            "best_epoch": progress["best_epoch"],
            "best_val_loss": progress["best_val_loss"],
            **({"code_commit": commit} if (commit := code_commit()) else {}),
        }
        staging = staging_dir(output_dir)  # the new folder is written beside the old one, then swapped in
        for name in ("train_config.yaml", "metrics.jsonl"):
            staging.mkdir(parents=True, exist_ok=True)
            shutil.copy2(output_dir / name, staging / name)
        export_model(architecture, best_state, splits, config, progress["history"], run_info, staging)
        replace_folder(output_dir, staging)
        print(f"model folder: {output_dir}")


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
