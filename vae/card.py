"""The model card: its Hub metadata (front matter), the links and the text of every card this project writes, and
the card file. Below vae.model (whose Hub mixin takes HUB_METADATA as its class arguments, and whose save_pretrained
writes bare_model_card) and vae.hub (which uploads the card with the folder): neither imports the other for it.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from vae.architecture import ModelConfig
from vae.config import TrainConfig
from vae.folder import (
    CARD,
    CARD_FIGURES,
    CLASS_SAMPLES,
    LATENT_GRID,
    LATENT_WALK,
    LOSS_CURVE,
    RECONSTRUCTIONS,
    SAMPLES,
    TSNE_FIGURE,
    atomic_write,
)

PAPER_URL = "https://arxiv.org/abs/1312.6114"
CODE_URL: str | None = None  # the project's public address, once it has one: linked from every model card
# The Hub metadata of every model: the mixin's class arguments (vae.model) and the model card's front matter.
HUB_METADATA = {
    "library_name": "pytorch",
    "license": "mit",
    "pipeline_tag": "unconditional-image-generation",
    "tags": ["vae", "variational-autoencoder", "image-generation", "mnist-vae-studio"],
    "paper_url": PAPER_URL,
    **({"repo_url": CODE_URL} if CODE_URL else {}),
}
MIXIN_TAGS = ["model_hub_mixin", "pytorch_model_hub_mixin"]  # what PyTorchModelHubMixin adds to a subclass's tags
HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist"}
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
IWAE_URL = "https://arxiv.org/abs/1509.00519"
# Published test NLLs on dynamically binarised MNIST (one stochastic layer, MLPs, K = 5000), for the card of a model
# trained on that protocol; and one on static binarisation, a different protocol, listed for its size.
LITERATURE = [
    ("VAE, Burda et al. 2015 (2 x 200 tanh, 50-d latent, 3,280 epochs)", 86.76, "IWAE paper, table 1"),
    ("VAE trained with k = 50 samples, same paper", 86.35, "IWAE paper, table 1"),
    ("IWAE, k = 50, same paper", 84.78, "IWAE paper, table 1"),
    ("VAE on *static* binarisation, 200 importance samples (another protocol)", 89.78, "pythae benchmark"),
]
CAPTIONS = {
    SAMPLES: "Random samples, z ~ N(0, I)",
    CLASS_SAMPLES: "Samples of each class, drawn from its region of latent space (one row per class)",
    RECONSTRUCTIONS: "Test images (top) and their reconstructions (bottom)",
    LATENT_WALK: "Walks between class means in latent space (first row: 3 → 7)",
    LATENT_GRID: "The 2-D latent space decoded on a grid",
    TSNE_FIGURE: "t-SNE of test-set latents",
    LOSS_CURVE: "Training curves",
}
FIGURES = [(name, CAPTIONS[name]) for name in CARD_FIGURES]  # the card's figures, in vae.folder's order
# The code sample's `VAE.from_pretrained("...")`: the model's own id, replaced by the repo id when it is pushed.
FROM_PRETRAINED = re.compile(r'(VAE\.from_pretrained\(")([^"\n]*)("\))')


def metrics_table(metrics: dict) -> str:
    rows = [
        ("test negative ELBO (nats / image)", metrics.get("test_loss")),
        ("  reconstruction", metrics.get("test_recon")),
        ("  KL", metrics.get("test_kl")),
        (f"test -log p(x), IW bound with k={metrics.get('iw_samples')}", metrics.get("test_iw_nll")),
    ]
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.2f} |" for name, value in rows if isinstance(value, (int, float))]
    active = metrics.get("test_active_dims")
    if isinstance(active, int) and not isinstance(active, bool):  # vae.posterior's rule, as the app and evaluate count
        lines.append(
            f"| active latent dimensions (variance of the posterior mean over the test set > 0.01) | {active} |"
        )
    return "\n".join(lines)


def eval_results(dataset: str, dataset_id: str, metrics: dict) -> list[EvalResult]:
    """The test metrics as the Hub's model-index entries (shown on the model page)."""
    common = {
        "task_type": "unconditional-image-generation",
        "task_name": "Unconditional image generation",
        "dataset_type": dataset_id,
        "dataset_name": DATASET_NAMES.get(dataset, dataset),
        "dataset_split": "test",
    }
    results = []
    if isinstance(metrics.get("test_loss"), (int, float)):
        results.append(
            EvalResult(
                **common,
                metric_type="negative_elbo",
                metric_name="Test negative ELBO (nats per image)",
                metric_value=round(metrics["test_loss"], 2),
            )
        )
    if isinstance(metrics.get("test_iw_nll"), (int, float)):
        k = metrics.get("iw_samples")
        results.append(
            EvalResult(
                **common,
                metric_type="nll",
                metric_name=f"Test NLL, importance-weighted bound with K={k} (nats per image)",
                metric_value=round(metrics["test_iw_nll"], 2),
                metric_args={"importance_samples": k},
            )
        )
    return results


