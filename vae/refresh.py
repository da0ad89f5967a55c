"""One path that refreshes a trained folder's derived parts: the test metrics (python -m vae.evaluate --update-card,
--card-only), the t-SNE map (python -m vae.tsne), the class statistics and their figures (python -m vae.steering), and
the model card written from them. Each command measures or fits its part; this module reads what the folder says about
its run (its data, its metrics) and writes the new parts, metrics.json and the card into the folder's next version,
swapped in whole (vae.folder.rewriting), so that a reader never sees a card that disagrees with its figures.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from vae.architecture import ModelConfig
from vae.card import rewritten_card_id, write_model_card
from vae.config import saved_config
from vae.data import DataSettings, Splits, load_splits
from vae.folder import CONFIG, METRICS, TRAIN_CONFIG, atomic_write_text, rewriting


def checkpoint_splits(checkpoint: str | Path, data_dir: str | None = None) -> Splits:
    """The data a checkpoint folder was trained on, as its train_config.yaml says (read leniently: the defaults where
    there is none, or for settings this version does not know); `data_dir` replaces its data_dir."""
    settings = DataSettings.of(saved_config(Path(checkpoint) / TRAIN_CONFIG))
    if data_dir:
        settings = dataclasses.replace(settings, data_dir=data_dir)
    return load_splits(settings)


def refresh_folder(
    folder: Path,
    write: Callable[[Path], None] | None = None,
    figures: dict | None = None,
    card: bool = True,
) -> None:
    """FOLDER's next version, swapped in whole: `write(staging)` writes the parts measured or fitted again; `figures`
    (test metrics) replace the test figures in metrics.json (None keeps those recorded); with `card`, the model card
    is written again from the metrics, its code sample loading the id it had (vae.card.rewritten_card_id)."""
    recorded = json.loads((folder / METRICS).read_text()) if (folder / METRICS).is_file() else {}
    if figures is not None:
        recorded = {k: v for k, v in recorded.items() if not k.startswith("test_") and k != "iw_samples"} | figures
    with rewriting(folder) as staging:
        if write is not None:
            write(staging)
        if figures is not None:
            atomic_write_text(staging / METRICS, json.dumps(recorded, indent=2) + "\n")
        if card:
            train_config = saved_config(folder / TRAIN_CONFIG)
            model_config = ModelConfig.from_json(str(folder / CONFIG), str(folder / CONFIG))
            write_model_card(staging, train_config, model_config, recorded, rewritten_card_id(folder, train_config))
