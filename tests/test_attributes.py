"""Issue 37: the attribute directions "thickness" and "slant" (vae.attributes): the measures, the fit, what moving
along them does to the committed default model's digits, the folder's file, and /attribute."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from gradio_client import Client
from PIL import Image
from test_app import launched

import app
import app_handlers
from vae.assets import load_assets
from vae.attributes import ATTRIBUTES, fit_directions, measure, slant, thickness
from vae.model import VAE
from vae.steering import TENSORS, no_attributes, read_steering, write_steering


def stroke(lean: int) -> torch.Tensor:
    """A 1-pixel stroke down a 28x28 image whose top is `lean` pixels right of its bottom (1, 1, 28, 28)."""
    image = torch.zeros(1, 1, 28, 28)
    for y in range(4, 24):
        image[0, 0, y, 14 + round(lean * (14 - y) / 20)] = 1.0
    return image


def test_thickness_is_the_ink_and_slant_is_the_lean_of_the_top():
    upright, right, left = stroke(0), stroke(6), stroke(-6)
    assert thickness(upright).item() == pytest.approx(20.0)
    assert thickness(torch.cat([upright, upright * 0.5])).tolist() == pytest.approx([20.0, 10.0])
    assert slant(upright).item() == pytest.approx(0.0, abs=1e-6)
    assert slant(right).item() > 0.2 and slant(left).item() < -0.2
    assert slant(right).item() == pytest.approx(-slant(left).item(), rel=0.05)
    bold = torch.clamp(upright + torch.roll(upright, 1, dims=-1), 0, 1)
    assert slant(bold).item() == pytest.approx(0.0, abs=1e-6), "ink does not change the lean"
    assert measure(torch.cat([upright, right])).shape == (2, len(ATTRIBUTES))


def test_a_direction_is_where_the_latents_move_with_the_attribute_within_each_class():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2000) % 4
    u = torch.nn.functional.normalize(torch.randn(8, generator=generator), dim=0)
    offsets = torch.randn(4, 8, generator=generator) * 3  # the classes lie apart...
    shared = torch.randn(2000, generator=generator)
    latents = offsets[labels] + shared[:, None] * u + 0.3 * torch.randn(2000, 8, generator=generator)
    values = torch.stack([2 * shared + labels * 10.0, -shared], dim=1)  # ...and differ in the attribute's level
    directions, spreads = fit_directions(latents, labels, values)
    assert torch.dot(directions[0], u) > 0.95 and torch.dot(directions[1], u) < -0.95
    assert spreads.tolist() == pytest.approx([1.0, 1.0], abs=0.1)
    across, _ = fit_directions(latents, labels, values, within_class=False)
    assert torch.dot(across[0], u) < torch.dot(directions[0], u), "across classes, the classes' own levels pull it"


@pytest.fixture(scope="module")
def default():
    model = VAE.from_pretrained(app.DEFAULT_CHECKPOINT).eval()
    steering, problem = read_steering(app.DEFAULT_CHECKPOINT, model)
    assert problem is None and no_attributes(steering) is None, "the committed default model carries them"
    return model, steering


@torch.no_grad()
def test_moving_along_each_direction_changes_its_attribute_steadily_in_the_committed_model(default):
    """From each class mean, -2 … +2 sd along each direction: the attribute grows at every step for at least 8 of
    the 10 classes (python -m bench.attributes also measures the other attribute and an independent classifier)."""
    model, steering = default
    amounts = torch.linspace(-2, 2, 5)[:, None]
    for a, name in enumerate(ATTRIBUTES):
        steady = 0
        for c in range(len(model.class_names)):
            z = steering.class_means[c] + amounts * steering.attribute_spreads[a] * steering.attribute_directions[a]
            values = measure(model.decode(z))[:, a]
            steady += bool((values.diff() > 0).all())
        assert steady >= 8, f"{name}: {steady} of 10 classes"


def test_an_older_steering_file_still_loads_and_says_the_attributes_are_off(tmp_path, default):
    model, steering = default
    folder = shutil.copytree(app.DEFAULT_CHECKPOINT, tmp_path / "older", ignore=shutil.ignore_patterns(".*"))
    older = type(steering)(**{name: getattr(steering, name) for name in TENSORS})
    write_steering(folder, older)
    loaded, problem = read_steering(folder, model)
    assert problem is None and loaded.attribute_directions is None
    assert "python -m vae.steering --checkpoint" in no_attributes(loaded)
    assets = load_assets(folder)
    assert assets.steering is not None and not assets.problems


def test_attribute_api_moves_a_digit_and_refuses_what_it_cannot_do(tmp_path):
    fashion = app.CHECKPOINTS / "vae-fashion-mnist"
    demo = app.build_demo(load_assets(app.DEFAULT_CHECKPOINT), {"vae-fashion-mnist": str(fashion)})
    with launched(demo) as url:
        client = Client(url, verbose=False)
        same = client.predict("mean", "3", 0, [], None, "vae-mnist", api_name="/slide")
        still = client.predict("mean", "3", 0, "thickness", 0, None, "vae-mnist", api_name="/attribute")
        bolder = client.predict("mean", "3", 0, "thickness", 2, None, "vae-mnist", api_name="/attribute")
        pixels = {
            k: np.asarray(Image.open(p)).astype(float) / 255
            for k, p in {"same": same, "still": still, "bolder": bolder}.items()
        }
        assert np.array_equal(pixels["same"], pixels["still"]), "amount 0: the start point's digit"
        assert pixels["bolder"].sum() > 1.3 * pixels["still"].sum(), "2 sd bolder: more ink"
        for bad, message in [
            (("mean", "3", 0, "width", 1, None, "vae-mnist"), "Attribute"),
            (("mean", "3", 0, "slant", 9, None, "vae-mnist"), "Amount"),
            (("mean", "3", 0, "slant", 1, None, "vae-fashion-mnist"), "handwritten digits"),
        ]:
            with pytest.raises(Exception, match=message):
                client.predict(*bad, api_name="/attribute")
        assert client.predict("mean", "3", 0, [0.5], None, "vae-mnist", api_name="/slide"), "the server is still up"


def test_a_model_without_them_hides_their_sliders_and_says_why():
    fashion = load_assets(app.CHECKPOINTS / "vae-fashion-mnist")
    assert fashion.steering is not None and fashion.steering.attribute_directions is None, "garments: not fitted"
    sliders, note = app.attribute_sliders(fashion)
    assert [s.visible for s in sliders] == [False, False] and note.visible and "handwritten digits" in note.value
    sliders, note = app.attribute_sliders(load_assets(app.DEFAULT_CHECKPOINT))
    assert [s.visible for s in sliders] == [True, True] and not note.visible
    catalog = app.Catalog(
        load_assets(app.DEFAULT_CHECKPOINT), {"vae-fashion-mnist": str(app.CHECKPOINTS / "vae-fashion-mnist")}
    )
    *principal, thickness_slider, slant_slider, shown_note = app_handlers.show_sliders(catalog, "vae-fashion-mnist")
    assert not thickness_slider["visible"] and not slant_slider["visible"] and "handwritten" in shown_note["value"]
    *principal, thickness_slider, slant_slider, shown_note = app_handlers.show_sliders(catalog, "vae-mnist")
    assert thickness_slider["visible"] and slant_slider["visible"] and not shown_note["visible"]
