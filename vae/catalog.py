"""The checkpoints on offer: the committed model folders and the visitors' models, each loaded on first use and
kept, and forgotten (with the figures served for it) when a visitor's model is removed."""

from __future__ import annotations

import threading
from pathlib import Path

from vae.assets import Assets, load_assets
from vae.checks import shown
from vae.errors import UserError
from vae.folder import recover_all
from vae.output_files import release_files


def find_checkpoints(default: Assets, folder: Path) -> dict[str, str]:
    """Other model folders committed beside the default (e.g. Fashion-MNIST), by name; loaded when chosen. A folder
    whose rewrite a kill cut short is put right first (vae.folder.complete_swap)."""
    recover_all(folder)
    found = {}
    for path in sorted(folder.glob("*/config.json")) if folder.is_dir() else []:
        checkpoint = path.parent
        if checkpoint.resolve() != Path(default.source).resolve() and checkpoint.name != default.name:
            found[checkpoint.name] = str(checkpoint)
    return found


class Catalog:
    """The checkpoints on offer, each loaded on first use and then kept (a model is a few MB)."""

    def __init__(self, default: Assets, others: dict[str, str] | None = None):
        self.default = default.name
        self.sources = {default.name: default.source, **(others or {})}
        self.loaded = {default.name: default}
        self.visiting: dict[str, str] = {}  # visitors' models (vae.visitors): served by name, in no shared dropdown
        self.lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """The checkpoints every visitor's dropdown offers."""
        return list(self.sources)

    def get(self, name) -> Assets:
        """The checkpoint a caller chose by name (None or "" for the default), or a UserError."""
        if name is None or name == "":
            name = self.default
        source = (self.sources.get(name) or self.visiting.get(name)) if isinstance(name, str) else None
        if source is None:
            raise UserError(f"Unknown checkpoint {shown(name)}: choose one of {', '.join(self.sources)}.")
        if name not in self.loaded:  # loaded ones are served without waiting for the lock
            with self.lock:  # one load at a time, and each checkpoint once
                if name not in self.loaded:
                    self.loaded[name] = load_assets(source, name)
        return self.loaded[name]

    def add(self, name: str, folder: str | Path) -> None:
        """A visitor's model, loaded now (called by its owner, vae.visitors.Visitors.add: a bad one is refused there)."""
        assets = load_assets(str(folder), name)
        with self.lock:
            self.visiting[name], self.loaded[name] = str(folder), assets

    def remove(self, name: str) -> None:
        """A visitor's model is gone (vae.visitors.Visitors.remove): forget it, and delete the figures served for it."""
        with self.lock:
            self.visiting.pop(name, None)
            self.loaded.pop(name, None)
        release_files(name)
