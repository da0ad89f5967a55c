"""Datasets as in-memory uint8 tensors, split once by the seed and batched by indexing.

MNIST-sized data (60,000 × 784 bytes = 47 MB) fits in memory, and on the accelerator. Decoding every
image once and slicing batches out of one tensor keeps the training loop from ever waiting on input,
unlike a DataLoader that runs a PIL transform per image.
"""

from __future__ import annotations

import gzip
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import datasets
from tqdm.auto import tqdm

from vae.config import TrainConfig
from vae.errors import UserError
from vae.io import atomic_write

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
TORCHVISION = {"mnist": (datasets.MNIST, "MNIST"), "fashion-mnist": (datasets.FashionMNIST, "FashionMNIST")}
RAW_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.class_names)

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device), self.class_names)


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [0, 1], on their own device."""
    return images.float().div_(255)


def extract_gz(raw: Path) -> None:
    """Decompress RAW/<file>.gz where only the .gz is there. torchvision accepts a .gz only when its MD5 is that
    of the official archive and downloads it again otherwise, e.g. for Debian's re-compressed dataset-fashion-mnist."""
    for name in RAW_FILES:
        gz = raw / f"{name}.gz"
        if gz.is_file() and not (raw / name).is_file():
            atomic_write(raw / name, lambda tmp, gz=gz: Path(tmp).write_bytes(gzip.decompress(gz.read_bytes())))


def load_torchvision(name: str, root: str) -> tuple[ImageSet, ImageSet]:
    """MNIST or Fashion-MNIST from ROOT/<MNIST|FashionMNIST>/raw, downloaded there when missing."""
    cls, folder = TORCHVISION[name]
    try:
        extract_gz(Path(root) / folder / "raw")
        train = cls(root, train=True, download=True)
        test = cls(root, train=False, download=True)
    except Exception as err:  # torchvision raises RuntimeError/URLError/OSError depending on the failure
        raw = Path(root) / folder / "raw"
        files = ", ".join(RAW_FILES)
        raise UserError(
            f"The {name} files are missing from {raw} and downloading them failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no details'}). Put the four files {files} "
            f"(uncompressed, or as .gz) in {raw}, or pass --data-dir with the folder that holds {folder}/raw."
        ) from None
    names = FASHION_CLASSES if name == "fashion-mnist" else [str(d) for d in range(10)]
    return (
        ImageSet(train.data.unsqueeze(1), train.targets.long(), names),  # (60000, 1, 28, 28) uint8
        ImageSet(test.data.unsqueeze(1), test.targets.long(), names),
    )


def load_imagefolder(root: str, size: int, channels: int) -> ImageSet:
    """Every image under ROOT/<class>/..., converted to `channels` and resized to size x size."""
    if not Path(root).is_dir():
        raise UserError(f"Image folder not found: {root}. Pass --data-dir with a folder of class subfolders.")
    try:
        folder = datasets.ImageFolder(root, loader=lambda path: path)  # decode below, counting failures
    except (FileNotFoundError, RuntimeError) as err:
        raise UserError(
            f"{root} is not an image folder: {err}. Put images in one subfolder per class, "
            "e.g. DATA_DIR/cats/1.png and DATA_DIR/dogs/2.jpg."
        ) from None
    mode = "L" if channels == 1 else "RGB"
    images, labels, skipped = [], [], 0
    for path, label in tqdm(folder.samples, desc="decoding images", unit="img", leave=False):
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert(mode).resize((size, size), Image.Resampling.BILINEAR))
        except (OSError, ValueError, Image.DecompressionBombError):
            skipped += 1
            continue
        images.append(array.reshape(size, size, channels))
        labels.append(label)
    if skipped:
        warnings.warn(f"Skipped {skipped} unreadable file(s) under {root}.", stacklevel=2)
    if not images:
        raise UserError(f"No readable images under {root}: every one of {skipped} file(s) failed to open.")
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W) uint8
    return ImageSet(stacked, torch.tensor(labels), list(folder.classes))


def split(data: ImageSet, holdout: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """(rest, holdout) with `holdout` images chosen by a seeded permutation."""
    if holdout >= len(data):
        raise UserError(
            f"Cannot hold out {holdout} images from a set of {len(data)}: lower --val-size "
            f"(or --test-fraction) so that some images are left for training."
        )
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(perm[holdout:]), data.subset(perm[:holdout])


def load_splits(config: TrainConfig) -> Splits:
    """Train / validation / test sets for the config's dataset (validation held out of the training images)."""
    if config.dataset == "imagefolder":
        everything = load_imagefolder(config.data_dir, config.image_size, config.channels)
        train, test = split(everything, max(1, round(config.test_fraction * len(everything))), config.seed + 1)
    else:
        train, test = load_torchvision(config.dataset, config.data_dir)
    train, val = split(train, config.val_size, config.seed)
    if config.max_train_samples is not None:
        train = train.subset(torch.arange(min(config.max_train_samples, len(train))))
    return Splits(train, val, test)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """Index batches for one epoch: a permutation fixed by (seed, epoch), dealt out to `world` processes.

    Each process gets an equal shard (the last few images of an uneven epoch are dropped so every
    process takes the same number of steps); with one process every image is used.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    per_process = n // world
    shard = perm[rank * per_process : (rank + 1) * per_process]
    return list(shard.split(batch_size))
