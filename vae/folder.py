"""The model folder: the only module that knows its file names, and the one way it is written.

A model folder is what train.py writes and the Hub holds: config.json and model.safetensors (VAE.save_pretrained),
the model card, metrics, figures, the cached t-SNE map and the steering statistics. A training run's OUTPUT_DIR is
such a folder plus the run's train_config.yaml (which marks the folder as train.py's), metrics.jsonl and
training_state/.

Writing: a folder is never edited in place. Its next version is written whole into a sibling staging folder and
swapped in by renames (`replace_folder`, or `updating` for a change to an existing folder), so a reader (or a kill)
sees either the old folder or the new one, never a mix; single files outside a model folder go through
`atomic_write`. What a killed run leaves mid-way is put right by the next run (`clean_leftovers`). A run refuses any
other folder that already holds files, and places such as the current folder or the home folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from vae.errors import UserError, clip

ROOT = Path(__file__).resolve().parent.parent  # the repository, when run from a clone
# The files of a model folder.
CONFIG = "config.json"  # the architecture (VAE.config), written by save_pretrained
WEIGHTS = "model.safetensors"  # the weights and the class statistics
CARD = "README.md"  # the model card
METRICS = "metrics.json"  # test metrics and facts of the run
HISTORY = "metrics.jsonl"  # one record per epoch
TRAIN_CONFIG = "train_config.yaml"  # the run's settings; written first by every run: a folder holding it is train.py's
MARKER = TRAIN_CONFIG
TSNE_MAP = "tsne.safetensors"  # the t-SNE map of test latents the app shows
TSNE_FIGURE = "tsne.png"
SAMPLES, RECONSTRUCTIONS, LATENT_WALK = "samples.png", "reconstructions.png", "latent_walk.png"
LATENT_GRID, LOSS_CURVE = "latent_grid.png", "loss_curve.png"
STEERING = "steering.safetensors"  # class regions and principal directions of the latents (vae.steering)
CLASS_SAMPLES = "class_samples.png"  # samples of each class, drawn from its region
EVAL = "eval.json"  # written by python -m vae.evaluate; never uploaded
STATE_DIR = "training_state"  # the resumable state, inside the folder; never uploaded
REQUIRED_FILES = (CONFIG, WEIGHTS)  # what save_pretrained writes and from_pretrained needs
# The files that describe a folder's weights: save_pretrained and push_to_hub carry them along while the weights
# are unchanged.
TRAINED_FILES = (CARD, METRICS, HISTORY, TRAIN_CONFIG, SAMPLES, RECONSTRUCTIONS, LATENT_WALK, LATENT_GRID)
TRAINED_FILES += (LOSS_CURVE, TSNE_FIGURE, TSNE_MAP, STEERING, CLASS_SAMPLES)
APP_FILES = [CONFIG, WEIGHTS, CARD, METRICS, TSNE_MAP, TSNE_FIGURE, STEERING]  # what the app downloads of a Hub model
HUB_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_output_dir(path: str) -> Path:
    """OUTPUT_DIR, if train.py may write it: a new folder, an empty one, or one an earlier run wrote."""
    if not str(path).strip():
        raise UserError("--output-dir is empty: name a folder of its own for the model, e.g. outputs/vae-mnist.")
    folder = Path(path).expanduser()
    where = folder.resolve()
    shared = {ROOT: "the repository", Path.home().resolve(): "your home", Path.cwd().resolve(): "the current folder"}
    shared[Path(where.anchor)] = "the root of the file system"  # later entries win where two are the same folder
    if where in shared:
        raise UserError(
            f"--output-dir {path} is {shared[where]}: train.py replaces its output folder as a whole, so it needs a "
            "folder of its own. Name a new one, e.g. outputs/vae-mnist."
        )
    existing = next(p for p in (where, *where.parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == where else f"is under {existing}, which is a file"
        raise UserError(f"--output-dir {path} {what}: name a folder, e.g. outputs/vae-mnist.")
    if os.statvfs(existing).f_flag & os.ST_RDONLY or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--output-dir {path} cannot be written ({existing} is read-only): name a writable folder.")
    if where.is_dir() and any(where.iterdir()) and not (where / MARKER).is_file():
        raise UserError(
            f"--output-dir {path} holds files that train.py did not write (it has no {MARKER}), and a run replaces "
            "its output folder as a whole. Name a new or empty folder."
        )
    return folder


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(temp_path) for a new file beside `path`, then rename it onto `path`: no reader sees half a file.

    The temporary file is created (exclusively, under a name of this process and thread) with the permissions a new
    file gets, 0666 less the umask, before `write` fills it, so the result has them too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def rewriting(folder: str | Path, keep: tuple[str, ...] | None = None) -> Iterator[Path]:
    """Write the next version of a model folder as a whole: yields a staging folder beside it holding copies of the
    folder's files named in `keep` that exist (None: all of them, but not the training state) for the block to add to, then
    swaps it in for the folder, training state kept. If the block raises, the staging folder is removed and the
    folder stays as it was."""
    folder = Path(folder)
    staging = staging_dir(folder)
    discard(staging)
    if keep is None:
        skip = shutil.ignore_patterns(STATE_DIR, ".*")
        shutil.copytree(
            folder, staging, ignore=lambda parent, names: skip(parent, names) if parent == str(folder) else []
        )
    else:
        staging.mkdir(parents=True)
        for name in keep:  # those there are: a run stopped in its first epoch has no metrics.jsonl yet
            if (folder / name).is_file():
                shutil.copy2(folder / name, staging / name)
    try:
        yield staging
    except BaseException:
        discard(staging)
        raise
    replace_folder(folder, staging)


def staging_dir(folder: Path) -> Path:
    """Where the next version of `folder` is written: beside it (the same file system, so it can be renamed)."""
    return folder.parent / f".{folder.name}.export"


def old_dir(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.replaced"


def discard(path: Path) -> None:
    """Delete a folder by first renaming it away, so a kill mid-way never leaves half of it under its name."""
    if path.exists():
        doomed = path.parent / f".deleting-{path.name}-{os.getpid()}"
        path.rename(doomed)
        shutil.rmtree(doomed)


def replace_folder(folder: Path, staging: Path) -> None:
    """Put the finished `staging` in `folder`'s place, keeping the training state: three renames."""
    old = old_dir(folder)
    discard(old)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    if (old / STATE_DIR).exists():
        (old / STATE_DIR).rename(folder / STATE_DIR)
    discard(old)