def card_data(dataset: str | None, name: str, metrics: dict) -> ModelCardData:
    """Front matter: the Hub metadata of every model (HUB_METADATA, as the mixin of vae.model adds it to its class),
    the dataset and the results."""
    fields = {k: v for k, v in HUB_METADATA.items() if k not in ("paper_url", "repo_url")}  # the card's links say them
    data = ModelCardData(**fields | {"tags": sorted({*HUB_METADATA["tags"], *MIXIN_TAGS})})
    dataset_id = HUB_DATASETS.get(dataset)
    if dataset_id:
        data.datasets = [dataset_id]
    results = eval_results(dataset, dataset_id or dataset, metrics) if dataset else []
    if results:
        data.model_name, data.eval_results = name, results
    return data


def architecture_table(config: ModelConfig) -> str:
    shape, widths = config.image_shape, config.hidden_dims
    return f"""Images are {"x".join(str(s) for s in shape)} (channels x height x width), pixels read as Bernoulli probabilities.

| part | this model |
| --- | --- |
| encoder | {config.num_pixels} → {" → ".join(map(str, widths))} → 2 x {config.latent_dim} (mean, log-variance) |
| decoder | {config.latent_dim} → {" → ".join(map(str, reversed(widths)))} → pixels (logits) |
| hidden activation | {config.activation} |
| latent dimension | {config.latent_dim} |
| classes | {", ".join(config.class_names)} |"""


def usage(model_id: str, latent_dim: int) -> str:
    return f"""## Use

```python
from vae import VAE

model = VAE.from_pretrained("{model_id}")
images = model.sample(16, seed=0)        # (16, C, H, W) in [0, 1]
mu, logvar = model.encode(images)        # posterior of each image

# Without PyTorch: export the encoder and decoder once (pip install -r requirements-onnx.txt), run them anywhere.
from vae.onnx import export_onnx
import numpy as np, onnxruntime as ort

export_onnx(model, "onnx")               # onnx/encoder.onnx: images -> mean, logvar; onnx/decoder.onnx: z -> pixels
decoder = ort.InferenceSession("onnx/decoder.onnx")
z = np.random.default_rng(0).standard_normal((16, {latent_dim})).astype(np.float32)  # z ~ N(0, I): new images
(pixels,) = decoder.run(None, {{"z": z}})  # (16, C, H, W) in [0, 1], as model.decode gives
```"""


def local_id(folder: str | Path) -> str:
    """How a card names a model folder it was written for: the path as given when it is relative (as the folder's
    user calls it), else only the folder's name: a card names no place on the machine that wrote it."""
    path = Path(folder)
    return path.as_posix() if not path.is_absolute() else path.name


def rewritten_card_id(folder: Path, config: TrainConfig) -> str:
    """The id the code sample of FOLDER's card loads, for a command that writes the card again: the one the card
    has, else (a card written before it had one) the run's Hub repo or the folder as given (local_id)."""
    card = folder / CARD
    found = FROM_PRETRAINED.search(card.read_text(encoding="utf-8", errors="replace")) if card.is_file() else None
    if found and found[2] and found[2] != "path/or/user-repo":  # the placeholder of cards written before
        return found[2]
    return config.hub_model_id or local_id(folder)


def with_model_id(card: str, model_id: str) -> str:
    """The card with its code sample loading `model_id` (the repo id of a pushed model)."""
    return FROM_PRETRAINED.sub(lambda m: f"{m[1]}{model_id}{m[3]}", card)


def compiled(metrics: dict) -> str:
    """How the card says that the step was compiled (train.py's --compile), and how long that took of the training."""
    seconds = metrics.get("compile_seconds")
    if not metrics.get("compiled_step") or not isinstance(seconds, (int, float)):
        return ""
    return f", the step compiled by torch.compile in {seconds:.0f} s"


def duration(seconds: float) -> str:
    """A run's time as people read it: "45 s", "33 min 35 s", "2 h 5 min" (never a bare 2015 s, read as a year)."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def warmup(epochs: float) -> str:
    return f"KL warm-up {short(epochs)} epochs" if epochs > 0 else "no KL warm-up"


def decay(weight_decay: float) -> str:
    return f", weight decay {weight_decay:g}" if weight_decay > 0 else ""


def short(number: float) -> str:
    """A setting such as an epoch count to one decimal, with no trailing zeros: 10, 1.7, 0.5."""
    return f"{round(number, 1):g}"


def links(metrics: dict) -> str:
    return f"""## Links

