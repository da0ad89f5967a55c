"""Dynamically binarised MNIST and the importance-weighted objective (issue 14): the literature's protocol.

Training images are drawn again as binary pixels every time they are seen; validation and test images are binarised
once, by a recorded seed, so that `python -m vae.evaluate` measures a folder trained that way on the same binary test
set; `--objective iwae --train-samples K` trains on the bound of Burda et al. (2015).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import warm
from test_training import ROOT, run_train

from vae import VAE
from vae.config import build_config, saved_config
from vae.data import DataSettings, binarized, load_splits
from vae.errors import UserError
from vae.evaluate import checkpoint_test_set
from vae.loss import importance_weighted_bound, importance_weighted_nll, negative_elbo

BINARY = ["--binarize", "dynamic", "--objective", "iwae", "--train-samples", "3", "--cpu"]


def slice_splits(mnist_dir: Path, **changes) -> object:
    settings = DataSettings.of(build_config({"data_dir": str(mnist_dir), "val_size": 200, **changes}))
    return load_splits(settings)


def test_binarized_draws_bernoulli_pixels_by_a_seed(mnist_dir):
    images = slice_splits(mnist_dir).test.images  # (300, 1, 28, 28) uint8
    once, again, other = binarized(images, 0), binarized(images, 0), binarized(images, 1)
    assert set(once.unique().tolist()) == {0, 255} and once.dtype == torch.uint8
    assert torch.equal(once, again) and not torch.equal(once, other)
    assert not once[images == 0].any() and once[images == 255].eq(255).all(), "black stays black, white stays white"
    assert abs(once.float().mean() - images.float().mean()) / 255 < 0.005, "each pixel is on with its intensity"


def test_dynamic_binarisation_fixes_the_held_out_images_only(mnist_dir):
    grey, binary = slice_splits(mnist_dir), slice_splits(mnist_dir, binarize="dynamic")
    assert torch.equal(grey.train.images, binary.train.images), "training images stay grey: the trainer draws them"
    for split in ("val", "test"):
        images = getattr(binary, split).images
        assert set(images.unique().tolist()) == {0, 255}
    fewer_val = slice_splits(mnist_dir, binarize="dynamic", val_size=100)
    assert torch.equal(binary.test.images, fewer_val.test.images), "the test set's draw depends on the seed alone"
    assert not torch.equal(binary.test.images, slice_splits(mnist_dir, binarize="dynamic", binarize_seed=1).test.images)


def test_the_bound_with_one_sample_is_the_elbo_and_tightens_with_more():
    model = VAE.from_pretrained(ROOT / "checkpoints" / "vae-mnist").eval()
    x = model.sample(200, seed=0).bernoulli(generator=torch.Generator().manual_seed(0))  # binary images, likely ones
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        one = model(x, generator=torch.Generator().manual_seed(1))
        parts = importance_weighted_bound(one.logits, x, one.mu, one.logvar, one.z)
        elbo = negative_elbo(one.logits, x, one.mu, one.logvar)
        # K = 1: -log p(x|z) + log q(z|x) - log p(z) with the same z: the one-sample ELBO (its KL estimated).
        assert torch.allclose(parts.recon, elbo.recon) and torch.allclose(parts.kl, elbo.kl)
        assert abs(parts.loss.mean() - elbo.loss.mean()) < 1.0
        bounds = {}
        for k in (1, 10, 100):
            out = model(x, generator=generator, samples=k)
            assert out.logits.shape == (k * 200, 784) and out.z.shape == (k * 200, model.latent_dim)
            bounds[k] = importance_weighted_bound(out.logits, x, out.mu, out.logvar, out.z).loss.mean().item()
        assert bounds[1] > bounds[10] > bounds[100], bounds
        nll = importance_weighted_nll(model, x, 100, generator=torch.Generator().manual_seed(2)).mean().item()
        assert bounds[100] == pytest.approx(nll, abs=0.3), "the training bound is the evaluation's estimate"
        no_kl = importance_weighted_bound(out.logits, x, out.mu, out.logvar, out.z, kl_weight=0.0).loss
        recon = torch.nn.functional.binary_cross_entropy_with_logits(
            out.logits, x.flatten(1).repeat(100, 1), reduction="none"
        )
        expected = -(torch.logsumexp(-recon.sum(1).view(100, 200), 0) - math.log(100))
        assert torch.allclose(no_kl, expected, atol=1e-3)


def test_one_sample_forward_is_unchanged():
    model = VAE(image_shape=(1, 28, 28), hidden_dims=[32], latent_dim=4, class_names=list("0123456789"))
    x = torch.rand(5, 1, 28, 28)
    out = model(x, generator=torch.Generator().manual_seed(3))
    mu, logvar = model.encode(x)
    z = mu + torch.randn(mu.shape, generator=torch.Generator().manual_seed(3)) * torch.exp(0.5 * logvar)
    assert torch.equal(out.z, z) and torch.equal(out.logits, model.decode_logits(z))


def test_train_samples_without_iwae_is_refused():
    with pytest.raises(UserError, match=r"--train-samples 5 needs --objective iwae"):
        build_config({"train_samples": 5})
    with pytest.raises(UserError, match="'binarize' must be one of none, dynamic"):
        build_config({"binarize": "static"})
    result = warm.run([sys.executable, "train.py", "--train-samples", "4", "--epochs", "1"], cwd=ROOT)
    assert result.returncode != 0 and "needs --objective iwae" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def binary_run(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("binary run") / "vae mnist binary"
    run_train(mnist_dir, out, "--epochs", "2", *BINARY)
    return out


@pytest.mark.slow
def test_a_binarised_iwae_run_and_its_evaluation_agree(binary_run, tmp_path):
    settings = (binary_run / "train_config.yaml").read_text()
    assert "binarize: dynamic" in settings and "objective: iwae" in settings and "train_samples: 3" in settings
    card = (binary_run / "README.md").read_text()
    assert "dynamically binarised" in card and "importance-weighted bound with 3 samples" in card
    recorded = json.loads((binary_run / "metrics.json").read_text())
    assert "| IWAE, k = 50, same paper | 84.78 |" in card, "the card places the model among the published ones"
    assert f"| this model (IWAE, k = 3, 2 epochs) | **{recorded['test_iw_nll']:.2f}** (K = 5) | here |" in card
    test = checkpoint_test_set(binary_run)  # what vae.evaluate measures: the same fixed binarisation
    assert set(test.images.unique().tolist()) == {0, 255}
    output = tmp_path / "eval.json"
    command = [sys.executable, "-m", "vae.evaluate", "--checkpoint", str(binary_run), "--iw-samples", "5"]
    result = warm.run([*command, "--output", str(output)], cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    measured = json.loads(output.read_text())
    assert measured["test_loss"] == pytest.approx(recorded["test_loss"], abs=1e-4), "the folder's numbers reproduce"
    assert measured["test_iw_nll"] == pytest.approx(recorded["test_iw_nll"], abs=1e-4)


def test_settings_without_binarisation_read_as_grey(tmp_path):
    """A folder trained before binarisation existed (no such keys in train_config.yaml) is evaluated as grey."""
    (tmp_path / "train_config.yaml").write_text("dataset: mnist\nepochs: 3\n")
    settings = DataSettings.of(saved_config(tmp_path / "train_config.yaml"))
    assert settings.binarize == "none"
