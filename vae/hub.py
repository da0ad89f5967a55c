"""The model card and the upload of a model folder to the Hugging Face Hub.

Retry a failed upload with:
    python -m vae.hub --folder outputs/vae-mnist --hub-model-id user/vae-mnist [--private]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from vae.architecture import ModelConfig
from vae.config import TrainConfig, shareable_config
from vae.errors import UserError, command, first_line
from vae.folder import (
    CARD,
    CARD_FIGURES,
    CLASS_SAMPLES,
    EVAL,
    LATENT_GRID,
    LATENT_WALK,
    LOSS_CURVE,
    RECONSTRUCTIONS,
    SAMPLES,
    STATE_DIR,
    TRAIN_CONFIG,
    TSNE_FIGURE,
    WEIGHTS,
    atomic_write,
)
from vae.model import CODE_URL, PAPER_URL, VAE

IGNORED = [f"{STATE_DIR}/*", f"{STATE_DIR}/**", ".*", "**/.*", EVAL]  # never uploaded
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
# What a Hub call can raise: HfHubHTTPError for an answer the Hub refused, and the errors of the HTTP client
# huggingface_hub uses (HfHubHTTPError's base, whose subclasses include connection errors), and OSError (offline
# mode, and connection errors of older releases).
HUB_ERRORS = (HfHubHTTPError, *HfHubHTTPError.__bases__, OSError)


def check_repo_id(repo_id: str | None) -> str:
    """A repo id the Hub would take, in the form user/name, or a UserError (checked here, without the network)."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise UserError(f"--hub-model-id must look like user/name, got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UserError(f"--hub-model-id {repo_id!r} is not a repo id the Hub accepts: {err}") from None
    return repo_id


def check_hub_access(repo_id: str | None, api: HfApi | None = None) -> str | None:
    """Fail early, before training, when an upload could not happen: a bad repo id, no token, offline mode,
    a token the Hub rejects or that cannot write to the repo's namespace, an unreachable Hub. Returns the name of the
    account the token belongs to."""
    check_repo_id(repo_id)
    if not getattr(api, "token", None) and get_token() is None:  # the app passes a visitor's login in `api`
        raise UserError(
            "--push-to-hub needs a Hugging Face token and none was found. Run `hf auth login` or set the "
            "HF_TOKEN environment variable to a token with write access, then run the same command again."
        )
    if constants.HF_HUB_OFFLINE:
        raise UserError(
            "--push-to-hub cannot upload with HF_HUB_OFFLINE=1 set: unset it to push at the end of training, or "
            "train without --push-to-hub and upload later with `python -m vae.hub --folder OUTPUT_DIR "
            f"--hub-model-id {repo_id}`."
        )
    api = api or HfApi()
    namespace = repo_id.split("/")[0]
    who = {}
    try:
        who = api.whoami()
        role = who.get("auth", {}).get("accessToken", {}).get("role")
        if role == "read":
            raise UserError(
                f"The Hugging Face token of {who.get('name')} is read-only, so --push-to-hub could not upload to "
                f"{repo_id}. Create a token with write access at https://huggingface.co/settings/tokens and log in "
                "with it (`hf auth login --force` or HF_TOKEN)."
            )
        accounts = {who.get("name"), *(org.get("name") for org in who.get("orgs", []))}
        if namespace not in accounts:
            raise UserError(
                f"The Hugging Face token belongs to {who.get('name')}, who cannot create repos under {namespace!r} "
                f"(their accounts: {', '.join(sorted(a for a in accounts if a))}). Use --hub-model-id "
                f"{who.get('name')}/{repo_id.split('/')[1]}, or log in as a member of {namespace}."
            )
        api.auth_check(repo_id, write=True)  # fine-grained tokens: write access to this very repo
    except RepositoryNotFoundError:
        pass  # not created yet: the upload creates it in a namespace the token belongs to
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        problem = "rejected the token" if status == 401 else f"refused write access to {repo_id} (HTTP {status})"
        raise UserError(
            f"The Hugging Face Hub {problem}, so --push-to-hub could not upload: {first_line(err)}. Log in with a "
            "token that can write there (`hf auth login --force` or HF_TOKEN), then run the same command again."
        ) from None
    except HUB_ERRORS as err:
        raise UserError(
            f"Could not reach the Hugging Face Hub at {constants.ENDPOINT} to check the token for --push-to-hub "
            f"({type(err).__name__}: {first_line(err)}). Check the network (or HF_ENDPOINT), or train without "
            "--push-to-hub and upload the folder later with `python -m vae.hub`."
        ) from None
    return who.get("name")


