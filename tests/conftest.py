"""Shared fixtures: real MNIST data (a committed slice, or the full files when CI points at them)."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.class_samples import classifier_net, train_classifier
from vae.config import build_config
from vae.data import RAW_FILES, DataSettings, ImageSet, load_splits

ROOT = Path(__file__).resolve().parent.parent
SLICE = ROOT / "tests" / "data" / "mnist-slice"
FULL_MNIST = Path(os.environ.get("VAE_TEST_MNIST_DIR", ROOT.parent / "shared" / "data"))
FASHION_GZ = Path(os.environ.get("VAE_TEST_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one of several workers (pyproject's -n): the cores are shared out
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # and its commands', which inherit it: threads that outnumber the
    torch.set_num_threads(1)  # cores spin against each other, making a test 5-10x slower, not 2x


def share_one_tls_context() -> None:
    """httpx builds a TLS context for each request made without a Client (`httpx.get`, and each of gradio_client's
    calls): it parses the whole CA bundle, ~25 ms of CPU, thousands of times in this suite, for servers on
    http://127.0.0.1 that never use it. Here requests with the default settings share one, built once (an SSLContext is
    made to be shared by connections); anything else is built as httpx builds it."""
    from httpx._transports import default

    build, built = default.create_ssl_context, {}

    def shared(verify=True, cert=None, trust_env=True):
        if verify is not True or cert is not None:
            return build(verify=verify, cert=cert, trust_env=trust_env)
        key = (trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in built:
            built[key] = build(verify=verify, trust_env=trust_env)
        return built[key]

    default.create_ssl_context = shared


share_one_tls_context()


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject's addopts): a worker per core, at most 4: each holds torch, Gradio and a warm Python
    (~2 GB), and beyond 4 the suite's longest files, which one worker runs whole, set its length anyway."""
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def gunzip_into(src: Path, raw: Path) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for gz in src.glob("*.gz"):
        with gzip.open(gz) as f_in, open(raw / gz.stem, "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """A folder every worker of this test run sees (with -n, each worker has its own base folder inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def built_once(shared_dir: Path, name: str) -> Iterator[Path]:
    """SHARED_DIR/NAME, for a result that one worker builds and the others read: the first to come builds it while
    the others wait (flock on NAME.lock); the result, complete, says that it was built."""
    with open(shared_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield shared_dir / name


@pytest.fixture(scope="session")
def mnist_dir(shared_dir) -> Path:
    """A data root holding MNIST/raw with the committed slice: 1,200 training and 300 test digits."""
    with built_once(shared_dir, "mnist-slice") as root:
        if not all((root / "MNIST" / "raw" / name).exists() for name in RAW_FILES):
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
def digit_classifier(mnist_splits, shared_dir):
    """The class-samples benchmark's MLP, trained on all 60,000 MNIST training images (~98% on the test set, ~10 s);
    it must reach 97%. It judges what the app decodes: an independent reader of digits. Trained once per test run."""
    with built_once(shared_dir, "digit classifier.safetensors") as saved:
        if not saved.exists():
            train, val = mnist_splits.train, mnist_splits.val
            everything = ImageSet(
                torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]), train.class_names
            )
            net, accuracy = train_classifier(everything, mnist_splits.test)
            assert accuracy >= 0.97, f"the classifier itself is too weak to judge the VAE: {accuracy:.3f}"
            save_file(net.state_dict(), saved.with_suffix(".part"))
            saved.with_suffix(".part").rename(saved)
    net = classifier_net()
    net.load_state_dict(load_file(saved))
    return net.eval()


@pytest.fixture(scope="session")
def trained_run(mnist_dir, shared_dir) -> Iterator[Path]:
    """One small train.py run folder (3 epochs on the slice, test_training.SMALL), shared by the tests that need a
    trained run (built once per test run): read it, or copy it to change it."""
    from test_training import run_train

    with built_once(shared_dir, "trained run") as folder:
        if not (folder / "vae" / "model.safetensors").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a run that failed part-way
            run_train(mnist_dir, folder / "vae", "--epochs", "3", "--cpu")
    before = snapshot(folder)
    yield folder / "vae"
    assert snapshot(folder) == before, "a test changed the shared trained run: copy it first (shutil.copytree)"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under FOLDER with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


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
