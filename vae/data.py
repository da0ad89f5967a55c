"""Datasets as in-memory uint8 tensors, split once by the seed and batched by indexing.

MNIST-sized data (60,000 × 784 bytes = 47 MB) fits in memory, and on the accelerator. Decoding every
image once and slicing batches out of one tensor keeps the training loop from ever waiting on input,
unlike a DataLoader that runs a PIL transform per image.
"""

from __future__ import annotations

import gzip
import struct
import warnings
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from vae.errors import UserError
from vae.folder import atomic_write

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
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # torchvision's class, and its folder under the root
RAW_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
# Sizes of the official files, uncompressed: the same for MNIST and Fashion-MNIST (60,000 + 10,000 28x28 digits).
OFFICIAL_BYTES = dict(zip(RAW_FILES, [47_040_016, 60_008, 7_840_016, 10_008], strict=True))
IDX_MAGIC = {"images": 2051, "labels": 2049}  # 0x0803 / 0x0801: unsigned bytes (type 0x08) in 3 / 1 dimensions


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


@dataclass(frozen=True)
class DataSettings:
    """What decides the data: the dataset, where it is, and how it is split. A training run's settings hold these
    fields (`DataSettings.of(train_config)`), so do those an earlier run saved (`vae.config.saved_config`)."""

    dataset: str  # mnist, fashion-mnist or imagefolder
    data_dir: str  # the dataset root (DATA_DIR/MNIST/raw, ...) or the image folder
    image_size: int  # imagefolder: images are resized to image_size x image_size
    channels: int  # imagefolder: 1 (grayscale) or 3 (RGB)
    val_size: int  # training images held out for validation
    test_fraction: float  # imagefolder: the share of images held out as the test set
    seed: int  # fixes the held-out images
    max_train_samples: int | None  # train on the first N training images only (None: all)
    binarize: str = "none"  # or "dynamic": validation and test images binarised once (the trainer draws training ones)
    binarize_seed: int = 0  # fixes that one binarisation, so that runs and evaluations compare

    @classmethod
    def of(cls, settings) -> DataSettings:
        """The data settings among `settings`' attributes (a TrainConfig's, or any object with these names)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images, known before any is read: MNIST's are 1x28x28."""
        return (self.channels, self.image_size, self.image_size) if self.dataset == "imagefolder" else (1, 28, 28)


def torchvision_datasets():
    """torchvision.datasets, imported only to download or to list an image folder: its import takes ~1.5 s (it loads
    torch._dynamo), a third of a small run's start-up, and reading MNIST files already on disk does not need it."""
    try:
        from torchvision import datasets
    except ModuleNotFoundError as err:  # an install older than requirements.txt: say what to install
        raise UserError(
            f"No module named {err.name!r}: training, vae.evaluate and vae.tsne need the packages in "
            "requirements.txt (pip install -r requirements.txt)."
        ) from None
    return datasets


def extract_gz(raw: Path) -> None:
    """Decompress RAW/<file>.gz where only the .gz is there. torchvision accepts a .gz only when its MD5 is that
    of the official archive and downloads it again otherwise, e.g. for Debian's re-compressed dataset-fashion-mnist."""
    for name in RAW_FILES:
        gz = raw / f"{name}.gz"
        if gz.is_file() and not (raw / name).is_file():
            compressed = gz.read_bytes()
            try:
                data = gzip.decompress(compressed)
            except (OSError, EOFError, zlib.error) as err:  # not gzip, truncated, or a bad CRC
                raise UserError(
                    f"{gz} is not a valid gzip file ({err}). Replace it with the official {gz.name}, or delete it "
                    "so that it is downloaded again."
                ) from None
            atomic_write(raw / name, lambda tmp, data=data: Path(tmp).write_bytes(data))


def idx_error(path: Path, problem: str) -> UserError:
    return UserError(
        f"{path} is not a valid MNIST-format file: {problem}. Replace it with the official {path.name} "
        f"({OFFICIAL_BYTES[path.name]:,} bytes uncompressed for the full dataset), or delete it (and {path.name}.gz, "
        "if there) so that it is downloaded again."
    )


def read_idx(path: Path) -> torch.Tensor:
    """An MNIST-format IDX file as uint8: (N, 28, 28) images or (N,) labels, once its header is MNIST's and the file
    holds exactly the bytes the header counts. Read here, not by torchvision, whose reader fails with a bare assert
    or a reshape error that names no file, or accepts a file with bytes to spare."""
    kind = "images" if "images" in path.name else "labels"
    data = np.fromfile(path, dtype=np.uint8)  # writable, so the tensor below shares it instead of copying
    header = 16 if kind == "images" else 8  # the magic number, then one big-endian int32 per dimension
    if len(data) < header:
        raise idx_error(path, f"too short to hold its header: {len(data)} bytes, an IDX {kind} header is {header}")
    magic, count, *size = struct.unpack(f">{header // 4}I", data[:header].tobytes())
    if magic != IDX_MAGIC[kind]:
        raise idx_error(path, f"magic number {magic} where MNIST {kind} files have {IDX_MAGIC[kind]}")
    if kind == "images" and size != [28, 28]:
        raise idx_error(path, f"it holds {size[0]}x{size[1]} images; MNIST's are 28x28")
    items = f"{count} images of 28x28" if kind == "images" else f"{count} labels"
    expected = header + count * (784 if kind == "images" else 1)
    if len(data) < expected:
        raise idx_error(path, f"too short: its header counts {items} ({expected:,} bytes) but it has {len(data):,}")
    if len(data) > expected:
        raise idx_error(path, f"it has {len(data) - expected:,} extra byte(s) after the {items} its header counts")
    return torch.from_numpy(data[header:].reshape(count, *size))  # (N, 28, 28) or (N,) uint8


