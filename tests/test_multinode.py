"""Two machines emulated on this one: two separate `torchrun --nnodes 2` launches, node rank 0 and 1, one CPU process
each, meeting on localhost. They train one run (two processes, each its own shard, one folder written by node 0),
resume it together, and when one node dies mid-run the other stops with a clear message instead of waiting forever;
both then resume from the last complete checkpoint. A launch that would start two unconnected "main" processes is
refused, and so is an output folder the machines do not share."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_training import HUB_FILES, ROOT, SMALL

from bench.app_startup import free_port
from vae import UserError
from vae.training import WORLD_SIZE_VARS, check_launch

TRAIN_IMAGES = 1200 - 200  # the committed slice less the validation images


def node_env() -> dict:
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def start_node(rank: int, port: int, data_dir: Path, output_dir: Path, log: Path, *args: str) -> subprocess.Popen:
    """One machine's launch: its own torchrun agent and worker, output to `log`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank)]
    cmd += ["--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port), "train.py"]
    cmd += ["--data-dir", str(data_dir), "--output-dir", str(output_dir), *SMALL, *args]
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=node_env())


def run_two_nodes(data_dir: Path, output_dir: Path, logs: Path, *args: str, timeout: float = 180) -> list[str]:
    """Both nodes to the end; their logs (carriage returns of progress bars as new lines)."""
    port, name = free_port(), logs.name
    nodes = [
        start_node(rank, port, data_dir, output_dir, logs.with_name(f"{name}-{rank}.log"), *args) for rank in (0, 1)
    ]
    texts = []
    for rank, node in enumerate(nodes):
        try:
            node.wait(timeout=timeout)
        finally:
            stop_node(node)
        texts.append(logs.with_name(f"{name}-{rank}.log").read_text().replace("\r", "\n"))
        assert node.returncode == 0, texts[-1][-3000:]
    return texts


def stop_node(node: subprocess.Popen) -> None:
    """SIGKILL a node's launcher and its workers at once, as a machine that loses power. (Killing the launcher alone
    is not enough: torchrun starts each worker in a session of its own, and an orphaned worker trains on.)"""
    if node.poll() is None:
        for process in [psutil.Process(node.pid), *psutil.Process(node.pid).children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        node.wait()


def history(output_dir: Path) -> list[dict]:
    """The run's epochs so far (none before its first epoch has ended)."""
    path = output_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_two_nodes_train_one_run_outlive_a_lost_node_and_resume_it(mnist_dir, tmp_path):
    out, settings = tmp_path / "vae", ["--epochs", "8", "--hidden-dims", "256", "--ddp-timeout", "30"]  # ~0.15 s/epoch
    # two nodes train one run; node 1's machine dies after epoch 2: node 0 stops with a message, not a hang
    port, logs = free_port(), [tmp_path / f"killed-{rank}.log" for rank in (0, 1)]
    nodes = [start_node(rank, port, mnist_dir, out, logs[rank], *settings) for rank in (0, 1)]
    try:
        deadline = time.time() + 120
        while time.time() < deadline and nodes[0].poll() is None and len(history(out)) < 2:
            time.sleep(0.02)
        stop_node(nodes[1])  # the whole machine of node 1: its launcher and its worker
        killed = time.time()
        try:
            nodes[0].wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"node 0 still waiting 90 s after node 1 died: {logs[0].read_text()[-2000:]}")
        waited = time.time() - killed
    finally:
        for node in nodes:
            stop_node(node)
    node0, node1 = (log.read_text().replace("\r", "\n") for log in logs)
    assert nodes[0].returncode != 0 and waited < 60, (waited, node0[-2000:])
    assert "error: Lost contact with another process of this run" in node0 and "--resume" in node0, node0[-3000:]
    print(f"node 0 stopped {waited:.1f} s after node 1 was killed")
    # until then one run: two processes, each its own shard (half the training images), one log of epochs
    assert "2 process(es)" in node0
    for rank, log in enumerate((node0, node1)):
        line = next(line for line in log.splitlines() if line.startswith(f"process {rank} of 2 on "))
        assert line.endswith(f"shard {rank} of each epoch, {TRAIN_IMAGES // 2} images"), line
    assert node0.count("epoch 1/8  train") == 1 and "epoch 1/8  train" not in node1
    # one folder, written by node 0 only, its last complete checkpoint with the random states of both processes
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".log")) == ["vae"]
    checkpoints = sorted(p.name for p in (out / "training_state").iterdir())
    assert len(checkpoints) == 1 and checkpoints[0].startswith("epoch-"), checkpoints
    last = int(checkpoints[0].removeprefix("epoch-"))
    assert 2 <= last < 8 and f"last complete checkpoint: epoch-{last:04d}" in node0
    state = out / "training_state" / checkpoints[0]
    assert (state / "random_states_0.pkl").is_file() and (state / "random_states_1.pkl").is_file()
    first = history(out)[:last]

    # both resume from that checkpoint and finish the run: the model folder, written by node 0 only
    node0, node1 = run_two_nodes(mnist_dir, out, tmp_path / "resumed", *settings, "--resume")
    assert f"resumed from {state}" in node0
    final = history(out)
    assert [r["epoch"] for r in final] == list(range(1, 9)) and final[:last] == first
    for record in final:
        assert record["images_per_sec"] * record["epoch_seconds"] == pytest.approx(TRAIN_IMAGES, rel=0.01)
    assert node0.count("epoch 8/8  train") == 1 and "epoch 8/8  train" not in node1
    assert "model folder:" in node0 and "model folder:" not in node1
    assert {p.name for p in out.iterdir()} == HUB_FILES | {"training_state"}
    assert json.loads((out / "metrics.json").read_text())["num_processes"] == 2


