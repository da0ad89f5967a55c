"""Shared fixtures: real MNIST data (a committed slice, or the full files when CI points at them)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from bench.class_samples import train_classifier
from vae.config import build_config
from vae.data import DataSettings, ImageSet, load_splits

ROOT = Path(__file__).resolve().parent.parent
SLICE = ROOT / "tests" / "data" / "mnist-slice"
FULL_MNIST = Path(os.environ.get("VAE_TEST_MNIST_DIR", ROOT.parent / "shared" / "data"))
FASHION_GZ = Path(os.environ.get("VAE_TEST_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def gunzip_into(src: Path, raw: Path) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for gz in src.glob("*.gz"):
        with gzip.open(gz) as f_in, open(raw / gz.stem, "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A data root holding MNIST/raw with the committed slice: 1,200 training and 300 test digits."""
    root = tmp_path_factory.mktemp("mnist-slice")
    gunzip_into(SLICE, root / "MNIST" / "raw")
    return root


@pytest.fixture(scope="session")
def full_mnist_dir() -> Path:
    """The full official MNIST (60,000 + 10,000), when this machine has it (CI sets VAE_TEST_MNIST_DIR)."""
    if not (FULL_MNIST / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"full MNIST not found under {FULL_MNIST} (set VAE_TEST_MNIST_DIR)")
    return FULL_MNIST


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory) -> Path:
    """A data root with Fashion-MNIST's four official .gz files in FashionMNIST/raw (Debian dataset-fashion-mnist)."""
    if not (FASHION_GZ / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not found under {FASHION_GZ} (apt-get install dataset-fashion-mnist)")
    root = tmp_path_factory.mktemp("fashion")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in FASHION_GZ.glob("*.gz"):
        shutil.copy(gz, raw / gz.name)
    return root


@pytest.fixture(scope="session")
def mnist_splits(full_mnist_dir):
    return load_splits(DataSettings.of(build_config({"data_dir": str(full_mnist_dir)})))


@pytest.fixture(scope="session")
def digit_classifier(mnist_splits):
    """The class-samples benchmark's MLP, trained on all 60,000 MNIST training images (~98% on the test set, ~10 s);
    it must reach 97%. It judges what the app decodes: an independent reader of digits."""
    train, val = mnist_splits.train, mnist_splits.val
    everything = ImageSet(
        torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]), train.class_names
    )
    net, accuracy = train_classifier(everything, mnist_splits.test)
    assert accuracy >= 0.97, f"the classifier itself is too weak to judge the VAE: {accuracy:.3f}"
    return net


@pytest.fixture(scope="session")
def trained_run(mnist_dir, tmp_path_factory) -> Path:
    """One small train.py run folder (3 epochs on the slice, test_training.SMALL), shared by the tests that need a
    trained run: read it, or copy it to change it."""
    from test_training import run_train

    out = tmp_path_factory.mktemp("trained run") / "vae"
    run_train(mnist_dir, out, "--epochs", "3", "--cpu")
    return out


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[[str], Path]]:
    """tmpfs(size) → a folder on a file system of that size (e.g. "3m": a full disk on demand), unmounted after the
    test; a skip where this machine does not let the tests mount one."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"small disk {len(mounts)}"
        folder.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount a small file system here ({made.stderr.decode().strip()[:200]})")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)
