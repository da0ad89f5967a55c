"""End-to-end training on the committed MNIST slice: the Hub-ready folder, determinism, kill-and-resume,
a real 2-process run, evaluation and t-SNE commands, and the Hub push with the upload intercepted."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import warm
import yaml
from fake_hub import fake_hub
from safetensors.torch import load_file

from vae import VAE
from vae.config import build_config, parse_config
from vae.data import RAW_FILES
from vae.evaluate import checkpoint_test_set
from vae.steering import read_steering
from vae.training import mixed_precision_for, train

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--hidden-dims", "64", "--latent-dim", "2", "--batch-size", "64", "--val-size", "200"]
SMALL += ["--iw-samples", "5", "--tsne-samples", "100", "--eval-batch-size", "300"]
HUB_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "metrics.json",
    "metrics.jsonl",
    "train_config.yaml",
    "samples.png",
    "reconstructions.png",
    "latent_walk.png",
    "latent_grid.png",
    "loss_curve.png",
    "tsne.png",
    "tsne.safetensors",
    "steering.safetensors",
    "class_samples.png",
}


def run_train(data_dir: Path, output_dir: Path, *args: str, env: dict | None = None, check: bool = True):
    cmd = [sys.executable, "train.py", "--data-dir", str(data_dir), "--output-dir", str(output_dir), *SMALL, *args]
    result = warm.run(cmd, cwd=ROOT, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture
def trained(trained_run) -> Path:
    return trained_run  # conftest's: one run shared by every module


@pytest.mark.slow
def test_training_writes_a_hub_ready_folder(trained):
    assert {p.name for p in trained.iterdir()} == HUB_FILES | {"training_state"}
    assert [p.name for p in (trained / "training_state").iterdir()] == ["epoch-0003"]
    model = VAE.from_pretrained(trained)
    assert model.latent_dim == 2 and model.hidden_dims == [64] and model.class_names == [str(d) for d in range(10)]
    steering, problem = read_steering(trained, model)
    assert problem is None and steering.class_means.abs().sum() > 0, "class means were not filled in"
    assert torch.equal(model.class_means, steering.class_means), "the weights' copy is the class statistics' (issue 31)"
    assert steering.attribute_directions.shape == (2, 2), "MNIST: thickness and slant (issue 37)"

    history = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for record in history:
        assert record["train_loss"] == pytest.approx(record["train_recon"] + record["train_kl"], abs=0.01)
        assert record["images_per_sec"] > 0 and record["epoch_seconds"] > 0 and record["lr"] >= 0
    assert history[-1]["val_loss"] < history[0]["val_loss"]

    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["num_processes"] == 1 and metrics["device"] == "cpu"
    # configs/mnist.yaml's `auto`: bf16 on a CPU that has fast bf16 (this machine: AVX512-BF16), fp32 elsewhere
    assert metrics["mixed_precision"] == mixed_precision_for(parse_config(["--mixed-precision", "auto", "--cpu"]))
    assert metrics["test_images"] == 300 and metrics["iw_samples"] == 5
    assert metrics["test_loss"] == pytest.approx(metrics["test_recon"] + metrics["test_kl"], abs=1e-3)
    assert metrics["test_iw_nll"] < metrics["test_loss"] + 5  # IW bound is tighter than the ELBO, up to noise

    card = (trained / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: pytorch" in card and "ylecun/mnist" in card
    assert f"{metrics['test_loss']:.2f}" in card and "![" in card and "tsne.png" in card
    tsne = load_file(str(trained / "tsne.safetensors"))
    assert tsne["coords"].shape == (100, 2) and tsne["latents"].shape == (100, 2) and tsne["labels"].shape == (100,)


@pytest.mark.slow
def test_same_seed_same_weights(trained, mnist_dir, tmp_path):
    run_train(mnist_dir, tmp_path / "again", "--epochs", "3", "--cpu")
    assert_same_weights(trained, tmp_path / "again")
    run_train(mnist_dir, tmp_path / "other-seed", "--epochs", "1", "--cpu", "--seed", "1")
    assert not torch.equal(weights(trained)["decoder.0.weight"], weights(tmp_path / "other-seed")["decoder.0.weight"])


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(trained, mnist_dir, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "train.py", "--data-dir", str(mnist_dir), "--output-dir", str(out), *SMALL]
    proc = warm.start([*cmd, "--epochs", "3", "--cpu"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "training_state" / "epoch-0001").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-epoch 2, or mid-checkpoint: either must be safe
    proc.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    result = run_train(mnist_dir, out, "--epochs", "3", "--cpu", "--resume")
    assert "resumed from" in result.stdout + result.stderr
    assert_same_weights(trained, out)
    lines = lambda folder: [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    drop = ("epoch_seconds", "epoch_cpu_seconds", "images_per_sec")  # timings
    assert [{k: v for k, v in r.items() if k not in drop} for r in lines(out)] == [
        {k: v for k, v in r.items() if k not in drop} for r in lines(trained)
    ]


@pytest.mark.slow
def test_the_speedrun_kind_of_run_in_bf16_with_elu_repeats_and_resumes_exactly(mnist_dir, tmp_path):
    """bf16 autocast and vae.model.ELU / vae.loss.softplus (their own backward passes) are as deterministic as the
    rest: a 2-epoch run equals a 1-epoch run resumed for a second epoch, weight for weight (constant learning rate, so
    that the schedule does not depend on the number of epochs), weight decay included."""
    fast = ["--cpu", "--activation", "elu", "--mixed-precision", "bf16", "--lr-schedule", "constant"]
    fast += ["--weight-decay", "0.05"]
    run_train(mnist_dir, tmp_path / "straight", "--epochs", "2", *fast)
    run_train(mnist_dir, tmp_path / "resumed", "--epochs", "1", *fast)
    shutil.copytree(tmp_path / "resumed", tmp_path / "resumed without decay")
    assert "resumed from" in run_train(mnist_dir, tmp_path / "resumed", "--epochs", "2", "--resume", *fast).stdout
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    # The resumed run's own --weight-decay holds, not the one saved with the optimizer's state.
    run_train(mnist_dir, tmp_path / "resumed without decay", "--epochs", "2", "--resume", *fast, "--weight-decay", "0")
    assert not torch.equal(
        weights(tmp_path / "straight")["decoder.0.weight"],
        weights(tmp_path / "resumed without decay")["decoder.0.weight"],
    )
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["mixed_precision"] == "bf16"
    assert "weight decay 0.05 with a constant schedule" in (tmp_path / "resumed" / "README.md").read_text()


def test_auto_mixed_precision_is_bf16_only_where_it_is_fast():
    """--mixed-precision auto (the shipped recipes'): bf16 on a CPU with bf16 instructions, fp32 on one that would
    emulate it; any other choice is kept as given."""
    config = parse_config(["--mixed-precision", "auto", "--cpu"])
    assert mixed_precision_for(config, {"avx2", "avx512f", "avx512_bf16"}) == "bf16"
    assert mixed_precision_for(config, {"avx2", "amx_bf16"}) == "bf16"
    assert mixed_precision_for(config, {"avx2", "avx512f"}) == mixed_precision_for(config, set()) == "no"
    for given in ("no", "bf16", "fp16"):
        assert mixed_precision_for(dataclasses.replace(config, mixed_precision=given), {"avx512_bf16"}) == given


DOWNLOAD_LOGGER = """
import gzip, os, runpy, sys, time
from pathlib import Path

import torchvision.datasets.mnist as mnist

def download(url, download_root, filename, md5):  # stands in for the network: the slice, slowly, and a record
    with open(os.environ["DOWNLOAD_LOG"], "a") as log:
        log.write(f"{os.environ['RANK']} {filename}\\n")
    time.sleep(0.5)
    data = gzip.decompress((Path(os.environ["SLICE"]) / filename).read_bytes())
    target = Path(download_root) / filename.removesuffix(".gz")
    target.with_suffix(".part").write_bytes(data)
    target.with_suffix(".part").rename(target)

mnist.download_and_extract_archive = download
sys.argv[0] = "train.py"
sys.path.insert(0, os.getcwd())  # the repository, as when train.py is run from it
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.slow
def test_two_process_torchrun_downloads_the_dataset_once_and_trains_one_run(tmp_path):
    """`torchrun --standalone --nproc_per_node 2 train.py` on a machine with no data yet: one process downloads it and
    the other waits, instead of both writing the same files; then both train one run, each its own half of the data,
    written once by the main process with the random states of both."""
    (tmp_path / "run.py").write_text(DOWNLOAD_LOGGER)
    log, out = tmp_path / "downloads.log", tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "DOWNLOAD_LOG": str(log)}
    env["SLICE"] = str(ROOT / "tests" / "data" / "mnist-slice")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(tmp_path / "run.py"), "--data-dir", str(tmp_path / "data"), "--output-dir", str(out), *SMALL]
    result = warm.run([*cmd, "--epochs", "2"], cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    downloads = log.read_text().splitlines()
    assert sorted(downloads) == sorted(f"0 {name}.gz" for name in RAW_FILES), downloads

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    assert {p.name for p in out.iterdir()} == HUB_FILES | {"training_state"}
    # one log line per epoch (main process only), and each process trained on its own half of the data
    output = result.stdout + result.stderr
    assert output.count("epoch 1/2  train") == 1 and output.count("epoch 2/2  train") == 1
    assert "2 process(es)" in output
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_images = 1200 - 200
    assert history[0]["images_per_sec"] * history[0]["epoch_seconds"] == pytest.approx(train_images, rel=0.01)
    # the state of both processes' RNGs is saved for resuming
    state = out / "training_state" / "epoch-0002"
    assert (state / "random_states_0.pkl").exists() and (state / "random_states_1.pkl").exists()


@pytest.mark.slow
def test_evaluate_and_tsne_commands(trained, tmp_path):
    result = warm.run(
        [sys.executable, "-m", "vae.evaluate", "--checkpoint", str(trained), "--iw-samples", "20", "--output", str(tmp_path / "e.json")], cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert metrics["test_images"] == 300 and metrics["iw_samples"] == 20
    assert metrics["test_loss"] == pytest.approx(json.loads((trained / "metrics.json").read_text())["test_loss"])
    assert metrics["test_iw_nll"] <= metrics["test_loss"] + 1
    assert "IW bound" in result.stdout

    folder = tmp_path / "my runs" / "vae"  # a copy: the shared run is read by other tests, perhaps at this moment
    shutil.copytree(trained, folder)
    before = (folder / "tsne.safetensors").stat().st_mtime_ns
    result = warm.run(
        [sys.executable, "-m", "vae.tsne", "--checkpoint", str(folder), "--samples", "50"], cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (folder / "tsne.safetensors").stat().st_mtime_ns > before
    assert load_file(str(folder / "tsne.safetensors"))["coords"].shape == (50, 2)

    missing = warm.run(
        [sys.executable, "-m", "vae.evaluate", "--checkpoint", str(tmp_path / "nope")],
        cwd=ROOT,
    )
    assert (
        missing.returncode != 0 and "No such checkpoint folder" in missing.stderr and "Traceback" not in missing.stderr
    )


@pytest.mark.slow
def test_evaluate_update_card_rewrites_the_test_figures(trained, tmp_path):
    folder = tmp_path / "vae"
    shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("training_state"))
    before = json.loads((folder / "metrics.json").read_text())
    result = warm.run(
        [sys.executable, "-m", "vae.evaluate", "--checkpoint", str(folder), "--iw-samples", "12", "--update-card"], cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    after = json.loads((folder / "metrics.json").read_text())
    evaluated = json.loads((folder / "eval.json").read_text())
    assert after["iw_samples"] == 12 and after["test_iw_nll"] == evaluated["test_iw_nll"]
    assert after["test_iw_nll"] != before["test_iw_nll"]
    assert {k: v for k, v in after.items() if not k.startswith("test_iw") and k != "iw_samples"} == {
        k: v for k, v in before.items() if not k.startswith("test_iw") and k != "iw_samples"
    }  # the run's own figures (ELBO with its fixed noise, wall time, best epoch) are kept
    card = (folder / "README.md").read_text()
    assert "IW bound with k=12" in card and f"{evaluated['test_iw_nll']:.2f}" in card
    assert "IW bound with k=5" not in card

    no_run = tmp_path / "bare"
    shutil.copytree(folder, no_run)
    (no_run / "train_config.yaml").unlink()
    result = warm.run(
        [sys.executable, "-m", "vae.evaluate", "--checkpoint", str(no_run), "--update-card"], cwd=ROOT,
    )  # fmt: skip
    assert result.returncode != 0 and "train_config.yaml" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_folder_whose_settings_this_version_does_not_know_still_evaluates(trained, tmp_path):
    """An older or newer train.py's train_config.yaml (a renamed key, a value this version refuses) is read leniently:
    the test set is still found and --update-card still rewrites the card, swapping the folder in whole."""
    folder = tmp_path / "vae"
    shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("training_state"))
    with open(folder / "train_config.yaml", "a") as settings:
        settings.write("kl_anneal_epochs: 2.0\nlr_schedule: linear\n")  # renamed since; a schedule this version lacks
    assert len(checkpoint_test_set(folder)) == 300
    result = warm.run(
        [sys.executable, "-m", "vae.evaluate", "--checkpoint", str(folder), "--iw-samples", "3", "--update-card"], cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["iw_samples"] == 3 and "IW bound with k=3" in (folder / "README.md").read_text()
    assert {p.name for p in folder.iterdir()} == HUB_FILES | {"eval.json"}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left beside it"


@pytest.mark.slow
def test_push_to_hub_uploads_the_folder_once(mnist_dir, tmp_path, monkeypatch):
    calls, texts = [], []

    class FakeApi:
        def whoami(self):
            calls.append(("whoami",))
            return {"name": "someone", "auth": {"accessToken": {"role": "write"}}}

        def auth_check(self, repo_id, write):
            calls.append(("auth_check", repo_id, write))

        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create_repo", repo_id, private))

        def upload_folder(self, repo_id, folder_path, ignore_patterns, commit_message):
            from huggingface_hub.utils import filter_repo_objects

            files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
            uploaded = set(filter_repo_objects(files, ignore_patterns=ignore_patterns))
            calls.append(("upload_folder", repo_id, uploaded))
            texts.extend(Path(folder_path, f).read_text() for f in uploaded if f.endswith((".yaml", ".json", ".md")))

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("vae.hub.HfApi", FakeApi)
    config = build_config({"data_dir": str(mnist_dir), "output_dir": str(tmp_path / "pushed"), "epochs": 1, "cpu": True,
                           "hidden_dims": [32], "latent_dim": 4, "val_size": 200, "iw_samples": 0, "tsne_samples": 50,
                           "push_to_hub": True, "hub_model_id": "someone/vae-test"})  # fmt: skip
    train(config)
    assert calls[:2] == [("whoami",), ("auth_check", "someone/vae-test", True)], "the token is checked first"
    assert calls[2] == ("create_repo", "someone/vae-test", None), "no --hub-private: the account's default"
    assert len(calls) == 4 and calls[3][:2] == ("upload_folder", "someone/vae-test")
    assert calls[3][2] == HUB_FILES - {"latent_grid.png"}  # 4-D latent: no grid; no training state
    assert not [t for t in texts if str(tmp_path) in t or str(mnist_dir) in t], "no place on this machine is pushed"
    assert str(tmp_path / "pushed") in (tmp_path / "pushed" / "train_config.yaml").read_text(), "but kept locally"


def hub_env(hub_url: str, tmp_path: Path, **extra: str) -> dict:
    """A user with a token, online, whose Hub is the stand-in at hub_url."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return (
        env
        | {"HF_TOKEN": "hf_not_a_real_token", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
        | {"HF_ENDPOINT": hub_url, **extra}
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("rejected", "rejected the token"),
        ("read-only", "is read-only"),
        ("unreachable", "Could not reach the Hugging Face Hub"),
        ("offline", "HF_HUB_OFFLINE=1"),
        ("bad-repo-id", "is not a repo id the Hub accepts"),
    ],
)
def test_push_to_hub_problems_stop_train_py_before_any_epoch(mnist_dir, tmp_path, case, message):
    with fake_hub() as hub:
        hub.whoami_status = 401 if case == "rejected" else 200
        if case == "read-only":
            hub.whoami["auth"]["accessToken"]["role"] = "read"
        url = "http://127.0.0.1:9" if case == "unreachable" else hub.url  # port 9 (discard): nothing answers
        env = hub_env(url, tmp_path, **({"HF_HUB_OFFLINE": "1"} if case == "offline" else {}))
        repo = "my user/vae mnist" if case == "bad-repo-id" else "someone/vae"
        out = tmp_path / "never"
        result = run_train(mnist_dir, out, "--push-to-hub", "--hub-model-id", repo, "--cpu", env=env, check=False)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, "one paragraph"
    assert "epoch 1/" not in result.stdout + result.stderr and not out.exists(), "nothing trained, nothing written"


@pytest.mark.slow
def test_a_failed_upload_at_the_end_exits_non_zero_and_keeps_the_folder(mnist_dir, tmp_path):
    out = tmp_path / "my run" / "vae"
    with fake_hub() as hub:  # the token checks pass; creating the repo fails with a 500, as in a Hub outage
        result = run_train(
            mnist_dir, out, "--epochs", "1", "--cpu", "--push-to-hub", "--hub-model-id", "someone/vae",
            env=hub_env(hub.url, tmp_path), check=False,
        )  # fmt: skip
    assert ("POST", "/api/repos/create") in hub.requests
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "epoch 1/1" in result.stdout + result.stderr, "it trained"
    assert "Uploading" in result.stderr and "failed (HfHubHTTPError" in result.stderr
    assert f'python -m vae.hub --folder "{out}" --hub-model-id someone/vae' in result.stderr
    assert {p.name for p in out.iterdir()} == HUB_FILES | {"training_state"}, "the folder is kept whole"


def test_push_without_token_fails_before_training(mnist_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"} | {"HF_HOME": str(tmp_path / "hf")}
    out = tmp_path / "never"
    result = run_train(mnist_dir, out, "--push-to-hub", "--hub-model-id", "someone/x", env=env, check=False)
    assert result.returncode != 0 and "token" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_keep_on_stop_exports_the_best_weights_so_far_from_the_middle_of_an_epoch(mnist_dir, tmp_path):
    """The app's Stop: SIGINT in the first epoch (no epoch finished, no checkpoint yet) ends the run after that step
    and exports the current weights, which beat the initial ones on the validation set."""
    settings = {"hidden_dims": [64], "latent_dim": 2, "batch_size": 64, "val_size": 200, "iw_samples": 0}
    config = build_config(settings | {"data_dir": str(mnist_dir), "epochs": 5, "tsne_samples": 100})
    config.output_dir = str(tmp_path / "stopped run" / "model")
    steps, ends = [], []

    def on_step(epoch, step, of, images, loss):
        steps.append((epoch, step, of, images))
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # what the app's LiveRun.stop sends the trainer

    folder = train(config, on_step=on_step, on_train_end=lambda: ends.append(len(steps)), keep_on_stop=True)
    assert steps == [(1, 1, 16, 64), (1, 2, 16, 64), (1, 3, 16, 64)], "ended at the end of the step it was in"
    assert ends == [3], "on_train_end once, after the last step, before the export"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["stopped_in_epoch"] == 1 and metrics["best_epoch"] == 1 and metrics["best_val_loss"] < 544
    assert {"model.safetensors", "config.json", "README.md", "tsne.png"} <= {p.name for p in folder.iterdir()}
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["stopped"], r["epoch_fraction"]) for r in history] == [(1, True, 0.1875)], "3 of 16 steps"
    assert history[0]["val_loss"] == round(metrics["best_val_loss"], 4), "the stopped epoch, recorded as far as it went"
    assert not (folder / "training_state").exists(), "a checkpoint holds whole epochs: none was saved"
    assert VAE.from_pretrained(folder).latent_dim == 2


@pytest.mark.slow  # reads the shared trained run, which the quick loop does not build
def test_the_weights_say_where_they_came_from(trained, tmp_path):
    """model.safetensors carries its training settings (without this machine's paths) and the code's commit as
    safetensors metadata; from_pretrained reads them back as text (strict, no code) and save_pretrained keeps them."""
    from safetensors import safe_open

    with safe_open(str(trained / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    settings = yaml.safe_load(metadata["train_config"])
    assert settings["epochs"] == 3 and settings["latent_dim"] == VAE.from_pretrained(trained).config.latent_dim
    assert str(tmp_path.parent.parent) not in metadata["train_config"] and "/tmp" not in metadata["train_config"]
    commit = json.loads((trained / "metrics.json").read_text()).get("code_commit")
    assert metadata.get("code_commit") == commit and metadata["format"] == "pt"
    model = VAE.from_pretrained(trained)
    assert model.provenance == {key: metadata[key] for key in ("train_config", "code_commit") if key in metadata}
    model.save_pretrained(tmp_path / "copy")
    with safe_open(str(tmp_path / "copy" / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == metadata, "a saved copy says the same"
