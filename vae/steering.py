"""Steering a plain VAE: each class's region of latent space, to sample a chosen class, and the principal directions
of the test-set latents, to slide a latent along them. Fitted at export, stored in the model folder.

python -m vae.steering --checkpoint checkpoints/vae-mnist [--data-dir D] [--directions 8]

A class region is a Gaussian with full covariance, N(mean_c, L_c L_cᵀ), fitted to the posterior means of the class's
clear training images: those at least 9 of whose 10 nearest training latents are of its class. `temperature`
scales its spread (1.0: the fitted region). Chosen by measurement on checkpoints/vae-mnist with an independent
classifier (bench/class_samples.py, 500 samples per class): fitted to every training image of a class, 2, 5 and 8
came out as the digit asked for only 88-89% of the time, their Gaussians reaching over ambiguous images into the
neighbouring classes; fitted to the clear ones, every class is at least 92%, and the samples vary nearly as much as
real test digits do (their mean pairwise distance at least 0.86 of the real digits'). Adding the mean posterior
variance to the covariance (the moment-matched aggregate posterior) widened the regions and cost 1-3 points of
accuracy; a mixture of 4-8 Gaussians per class did about as well (worst class 93%) but took minutes to fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vae.errors import UserError, clip, command, first_line
from vae.folder import CLASS_SAMPLES, STEERING, atomic_write  # STEERING: also imported from here
from vae.latent import neighbour_agreement, posterior_means
from vae.model import VAE

if TYPE_CHECKING:  # vae.data imports torchvision, which the app (requirements.txt) does not install
    from vae.data import ImageSet

DIRECTIONS = 8  # principal directions stored for the sliders
NEIGHBOURS = 10  # a training image is clear when this many of its nearest latents...
CLEAR_AGREEMENT = 0.9  # ...are at least this share of its class (9 of 10)
SAMPLES_PER_CLASS = 10  # the model card's figure: one row per class
MAX_CHECKED_BYTES = 100_000_000  # a steering file is a few KB; anything far larger is not one


@dataclass
class Steering:
    """Class regions (a Gaussian per class) and the principal directions of the test-set latents."""

    class_means: torch.Tensor  # (K, D) the centre of each class's region
    class_scales: torch.Tensor  # (K, D, D) lower-triangular L: the region's covariance is L Lᵀ
    center: torch.Tensor  # (D,) the mean of the test-set posterior means
    directions: torch.Tensor  # (P, D) unit principal directions of those means, largest variance first
    spreads: torch.Tensor  # (P,) their standard deviation along each direction

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).float().contiguous() for name in TENSORS}


TENSORS = ("class_means", "class_scales", "center", "directions", "spreads")


def fix_command(source: str) -> str:
    return f"python -m vae.steering --checkpoint {clip(source)}"


# Fitting


def gaussian(latents: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and Cholesky factor (D, D) of latents (N, D); the prior N(0, I) for a class with no images."""
    if len(latents) == 0:
        return torch.zeros(dim), torch.eye(dim)
    mean = latents.mean(dim=0)
    cov = torch.cov(latents.T.double()).reshape(dim, dim) if len(latents) > 1 else torch.zeros(dim, dim).double()
    ridge = 1e-6 * max(float(cov.diagonal().mean()), 1e-6)  # keeps a degenerate class (N <= D) factorable
    return mean, torch.linalg.cholesky(cov + ridge * torch.eye(dim).double()).float()


