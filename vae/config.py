"""The training run's settings: one dataclass, read from YAML, overridden by `--key value` on the CLI.

Every default lives in `TrainConfig` below. A YAML file (configs/mnist.yaml by default) sets some of
them, the command line sets others, and `validate` rejects anything wrong before any work starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vae.architecture import ACTIVATIONS, ModelConfig
from vae.errors import UserError
from vae.folder import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "mnist.yaml"
DATASETS = ("mnist", "fashion-mnist", "imagefolder")
BINARIZE = ("none", "dynamic")  # grayscale pixels read as Bernoulli means, or dynamically binarised MNIST
OBJECTIVES = ("elbo", "iwae")
TRACKERS = ("tensorboard", "trackio", "wandb")  # Accelerate's names for them; vae.tracking knows their packages
REPORT_TO = ("none", *TRACKERS, "all")


def option(default, help: str, **limits):
    """A config field with its help text and its allowed range (min, max, choices) kept beside it."""
    kwargs = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(metadata={"help": help, **limits}, **kwargs)


@dataclass
class TrainConfig:
    # data
    dataset: str = option("mnist", "mnist, fashion-mnist or imagefolder", choices=DATASETS)
    data_dir: str = option("data", "dataset root (MNIST is read from DATA_DIR/MNIST/raw), or the image folder")
    image_size: int = option(28, "imagefolder: images are resized to IMAGE_SIZE x IMAGE_SIZE", min=4, max=256)
    channels: int = option(1, "imagefolder: 1 for grayscale, 3 for RGB", choices=(1, 3))
    val_size: int = option(5000, "training images held out for validation (fixed by the seed)", min=1)
    test_fraction: float = option(0.1, "imagefolder: fraction of images held out as the test set", open=(0, 1))
    max_train_samples: int | None = option(None, "train on the first N training images only", min=1)
    binarize: str = option(
        "none",
        "none: pixels are Bernoulli means (grayscale); dynamic: each training image is drawn again as binary pixels "
        "~ Bernoulli(intensity) every time it is seen, validation and test images once, with BINARIZE_SEED",
        choices=BINARIZE,
    )
    binarize_seed: int = option(0, "dynamic: the seed of the one binarisation of the validation and test images", min=0)
    # model
    hidden_dims: list[int] = option([512, 256], "encoder layer widths; the decoder mirrors them", min=1)
    latent_dim: int = option(32, "size of the latent z", min=1)
    dropout: float = option(0.0, "dropout after each hidden layer", min=0.0, max=0.9)
    activation: str = option("relu", "nonlinearity after each hidden layer", choices=tuple(ACTIVATIONS))
    # optimisation
    epochs: int = option(30, "passes over the training set", min=1)
    batch_size: int = option(128, "images per step on each process", min=1)
    lr: float = option(1e-3, "Adam learning rate", min=0.0)
    weight_decay: float = option(0.0, "decoupled weight decay, as in AdamW (0: plain Adam)", min=0.0)
    lr_schedule: str = option(
        "cosine", "constant or cosine (decays to lr * min_lr_ratio)", choices=("constant", "cosine")
    )
    min_lr_ratio: float = option(0.0, "cosine: final learning rate as a fraction of lr", min=0.0, max=1.0)
    warmup_steps: int = option(0, "linear learning-rate warm-up steps", min=0)
    kl_warmup_epochs: float = option(0.0, "epochs over which the KL weight rises linearly from 0 to 1", min=0.0)
    objective: str = option(
        "elbo",
        "elbo, or iwae: the importance-weighted bound (Burda et al. 2015) with TRAIN_SAMPLES",
        choices=OBJECTIVES,
    )
    train_samples: int = option(1, "iwae: importance samples per training image (1 gives the ELBO)", min=1, max=5000)
    seed: int = option(0, "seed for the split, the shuffling and the weights", min=0)
    # hardware
    mixed_precision: str = option(
        "no",
        "no, bf16, fp16, or auto: bf16 where it is fast (a CUDA GPU that has it, a CPU with AVX512-BF16 or AMX), else "
        "no (elsewhere a CPU emulates bf16, slower than no)",
        choices=("no", "bf16", "fp16", "auto"),
    )
    cpu: bool = option(False, "train on the CPU even when a GPU is available")
    compile: bool | None = option(
        None,
        "compile the training step with torch.compile (--compile) or not (--no-compile): up to ~30 s once, then steps "
        "~1.3x faster on a CPU; default: when the run has at least 20,000 steps to go on a CPU or a CUDA GPU",
    )
    ddp_timeout: int = option(
        1800, "several processes: seconds one waits for the others before the run stops (a lost machine)", min=1
    )
    # outputs
    output_dir: str = option("outputs/vae-mnist", "where the Hub-ready model folder is written")
    resume: bool = option(False, "continue from the last finished epoch in OUTPUT_DIR")
    report_to: str = option(
        "none",
        "log each epoch's metrics and sample grid to none, tensorboard, trackio, wandb or all",
        choices=REPORT_TO,
    )
    logging_dir: str = option("runs", "tensorboard: event files go to LOGGING_DIR/<output folder name>")
    eval_batch_size: int = option(1000, "images per batch when evaluating", min=1)
    iw_samples: int = option(100, "importance samples per test image for the final IW bound (0: skip)", min=0)
    tsne_samples: int = option(2000, "test images embedded in the t-SNE figure", min=10)
    steering_images: int = option(
        0, "training images judged clear or not for the class regions (0: all; fewer: a faster export)", min=0
    )
    push_to_hub: bool = option(False, "upload the output folder to the Hub at the end")
    hub_model_id: str | None = option(None, "Hub repo for --push-to-hub, e.g. user/vae-mnist")
    hub_private: bool | None = option(
        None, "create a new Hub repo as private (--hub-private) or public (--no-hub-private); default: the account's"
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_config(self, image_shape: tuple[int, int, int], class_names: list[str]) -> ModelConfig:
        """The architecture these settings ask for, for images of the data's shape and classes."""
        fields = {"hidden_dims": self.hidden_dims, "latent_dim": self.latent_dim, "dropout": self.dropout}
        return ModelConfig(image_shape, **fields, activation=self.activation, class_names=class_names)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
