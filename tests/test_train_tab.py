"""The Train tab through a real server, called with gradio_client: /train streams the real trainer's progress from a
child process, /stop_training ends a run with a usable model, a killed trainer comes back as a message, two visitors'
runs are served one after the other, and a visitor's model reaches /sample, the zip download and the Hub push path.

The data is the committed MNIST slice, copied into a folder whose path has spaces (VAE_DATA_DIR's job on a server).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import gradio as gr
import httpx
import psutil
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, ValidationError
from gradio_client.utils import Status
from test_app import free_port, launched

import app
import app_train
from vae import live
from vae.assets import load_assets
from vae.errors import UserError
from vae.export import EXPORT_PHASES
from vae.visitors import PER_VISITOR, Visitors, model_name

pytestmark = pytest.mark.slow

SETTINGS = {"dataset": "MNIST", "latent_dim": 8, "hidden_layers": "256", "epochs": 1, "train_images": 200, "seed": 0}
OUTPUTS = ("status", "progress", "curve", "samples", "walk", "model_name", "checkpoint", "download")


@contextlib.contextmanager
def training_studio(mnist_dir: Path, tmp_path_factory, machine_token: bool = False) -> Iterator[str]:
    """The studio serving the committed model, its Train tab reading MNIST from "…/my data" (the slice); its URL.
    machine_token: as app.py --push-with-machine-token."""
    data = tmp_path_factory.mktemp("train tab") / "my data"
    shutil.copytree(mnist_dir, data)
    limits = live.Limits(data_dir=data, max_epochs=20, max_seconds=120)
    demo = app.build_demo(load_assets(app.DEFAULT_CHECKPOINT), limits=limits, machine_token=machine_token)
    with launched(demo) as url:
        yield url


@pytest.fixture(scope="module")
def studio(mnist_dir, tmp_path_factory):
    with training_studio(mnist_dir, tmp_path_factory, machine_token=True) as url:  # the push test pushes as the server
        yield url


def new_client(url: str, tmp_path_factory) -> Client:
    return Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


class Watched:
    """A /train job and each update it streamed, with the time it arrived."""

    def __init__(self, client: Client, **settings):
        self.updates: list[tuple[float, dict]] = []
        self.queue_ranks: list[int] = []  # the place in the queue the server reported while the job waited
        self.job = client.submit(**(SETTINGS | settings), api_name="/train")
        self.thread = threading.Thread(target=self.watch)
        self.thread.start()

    def watch(self) -> None:
        seen = 0
        while not self.job.done():
            status = self.job.status()
            if status.code == Status.IN_QUEUE and status.rank is not None:
                self.queue_ranks.append(status.rank)
            outputs = self.job.outputs()
            for out in outputs[seen:]:
                self.add(out)
            seen = len(outputs)
            time.sleep(0.02)
        for out in self.job.outputs()[seen:]:
            self.add(out)

    def add(self, out) -> None:
        if len(out) != len(OUTPUTS):
            print("odd output", out)
            return
        self.updates.append((time.monotonic(), dict(zip(OUTPUTS, out, strict=True))))

    def result(self) -> dict:
        values = self.job.result(timeout=300)
        self.thread.join()
        return dict(zip(OUTPUTS, values, strict=True))

    def statuses(self) -> list[str]:
        return [u["status"] for _, u in self.updates if isinstance(u["status"], str)]

    def wait_for(self, status: str, timeout: float = 120) -> None:
        """Until a status line starting with `status` has arrived."""
        deadline = time.monotonic() + timeout
        while not any(s.startswith(status) for s in self.statuses()):
            assert time.monotonic() < deadline and not self.job.done(), self.statuses()
            time.sleep(0.05)


@pytest.fixture(scope="module")
def two_runs(studio, tmp_path_factory):
    """Two visitors press Train at the same time: (client, watched run) for each, both finished."""
    clients = [new_client(studio, tmp_path_factory) for _ in range(2)]
    runs = [Watched(clients[0]), Watched(clients[1], seed=1)]
    for run in runs:
        run.result()
    return list(zip(clients, runs, strict=True))


def test_a_run_streams_each_epoch_and_ends_with_a_model_every_tab_can_use(two_runs, studio, tmp_path):
    client, run = two_runs[0]
    final = run.result()
    epochs = [s for s in run.statuses() if s.startswith("Epoch 1: train −ELBO")]
    assert epochs, f"no update for the epoch: {run.statuses()}"
    assert any("images/s" in str(u["progress"]) for _, u in run.updates), "a progress bar within the epoch"
    # Writing the model folder has a bar of its own, phase by phase, not training's frozen at 100% (issue 29).
    writing = next(i for i, (_, u) in enumerate(run.updates) if "Writing the model folder" in str(u["status"]))
    bars = [u["progress"] for _, u in run.updates[writing:] if isinstance(u["progress"], str)]
    shown = [p for p in EXPORT_PHASES if any(f"writing the model folder: {p} (" in b for b in bars)]
    assert shown == list(EXPORT_PHASES), bars
    assert not any("left" in b for b in bars[:-1]), "no training bar (time left) while the folder is written"
    name = final["model_name"]
    assert re.fullmatch(r"mnist-z8-\d{4}-[a-z2-7]{8}", name), f"dataset, latent size, time, 40 random bits: {name}"
    assert f"**{name}** is ready (done)" in final["status"]
    assert Path(final["samples"]).is_file() and Path(final["walk"]).is_file(), "the last epoch's pictures"
    # The loss curve: from the first epoch on, its train and validation −ELBO with their parts (issue 29).
    first = next(u["curve"] for _, u in run.updates if str(u["status"]).startswith("Epoch 1:"))
    assert first["columns"] == ["epoch", "loss", "data", "reconstruction", "KL"]
    assert [(r[0], r[2]) for r in first["data"]] == [("1", "train"), ("1", "validation")], "both points after epoch 1"
    assert all(r[1] == pytest.approx(r[3] + r[4], abs=0.01) for r in first["data"]), "−ELBO = reconstruction + KL"
    assert first["mark"] == "point", "a single epoch's points show: a line needs two"
    # The model: in this visitor's dropdown and selected; /sample and /about answer with it by name.
    assert final["checkpoint"]["value"] == name
    assert [c[0] for c in final["checkpoint"]["choices"]] == ["vae-mnist", name], "the server's models, then mine"
    grid, _ = client.predict(4, 0, 1.0, name, api_name="/sample")
    assert Path(grid).is_file()
    assert name not in client.predict("vae-mnist", api_name="/about")
    # The download: the Hub-ready folder train.py writes, as a zip, without the training state.
    with zipfile.ZipFile(final["download"]["value"]) as archive:
        files = {Path(n).relative_to(name).as_posix() for n in archive.namelist()}
        text = b"".join(archive.read(n) for n in archive.namelist() if not n.endswith((".png", ".safetensors")))
    for expected in ("config.json", "model.safetensors", "README.md", "metrics.json", "train_config.yaml", "tsne.png"):
        assert expected in files
    assert not any(f.startswith("training_state") for f in files)
    history = [json.loads(line) for line in archive_text(final["download"]["value"], f"{name}/metrics.jsonl")]
    epochs = [
        [str(r["epoch"]), r[f"{s}_loss"], data, r[f"{s}_recon"], r[f"{s}_kl"]] for r in history for s, data in SETS
    ]
    assert final["curve"]["data"] == epochs, "the epochs' means only: no first steps' ~550 nats to stretch the y-axis"
    # Nothing of the server's in it: no absolute path (its data, its visitors' folders), no session id.
    assert b"/tmp" not in text and b"my data" not in text and b"/work" not in text
    assert client.session_hash.encode() not in text, "the visitor's session id"


SETS = (("train", "train"), ("val", "validation"))  # metrics.jsonl's prefix → the curve's series


def archive_text(zip_path: str, member: str) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.read(member).decode().splitlines()


def test_the_loss_curves_legend_names_its_series_not_its_column(studio):
    config = httpx.get(f"{studio}/config").json()
    curve = next(c["props"] for c in config["components"] if c.get("props", {}).get("elem_id") == "train-curve")
    assert curve["color_title"] == "", "no title above train / validation (Vega-Lite titles it with the column's name)"
    assert curve["tooltip"] == ["reconstruction", "KL"], "a point's parts on hover"


def test_a_visitors_model_stays_out_of_other_visitors_pages_and_of_checkpoints(two_runs, studio):
    names = {run.result()["model_name"] for _, run in two_runs}
    assert len(names) == 2
    config = httpx.get(f"{studio}/config").json()  # what a new visitor's page starts from
    dropdown = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "checkpoint")
    assert not any(name in str(dropdown["props"]["choices"]) for name in names)
    first = two_runs[0][1].result()["checkpoint"]["choices"]
    assert two_runs[1][1].result()["model_name"] not in str(first), "one visitor's dropdown lacks the other's model"
    assert not any(p.name in names for p in app.CHECKPOINTS.iterdir())


def test_two_visitors_runs_are_served_one_after_the_other(two_runs):
    (_, a), (_, b) = two_runs
    a_end, b_end = a.updates[-1][0], b.updates[-1][0]
    first, later = (a, b) if a_end < b_end else (b, a)
    training = [t for t, u in later.updates if "Epoch" in str(u["status"]) or "images/s" in str(u["progress"])]
    assert training and min(training) > first.updates[-1][0], "the second run trained only after the first ended"
    assert later.queue_ranks and max(later.queue_ranks) >= 0, "the waiting visitor was told their place in the queue"


def test_stop_ends_a_run_within_two_seconds_with_the_best_weights(studio, tmp_path_factory):
    client = new_client(studio, tmp_path_factory)
    run = Watched(client, epochs=20, train_images=1000)
    run.wait_for("Epoch 2:")
    pressed = time.monotonic()
    assert client.predict(api_name="/stop_training").startswith("Stopping")
    final = run.result()
    ended = next(t for t, u in run.updates if "Writing the model folder" in str(u["status"]))
    assert ended - pressed < 2.0, f"training went on for {ended - pressed:.1f} s after Stop"
    assert "(stopped (Stop was pressed) in epoch" in final["status"]
    with zipfile.ZipFile(final["download"]["value"]) as archive:
        metrics = json.loads(archive.read(f"{final['model_name']}/metrics.json"))
    assert 2 <= metrics["stopped_in_epoch"] < 20 and metrics["best_epoch"] <= metrics["stopped_in_epoch"]
    stopped = metrics["stopped_in_epoch"]
    assert max(int(r[0]) for r in final["curve"]["data"]) == stopped, (
        "the curve ends at the stopped epoch, not before it"
    )
    assert any(s.startswith(f"Epoch {stopped} (stopped ") for s in run.statuses()), run.statuses()
    grid, _ = client.predict(4, 0, 1.0, final["model_name"], api_name="/sample")
    assert Path(grid).is_file()
    assert client.predict(api_name="/stop_training") == "You have no run going."


def test_a_killed_trainer_comes_back_as_a_message_and_the_server_stays_up(studio, tmp_path_factory):
    client = new_client(studio, tmp_path_factory)
    run = Watched(client, epochs=20, train_images=1000)
    run.wait_for("Epoch 1:")
    trainer_process().kill()  # as the kernel's out-of-memory killer would
    with pytest.raises(AppError, match="killed by SIGKILL .*out-of-memory"):
        run.result()
    # The page shows it in the tab's status too (the update before the error; gradio_client may drop that one).
    grid, _ = client.predict(4, 0, 1.0, "vae-mnist", api_name="/sample")
    assert Path(grid).is_file()


def test_a_run_whose_visitor_left_ends_at_once_without_writing_its_model(studio, tmp_path_factory):
    """The visitor goes away mid-run (here: the job is cancelled, which closes the server's stream): the trainer is
    ended within seconds, not left to write the whole model folder (figures, t-SNE map, class regions: ~11 s of CPU) to be deleted."""
    client = new_client(studio, tmp_path_factory)
    run = Watched(client, epochs=20, train_images=1000)
    run.wait_for("Epoch 1:")
    trainer = trainer_process()
    folder = run_folder(trainer)
    written = []  # whether the model's weights appeared, seen from beside the run

    def watch() -> None:
        while trainer.is_running() and trainer.status() != psutil.STATUS_ZOMBIE:
            written.append((folder / "model.safetensors").exists())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    left = time.monotonic()
    run.job.cancel()
    watcher.join(timeout=60)
    ended = time.monotonic() - left
    assert ended < 5.0, f"the trainer ran on for {ended:.1f} s after the visitor left"
    assert not any(written), "the model folder was written for no one"
    deadline = time.monotonic() + 10
    while (folder.exists() or folder.with_suffix(".log").exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folder.exists() and not folder.with_suffix(".log").exists(), "what the run wrote is deleted"


def test_sigterm_ends_the_server_with_its_visitors_models_and_run(mnist_dir, tmp_path, tmp_path_factory):
    """`python app.py` stopped as a Space, systemd or docker stop it (SIGTERM), while one visitor's model is kept and
    another visitor's run is going: the visitors' temporary folder goes with the server, and so does the trainer."""
    temp, data, log, port = tmp_path / "tmp", tmp_path / "my data", tmp_path / "app.log", free_port()
    temp.mkdir()
    shutil.copytree(mnist_dir, data)
    env = {**os.environ, "TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(Path(app.__file__)), "--port", str(port), "--data-dir", str(data)]
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                client = new_client(f"http://127.0.0.1:{port}", tmp_path_factory)
                break
            except Exception:
                assert time.monotonic() < deadline, "no server after 120 s"
                time.sleep(0.5)
        client.predict(**SETTINGS, api_name="/train")  # a model kept for this visitor
        (root,) = temp.glob("vae-studio-visitors-*")
        assert list(root.glob("*/mnist-z8-*/model.safetensors"))
        run = Watched(new_client(f"http://127.0.0.1:{port}", tmp_path_factory), epochs=20, train_images=1000)
        run.wait_for("Epoch 1:")
        children = trainers(psutil.Process(server.pid))
        assert len(children) >= 2, "the run's process and the template it was forked from"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "a training child outlived the server"
    assert not root.exists(), f"the visitors' models outlived the server: {sorted(root.rglob('*'))[:5]}"
    with contextlib.suppress(Exception):
        run.result()


def test_each_run_is_forked_from_one_template_that_imported_once(mnist_dir, tmp_path):
    """The server's first run starts the template, which imports torch and the trainer once; each run is a process
    forked from it, so no run imports them again. A template that died is started again by the next run, and the
    server's exit ends it."""
    runs, settings = live.Runs(), live.LiveSettings(**SETTINGS)

    def forked(name: str) -> tuple[live.LiveRun, int]:
        run = runs.start(name, settings.config(mnist_dir, tmp_path / name))
        assert run.process.started.wait(60) and run.process.pid is not None
        return run, psutil.Process(run.process.pid).ppid()  # asked at once: a run lasts seconds

    def finished(run: live.LiveRun) -> dict:
        *_, last = run.events(max_seconds=120)
        runs.finish(run)
        return last

    try:
        first, parent = forked("first")
        template = runs.template.process
        assert parent == template.pid and first.process.pid != template.pid
        assert finished(first)["event"] == "done"
        assert any("libtorch" in m.path for m in psutil.Process(template.pid).memory_maps()), "the template imported"
        second, parent = forked("second")
        assert parent == template.pid and runs.template.process is template, "the next run is forked from it too"
        assert finished(second) == {"event": "done", "folder": str(tmp_path / "second")}
        assert second.process.returncode == 0, "its exit status comes from the template"
        template.kill()  # as the out-of-memory killer might, while it waits
        template.wait()
        third, parent = forked("third")
        assert parent == runs.template.process.pid != template.pid and finished(third)["event"] == "done"
    finally:
        runs.end()
    assert runs.template.process.poll() is not None, "the server's exit ends the template"
    assert {p.name for p in tmp_path.iterdir()} >= {"first", "second", "third"}


def trainer_process(server: psutil.Process | None = None, timeout: float = 10) -> psutil.Process:
    """The process (forked by python -m vae.live) running the server's latest run (its output goes to the run's log):
    not the template, nor an earlier run's process still exiting; the server runs in this process
    unless given. Waits `timeout` for the child to open its log."""
    deadline = time.monotonic() + timeout
    while True:
        running = []
        for child in trainers(server):
            with contextlib.suppress(psutil.Error):
                if run_folder(child) is not None:
                    running.append(child)
        if running:
            return max(running, key=lambda child: child.create_time())
        if time.monotonic() > deadline:
            raise AssertionError("no training process")
        time.sleep(0.05)


def trainers(server: psutil.Process | None = None) -> list[psutil.Process]:
    """The server's training processes: the template and the runs it forked."""
    found = []
    for child in (server or psutil.Process()).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "vae.live" in child.cmdline():
                found.append(child)
    return found


def run_folder(trainer: psutil.Process) -> Path | None:
    """The model folder a training child writes: its log (vae.folder.log_path) is beside it."""
    for file in trainer.open_files():
        if file.path.endswith(".log"):
            return Path(file.path).with_suffix("")
    return None


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("epochs", 21, "Epochs must be a whole number from 1 to 20, got 21"),
        ("epochs", 0, "Epochs must be a whole number from 1 to 20"),
        ("latent_dim", 65, "Latent size must be a whole number from 2 to 64"),
        ("latent_dim", 1, "Latent size must be a whole number from 2 to 64"),
        ("hidden_layers", "4096", "Hidden layers must be one of 256, 512 → 256, 1024 → 512"),
        ("dataset", "CIFAR-10", "Dataset must be one of MNIST, Fashion-MNIST"),
        ("train_images", 60_000, "Training images must be a whole number from 100 to 59000"),
        ("seed", -1, "Seed must be a whole number from 0"),
    ],
)
def test_settings_out_of_bounds_are_refused(studio, tmp_path_factory, setting, value, message):
    client = new_client(studio, tmp_path_factory)
    with pytest.raises(AppError, match=message):
        client.predict(**(SETTINGS | {setting: value}), api_name="/train")


