"""Training settings: defaults from configs/mnist.yaml, a --config file, --key value overrides, and a clear
error naming the key for every bad value, from Python and from `train.py` itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import warm
import yaml

from vae import UserError
from vae.config import DEFAULT_CONFIG, TrainConfig, build_config, parse_config

ROOT = Path(__file__).resolve().parent.parent


def write_yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_come_from_configs_mnist_yaml():
    config = parse_config([])
    assert DEFAULT_CONFIG == ROOT / "configs" / "mnist.yaml"
    for key, value in yaml.safe_load(DEFAULT_CONFIG.read_text()).items():
        assert getattr(config, key) == value, key
    assert config.dataset == "mnist"
    assert config.iw_samples == TrainConfig().iw_samples  # keys the YAML leaves out keep the dataclass default
    assert config.cpu is False and config.push_to_hub is False


def test_command_line_flags_override_the_yaml():
    config = parse_config(["--epochs", "5", "--batch-size", "256", "--latent-dim", "2", "--hidden-dims", "512", "256"])
    assert (config.epochs, config.batch_size, config.latent_dim, config.hidden_dims) == (5, 256, 2, [512, 256])
    assert config.lr == yaml.safe_load(DEFAULT_CONFIG.read_text())["lr"]  # untouched keys still come from the YAML
    assert parse_config(["--hidden-dims", "64"]).hidden_dims == [64]
    assert parse_config(["--cpu"]).cpu is True and parse_config(["--no-cpu"]).cpu is False
    assert parse_config(["--lr", "3e-4"]).lr == pytest.approx(3e-4)
    assert parse_config(["--max-train-samples", "100"]).max_train_samples == 100


def test_a_config_file_replaces_the_default_one_and_flags_still_win(tmp_path):
    path = write_yaml(tmp_path, "dataset: fashion-mnist\nepochs: 7\nlatent_dim: 8\nlr: 1\ndropout: 0.1\n")
    config = parse_config(["--config", path, "--epochs", "3"])
    assert (config.dataset, config.epochs, config.latent_dim, config.dropout) == ("fashion-mnist", 3, 8, 0.1)
    assert config.lr == 1.0 and isinstance(config.lr, float)  # an integer is a fine number
    assert config.hidden_dims == TrainConfig().hidden_dims  # not in the file: the built-in default
    assert parse_config(["--config", write_yaml(tmp_path, "")]) == TrainConfig()  # an empty file is no settings


def test_the_shipped_fashion_config_is_valid():
    config = parse_config(["--config", str(ROOT / "configs" / "fashion_mnist.yaml")])
    assert config.dataset == "fashion-mnist"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_is_valid(name):
    """Each recipe in configs/ (a misspelt key would be refused), and the speedrun's settings as docs/benchmarks.md
    gives them."""
    config = parse_config(["--config", str(ROOT / "configs" / name)])
    if name == "mnist_fast.yaml":
        assert (config.epochs, config.lr, config.warmup_steps, config.kl_warmup_epochs) == (9, 0.005, 100, 0.0)
        assert (config.mixed_precision, config.lr_schedule, config.hidden_dims) == ("auto", "cosine", [512, 256])


@pytest.mark.parametrize(
    "text, key",
    [
        ("epoch: 3", "epoch"),  # a typo is not silently ignored
        ("epochs: ten", "epochs"),
        ("epochs: 2.5", "epochs"),
        ("hidden_dims: [a]", "hidden_dims"),
        ("hidden_dims: []", "hidden_dims"),
        ("hidden_dims: 512", "hidden_dims"),
        ("lr: true", "lr"),
        ("lr: .nan", "lr"),
        ("cpu: 1", "cpu"),
        ("epochs: 0", "epochs"),
        ("latent_dim: 0", "latent_dim"),
        ("hidden_dims: [512, 0]", "hidden_dims"),
        ("test_fraction: 1.5", "test_fraction"),
        ("test_fraction: 0", "test_fraction"),
        ("dropout: 0.95", "dropout"),
        ("dataset: cifar10", "dataset"),
        ("channels: 2", "channels"),
        ("mixed_precision: fp8", "mixed_precision"),
    ],
)
def test_bad_yaml_values_are_errors_naming_the_key(tmp_path, text, key):
    with pytest.raises(UserError, match=f"'{key}'"):
        parse_config(["--config", write_yaml(tmp_path, text + "\n")])


def test_error_messages_say_what_is_allowed(tmp_path):
    def message(text: str) -> str:
        with pytest.raises(UserError) as err:
            parse_config(["--config", write_yaml(tmp_path, text)])
        return str(err.value)

    assert "must be an integer, got 'ten'" in message("epochs: ten")
    assert "at least 1" in message("epochs: 0")
    assert "strictly between 0 and 1" in message("test_fraction: 1.5")
    assert "mnist, fashion-mnist, imagefolder" in message("dataset: cifar10")
    assert "Known keys:" in message("epoch: 3") and "epochs" in message("epoch: 3")


@pytest.mark.parametrize("argv, key", [(["--epochs", "0"], "epochs"), (["--dataset", "svhn"], "dataset")])
def test_bad_command_line_values_are_errors_naming_the_key(argv, key):
    with pytest.raises(UserError, match=f"'{key}'"):
        parse_config(argv)


@pytest.mark.parametrize("text", ["epochs: [1, 2\n", "a: b: c\n", "\tepochs: 3\n"])
def test_malformed_yaml_is_an_error_naming_the_file(tmp_path, text):
    path = write_yaml(tmp_path, text)
    with pytest.raises(UserError, match="not valid YAML") as err:
        parse_config(["--config", path])
    assert path in str(err.value)


def test_a_yaml_file_that_is_not_a_mapping_is_an_error(tmp_path):
    with pytest.raises(UserError, match="must be a mapping"):
        parse_config(["--config", write_yaml(tmp_path, "- epochs\n- 3\n")])


def test_a_missing_config_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(UserError, match="Config file not found: .*nope.yaml"):
        parse_config(["--config", str(tmp_path / "nope.yaml")])


def test_push_to_hub_needs_a_hub_model_id():
    with pytest.raises(UserError, match="--hub-model-id"):
        parse_config(["--push-to-hub"])
    config = parse_config(["--push-to-hub", "--hub-model-id", "someone/vae"])
    assert config.push_to_hub and config.hub_model_id == "someone/vae"


def test_build_config_validates_python_values_too():
    assert build_config({"epochs": 2}).epochs == 2
    with pytest.raises(UserError, match="'batch_size'"):
        build_config({"batch_size": -1})


# -- train.py ------------------------------------------------------------------------------------------


def run_train(*args: str) -> subprocess.CompletedProcess:
    return warm.run([sys.executable, "train.py", *args], cwd=ROOT, timeout=120)


@pytest.mark.slow  # a new Python that imports torch: a few seconds
@pytest.mark.parametrize(
    "args, words",
    [(["--epochs", "0"], "'epochs'"), (["--config", "configs/does-not-exist.yaml"], "does-not-exist.yaml")],
    ids=["bad value", "missing config"],
)
def test_train_py_reports_bad_input_in_one_line_without_writing_anything(tmp_path, args, words):
    output_dir = tmp_path / "run"
    result = run_train("--output-dir", str(output_dir), *args)
    assert result.returncode != 0
    assert result.stderr.startswith("error:"), result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert not output_dir.exists()


@pytest.mark.slow
def test_train_py_help_lists_every_setting():
    result = run_train("--help")
    assert result.returncode == 0, result.stderr
    for flag in ["--hidden-dims", "--latent-dim", "--epochs", "--config", "--push-to-hub", "--cpu"]:
        assert flag in result.stdout
    epochs = yaml.safe_load(DEFAULT_CONFIG.read_text())["epochs"]
    assert f"default: {epochs})" in result.stdout  # defaults shown are those of configs/mnist.yaml


@pytest.mark.parametrize(
    "env, spins",
    [({}, "1000"), ({"GOMP_SPINCOUNT": "300000"}, "300000"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "None")],
    ids=["default", "the user's spin count", "the user's wait policy"],
)
def test_train_py_and_the_benchmarks_make_torchs_threads_wait_without_holding_a_core(tmp_path, env, spins):
    """train.py sets OpenMP's spin count before torch loads (vae.config.share_cores), unless the user set how OpenMP
    waits; the benchmarks time the trainer the same way."""
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    for module in ("train", "bench"):
        probe = f"import os, sys; import {module}; print('torch' in sys.modules, os.environ.get('GOMP_SPINCOUNT'))"
        out = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, env=clean | env, capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == ["False", spins], (module, out.stdout, out.stderr)