@torch.no_grad()
def fit_steering(
    model: VAE,
    train: ImageSet,
    test: ImageSet,
    directions: int = DIRECTIONS,
    batch_size: int = 1000,
    fit_images: int = 0,
    train_latents: torch.Tensor | None = None,
) -> Steering:
    """Class regions from the training set's posterior means, principal directions from the test set's.

    `fit_images` (0: all): the regions are fitted to the clear images among this many training images, drawn at random
    (seeded), each still judged clear by its neighbours among all the training images. Judging each image takes a pass
    over the whole training set: ~29 s for all 59,000 on one core, ~5 s for 10,000 (the Train tab's: vae.live), whose
    ~900 clear images per class give each Gaussian the same centre and spread within sampling noise.
    `train_latents` (N, D): the training set's posterior means when the caller has them already (the export)."""
    dim, classes = model.latent_dim, len(model.class_names)
    if train_latents is None:
        train_latents = posterior_means(model, train.images, batch_size)
    latents = train_latents.cpu().float()  # (N, D)
    labels = train.labels.cpu()
    judged = torch.arange(len(latents))  # the images whose neighbours are looked at: all, or fit_images of them
    if 0 < fit_images < len(latents):
        judged = torch.randperm(len(latents), generator=torch.Generator().manual_seed(0))[:fit_images].sort().values
    clear = torch.zeros(len(latents), dtype=torch.bool)
    clear[judged] = neighbour_agreement(latents, labels, NEIGHBOURS, judged) >= CLEAR_AGREEMENT
    means, scales = torch.zeros(classes, dim), torch.zeros(classes, dim, dim)
    for c in range(classes):
        members = latents[(labels == c) & clear]
        if len(members) <= dim:  # too few clear images for a full covariance: all of the class's
            members = latents[labels == c]
        means[c], scales[c] = gaussian(members, dim)
    test_latents = posterior_means(model, test.images, batch_size).cpu().double()  # (M, D)
    center = test_latents.mean(dim=0)
    _, singular, vh = torch.linalg.svd(test_latents - center, full_matrices=False)  # principal components
    p = min(directions, dim, len(singular))
    spreads = singular[:p] / max(len(test_latents) - 1, 1) ** 0.5
    return Steering(means, scales, center.float(), vh[:p].float(), spreads.float())


# Files


def write_steering(folder: str | Path, steering: Steering) -> None:
    data = save(steering.tensors())  # bytes, written into atomic_write's file: it keeps a new file's permissions
    atomic_write(Path(folder) / STEERING, lambda tmp: Path(tmp).write_bytes(data))


def steering_problem(tensors: dict[str, torch.Tensor], model: VAE) -> str | None:
    """What is wrong with a steering file's tensors for this model, or None."""
    names = set(tensors)
    if names != set(TENSORS):
        lacking, extra = set(TENSORS) - names, names - set(TENSORS)
        return f"holds {', '.join(sorted(names)) or 'no tensors'}, where {', '.join(TENSORS)} belong" + (
            f" (lacks {', '.join(sorted(lacking))})" if lacking else f" (unknown: {', '.join(sorted(extra))})"
        )
    k, d = len(model.class_names), model.latent_dim
    p = tensors["spreads"].shape[0] if tensors["spreads"].dim() == 1 else -1
    expected = {"class_means": (k, d), "class_scales": (k, d, d), "center": (d,), "directions": (p, d), "spreads": (p,)}
    for name, shape in expected.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape:
            return (
                f"has {name} shaped {list(tensor.shape)}, where this model ({k} classes, {d} latent dimensions) "
                f"needs {list(shape)}: it was fitted for another model"
            )
        if not tensor.is_floating_point():
            return f"has {name} of {str(tensor.dtype).removeprefix('torch.')}, where floats belong"
        if not torch.isfinite(tensor).all():
            return f"has NaN or infinite {name}"
    if p < 1 or (tensors["spreads"] <= 0).any():
        return "has no positive spreads"
    return None


def read_steering(folder: str | Path, model: VAE, source: str | None = None) -> tuple[Steering | None, str | None]:
    """The folder's steering file, checked strictly against the model, or None and what is off and how to fix it."""
    path = Path(folder) / STEERING
    source = clip(source if source is not None else folder)
    off = "so sampling a chosen class and the latent sliders are off"
    if not path.is_file():
        return None, f"{source} has no {STEERING}, {off}: run `{fix_command(source)}` to add it."
    problem = None
    try:
        if path.stat().st_size > MAX_CHECKED_BYTES:
            problem = f"is {path.stat().st_size:,} bytes, far more than a steering file"
        else:
            tensors = load_file(path)
            problem = steering_problem(tensors, model)
    except (SafetensorError, ValueError, OSError, RuntimeError) as err:
        problem = f"is not a readable safetensors file ({type(err).__name__}: {first_line(err)[:120]})"
    if problem:
        return None, f"{source}/{STEERING} {problem}, {off}: run `{fix_command(source)}` to fit it again."
    return Steering(**{name: tensors[name].float() for name in TENSORS}), None


