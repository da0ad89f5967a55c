"""The committed default models: complete Hub-ready folders, small enough for git, and good enough that
the app's walks end at the digit asked for and random samples cover every digit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vae import VAE
from vae.evaluate import checkpoint_test_set, elbo_sums
from vae.steering import read_steering

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "checkpoints" / "vae-mnist"
FASHION = ROOT / "checkpoints" / "vae-fashion-mnist"
BINARY = ROOT / "checkpoints" / "vae-mnist-binary"
REQUIRED = {"config.json", "model.safetensors", "README.md", "metrics.json", "samples.png", "reconstructions.png"}
REQUIRED |= {"latent_walk.png", "tsne.png", "tsne.safetensors", "train_config.yaml", "steering.safetensors"}


@pytest.mark.parametrize("folder", [MNIST, FASHION, BINARY], ids=["mnist", "fashion-mnist", "mnist-binary"])
def test_committed_checkpoint_is_complete(folder):
    assert REQUIRED <= {p.name for p in folder.iterdir()}
    assert not (folder / "training_state").exists()
    assert sum(p.stat().st_size for p in folder.rglob("*")) < 20 * 2**20
    model = VAE.from_pretrained(folder)
    steering, problem = read_steering(folder, model)
    assert problem is None and len(model.class_names) == 10 and steering.class_means.abs().sum() > 0
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"test_loss", "test_recon", "test_kl", "test_iw_nll"} <= metrics.keys()


@pytest.mark.slow
def test_decoded_class_means_are_their_digits(digit_classifier):
    """The class means every tab uses (vae.classes, stored in steering.safetensors) decode to their digits."""
    model = VAE.from_pretrained(MNIST).eval()
    steering, _ = read_steering(MNIST, model)
    with torch.no_grad():
        predicted = digit_classifier(model.decode(steering.class_means)).argmax(1)
    assert predicted.tolist() == list(range(10))


@pytest.mark.slow
def test_random_samples_cover_every_digit(digit_classifier):
    model = VAE.from_pretrained(MNIST).eval()
    with torch.no_grad():
        counts = torch.bincount(digit_classifier(model.sample(1000, seed=0)).argmax(1), minlength=10)
    assert (counts >= 30).all(), f"digits 0-9 appear {counts.tolist()} times in 1,000 samples"


@pytest.mark.slow
def test_committed_mnist_model_meets_the_elbo_target(mnist_splits):
    """Issue 4's target: at most 95 nats per test image (the PyTorch examples VAE ends at ~105.5)."""
    model = VAE.from_pretrained(MNIST).eval()
    metrics = elbo_sums(model, mnist_splits.test.images, 1000).as_means()
    assert metrics["loss"] <= 95.0, metrics
    recorded = json.loads((MNIST / "metrics.json").read_text())
    assert metrics["loss"] == pytest.approx(recorded["test_loss"], abs=0.05)


@pytest.mark.slow
def test_committed_binary_model_reproduces_its_test_elbo(full_mnist_dir):
    """Measured on the binarisation its train_config.yaml records (what vae.evaluate does on a fresh clone), the
    folder gives the test -ELBO its card reports; its likelihood was estimated with the papers' K = 5000."""
    test = checkpoint_test_set(BINARY, str(full_mnist_dir))
    assert set(test.images.unique().tolist()) == {0, 255}
    model = VAE.from_pretrained(BINARY).eval()
    loss = elbo_sums(model, test.images, 1000).as_means()["loss"]
    recorded = json.loads((BINARY / "metrics.json").read_text())
    assert loss == pytest.approx(recorded["test_loss"], abs=1e-3)
    assert recorded["iw_samples"] == 5000 and recorded["test_iw_nll"] < recorded["test_loss"]
    assert recorded["test_iw_nll"] <= 85.0, "issue 14's target: the papers' protocol, K = 5000, whole test set"
