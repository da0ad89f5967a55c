"""A vanilla variational autoencoder built from nn.Linear layers (Kingma & Welling, 2014).

The encoder maps an image to the mean and log-variance of a diagonal Gaussian posterior q(z|x); the
decoder maps a latent z to the logits of independent Bernoulli pixels p(x|z). The prior p(z) is N(0, I).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin, hub_mixin
from huggingface_hub.errors import EntryNotFoundError
from safetensors import safe_open
from safetensors.torch import load_file, save_model
from torch import nn

from vae import architecture
from vae.architecture import ModelConfig, check_weights, weights_header
from vae.card import HUB_METADATA, bare_model_card
from vae.config import shareable_config
from vae.errors import UserError, clip, name_list
from vae.folder import CARD, CONFIG, REQUIRED_FILES, TRAIN_CONFIG, TRAINED_FILES, WEIGHTS, is_local_folder

PROVENANCE = ("train_config", "code_commit")  # the keys of model.safetensors' metadata that say where it came from
LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite in fp16/bf16, as diffusers' DiagonalGaussian does


class ELUFunction(torch.autograd.Function):
    """ELU (α = 1) and its gradient from kernels that torch's CPU build vectorises: exp, where nn.ELU uses expm1
    (about 10x slower here), and the gradient from the output, 1 + min(y, 0), where autograd would go back through
    every op of the formula."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        negative = x.clamp(max=0)
        y = (x - negative) + torch.exp(negative) - 1  # x - negative: x where x > 0, exactly 0 elsewhere
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (y.clamp(max=0) + 1)  # 1 for x >= 0, exp(x) below


