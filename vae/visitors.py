"""Models that visitors train in the page: a temporary folder per visitor, each model in it under a readable name that
is still unguessable ("mnist-z8-0412-k3f9xq2m": dataset, latent size, UTC time, 40 random bits).

A model is offered to the visitor who trained it (their checkpoint dropdown, Push) and to whoever knows its name (an API
caller uses it as /sample's checkpoint); it never appears in another visitor's dropdown, only its own session pushes it,
and nothing is written under checkpoints/. A visitor's models are deleted when they leave (the page's unload event),
every model an hour after it was trained, the oldest when a session or a client address (`client_address`: a client
chooses its session ids, not its address) trains one more than PER_VISITOR, and no run starts while the server holds
MAX_MODELS of them or the server's disk budget (vae.disk) has no room for one more.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vae.config import shareable_config
from vae.disk import DISK, Cached, DiskBudget
from vae.errors import UserError
from vae.folder import (
    STATE_DIR,
    TRAIN_CONFIG,
    atomic_write,
    discard,
    lock_path,
    log_path,
    old_dir,
    pictures_dir,
    ready_dir,
    staging_dir,
    zip_path,
)
from vae.hub import on_space

MAX_AGE = 3600.0  # seconds a model is kept after it was trained
PER_VISITOR = 3
MAX_MODELS = 30
PROXY_HOPS = "VAE_PROXY_HOPS"  # proxies that append to X-Forwarded-For (client_address)
SWEEP_EVERY = 300.0  # seconds between sweeps for models past MAX_AGE


@dataclass
class VisitorModel:
    name: str
    visitor: str  # the session that trained it
    folder: Path
    address: str = ""  # the client address it came from (client_address)
    created: float = field(default_factory=time.monotonic)


class Visitors:
    """The visitors' models on this server, under `root` (by default a temporary folder made for the first run).

    Gradio serves the files under `root` (the zips, the live pictures) where they are: without that, it copies each
    file a handler returns into its cache, where the copy escaped the disk budget and stayed downloadable for up to two
    hours after the model was deleted. What the folders hold counts toward the server's disk budget (vae.disk).

    The one owner of a visitor's model: `add` registers it in the catalog (served by name from then on) and `remove`
    takes it out again, whatever removes it (the visitor leaving, its hour, PER_VISITOR)."""

    def __init__(
        self,
        root: str | Path | None = None,
        on_remove=None,
        budget: DiskBudget = DISK,
        catalog=None,  # a vae.catalog.Catalog (not imported: it imports, through the output store, this module)
    ):
        self.given_root = Path(root) if root else None
        if self.given_root is not None:
            serve_in_place(self.given_root)
        self.made_root: Path | None = None
        self.models: dict[str, VisitorModel] = {}
        self.catalog = catalog  # where the models are served by name: registered by add, removed by remove
        self.on_remove = on_remove  # called with a model's name after the catalog forgot it (a test watches)
        self.lock = threading.Lock()
        self.sweeper: threading.Thread | None = None  # started with the first model: deletes them when they expire
        self.budget = budget
        self.measured = Cached(self.bytes)  # disk_bytes: walked at most once a second, whatever the request rate
        budget.add(self)

    @property
    def root(self) -> Path:
        if self.given_root is not None:
            return self.given_root
        if self.made_root is None:
            self.made_root = Path(tempfile.mkdtemp(prefix="vae-studio-visitors-"))
            serve_in_place(self.made_root)
            atexit.register(
                shutil.rmtree, self.made_root, ignore_errors=True
            )  # at exit; SIGTERM: see vae.server_process
        return self.made_root

    def new_folder(self, visitor: str, label: str = "model") -> tuple[str, Path]:
        """A name and a folder (not yet created) for the visitor's next model, or a UserError when the server is full.
        `label` says what the model is (model_name's start: "mnist-z8")."""
        self.sweep()
        self.measured.forget()
        self.budget.check_room_for_a_run()
        with self.lock:
            if len(self.models) >= MAX_MODELS:
                raise UserError(
                    f"This server holds as many trained models as it keeps ({len(self.models)}); each is deleted an "
                    "hour after it was trained. Try again later, or run the studio on your own machine."
                )
        name = model_name(label)
        return name, self.root / visitor_folder(visitor) / name

    def add(self, name: str, visitor: str, folder: Path, address: str = "") -> list[str]:
        """Keep a finished model (its training state deleted: it cannot be resumed here); returns the names of the
        models deleted to keep the session, and the client address, within PER_VISITOR. It is served by name from the
        catalog from now on (loaded here, so that a bad one is refused now, not by the next tab)."""
        if self.catalog is not None:
            self.catalog.add(name, folder)
        discard(folder / STATE_DIR)
        self.measured.forget()
        with self.lock:
            self.models[name] = VisitorModel(name, visitor, folder, address)
            if self.sweeper is None:
                self.sweeper = threading.Thread(target=self.sweep_forever, name="visitors-sweeper", daemon=True)
                self.sweeper.start()
            by_age = sorted(self.models.values(), key=lambda m: m.created)
            session = [m.name for m in by_age if m.visitor == visitor][:-PER_VISITOR]
            here = [m.name for m in by_age if address and m.address == address][:-PER_VISITOR]
            dropped = [m.name for m in by_age if m.name in session or m.name in here]
        for old in dropped:
            self.remove(old)
        return dropped

    def names(self, visitor: str) -> list[str]:
        with self.lock:
            return [m.name for m in self.models.values() if m.visitor == visitor]

    def folder(self, name: str) -> Path | None:
        model = self.models.get(name)
        return model.folder if model else None

    def own_folder(self, name: str, visitor: str) -> Path | None:
        """The model's folder if `visitor` (a session) trained it, else None: a name seen elsewhere is not a key."""
        model = self.models.get(name)
        return model.folder if model is not None and model.visitor == visitor else None

    def zip(self, name: str) -> Path:
        """The model folder as NAME.zip beside it (written once, atomically)."""
        folder = self.folder(name)
        if folder is None:
            raise UserError(f"No model {name!r} here: models are deleted an hour after training.")
        path = zip_path(folder)
        if not path.is_file():

            def write(tmp: str) -> None:
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
                    for file in sorted(folder.rglob("*")):
                        if file.name == TRAIN_CONFIG:  # without the server's paths and the visitor's session id
                            archive.writestr(f"{name}/{TRAIN_CONFIG}", shareable_config(file.read_text()))
                        elif file.is_file():
                            archive.write(file, Path(name) / file.relative_to(folder))

            atomic_write(path, write)
        return path

    def remove(self, name: str) -> None:
        with self.lock:
            model = self.models.pop(name, None)
        if model is None:
            return
        if self.catalog is not None:
            self.catalog.remove(name)
        if self.on_remove is not None:
            self.on_remove(name)
        delete_run(model.folder)
        self.measured.forget()

    def forget(self, visitor: str) -> None:
        """The visitor left: their models go."""
        for name in self.names(visitor):
            self.remove(name)
        if self.given_root is not None or self.made_root is not None:
            shutil.rmtree(self.root / visitor_folder(visitor), ignore_errors=True)

    def sweep(self) -> None:
        """Delete every model older than MAX_AGE, and whatever else of that age lies in the visitors' folders (the
        pictures and log of a run that failed)."""
        now = time.monotonic()
        with self.lock:
            old = [m.name for m in self.models.values() if now - m.created > MAX_AGE]
            kept = {m.folder for m in self.models.values()}
        for name in old:
            self.remove(name)
        if self.made_root is None and self.given_root is None:
            return
        for path in self.root.glob("*/*"):
            if path.with_suffix("") not in kept and time.time() - path.stat().st_mtime > MAX_AGE:
                delete_path(path)

    def sweep_forever(self) -> None:
        while True:
            time.sleep(SWEEP_EVERY)
            try:
                self.sweep()
            except OSError as err:  # a folder someone else removed: the next sweep tries again
                print(f"warning: sweeping the visitors' models: {err}", file=sys.stderr)

    def bytes(self) -> int:
        """What the visitors' folders hold now (none made yet: nothing)."""
        root, total = self.given_root or self.made_root, 0
        for parent, _, names in os.walk(root) if root else ():
            for name in names:
                with contextlib.suppress(OSError):  # deleted while walked (a model removed, a temporary file renamed)
                    total += os.lstat(os.path.join(parent, name)).st_size
        return total

    def disk_bytes(self) -> int:
        return self.measured()


def model_name(label: str, now: float | None = None) -> str:
    """LABEL-HHMM-xxxxxxxx: what the model is and when (UTC) it was trained, for people, then 40 random bits, so that
    no one finds another visitor's model by trying names (a name is a key to /sample). Letters, digits and hyphens
    only: a folder's name, a dropdown's choice and a Hub model's name as it is."""
    label = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-") or "model"
    suffix = base64.b32encode(secrets.token_bytes(5)).decode().lower()  # 40 bits in 8 characters
    return f"{label}-{time.strftime('%H%M', time.gmtime(now))}-{suffix}"


def serve_in_place(root: Path) -> None:
    """Have Gradio serve the files under `root` from there: no copy in its cache, deleted with what they belong to."""
    import gradio as gr  # here: the rest of this module needs no Gradio

    gr.set_static_paths([root])


def delete_run(folder: Path) -> None:
    """A run's model folder and what lies beside it: its zip, its log, its live pictures, and what a trainer killed in
    its export left (the staging folder with the card and figures, a swap's halves, the writer's lock file)."""
    leftovers = (staging_dir(folder), ready_dir(folder), old_dir(folder), lock_path(folder))
    for path in (folder, pictures_dir(folder), zip_path(folder), log_path(folder), *leftovers):
        delete_path(path)


def delete_path(path: Path) -> None:
    if path.is_dir():
        discard(path)
    else:
        path.unlink(missing_ok=True)


def client_address(headers: Mapping[str, str], host: str | None) -> str:
    """Who is calling, as far as a server can tell (a client picks its session ids freely): the connection's address,
    or behind a proxy that connects for every visitor (a Space's) the address that proxy saw. Each proxy appends the
    address it was connected from to X-Forwarded-For, after whatever the client sent itself, so only the last
    `proxy_hops()` entries were written by proxies: the first of those is the visitor. The first entry, which a client
    can write, is never trusted."""
    hops = proxy_hops()
    entries = [entry.strip() for entry in headers.get("x-forwarded-for", "").split(",")] if hops else []
    entries = [entry for entry in entries if entry]
    if len(entries) >= hops > 0:
        return entries[-hops]
    return host or "unknown"


def proxy_hops() -> int:
    """How many proxies in front of the server append to X-Forwarded-For: VAE_PROXY_HOPS, else 1 on a Space (its
    proxy) and 0 elsewhere (the connection's own address is the visitor's)."""
    text = os.environ.get(PROXY_HOPS, "").strip()
    if not text:
        return 1 if on_space() else 0
    if not text.isdigit():
        raise UserError(
            f"{PROXY_HOPS}={text!r} must be a whole number (0 when no proxy appends to "
            "X-Forwarded-For, 1 behind one such as a Space's), or unset."
        )
    return int(text)


def visitor_folder(visitor: str) -> str:
    """A session id as a folder name: only its letters and digits (Gradio's ids are such already)."""
    return "".join(c for c in visitor if c.isalnum())[:64] or "anonymous"