# Using it


def class_latents(steering: Steering, label: int, n: int, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
    """n latents (n, D) drawn from class `label`'s region, N(mean, temperature² L Lᵀ); a seed fixes them."""
    generator = torch.Generator().manual_seed(seed * 1_000 + label)
    eps = torch.randn(n, steering.class_means.shape[1], generator=generator)  # on CPU: the same on any device
    return steering.class_means[label].cpu() + temperature * eps @ steering.class_scales[label].cpu().T


@torch.no_grad()
def sample_class(
    model: VAE, steering: Steering, label: int, n: int = 16, seed: int = 0, temperature: float = 1.0
) -> torch.Tensor:
    """n images (n, C, H, W) in [0, 1] of class `label`, decoded from its region of latent space."""
    if not 0 <= label < len(steering.class_means):
        raise UserError(f"No class {label}: this model's classes are 0 to {len(steering.class_means) - 1}.")
    return model.decode(class_latents(steering, label, n, seed, temperature).to(model.device))


def slide(steering: Steering, z: torch.Tensor, offsets) -> torch.Tensor:
    """z (D,) moved by offsets[i] standard deviations along principal direction i (fewer offsets: the first ones)."""
    offsets = torch.as_tensor(offsets, dtype=torch.float32).flatten()
    p = len(offsets)
    if p > len(steering.spreads):
        raise UserError(f"{p} slider offsets given, but this model has {len(steering.spreads)} directions.")
    shift = (offsets * steering.spreads[:p]) @ steering.directions[:p]  # (D,)
    return z + shift.to(z.device, z.dtype)


# Writing it into a model folder


def add_steering(
    folder: Path,
    model: VAE,
    train: ImageSet,
    test: ImageSet,
    directions: int = DIRECTIONS,
    seed: int = 0,
    fit_images: int = 0,
    train_latents: torch.Tensor | None = None,
) -> Steering:
    """Fit the steering (fit_steering) and write its file and the class-samples figure into `folder` (a staging
    folder)."""
    from vae.figures import class_samples_grid, save_png  # figures draws with this module's sample_class

    steering = fit_steering(model, train, test, directions, fit_images=fit_images, train_latents=train_latents)
    write_steering(folder, steering)
    save_png(class_samples_grid(model, steering, SAMPLES_PER_CLASS, seed), folder / CLASS_SAMPLES)
    return steering


@command
def main(argv: list[str] | None = None) -> None:
    from vae.config import saved_config
    from vae.data import DataSettings, load_splits
    from vae.folder import METRICS, TRAIN_CONFIG, rewriting, writing
    from vae.hub import rewritten_card_id, write_model_card

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="model folder written by train.py")
    parser.add_argument("--data-dir", help="dataset root; default: the one the model was trained with")
    parser.add_argument("--directions", type=int, default=DIRECTIONS, help="principal directions to store")
    parser.add_argument("--seed", type=int, default=0, help="seed of the class-samples figure")
    args = parser.parse_args(argv)
    if args.directions < 1:
        parser.error("--directions must be at least 1")
    start = time.perf_counter()
    with writing(args.checkpoint) as folder:  # its lock held, and checked writable before any work
        model = VAE.from_pretrained(folder).eval()
        train_config = saved_config(folder / TRAIN_CONFIG)
        settings = DataSettings.of(train_config)
        if args.data_dir:
            settings = dataclasses.replace(settings, data_dir=args.data_dir)
        splits = load_splits(settings)
        metrics_path = folder / METRICS
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        with rewriting(folder) as staging:  # steering file, figure and card change together
            steering = add_steering(staging, model, splits.train, splits.test, args.directions, args.seed)
            write_model_card(staging, train_config, model.config, metrics, rewritten_card_id(folder, train_config))
    print(
        f"wrote {folder / STEERING} ({len(steering.class_means)} class regions, {len(steering.spreads)} directions)"
        f" and {CLASS_SAMPLES} in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
