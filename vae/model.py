"""A vanilla variational autoencoder built from nn.Linear layers (Kingma & Welling, 2014).

The encoder maps an image to the mean and log-variance of a diagonal Gaussian posterior q(z|x); the
decoder maps a latent z to the logits of independent Bernoulli pixels p(x|z). The prior p(z) is N(0, I).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import os
import shutil
import struct
from pathlib import Path
from typing import NamedTuple

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin, hub_mixin
from huggingface_hub.errors import EntryNotFoundError
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from vae.errors import UserError, clip, json_kind, name_list, quote
from vae.folder import is_local_folder

LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite in fp16/bf16, as diffusers' DiagonalGaussian does
REQUIRED_FILES = ("config.json", "model.safetensors")  # what save_pretrained writes and from_pretrained needs
# The files of a train.py folder that describe its weights: save_pretrained and push_to_hub carry them along.
TRAINED_FILES = (
    "README.md",
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
)
PAPER_URL = "https://arxiv.org/abs/1312.6114"
CODE_URL: str | None = None  # the project's public address, once it has one: linked from every model card
# The Hub metadata of every model: the mixin's class arguments below and the model card's front matter.
HUB_METADATA = {
    "library_name": "pytorch",
    "license": "mit",
    "pipeline_tag": "unconditional-image-generation",
    "tags": ["vae", "variational-autoencoder", "image-generation", "mnist-vae-studio"],
    "paper_url": PAPER_URL,
    **({"repo_url": CODE_URL} if CODE_URL else {}),
}


class VAEOutput(NamedTuple):
    logits: torch.Tensor  # (N, C*H*W) Bernoulli logits of the reconstruction
    mu: torch.Tensor  # (N, latent_dim)
    logvar: torch.Tensor  # (N, latent_dim)
    z: torch.Tensor  # (N, latent_dim) the posterior sample that was decoded


ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}


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


def mlp(sizes: list[int], dropout: float, activation: str = "relu") -> nn.Sequential:
    """Linear → activation → Dropout for every pair of sizes except the last, which stays linear."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class VAE(nn.Module, PyTorchModelHubMixin, **HUB_METADATA | {"tags": list(HUB_METADATA["tags"])}):  # the mixin appends
    """MLP encoder → (mu, logvar) → reparameterised z → MLP decoder → Bernoulli logits.

    The constructor's arguments are the architecture; `save_pretrained` writes them to config.json and
    the weights (plus the per-class latent statistics the app uses) to model.safetensors. A model loaded
    from a train.py folder remembers it, so that saving or pushing it carries the folder's model card,
    metrics and figures along while the weights are still the ones they describe.
    """

    source_folder: Path | None = None  # the folder (or Hub snapshot) from_pretrained read

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        hidden_dims: tuple[int, ...] = (512, 256),
        latent_dim: int = 32,
        dropout: float = 0.0,
        activation: str = "relu",
        class_names: tuple[str, ...] = tuple(str(d) for d in range(10)),
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.hidden_dims = list(hidden_dims)
        self.latent_dim = latent_dim
        self.class_names = list(class_names)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        num_pixels = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        self.encoder = mlp([num_pixels, *self.hidden_dims, 2 * latent_dim], dropout, activation)
        self.decoder = mlp([latent_dim, *reversed(self.hidden_dims), num_pixels], dropout, activation)
        # Latent statistics of each class over the training set, filled in by the trainer: the app walks
        # between class means and samples "a 3" from N(mean, std²) without needing the dataset.
        self.register_buffer("class_means", torch.zeros(len(self.class_names), latent_dim))
        self.register_buffer("class_stds", torch.ones(len(self.class_names), latent_dim))

    @property
    def device(self) -> torch.device:
        return self.class_means.device

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] shaped (N, C, H, W) → posterior mean and log-variance, each (N, latent_dim)."""
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=1)  # (N, D), (N, D)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, latent_dim) → Bernoulli logits (N, C*H*W)."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, latent_dim) → images in [0, 1] shaped (N, C, H, W): the Bernoulli means."""
        return torch.sigmoid(self.decode_logits(z)).view(-1, *self.image_shape)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, draw one z ~ q(z|x) by reparameterisation, decode to logits."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)  # (N, D)
        return VAEOutput(self.decode_logits(z), mu, logvar, z)

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] decoded from z ~ N(0, temperature² I); a seed fixes them."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn(n, self.latent_dim, generator=generator) * temperature  # on CPU: same on any device
        return self.decode(z.to(self.device))

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        strict: bool = True,
        map_location: str = "cpu",
        **model_kwargs,
    ) -> VAE:
        """Load a folder written by `save_pretrained` or a Hub repo id ("user/name"), strictly, trusting nothing in it.

        config.json is checked (types, bounds, no unknown keys) and compared with model.safetensors' header before
        any tensor is allocated; the weights must be finite floating-point numbers. Every mistake is a UserError
        naming the file and the tensor. A path that looks local (it exists, starts with ./ ../ / ~, or its first
        folder exists here) but is not a folder is reported as such instead of being looked up on the Hub.
        `strict=False` lets tensors be missing from model.safetensors (they keep their initial values) and ignores
        extra ones, as torch's load_state_dict does. Arguments of the constructor override config.json's.
        """
        path = str(pretrained_model_name_or_path)
        unknown = set(model_kwargs) - set(inspect.signature(cls.__init__).parameters)
        if unknown:  # a caller's typo, not a bad config.json
            raise TypeError(f"VAE.from_pretrained got unexpected arguments: {', '.join(sorted(unknown))}")
        hub = {
            "revision": revision,
            "cache_dir": cache_dir,
            "force_download": force_download,
            "token": token,
            "local_files_only": local_files_only,
        }
        if is_local_folder(path):  # the mixin would build a default model without config.json, or fail obscurely
            missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(path, name))]
            if missing:
                raise UserError(
                    f"{clip(path)} is not a model folder: it has no {' and no '.join(missing)}. Pass a folder written "
                    "by train.py or save_pretrained (it holds config.json and model.safetensors)."
                )
            config_file = os.path.join(path, "config.json")
        else:
            try:  # through the mixin's module, as the mixin itself downloads: one patch of it covers both
                config_file = hub_mixin.hf_hub_download(repo_id=path, filename="config.json", **hub)
            except EntryNotFoundError:  # the mixin would build a default VAE and load whatever weights are there
                raise UserError(
                    f"The Hub repo {clip(path)} has no config.json, so it is not a model saved with save_pretrained. "
                    "Pass a repo that train.py or save_pretrained uploaded (with config.json and model.safetensors)."
                ) from None
        where = os.path.join(clip(path), "config.json")
        config = check_config(read_config(config_file, where) | model_kwargs, where)
        # The mixin's from_pretrained would build the model straight from config.json: ours checks it first, and
        # hands the checked arguments to _from_pretrained, which checks the weights before building anything.
        return cls._from_pretrained(model_id=path, **hub, map_location=map_location, strict=strict, **config)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ) -> VAE:
        """model.safetensors' header (names, shapes, dtypes) against the architecture before anything is allocated,
        then the weights, which must be finite."""
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, "model.safetensors")
        else:
            download = functools.partial(
                hub_mixin.hf_hub_download,
                repo_id=model_id,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
            try:
                weights = download(filename="model.safetensors")
            except EntryNotFoundError:  # only pickled weights, or none: downloaded to tell which
                return cls._load_as_pickle(None, download(filename="pytorch_model.bin"), map_location, strict)
        source = clip(model_id)
        header = weights_header(weights, source)
        with torch.device("meta"):  # the tensor names and shapes of this architecture, without allocating it
            expected = {name: tuple(t.shape) for name, t in cls(**model_kwargs).state_dict().items()}
        check_weights(header, expected, strict, source)
        model = cls(**model_kwargs)
        try:
            with safe_open(weights, framework="pt") as f:
                state = {name: f.get_tensor(name) for name in expected if name in header}  # extras: never loaded
        except Exception as err:  # a file that changed since its header was read
            raise UserError(
                f"Could not load the model in {source}: reading its model.safetensors failed ({clip(err, 150)})."
            ) from None
        model.load_state_dict(state, strict=strict)  # copies into float32, whatever float type the file holds
        current = model.state_dict()
        bad = [name for name in state if not torch.isfinite(current[name]).all()]  # after the cast: 1e300 is inf
        if bad:
            raise UserError(
                f"Could not load the model in {source}: its model.safetensors holds NaN or infinite values in "
                f"{name_list(bad)}. The training run that saved it diverged, or the file is damaged: use an earlier "
                "checkpoint, or train again (with a lower --lr, or --mixed-precision no)."
            )
        model.source_folder = Path(weights).parent  # the folder, or the Hub snapshot the weights were downloaded to
        return model.to(map_location).eval()

    def architecture(self) -> dict:
        return {
            "image_shape": list(self.image_shape),
            "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim,
            "activation": self.activation,
            "class_names": list(self.class_names),
        }

    def trained_files(self) -> list[Path]:
        """The model card, metrics and figures of the folder this model was loaded from, while its weights are
        still exactly the ones saved there (a changed model gets a card of its own); [] when there are none."""
        folder = self.source_folder
        if folder is None or not (folder / "README.md").is_file():
            return []
        saved, current = load_file(folder / "model.safetensors"), self.state_dict()
        if saved.keys() != current.keys() or not all(torch.equal(saved[k], current[k].cpu()) for k in saved):
            return []
        return [folder / name for name in TRAINED_FILES if (folder / name).is_file()]

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> str | None:
        """config.json and model.safetensors, with the trained folder's card, metrics and figures when this
        model came from one unchanged (see trained_files), else a card of this model's own."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        for path in self.trained_files():
            if path.parent.resolve() != save_directory.resolve():
                shutil.copyfile(path, save_directory / path.name)
        return super().save_pretrained(save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Upload the model with its trained card, metrics and figures; refused without them, so that a generic
        card never replaces a trained one on the Hub."""
        if not self.trained_files():
            raise UserError(
                f"This model has no trained model card to push with it (it was not loaded from a train.py folder, "
                f"or its weights changed since), and pushing it would replace the card of {repo_id} with one that "
                "has no metrics or figures. Push a folder train.py wrote: `python -m vae.hub --folder DIR "
                f"--hub-model-id {repo_id}` (or train.py --push-to-hub)."
            )
        return super().push_to_hub(repo_id, **kwargs)

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The card save_pretrained writes when no trained card comes along: this model's architecture and Hub
        metadata, and how to add test metrics (instead of the mixin's generic template)."""
        from vae.hub import bare_model_card  # vae.hub imports this module

        return bare_model_card(self.architecture())

    @classmethod
    def _load_as_pickle(cls, model: VAE | None, model_file: str, map_location: str, strict: bool) -> VAE:
        """A Hub repo without model.safetensors may have pytorch_model.bin, as the mixin would load: refuse it."""
        raise UserError(
            f"{clip(model_file)} holds pickled PyTorch weights (pytorch_model.bin), which this project never loads: "
            "unpickling a downloaded file can run arbitrary code. Use a repo that has model.safetensors "
            "(train.py and save_pretrained write one)."
        )


class WeightsMismatch(UserError, RuntimeError):
    """model.safetensors does not fit config.json. Also a RuntimeError: torch's load_state_dict raised one for the
    same mistakes before these checks ran, and callers may still catch that."""


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
    known = [name for name in inspect.signature(VAE.__init__).parameters if name != "self"]
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
