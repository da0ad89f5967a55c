"""The output store: every PNG and GIF the app serves, written once into the app's folder of Gradio's cache
(registered as a static path, so that Gradio serves them where they are), pruned to a budget (see OutputStore)."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import threading
from collections import Counter, OrderedDict
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from vae.disk import DISK, DiskBudget
from vae.request_limits import CONCURRENCY

OUTPUTS = "vae-studio"  # the app's folder in Gradio's cache: every PNG and GIF it serves, pruned to the budgets below
OUTPUT_BYTES = 200 * 2**20  # on disk for them at most: ~180 requests of 256 samples (1.1 MB each in 4 kB blocks)
OUTPUT_FILES = 50_000  # and at most this many files: about as many as fit in OUTPUT_BYTES at one block each
KEEP_NEWEST = 2 * CONCURRENCY  # request folders never pruned: those in flight and as many just answered
FILE_ROUTE = "gradio_api/file="  # where Gradio serves a file of its cache, relative to the page


class OutputStore:
    """The app's output files on disk: one folder per distinct request under `root`, named by the hash of its
    files, pruned least recently used first to OUTPUT_BYTES on disk and OUTPUT_FILES files, at any request rate.

    Left to Gradio's delete_cache (files older than an hour, removed hourly), one client looping over /sample
    with 256 images (257 files, 1.1 MB on disk a call) left 13 GB and 2.8 M files an hour.
    - The index (folder → bytes, files) is kept in memory: a call costs O(1) bookkeeping besides the files it
      writes and deletes. What an earlier run left in `root` (a killed server) is counted once, at opening.
    - A folder is counted before its files are written and old folders are deleted before the lock is
      released, so the disk holds at most the budgets, in whole blocks as du counts them, unless the
      KEEP_NEWEST newest folders alone exceed them (4 x 1.1 MB at most).
    - The KEEP_NEWEST newest folders are never pruned (the client of a request just answered has still to
      fetch its files), nor one whose files are being written. A pruned folder asked for again is written
      again. Pinned folders (a checkpoint's t-SNE figure and map picture, which a page links to when it is built)
      are counted and never pruned, but belong to their checkpoint: `release(owner)` deletes them when it is
      removed (a visitor's model, vae.visitors), so that they neither stay downloadable nor pile up.
    - `root` is one of Gradio's static paths, so Gradio serves the files where they are: it neither copies
      them nor records their paths for delete_cache (it would keep every path it ever served: a file pruned
      here is never found again, so its path would never be dropped).
    """

    def __init__(self, root: Path, budget: DiskBudget = DISK):
        self.root, self.budget = root, budget
        self.lock = threading.Lock()
        self.folders: OrderedDict[str, tuple[int, int]] = OrderedDict()  # name → (bytes, files), oldest first
        self.pinned: dict[str, tuple[int, int]] = {}
        self.owners: dict[str, set[str]] = {}  # pinned folder → the checkpoints it belongs to
        self.writing: Counter[str] = Counter()  # folders whose files a call is writing now
        self.bytes = self.files = 0
        root.mkdir(parents=True, exist_ok=True)
        self.block = os.statvfs(root).f_frsize if hasattr(os, "statvfs") else 4096
        gr.set_static_paths([root])  # Gradio serves the files from here, uncopied and untracked (see above)
        budget.add(self)
        for _, used, count, name in sorted(self.earlier_folders()):  # oldest first, by modification time
            self.count(name, used, count)
        with self.lock:
            self.prune()

    def earlier_folders(self) -> list[tuple[float, int, int, str]]:
        """(modified, bytes on disk, files, name) of each folder already in root."""
        found = []
        for entry in os.scandir(self.root):
            if not entry.is_dir(follow_symlinks=False):
                continue
            used, count = self.disk_use(entry.stat(follow_symlinks=False)), 0
            for parent, dirs, names in os.walk(entry.path):
                for name in dirs + names:
                    used += self.disk_use(os.lstat(os.path.join(parent, name)))
                count += len(names)
            found.append((entry.stat(follow_symlinks=False).st_mtime, used, count, entry.name))
        return found

    def disk_bytes(self) -> int:
        """What the store holds, for the server's disk budget (read without the lock: prune asks it under the lock)."""
        return self.bytes

    def disk_use(self, stat: os.stat_result) -> int:
        blocks = getattr(stat, "st_blocks", None)  # 512-byte units, on POSIX
        return blocks * 512 if blocks is not None else self.whole_blocks(stat.st_size)

    def whole_blocks(self, size: int) -> int:
        return -(-size // self.block) * self.block

    def footprint(self, files: dict[str, bytes]) -> tuple[int, int]:
        """Bytes on disk and files of a folder holding `files`: each file in whole blocks, and the folder's own
        blocks (128 bytes an entry is generous for a name and the temporary name it is written under)."""
        used = sum(self.whole_blocks(len(data)) for data in files.values())
        return used + self.whole_blocks(128 * len(files)) + self.block, len(files)

    def count(self, name: str, used: int, files: int) -> None:
        self.folders[name] = (used, files)
        self.bytes += used
        self.files += files

    def prune(self) -> None:
        """Delete the least recently used folders while over a budget (the store's own share, or the server's disk
        budget less the room kept for a Train run), but not the KEEP_NEWEST newest nor those being written. Called under the lock; the oldest
        folder is nearly always the one deleted, so O(1) a folder."""
        while self.bytes > OUTPUT_BYTES or self.files > OUTPUT_FILES or self.budget.spare() < 0:
            prunable = itertools.islice(self.folders, max(0, len(self.folders) - KEEP_NEWEST))
            name = next((name for name in prunable if name not in self.writing), None)
            if name is None:
                return
            used, files = self.folders.pop(name)
            shutil.rmtree(self.root / name, ignore_errors=True)
            self.bytes -= used
            self.files -= files

    def put(self, files: dict[str, bytes], pin: str | None = None) -> list[str]:
        """Named contents → their paths, in a folder named by their hash, pinned for checkpoint `pin` if given. Each
        file is written beside its name and renamed into place, so no reader sees half a file; one already there is
        not written again."""
        digest = hashlib.sha256()
        for name, data in files.items():
            digest.update(name.encode() + b"\0" + data)
        key = digest.hexdigest()[:40]
        with self.lock:
            if key in self.folders:
                self.folders.move_to_end(key)
            elif key not in self.pinned:
                self.count(key, *self.footprint(files))
            if pin is not None:
                if key in self.folders:
                    self.pinned[key] = self.folders.pop(key)
                self.owners.setdefault(key, set()).add(pin)
            self.writing[key] += 1
            self.prune()
        try:
            folder = self.root / key
            folder.mkdir(parents=True, exist_ok=True)
            paths = []
            for name, data in files.items():
                path = folder / name
                if not path.is_file():
                    writing = folder / f".{name}.{os.getpid()}-{threading.get_ident()}"
                    writing.write_bytes(data)
                    os.replace(writing, path)
                paths.append(str(path))
            os.utime(folder)  # recency on disk, for the order in which a restarted server prunes
        finally:
            with self.lock:
                self.writing -= Counter({key: 1})
        return paths

    def release(self, owner: str) -> None:
        """The checkpoint `owner` is gone: delete the pinned folders that belonged to it alone."""
        with self.lock:
            for key in [key for key, owners in self.owners.items() if owner in owners]:
                self.owners[key].discard(owner)
                if self.owners[key]:
                    continue
                del self.owners[key]
                if self.writing[key]:  # a call is writing it now: it becomes an unpinned folder, pruned in turn
                    self.folders[key] = self.pinned.pop(key)
                    continue
                used, files = self.pinned.pop(key)
                shutil.rmtree(self.root / key, ignore_errors=True)
                self.bytes -= used
                self.files -= files


STORES: dict[Path, OutputStore] = {}  # one per Gradio cache (GRADIO_TEMP_DIR is read when a file is written)
STORES_LOCK = threading.Lock()


def output_store() -> OutputStore:
    """The store in the app's folder of Gradio's cache (GRADIO_TEMP_DIR, else the temp directory's gradio/)."""
    root = Path(get_upload_folder()) / OUTPUTS
    with STORES_LOCK:
        if root not in STORES:
            STORES[root] = OutputStore(root)
        return STORES[root]


def cache_files(files: dict[str, bytes], pin: str | None = None) -> list[str]:
    """Named contents → files in the app's folder of Gradio's cache (see OutputStore), served from there; pinned
    for checkpoint `pin` until release_files(pin)."""
    return output_store().put(files, pin)


def release_files(owner: str) -> None:
    """Delete the pinned output files of checkpoint `owner` (see OutputStore.release)."""
    output_store().release(owner)
