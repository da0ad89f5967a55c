"""The model folder: the only module that knows its file names, and the one way it is written.

A model folder is what train.py writes and the Hub holds: config.json and model.safetensors (VAE.save_pretrained),
the model card, metrics, figures, the cached t-SNE map and the steering statistics. A training run's OUTPUT_DIR is
such a folder plus the run's train_config.yaml (which marks the folder as train.py's), metrics.jsonl and
training_state/.

Writing: a folder is never edited in place. Its next version is written whole into a sibling staging folder and
swapped in by renames (`rewriting`, `replace_folder`), so a reader sees either the old folder or the new one, never a
mix; single files go through `atomic_write`. A kill at any point of a swap leaves the old folder whole or the new one
marked finished, and the next command, loader or app start that finds the leftovers completes or rolls back the swap
(`complete_swap`). One process writes a folder at a time: every writer holds the folder's lock (`writer_lock`), a
file beside it that names the writer, and checks first that it can write there (`check_writable`). A run refuses any
other folder that already holds files, and places such as the current folder or the home folder.
docs/reliability.md says what is promised and which test checks it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vae.errors import UserError, clip

try:
    import fcntl  # POSIX: Linux and macOS
except ImportError:  # Windows: no writer lock (docs/reliability.md)
    fcntl = None

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
# The files of an epoch checkpoint (training_state/epoch-NNNN/, vae.checkpoints) besides Accelerate's own; PROGRESS is
# written last: a checkpoint that has it is complete.
PROGRESS = "progress.json"  # epoch, best_val_loss, best_epoch, history
BEST_WEIGHTS = "best_model.safetensors"  # the weights of the best epoch so far, exported at the end
SCHEDULE = "schedule.json"  # the learning-rate schedule's step count and rates (training.schedule_state)
# Written in OUTPUT_DIR by the main process and read by the others to see that they share the folder, then removed
# (a killed run's copy is a leftover clean_leftovers removes: its name starts with ".tmp-").
SHARED_CHECK = ".tmp-shared-check"
REQUIRED_FILES = (CONFIG, WEIGHTS)  # what save_pretrained writes and from_pretrained needs
# The files that describe a folder's weights: save_pretrained and push_to_hub carry them along while the weights
# are unchanged.
TRAINED_FILES = (CARD, METRICS, HISTORY, TRAIN_CONFIG, SAMPLES, RECONSTRUCTIONS, LATENT_WALK, LATENT_GRID)
TRAINED_FILES += (LOSS_CURVE, TSNE_FIGURE, TSNE_MAP, STEERING, CLASS_SAMPLES)
# The figures a model card shows, in its order (vae.hub captions them; the app's About tab serves them).
CARD_FIGURES = (SAMPLES, CLASS_SAMPLES, RECONSTRUCTIONS, LATENT_WALK, LATENT_GRID, TSNE_FIGURE, LOSS_CURVE)
APP_FILES = [CONFIG, WEIGHTS, CARD, METRICS, TSNE_MAP, STEERING, *CARD_FIGURES]  # what the app downloads of a Hub model
HUB_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$")  # user/name, or user/name@REVISION (commit, branch, tag)


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
    for place in (existing, where.parent) if existing == where else (existing,):  # the folder is swapped in its parent
        if not can_write_in(place):
            raise UserError(f"--output-dir {path} cannot be written ({place} is read-only): name a writable folder.")
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


def ready_dir(folder: Path) -> Path:
    """The next version once it is finished: the staging folder renamed, in one step, to say so."""
    return folder.parent / f".{folder.name}.ready"


def old_dir(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.replaced"


def discard(path: Path) -> None:
    """Delete a folder by first renaming it away, so a kill mid-way never leaves half of it under its name."""
    if path.exists():
        doomed = path.parent / f".deleting-{path.name}-{os.getpid()}"
        path.rename(doomed)
        shutil.rmtree(doomed)


def replace_folder(folder: Path, staging: Path) -> None:
    """Put the finished `staging` in `folder`'s place, keeping the training state. The first rename marks it finished
    (.NAME.ready); from then on a kill at any step leaves what `complete_swap` finishes, and before it the old folder
    stays as it was."""
    staging.rename(ready_dir(folder))
    complete_swap(folder)


def complete_swap(folder: Path) -> None:
    """Finish a swap that a kill cut short, or roll it back when its next version was not finished; nothing to do when
    no swap is under way. Each step is one rename, so a kill here too leaves what the next call finishes."""
    ready, old = ready_dir(folder), old_dir(folder)
    if old.exists() and not folder.exists() and not ready.exists():  # an older version's swap: the old folder is whole
        old.rename(folder)
    if old.exists() and folder.exists():  # the new folder is in place: it takes the training state, the old one goes
        retire(old, folder)
    if ready.exists():
        if folder.exists():
            folder.rename(old)
        ready.rename(folder)
        if old.exists():
            retire(old, folder)


def retire(old: Path, folder: Path) -> None:
    if (old / STATE_DIR).exists() and not (folder / STATE_DIR).exists():
        (old / STATE_DIR).rename(folder / STATE_DIR)
    discard(old)


def swap_leftovers(folder: Path) -> bool:
    return ready_dir(folder).exists() or old_dir(folder).exists()


def clean_leftovers(folder: Path) -> None:
    """Undo what a killed run left: finish or roll back a swap, remove temporary files and folders."""
    complete_swap(folder)
    discard(staging_dir(folder))  # a next version that was never finished
    for doomed in folder.parent.glob(f".deleting-*{glob.escape(folder.name)}*"):  # a deletion a kill cut short
        if re.fullmatch(rf"\.deleting-(\.{re.escape(folder.name)}\.\w+|{re.escape(folder.name)})-\d+", doomed.name):
            shutil.rmtree(doomed)
    for epoch in (folder / STATE_DIR).glob("epoch-*"):
        if not (epoch / PROGRESS).is_file():  # written last: without it, a checkpoint half-deleted by an old version
            discard(epoch)
    for parent in (folder, folder / STATE_DIR):
        for leftover in parent.glob(".*") if parent.is_dir() else []:
            if leftover.name.startswith((".deleting-", ".tmp-", ".export-")) or leftover.name.endswith(".tmp"):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def recover(folder: Path, wait: float = 5.0) -> None:
    """For a reader that finds no folder but a swap's leftovers: when no writer is at work, complete or roll back the
    swap (under the lock, so two readers do not both do it); while one is, wait for it to put the folder in place."""
    deadline = time.monotonic() + wait
    while swap_leftovers(folder) and not folder.is_dir():
        try:
            lock = acquire(lock_path(folder))
        except OSError:  # a folder this process cannot change: the loader says the folder is missing
            return
        if lock is not None:
            try:
                complete_swap(folder)
            except OSError:
                pass
            finally:
                release(lock_path(folder), lock)
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def recover_all(parent: Path) -> None:
    """At an app's start: put right each swap that a kill cut short among the model folders in `parent`."""
    for leftover in [*parent.glob(".*.ready"), *parent.glob(".*.replaced")] if parent.is_dir() else []:
        recover(parent / leftover.name[1:].rsplit(".", 1)[0])


