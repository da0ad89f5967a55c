"""The end of a training run: the best model, its class statistics, test metrics and figures, as one
Hub-ready folder (the files vae.folder names: config, weights, card, metrics, figures, cached t-SNE, steering)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vae.config import TrainConfig
from vae.data import ImageSet, Splits
from vae.evaluate import test_metrics
from vae.figures import (
    latent_grid,
    latent_walk_grid,
    loss_curve_figure,
    reconstructions_grid,
    samples_grid,
    save_figure,
    save_png,
)
from vae.folder import LATENT_GRID, LATENT_WALK, LOSS_CURVE, METRICS, RECONSTRUCTIONS, SAMPLES, atomic_write_text
from vae.hub import write_model_card
from vae.latent import posterior_means
from vae.model import VAE
from vae.steering import add_steering
from vae.tsne import write_tsne


@torch.no_grad()
def set_class_statistics(model: VAE, train: ImageSet, batch_size: int = 1000) -> None:
    """Mean and standard deviation of the posterior means of each class over the training images."""
    mu = posterior_means(model, train.images, batch_size)  # (N, D)
    labels = train.labels.to(mu.device)
    for c in range(len(model.class_names)):
        members = mu[labels == c]
        if len(members):
            model.class_means[c] = members.mean(dim=0)
            model.class_stds[c] = members.std(dim=0) if len(members) > 1 else torch.ones_like(members[0])


def export_model(
    model: VAE, splits: Splits, config: TrainConfig, history: list[dict], run_info: dict, output_dir: Path
) -> dict:
    """Write the Hub-ready files of the trained `model` into `output_dir` (a staging folder, which the trainer then
    swaps in for the old one as a whole: vae.folder.rewriting); returns the metrics written to metrics.json."""
    model.eval()
    steps = tqdm(total=6, desc="exporting", leave=False)
    set_class_statistics(model, splits.train, config.eval_batch_size)
    model.save_pretrained(output_dir)  # config.json, model.safetensors (and a card, replaced below)
    steps.update()
    metrics = test_metrics(model, splits.test.images, config.iw_samples, config.eval_batch_size)
    metrics.update(run_info)
    atomic_write_text(output_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
    steps.update()
    save_png(samples_grid(model, 64, seed=config.seed), output_dir / SAMPLES)
    save_png(reconstructions_grid(model, splits.test.images[:12]), output_dir / RECONSTRUCTIONS)
    save_png(latent_walk_grid(model), output_dir / LATENT_WALK)
    if model.latent_dim == 2:
        save_png(latent_grid(model), output_dir / LATENT_GRID)
    if history:
        save_figure(loss_curve_figure(history), output_dir / LOSS_CURVE)
    steps.update()
    write_tsne(output_dir, model, splits.test, config.tsne_samples, config.seed)
    steps.update()
    add_steering(output_dir, model, splits.train, splits.test, seed=config.seed)  # class regions, directions
    steps.update()
    write_model_card(output_dir, config, model.config, metrics)
    steps.update()
    steps.close()
    print(
        f"test -ELBO {metrics['test_loss']:.2f} nats/image (recon {metrics['test_recon']:.2f}, KL {metrics['test_kl']:.2f})"
        + (f", IW bound (k={metrics['iw_samples']}) {metrics['test_iw_nll']:.2f}" if "test_iw_nll" in metrics else "")
    )
    return metrics
