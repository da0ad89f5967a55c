"""MNIST VAE studio: a vanilla variational autoencoder, its trainer, evaluation and figures."""

from vae.errors import UserError

__all__ = ["VAE", "ModelConfig", "UserError"]


def __getattr__(name: str):
    # `from vae import VAE` imports torch; `vae.config` (train.py --help, config errors) should not wait for it.
    if name == "VAE":
        from vae.model import VAE

        return VAE
    if name == "ModelConfig":
        from vae.architecture import ModelConfig

        return ModelConfig
    raise AttributeError(f"module 'vae' has no attribute {name!r}")
