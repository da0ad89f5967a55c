"""ONNX export: the encoder (images → posterior mean and log-variance) and the decoder (latents → pixels in [0, 1], the
values of VAE.decode) as two graphs that onnxruntime runs without PyTorch.

python -m vae.onnx --checkpoint checkpoints/vae-mnist --output-dir onnx/vae-mnist

Nothing samples inside a graph, where exporters stumble on random ops: draw the noise yourself and decode
z = mean + exp(logvar / 2) * noise, or z ~ N(0, I) for a new digit. The batch size is a dynamic axis of both. Needs
the onnx extra (requirements-onnx.txt: onnx, onnxscript; onnxruntime to run the graphs).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
from torch import nn

from vae.errors import UserError, command
from vae.folder import atomic_write
from vae.model import VAE

ENCODER, DECODER = "encoder.onnx", "decoder.onnx"
EXPORT_PACKAGES = ("onnx", "onnxscript")  # torch.onnx's exporter writes the graphs with these
EXTRA = "pip install -r requirements-onnx.txt (or pip install 'mnist-vae-studio[onnx]')"


class Encoder(nn.Module):
    def __init__(self, model: VAE):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(image)  # (N, C, H, W) in [0, 1] → mean, log-variance (N, D) each


class Decoder(nn.Module):
    def __init__(self, model: VAE):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)  # (N, D) → (N, C, H, W) in [0, 1]


def missing_packages() -> list[str]:
    return [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]


def export_onnx(model: VAE, output_dir: str | Path) -> list[Path]:
    """encoder.onnx and decoder.onnx of `model` in `output_dir` (each written whole, then renamed into place)."""
    if missing := missing_packages():
        raise UserError(f"ONNX export needs {', '.join(missing)}, which this Python lacks: {EXTRA}.")
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".vae-onnx-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(
            f"Cannot write the ONNX files into {out} ({err.strerror or err}): choose a folder you can write to with "
            "--output-dir."
        ) from None
    model = model.eval().float()
    batch = torch.export.Dim("batch")
    graphs = [
        (ENCODER, Encoder(model).eval(), torch.rand(2, *model.image_shape), ["image"], ["mean", "logvar"]),
        (DECODER, Decoder(model).eval(), torch.zeros(2, model.config.latent_dim), ["z"], ["pixels"]),
    ]
    written = []
    for name, module, example, inputs, outputs in graphs:
        with torch.no_grad():
            program = torch.onnx.export(
                module,
                (example,),
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
            )
        atomic_write(out / name, lambda tmp, program=program: program.save(tmp))
        written.append(out / name)
    return written


@command
def main(argv: list[str] | None = None) -> None:
    from vae.assets import checkpoint_folder, read_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="model folder written by train.py, or a Hub repo id")
    parser.add_argument("--output-dir", required=True, help="where encoder.onnx and decoder.onnx are written")
    args = parser.parse_args(argv)
    if missing := missing_packages():  # before the model is read: the quickest answer
        raise UserError(f"ONNX export needs {', '.join(missing)}, which this Python lacks: {EXTRA}.")
    model = read_model(checkpoint_folder(args.checkpoint), args.checkpoint)
    for path in export_onnx(model, args.output_dir):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
