"""One disk budget for every file the server writes or hands to Gradio: the tabs' output pictures
(vae.output_files.OutputStore), the visitors' models with their zips, logs and live pictures (vae.visitors.Visitors) and
the uploads (vae.request_limits.RequestLimit counts their bodies). A Space's disk is shared by all three, so one number bounds
them together: DISK_BYTES, or VAE_DISK_BYTES in megabytes.

Each part keeps within the budget the way it can. A Train run does not start while less than RUN_BYTES is left (a
model being trained cannot be cut short), and the pictures and uploads leave that much free: the pictures are pruned
(oldest first) and an upload is refused (429) rather than take it. Within the budget, the pictures and the uploads
also have shares of their own (output_files.OUTPUT_BYTES, request_limits.UPLOAD_BYTES), so that a flood of either leaves room for
the visitors' models.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Protocol

from vae.errors import UserError

DISK_BYTES = 2_560 * 2**20  # everything the server writes: 2.5 GB of a free Space's 50 GB (its image takes the rest)
RUN_BYTES = 64 * 2**20  # left free before a Train run starts: the largest model, its zip and pictures take ~30 MB
DISK_BYTES_ENV = "VAE_DISK_BYTES"


class Part(Protocol):
    def disk_bytes(self) -> int: ...


class DiskBudget:
    """The bytes every registered part holds, against one limit. Parts are held weakly: a part that is gone (a test's
    server) no longer counts."""

    def __init__(self, limit: int | None = None):
        self.given = limit
        self.parts: weakref.WeakSet = weakref.WeakSet()
        self.lock = threading.Lock()

    @property
    def limit(self) -> int:
        return self.given if self.given is not None else disk_bytes_setting()

    def add(self, part: Part) -> None:
        with self.lock:
            self.parts.add(part)

    def used(self) -> int:
        with self.lock:
            parts = list(self.parts)
        return sum(part.disk_bytes() for part in parts)

    def room(self) -> int:
        """Bytes that may still be written (negative when over)."""
        return self.limit - self.used()

    def spare(self) -> int:
        """Bytes that pictures and uploads may still take: what is left, less the room kept for a Train run."""
        return self.room() - RUN_BYTES

    def check_room_for_a_run(self) -> None:
        if self.room() < RUN_BYTES:
            raise UserError(
                f"This server's disk holds as much as it keeps ({self.limit // 2**20:,} MB for pictures, uploads and "
                "the models visitors trained; each model is deleted an hour after it was trained). Try again later, or "
                "run the studio on your own machine."
            )


def disk_bytes_setting() -> int:
    """DISK_BYTES, or VAE_DISK_BYTES (megabytes) when set."""
    text = os.environ.get(DISK_BYTES_ENV, "").strip()
    if not text:
        return DISK_BYTES
    if not text.isdigit() or int(text) == 0:
        raise UserError(f"{DISK_BYTES_ENV}={text!r} must be a positive whole number of megabytes, or unset.")
    return int(text) * 2**20


class Cached:
    """A slow measure (a walk over a folder) answered from its last value for up to `seconds`."""

    def __init__(self, measure, seconds: float = 1.0):
        self.measure, self.seconds = measure, seconds
        self.value, self.when = 0, -float("inf")
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            if time.monotonic() - self.when > self.seconds:
                self.value, self.when = self.measure(), time.monotonic()
            return self.value

    def forget(self) -> None:
        """Measure again on the next call (the part has just written or deleted something)."""
        with self.lock:
            self.when = -float("inf")


DISK = DiskBudget()  # the server's: every OutputStore, Visitors and RequestLimit adds itself unless given another
