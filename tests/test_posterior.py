"""Issue 38: the encoder's uncertainty (vae/posterior.py, /posterior in the Your digit tab): the KL of each dimension,
the one rule for an active dimension, and that the posterior shows what it claims: a half-erased digit leaves the
committed models less sure than the clean one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gradio_client import Client, handle_file
from PIL import Image
from test_app import launched

import app
from vae.assets import load_assets
from vae.card import metrics_table
from vae.evaluate import test_metrics as measured_metrics
from vae.imaging import as_float
from vae.loss import negative_elbo
from vae.posterior import ACTIVE_VARIANCE, active_dimensions, kl_per_dimension, spread

MODELS = ("vae-mnist", "vae-mnist-2d")


def test_the_kl_of_each_dimension_adds_up_to_the_elbos_kl_and_the_active_rule_is_burdas():
    model = load_assets(app.DEFAULT_CHECKPOINT).model
    x = as_float(load_assets(app.DEFAULT_CHECKPOINT).tsne["images"][:8])
    with torch.no_grad():
        mu, logvar = model.encode(x)
        out = model(x)
    per_dimension = kl_per_dimension(mu, logvar)  # (8, D)
    assert (per_dimension >= -1e-6).all()
    kl = negative_elbo(out.logits, x, out.mu, out.logvar).kl  # per image (8,)
    assert per_dimension.sum(dim=1).tolist() == pytest.approx(kl.tolist(), rel=1e-4)
    means = torch.zeros(100, 3)
    means[:, 0] = torch.linspace(-1, 1, 100)  # variance ~0.34: active
    means[:, 1] = torch.linspace(-0.15, 0.15, 100)  # variance ~0.0077: under 0.01
    assert active_dimensions(means).tolist() == [True, False, False] and ACTIVE_VARIANCE == 0.01


def copies(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Test digits (N, 1, 28, 28) in [0, 1]: as they are, blurred (a Gaussian of 1 pixel), and with the lower half
    erased."""
    r = torch.arange(-4, 5.0)
    g = torch.exp(-(r**2) / 2)
    g = g / g.sum()
    blurred = F.conv2d(F.conv2d(images, g.view(1, 1, 1, -1), padding=(0, 4)), g.view(1, 1, -1, 1), padding=(4, 0))
    erased = images.clone()
    erased[..., 14:, :] = 0
    return {"clean": images, "blurred": blurred, "erased": erased}


@pytest.mark.parametrize("name", MODELS)
def test_a_half_erased_digit_leaves_the_model_less_sure_than_the_clean_one(name):
    """Over 20 test digits of the committed model's map: the half-erased copy's posterior spreads wider over the
    active dimensions for at least 15; the blurred copy's posterior moves measurably (its mean, in the clean
    posterior's standard deviations) and, on these models, narrows (docs/app.md: a blur is read as sure ink)."""
    assets = load_assets(app.CHECKPOINTS / name)
    active = active_dimensions(assets.tsne["latents"])
    with torch.no_grad():
        posteriors = {kind: assets.model.encode(x) for kind, x in copies(as_float(assets.tsne["images"][:20])).items()}
    spreads = {kind: spread(logvar, active) for kind, (_, logvar) in posteriors.items()}
    assert int((spreads["erased"] > spreads["clean"]).sum()) >= 15
    (mu, logvar), (mu_blurred, _) = posteriors["clean"], posteriors["blurred"]
    moved = ((mu_blurred - mu) / (0.5 * logvar).exp())[:, active].norm(dim=1)  # (20,)
    assert (moved > 1).sum() >= 15, "the blurred copy's posterior is another one"


def test_evaluate_and_the_card_count_the_active_dimensions_by_the_same_rule():
    assets = load_assets(app.DEFAULT_CHECKPOINT)
    images = assets.tsne["images"][:500]
    metrics = measured_metrics(assets.model, images, iw_samples=0, batch_size=250)
    with torch.no_grad():
        means = assets.model.encode(as_float(images))[0]
    assert metrics["test_active_dims"] == int(active_dimensions(means).sum()) > 0
    assert f"| {metrics['test_active_dims']} |" in metrics_table(metrics)


def test_posterior_api_for_the_default_and_the_2d_model(tmp_path):
    assets = load_assets(app.DEFAULT_CHECKPOINT)
    digit = tmp_path / "my digits" / "a seven.png"
    digit.parent.mkdir()
    Image.fromarray(255 - assets.tsne["images"][0, 0].numpy()).save(digit)  # dark on light, as people draw
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(blank)
    demo = app.build_demo(assets, {"vae-mnist-2d": str(app.CHECKPOINTS / "vae-mnist-2d")})
    with launched(demo) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        for checkpoint, dims in (("vae-mnist", 32), ("vae-mnist-2d", 2)):
            grid, bars, summary, plane = client.predict(handle_file(str(digit)), checkpoint, api_name="/posterior")
            with Image.open(grid) as picture:
                assert picture.width > 300, "16 digits, upscaled"
            assert [row[0] for row in bars["data"]] == [f"z{d + 1:0{len(str(dims))}d}" for d in range(dims)]
            assert [row[0] for row in bars["data"]] == sorted(row[0] for row in bars["data"]), "in order as text too"
            assert "spread" in summary and "active" in summary
            assert (plane is not None) == (checkpoint == "vae-mnist-2d"), "the ellipses on the 2-D model's plane"
        with pytest.raises(Exception, match="blank"):
            client.predict(handle_file(str(blank)), "vae-mnist", api_name="/posterior")
        assert client.predict(handle_file(str(digit)), "vae-mnist", api_name="/posterior"), "still up"