- Code: {code_link(metrics)}
- Paper: Kingma & Welling, *Auto-Encoding Variational Bayes*, {PAPER_URL}
- The importance-weighted bound: Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, {IWAE_URL}"""


def model_card(
    folder: Path, config: TrainConfig, architecture: ModelConfig, metrics: dict, model_id: str | None = None
) -> ModelCard:
    """The Hub model card: front matter, the architecture, the training settings, test metrics, links, figures. Its
    code sample loads `model_id`: by default the run's Hub repo, else its output folder (see local_id)."""
    model_id = model_id or config.hub_model_id or local_id(config.output_dir)
    figures = "\n\n".join(
        f"**{caption}**\n\n![{caption}]({name})" for name, caption in FIGURES if (folder / name).exists()
    )
    data = card_data(config.dataset, f"vae-{config.dataset}", metrics)
    body = f"""
# A variational autoencoder for {DATASET_NAMES.get(config.dataset, config.dataset)}

A vanilla VAE ([Kingma & Welling, 2014]({PAPER_URL})) made of `nn.Linear` layers, trained with
MNIST VAE studio's `train.py`. {architecture_table(architecture)}

## Test metrics

On {metrics.get("test_images")} test images, one posterior sample per image for the ELBO; the importance-weighted
bound of [Burda et al., 2015]({IWAE_URL}) estimates -log p(x):

{metrics_table(metrics)}

Trained for {config.epochs} epochs, batch size {config.batch_size} per process on {metrics.get("num_processes", 1)} process(es),
Adam lr {config.lr}{decay(config.weight_decay)} with a {config.lr_schedule} schedule, {warmup(config.kl_warmup_epochs)}, seed {config.seed},
on {metrics.get("device", "?")} (mixed precision {config.mixed_precision}{compiled(metrics)}) in {duration(metrics.get("train_wall_seconds", 0))}.
The best epoch by validation loss ({metrics.get("best_epoch")}) is the one saved here. All settings: `train_config.yaml`;
per-epoch figures: `metrics.jsonl`.{protocol(config, metrics)}

{usage(model_id, architecture.latent_dim)}

{links(metrics)}

## Figures

{figures}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def protocol(config: TrainConfig, metrics: dict) -> str:
    """What the card says of a run that is not the default grayscale ELBO run (nothing for one that is)."""
    notes = []
    if config.binarize == "dynamic":
        notes.append(
            "The data is **dynamically binarised**: each training image was drawn again as binary pixels ~ "
            "Bernoulli(intensity) every time it was seen, and the validation and test images were binarised once, "
            f"with seed {config.binarize_seed}. The test figures are therefore log-likelihoods of binary images in "
            "nats, the protocol of the VAE and IWAE literature (Burda et al., 2015)."
        )
    if config.objective == "iwae":
        notes.append(
            f"The training loss was the importance-weighted bound with {config.train_samples} samples per image "
            "(IWAE, Burda et al., 2015) instead of the ELBO."
        )
    if config.binarize == "dynamic" and isinstance(metrics.get("test_iw_nll"), int | float):
        rows = [f"| {name} | {nll:.2f} | {source} |" for name, nll, source in LITERATURE]
        ours = f"**{metrics['test_iw_nll']:.2f}** (K = {metrics.get('iw_samples')})"
        objective = f"IWAE, k = {config.train_samples}" if config.objective == "iwae" else "ELBO"
        rows.append(f"| this model ({objective}, {config.epochs} epochs) | {ours} | here |")
        notes.append(
            "### Compared with the literature\n\nTest -log p(x) in nats on dynamically binarised MNIST, estimated with "
            "K importance samples (the papers use K = 5000):\n\n| model | test NLL | source |\n| --- | --- | --- |\n"
            + "\n".join(rows)
        )
    return "".join(f"\n\n{note}" for note in notes)


def bare_model_card(architecture: ModelConfig) -> ModelCard:
    """The card of a model saved without a training run behind it (VAE.save_pretrained): no metrics or figures."""
    body = f"""
# A variational autoencoder

A vanilla VAE ([Kingma & Welling, 2014]({PAPER_URL})) made of `nn.Linear` layers. {architecture_table(architecture)}

No test metrics were recorded with these weights: `python -m vae.evaluate --checkpoint DIR` measures them.

{usage("DIR", architecture.latent_dim)}

{links({})}
"""
    return ModelCard(f"---\n{card_data(None, '', {}).to_yaml()}\n---\n{body}")


def code_link(metrics: dict) -> str:
    """Where the code that trained the model is: the project's address once it has one, and the commit."""
    name = f"[MNIST VAE studio]({CODE_URL})" if CODE_URL else "MNIST VAE studio"
    commit = f" at commit `{metrics['code_commit']}`" if metrics.get("code_commit") else ""
    return f"{name}{commit}: `train.py` wrote this folder, `app.py` shows it as a Gradio app"


def write_model_card(
    folder: Path, config: TrainConfig, architecture: ModelConfig, metrics: dict, model_id: str | None = None
) -> None:
    """README.md: the model card, written atomically."""
    card = model_card(Path(folder), config, architecture, metrics, model_id)
    atomic_write(Path(folder) / CARD, lambda tmp: Path(tmp).write_text(str(card), encoding="utf-8"))
