"""A run's training state on disk and its faults: the epoch checkpoints, what --resume continues (and the
architecture a checkpoint fixes), stopping cleanly on SIGINT / SIGTERM, and write failures reported as errors a user
can act on.

OUTPUT_DIR/training_state/epoch-NNNN/ holds Accelerate's state (model as safetensors, optimizer and random states of
every process, all loaded with weights_only) and the files named below; it is written under a temporary name and renamed into place, progress.json last.
"""

from __future__ import annotations

import contextlib
import errno
import json
import secrets
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from safetensors import SafetensorError

from vae.architecture import ModelConfig, safetensors_header
from vae.config import saved_config
from vae.data import DataSettings
from vae.errors import Interrupted, UserError, first_line, name_list
from vae.folder import (
    BEST_WEIGHTS,
    CONFIG,
    PROGRESS,
    SHARED_CHECK,
    STATE_DIR,
    TRAIN_CONFIG,
    atomic_write_text,
    clean_leftovers,
)

STOP_CHECK_STEPS = 20  # with several processes, how often they agree on stopping after SIGINT / SIGTERM
# The settings of the architecture a run may not change on --resume, by the flag that sets each.
ARCHITECTURE_FLAGS = {
    "hidden_dims": "--hidden-dims",
    "latent_dim": "--latent-dim",
    "dropout": "--dropout",
    "activation": "--activation",
}


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete epoch checkpoint: folders are renamed into place only once fully written (progress.json
    last), and renamed away before they are deleted, so every epoch-* folder with progress.json is whole."""
    folders = sorted(p for p in (output_dir / STATE_DIR).glob("epoch-*") if (p / PROGRESS).is_file())
    return folders[-1] if folders else None


def check_one_folder(accelerator: Accelerator, output_dir: Path, checkpoint: Path | None) -> None:
    """With several processes, OUTPUT_DIR must be one folder they all see: the main process writes every file, and
    each process reads its own random state from the checkpoints. The main process writes a random token there and
    every process reads it back and names the checkpoint it resumes; all must agree, or every process stops with the
    same message (one stopping alone would leave the others waiting)."""
    if accelerator.num_processes == 1:
        return
    token = broadcast_object_list([secrets.token_hex(16) if accelerator.is_main_process else None])[0]
    path = output_dir / SHARED_CHECK
    if accelerator.is_main_process:
        atomic_write_text(path, token)
    accelerator.wait_for_everyone()
    sees = path.is_file() and path.read_text() == token
    views = gather_object([(accelerator.process_index, socket.gethostname(), sees, getattr(checkpoint, "name", None))])
    if accelerator.is_main_process:
        path.unlink()  # every process has read it: gather_object returns once all have sent their view
    resumes = views[0][3]
    strangers = [view for view in views if not view[2] or view[3] != resumes]
    if strangers:
        rank, host, seen, other = strangers[0]
        problem = (
            "does not see the files process 0 writes there" if not seen else f"would resume {other}, not {resumes}"
        )
        raise UserError(
            f"--output-dir {output_dir} is not one folder shared by every machine of this run: process {rank} on "
            f"{host} {problem}. Give a path on a file system that every machine mounts at the same place (NFS or a "
            "cluster file system), then run the same command on every machine."
        )


def checkpoint_architecture(checkpoint: Path, asked: ModelConfig) -> ModelConfig:
    """The architecture `checkpoint` was trained with: its config.json. A checkpoint written before checkpoints kept
    one: the earlier run's train_config.yaml (read before this run replaces it) for the activation and dropout, and
    the layers of best_model.safetensors for the sizes (the YAML may be a refused run's); the data's class names
    when the counts agree."""
    if (checkpoint / CONFIG).is_file():
        return ModelConfig.from_json(str(checkpoint / CONFIG), str(checkpoint / CONFIG))
    earlier = saved_config(checkpoint.parent.parent / TRAIN_CONFIG)
    architecture = earlier.model_config(DataSettings.of(earlier).image_shape, asked.class_names)
    try:
        header = safetensors_header(checkpoint / BEST_WEIGHTS)
    except ValueError:  # unreadable: loading the checkpoint reports it
        return architecture
    encoder = [name.split(".") for name in header if name.startswith("encoder.") and name.endswith(".weight")]
    widths = [header[".".join(parts)][0][0] for parts in sorted(encoder, key=lambda parts: int(parts[1]))]
    classes = header["class_means"][0][0] if "class_means" in header else len(asked.class_names)
    names = asked.class_names if classes == len(asked.class_names) else [str(c) for c in range(classes)]
    return architecture.replace(hidden_dims=widths[:-1], latent_dim=widths[-1] // 2, class_names=names)


def check_same_architecture(checkpoint: Path, saved: ModelConfig, asked: ModelConfig) -> None:
    """A UserError naming every setting of this run that contradicts the architecture of the checkpoint it resumes:
    loading the state would fail on a size, or silently train (and export) a model other than the one saved."""
    conflicts = [
        f"{flag} {flag_value(getattr(asked, key))} vs the checkpoint's {flag_value(getattr(saved, key))}"
        for key, flag in ARCHITECTURE_FLAGS.items()
        if getattr(asked, key) != getattr(saved, key)
    ]
    if asked.image_shape != saved.image_shape:
        size = lambda shape: "x".join(map(str, shape))  # noqa: E731
        conflicts.append(
            f"images of {size(asked.image_shape)} (--dataset, --image-size, --channels) vs the checkpoint's "
            f"{size(saved.image_shape)}"
        )
    if asked.class_names != saved.class_names:
        conflicts.append(
            f"the data's classes {name_list(asked.class_names)} (--dataset, --data-dir) vs the checkpoint's "
            f"{name_list(saved.class_names)}"
        )
    if conflicts:
        raise UserError(
            f"--resume would continue the checkpoint {checkpoint}, whose model is not the one these settings ask for: "
            f"{'; '.join(conflicts)}. To resume, drop these flags or give the checkpoint's values; to train the new "
            "model, start a new run without --resume (it replaces this folder's run) or in another --output-dir."
        )


def flag_value(value) -> str:
    """A setting as it is typed after its flag: `--hidden-dims 512 256`, `--latent-dim 32`."""
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


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


@contextlib.contextmanager
def failures_reported(accelerator: Accelerator, output_dir: Path) -> Iterator[None]:
    """A stopped or failed run leaves no temporary files, only its last complete checkpoint: Interrupted learns that
    checkpoint's epoch (for the resume command), and a write failure becomes a UserError saying how to go on."""
    try:
        yield
    except (Interrupted, OSError, SafetensorError) as err:
        if accelerator.is_main_process:
            clean_leftovers(output_dir)  # temporary folders, a half-done swap
        latest = latest_checkpoint(output_dir)
        if isinstance(err, Interrupted):
            err.resume_epoch = json.loads((latest / PROGRESS).read_text())["epoch"] if latest else 0
            raise
        if not is_write_failure(err):
            raise
        raise UserError(
            f"Writing the run's files failed ({type(err).__name__}: {str(err)[:300]}). "
            f"{'The last complete checkpoint, ' + latest.name + ', is kept' if latest else 'No epoch was saved'}"
            f" in {output_dir / STATE_DIR}: free some disk space or fix the folder's permissions, then run the same "
            "command with --resume."
        ) from None


@contextlib.contextmanager
def lost_peers_reported(accelerator: Accelerator, output_dir: Path, timeout: int) -> Iterator[None]:
    """With several processes, a collective step that fails because another process is gone (its machine killed or
    cut off: a closed connection at once, silence after `timeout` seconds) becomes a UserError on each survivor,
    naming the checkpoint that every machine's --resume continues, instead of a traceback or a wait without end."""
    try:
        yield
    except RuntimeError as err:
        if accelerator.num_processes == 1 or not is_lost_peer(err):
            raise
        if accelerator.is_main_process:
            clean_leftovers(output_dir)  # the temporary folder of a checkpoint the others never finished
        latest = latest_checkpoint(output_dir)
        saved = f"last complete checkpoint: {latest.name} in {latest.parent}" if latest else "no epoch was saved yet"
        raise UserError(
            f"Lost contact with another process of this run ({first_line(err)[:200]}): a machine or process "
            f"stopped, or the network between them failed, or one waited more than --ddp-timeout {timeout} s for "
            f"the others; {saved}. Start every machine again with the same command and --resume."
        ) from None


def is_lost_peer(err: RuntimeError) -> bool:
    """An error of torch.distributed's transport (gloo, NCCL, the c10d store), not of the training itself."""
    if isinstance(err, torch.distributed.DistError):
        return True
    text = str(err)
    return any(mark in text for mark in ("gloo", "NCCL", "c10d", "Connection reset", "Connection closed", "Timed out"))


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
