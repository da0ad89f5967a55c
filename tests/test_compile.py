"""--compile: the training step compiled by torch.compile trains as the uncompiled one, once, and a machine where it
cannot compile says so (with --compile) or trains without it (by default)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vae.compiled
from vae.compiled import COMPILE_MIN_STEPS, compile_step, compiles
from vae.config import build_config, parse_config
from vae.data import DataSettings, load_splits
from vae.errors import UserError
from vae.training import make_accelerator, set_up, train

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"hidden_dims": [64], "latent_dim": 2, "batch_size": 64, "val_size": 200, "iw_samples": 0}
SETTINGS |= {"tsne_samples": 100, "steering_images": 200, "epochs": 1, "mixed_precision": "no", "cpu": True}


def test_the_step_compiles_when_asked_or_when_the_run_is_long_enough_to_pay():
    config = parse_config([])
    assert config.compile is None, "configs/mnist.yaml leaves it to the rule"
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert compiles(config, COMPILE_MIN_STEPS, cpu) and compiles(config, COMPILE_MIN_STEPS, cuda)
    assert not compiles(config, COMPILE_MIN_STEPS - 1, cpu), "a short run would wait longer than it gains"
    assert not compiles(config, 10**6, mps), "a prototype on Apple's GPUs: only when asked"
    assert compiles(dataclasses.replace(config, compile=True), 1, mps)
    assert not compiles(dataclasses.replace(config, compile=False), 10**6, cpu)
    default_run = config.epochs * -(-(60_000 - config.val_size) // config.batch_size)
    assert default_run >= COMPILE_MIN_STEPS, "the default recipe compiles"


@pytest.mark.slow
def test_a_compiled_run_trains_as_the_uncompiled_one(mnist_dir, tmp_path, monkeypatch):
    """The same epoch (1,000 images in batches of 64: 15 full batches, compiled, and one of 40 that is not) with and
    without --compile end with the same weights, to float rounding, when the compiled code draws its random numbers as
    torch does (inductor's fallback_random). The step compiles once, and every full batch runs the compiled code."""
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    batches, compile_once = [], torch.compile

    def counted(fn, **options):
        compiled = compile_once(fn, **options)
        return lambda x, kl_weight: batches.append(len(x)) or compiled(x, kl_weight)

    monkeypatch.setattr(torch, "compile", counted)
    folders = {}
    for compiled in (False, True):
        config = build_config(SETTINGS | {"data_dir": str(mnist_dir), "compile": compiled})
        config.output_dir = str(tmp_path / f"compiled {compiled}" / "model")
        folders[compiled] = train(config)
    assert batches == [64] * (1 + 15), "compiled on one full batch, then run on each full batch"
    metrics = json.loads((folders[True] / "metrics.json").read_text())
    assert metrics["compiled_step"] is True and metrics["compile_seconds"] > 0
    assert json.loads((folders[False] / "metrics.json").read_text())["compiled_step"] is False
    eager, compiled = (load_file(str(folders[c] / "model.safetensors")) for c in (False, True))
    for key, value in eager.items():
        assert torch.allclose(compiled[key], value, rtol=1e-3, atol=1e-5), key


@pytest.mark.slow
def test_without_a_cpp_compiler_compile_is_refused_clearly_and_the_default_trains_without_it(
    mnist_dir, tmp_path, monkeypatch, capsys
):
    """torch.compile writes C++ on a CPU. With no compiler (and no kernels cached), --compile stops before any epoch with
    a one-paragraph error that says how to train without it; by default (a run long enough to compile) the run says
    that it could not and goes on uncompiled, its weights untouched by the attempt."""
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, str(tmp_path / "no such compiler")))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "empty cache"))  # no kernel compiled before
    config = build_config(SETTINGS | {"data_dir": str(mnist_dir), "batch_size": 32, "compile": True})
    config.output_dir = str(tmp_path / "my runs" / "compiled")
    with pytest.raises(UserError, match="C\\+\\+ compiler") as refused:
        train(config)
    assert "--no-compile" in str(refused.value) and "\n" not in str(refused.value)
    assert not list(Path(config.output_dir).glob("training_state/epoch-*")), "stopped before any epoch"

    monkeypatch.setattr(vae.compiled, "COMPILE_MIN_STEPS", 1)  # this short run counts as long
    config = dataclasses.replace(config, compile=None)
    splits = load_splits(DataSettings.of(config))
    architecture = config.model_config(tuple(splits.train.images.shape[1:]), splits.train.class_names)
    accelerator = make_accelerator(config)
    training = set_up(config, accelerator, architecture, splits)
    before = {k: v.clone() for k, v in training.model.state_dict().items()}
    images = splits.train.images
    assert compile_step(training.loss, training.model, images, 1, config, accelerator) is None
    assert "torch.compile failed here" in capsys.readouterr().out
    assert all(torch.equal(before[k], v) for k, v in training.model.state_dict().items())
    assert all(p.grad is None for p in training.model.parameters())
