"""What a VAE is made of: `ModelConfig`, the architecture that `VAE.save_pretrained` writes as config.json, and the
checks that a model folder's config.json and model.safetensors (read from anywhere, trusted in nothing) describe a VAE
this project can build: types, bounds, and the weights' names, shapes and types against the architecture.

No torch here: train.py checks a configuration (and prints --help) without importing it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from vae.errors import UserError, clip, json_kind, name_list, quote

# Hidden-layer nonlinearities by name (config.json, --activation) → the torch.nn class that vae.model builds.
ACTIVATIONS = {"relu": "ReLU", "elu": "ELU", "silu": "SiLU", "gelu": "GELU", "tanh": "Tanh"}


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of a VAE, saved as config.json by the Hub mixin (keys sorted, as folders have always had them).

    Older folders keep loading: dropout and activation may be absent from their config.json (the defaults apply).
    """

    image_shape: tuple[int, int, int] = (1, 28, 28)  # channels, height, width
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256])  # encoder widths; the decoder mirrors them
    latent_dim: int = 32
    dropout: float = 0.0  # after each hidden layer, while training
    activation: str = "relu"  # one of ACTIVATIONS
    class_names: list[str] = field(default_factory=lambda: [str(d) for d in range(10)])

    def __post_init__(self):  # JSON gives lists, callers may give tuples: one form for each field
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        object.__setattr__(self, "hidden_dims", list(self.hidden_dims))
        object.__setattr__(self, "class_names", list(self.class_names))
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def num_pixels(self) -> int:
        channels, height, width = self.image_shape
        return channels * height * width

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json(cls, path: str, where: str, overrides: dict | None = None) -> ModelConfig:
        """A config.json, checked (types, bounds, no unknown keys), with `overrides` applied first; a UserError
        naming `where` for any mistake."""
        return cls(**check_config(read_config(path, where) | (overrides or {}), where))


# Bounds on an architecture, checked before anything is allocated: a config.json or a YAML file with a typo
# (latent_dim: 1000000000) must be a clear error, not a 2 TB allocation.
MAX_PARAMETERS = 100_000_000  # 400 MB of float32 weights: far beyond any MLP VAE of images this size
MAX_WIDTH = 65_536  # any one layer
MAX_CLASSES = 1_000  # class statistics are 2 x classes x latent_dim floats, and every class is a menu entry
MAX_CLASS_NAME = 100  # characters: a class name is a menu entry and a legend label
MAX_CONFIG_BYTES = 1_000_000  # a config.json is a few hundred bytes; a bigger file is not one
MAX_HEADER_BYTES = 1_000_000  # a safetensors header lists a few tensors in about 1 KB; safetensors itself allows 100 MB
REQUIRED_CONFIG = ("image_shape", "hidden_dims", "latent_dim", "class_names")  # written by every save_pretrained
# dropout and activation may be absent: dropout does not change the weights, and folders saved before activations
# were configurable used the default, ReLU.
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # loaded into the float32 model as they are; integers are not weights


def count_parameters(num_pixels: int, hidden_dims: list[int] | tuple[int, ...], latent_dim: int) -> int:
    """Weights and biases of the encoder and the decoder (mirror images of each other), without building them."""
    encoder = [num_pixels, *hidden_dims, 2 * latent_dim]
    decoder = [latent_dim, *reversed(hidden_dims), num_pixels]
    return sum(a * b + b for sizes in (encoder, decoder) for a, b in itertools.pairwise(sizes))


def check_architecture(image_shape, hidden_dims, latent_dim: int, where: str, classes: int = 0) -> None:
    """A UserError naming `where` (a file or a flag) for sizes no VAE here should have; cheap, allocates nothing.
    `classes` adds the class statistics (two buffers of classes x latent_dim) to the count, when known."""
    sizes = {"image_shape": list(image_shape), "hidden_dims": list(hidden_dims), "latent_dim": [latent_dim]}
    for key, values in sizes.items():
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_WIDTH for v in values):
            raise UserError(f"{where}: {key} must be whole numbers from 1 to {MAX_WIDTH}, got {clip(values)}.")
    if len(sizes["image_shape"]) != 3:
        raise UserError(f"{where}: image_shape must be [channels, height, width], got {clip(sizes['image_shape'])}.")
    channels, height, width = sizes["image_shape"]
    parameters = (
        count_parameters(channels * height * width, sizes["hidden_dims"], latent_dim) + 2 * classes * latent_dim
    )
    if parameters > MAX_PARAMETERS:
        with_classes = f", with statistics of {classes:,} classes," if classes else ""
        raise UserError(
            f"{where}: hidden_dims {clip(sizes['hidden_dims'])} and latent_dim {latent_dim} for "
            f"{channels}x{height}x{width} images{with_classes} make {parameters:,} parameters, over this project's "
            f"limit of {MAX_PARAMETERS:,}: use smaller layers."
        )


