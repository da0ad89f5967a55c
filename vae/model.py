"""A vanilla variational autoencoder built from nn.Linear layers (Kingma & Welling, 2014).

The encoder maps an image to the mean and log-variance of a diagonal Gaussian posterior q(z|x); the
decoder maps a latent z to the logits of independent Bernoulli pixels p(x|z). The prior p(z) is N(0, I).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from pathlib import Path
from typing import NamedTuple

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin, try_to_load_from_cache
from safetensors.torch import load_file
from torch import nn

from vae.errors import UserError

LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite in fp16/bf16, as diffusers' DiagonalGaussian does
HUB_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
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


def count_parameters(num_pixels: int, hidden_dims: list[int] | tuple[int, ...], latent_dim: int) -> int:
    """Weights and biases of the encoder and the decoder (mirror images of each other), without building them."""
    encoder = [num_pixels, *hidden_dims, 2 * latent_dim]
    decoder = [latent_dim, *reversed(hidden_dims), num_pixels]
    return sum(a * b + b for sizes in (encoder, decoder) for a, b in itertools.pairwise(sizes))


def check_architecture(image_shape, hidden_dims, latent_dim: int, where: str) -> None:
    """A UserError naming `where` (a file or a flag) for sizes no VAE here should have; cheap, allocates nothing."""
    sizes = {"image_shape": list(image_shape), "hidden_dims": list(hidden_dims), "latent_dim": [latent_dim]}
    for key, values in sizes.items():
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_WIDTH for v in values):
            raise UserError(f"{where}: {key} must be whole numbers from 1 to {MAX_WIDTH}, got {str(values)[:200]}.")
    if len(sizes["image_shape"]) != 3:
        raise UserError(f"{where}: image_shape must be [channels, height, width], got {sizes['image_shape']}.")
    channels, height, width = sizes["image_shape"]
    parameters = count_parameters(channels * height * width, sizes["hidden_dims"], latent_dim)
    if parameters > MAX_PARAMETERS:
        raise UserError(
            f"{where}: hidden_dims {sizes['hidden_dims']} and latent_dim {latent_dim} for {channels}x{height}x{width} "
            f"images make {parameters:,} parameters, over this project's limit of {MAX_PARAMETERS:,}: use smaller layers."
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
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> VAE:
        """Load a folder written by `save_pretrained` or a Hub repo id ("user/name"), strictly.

        A path that looks local (it exists, starts with ./ ../ / ~, or its first folder exists here) but is
        not a folder is reported as such instead of being looked up on the Hub.
        """
        path = str(pretrained_model_name_or_path)
        if is_local_folder(path):  # the mixin would build a default model without config.json, or fail obscurely
            missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(path, name))]
            if missing:
                raise UserError(
                    f"{path} is not a model folder: it has no {' and no '.join(missing)}. Pass a folder written by "
                    "train.py or save_pretrained (it holds config.json and model.safetensors)."
                )
        kwargs.setdefault("strict", True)
        model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if os.path.isdir(path):
            model.source_folder = Path(path)
        else:  # the Hub snapshot the mixin downloaded the weights into
            weights = try_to_load_from_cache(
                path, "model.safetensors", cache_dir=kwargs.get("cache_dir"), revision=kwargs.get("revision")
            )
            model.source_folder = Path(weights).parent if isinstance(weights, str) else None
        return model

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
    def _load_as_pickle(cls, model: VAE, model_file: str, map_location: str, strict: bool) -> VAE:
        """The mixin falls back to pytorch_model.bin when a Hub repo has no model.safetensors: refuse it."""
        raise UserError(
            f"{model_file} holds pickled PyTorch weights (pytorch_model.bin), which this project never loads: "
            "unpickling a downloaded file can run arbitrary code. Use a repo that has model.safetensors "
            "(train.py and save_pretrained write one)."
        )


def is_local_folder(path: str) -> bool:
    """True for a folder here, False for a Hub repo id; a UserError for a path that looks local but is no folder."""
    if os.path.isdir(path):
        return True
    if looks_local(path):
        raise UserError(
            f"No such checkpoint folder: {path}. Pass a folder written by train.py (it holds "
            "config.json and model.safetensors) or a Hugging Face Hub repo id such as user/vae-mnist."
        )
    return False


def looks_local(path: str) -> bool:
    if os.path.exists(path) or path.startswith((".", "/", "~")) or not HUB_REPO_ID.match(path):
        return True
    return os.path.isdir(path.split("/")[0])
