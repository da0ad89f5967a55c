"""The speed and quality baseline: the VAE of pytorch/examples `vae/main.py`, written the way it is there.

A `DataLoader` over `torchvision.datasets.MNIST(..., transform=transforms.ToTensor())` (one PIL image → tensor
per sample, batch 128, shuffled), a 784-400-20 MLP (fc1, fc21, fc22, fc3, fc4; ReLU, sigmoid), the summed
binary cross-entropy plus the closed-form KL, Adam at 1e-3, and `loss.item()` after every step. Only the
printing is left out.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class ReferenceVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    """Reconstruction + KL divergence losses summed over all elements and batch (Kingma & Welling 2014, App. B)."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def make_loaders(data_dir: str, batch_size: int = 128) -> tuple[DataLoader, DataLoader]:
    """The example's loaders: all 60,000 training images shuffled, the 10,000 test images in order."""
    train = datasets.MNIST(data_dir, train=True, download=True, transform=transforms.ToTensor())
    test = datasets.MNIST(data_dir, train=False, transform=transforms.ToTensor())
    return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(test, batch_size=batch_size)


def make_model(seed: int = 1) -> tuple[ReferenceVAE, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = ReferenceVAE()
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def train_epoch(model: ReferenceVAE, optimizer: torch.optim.Optimizer, loader: DataLoader) -> dict:
    """One epoch of the example's `train`; times the whole loop (wall and CPU seconds), data loading included."""
    model.train()
    train_loss, images = 0.0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for data, _ in loader:
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        images += len(data)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"images": images, "seconds": seconds, "cpu_seconds": cpu_seconds, "train_loss": train_loss / images}


@torch.no_grad()
def test_loss(model: ReferenceVAE, loader: DataLoader) -> float:
    """The example's `test`: mean negative ELBO (one posterior sample per image) over the test set, in nats."""
    model.eval()
    total, images = 0.0, 0
    for data, _ in loader:
        recon_batch, mu, logvar = model(data)
        total += loss_function(recon_batch, data, mu, logvar).item()
        images += len(data)
    return total / images
