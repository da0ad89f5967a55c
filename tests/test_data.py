"""Datasets: MNIST and Fashion-MNIST from their official files, image folders, the seeded splits, clear
errors for every way the data can be missing, and the index batches each process trains on."""

from __future__ import annotations

import ast
import shutil
import urllib.request
import warnings
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from PIL import Image

from vae import UserError
from vae.config import build_config
from vae.data import FASHION_CLASSES, RAW_FILES, DataSettings, epoch_batches, load_splits
from vae.imaging import as_float

SLICE = Path(__file__).resolve().parent / "data" / "mnist-slice"  # the committed .gz files behind mnist_dir


def load(data_dir: Path, **settings):
    return load_splits(DataSettings.of(build_config({"data_dir": str(data_dir), **settings})))


def rows(images: torch.Tensor) -> Counter:
    """Each image's bytes, counted: equal Counters mean the same images, in any order."""
    return Counter(image.numpy().tobytes() for image in images)


def test_mnist_slice_loads_as_uint8_with_a_seeded_validation_split(mnist_dir):
    splits = load(mnist_dir, val_size=200)
    assert splits.train.images.shape == (1000, 1, 28, 28)
    assert splits.val.images.shape == (200, 1, 28, 28)
    assert splits.test.images.shape == (300, 1, 28, 28)
    for part in (splits.train, splits.val, splits.test):
        assert part.images.dtype == torch.uint8 and part.labels.dtype == torch.int64
        assert len(part.labels) == len(part.images)
        assert part.class_names == [str(d) for d in range(10)]
    assert set(splits.train.labels.tolist()) == set(range(10))
    assert splits.train.images.max() == 255 and splits.train.images.min() == 0
    x = as_float(splits.val.images)
    assert x.dtype == torch.float32 and x.max() == 1.0 and x.min() == 0.0


def official_mnist(root: str, train: bool):
    """torchvision's own reader of the files, imported here: importing torchvision costs ~1.4 s (it loads
    torch._dynamo), which every test worker would pay when it collects this file."""
    from torchvision import datasets

    return datasets.MNIST(root, train=train)


def test_train_and_validation_partition_the_official_training_images(mnist_dir):
    splits = load(mnist_dir, val_size=200)
    official = official_mnist(str(mnist_dir), train=True)
    assert not rows(splits.train.images) & rows(splits.val.images)
    assert rows(splits.train.images) + rows(splits.val.images) == rows(official.data)
    # labels travel with their images
    by_image = {
        image.numpy().tobytes(): label for image, label in zip(official.data, official.targets.tolist(), strict=True)
    }
    for images, labels in [(splits.train.images, splits.train.labels), (splits.val.images, splits.val.labels)]:
        assert [by_image[image.numpy().tobytes()] for image in images[:, 0]] == labels.tolist()
    assert rows(splits.test.images) == rows(official_mnist(str(mnist_dir), train=False).data)


def test_the_split_is_fixed_by_the_seed(mnist_dir):
    a, b, c = load(mnist_dir, val_size=200), load(mnist_dir, val_size=200), load(mnist_dir, val_size=200, seed=1)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert rows(a.val.images) != rows(c.val.images)
    assert torch.equal(a.test.images, c.test.images)  # the official test set never moves


def test_max_train_samples_keeps_the_first_images_of_the_split(mnist_dir):
    full, few = load(mnist_dir, val_size=200), load(mnist_dir, val_size=200, max_train_samples=50)
    assert torch.equal(few.train.images, full.train.images[:50])
    assert torch.equal(few.train.labels, full.train.labels[:50])
    assert torch.equal(few.val.images, full.val.images)  # validation is unaffected
    assert len(load(mnist_dir, val_size=200, max_train_samples=5000).train) == 1000


def test_holding_out_every_image_is_a_clear_error(mnist_dir):
    with pytest.raises(UserError, match="Cannot hold out 1200 images from a set of 1200.*--val-size"):
        load(mnist_dir, val_size=1200)