def on_space() -> bool:
    """Whether this process runs on a Hugging Face Space (the Spaces runtime sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def app_push_token(visitor_token: str | None, machine_token: bool) -> str:
    """The token a push from the app uses, never None (HfApi(token=None) falls back to the machine's token): the
    visitor's own login (OAuth) when they signed in; else, outside a Space and only when the app's owner turned it on
    (app.py --push-with-machine-token), the machine's token; else a UserError that says how to push."""
    if visitor_token:
        return visitor_token
    if on_space():
        owner = " (This Space shows it once its owner adds hf_oauth: true to its README.md.)"
        button = "" if os.environ.get("OAUTH_CLIENT_ID") else owner
        raise UserError(
            "Sign in with the Hugging Face button above the Push button to push: on this Space a model is pushed "
            f"with your own Hugging Face login, never with the Space's token, so nothing was pushed.{button}"
        )
    if not machine_token:
        raise UserError(
            "Nothing was pushed: this app pushes with the Hugging Face token of the machine it runs on only when its "
            "owner starts it with python app.py --push-with-machine-token (or VAE_PUSH_WITH_MACHINE_TOKEN=1). Start "
            "it so, or download the model folder (.zip) and push it with python -m vae.hub --folder FOLDER "
            "--hub-model-id user/name."
        )
    token = get_token()
    if token is None:
        raise UserError(
            "Nothing was pushed: this app pushes with the Hugging Face token of the machine it runs on, and none was "
            "found. Run hf auth login or set HF_TOKEN to a token with write access, then restart the app."
        )
    return token


def machine_account() -> str | None:
    """Whose the machine's token is (the Hub's whoami), for the page to say; None without a token or the Hub."""
    token = get_token()
    if token is None or constants.HF_HUB_OFFLINE:
        return None
    try:
        return HfApi(token=token).whoami().get("name")
    except HUB_ERRORS:
        return None


def retry_command(folder: str | Path, repo_id: str, private: bool | None) -> str:
    flag = {True: " --private", False: " --no-private", None: ""}[private]
    return f'python -m vae.hub --folder "{folder}" --hub-model-id {repo_id}{flag}'


def push_folder(
    folder: str | Path, repo_id: str, private: bool | None = None, api: HfApi | None = None, model: str | None = None
) -> str:
    """Upload the model folder (not its training state) in one commit; returns the commit URL.

    `private=None` leaves a new repo's visibility to the account's default. A failed upload keeps the folder
    and raises a UserError that says how to retry: with `python -m vae.hub`, or, for the app's `model` (its name),
    by pushing again (the app's visitors are not shown the server's folders).
    """
    api = api or HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        with shareable_copy(Path(folder), repo_id) as public:
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(public),
                ignore_patterns=IGNORED,
                commit_message="Upload VAE trained with train.py",
            )
    except HUB_ERRORS as err:
        failed = f"Uploading {model or folder} to {repo_id} failed ({type(err).__name__}: {first_line(err)})."
        if model is not None:
            raise UserError(f"{failed} Press Push again later, or download the model folder and upload it.") from None
        raise UserError(
            f"{failed} The folder is kept; retry with:\n  {retry_command(folder, repo_id, private)}"
        ) from None
    url = getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"
    print(f"pushed {folder} to {url}")
    return url


@contextlib.contextmanager
def shareable_copy(folder: Path, repo_id: str | None = None) -> Iterator[Path]:
    """The model folder as it leaves the machine: a temporary copy of what is uploaded, whose train_config.yaml names
    no place on this machine (vae.config.shareable_config) and whose card's code sample loads `repo_id`."""
    with tempfile.TemporaryDirectory(prefix="vae-push-") as tmp:
        public = Path(tmp) / folder.name
        shutil.copytree(folder, public, ignore=shutil.ignore_patterns(STATE_DIR, ".*", EVAL))
        if (public / TRAIN_CONFIG).is_file():
            (public / TRAIN_CONFIG).write_text(shareable_config((public / TRAIN_CONFIG).read_text()))
        if repo_id and (public / CARD).is_file():
            (public / CARD).write_text(with_model_id((public / CARD).read_text(encoding="utf-8"), repo_id))
        yield public


def metrics_table(metrics: dict) -> str:
    rows = [
        ("test negative ELBO (nats / image)", metrics.get("test_loss")),
        ("  reconstruction", metrics.get("test_recon")),
        ("  KL", metrics.get("test_kl")),
        (f"test -log p(x), IW bound with k={metrics.get('iw_samples')}", metrics.get("test_iw_nll")),
    ]
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.2f} |" for name, value in rows if isinstance(value, (int, float))]
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
    """Front matter: the model class's own Hub metadata (the mixin's, one source), the dataset and the results."""
    data = ModelCardData(**VAE._hub_mixin_info.model_card_data.to_dict())  # as the mixin copies it for a subclass
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


def usage(model_id: str) -> str:
    return f"""## Use

```python
from vae import VAE

model = VAE.from_pretrained("{model_id}")
images = model.sample(16, seed=0)        # (16, C, H, W) in [0, 1]
mu, logvar = model.encode(images)        # posterior of each image
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
Adam lr {config.lr} with a {config.lr_schedule} schedule, {warmup(config.kl_warmup_epochs)}, seed {config.seed},
on {metrics.get("device", "?")} (mixed precision {config.mixed_precision}) in {duration(metrics.get("train_wall_seconds", 0))}.
The best epoch by validation loss ({metrics.get("best_epoch")}) is the one saved here. All settings: `train_config.yaml`;
per-epoch figures: `metrics.jsonl`.{protocol(config, metrics)}

{usage(model_id)}

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

{usage("DIR")}

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


@command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Upload a model folder written by train.py to the Hugging Face Hub.")
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--hub-model-id", required=True, help="user/name")
    parser.add_argument(
        "--private",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="create the repo as private (--private) or public (--no-private); default: the account's default",
    )
    args = parser.parse_args(argv)
    if not (args.folder / WEIGHTS).is_file():
        raise UserError(f"{args.folder} holds no {WEIGHTS}: pass the --output-dir of a finished train.py run.")
    check_hub_access(args.hub_model_id)
    push_folder(args.folder, args.hub_model_id, args.private)


if __name__ == "__main__":
    main()
