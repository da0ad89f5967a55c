"""The model card and the upload of a model folder to the Hugging Face Hub.

Retry a failed upload with:
    python -m vae.hub --folder outputs/vae-mnist --hub-model-id user/vae-mnist [--private]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huggingface_hub import HfApi, get_token

from vae.config import TrainConfig
from vae.errors import UserError
from vae.io import atomic_write_text

IGNORED = ["training_state/*", "training_state/**", ".*", "**/.*", "eval.json"]  # never uploaded
HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}
FIGURES = [
    ("samples.png", "Random samples, z ~ N(0, I)"),
    ("reconstructions.png", "Test images (top) and their reconstructions (bottom)"),
    ("latent_walk.png", "Walks between class means in latent space (first row: 3 → 7)"),
    ("latent_grid.png", "The 2-D latent space decoded on a grid"),
    ("tsne.png", "t-SNE of test-set latents"),
    ("loss_curve.png", "Training curves"),
]


def check_hub_access(repo_id: str | None) -> None:
    """Fail early, before training, when an upload could not happen."""
    if not repo_id or "/" not in repo_id:
        raise UserError(f"--hub-model-id must look like user/name, got {repo_id!r}.")
    if get_token() is None:
        raise UserError(
            "--push-to-hub needs a Hugging Face token and none was found. Run `hf auth login` or set the "
            "HF_TOKEN environment variable to a token with write access, then run the same command again."
        )


def push_folder(folder: str | Path, repo_id: str, private: bool = False, api: HfApi | None = None) -> str | None:
    """Upload the model folder (not its training state) in one commit; on failure keep it and say how to retry."""
    api = api or HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            ignore_patterns=IGNORED,
            commit_message="Upload VAE trained with train.py",
        )
    except Exception as err:  # network, auth, rate limits: all leave the local folder intact
        retry = f"python -m vae.hub --folder {folder} --hub-model-id {repo_id}" + (" --private" if private else "")
        print(
            f"error: uploading {folder} to {repo_id} failed ({type(err).__name__}: {err}). The folder is kept; retry with:\n  {retry}",
            file=sys.stderr,
        )
        return None
    url = getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"
    print(f"pushed {folder} to {url}")
    return url


def metrics_table(metrics: dict) -> str:
    rows = [
        ("test negative ELBO (nats / image)", metrics.get("test_loss")),
        ("  reconstruction", metrics.get("test_recon")),
        ("  KL", metrics.get("test_kl")),
        (f"test -log p(x), IW bound with k={metrics.get('iw_samples')}", metrics.get("test_iw_nll")),
    ]
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.2f} |" for name, value in rows if value is not None]
    return "\n".join(lines)


def write_model_card(folder: Path, config: TrainConfig, architecture: dict, metrics: dict) -> None:
    """README.md with Hub front matter, the architecture, the training settings, test metrics and figures."""
    dataset = HUB_DATASETS.get(config.dataset)
    front = ["---", "library_name: pytorch", "license: mit", "pipeline_tag: unconditional-image-generation", "tags:"]
    front += [f"- {t}" for t in ("vae", "variational-autoencoder", "pytorch_model_hub_mixin", "mnist-vae-studio")]
    front += [f"datasets:\n- {dataset}"] if dataset else []
    front += ["---"]
    shape = "x".join(str(s) for s in architecture["image_shape"])
    widths = " → ".join(str(w) for w in architecture["hidden_dims"])
    figures = "\n\n".join(
        f"**{caption}**\n\n![{caption}]({name})" for name, caption in FIGURES if (folder / name).exists()
    )
    card = f"""{chr(10).join(front)}

# A variational autoencoder for {config.dataset}

A vanilla VAE (Kingma & Welling, 2014) made of `nn.Linear` layers, trained with
MNIST VAE studio's `train.py`. Images are {shape} (channels x height x width), pixels read
as Bernoulli probabilities.

| | |
| --- | --- |
| encoder | {architecture["image_shape"][0] * architecture["image_shape"][1] * architecture["image_shape"][2]} → {widths} → 2 x {architecture["latent_dim"]} (mean, log-variance) |
| decoder | {architecture["latent_dim"]} → {" → ".join(str(w) for w in reversed(architecture["hidden_dims"]))} → pixels (logits) |
| hidden activation | {architecture.get("activation", "relu")} |
| latent dimension | {architecture["latent_dim"]} |
| classes | {", ".join(architecture["class_names"])} |

## Test metrics

On {metrics.get("test_images")} test images, one posterior sample per image for the ELBO:

{metrics_table(metrics)}

Trained for {config.epochs} epochs, batch size {config.batch_size} per process on {metrics.get("num_processes", 1)} process(es),
Adam lr {config.lr} with a {config.lr_schedule} schedule, KL warm-up {config.kl_warmup_epochs} epochs, seed {config.seed},
on {metrics.get("device", "?")} (mixed precision {config.mixed_precision}) in {metrics.get("train_wall_seconds", 0):.0f} s.
The best epoch by validation loss ({metrics.get("best_epoch")}) is the one saved here. All settings: `train_config.yaml`;
per-epoch figures: `metrics.jsonl`.

## Use

```python
from vae import VAE

model = VAE.from_pretrained("path/or/user-repo")
images = model.sample(16, seed=0)        # (16, C, H, W) in [0, 1]
mu, logvar = model.encode(images)        # posterior of each image
```

## Figures

{figures}
"""
    atomic_write_text(folder / "README.md", card)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Upload a model folder written by train.py to the Hugging Face Hub.")
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--hub-model-id", required=True, help="user/name")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    try:
        if not (args.folder / "model.safetensors").is_file():
            raise UserError(
                f"{args.folder} holds no model.safetensors: pass the --output-dir of a finished train.py run."
            )
        check_hub_access(args.hub_model_id)
    except UserError as err:
        sys.exit(f"error: {err}")
    if push_folder(args.folder, args.hub_model_id, args.private) is None:
        sys.exit(1)


if __name__ == "__main__":
    main()