def test_full_mnist_has_the_official_sizes(full_mnist_dir):
    splits = load(full_mnist_dir)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55_000, 5_000, 10_000)
    assert torch.bincount(splits.test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_fashion_mnist_loads_from_the_official_gz_files(fashion_dir, offline):
    splits = load(fashion_dir, dataset="fashion-mnist", val_size=1000)
    assert splits.train.images.shape == (59_000, 1, 28, 28) and splits.test.images.shape == (10_000, 1, 28, 28)
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.class_names == FASHION_CLASSES
    assert "Ankle boot" in splits.test.class_names and "Trouser" in splits.test.class_names
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10
    assert offline == []  # the .gz files were verified and extracted, nothing downloaded


@pytest.fixture
def offline(monkeypatch) -> list[str]:
    """torchvision's downloader reaches the network through urllib's urlopen: fail there, as an offline machine
    would, and record the URLs it tried. Files already on disk are still verified and extracted as usual."""
    calls: list[str] = []

    def urlopen(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", request))
        raise URLError("network is disabled in the tests")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_missing_mnist_files_name_the_folder_and_the_four_files(tmp_path, offline):
    with pytest.raises(UserError) as err:
        load(tmp_path / "data")
    message = str(err.value)
    assert offline and "train-images-idx3-ubyte.gz" in offline[0]  # it did try to download, and failed
    assert str(tmp_path / "data" / "MNIST" / "raw") in message
    assert all(name in message for name in RAW_FILES)
    assert "--data-dir" in message and "downloading them failed" in message


def test_mnist_as_gz_files_loads_offline_whatever_compressed_them(mnist_dir, tmp_path, offline):
    """The committed slice's .gz files are not the official archives (torchvision checks their MD5), yet a
    folder holding only them must load without a download."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in SLICE.glob("*.gz"):
        shutil.copy(gz, raw / gz.name)
    splits, expected = load(tmp_path, val_size=200), load(mnist_dir, val_size=200)
    assert torch.equal(splits.train.images, expected.train.images)
    assert torch.equal(splits.test.labels, expected.test.labels)
    assert offline == []


# -- image folders -------------------------------------------------------------------------------------


def write_digits_as_pngs(mnist_dir: Path, root: Path, per_class: int = 4) -> list[tuple[int, bytes]]:
    """The first `per_class` test digits of 0, 1 and 2 as PNGs in zero/, one/, two/; returns (label, bytes)."""
    test = official_mnist(str(mnist_dir), train=False)
    written = []
    for label, name in enumerate(["one", "two", "zero"]):  # folders sort alphabetically: one=0, two=1, zero=2
        digit = {"one": 1, "two": 2, "zero": 0}[name]
        (root / name).mkdir(parents=True)
        for i, index in enumerate((test.targets == digit).nonzero()[:per_class, 0].tolist()):
            image = test.data[index].numpy()
            Image.fromarray(image).save(root / name / f"{i}.png")
            written.append((label, image.tobytes()))
    return written


def test_image_folder_round_trips_real_digits_through_png(mnist_dir, tmp_path):
    written = write_digits_as_pngs(mnist_dir, tmp_path / "digits", per_class=10)
    splits = load(tmp_path / "digits", dataset="imagefolder", val_size=3, test_fraction=0.2)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (21, 3, 6)
    assert splits.train.class_names == ["one", "two", "zero"]
    assert splits.train.images.shape[1:] == (1, 28, 28) and splits.train.images.dtype == torch.uint8
    loaded = [
        (label, image.numpy().tobytes())
        for part in (splits.train, splits.val, splits.test)
        for image, label in zip(part.images[:, 0], part.labels.tolist(), strict=True)
    ]
    assert Counter(loaded) == Counter(written)  # every pixel and every label, exactly
    again = load(tmp_path / "digits", dataset="imagefolder", val_size=3, test_fraction=0.2)
    assert torch.equal(again.test.images, splits.test.images)  # the test split is fixed by the seed too


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Grayscale and RGB images of different sizes in two classes, and one file that is not an image."""
    root = tmp_path / "shapes"
    (root / "red").mkdir(parents=True)
    (root / "grey").mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16 + i), (255, 0, 0)).save(root / "red" / f"{i}.png")
        Image.new("L", (20 + i, 20), 128).save(root / "grey" / f"{i}.png")
    (root / "grey" / "broken.png").write_bytes(b"not a png at all")
    return root


