"""ONNX export (python -m vae.onnx): the committed models' encoder and decoder run by onnxruntime give what torch
gives, at any batch size; a bad folder, an unwritable output and a missing package each get one clear paragraph."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import app
from vae import onnx as vae_onnx
from vae.card import with_model_id
from vae.model import VAE

ROOT = Path(__file__).resolve().parent.parent

CHECKPOINTS = sorted(p.name for p in app.CHECKPOINTS.iterdir() if (p / "config.json").is_file())


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_the_graphs_give_what_torch_gives(name, tmp_path, capsys):
    out = tmp_path / "onnx files"  # a path with a space, outside the repository
    vae_onnx.main(["--checkpoint", str(app.CHECKPOINTS / name), "--output-dir", str(out)])
    assert sorted(p.name for p in out.iterdir()) == [vae_onnx.DECODER, vae_onnx.ENCODER]
    assert "wrote" in capsys.readouterr().out
    model = VAE.from_pretrained(app.CHECKPOINTS / name).eval()
    encoder = ort.InferenceSession(str(out / vae_onnx.ENCODER))
    decoder = ort.InferenceSession(str(out / vae_onnx.DECODER))
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 7):  # the batch is a dynamic axis
        images = torch.rand(batch, *model.image_shape, generator=generator)
        mean, logvar = encoder.run(None, {"image": images.numpy()})
        with torch.no_grad():
            torch_mean, torch_logvar = model.encode(images)
            z = torch_mean + torch.exp(0.5 * torch_logvar) * torch.randn(torch_mean.shape, generator=generator)
            pixels = model.decode(z)
        np.testing.assert_allclose(mean, torch_mean.numpy(), atol=1e-4)
        np.testing.assert_allclose(logvar, torch_logvar.numpy(), atol=1e-4)
        (onnx_pixels,) = decoder.run(None, {"z": z.numpy()})
        assert onnx_pixels.shape == (batch, *model.image_shape)
        np.testing.assert_allclose(onnx_pixels, pixels.numpy(), atol=1e-4)


def test_a_folder_that_is_not_a_model_is_one_paragraph(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        vae_onnx.main(["--checkpoint", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    message = str(stopped.value.code)
    assert message.startswith("error: ") and str(tmp_path) in message and "\n" not in message
    assert not (tmp_path / "out").exists(), "nothing written"


def test_an_output_folder_that_cannot_be_written_is_one_paragraph(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    model = VAE(latent_dim=2, hidden_dims=[16])
    with pytest.raises(vae_onnx.UserError, match=r"Cannot write the ONNX files into .*a file/out .*--output-dir"):
        vae_onnx.export_onnx(model, blocker / "out")


def test_a_missing_exporter_package_names_the_extra(monkeypatch, tmp_path):
    real = vae_onnx.importlib.util.find_spec
    monkeypatch.setattr(vae_onnx.importlib.util, "find_spec", lambda name: None if name == "onnxscript" else real(name))
    with pytest.raises(SystemExit) as stopped:
        vae_onnx.main(["--checkpoint", str(app.DEFAULT_CHECKPOINT), "--output-dir", str(tmp_path)])
    assert "needs onnxscript" in str(stopped.value.code) and "requirements-onnx.txt" in str(stopped.value.code)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_model_cards_code_runs_as_a_user_would(tmp_path):
    """The committed default model's card: its code block, loading the folder where a user keeps it, runs in a fresh
    Python from another folder, exports the graphs and decodes with onnxruntime what model.decode gives."""
    card = (app.DEFAULT_CHECKPOINT / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", card, re.S)
    assert "onnxruntime" in code and "export_onnx" in code
    kept = tmp_path / "my models" / "vae-mnist"
    shutil.copytree(app.DEFAULT_CHECKPOINT, kept)
    script = tmp_path / "use.py"
    check = "\nimport torch\nassert np.abs(pixels - model.decode(torch.from_numpy(z)).detach().numpy()).max() < 1e-4\n"
    script.write_text(with_model_id(code, str(kept)) + check)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # `vae` importable, as after pip install -e .
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [vae_onnx.DECODER, vae_onnx.ENCODER]
