"""Run tracking (`--report-to`): each epoch's record and a grid of samples sent to TensorBoard, Trackio or W&B
through Accelerate's trackers, by the main process, once an epoch, after the epoch's checkpoint: the training step
gains no work and no synchronisation.

The tracker packages are optional (requirements-trackers.txt): one asked for but not installed is a UserError naming
the package, raised before any work. All three work offline: TensorBoard writes event files to
LOGGING_DIR/<output folder name>, Trackio a SQLite file in TRACKIO_DIR (default ~/.cache/huggingface/trackio),
W&B with WANDB_MODE=offline a run folder in WANDB_DIR (default ./wandb).

A run keeps its name across --resume (the checkpoint's progress records it): Trackio and W&B continue the same run,
and TensorBoard hides what a killed run logged after its last checkpoint (purge_step), as --resume retrains it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import time
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import ProjectConfiguration

from vae.config import TRACKERS, TrainConfig
from vae.errors import UserError, first_line
from vae.figures import samples_grid
from vae.model import VAE

PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}  # tracker → the package it needs
SAMPLES = 64  # images in the grid logged each epoch, decoded from the same latents every epoch


def trackers(report_to: str) -> list[str]:
    """The trackers a --report-to value names, by Accelerate's names ("all": every one this project supports)."""
    if report_to == "none":
        return []
    return list(TRACKERS) if report_to == "all" else [report_to]


def is_installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken install, or a module blocked with sys.modules[name] = None
        return False


def check_trackers(report_to: str) -> None:
    """A UserError naming every package --report-to needs and this environment lacks (checked before any work: on
    every machine of a run, since Accelerate sets the trackers up on each)."""
    missing = [PACKAGES[name] for name in trackers(report_to) if not is_installed(PACKAGES[name])]
    if missing:
        packages = " and ".join(missing)
        raise UserError(
            f"--report-to {report_to} needs the {packages} package{'s' if len(missing) > 1 else ''}, which "
            f"{'are' if len(missing) > 1 else 'is'} not installed: pip install {' '.join(missing)} (every tracker: "
            "pip install -r requirements-trackers.txt), or train with --report-to none."
        )


def tracker_options(config: TrainConfig) -> dict:
    """What Accelerator() needs for the trackers --report-to asks for: none at all for `none`."""
    names = trackers(config.report_to)
    if not names:
        return {}
    return {"log_with": names, "project_config": ProjectConfiguration(logging_dir=config.logging_dir)}


def project_name(config: TrainConfig) -> str:
    """The output folder's name, as Trackio and W&B accept a project name; TensorBoard's folder in LOGGING_DIR."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", Path(config.output_dir).resolve().name).strip("-") or "vae"


def start_tracking(accelerator: Accelerator, config: TrainConfig, progress: dict) -> None:
    """Start the trackers (main process) for a new run, or continue the run a checkpoint's progress names."""
    if not trackers(config.report_to):
        return
    project = project_name(config)
    run_name = progress.setdefault("run_name", f"{project}-{time.strftime('%Y%m%d-%H%M%S')}")  # saved with each epoch
    next_epoch = progress["epoch"] + 1
    init_kwargs = {
        "tensorboard": {"purge_step": next_epoch},  # a killed run's epochs past its checkpoint are hidden
        "trackio": {"name": run_name, "resume": "allow", "embed": False},
        "wandb": {"name": run_name, "id": run_name, "resume": "allow"},
    }
    settings = {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in config.to_dict().items()}
    try:
        accelerator.init_trackers(project, config=settings, init_kwargs=init_kwargs)
    except Exception as err:  # each package raises its own: no login, no network, a folder it cannot write
        finish_tracking(accelerator)
        raise UserError(
            f"--report-to {config.report_to}: a tracker could not start ({type(err).__name__}: {first_line(err)}). "
            "W&B needs `wandb login`, or WANDB_MODE=offline to log locally; TensorBoard a writable --logging-dir; "
            "Trackio a writable TRACKIO_DIR. Or train with --report-to none."
        ) from None


def log_epoch(accelerator: Accelerator, record: dict, model: VAE, seed: int) -> None:
    """The epoch's record as metrics and a grid of samples as an image, at step = epoch (main process only)."""
    if not accelerator.is_main_process or not accelerator.trackers:
        return
    epoch = record["epoch"]
    accelerator.log({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
    grid = samples_grid(model, SAMPLES, seed=seed)  # (H, W) grey or (H, W, 3) uint8, decoded on the model's device
    for tracker in accelerator.trackers:
        log_image(tracker, "samples", grid, epoch)


def log_image(tracker: GeneralTracker, key: str, grid: np.ndarray, step: int) -> None:
    """One image, the way each tracker takes it (Accelerate's log_images exists for TensorBoard and W&B only)."""
    if tracker.name == "tensorboard":
        tracker.writer.add_image(key, grid, step, dataformats="HW" if grid.ndim == 2 else "HWC")
        tracker.writer.flush()
    elif tracker.name == "wandb":
        tracker.log_images({key: [grid]}, step=step)
    elif tracker.name == "trackio":
        import trackio

        tracker.log({key: trackio.Image(grid if grid.ndim == 3 else np.repeat(grid[..., None], 3, axis=2))}, step=step)


def finish_tracking(accelerator: Accelerator) -> None:
    """Close the trackers, whether the run ended or failed: their files are complete and their processes gone."""
    for tracker in accelerator.trackers:
        with contextlib.suppress(AttributeError):  # one whose start failed has no run or writer to close
            tracker.finish()
    accelerator.trackers = []