def test_image_folder_skips_unreadable_files_with_a_warning_counting_them(mixed_folder):
    with pytest.warns(UserWarning, match="Skipped 1 unreadable file"):
        splits = load(mixed_folder, dataset="imagefolder", val_size=1, test_fraction=0.2, image_size=8)
    parts = (splits.train, splits.val, splits.test)
    assert sum(len(p) for p in parts) == 6
    for part in parts:
        assert part.images.shape[1:] == (1, 8, 8)
    labels = torch.cat([p.labels for p in parts])
    assert torch.bincount(labels).tolist() == [3, 3] and splits.train.class_names == ["grey", "red"]


def test_image_folder_in_colour_keeps_rgb_and_resizes(mixed_folder):
    with pytest.warns(UserWarning):
        splits = load(mixed_folder, dataset="imagefolder", val_size=1, test_fraction=0.2, image_size=12, channels=3)
    images = torch.cat([splits.train.images, splits.val.images, splits.test.images])
    labels = torch.cat([splits.train.labels, splits.val.labels, splits.test.labels])
    assert images.shape == (6, 3, 12, 12)
    red = images[labels == 1]
    assert (red[:, 0] == 255).all() and (red[:, 1:] == 0).all()
    assert (images[labels == 0] == 128).all()  # grey becomes equal R, G and B


def test_a_folder_of_only_unreadable_images_is_a_clear_error(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "a.png").write_bytes(b"\x89PNG truncated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match="No readable images under .*1 file"):
            load(tmp_path, dataset="imagefolder")


@pytest.mark.parametrize("layout", ["empty", "no class subfolders", "no images in the class folders"])
def test_a_folder_without_class_subfolders_of_images_is_a_clear_error(tmp_path, layout):
    if layout == "no class subfolders":
        Image.new("L", (8, 8)).save(tmp_path / "loose.png")
    elif layout == "no images in the class folders":
        (tmp_path / "cats").mkdir()
        (tmp_path / "cats" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="is not an image folder") as err:
        load(tmp_path, dataset="imagefolder")
    assert str(tmp_path) in str(err.value) and "one subfolder per class" in str(err.value)


def test_a_missing_image_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="Image folder not found: .*nope.*--data-dir"):
        load(tmp_path / "nope", dataset="imagefolder")


def test_data_settings_are_the_runs_and_load_without_a_training_config(mnist_dir):
    """vae.data reads explicit data settings: a run's (DataSettings.of) or any others, never a TrainConfig."""
    config = build_config({"data_dir": str(mnist_dir), "val_size": 150, "seed": 4, "max_train_samples": 500})
    settings = DataSettings.of(config)
    assert settings == DataSettings("mnist", str(mnist_dir), 28, 1, 150, 0.1, 4, 500)
    assert settings.image_shape == (1, 28, 28)
    colour = DataSettings.of(build_config({"dataset": "imagefolder", "image_size": 32, "channels": 3}))
    assert colour.image_shape == (3, 32, 32)
    splits = load_splits(settings)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (500, 150, 300)
    tree = ast.parse((Path(__file__).resolve().parent.parent / "vae" / "data.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "vae.config" not in imported


# -- batches -------------------------------------------------------------------------------------------


def test_one_process_sees_every_image_once_per_epoch():
    batches = epoch_batches(103, 10, seed=0, epoch=0)
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(103))
    assert not torch.equal(torch.cat(batches), torch.arange(103))  # shuffled


def test_batches_are_fixed_by_seed_and_epoch():
    order = {key: torch.cat(epoch_batches(100, 32, *key)) for key in [(0, 0), (0, 1), (1, 0)]}
    assert torch.equal(order[(0, 0)], torch.cat(epoch_batches(100, 32, 0, 0)))
    assert not torch.equal(order[(0, 0)], order[(0, 1)])  # a new order each epoch
    assert not torch.equal(order[(0, 0)], order[(1, 0)])  # and each seed


@pytest.mark.parametrize("n", [100, 101])
def test_two_processes_get_disjoint_equal_shards(n):
    shards = [epoch_batches(n, 16, seed=3, epoch=2, rank=rank, world=2) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1])  # the same number of steps, or the processes would deadlock
    first, second = torch.cat(shards[0]), torch.cat(shards[1])
    assert len(first) == len(second) == n // 2
    assert not set(first.tolist()) & set(second.tolist())
    assert set(first.tolist()) | set(second.tolist()) <= set(range(n))
    alone = torch.cat(epoch_batches(n, 16, seed=3, epoch=2))
    assert torch.equal(torch.cat([first, second]), alone[: 2 * (n // 2)])  # one permutation, dealt out
