"""tests/warm.py, which most trainer tests run their commands through: a command forked from the warm Python behaves
as the same command started fresh (output, exit code, signals, working folder, arguments), and a command the warm
Python cannot stand for (another environment, another folder, not ours) is started fresh."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import warm
from test_training import ROOT


def fresh(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a fresh Python for each: ~4 s
@pytest.mark.parametrize(
    "args",
    [
        ["train.py", "--help"],
        ["train.py", "--epochs", "0"],  # a refusal: one line on stderr, exit code 1
        ["train.py", "--config", "no such.yaml"],
        ["-m", "vae.tsne", "--checkpoint", "no such folder"],
        ["-m", "vae.evaluate", "--help"],
    ],
)
def test_a_warm_command_prints_and_exits_as_a_fresh_one(args):
    cmd = [sys.executable, *args]
    forked, started = warm.run(cmd, cwd=ROOT, timeout=120), fresh(cmd)
    assert started_as(cmd, ROOT) is warm.Process, "it was forked"
    assert (forked.returncode, forked.stdout, forked.stderr) == (started.returncode, started.stdout, started.stderr)


@pytest.mark.slow
def test_signals_reach_the_command_and_end_it_as_they_would(mnist_dir, tmp_path):
    cmd = [sys.executable, "train.py", "--data-dir", str(mnist_dir), "--output-dir", str(tmp_path / "vae")]
    cmd += ["--epochs", "50", "--batch-size", "8", "--cpu", "--hidden-dims", "64", "--latent-dim", "2"]
    proc = warm.start(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert isinstance(proc, warm.Process)
    deadline = time.monotonic() + 60
    while not (tmp_path / "vae" / "training_state").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert f"Resume with: python train.py {' '.join(cmd[2:])} --resume" in stderr, "its own arguments"

    killed = warm.start(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed.kill()
    assert killed.wait(timeout=30) == -signal.SIGKILL


def started_as(cmd: list[str], cwd, env: dict | None = None) -> type:
    with warm.start(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        return type(proc)


def test_what_the_warm_python_cannot_stand_for_starts_fresh(tmp_path):
    train = [sys.executable, "train.py", "--help"]
    assert started_as(train, ROOT) is warm.Process
    assert started_as(train, tmp_path) is subprocess.Popen, "another folder"
    other_env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"}  # read when huggingface_hub is imported
    assert started_as(train, ROOT, other_env) is subprocess.Popen, "another environment"
    assert started_as([sys.executable, "-c", "pass"], ROOT) is subprocess.Popen, "not one of our commands"
