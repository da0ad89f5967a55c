"""Run tracking: `--report-to` sends each epoch's record and its sample grid to TensorBoard, Trackio and W&B through
Accelerate's trackers, all three offline, and what they wrote is read back here; `none` (the default) touches none
of them, and a tracker whose package is missing is refused before any work, naming the package to install."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from test_training import HUB_FILES, ROOT, SMALL, run_train

from vae import UserError
from vae.config import TrainConfig, build_config, parse_config
from vae.tracking import check_trackers

METRICS = ("train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "lr", "kl_weight")


def offline_env(tmp_path: Path) -> dict:
    """Every tracker writes under tmp_path and none may reach the network."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRACKIO_DIR": str(tmp_path / "trackio"),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
    }


def tensorboard_events(logging_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], list[tuple[int, int, int]]]:
    """The scalars (tag → [(step, value)]) and the images ((step, height, width)) of every event file under
    logging_dir, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    images: list[tuple[int, int, int]] = []
    for folder in {p.parent for p in logging_dir.rglob("events.out.tfevents.*")}:
        events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in events.Scalars(tag))
        for tag in events.Tags()["images"]:
            images.extend((e.step, e.height, e.width) for e in events.Images(tag))
    return scalars, sorted(images)


def trackio_logs(trackio_dir: Path, project: str) -> list[dict]:
    """Every row trackio logged for `project`, from its SQLite file (read in a subprocess: trackio reads TRACKIO_DIR
    once, when it is imported)."""
    code = (
        "import json, sys\nfrom trackio.sqlite_storage import SQLiteStorage\n"
        "project = sys.argv[1]\n"
        "print(json.dumps({run: SQLiteStorage.get_logs(project, run) for run in SQLiteStorage.get_runs(project)}))"
    )
    env = {**os.environ, "TRACKIO_DIR": str(trackio_dir), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code, project], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def wandb_records(log: Path):
    """The records of a W&B transaction log (run-<id>.wandb): a 7-byte header (":W&B", 0xBEE1, version), then
    LevelDB's log format, 32 KiB blocks of chunks (crc32c, length, type: full, first, middle, last). Parsed here
    because wandb 0.31 no longer ships a Python reader."""
    data, block, pos, record = log.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", data[:7]
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zeros to the end of the block
            pos += block - pos % block
            continue
        record += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last
            yield record
            record = b""


def wandb_history(wandb_dir: Path) -> tuple[set[str], list[dict]]:
    """The run ids of the offline W&B runs under wandb_dir, and the rows of their history."""
    from wandb.proto import wandb_internal_pb2

    ids, rows = set(), []
    for log in sorted(wandb_dir.rglob("run-*.wandb")):
        ids.add(log.stem.removeprefix("run-"))
        for data in wandb_records(log):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}
                rows.append(row | {"folder": log.parent})
    return ids, rows


def test_report_to_is_none_by_default_and_refuses_other_names():
    assert TrainConfig().report_to == "none" and parse_config([]).report_to == "none"
    for name in ("tensorboard", "trackio", "wandb", "all", "none"):
        assert parse_config(["--report-to", name]).report_to == name
    with pytest.raises(UserError, match="report_to' must be one of none, tensorboard, trackio, wandb, all"):
        build_config({"report_to": "mlflow"})


@pytest.mark.slow
def test_all_three_trackers_log_every_epoch_and_its_samples_and_resume_continues_them(mnist_dir, tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("trackio")
    pytest.importorskip("wandb")
    env, out, runs = offline_env(tmp_path), tmp_path / "vae-tracked", tmp_path / "runs"
    args = ["--cpu", "--report-to", "all", "--logging-dir", str(runs)]
    run_train(mnist_dir, out, "--epochs", "2", *args, env=env)
    result = run_train(mnist_dir, out, "--epochs", "3", "--resume", *args, env=env)
    assert "resumed from" in result.stdout + result.stderr
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {p.name for p in out.iterdir()} == HUB_FILES | {"training_state"}, "the model folder holds no tracker files"

    # TensorBoard: one scalar per record key and epoch, equal to metrics.jsonl; one sample grid per epoch
    scalars, images = tensorboard_events(runs)
    for key in METRICS:
        assert sorted(scalars[key]) == [(r["epoch"], pytest.approx(r[key], rel=1e-5, abs=1e-7)) for r in history], key
    assert [(step, h == w) for step, h, w in images] == [(1, True), (2, True), (3, True)]

    # Trackio: one run, continued by --resume, with the same figures and an image each epoch
    runs_logged = trackio_logs(tmp_path / "trackio", "vae-tracked")
    assert len(runs_logged) == 1, list(runs_logged)
    rows = next(iter(runs_logged.values()))
    metrics = {row["step"]: row for row in rows if "val_loss" in row}
    assert sorted(metrics) == [1, 2, 3]
    for record in history:
        assert metrics[record["epoch"]]["val_loss"] == pytest.approx(record["val_loss"])
    pictures = sorted(row["step"] for row in rows if row.get("samples", {}).get("_type") == "trackio.image")
    assert pictures == [1, 2, 3]
    for row in rows:
        if "samples" in row:
            assert (tmp_path / "trackio" / "media" / row["samples"]["file_path"]).is_file()

    # W&B, offline: the records and a sample image for every epoch, in its local run files
    ids, rows = wandb_history(tmp_path / "wandb")
    assert len(ids) == 1, ids  # --resume continued the run (offline, in a second folder W&B syncs as the same run)
    by_step = {row["_step"]: row for row in rows}
    assert sorted(by_step) == [1, 2, 3] and len(rows) == 3, "metrics and image in one row per epoch"
    for record in history:
        row = by_step[record["epoch"]]
        assert row["val_loss"] == pytest.approx(record["val_loss"]) and row["train_kl"] == pytest.approx(
            record["train_kl"]
        )
        assert row["samples/_type"] == "images/separated" and row["samples/height"] == row["samples/width"]
        assert all((row["folder"] / "files" / name).is_file() for name in row["samples/filenames"])


@pytest.mark.parametrize("tracker", ["tensorboard", "trackio", "wandb"])
def test_a_missing_tracker_package_is_named_with_how_to_install_it(tracker, monkeypatch):
    monkeypatch.setitem(sys.modules, tracker, None)  # as if not installed: every import of it fails
    for report_to in (tracker, "all"):
        with pytest.raises(UserError) as refused:
            check_trackers(report_to)
        message = str(refused.value)
        assert f"--report-to {report_to} needs the {tracker} package" in message, message
        assert f"pip install {tracker}" in message and "requirements-trackers.txt" in message
    check_trackers("none")


@pytest.mark.slow
def test_train_py_refuses_a_missing_tracker_before_any_work(mnist_dir, tmp_path):
    """The same from the command line: one paragraph, exit code 1, nothing written."""
    out = tmp_path / "never"
    argv = ["train.py", "--data-dir", str(mnist_dir), "--output-dir", str(out), *SMALL, "--report-to", "tensorboard"]
    code = (
        f"import runpy, sys\nsys.modules['tensorboard'] = None\nsys.argv = {argv!r}\n"
        "runpy.run_path('train.py', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=offline_env(tmp_path), timeout=120
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    message = result.stderr.strip()
    assert message.startswith("error: --report-to tensorboard needs the tensorboard package"), message
    assert len(message.splitlines()) == 1 and "pip install tensorboard" in message
    assert not out.exists(), "refused before anything was written"
