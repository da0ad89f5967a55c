"""Test-set metrics of a trained model: negative ELBO with its parts, and the importance-weighted bound.

python -m vae.evaluate --checkpoint checkpoints/vae-mnist [--iw-samples 1000] [--update-card]
python -m vae.evaluate --checkpoint checkpoints/vae-mnist-binary --iw-samples 5000   # the papers' test NLL

A folder trained on dynamically binarised MNIST (--binarize dynamic) is measured on the same fixed binarisation of
the test set it was validated against: its train_config.yaml records the seed. The importance-weighted bound decodes
K samples per image, 50 images at a time (about 20,000 decoded images, a few hundred MB, in memory at once).

--update-card puts the new test figures into the folder's metrics.json and model card (README.md), e.g.
to report K = 1000 for a model whose training run measured the bound with K = 100. --card-only measures nothing and
writes the card again from the metrics.json already there (for a card whose text changed since it was written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vae.data import ImageSet
from vae.errors import UserError, command
from vae.folder import (
    CARD,
    EVAL,
    METRICS,
    TRAIN_CONFIG,
    atomic_write_text,
    can_write_in,
    is_local_folder,
    writing,
)
from vae.imaging import as_float
from vae.latent import posterior_means
from vae.loss import ELBOTotals, importance_weighted_nll, negative_elbo
from vae.model import VAE
from vae.posterior import active_dimensions
from vae.refresh import checkpoint_splits, refresh_folder

EVAL_SEED = 1234  # a fixed posterior noise: the same model gets the same numbers every time


@torch.no_grad()
def elbo_sums(model: VAE, images: torch.Tensor, batch_size: int, seed: int = EVAL_SEED) -> ELBOTotals:
    """Sums of -ELBO, its parts and the images over uint8 images (N, C, H, W), one posterior sample each."""
    device = model.device
    generator = torch.Generator(device).manual_seed(seed)
    totals = ELBOTotals.zeros(device)
    for batch in images.split(batch_size):
        x = as_float(batch.to(device))  # (B, C, H, W)
        out = model(x, generator=generator)
        totals.add(negative_elbo(out.logits, x, out.mu, out.logvar))
    return totals


@torch.no_grad()
def iw_nll(model: VAE, images: torch.Tensor, k: int, batch_size: int = 50, progress: bool = True) -> float:
    """Mean importance-weighted estimate of -log p(x) over uint8 images, with k samples per image."""
    generator = torch.Generator(model.device).manual_seed(EVAL_SEED)
    chunk = max(1, min(k, 20_000 // batch_size))  # ~20k decoded images in memory at a time
    total = 0.0
    for batch in tqdm(images.split(batch_size), desc=f"IW bound (k={k})", disable=not progress, leave=False):
        x = as_float(batch.to(model.device))
        total += importance_weighted_nll(model, x, k, chunk=chunk, generator=generator).sum().item()
    return total / len(images)


def test_metrics(model: VAE, test_images: torch.Tensor, iw_samples: int, batch_size: int) -> dict[str, float]:
    """Everything the model card and metrics.json report about the test set."""
    model.eval()
    metrics = {f"test_{k}": v for k, v in elbo_sums(model, test_images, batch_size).as_means().items()}
    metrics["test_images"] = len(test_images)
    means = posterior_means(model, test_images, batch_size)  # (N, D)
    metrics["test_active_dims"] = int(active_dimensions(means).sum())  # vae.posterior's rule (Burda et al. 2015)
    if iw_samples > 0:
        metrics["test_iw_nll"] = iw_nll(model, test_images, iw_samples)
        metrics["iw_samples"] = iw_samples
    return metrics


def checkpoint_test_set(checkpoint: str | Path, data_dir: str | None = None) -> ImageSet:
    """The test set a checkpoint folder was trained against (vae.refresh.checkpoint_splits)."""
    return checkpoint_splits(checkpoint, data_dir).test


@command
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="model folder (or Hub repo id) to evaluate")
    parser.add_argument("--data-dir", help="dataset root; default: the one the model was trained with")
    parser.add_argument("--iw-samples", type=int, default=1000, help="importance samples per image (0: skip)")
    parser.add_argument("--batch-size", type=int, default=1000, help="images per batch for the ELBO")
    parser.add_argument("--output", type=Path, help="JSON file to write (default: CHECKPOINT/eval.json)")
    parser.add_argument("--cpu", action="store_true", help="evaluate on the CPU even when a GPU is there")
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="also write these figures into the folder's metrics.json and README.md",
    )
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="measure nothing: write the folder's README.md again from its metrics.json (after the card's text changed)",
    )
    args = parser.parse_args(argv)
    if args.iw_samples < 0 or args.batch_size < 1:
        parser.error("--iw-samples must be >= 0 and --batch-size >= 1")
    folder = Path(args.checkpoint)
    option = "--card-only" if args.card_only else "--update-card"
    if (args.update_card or args.card_only) and not (folder / TRAIN_CONFIG).is_file():
        raise UserError(f"{option} needs a model folder written by train.py (with {TRAIN_CONFIG}): {folder}")
    if args.card_only:
        with writing(folder):
            refresh_folder(folder)  # the card again, from the metrics.json there
        print(f"updated {folder / CARD}")
        return {}
    local = is_local_folder(args.checkpoint)
    output = args.output or (folder / EVAL if local else Path(EVAL))
    into_folder = args.update_card or (local and output.resolve().parent == folder.resolve())
    with writing(folder) if into_folder else contextlib.nullcontext():  # checked writable, and locked, before any work
        if not into_folder:
            check_writable_file(output)
        metrics = evaluate(args, output)
        if args.update_card:
            refresh_folder(folder, figures={k: v for k, v in metrics.items() if k not in ("eval_seconds", "device")})
            print(f"updated {folder / METRICS} and {folder / CARD}")
    return metrics


def evaluate(args: argparse.Namespace, output: Path) -> dict:
    """Measure the checkpoint on its test set, print the figures and write them to `output`."""
    model = VAE.from_pretrained(args.checkpoint)
    test = checkpoint_test_set(args.checkpoint, args.data_dir)
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    model.to(device)
    start = time.perf_counter()
    figures = test_metrics(model, test.images, args.iw_samples, args.batch_size)
    metrics = {**figures, "eval_seconds": round(time.perf_counter() - start, 2), "device": device}
    print(
        f"test -ELBO {metrics['test_loss']:.2f} nats/image (recon {metrics['test_recon']:.2f}, KL {metrics['test_kl']:.2f}"
        f", {metrics['test_active_dims']} active latent dimensions)"
        + (f"; IW bound (k={args.iw_samples}) -log p(x) <= {metrics['test_iw_nll']:.2f}" if args.iw_samples else "")
        + f" on {len(test)} test images in {metrics['eval_seconds']:.1f}s"
    )
    atomic_write_text(output, json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {output}")
    return metrics


def check_writable_file(output: Path) -> None:
    """--output's folder exists and can be written, checked before the evaluation's minutes."""
    where = next((p for p in (output.parent, *output.parent.parents) if p.exists()), Path("."))
    if not where.is_dir() or not can_write_in(where):
        raise UserError(
            f"--output {output} cannot be written ({where} is read-only or not a folder): name a file "
            "in a folder you can write."
        )


if __name__ == "__main__":
    main()