class ELU(nn.Module):
    """nn.ELU (α = 1), 1.5-1.9x faster in forward + backward on a CPU, where nn.ELU took a fifth of a bf16 training step
    (docs/benchmarks.md, "Where a step's time goes"). It agrees with nn.ELU to float32 rounding, gradient included,
    and has no weights: every saved model loads into it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ELUFunction.apply(x)


# name → the module class after each hidden layer
ACTIVATIONS = {name: getattr(nn, layer) for name, layer in architecture.ACTIVATIONS.items()} | {"elu": ELU}


class VAEOutput(NamedTuple):
    logits: torch.Tensor  # (S*N, C*H*W) Bernoulli logits of the reconstruction, S samples per image (usually 1)
    mu: torch.Tensor  # (N, latent_dim)
    logvar: torch.Tensor  # (N, latent_dim)
    z: torch.Tensor  # (S*N, latent_dim) the posterior samples that were decoded


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

    The architecture is a `ModelConfig` (`VAE(config)`, or its fields as keywords: `VAE(latent_dim=2)`);
    `save_pretrained` writes it to config.json and the weights (plus a copy of the class means) to model.safetensors.
    A model loaded from a train.py folder remembers it, so that saving or pushing it carries the folder's model card,
    metrics and figures along while the weights are still the ones they describe.
    """

    source_folder: Path | None = None  # the folder (or Hub snapshot) from_pretrained read
    # Where the weights came from, written into model.safetensors' metadata by save_pretrained and read back by
    # from_pretrained: "train_config" (the training settings as YAML, without this machine's paths) and "code_commit".
    provenance: dict[str, str] = {}

    def __init__(self, config: ModelConfig | None = None, **fields):
        super().__init__()
        self.config = (config or ModelConfig()).replace(**fields)
        self._hub_mixin_config = self.config  # what save_pretrained writes to config.json
        c = self.config
        self.encoder = mlp([c.num_pixels, *c.hidden_dims, 2 * c.latent_dim], c.dropout, c.activation)
        self.decoder = mlp([c.latent_dim, *reversed(c.hidden_dims), c.num_pixels], c.dropout, c.activation)
        # A copy of each class's mean and spread (vae.classes), filled in at export for users of the weights alone.
        # The app and the figures read the class statistics from steering.safetensors; folders exported before
        # issue 31 hold the means of every training image here, and keep them: their weights stay byte-identical.
        self.register_buffer("class_means", torch.zeros(len(c.class_names), c.latent_dim))
        self.register_buffer("class_stds", torch.ones(len(c.class_names), c.latent_dim))

    # The architecture's fields, read as the model's own.
    image_shape = property(lambda self: self.config.image_shape)
    hidden_dims = property(lambda self: self.config.hidden_dims)
    latent_dim = property(lambda self: self.config.latent_dim)
    activation = property(lambda self: self.config.activation)
    class_names = property(lambda self: self.config.class_names)

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

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, samples: int = 1) -> VAEOutput:
        """Encode, draw `samples` z ~ q(z|x) per image by reparameterisation, decode to logits. With several samples
        (the importance-weighted bound), z and logits hold samples x N rows, sample by sample."""
        mu, logvar = self.encode(x)
        shape = mu.shape if samples == 1 else (samples, *mu.shape)
        eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = (mu + eps * torch.exp(0.5 * logvar)).reshape(-1, mu.shape[1])  # (samples * N, D)
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
        extra ones, as torch's load_state_dict does. Fields of ModelConfig given as keywords override config.json's.
        """
        path = str(pretrained_model_name_or_path)
        unknown = set(model_kwargs) - {f.name for f in dataclasses.fields(ModelConfig)}
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
            config_file = os.path.join(path, CONFIG)
        else:
            try:  # through the mixin's module, as the mixin itself downloads: one patch of it covers both
                config_file = hub_mixin.hf_hub_download(repo_id=path, filename=CONFIG, **hub)
            except EntryNotFoundError:  # the mixin would build a default VAE and load whatever weights are there
                raise UserError(
                    f"The Hub repo {clip(path)} has no config.json, so it is not a model saved with save_pretrained. "
                    "Pass a repo that train.py or save_pretrained uploaded (with config.json and model.safetensors)."
                ) from None
        config = ModelConfig.from_json(config_file, os.path.join(clip(path), CONFIG), model_kwargs)
        # The mixin's from_pretrained would build the model straight from config.json: ours checks it first, and
        # hands the checked architecture to _from_pretrained, which checks the weights before building anything.
        return cls._from_pretrained(model_id=path, **hub, map_location=map_location, strict=strict, config=config)

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
        config: ModelConfig,
    ) -> VAE:
        """model.safetensors' header (names, shapes, dtypes) against the architecture before anything is allocated,
        then the weights, which must be finite."""
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, WEIGHTS)
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
                weights = download(filename=WEIGHTS)
            except EntryNotFoundError:  # only pickled weights, or none: downloaded to tell which
                return cls._load_as_pickle(None, download(filename="pytorch_model.bin"), map_location, strict)
        source = clip(model_id)
        header = weights_header(weights, source)
        with torch.device("meta"):  # the tensor names and shapes of this architecture, without allocating it
            expected = {name: tuple(t.shape) for name, t in cls(config).state_dict().items()}
        check_weights(header, expected, strict, source)
        model = cls(config)
        try:
            with safe_open(weights, framework="pt") as f:
                state = {name: f.get_tensor(name) for name in expected if name in header}  # extras: never loaded
                metadata = f.metadata() or {}
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
        model.provenance = {key: value for key, value in metadata.items() if key in PROVENANCE}  # text, never code
        return model.to(map_location).eval()

    def trained_files(self) -> list[Path]:
        """The model card, metrics and figures of the folder this model was loaded from, while its weights are
        still exactly the ones saved there (a changed model gets a card of its own); [] when there are none."""
        folder = self.source_folder
        if folder is None or not (folder / CARD).is_file():
            return []
        saved, current = load_file(folder / WEIGHTS), self.state_dict()
        if saved.keys() != current.keys() or not all(torch.equal(saved[k], current[k].cpu()) for k in saved):
            return []
        return [folder / name for name in TRAINED_FILES if (folder / name).is_file()]

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> str | None:
        """config.json and model.safetensors, with the trained folder's card, metrics and figures when this
        model came from one unchanged (see trained_files), else a card of this model's own."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        for path in self.trained_files():
            if path.parent.resolve() == save_directory.resolve():
                continue
            if path.name == TRAIN_CONFIG:  # a copy is for sharing: without this machine's paths
                (save_directory / TRAIN_CONFIG).write_text(shareable_config(path.read_text()), encoding="utf-8")
            else:
                shutil.copyfile(path, save_directory / path.name)
        return super().save_pretrained(save_directory, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        """model.safetensors (the mixin writes config.json), its metadata saying where the weights came from: read it
        with safetensors.safe_open(path, "pt").metadata() (provenance)."""
        save_model(self, str(Path(save_directory) / WEIGHTS), metadata={"format": "pt", **self.provenance})

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
        return bare_model_card(self.config)

    @classmethod
    def _load_as_pickle(cls, model: VAE | None, model_file: str, map_location: str, strict: bool) -> VAE:
        """A Hub repo without model.safetensors may have pytorch_model.bin, as the mixin would load: refuse it."""
        raise UserError(
            f"{clip(model_file)} holds pickled PyTorch weights (pytorch_model.bin), which this project never loads: "
            "unpickling a downloaded file can run arbitrary code. Use a repo that has model.safetensors "
            "(train.py and save_pretrained write one)."
        )
