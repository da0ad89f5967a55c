"""Steering a plain VAE: each class's region of latent space, to sample a chosen class, the principal directions of the
test-set latents, to slide a latent along them, and (for handwritten digits) the attribute directions "thickness" and
"slant" (vae.attributes). Fitted at export, stored in the model folder.

python -m vae.steering --checkpoint checkpoints/vae-mnist [--data-dir D] [--directions 8]

The class regions are vae.classes' (the one definition of a class's mean, region and examples): this module stores
them in steering.safetensors with the principal directions of the sliders, reads them back checked, and refreshes an
old folder's file (the command above: the weights are left as they are).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vae.attributes import ATTRIBUTES, fit_directions, measure
from vae.classes import Classes, fit_classes
from vae.errors import UserError, clip, command, first_line
from vae.folder import CLASS_SAMPLES, LATENT_WALK, STEERING, atomic_write  # STEERING: also imported from here
from vae.imaging import as_float
from vae.latent import posterior_means
from vae.model import VAE

if TYPE_CHECKING:  # vae.data imports torchvision, which the app (requirements.txt) does not install
    from vae.data import ImageSet

DIRECTIONS = 8  # principal directions stored for the sliders
# The datasets whose images thickness and slant describe: handwritten digits (a garment's "slant" means nothing).
ATTRIBUTE_DATASETS = ("mnist",)
MAX_CHECKED_BYTES = 100_000_000  # a steering file is a few KB; anything far larger is not one


@dataclass
class Steering(Classes):
    """The class regions (vae.classes: class_means (K, D), class_scales (K, D, D)) and the principal directions of the
    test-set latents."""

    center: torch.Tensor  # (D,) the mean of the test-set posterior means
    directions: torch.Tensor  # (P, D) unit principal directions of those means, largest variance first
    spreads: torch.Tensor  # (P,) their standard deviation along each direction
    attribute_directions: torch.Tensor | None = None  # (A, D) unit directions of ATTRIBUTES (vae.attributes), or none
    attribute_spreads: torch.Tensor | None = None  # (A,) the training latents' within-class deviation along each

    def tensors(self) -> dict[str, torch.Tensor]:
        names = TENSORS + (ATTRIBUTE_TENSORS if self.attribute_directions is not None else ())
        return {name: getattr(self, name).float().contiguous() for name in names}


TENSORS = ("class_means", "class_scales", "center", "directions", "spreads")
ATTRIBUTE_TENSORS = ("attribute_directions", "attribute_spreads")  # optional: older files and other datasets lack them


def fix_command(source: str) -> str:
    return f"python -m vae.steering --checkpoint {clip(source)}"


# Fitting


@torch.no_grad()
def fit_steering(
    model: VAE,
    train: ImageSet,
    test: ImageSet,
    directions: int = DIRECTIONS,
    batch_size: int = 1000,
    fit_images: int = 0,
    classes: Classes | None = None,
    attributes: bool = False,
) -> Steering:
    """The class regions (vae.classes.fit_classes on the training set's posterior means; `classes` when the caller has
    fitted them already: the export), the principal directions of the test set's posterior means and, with
    `attributes`, the attribute directions fitted within each class on the training images (vae.attributes: within
    classes the other attribute moves least, python -m bench.attributes)."""
    latents = None
    if classes is None or attributes:
        latents = posterior_means(model, train.images, batch_size).cpu()  # (N, D)
    if classes is None:
        classes = fit_classes(latents, train.labels, len(model.class_names), fit_images)
    found = {}
    if attributes:
        values = torch.cat([measure(as_float(batch)) for batch in train.images.split(batch_size)])  # (N, A)
        found = dict(zip(ATTRIBUTE_TENSORS, fit_directions(latents, train.labels.cpu(), values), strict=True))
    test_latents = posterior_means(model, test.images, batch_size).cpu().double()  # (M, D)
    center = test_latents.mean(dim=0)
    _, singular, vh = torch.linalg.svd(test_latents - center, full_matrices=False)  # principal components
    p = min(directions, model.latent_dim, len(singular))
    spreads = singular[:p] / max(len(test_latents) - 1, 1) ** 0.5
    return Steering(classes.class_means, classes.class_scales, center.float(), vh[:p].float(), spreads.float(), **found)


# Files


def write_steering(folder: str | Path, steering: Steering) -> None:
    data = save(steering.tensors())  # bytes, written into atomic_write's file: it keeps a new file's permissions
    atomic_write(Path(folder) / STEERING, lambda tmp: Path(tmp).write_bytes(data))


def steering_problem(tensors: dict[str, torch.Tensor], model: VAE) -> str | None:
    """What is wrong with a steering file's tensors for this model, or None."""
    names = set(tensors)
    optional = set(ATTRIBUTE_TENSORS) if set(ATTRIBUTE_TENSORS) <= names else set()  # both or neither
    if names - optional != set(TENSORS):
        lacking, extra = set(TENSORS) - names, names - set(TENSORS) - optional
        return f"holds {', '.join(sorted(names)) or 'no tensors'}, where {', '.join(TENSORS)} belong" + (
            f" (lacks {', '.join(sorted(lacking))})" if lacking else f" (unknown: {', '.join(sorted(extra))})"
        )
    k, d = len(model.class_names), model.latent_dim
    p = tensors["spreads"].shape[0] if tensors["spreads"].dim() == 1 else -1
    expected = {"class_means": (k, d), "class_scales": (k, d, d), "center": (d,), "directions": (p, d), "spreads": (p,)}
    if optional:
        expected |= {"attribute_directions": (len(ATTRIBUTES), d), "attribute_spreads": (len(ATTRIBUTES),)}
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
    if p < 1 or (tensors["spreads"] <= 0).any() or (optional and (tensors["attribute_spreads"] <= 0).any()):
        return "has no positive spreads"
    return None


