"""bench/gpu_check.py, the one command to run the day a CUDA machine is lent: here, with no GPU, it must refuse
clearly, and its --allow-cpu dry run must go through the same steps (bf16 training with the data on the device,
the figures, the /sample timing) and write its JSON."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import warm
from test_training import ROOT


def run_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "bench.gpu_check", *args]
    return warm.run(cmd, cwd=ROOT, env=env, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_a_cuda_device_it_says_so_and_fails(tmp_path):
    result = run_check("--output", str(tmp_path / "gpu.json"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    message = result.stderr.strip()
    assert message.startswith("error: No CUDA device") and len(message.splitlines()) == 1, message
    assert "--allow-cpu" in message
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.slow
def test_the_cpu_dry_run_goes_through_every_step(mnist_dir, tmp_path):
    output = tmp_path / "gpu.json"
    small = ["--epochs", "2", "--batch-size", "32", "--sample-calls", "3"]
    result = run_check("--allow-cpu", "--data-dir", str(mnist_dir), *small, "--output", str(output))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for label in ("epoch time", "images/s", "peak memory", "test -ELBO", "/sample, 64 images", "all checks passed"):
        assert label in result.stdout, (label, result.stdout[-2000:])
    figures = json.loads(output.read_text())
    assert figures["device"] == "cpu" and figures["dry_run"] is True
    assert figures["mixed_precision"] == "bf16" and figures["train_data_device"] == "cpu"
    assert figures["epoch_seconds"] > 0 and figures["images_per_sec"] > 0 and figures["peak_memory_mb"] > 0
    assert math.isfinite(figures["test_loss"]) and figures["last_val_loss"] < figures["first_val_loss"]
    assert figures["sample_64_ms"] > 0 and figures["sample_64_decode_ms"] > 0
    assert not list(tmp_path.glob("gpu-check-*")), "the run's temporary folder is removed"
