"""The decoder as the page runs it (web/decoder.js): the selected model's decoder weights in one small file that the
app serves, and the latents the page decodes itself, so that the Sliders' digit, the 2-D model's plane under the
pointer and the Latent walk's scrubber move at screen rate with no request to the server.

- The weights: every nn.Linear of the decoder in order, as float16 safetensors (1.1 MB for the default model, half of
  float32; the digits they decode differ from float32's by 0.01 grey levels on average, 1 at most: tests/
  test_page_decoder.py), in the app's folder of Gradio's cache under a name made of their hash (vae.output_files):
  another model or a retrain is another URL, and the browser caches each.
- What the page decodes is always a latent the server gave it (a slider's start point, a walk's frames) or the map's
  own point under the pointer, moved as the server moves it (vae.steering.slide_latent, attribute_latent), so that
  both draw the same digit. A model whose decoder the page cannot run is drawn by the server alone, and the page says why.
"""

from __future__ import annotations

import json
import urllib.parse

import torch
from safetensors.torch import save
from torch import nn

from vae.assets import Assets
from vae.attributes import ATTRIBUTES
from vae.model import ELU
from vae.output_files import FILE_ROUTE, cache_files
from vae.steering import Steering, no_attributes

# The activations web/decoder.js computes, by the module after each hidden layer. GELU needs erf, which JavaScript lacks.
PAGE_ACTIVATIONS = {ELU: "elu", nn.ELU: "elu", nn.ReLU: "relu", nn.SiLU: "silu", nn.Tanh: "tanh"}
CHANNELS = (1, 3)  # grey or RGB pixels


def page_layers(model: nn.Module) -> tuple[list[nn.Linear], str | None] | str:
    """The decoder's linear layers in order and the activation between them, or why the page cannot run it."""
    layers, activations = [], set()
    for module in model.decoder:
        if isinstance(module, nn.Linear):
            layers.append(module)
        elif type(module) in PAGE_ACTIVATIONS:
            activations.add(PAGE_ACTIVATIONS[type(module)])
        elif not isinstance(module, nn.Dropout):  # dropout decodes nothing at inference
            return f"its decoder has a {type(module).__name__} layer, which the page cannot compute"
    if len(activations) > 1:
        return "its decoder mixes activations"
    return layers, next(iter(activations), None)


def decoder_data(assets: Assets) -> str:
    """JSON for the page's #decoder-data: the checkpoint's name, the URL of its decoder weights and how to run them,
    and the sliders' directions in latent space with their spreads (none without the steering statistics); or, for a
    decoder the page cannot run, the name and why not."""
    model = assets.model
    found = page_layers(model)
    if isinstance(found, str) or model.image_shape[0] not in CHANNELS:
        why = found if isinstance(found, str) else f"its images have {model.image_shape[0]} channels"
        return json.dumps({"name": assets.name, "unsupported": f"This model is drawn by the server: {why}."})
    layers, activation = found
    tensors = {}
    for i, layer in enumerate(layers):
        tensors[f"layers.{i}.weight"] = layer.weight.detach().to("cpu", torch.float16).contiguous()  # (out, in)
        tensors[f"layers.{i}.bias"] = layer.bias.detach().to("cpu", torch.float16).contiguous()  # (out,)
    path = cache_files({"decoder.safetensors": save(tensors)}, pin=assets.name)[0]
    steering = assets.steering
    return json.dumps(
        {
            "name": assets.name,
            "weights": FILE_ROUTE + urllib.parse.quote(path),
            "layers": len(layers),
            "activation": activation,
            "image_shape": list(model.image_shape),
            "directions": None if steering is None else steering.directions.float().tolist(),  # (P, D)
            "spreads": None if steering is None else steering.spreads.float().tolist(),  # (P,)
            "attributes": attribute_sliders(steering),
        },
        separators=(",", ":"),
    )


def attribute_sliders(steering: Steering | None) -> list[dict]:
    """The Sliders tab's attribute sliders (#slide-thickness, #slide-slant), each with its direction and spread."""
    if no_attributes(steering) is not None:
        return []
    return [
        {"slider": f"slide-{name}", "direction": direction.tolist(), "spread": float(spread)}
        for name, direction, spread in zip(
            ATTRIBUTES, steering.attribute_directions.float(), steering.attribute_spreads.float(), strict=True
        )
    ]


def latents_data(assets: Assets, latents: torch.Tensor) -> str:
    """JSON for the page: latents (N, D) of the checkpoint, which the page decodes itself (a slider's start point,
    a walk's frames)."""
    return json.dumps({"name": assets.name, "latents": latents.float().cpu().tolist()}, separators=(",", ":"))