TYPES = typing.get_type_hints(TrainConfig)


def check_value(key: str, value):
    """Return `value` converted to the field's type, or raise a UserError naming the key."""
    kind, meta = TYPES[key], FIELDS[key].metadata
    optional = type(None) in typing.get_args(kind)
    if optional:
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    expected = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if typing.get_origin(kind) is list:
        if not isinstance(value, list) or not value or any(type(v) is not int for v in value):
            raise UserError(f"Config key '{key}' must be a non-empty list of integers, got {value!r}.")
        items = value
    else:
        ok = type(value) is kind or (kind is float and type(value) is int)
        if not ok:
            raise UserError(f"Config key '{key}' must be {expected[kind]}, got {value!r}.")
        value = float(value) if kind is float else value
        if kind is float and not math.isfinite(value):
            raise UserError(f"Config key '{key}' must be a finite number, got {value!r}.")
        items = [value]
    for v in items:
        if "choices" in meta and v not in meta["choices"]:
            choices = ", ".join(str(c) for c in meta["choices"])
            raise UserError(f"Config key '{key}' must be one of {choices}; got {v!r}.")
        if "min" in meta and v < meta["min"]:
            raise UserError(f"Config key '{key}' must be at least {meta['min']}, got {v!r}.")
        if "max" in meta and v > meta["max"]:
            raise UserError(f"Config key '{key}' must be at most {meta['max']}, got {v!r}.")
        if "open" in meta and not meta["open"][0] < v < meta["open"][1]:
            raise UserError(f"Config key '{key}' must be strictly between 0 and 1, got {v!r}.")
    return value


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"Config file not found: {path}. Pass --config with a YAML file such as configs/mnist.yaml.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(
            f"Config file {path} is not UTF-8 text (byte {err.start} cannot be read): save it as UTF-8."
        ) from None
    except yaml.YAMLError as err:
        raise UserError(f"Config file {path} is not valid YAML: {str(err)[:500]}. Fix the line it names.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"Config file {path} must be a mapping of key: value lines, got {type(data).__name__}.")
    return data


def build_config(values: dict) -> TrainConfig:
    """Validate every key and value, then the rules that tie keys together."""
    for key in values:
        if key not in FIELDS:
            known = ", ".join(FIELDS)
            raise UserError(f"Unknown config key '{key}'. Known keys: {known}.")
    config = TrainConfig(**{key: check_value(key, value) for key, value in values.items()})
    if config.train_samples > 1 and config.objective != "iwae":
        raise UserError(
            f"--train-samples {config.train_samples} needs --objective iwae: the ELBO uses one sample per image. "
            "Add --objective iwae, or drop --train-samples."
        )
    if config.push_to_hub and not config.hub_model_id:
        raise UserError("--push-to-hub needs --hub-model-id user/name to know where to upload.")
    return config


def saved_config(path: Path) -> TrainConfig:
    """The settings an earlier run recorded in its train_config.yaml, read leniently: keys this version does not know
    (renamed or removed since) and values it would refuse are left at their defaults, so an old folder stays usable.
    A missing file gives the defaults; a file that is not YAML is a UserError."""
    kept = {}
    for key, value in (read_yaml(path) if path.is_file() else {}).items():
        if key in FIELDS:
            with contextlib.suppress(UserError):
                kept[key] = check_value(key, value)
    return TrainConfig(**kept)


def safe_defaults() -> dict:
    """The default YAML's values, for --help only; a broken file is reported later, by parse_config."""
    try:
        return read_yaml(DEFAULT_CONFIG)
    except UserError:
        return {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a variational autoencoder and write a Hugging Face Hub-ready model folder.",
        epilog="Each setting comes from the built-in default, then the --config file, then these flags; "
        "the defaults shown are those of configs/mnist.yaml.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML file of settings")
    defaults = TrainConfig(**{k: v for k, v in safe_defaults().items() if k in FIELDS})
    for key, f in FIELDS.items():
        kind = TYPES[key]
        flag = "--" + key.replace("_", "-")
        text = f.metadata["help"]
        optional = type(None) in typing.get_args(kind)
        base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind
        if base is bool:
            text += "" if getattr(defaults, key) is None else f" (default: {getattr(defaults, key)})"
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
            continue
        if typing.get_origin(base) is list:
            parser.add_argument(flag, type=int, nargs="+", default=argparse.SUPPRESS, help=text, metavar="N")
        else:
            text += f" (default: {getattr(defaults, key)})"
            parser.add_argument(flag, type=base, default=argparse.SUPPRESS, help=text, metavar=key.upper())
    return parser


# How many times torch's CPU threads (OpenMP; libgomp in Linux wheels) spin while they wait for their next piece of work
# before they sleep. libgomp's default, 300,000, keeps a waiting thread on its core for milliseconds: on a machine whose
# cores other work shares, the speedrun trained 2.9x slower than on one thread. With 1,000 it trained within 1.21x of
# the best setting both idle and loaded (docs/benchmarks.md, "Threads, idle and loaded").
OPENMP_SPINS = "1000"


def share_cores() -> None:
    """Make torch's CPU threads sleep soon when they wait (OPENMP_SPINS), unless OMP_WAIT_POLICY or GOMP_SPINCOUNT
    says otherwise. It must run before torch is imported: OpenMP reads its settings when it loads."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINS)


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults ← YAML file ← command-line flags, validated."""
    args = vars(build_parser().parse_args(argv))
    values = read_yaml(args.pop("config"))
    values.update(args)
    return build_config(values)


def save_config(config: TrainConfig, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


# Settings that name places on the machine that trained: a push or a download shows them only when relative.
MACHINE_PATHS = ("data_dir", "output_dir")


def shareable_config(text: str) -> str:
    """A train_config.yaml as it may leave the machine: an absolute path (or one climbing out with ..) in data_dir or
    output_dir, which can hold a user name, a server's layout or a visitor's session id, becomes the default."""
    settings = yaml.safe_load(text)
    if not isinstance(settings, dict):
        return text
    defaults = TrainConfig()
    for key in MACHINE_PATHS:
        value = settings.get(key)
        if isinstance(value, str) and (value.startswith(("/", "~", "\\")) or ":" in value or ".." in Path(value).parts):
            settings[key] = getattr(defaults, key)
    return yaml.safe_dump(settings, sort_keys=False)
