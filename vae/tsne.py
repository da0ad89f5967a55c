"""The cached t-SNE map of a model's test-set latents: computed once, saved in the model folder, reused by the app.

python -m vae.tsne --checkpoint checkpoints/vae-mnist [--samples 2000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from vae.data import ImageSet
from vae.errors import command
from vae.figures import save_figure, tsne_figure
from vae.folder import TSNE_FIGURE, TSNE_MAP, atomic_write, writing
from vae.latent import posterior_means
from vae.model import VAE


@torch.no_grad()
def compute_tsne(model: VAE, test: ImageSet, samples: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Posterior means of `samples` seeded test images and their 2-D t-SNE coordinates."""
    n = min(samples, len(test))
    index = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    images = test.images[index]  # (n, C, H, W) uint8
    latents = posterior_means(model, images).cpu()  # (n, D)
    perplexity = min(30.0, (n - 1) / 3)
    from sklearn.manifold import TSNE  # here, not at the top: its import takes ~1.3 s, which only t-SNE pays

    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(latents.numpy())
    return {
        "coords": torch.from_numpy(coords).float(),  # (n, 2)
        "labels": test.labels[index].cpu(),  # (n,)
        "latents": latents.float(),  # (n, D): lets the app place a new image among its neighbours
        "images": images.cpu(),  # (n, C, H, W) uint8: thumbnails
    }


def write_tsne(folder: str | Path, model: VAE, test: ImageSet, samples: int, seed: int = 0) -> None:
    """Compute the map and write its tensors and its figure into the model folder."""
    folder = Path(folder)
    tsne = compute_tsne(model, test, samples, seed)
    atomic_write(folder / TSNE_MAP, lambda tmp: save_file({k: v.contiguous() for k, v in tsne.items()}, tmp))
    fig = tsne_figure(tsne["coords"].numpy(), tsne["labels"].numpy(), model.class_names, tsne["images"].numpy())
    save_figure(fig, folder / TSNE_FIGURE)


@command
def main(argv: list[str] | None = None) -> None:
    from vae.refresh import checkpoint_splits, refresh_folder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="model folder written by train.py")
    parser.add_argument("--samples", type=int, default=2000, help="test images to embed")
    parser.add_argument("--data-dir", help="dataset root; default: the one the model was trained with")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.samples < 10:
        parser.error("--samples must be at least 10")
    with writing(args.checkpoint) as folder:  # its lock held, and checked writable before any work
        model = VAE.from_pretrained(folder).eval()
        test = checkpoint_splits(folder, args.data_dir).test
        # The folder changes as a whole: map and figure together (the card, which only links the figure, stays).
        refresh_folder(folder, lambda staging: write_tsne(staging, model, test, args.samples, args.seed), card=False)
    print(f"wrote {Path(args.checkpoint) / TSNE_FIGURE} and {TSNE_MAP} ({min(args.samples, len(test))} test images)")


if __name__ == "__main__":
    main()