def read_config(path: str, where: str) -> dict:
    """config.json as a dict, or a UserError naming `where`; a file too big to be one is not read."""
    fix = "use the config.json that save_pretrained wrote with these weights."
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise UserError(f"{where} is {size:,} bytes, not a VAE's config (a few hundred bytes): {fix}")
        with open(path, "rb") as f:
            config = json.loads(f.read().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{where} is not UTF-8 text, so it is not a config.json: {fix}") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError; nesting too deep recurses
        raise UserError(f"{where} is not valid JSON ({clip(err, 100)}): {fix}") from None
    except OSError as err:
        raise UserError(f"{where} could not be read ({type(err).__name__}: {clip(err, 100)}).") from None
    if not isinstance(config, dict):
        raise UserError(f"{where} must hold a JSON object of settings ({{...}}), not {json_kind(config)}.")
    return config


def check_config(config: dict, where: str) -> dict:
    """The constructor's arguments from config.json, or a UserError naming `where` and the setting; cheap."""
    known = [f.name for f in dataclasses.fields(ModelConfig)]
    # Refused rather than ignored: an unknown setting means config.json was written for another model or by another
    # version of this one, and building the network without it could silently compute something else.
    unknown = [key for key in config if key not in known]
    if unknown:
        raise UserError(
            f"{where} has settings a VAE here does not take: {name_list(unknown)} (it takes {', '.join(known)}). "
            "It was written for another model: use the config.json that save_pretrained wrote with these weights."
        )
    missing = [key for key in REQUIRED_CONFIG if key not in config]
    if missing:
        raise UserError(
            f"{where} lacks {', '.join(missing)} (every config.json that save_pretrained writes has it): use the "
            "config.json saved with these weights."
        )
    for key in ("image_shape", "hidden_dims"):
        if not isinstance(config[key], list):
            raise UserError(f"{where}: {key} must be a list of whole numbers, got {quote(config[key])}.")
    names = config["class_names"]
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise UserError(f"{where}: class_names must be a list of names (strings), got {quote(names)}.")
    if not 1 <= len(names) <= MAX_CLASSES:
        raise UserError(
            f"{where}: class_names must name 1 to {MAX_CLASSES:,} classes, got {len(names):,}. A VAE here knows the "
            "classes of its training set: use the config.json saved with these weights."
        )
    long = [name for name in names if not 1 <= len(name) <= MAX_CLASS_NAME]
    if long:
        raise UserError(
            f"{where}: every name in class_names must be 1 to {MAX_CLASS_NAME} characters long, got "
            f"{name_list(repr(clip(name, 40)) for name in long)}: shorten them."
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"{where}: class_names must all differ, but some repeat: {name_list(map(repr, repeated))}.")
    check_architecture(config["image_shape"], config["hidden_dims"], config["latent_dim"], where, len(names))
    dropout = config.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:  # NaN fails too
        raise UserError(f"{where}: dropout must be a number from 0 up to 1, got {quote(dropout)}.")
    activation = config.get("activation", "relu")
    if activation not in ACTIVATIONS:
        raise UserError(f"{where}: activation must be one of {', '.join(ACTIVATIONS)}, got {quote(activation)}.")
    return config


def safetensors_header(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name → (shape, dtype such as "F32") of every tensor in a safetensors file, read without loading any; a
    ValueError saying why for a file that is not one (truncated, random bytes, a huge header)."""
    try:
        with open(path, "rb") as f:
            start = f.read(8)
        length = struct.unpack("<Q", start)[0] if len(start) == 8 else 0  # of the JSON header that follows
        if length > MAX_HEADER_BYTES:  # checked before safetensors parses it
            raise ValueError(f"a header of {length:,} bytes, where a few tensors take about 1 KB")
        with safe_open(path, framework="pt") as f:  # checks that the header covers the file exactly
            slices = {name: f.get_slice(name) for name in f.keys()}
            return {name: (tuple(s.get_shape()), s.get_dtype()) for name, s in slices.items()}
    except ValueError:
        raise
    except Exception as err:  # SafetensorError for a bad file, OSError for an unreadable one
        raise ValueError(f"{type(err).__name__}: {clip(err, 150)}") from None


def weights_header(path: str | Path, source: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """safetensors_header of model.safetensors, or a UserError naming it and the model's `source`."""
    try:
        return safetensors_header(path)
    except ValueError as err:
        raise UserError(
            f"Could not load the model in {source}: its model.safetensors is not a readable safetensors file ({err}). "
            "It is damaged or incomplete (an interrupted copy or download?): copy or download it again, or export "
            "the model again with train.py."
        ) from None


def check_weights(header: dict, expected: dict[str, tuple[int, ...]], strict: bool, source: str) -> None:
    """A UserError naming the tensors of model.safetensors (its `header`) that do not fit the architecture's."""
    missing = [name for name in expected if name not in header] if strict else []
    extra = [name for name in header if name not in expected] if strict else []
    resized = [name for name in expected if name in header and header[name][0] != expected[name]]
    if missing or extra or resized:
        problems = [f"it lacks {name_list(missing)}"] if missing else []
        problems += [f"it has tensors a VAE does not: {name_list(extra)}"] if extra else []
        shapes = name_list((f"{name} {list(header[name][0])} vs {list(expected[name])}" for name in resized), sep="; ")
        problems += [f"size mismatch (model.safetensors vs config.json): {shapes}"] if resized else []
        raise WeightsMismatch(
            f"Could not load the model in {source}: its model.safetensors does not fit the architecture its "
            f"config.json describes: {'; '.join(problems)}. The two files must come from the same save_pretrained: "
            "use the config.json saved with these weights, or export the model again with train.py."
        )
    floats = [name for name in expected if name in header and header[name][1] not in FLOAT_DTYPES]
    if floats:
        raise UserError(
            f"Could not load the model in {source}: its model.safetensors holds "
            f"{name_list(f'{name} as {header[name][1]}' for name in floats)}, where weights are floating-point "
            f"numbers ({', '.join(FLOAT_DTYPES)}). It was not saved from this VAE: export the model again with "
            "train.py."
        )


class WeightsMismatch(UserError, RuntimeError):
    """model.safetensors does not fit config.json. Also a RuntimeError: torch's load_state_dict raised one for the
    same mistakes before these checks ran, and callers may still catch that."""
