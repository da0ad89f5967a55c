"""Process-wide settings of the server, made only by `python app.py` (not when tests import app): torch's threads,
glibc's malloc arenas, SIGTERM and matplotlib's backend."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import torch


def exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # the exit status a shell reports for a process ended by the signal


def tune_server_process() -> None:
    """Settings for the whole process, made only when serving (`python app.py`), not when tests import app.

    - One torch thread: the model is tiny, a second intra-op thread only adds contention (64 samples take
      80 ms instead of 3 ms on a busy 2-core machine), and the queue runs CONCURRENCY requests side by side.
    - Two glibc malloc arenas (as MALLOC_ARENA_MAX=2 would, unless the environment sets it): glibc gives
      every thread that allocates its own arena, and Gradio serves from a pool of up to 40 threads; under
      load the server then grew by 30-60 MB per 200 requests, and by 2-5 MB with two arenas.
    - SIGTERM (how a Space, systemd or docker stop a server) exits through Python's exit, so that what the server
      registered to remove at exit (the visitors' models, a training child) is removed; its default ends the process
      on the spot.
    - matplotlib's backend named: Gradio imports matplotlib on the first request to set it, and choosing
      one itself costs 0.5 s more.
    """
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    if "MALLOC_ARENA_MAX" not in os.environ and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # -8 is M_ARENA_MAX in glibc's malloc.h
        except (OSError, AttributeError):  # not glibc: nothing to cap
            pass
    os.environ.setdefault("MPLBACKEND", "Agg")
