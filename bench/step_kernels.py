"""Our ELU and reconstruction term against torch's, inside a training step: the same step, interleaved.

python -m bench.step_kernels --data-dir ../shared/data                 # bf16 autocast, torch's threads
python -m bench.step_kernels --data-dir ../shared/data --precision no --threads 1

vae.model.ELU and vae.loss.softplus exist because torch's CPU kernels for nn.ELU (expm1) and for
F.binary_cross_entropy_with_logits (log1p) are not vectorised. This measures what they save where it matters: two
copies of the default net (784-512-256-32, ELU, batch 128, fused Adam, the trainer's loss and metric sums) train
on MNIST in one process, one with torch's nn.ELU and F.binary_cross_entropy_with_logits, one with ours, in blocks
of --block steps taken in turn (ABBA order), so both see the same machine. The ratio of their median block times is
the speed-up; a later torch that vectorises expm1 and log1p would show ~1.0 here, and these two could go.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.common import bench_parser, our_config, print_table, start, write_results
from vae.data import DataSettings, load_splits
from vae.imaging import as_float
from vae.loss import ELBOParts, ELBOTotals, bernoulli_nll, gaussian_kl
from vae.model import ELU, VAE


def torchs_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(dim=1)


class Trainer:
    """One model and its optimizer; `block(n)` trains n steps and returns the milliseconds per step."""

    def __init__(self, images: torch.Tensor, ours: bool, bf16: bool):
        torch.manual_seed(0)
        self.model = VAE(hidden_dims=[512, 256], latent_dim=32, activation="elu")
        if not ours:
            for layers in (self.model.encoder, self.model.decoder):
                for i, layer in enumerate(layers):
                    if isinstance(layer, ELU):
                        layers[i] = nn.ELU()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
        self.nll = bernoulli_nll if ours else torchs_nll
        self.images, self.bf16 = images, bf16

    def block(self, steps: int, batch_size: int = 128) -> float:
        order = torch.randperm(len(self.images))
        totals = ELBOTotals.zeros(torch.device("cpu"))
        began = time.perf_counter()
        for i in range(steps):
            x = as_float(self.images.index_select(0, order[i * batch_size : (i + 1) * batch_size]))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model(x)
            recon, kl = self.nll(out.logits.float(), x), gaussian_kl(out.mu.float(), out.logvar.float())
            self.optimizer.zero_grad(set_to_none=True)
            (recon + kl).mean().backward()
            self.optimizer.step()
            totals.add(ELBOParts(recon + kl, recon, kl))
        return (time.perf_counter() - began) / steps * 1e3


def main(argv: list[str] | None = None) -> dict:
    parser = bench_parser("step_kernels", __doc__)
    parser.add_argument("--precision", choices=("bf16", "no"), default="bf16", help="autocast (default: bf16)")
    parser.add_argument("--rounds", type=int, default=16, help="blocks of each (default: 16)")
    parser.add_argument("--block", type=int, default=40, help="steps per block (default: 40)")
    args = parser.parse_args(argv)
    start(args)
    images = load_splits(DataSettings.of(our_config({"data_dir": args.data_dir}))).train.images  # as the trainer's
    bf16 = args.precision == "bf16"
    trainers = {"torch's": Trainer(images, ours=False, bf16=bf16), "ours": Trainer(images, ours=True, bf16=bf16)}
    for trainer in trainers.values():
        trainer.block(10)  # warm-up
    ms: dict[str, list[float]] = {name: [] for name in trainers}
    for r in range(args.rounds):
        for name in trainers if r % 2 == 0 else reversed(trainers):
            ms[name].append(trainers[name].block(args.block))
    ratios = [a / b for a, b in zip(ms["torch's"], ms["ours"], strict=True)]
    rows = [[name, round(statistics.median(v), 3), round(min(v), 3), round(max(v), 3)] for name, v in ms.items()]
    print_table(["ELU and loss", "ms/step (median)", "min", "max"], rows)
    speedup = statistics.median(ratios)
    print(f"\nours are {speedup:.2f}x faster a step (median of {len(ratios)} paired blocks; {min(ratios):.2f}-"
          f"{max(ratios):.2f}), {args.precision}, {torch.get_num_threads()} thread(s)")  # fmt: skip
    results = {
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "net": "784-512-256-32 ELU, batch 128, fused Adam",
        "ms_per_step": {name: round(statistics.median(v), 3) for name, v in ms.items()},
        "speedup": round(speedup, 3),
        "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)],
    }
    write_results(f"step_kernels_{args.precision}", results, args.output)
    return results


if __name__ == "__main__":
    main()
