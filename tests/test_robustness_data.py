"""Corrupt MNIST-format files: each is reported as what it is (present but damaged), naming the file, what is
wrong with it and how to fix it, instead of as missing, an assertion without details, an IndexError later on,
or silently training on part of the data."""

from __future__ import annotations

import gzip
import random
import re
import shutil
import struct
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import pytest
import warm

from vae import UserError
from vae.config import build_config
from vae.data import DataSettings, load_splits

ROOT = Path(__file__).resolve().parent.parent
IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"  # the slice: 1,200 training digits


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """A corrupt file that is present must be reported, never downloaded over: fail any download attempt."""

    def urlopen(request, *args, **kwargs):
        raise URLError("network is disabled in the tests")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def corrupt_copy(mnist_dir: Path, tmp_path: Path, name: str, mutate: Callable[[bytes], bytes]) -> Path:
    """A data root in tmp_path holding the slice, with RAW/<name> rewritten by `mutate`; returns the root."""
    shutil.copytree(mnist_dir / "MNIST", tmp_path / "MNIST")
    path = tmp_path / "MNIST" / "raw" / name
    path.write_bytes(mutate(path.read_bytes()))
    return tmp_path


def with_header(data: bytes, *fields: int) -> bytes:
    """`data` with its first len(fields) big-endian 32-bit header fields replaced."""
    return struct.pack(f">{len(fields)}I", *fields) + data[4 * len(fields) :]


def load_error(root: Path) -> str:
    with pytest.raises(UserError) as err:
        load_splits(DataSettings.of(build_config({"data_dir": str(root), "val_size": 200})))
    message = str(err.value)
    assert "missing" not in message and "downloading" not in message  # the file is there: do not say otherwise
    return message


@pytest.mark.parametrize(
    "name, mutate, problem",
    [
        (IMAGES, lambda d: d[: len(d) // 2], r"too short: its header counts 1200 images of 28x28 \(940,816 bytes"),
        (LABELS, lambda d: d[:-1], r"too short: its header counts 1200 labels \(1,208 bytes\) but it has 1,207"),
        (LABELS, lambda d: d[:5], r"too short to hold its header: 5 bytes, an IDX labels header is 8"),
        (IMAGES, lambda d: d + b"\0" * 784, r"784 extra byte\(s\) after the 1200 images of 28x28 its header counts"),
        ("t10k-labels-idx1-ubyte", lambda d: d + b"\x07", r"1 extra byte\(s\) after the 300 labels its header counts"),
    ],
    ids=["truncated images", "truncated labels", "shorter than a header", "extra image bytes", "extra label byte"],
)
def test_a_file_whose_length_disagrees_with_its_header_is_named(mnist_dir, tmp_path, name, mutate, problem):
    message = load_error(corrupt_copy(mnist_dir, tmp_path, name, mutate))
    assert str(tmp_path / "MNIST" / "raw" / name) in message
    assert re.search(problem, message), message
    assert "Replace it with the official" in message and "bytes" in message


@pytest.mark.parametrize(
    "name, mutate, problem",
    [
        (IMAGES, lambda d: random.Random(0).randbytes(len(d)), r"magic number \d+ where MNIST images files have 2051"),
        (IMAGES, lambda d: with_header(d, 2049), r"magic number 2049 where MNIST images files have 2051"),
        (LABELS, lambda d: with_header(d, 2051), r"magic number 2051 where MNIST labels files have 2049"),
        (IMAGES, lambda d: with_header(d, 2051, 1200, 14, 56), r"holds 14x56 images; MNIST's are 28x28"),
    ],
    ids=["random bytes", "images with the labels magic", "labels with the images magic", "14x56 images"],
)
def test_a_file_with_a_wrong_header_is_named(mnist_dir, tmp_path, name, mutate, problem):
    message = load_error(corrupt_copy(mnist_dir, tmp_path, name, mutate))
    assert str(tmp_path / "MNIST" / "raw" / name) in message
    assert re.search(problem, message), message
    assert "Replace it with the official" in message


@pytest.mark.parametrize(
    "count, mutate",
    [
        (1300, lambda d: with_header(d, 2049, 1300) + bytes(100)),  # the header and the bytes agree: 100 more
        (1100, lambda d: with_header(d, 2049, 1100)[: 8 + 1100]),
    ],
    ids=["more labels than images", "fewer labels than images"],
)
def test_images_and_labels_of_different_counts_name_both_files_and_counts(mnist_dir, tmp_path, count, mutate):
    message = load_error(corrupt_copy(mnist_dir, tmp_path, LABELS, mutate))
    raw = tmp_path / "MNIST" / "raw"
    assert str(raw / IMAGES) in message and str(raw / LABELS) in message
    assert "1200 images" in message and f"{count} labels" in message


@pytest.mark.parametrize(
    "name, index, value",
    [(LABELS, 0, 200), (LABELS, 1199, 10), ("t10k-labels-idx1-ubyte", 17, 255)],
    ids=["200 first", "10 last", "255 in the test set"],
)
def test_a_label_out_of_range_is_refused(mnist_dir, tmp_path, name, index, value):
    def mutate(data: bytes) -> bytes:
        return data[: 8 + index] + bytes([value]) + data[8 + index + 1 :]

    message = load_error(corrupt_copy(mnist_dir, tmp_path, name, mutate))
    assert str(tmp_path / "MNIST" / "raw" / name) in message
    assert f"label {value} at index {index}" in message and "0-9" in message


@pytest.mark.parametrize(
    "mutate",
    [lambda gz: gz[: len(gz) // 2], lambda gz: b"not gzip at all" + gz],
    ids=["truncated .gz", "not a .gz"],
)
def test_a_corrupt_gz_is_named(mnist_dir, tmp_path, mutate):
    """A folder holding only .gz files: the damaged one is named, not reported as missing."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in [IMAGES, LABELS, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        (raw / f"{name}.gz").write_bytes(gzip.compress((mnist_dir / "MNIST" / "raw" / name).read_bytes()))
    gz = raw / f"{IMAGES}.gz"
    gz.write_bytes(mutate(gz.read_bytes()))
    message = load_error(tmp_path)
    assert str(gz) in message and "not a valid gzip file" in message
    assert not (raw / IMAGES).exists()  # nothing half-extracted left behind


@pytest.mark.slow
def test_train_py_with_a_truncated_file_prints_one_error_line_and_writes_nothing(mnist_dir, tmp_path):
    root = corrupt_copy(mnist_dir, tmp_path / "data", LABELS, lambda d: d[:-100])
    out = tmp_path / "out"
    cmd = [sys.executable, "train.py", "--epochs", "1", "--max-train-samples", "2000", "--tsne-samples", "200"]
    cmd += ["--cpu", "--data-dir", str(root), "--output-dir", str(out)]
    result = warm.run(cmd, cwd=ROOT, timeout=300)
    assert result.returncode != 0
    assert result.stderr.startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert str(root / "MNIST" / "raw" / LABELS) in result.stderr and "too short" in result.stderr
    assert not out.exists()
