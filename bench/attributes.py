"""Attribute directions (issue 37): does moving along "thickness" and "slant" do what it says, on the decoded digits?

python -m bench.attributes --data-dir data [--checkpoint checkpoints/vae-mnist] [--fit both|within|across]

For each way of fitting the directions (vae.attributes.fit_directions: within each class, or across classes; on the
training images' posterior means and their measured attributes) and each class: start at the class mean, move along
each direction by -2, -1, 0, +1, +2 standard deviations, decode, and measure both attributes on the decoded digits
with the same measures. Per class:
- monotonic: the attribute moved along grows at every step (the target: 8 of 10 classes or more);
- cross-talk: how much the other attribute changes from -2 to +2, as a share of its own change there, each in
  standard deviations of the attribute over the training digits (the target: under 1/3);
- class kept: the class an independent classifier (bench.class_samples' MLP) reads at -1 and +1 sd is the class
  itself (the target: it changes for at most 1 class of 10).

Prints the tables and writes bench/results/attributes.json.
"""

from __future__ import annotations

import os
import time

import torch

from bench.class_samples import digits_and_judge
from bench.common import ROOT, bench_parser, print_table, start, write_results
from vae.attributes import ATTRIBUTES, fit_directions, measure
from vae.imaging import as_float
from vae.latent import posterior_means
from vae.model import VAE

AMOUNTS = (-2.0, -1.0, 0.0, 1.0, 2.0)  # standard deviations along a direction


@torch.no_grad()
def judge(model: VAE, class_means: torch.Tensor, directions, spreads, scale, classifier) -> dict:
    """Every class × attribute: the decoded digits' attributes along the direction, and the classifier's reading."""
    per_class, amounts = [], torch.tensor(AMOUNTS)
    for c, name in enumerate(model.class_names):
        record = {"class": name}
        for a, attribute in enumerate(ATTRIBUTES):
            z = class_means[c] + amounts[:, None] * spreads[a] * directions[a]  # (5, D)
            images = model.decode(z)  # (5, 1, 28, 28)
            values = measure(images) / scale  # (5, A), in sd of the training digits' attributes
            own, other = values[:, a], values[:, 1 - a]
            change = own[-1] - own[0]
            read = classifier(images).argmax(1).tolist()
            record[attribute] = {
                "values": [round(v, 4) for v in (values[:, a] * scale[a]).tolist()],
                "monotonic": bool((own.diff() > 0).all()),
                "change_sd": round(float(change), 3),
                "other_change_ratio": round(float((other[-1] - other[0]).abs() / change.abs().clamp_min(1e-6)), 3),
                "class_read_at_-1_+1": [model.class_names[read[1]], model.class_names[read[3]]],
                "class_kept": read[1] == c and read[3] == c,
            }
        per_class.append(record)
    summary = {
        attribute: {
            "monotonic_classes": sum(r[attribute]["monotonic"] for r in per_class),
            "median_other_change_ratio": float(
                torch.tensor([r[attribute]["other_change_ratio"] for r in per_class]).median()
            ),
            "classes_changed_at_1sd": sum(not r[attribute]["class_kept"] for r in per_class),
        }
        for attribute in ATTRIBUTES
    }
    return {"per_class": per_class, "summary": summary}


def main(argv: list[str] | None = None) -> dict:
    parser = bench_parser("attributes", __doc__)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "vae-mnist"))
    parser.add_argument("--fit", choices=("both", "within", "across"), default="both")
    args = parser.parse_args(argv)
    start(args)
    began = time.perf_counter()
    splits, classifier, accuracy, model, steering = digits_and_judge(args.checkpoint, args.data_dir)
    train = splits.train
    latents = posterior_means(model, train.images)  # (N, D)
    values = measure(as_float(train.images))  # (N, A)
    scale = values.std(dim=0)  # (A,): the unit the changes are measured in
    results = {"checkpoint": os.path.relpath(args.checkpoint, ROOT), "amounts_sd": list(AMOUNTS), "fits": {}}
    for fit in ("within", "across") if args.fit == "both" else (args.fit,):
        directions, spreads = fit_directions(latents, train.labels, values, within_class=fit == "within")
        found = judge(model, steering.class_means, directions, spreads, scale, classifier)
        results["fits"][fit] = found
        rows = [
            [
                r["class"],
                *[
                    f"{'yes' if r[a]['monotonic'] else 'NO'} {r[a]['change_sd']:+.2f} sd, other {r[a]['other_change_ratio']:.2f}, "
                    f"reads {'/'.join(r[a]['class_read_at_-1_+1'])}"
                    for a in ATTRIBUTES
                ],
            ]
            for r in found["per_class"]
        ]
        print(f"\nfitted {fit} classes: from each class mean, -2 to +2 sd along each direction")
        print_table(["class", *ATTRIBUTES], rows)
        print(found["summary"])
    results["classifier_test_accuracy"] = round(accuracy, 4)
    results["seconds"] = round(time.perf_counter() - began, 1)
    write_results("attributes", results, args.output)
    return results


if __name__ == "__main__":
    main()