def test_push_sends_the_model_folder_through_the_trainers_push_path(two_runs, monkeypatch):
    """The Hub is out of reach here: its client's calls are intercepted in this process (the server's)."""
    from huggingface_hub import HfApi

    import vae.hub

    client, run = two_runs[0]
    name = run.result()["model_name"]
    calls = []
    monkeypatch.setattr(vae.hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_server")
    monkeypatch.setattr(HfApi, "whoami", lambda self, **kw: {"name": "visitor", "orgs": [], "auth": {}})
    monkeypatch.setattr(HfApi, "auth_check", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload_folder(self, *, repo_id, folder_path, **kw):
        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        return None

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    answer = client.predict(name, "visitor/my-vae", True, api_name="/push")
    expected = f"Pushed **{name}** to https://huggingface.co/visitor/my-vae as **visitor**, with this machine's"
    assert answer == expected + " Hugging Face token."
    assert calls[0] == ("create", "visitor/my-vae", {"private": True, "exist_ok": True})
    assert calls[1][0] == "upload" and {"config.json", "model.safetensors", "README.md"} <= set(calls[1][2])
    with pytest.raises(AppError, match="cannot create repos under 'someone-else'"):
        client.predict(name, "someone-else/my-vae", True, api_name="/push")
    with pytest.raises(AppError, match="No model 'visitor-0000000000000000' of yours to push"):
        client.predict("visitor-0000000000000000", "visitor/my-vae", True, api_name="/push")


def test_visitors_models_are_bounded_and_deleted(tmp_path, monkeypatch):
    """Per visitor (a session, or every session from one address) at most PER_VISITOR (the oldest goes), all of a
    visitor's when they leave, any after MAX_AGE."""
    removed = []
    visitors = Visitors(tmp_path / "visitors root", on_remove=removed.append)

    def trained(visitor: str, address: str = "") -> str:
        name, folder = visitors.new_folder(visitor)
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "training_state").mkdir()
        visitors.add(name, visitor, folder, address)
        return name

    sessions = [trained(f"session{k}", "10.0.3.1") for k in range(PER_VISITOR + 1)]  # one address, new sessions
    assert removed == [sessions[0]] and all(visitors.folder(name) for name in sessions[1:])
    for k in range(1, PER_VISITOR + 1):
        visitors.forget(f"session{k}")
    removed.clear()
    mine = [trained("alice") for _ in range(PER_VISITOR + 1)]
    assert visitors.names("alice") == mine[1:] and removed == [mine[0]]
    assert not (visitors.root / "alice" / mine[0]).exists()
    assert not (visitors.root / "alice" / mine[1] / "training_state").exists(), "nothing to resume here"
    bobs = trained("bob")
    with zipfile.ZipFile(visitors.zip(bobs)) as archive:
        assert archive.namelist() == [f"{bobs}/model.safetensors"]
    visitors.forget("alice")
    assert visitors.names("alice") == [] and not (visitors.root / "alice").exists()
    assert visitors.names("bob") == [bobs]
    monkeypatch.setattr("vae.visitors.MAX_AGE", 0.0)
    visitors.sweep()
    assert visitors.names("bob") == [] and not (visitors.root / "bob" / bobs).exists()
    monkeypatch.setattr("vae.visitors.MAX_MODELS", 0)
    with pytest.raises(UserError, match="as many trained models as it keeps"):
        visitors.new_folder("carol")


def test_the_train_tab_shows_visitors_no_server_internals(studio):
    """Where the server keeps its data, and how its operator sets that, are the server's log's and the docs', not the
    page's (issue 29)."""
    config = httpx.get(f"{studio}/config").json()
    text = json.dumps([c["props"].get("value") for c in config["components"] if c["type"] in ("markdown", "html")])
    text = re.sub(
        r"/?gradio_api/file=[^\s)\"']+", "", text
    )  # the card's figures: Gradio's own file URLs, as any image's
    for internal in ("my data", "VAE_DATA_DIR", "--data-dir", "/tmp/", "/work/"):
        assert internal not in text, f"the page shows {internal!r}"


def test_a_trainers_message_about_the_data_names_no_server_folder(tmp_path):
    data, folder = tmp_path / "srv data", tmp_path / "visitors" / "abc" / "mnist-z8-0412-aaaaaaaa"
    missing = f"The MNIST files are missing from {data}/MNIST/raw and downloading them failed (…). Put the four files"
    shown = app.visitor_message(missing, "MNIST", folder.name, folder, data)
    assert str(tmp_path) not in shown and "--data-dir" not in shown
    assert shown.startswith("This server could not read the MNIST data it trains on")
    full = f"Cannot write {folder}/model.safetensors: the disk is full."
    assert app.visitor_message(full, "MNIST", folder.name, folder, data) == (
        "Cannot write mnist-z8-0412-aaaaaaaa/model.safetensors: the disk is full."
    )


def test_visitors_models_have_readable_unguessable_names(tmp_path):
    visitors = Visitors(tmp_path / "visitors")
    names = {visitors.new_folder("alice", "fashion-mnist-z16")[0] for _ in range(200)}
    assert len(names) == 200, "unique"
    at_0412 = datetime(2026, 12, 5, 4, 12, tzinfo=UTC).timestamp()
    name = model_name("mnist-z8", at_0412)
    assert re.fullmatch(r"mnist-z8-0412-[a-z2-7]{8}", name), name
    assert all(re.fullmatch(r"fashion-mnist-z16-\d{4}-[a-z2-7]{8}", n) for n in names)
    assert model_name("../Odd Name/").startswith("odd-name-"), "a folder's name whatever the label"


def test_server_limits_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VAE_MAX_TRAIN_EPOCHS", "3")
    monkeypatch.setenv("VAE_MAX_TRAIN_SECONDS", "90")
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path / "data dir"))
    assert live.Limits.from_env() == live.Limits(tmp_path / "data dir", 3, 90.0)
    assert live.Limits.from_env(tmp_path / "flag").data_dir == tmp_path / "flag", "--data-dir wins"
    monkeypatch.setenv("VAE_MAX_TRAIN_EPOCHS", "many")
    with pytest.raises(UserError, match="VAE_MAX_TRAIN_EPOCHS='many' must be a positive whole number"):
        live.Limits.from_env()