def read_split(raw: Path, split: str, class_names: list[str]) -> ImageSet:
    """RAW/<split>-images and -labels as an ImageSet, after checking that each image has one label in range."""
    images_path, labels_path = raw / f"{split}-images-idx3-ubyte", raw / f"{split}-labels-idx1-ubyte"
    images, labels = read_idx(images_path), read_idx(labels_path)
    if len(images) != len(labels):
        raise UserError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels: each image needs "
            "exactly one label. Replace both with the official files, or delete them (and their .gz, if there) so "
            "that they are downloaded again."
        )
    bad = (labels >= len(class_names)).nonzero()
    if len(bad):
        index = bad[0, 0].item()
        raise idx_error(
            labels_path, f"label {labels[index].item()} at index {index}; labels are 0-{len(class_names) - 1}"
        )
    return ImageSet(images.unsqueeze(1), labels.long(), class_names)  # (N, 1, 28, 28) uint8, (N,) int64


def load_torchvision(name: str, root: str) -> tuple[ImageSet, ImageSet]:
    """MNIST or Fashion-MNIST from ROOT/<MNIST|FashionMNIST>/raw, downloaded there when missing, every file checked."""
    folder = TORCHVISION[name]
    raw = Path(root) / folder / "raw"
    extract_gz(raw)
    if not all((raw / file).is_file() for file in RAW_FILES):
        dataset = getattr(torchvision_datasets(), folder)
        try:
            dataset(root, train=True, download=True)  # fetches all four files; read and checked below like any others
        except Exception as err:  # torchvision raises RuntimeError/URLError/OSError depending on the failure
            files = ", ".join(RAW_FILES)
            raise UserError(
                f"The {name} files are missing from {raw} and downloading them failed ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else 'no details'}). Put the four files {files} "
                f"(uncompressed, or as .gz) in {raw}, or pass --data-dir with the folder that holds {folder}/raw."
            ) from None
    names = FASHION_CLASSES if name == "fashion-mnist" else [str(d) for d in range(10)]
    return read_split(raw, "train", names), read_split(raw, "t10k", names)


def load_imagefolder(root: str, size: int, channels: int) -> ImageSet:
    """Every image under ROOT/<class>/..., converted to `channels` and resized to size x size."""
    if not Path(root).is_dir():
        raise UserError(f"Image folder not found: {root}. Pass --data-dir with a folder of class subfolders.")
    try:
        folder = torchvision_datasets().ImageFolder(root, loader=lambda path: path)  # decode below, counting failures
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


def load_splits(settings: DataSettings) -> Splits:
    """Train / validation / test sets (validation held out of the training images)."""
    if settings.dataset == "imagefolder":
        everything = load_imagefolder(settings.data_dir, settings.image_size, settings.channels)
        train, test = split(everything, max(1, round(settings.test_fraction * len(everything))), settings.seed + 1)
    else:
        train, test = load_torchvision(settings.dataset, settings.data_dir)
    train, val = split(train, settings.val_size, settings.seed)
    if settings.max_train_samples is not None:
        train = train.subset(torch.arange(min(settings.max_train_samples, len(train))))
    if settings.binarize == "dynamic":  # training images stay grayscale: the trainer draws their pixels each step
        val = ImageSet(binarized(val.images, settings.binarize_seed + 1), val.labels, val.class_names)
        test = ImageSet(binarized(test.images, settings.binarize_seed), test.labels, test.class_names)
    return Splits(train, val, test)


def binarized(images: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 images → one seeded draw of binary pixels ~ Bernoulli(intensity / 255), as uint8 0 or 255: the fixed
    binarisation of a held-out set (the test set's depends only on its images and the seed)."""
    draw = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed))
    return (draw * 255 < images.cpu()).to(torch.uint8) * 255


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """Index batches for one epoch: a permutation fixed by (seed, epoch), dealt out to `world` processes.

    Each process gets an equal shard (the last few images of an uneven epoch are dropped so every
    process takes the same number of steps); with one process every image is used.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    per_process = n // world
    shard = perm[rank * per_process : (rank + 1) * per_process]
    return list(shard.split(batch_size))
