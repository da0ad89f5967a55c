"""The end of a training run: the best model, its class statistics, test metrics and figures, as one
Hub-ready folder (the files vae.folder names: config, weights, card, metrics, figures, cached t-SNE, steering)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from vae.card import write_model_card
from vae.classes import Classes, fit_classes
from vae.config import TrainConfig, shareable_config
from vae.data import ImageSet, Splits
from vae.evaluate import test_metrics
from vae.figures import (
    latent_grid,
    loss_curve_figure,
    reconstructions_grid,
    samples_grid,
    save_figure,
    save_png,
    write_class_figures,
)
from vae.folder import LATENT_GRID, LOSS_CURVE, METRICS, RECONSTRUCTIONS, SAMPLES, atomic_write_text
from vae.latent import posterior_means
from vae.model import VAE
from vae.steering import ATTRIBUTE_DATASETS, add_steering
from vae.tsne import write_tsne

EXPORT_PHASES = ("class statistics", "test metrics", "figures", "t-SNE map", "class regions", "model card")


@torch.no_grad()
def set_class_statistics(model: VAE, train: ImageSet, batch_size: int = 1000, fit_images: int = 0) -> Classes:
    """Each class's statistics (vae.classes.fit_classes) over the training images. The model's class_means and
    class_stds buffers get a copy, so that its weights file, used without the app, carries the same class means; the
    app and the figures read them from steering.safetensors only."""
    latents = posterior_means(model, train.images, batch_size)  # (N, D)
    classes = fit_classes(latents, train.labels, len(model.class_names), fit_images)
    model.class_means.copy_(classes.class_means)
    model.class_stds.copy_(classes.class_scales.norm(dim=2))  # (K, D): the square root of diag(L Lᵀ)
    return classes


class Phases:
    """The export's steps, one after the other: each start reported to `on_phase(name, number, of)` (the Train tab's
    progress), each one's time printed at the end (the trainer's console; the Train tab's run log)."""

    def __init__(self, on_phase: Callable[[str, int, int], None] | None):
        self.on_phase, self.times, self.started = on_phase, {}, None
        self.bar = tqdm(total=len(EXPORT_PHASES), desc="exporting", leave=False)

    def start(self, name: str) -> None:
        self.stop()
        self.started = (name, time.perf_counter())
        if self.on_phase is not None:
            self.on_phase(name, EXPORT_PHASES.index(name) + 1, len(EXPORT_PHASES))

    def stop(self) -> None:
        if self.started is not None:
            name, since = self.started
            self.times[name] = time.perf_counter() - since
            self.bar.update()
            self.started = None

    def close(self) -> None:
        self.stop()
        self.bar.close()
        each = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.times.items())
        print(f"exported in {sum(self.times.values()):.1f} s: {each}")


def export_model(
    model: VAE,
    splits: Splits,
    config: TrainConfig,
    history: list[dict],
    run_info: dict,
    output_dir: Path,
    on_phase: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Write the Hub-ready files of the trained `model` into `output_dir` (a staging folder, which the trainer then
    swaps in for the old one as a whole: vae.folder.rewriting); returns the metrics written to metrics.json.
    `on_phase(name, number, of)`: called as each of EXPORT_PHASES starts."""
    model.eval()
    phases = Phases(on_phase)
    phases.start("class statistics")
    classes = set_class_statistics(model, splits.train, config.eval_batch_size, config.steering_images)
    model.provenance = {"train_config": shareable_config(yaml.safe_dump(config.to_dict(), sort_keys=False))}
    if run_info.get("code_commit"):
        model.provenance["code_commit"] = run_info["code_commit"]
    model.save_pretrained(output_dir)  # config.json, model.safetensors with its provenance (and a card, replaced below)
    phases.start("test metrics")
    metrics = test_metrics(model, splits.test.images, config.iw_samples, config.eval_batch_size)
    metrics.update(run_info)
    atomic_write_text(output_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
    phases.start("figures")
    save_png(samples_grid(model, 64, seed=config.seed), output_dir / SAMPLES)
    save_png(reconstructions_grid(model, splits.test.images[:12]), output_dir / RECONSTRUCTIONS)
    write_class_figures(output_dir, model, classes, config.seed)  # the walks between class means, class samples
    if model.latent_dim == 2:
        save_png(latent_grid(model), output_dir / LATENT_GRID)
    if history:
        save_figure(loss_curve_figure(history), output_dir / LOSS_CURVE)
    phases.start("t-SNE map")
    write_tsne(output_dir, model, splits.test, config.tsne_samples, config.seed)
    phases.start("class regions")  # written with the principal directions of the sliders
    attributes = config.dataset in ATTRIBUTE_DATASETS  # thickness and slant: handwritten digits only
    add_steering(
        output_dir,
        model,
        splits.train,
        splits.test,
        fit_images=config.steering_images,
        classes=classes,
        attributes=attributes,
    )
    phases.start("model card")
    write_model_card(output_dir, config, model.config, metrics)
    phases.close()
    print(
        f"test -ELBO {metrics['test_loss']:.2f} nats/image (recon {metrics['test_recon']:.2f}, KL {metrics['test_kl']:.2f})"
        + (f", IW bound (k={metrics['iw_samples']}) {metrics['test_iw_nll']:.2f}" if "test_iw_nll" in metrics else "")
    )
    return metrics