# ---------------------------------------------------------------------------------------------------------------------
# One writer at a time: the folder's lock, and the checks made before any work
# ---------------------------------------------------------------------------------------------------------------------


def lock_path(folder: Path) -> Path:
    """Beside the folder, not in it: a swap renames the folder, and a fresh run deletes it."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def writer_lock(folder: str | Path, wait: float = 2.0) -> Iterator[None]:
    """Hold `folder`'s writer lock: an flock on the file beside it, which the kernel releases when this process ends
    however it ends, so a lock is never left held by a dead process. The file names its holder for the message a
    second writer gets; a name left behind by a killed holder is taken over, and said so."""
    path = lock_path(Path(folder))
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while (fd := acquire(path)) is None:
        if time.monotonic() > deadline:
            raise UserError(in_use_message(Path(folder), holder(path)))
        time.sleep(0.1)
    try:
        if (before := holder(path)).get("pid") is not None:  # its holder died without removing it
            print(
                f"note: {folder} was locked by {describe(before)}, which is no longer running; taking over.",
                file=sys.stderr,
            )
        os.ftruncate(fd, 0)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": clip(" ".join(sys.argv), 300)}
        os.write(fd, json.dumps(me | {"since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        yield
    finally:
        release(path, fd)


def acquire(path: Path) -> int | None:
    """One try at the lock file's flock: its descriptor, or None while another process holds it."""
    if fcntl is None:
        return os.open(os.devnull, os.O_RDONLY)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its last holder removed the file between our open and our flock: take the new one