def clean_leftovers(folder: Path) -> None:
    """Undo what a killed run left: finish or roll back a swap, remove temporary files and folders."""
    old = old_dir(folder)
    if old.exists():
        if not folder.exists():  # killed between the first two renames: the old folder is whole, put it back
            old.rename(folder)
        else:  # killed after the swap: keep the new folder, with the state it was about to receive
            if (old / STATE_DIR).exists() and not (folder / STATE_DIR).exists():
                (old / STATE_DIR).rename(folder / STATE_DIR)
            discard(old)
    discard(staging_dir(folder))
    for epoch in (folder / STATE_DIR).glob("epoch-*"):
        if not (
            epoch / "progress.json"
        ).is_file():  # written last: without it, a checkpoint half-deleted by an old version
            discard(epoch)
    for parent in (folder, folder / STATE_DIR):
        for leftover in parent.glob(".*") if parent.is_dir() else []:
            if leftover.name.startswith((".deleting-", ".tmp-", ".export-")) or leftover.name.endswith(".tmp"):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def start_fresh(folder: Path) -> None:
    """An empty folder for a new run: an earlier run's files (checked to be train.py's) are removed whole."""
    discard(folder)
    folder.mkdir(parents=True, exist_ok=True)


def is_local_folder(path: str) -> bool:
    """True for a folder here, False for a Hub repo id; a UserError for a path that looks local but is no folder."""
    if os.path.isdir(path):
        return True
    if looks_local(path):
        raise UserError(
            f"No such checkpoint folder: {clip(path)}. Pass a folder written by train.py (it holds "
            "config.json and model.safetensors) or a Hugging Face Hub repo id such as user/vae-mnist."
        )
    return False


def looks_local(path: str) -> bool:
    if os.path.exists(path) or path.startswith((".", "/", "~")) or not HUB_REPO_ID.match(path):
        return True
    return os.path.isdir(path.split("/")[0])