def test_a_client_cannot_choose_its_address_behind_a_proxy(monkeypatch):
    """Behind a Space's proxy the visitor is the address the proxy appended, not what the client wrote before it."""
    from vae.visitors import client_address

    monkeypatch.delenv("VAE_PROXY_HOPS", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    forged = {"x-forwarded-for": "10.9.9.9, 10.0.0.1"}
    assert client_address(forged, "127.0.0.1") == "127.0.0.1", "no proxy: the header is anyone's words"
    monkeypatch.setenv("SPACE_ID", "owner/vae-studio")
    assert client_address(forged, "10.16.3.80") == "10.0.0.1", "a Space: the address its proxy saw"
    assert client_address({"x-forwarded-for": " 10.0.0.1 "}, "10.16.3.80") == "10.0.0.1"
    assert client_address({}, "10.16.3.80") == "10.16.3.80"
    monkeypatch.setenv("VAE_PROXY_HOPS", "2")  # a CDN in front of the Space's proxy
    assert client_address({"x-forwarded-for": "6.6.6.6, 10.0.0.1, 172.16.0.9"}, None) == "10.0.0.1"
    assert client_address({"x-forwarded-for": "10.0.0.1"}, "10.16.3.80") == "10.16.3.80", "fewer hops than said"
    monkeypatch.setenv("VAE_PROXY_HOPS", "0")
    assert client_address(forged, "10.16.3.80") == "10.16.3.80"
    monkeypatch.setenv("VAE_PROXY_HOPS", "one")
    with pytest.raises(SystemExit) as stopped:
        app.main(["--checkpoint", "/nonexistent"])
    assert "VAE_PROXY_HOPS='one' must be a whole number" in str(stopped.value.code), "exit status 1, the message"


def test_push_on_a_space_uses_the_visitors_login(monkeypatch, tmp_path):
    """With the login button (a Space), the visitor's OAuth token does the upload, not the server's."""
    from huggingface_hub import HfApi

    import vae.hub
    from vae.catalog import Catalog

    monkeypatch.setattr(vae.hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(vae.hub, "get_token", lambda: None)  # nothing stored on the server either
    tokens = []
    monkeypatch.setattr(HfApi, "whoami", lambda self, **kw: tokens.append(self.token) or {"name": "visitor"})
    monkeypatch.setattr(HfApi, "auth_check", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: tokens.append(self.token))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: tokens.append(self.token))
    visitors = Visitors(tmp_path / "visitors")
    name, folder = visitors.new_folder("session")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    visitors.add(name, "session", folder)
    training = app.TrainTab(Catalog(load_assets(app.DEFAULT_CHECKPOINT)), visitors, live.Limits(tmp_path))
    assert app.push_model(training, name, "visitor/my-vae", True, "hf_visitors_token", "session").startswith("Pushed")
    assert tokens == ["hf_visitors_token"] * 3
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    with pytest.raises(gr.Error, match="Sign in with the Hugging Face button"):
        app.push_model(training, name, "visitor/my-vae", True, None, "session")
    assert tokens == ["hf_visitors_token"] * 3, "no Hub call without a login"


# One visitor cannot take the server down (issue 27) ------------------------------------------------------------------

TRAIN_JOBS = 8  # live.Limits.max_train_jobs: /train runs going and waiting on the whole server


def visitor_client(url: str, tmp_path_factory, address: str) -> Client:
    """A new session whose requests reach the server through a Space's proxy from `address` (X-Forwarded-For)."""
    return Client(
        url,
        verbose=False,
        download_files=str(tmp_path_factory.mktemp("downloads")),
        headers={"X-Forwarded-For": address},
    )


def wait_queued(run: Watched, timeout: float = 30) -> None:
    """Until the server has told the job its place in the queue: it waits there."""
    deadline = time.monotonic() + timeout
    while not run.queue_ranks:
        assert time.monotonic() < deadline and not run.job.done(), "the job never waited in the queue"
        time.sleep(0.02)


def refused(client: Client, message: str, submitted: list) -> None:
    """A /train call that the server refuses at once with `message` (submitted: where a job that was let in goes)."""
    job = client.submit(**SETTINGS, api_name="/train")
    submitted.append(job)
    with pytest.raises(ValidationError, match=message):
        job.result(timeout=10)


def wait_for_no_trainer(timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            trainer_process(timeout=0)
        except AssertionError:
            return
        assert time.monotonic() < deadline, "a training process outlived its cancelled job"
        time.sleep(0.1)


def test_a_flood_of_train_calls_from_one_visitor_is_refused_and_sample_still_answers(
    studio, tmp_path_factory, monkeypatch
):
    """One client (several sessions, one address) submits far more /train calls than the server's queue holds: it keeps
    one run going and one waiting, the rest are refused at once; the Train queue as a whole holds TRAIN_JOBS runs, and
    another visitor's /sample is answered all along."""
    monkeypatch.setenv("SPACE_ID", "owner/vae-studio")  # behind a Space's proxy: the visitor is the address it appended
    flooder = "10.0.0.1"
    jobs = [Watched(visitor_client(studio, tmp_path_factory, flooder), epochs=20, train_images=1000)]
    others = []  # the calls to be refused (cancelled at the end, should one be let in)
    try:
        jobs[0].wait_for("Starting the trainer")
        jobs.append(Watched(visitor_client(studio, tmp_path_factory, f"10.9.9.9, {flooder}")))  # one waiting
        wait_queued(jobs[1])
        # Each session writes an address of its choice first: the proxy's entry after it is what counts.
        sessions = [visitor_client(studio, tmp_path_factory, f"10.7.{k}.1, {flooder}") for k in range(3)]
        for k in range(66):
            refused(sessions[k % 3], "You already have a training run going or waiting", others)
        sampler = new_client(studio, tmp_path_factory)
        grid, _ = sampler.predict(4, 0, 1.0, "vae-mnist", api_name="/sample")
        assert Path(grid).is_file(), "another visitor's /sample answers while the flood is refused"
        for k in range(TRAIN_JOBS - 2):  # other visitors fill the Train queue
            jobs.append(Watched(visitor_client(studio, tmp_path_factory, f"10.0.1.{k}")))
            wait_queued(jobs[-1])
        late = visitor_client(studio, tmp_path_factory, "10.0.2.1")
        refused(late, f"{TRAIN_JOBS} runs are going or waiting", others)
        grid, _ = sampler.predict(4, 1, 1.0, "vae-mnist", api_name="/sample")
        assert Path(grid).is_file(), "a full Train queue never refuses /sample"
        assert not any(job.job.done() for job in jobs), "the admitted runs are still going or waiting"
    finally:
        for job in [*others, *(run.job for run in reversed(jobs))]:
            job.cancel()
        wait_for_no_trainer()


def test_a_visitor_who_leaves_during_the_export_leaves_nothing_behind(studio, tmp_path_factory, capfd):
    """The job is cancelled while the trainer writes the model folder: what it wrote (the staging folder with the card
    and figures, the log, the live pictures) is deleted, and no traceback reaches the server's log."""
    client = Client(studio, verbose=False, download_files=False)  # no download races the deletion
    run = Watched(client, train_images=1000)
    run.wait_for("Starting the trainer")
    folder = run_folder(trainer_process())
    deadline = time.monotonic() + 120
    while not any("Writing the model folder" in s for s in run.statuses()):
        assert time.monotonic() < deadline and not run.job.done(), run.statuses()
        time.sleep(0.02)
    run.job.cancel()
    wait_for_no_trainer()
    deadline = time.monotonic() + 10

    def left() -> list[str]:
        try:
            return [p.name for p in folder.parent.iterdir() if folder.name in p.name]
        except FileNotFoundError:  # the visitor's own folder went too: their session closed
            return []

    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left() == [], "what the run wrote is deleted"
    time.sleep(1)
    assert "Traceback" not in capfd.readouterr().err


def test_a_visitors_models_are_counted_per_address_too(studio, tmp_path_factory, monkeypatch):
    """Each new session from one address trains a model: the address keeps PER_VISITOR of them, the oldest goes.
    PER_VISITOR is lowered to 1 here, so that two runs show it through the server (the rule at 3 is
    test_visitors_models_are_bounded_and_deleted's)."""
    monkeypatch.setenv("SPACE_ID", "owner/vae-studio")
    monkeypatch.setattr("vae.visitors.PER_VISITOR", 1)
    monkeypatch.setattr(app_train, "PER_VISITOR", 1)
    names, clients = [], []  # each session kept open: a session that closes takes its models with it
    for seed in range(1 + 1):
        client = visitor_client(studio, tmp_path_factory, f"10.8.{seed}.1, 10.0.3.1")  # a new first entry each time
        clients.append(client)
        final = dict(zip(OUTPUTS, client.predict(**(SETTINGS | {"seed": seed}), api_name="/train"), strict=True))
        names.append(final["model_name"])
    assert f"Your oldest model ({names[0]}) was deleted: the server keeps 1 per visitor" in final["status"]
    with pytest.raises(AppError):
        client.predict(4, 0, 1.0, names[0], api_name="/sample")
    grid, _ = client.predict(4, 0, 1.0, names[1], api_name="/sample")
    assert Path(grid).is_file()
