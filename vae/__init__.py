"""MNIST VAE studio: a vanilla variational autoencoder, its trainer, evaluation and figures."""

from vae.errors import UserError
from vae.model import VAE

__all__ = ["VAE", "UserError"]