def release(path: Path, fd: int) -> None:
    if fcntl is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still held, so no one locks the removed file after us unnoticed (acquire checks)
    os.close(fd)


def holder(path: Path) -> dict:
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def describe(record: dict) -> str:
    command = record.get("command") or "a process"
    return f"`{clip(command, 200)}` (pid {record.get('pid', '?')} on {record.get('host', '?')})"


def in_use_message(folder: Path, record: dict) -> str:
    since = f" since {record['since']}" if record.get("since") else ""
    return (
        f"{folder} is being written by another process: {describe(record)}{since}. Two writers would mix their "
        "files, so this one stopped before changing anything. Wait for the other to finish or stop it, then run "
        "this again, or name another folder."
    )


def can_write_in(folder: Path) -> bool:
    """Whether this process can create files in `folder`: tried, since permission bits, capabilities, read-only
    mounts and ACLs all have a say (and os.access answers for root as if none did)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-", suffix=".tmp")
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):  # a writer holding the lock may have swapped the folder meanwhile
        os.unlink(probe)
    return True


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and STATE_DIR not in p.parts)


def check_writable(folder: Path, room: int | None = None) -> None:
    """Before any work: `folder` and its parent (where its next version is written and swapped in) can be written,
    and the disk has room for a whole copy of it (`room` bytes, if given)."""
    folder = Path(folder)
    for place in (folder, folder.parent):
        if place.is_dir() and not can_write_in(place):
            raise UserError(
                f"{place} cannot be written (read-only, or not yours), and this command writes the next version of "
                f"{folder} beside it and swaps it in; nothing was changed. Make it writable (chmod -R u+w), or copy "
                "the model folder somewhere you can write and pass that."
            )
    need = (folder_size(folder) if folder.is_dir() else 0) + 20_000_000 if room is None else room
    free = shutil.disk_usage(folder.parent).free
    if free < need:
        raise UserError(
            f"The disk holding {folder} has {free / 1e6:.0f} MB free, and this command writes a new copy of the "
            f"folder (about {need / 1e6:.0f} MB) before swapping it in; nothing was changed. Free some space, "
            "then run it again."
        )


@contextlib.contextmanager
def writing(folder: str | Path) -> Iterator[Path]:
    """How a command changes an existing model folder: the folder's lock held throughout, a killed writer's leftovers
    put right first, and the checks that it can be written, made before any work."""
    folder = Path(folder)
    if not folder.is_dir() and not swap_leftovers(folder):
        raise UserError(f"No such checkpoint folder: {clip(folder)}. Pass a folder written by train.py.")
    check_writable(folder)
    with writer_lock(folder):
        clean_leftovers(folder)
        yield folder


def start_fresh(folder: Path) -> None:
    """An empty folder for a new run: an earlier run's files (checked to be train.py's) are removed whole."""
    discard(folder)
    folder.mkdir(parents=True, exist_ok=True)


def is_local_folder(path: str) -> bool:
    """True for a folder here, False for a Hub repo id; a UserError for a path that looks local but is no folder."""
    if os.path.isdir(path):
        return True
    if swap_leftovers(Path(path)):  # a rewrite was killed mid-swap, or is in its last step now
        recover(Path(path))
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


def log_path(folder: Path) -> Path:
    """A Train tab run's output (the trainer's lines, a traceback), beside its model folder (vae.live)."""
    return folder.with_suffix(".log")


def pictures_dir(folder: Path) -> Path:
    """Where a Train tab run's live pictures go, beside its model folder (vae.live)."""
    return folder.parent / f"{folder.name}-live"


def zip_path(folder: Path) -> Path:
    """The model folder as one file to download (vae.visitors): NAME.zip beside it."""
    return folder.with_suffix(".zip")