def read_steering(folder: str | Path, model: VAE, source: str | None = None) -> tuple[Steering | None, str | None]:
    """The folder's steering file, checked strictly against the model, or None and what is off and how to fix it."""
    path = Path(folder) / STEERING
    source = clip(source if source is not None else folder)
    off = "so class samples, walks between classes, the nearest class and the latent sliders are off"
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
    return Steering(**{name: tensor.float() for name, tensor in tensors.items()}), None


# Using it


def slide_latent(steering: Steering, z: torch.Tensor, offsets) -> torch.Tensor:
    """z (D,) moved by offsets[i] standard deviations along principal direction i (fewer offsets: the first ones)."""
    offsets = torch.as_tensor(offsets, dtype=torch.float32).flatten()
    p = len(offsets)
    if p > len(steering.spreads):
        raise UserError(f"{p} slider offsets given, but this model has {len(steering.spreads)} directions.")
    shift = (offsets * steering.spreads[:p]) @ steering.directions[:p]  # (D,)
    return z + shift.to(z.device, z.dtype)


def no_attributes(steering: Steering | None) -> str | None:
    """Why the attribute directions are off for a model, or None when it has them."""
    if steering is not None and steering.attribute_directions is not None:
        return None
    return (
        "Thickness and slant are measures of handwritten digits: this model has no attribute directions (a model "
        "trained on MNIST gets them from `python -m vae.steering --checkpoint DIR`)."
    )


def attribute_latent(steering: Steering, z: torch.Tensor, attribute: str, amount: float) -> torch.Tensor:
    """z (D,) moved by `amount` standard deviations along the attribute's direction (vae.attributes)."""
    a = ATTRIBUTES.index(attribute)
    shift = amount * steering.attribute_spreads[a] * steering.attribute_directions[a]  # (D,)
    return z + shift.to(z.device, z.dtype)


# Writing it into a model folder


def add_steering(
    folder: Path,
    model: VAE,
    train: ImageSet,
    test: ImageSet,
    directions: int = DIRECTIONS,
    fit_images: int = 0,
    classes: Classes | None = None,
    attributes: bool = False,
) -> Steering:
    """Fit the steering (fit_steering) and write its file into `folder` (a staging folder)."""
    steering = fit_steering(
        model, train, test, directions, fit_images=fit_images, classes=classes, attributes=attributes
    )
    write_steering(folder, steering)
    return steering


@command
def main(argv: list[str] | None = None) -> None:
    from vae.config import saved_config
    from vae.figures import write_class_figures  # matplotlib: the app does not import it
    from vae.folder import TRAIN_CONFIG, writing
    from vae.refresh import checkpoint_splits, refresh_folder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="model folder written by train.py")
    parser.add_argument("--data-dir", help="dataset root; default: the one the model was trained with")
    parser.add_argument("--directions", type=int, default=DIRECTIONS, help="principal directions to store")
    parser.add_argument("--seed", type=int, help="seed of the class-samples figure; default: the training run's")
    args = parser.parse_args(argv)
    if args.directions < 1:
        parser.error("--directions must be at least 1")
    start = time.perf_counter()
    with writing(args.checkpoint) as folder:  # its lock held, and checked writable before any work
        model = VAE.from_pretrained(folder).eval()
        splits = checkpoint_splits(folder, args.data_dir)
        trained = saved_config(folder / TRAIN_CONFIG)
        seed = trained.seed if args.seed is None else args.seed
        attributes = trained.dataset in ATTRIBUTE_DATASETS
        steering = fit_steering(model, splits.train, splits.test, args.directions, attributes=attributes)

        def write(staging: Path) -> None:  # the steering file, the classes' figures and the card change together
            write_steering(staging, steering)
            write_class_figures(staging, model, steering, seed)

        refresh_folder(folder, write)
    print(
        f"wrote {folder / STEERING} ({len(steering.class_means)} class regions, {len(steering.spreads)} directions"
        f"{', thickness and slant' if steering.attribute_directions is not None else ''})"
        f", {LATENT_WALK} and {CLASS_SAMPLES} in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