def test_a_launch_that_would_start_unconnected_processes_is_refused(monkeypatch):
    """`accelerate launch --cpu --num_machines 2 ...` (and `--cpu --num_processes 2`) sets MASTER_ADDR but starts
    each process alone, without WORLD_SIZE: two "main" processes would write one folder at once."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    for name in WORLD_SIZE_VARS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match="MASTER_ADDR=127.0.0.1.*no WORLD_SIZE.*torchrun"):
        check_launch()
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun and accelerate's GPU launcher set
    check_launch()
    monkeypatch.delenv("MASTER_ADDR")  # a plain `python train.py`
    monkeypatch.delenv("WORLD_SIZE")
    check_launch()


@pytest.mark.slow
def test_an_output_folder_the_machines_do_not_share_is_refused_on_every_machine(mnist_dir, tmp_path):
    """Two machines without a shared file system, emulated by two working folders and a relative --output-dir: each
    would keep its own checkpoints, and a later --resume would restart node 1 from epoch 1 beside node 0's epoch N."""
    port, logs, nodes = free_port(), [], []
    for rank in (0, 1):
        (tmp_path / f"machine-{rank}").mkdir()
        logs.append(tmp_path / f"machine-{rank}.log")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank)]
        cmd += ["--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port)]
        cmd += [str(ROOT / "train.py"), "--data-dir", str(mnist_dir), "--output-dir", "vae", *SMALL, "--epochs", "1"]
        with open(logs[-1], "w") as out:
            nodes.append(
                subprocess.Popen(
                    cmd, cwd=tmp_path / f"machine-{rank}", stdout=out, stderr=subprocess.STDOUT, env=node_env()
                )
            )
    try:
        for node in nodes:
            node.wait(timeout=120)
    finally:
        for node in nodes:
            stop_node(node)
    for node, log in zip(nodes, logs, strict=True):
        text = log.read_text()
        assert node.returncode != 0 and "error: --output-dir vae is not one folder shared by" in text, text[-3000:]
    assert not (tmp_path / "machine-1" / "vae").exists(), "node 1 wrote nothing"
    written = tmp_path / "machine-0" / "vae"
    assert sorted(p.name for p in written.iterdir()) == ["train_config.yaml"], "no checkpoint, no check file left"
