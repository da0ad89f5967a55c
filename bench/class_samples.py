"""Samples of a chosen class (issue 12), judged by an independent digit classifier: for each class, the share of
its samples the classifier calls that class, and their diversity against real test digits of the class.

python -m bench.class_samples --data-dir data [--checkpoint checkpoints/vae-mnist] [--samples 500]

The classifier (an MLP, 784-512-10, 5 seeded epochs on all 60,000 training digits) is trained here and never
shipped; it must reach 97% on the test set to judge anything. Diversity is the mean pairwise L2 distance between
images in [0, 1] (decoder means for samples, test images / 255 for real digits): a region collapsed onto its mean
would score near 0. The targets: at least 90% of each class's samples are that class, and their diversity is at
least 0.8 of the real digits'.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch
from torch import nn

from bench.common import ROOT, bench_parser, print_table, start, write_results
from vae.classes import sample_class
from vae.config import saved_config
from vae.data import DataSettings, ImageSet, load_splits
from vae.folder import TRAIN_CONFIG
from vae.imaging import as_float
from vae.model import VAE
from vae.steering import read_steering

TARGET_ACCURACY, TARGET_DIVERSITY, CLASSIFIER_TARGET = 0.90, 0.80, 0.97


def classifier_net() -> nn.Module:
    """The judge's architecture: an MLP from 28x28 pixels to 10 class scores."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))


def train_classifier(
    train: ImageSet, test: ImageSet, epochs: int = 5, batch_size: int = 128
) -> tuple[nn.Module, float]:
    """A small MLP trained on every training image (seeded); returns it and its test accuracy."""
    torch.manual_seed(0)
    net = classifier_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps = epochs * -(-len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    for _ in range(epochs):
        for index in torch.randperm(len(train)).split(batch_size):
            loss = nn.functional.cross_entropy(net(as_float(train.images[index])), train.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(as_float(test.images)).argmax(1) == test.labels).float().mean().item()
    return net, accuracy


def digits_and_judge(checkpoint: str, data_dir: str):
    """The checkpoint's MNIST splits, the judge trained on all 60,000 training images (refused below
    CLASSIFIER_TARGET), its test accuracy, and the model with its steering → (splits, classifier, accuracy, model,
    steering). bench.attributes judges with it too."""
    began = time.perf_counter()
    settings = dataclasses.replace(DataSettings.of(saved_config(Path(checkpoint) / TRAIN_CONFIG)), data_dir=data_dir)
    splits = load_splits(settings)
    train = ImageSet(
        torch.cat([splits.train.images, splits.val.images]),
        torch.cat([splits.train.labels, splits.val.labels]),
        splits.train.class_names,
    )
    classifier, accuracy = train_classifier(train, splits.test)
    print(f"classifier: {accuracy:.2%} on {len(splits.test)} test digits ({time.perf_counter() - began:.0f} s)")
    if accuracy < CLASSIFIER_TARGET:
        raise SystemExit(f"the classifier reaches only {accuracy:.2%}: too weak to judge the samples")
    model = VAE.from_pretrained(checkpoint).eval()
    steering, problem = read_steering(checkpoint, model)
    if steering is None:
        raise SystemExit(problem)
    return splits, classifier, accuracy, model, steering


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean L2 distance over all pairs of distinct images (N, C, H, W) in [0, 1]."""
    flat = images.flatten(1).double()
    n = len(flat)
    return (torch.cdist(flat, flat).sum() / (n * (n - 1))).item()


def main(argv: list[str] | None = None) -> dict:
    parser = bench_parser("class_samples", __doc__)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "vae-mnist"))
    parser.add_argument("--samples", type=int, default=500, help="samples per class")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start(args)
    began = time.perf_counter()
    splits, classifier, classifier_accuracy, model, steering = digits_and_judge(args.checkpoint, args.data_dir)
    rows, per_class = [], []
    with torch.no_grad():
        for c, name in enumerate(model.class_names):
            images = sample_class(model, steering, c, args.samples, args.seed, args.temperature)  # (n, 1, 28, 28)
            accuracy = (classifier(images).argmax(1) == c).float().mean().item()
            real = as_float(splits.test.images[splits.test.labels == c][: args.samples])
            ratio = mean_pairwise_distance(images) / mean_pairwise_distance(real)
            ok = accuracy >= TARGET_ACCURACY and ratio >= TARGET_DIVERSITY
            record = {
                "class": name,
                "accuracy": round(accuracy, 4),
                "sample_distance": round(mean_pairwise_distance(images), 3),
                "real_distance": round(mean_pairwise_distance(real), 3),
                "diversity_ratio": round(ratio, 3),
                "meets_targets": ok,
            }
            per_class.append(record)
            rows.append(
                [name, accuracy, record["sample_distance"], record["real_distance"], ratio, "yes" if ok else "NO"]
            )
    print(f"\n{args.samples} samples per class from {args.checkpoint} at temperature {args.temperature}:")
    print_table(["class", "accuracy", "sample dist", "real dist", "ratio", "targets met"], rows)
    results = {
        "checkpoint": os.path.relpath(args.checkpoint, ROOT),  # as typed from the repository folder
        "samples_per_class": args.samples,
        "temperature": args.temperature,
        "seed": args.seed,
        "classifier": "MLP 784-512-10, 5 epochs, seed 0",
        "classifier_test_accuracy": round(classifier_accuracy, 4),
        "targets": {"accuracy": TARGET_ACCURACY, "diversity_ratio": TARGET_DIVERSITY},
        "all_met": all(r["meets_targets"] for r in per_class),
        "per_class": per_class,
        "seconds": round(time.perf_counter() - began, 1),
    }
    write_results("class_samples", results, args.output)
    return results


if __name__ == "__main__":
    main()
