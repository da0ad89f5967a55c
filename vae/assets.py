"""A checkpoint folder (or Hub repo) → the model and what the app shows beside it: the cached t-SNE map, the
metrics, the model card, and what is missing. Fast: nothing is trained or recomputed here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vae.errors import UserError
from vae.explore import has_class_statistics, typical
from vae.model import VAE, is_local_folder, looks_local

HUB_FILES = ["config.json", "model.safetensors", "README.md", "metrics.json", "tsne.safetensors", "tsne.png"]


@dataclass
class Assets:
    """One loaded checkpoint: the model, its cached t-SNE map, metrics and card, and what is missing."""

    name: str  # what the checkpoint dropdown shows
    source: str  # the folder or Hub repo id it came from
    model: VAE
    tsne: dict[str, torch.Tensor] | None  # coords (N, 2), labels (N,), latents (N, D) of test images
    tsne_figure: bytes | None  # tsne.png as drawn by the trainer: served from Gradio's cache, wherever the folder is
    metrics: dict
    card: str  # the model card's text, without front matter and figures
    no_class_means: str | None = None  # why walks and the nearest class are off, if they are
    no_map: str | None = None  # why the t-SNE map is off, if it is
    bank: tuple[torch.Tensor, torch.Tensor] | None = None  # clear real latents and labels: walk start points
    map_points: pd.DataFrame | None = None  # x, y, class: the interactive t-SNE scatter

    @property
    def class_names(self) -> list[str]:
        return self.model.class_names

    @property
    def problems(self) -> list[str]:
        """What does not work with this checkpoint: shown in the page and printed at start-up."""
        return [p for p in (self.no_class_means, self.no_map) if p]


def checkpoint_folder(source: str) -> Path:
    """A local folder as is; a Hub repo id ("user/name") downloaded (or found in the cache offline)."""
    if is_local_folder(source):
        return Path(source)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    from vae.hub import HUB_ERRORS

    try:
        return Path(snapshot_download(source, allow_patterns=HUB_FILES))
    except (*HUB_ERRORS, HFValidationError) as err:  # offline and not cached, no such repo, private without a token
        raise UserError(
            f"Could not get {source} from the Hugging Face Hub ({type(err).__name__}: {first_line(err)}). "
            "Check the repo id, the network and HF_TOKEN for a private repo, or pass a local folder."
        ) from None


def read_model(folder: Path, source: str) -> tuple[VAE, str | None]:
    """The VAE, strictly, except that a model saved without class statistics still loads (with a problem)."""
    weights = folder / "model.safetensors"
    try:
        with safe_open(weights, framework="pt") as f:
            keys = set(f.keys())
        missing_stats = not {"class_means", "class_stds"} <= keys
        model = VAE.from_pretrained(folder, strict=not missing_stats).eval()
    except UserError:
        raise
    except Exception as err:  # missing or corrupt config.json / model.safetensors, shapes that do not match
        raise UserError(
            f"Could not load the model in {source} ({type(err).__name__}: {first_line(err)}). Pass a folder "
            "written by train.py, or train a new one with `python train.py`."
        ) from None
    lost = set(model.state_dict()) - keys - {"class_means", "class_stds"}
    if lost:
        raise UserError(f"{weights} lacks the weights {', '.join(sorted(lost))}: it is not a complete VAE.")
    if missing_stats or not has_class_statistics(model):
        return model, (
            f"{source} has no class means, so latent walks and the nearest class are off (samples still work). "
            "Models exported by train.py have them: re-export this one with train.py."
        )
    return model, None


def read_tsne(folder: Path, model: VAE, source: str) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """The cached t-SNE map (checked against the model), or None and the reason."""
    path = folder / "tsne.safetensors"
    fix = f"run `python -m vae.tsne --checkpoint {source}` to compute it once"
    if not path.is_file():
        return None, f"{source} has no cached t-SNE map, so the map tab and placing your digit on it are off: {fix}."
    try:
        tsne = load_file(path)
        coords, labels, latents = tsne["coords"].float(), tsne["labels"].long(), tsne["latents"].float()
    except Exception as err:
        return None, f"The cached t-SNE map in {source} is unreadable ({type(err).__name__}: {first_line(err)}): {fix}."
    n = len(labels)
    if (
        n < 2
        or coords.shape != (n, 2)
        or latents.shape != (n, model.latent_dim)
        or not (0 <= labels.min() and labels.max() < len(model.class_names))
    ):
        return None, f"The cached t-SNE map in {source} does not match its model: {fix}."
    return {"coords": coords, "labels": labels, "latents": latents}, None


def read_card(folder: Path) -> str:
    """The model card's text: no front matter, and no figures (their relative links would not resolve)."""
    path = folder / "README.md"
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace")
    if text.startswith("---"):
        text = text.split("---", 2)[-1]
    return text.split("## Figures")[0].strip()


def read_metrics(folder: Path) -> dict:
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def load_assets(source: str | Path, name: str | None = None) -> Assets:
    """Everything one checkpoint needs, read from its folder: fast (no training, no t-SNE), or a UserError."""
    source = str(source)
    folder = checkpoint_folder(source)
    model, no_class_means = read_model(folder, source)
    tsne, no_map = read_tsne(folder, model, source)
    figure = folder / "tsne.png"
    assets = Assets(
        name=name or checkpoint_name(source),
        source=source,
        model=model,
        tsne=tsne,
        tsne_figure=figure.read_bytes() if tsne is not None and figure.is_file() else None,
        metrics=read_metrics(folder),
        card=read_card(folder),
        no_class_means=no_class_means,
        no_map=no_map,
    )
    if tsne is not None:
        clear = typical(tsne["latents"], tsne["labels"])  # real test digits their neighbours agree on
        assets.bank = (tsne["latents"][clear], tsne["labels"][clear])
        assets.map_points = pd.DataFrame(
            {
                "x": tsne["coords"][:, 0].numpy(),
                "y": tsne["coords"][:, 1].numpy(),
                "class": [model.class_names[i] for i in tsne["labels"].tolist()],
            }
        )
    return assets


def checkpoint_name(source: str) -> str:
    return Path(source).name if looks_local(source) else source


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else "no details"
