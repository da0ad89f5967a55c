"""The Train tab: a visitor's run of the trainer in a child process (vae.live), its progress as the tab's outputs
(LiveView), the model it ends with (added to the catalog and the visitor's dropdown: vae.visitors), Stop and Push;
and the tab's layout and events (train_tab). The /train calls a visitor may have going or waiting are checked before
they join the queue (TrainTab.refusal, through gradio6.Studio.admit)."""

from __future__ import annotations

import html
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from app_handlers import pixel_image, user_errors
from vae import checks, live
from vae.catalog import Catalog
from vae.errors import UserError
from vae.folder import discard
from vae.hub import on_space
from vae.visitors import PER_VISITOR, Visitors, client_address, delete_run


@dataclass
class TrainTab:
    """What the Train tab's handlers share on this server."""

    catalog: Catalog
    visitors: Visitors
    limits: live.Limits
    runs: live.Runs = field(default_factory=live.Runs)
    machine_token: bool = False  # app.py --push-with-machine-token: a push without a login uses the machine's token
    machine_account: str | None = None  # whose that token is, as the page says

    def refusal(self, calls: list[tuple[str, str]], caller: tuple[str, str]) -> str | None:
        """Why a /train call from `caller` (session, client address) is refused before it takes a place in the queue,
        given the /train calls going or waiting: one going and one waiting per visitor (a session, or any session from
        the same address), limits.max_train_jobs on the server."""
        session, address = caller
        if sum(s == session or a == address for s, a in calls) >= 2:
            return (
                "You already have a training run going or waiting on this server: wait for it to finish, or press Stop "
                "to end it (it keeps the best weights so far), then press Train again."
            )
        if len(calls) >= self.limits.max_train_jobs:
            runs = f"{len(calls)} run{'s' * (len(calls) != 1)} {'are' if len(calls) != 1 else 'is'}"
            return (
                f"The server's training queue is full: {runs} going or waiting. Try again in a few minutes, or run "
                "the studio on your own machine."
            )
        return None


class TrainView(NamedTuple):
    """One update of the Train tab: a value (or gr.skip()) for each of /train's outputs, in train_tab's order."""

    status: Any
    progress: Any
    curve: Any
    samples: Any
    walk: Any
    model_name: Any
    checkpoint: Any
    download: Any


def check_settings(limits: live.Limits, dataset, latent_dim, hidden_layers, epochs, train_images, seed):
    return live.LiveSettings(
        checks.check_choice(dataset, "Dataset", tuple(live.DATASETS)),
        checks.check_int(latent_dim, "Latent size", *live.LATENT_DIMS),
        checks.check_choice(hidden_layers, "Hidden layers", tuple(live.HIDDEN_LAYERS)),
        checks.check_int(epochs, "Epochs", 1, limits.max_epochs),
        checks.check_int(train_images, "Training images", live.MIN_TRAIN_IMAGES, live.MAX_TRAIN_IMAGES),
        checks.check_int(seed, "Seed", 0, checks.MAX_SEED),
    )


def run_training(
    training: TrainTab, dataset, latent_dim, hidden_layers, epochs, train_images, seed, visitor: str, address: str = ""
):
    """Train tab (/train): the trainer run in a child process → an update at least once per epoch (the loss curve,
    samples and the first → second class walk from the current weights, images/s, time left, a progress bar), and at
    the end the model: named, added to this visitor's checkpoint dropdown and selected, ready as a zip. `visitor` is
    the session, `address` the client's (the model counts against both: vae.visitors)."""
    try:
        if missing := live.missing_packages():
            raise UserError(
                f"This server cannot train: it lacks {', '.join(missing)}. Install the studio's requirements.txt "
                "(pip install -r requirements.txt) and restart it."
            )
        settings = check_settings(training.limits, dataset, latent_dim, hidden_layers, epochs, train_images, seed)
        name, folder = training.visitors.new_folder(visitor, settings.label)
        config = settings.config(training.limits.data_dir, folder)
    except UserError as err:
        raise gr.Error(html.escape(str(err), quote=False), print_exception=False) from None
    run = training.runs.start(visitor, config)
    view = LiveView()
    finished = False
    try:
        yield view.update(status=f"Starting the trainer: loading {settings.dataset}…")
        for event in run.events(training.limits.max_seconds):
            if event["event"] == "done":
                finished = True
                yield finish(training, view, run, name, Path(event["folder"]), visitor, address)
                return
            if event["event"] == "error":
                finished = True
                discard(folder)  # what the run wrote of it; its pictures stay on the page (swept with the rest)
                message = event["message"]
                print(f"Training run {name} failed: {message}", file=sys.stderr)  # the server's paths: its log only
                message = visitor_message(message, settings.dataset, name, folder, training.limits.data_dir)
                yield view.update(status=f"⚠️ {checks.literal(message)}")
                raise gr.Error(html.escape(message, quote=False), print_exception=False)
            if event["event"] == "wait":  # the export: a yield, where Gradio ends the run if its visitor left
                yield TrainView(*[gr.skip()] * len(TrainView._fields))
                continue
            yield view.read(event, run.stop_reason)
    finally:
        training.runs.finish(run)
        if not finished and not run.closed:  # the visitor's job was cancelled: stop it and drop what it wrote
            run.close()
            delete_run(folder)
        # Closed before (the visitor left, the server exits): whoever closed it deletes the folders, and does so
        # whole; deleting here too would race them.


def visitor_message(message: str, dataset: str, name: str, folder: Path, data_dir: Path) -> str:
    """A trainer's error as the Train tab shows it: no folder of the server's (its log has the message whole)."""
    if str(data_dir) in message:  # missing or broken data: the server's operator fixes it, not the visitor
        return (
            f"This server could not read the {dataset} data it trains on, so it cannot train now. Its log says why "
            "and how to fix it: please tell whoever runs it."
        )
    return message.replace(str(folder), name)


def finish(
    training: TrainTab, view: LiveView, run: live.LiveRun, name: str, folder: Path, visitor: str, address: str = ""
) -> TrainView:
    """The run's model folder → the visitor's models (served from the catalog by name), the visitor's dropdown
    (selected), a zip to download."""
    dropped = training.visitors.add(name, visitor, folder, address)  # and served from the catalog by its name
    metrics = checks.numbers(training.catalog.get(name).metrics)
    how = (
        f"stopped ({run.stop_reason}) in epoch {int(metrics['stopped_in_epoch'])}"
        if "stopped_in_epoch" in metrics
        else "done"
    )
    status = (
        f"**{name}** is ready ({how}): test −ELBO {metrics.get('test_loss', float('nan')):.2f} nats/image, best epoch "
        f"{int(metrics.get('best_epoch', 0))}, {metrics.get('train_wall_seconds', 0):.0f} s of training. It is selected "
        "in the checkpoint dropdown above: every tab now shows it. It is deleted when you leave or after an hour."
    )
    if dropped:
        status += f" Your oldest model ({', '.join(dropped)}) was deleted: the server keeps {PER_VISITOR} per visitor."
    choices = [*training.catalog.names, *training.visitors.names(visitor)]
    return view.update(
        status=status,
        progress=progress_bar(1.0, "done"),
        model_name=name,
        checkpoint=gr.update(choices=choices, value=name, visible=True),
        download=gr.update(value=str(training.visitors.zip(name)), visible=True),
    )


CURVE_COLUMNS = ["epoch", "loss", "data", "reconstruction", "KL"]  # the loss curve: −ELBO = reconstruction + KL


class LiveView:
    """The Train tab's outputs, built up from the run's events."""

    def __init__(self):
        self.rows: list[dict] = []  # the loss curve: two points per epoch (train, validation), CURVE_COLUMNS
        self.samples = self.walk = None
        self.line = ""

    def read(self, event: dict, stop_reason: str | None) -> TrainView:
        kind = event["event"]
        if kind == "step":
            fraction = ((event["epoch"] - 1) * event["steps"] + event["step"]) / (event["epochs"] * event["steps"])
            speed = f"{event['images_per_sec']:,.0f} images/s" if event["images_per_sec"] else ""
            left = f"about {duration(event['seconds_left'])} left" if event["seconds_left"] is not None else ""
            loss = f"−ELBO {event['loss']:.1f}"  # a running mean of the batches': the curve has the epochs' means
            label = " · ".join(t for t in (f"epoch {event['epoch']}/{event['epochs']}", loss, speed, left) if t)
            stopping = f"Stopping ({stop_reason}): the best weights so far become the model…" if stop_reason else ""
            return self.update(
                status=stopping or self.line or "Training…", progress=progress_bar(fraction, label), curve=gr.skip()
            )  # the curve: at the epoch's end
        if kind == "epoch":
            record = event["record"]
            for data, prefix in (("train", "train_"), ("validation", "val_")):
                parts = [record[prefix + part] for part in ("loss", "recon", "kl")]
                epoch = str(record["epoch"])  # a category: one tick per epoch, not 1.0, 1.1, 1.2…
                self.rows.append(dict(zip(CURVE_COLUMNS, [epoch, parts[0], data, *parts[1:]], strict=True)))
            self.samples, self.walk = event["samples"], event["walk"]
            stopped = f" (stopped {record['epoch_fraction']:.0%} into it)" if record.get("stopped") else ""
            self.line = (
                f"Epoch {record['epoch']}{stopped}: train −ELBO {record['train_loss']:.2f}, validation −ELBO "
                f"{record['val_loss']:.2f} nats/image (reconstruction {record['val_recon']:.2f} + KL "
                f"{record['val_kl']:.2f}), {record['images_per_sec']:,.0f} images/s."
            )
            return self.update(status=self.line)
        if kind == "export" and "phase" in event:  # the bar is the export's own from here: its phase, and how far
            label = f"writing the model folder: {event['phase']} ({event['number']}/{event['of']})"
            return self.update(progress=progress_bar((event["number"] - 1) / event["of"], label))
        if kind == "export":
            ended = f"Stopped ({stop_reason}): the best weights so far become the model." if stop_reason else self.line
            return self.update(
                status=f"{ended} Writing the model folder: figures, t-SNE map, class regions, card…",
                progress=progress_bar(0.0, "writing the model folder"),
            )
        return self.update()

    def update(self, **changes) -> TrainView:
        # The curve is sent from the first epoch's end on, with both of its series: the plot fixes its legend and
        # colours by the series of the first frame it gets, and an empty frame's columns would reach it as categories.
        curve = pd.DataFrame(self.rows, columns=CURVE_COLUMNS) if self.rows else gr.skip()
        view = TrainView(
            status=gr.skip(),
            progress=gr.skip(),
            curve=curve,
            samples=self.samples,
            walk=self.walk,
            model_name=gr.skip(),
            checkpoint=gr.skip(),
            download=gr.skip(),
        )
        return view._replace(**changes)


def progress_bar(fraction: float, label: str) -> str:
    percent = max(0.0, min(1.0, fraction)) * 100
    return (
        f'<div id="train-bar"><progress value="{percent:.1f}" max="100" style="width:100%"></progress>'
        f"<div>{html.escape(label)} · {percent:.0f}%</div></div>"
    )


def push_note(training: TrainTab) -> str:
    """What the Train tab says under its Push heading: whose token a push uses, or why there is none."""
    if os.environ.get("OAUTH_CLIENT_ID"):
        return "Sign in above: your model is pushed with your own Hugging Face login, to an account of yours."
    if on_space():
        return (
            "Pushing needs visitors to sign in with Hugging Face, which this Space's owner turns on with "
            "hf_oauth: true in its README.md. Meanwhile download the model folder and push it yourself."
        )
    if training.machine_token:
        account = checks.literal(training.machine_account or "the account of HF_TOKEN or hf auth login")
        return (
            f"Pushes as **{account}**, with the Hugging Face token of the machine this app runs on "
            "(started with --push-with-machine-token)."
        )
    return (
        "Pushing is off: this app pushes with the Hugging Face token of the machine it runs on only when started with "
        "python app.py --push-with-machine-token (or VAE_PUSH_WITH_MACHINE_TOKEN=1). Or download the model folder and "
        "push it with python -m vae.hub."
    )


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def stop_training(training: TrainTab, visitor: str) -> str:
    """Stop (/stop_training): ends this visitor's run at the end of its current step; the best weights so far are
    exported as its model."""
    if training.runs.stop(visitor):
        return "Stopping: the best weights so far become the model…"
    return "You have no run going."


@user_errors
def push_model(training: TrainTab, model_name, repo_id, private, token: str | None, visitor: str) -> str:
    """Push (/push): a model this visitor (session) trained here → their Hub repo, through the trainer's own push path,
    with the visitor's login (`token`), or the machine's token only where the owner turned that on (see
    hub.app_push_token). Another session's model is refused as if it did not exist: a name is not a key."""
    from huggingface_hub import HfApi

    from vae.hub import app_push_token, check_hub_access, check_repo_id, push_folder

    folder = training.visitors.own_folder(model_name, visitor) if isinstance(model_name, str) else None
    if folder is None:
        raise UserError(f"No model {checks.shown(model_name)} of yours to push: train one in this tab first.")
    repo_id = check_repo_id(repo_id if isinstance(repo_id, str) else None)
    api = HfApi(token=app_push_token(token, training.machine_token))  # never None: no fallback to the machine's
    account = check_hub_access(repo_id, api)
    url = push_folder(folder, repo_id, private=bool(private), api=api, model=model_name)
    whose = "your Hugging Face login" if token else "this machine's Hugging Face token"
    account = checks.literal(account or "the token's account")  # model_name is one of ours, url the Hub's answer
    return f"Pushed **{model_name}** to {url} as **{account}**, with {whose}."


def train_intro(limits: live.Limits) -> str:
    """What the Train tab says above its settings: what a run gives, and this server's limits."""
    return (
        "Train a VAE here, with the same trainer as `train.py`, and watch its samples sharpen. When the run ends "
        "(or you press Stop, which keeps the best weights so far) the model is selected in the checkpoint "
        "dropdown above, so every tab shows it. Your models are deleted when you leave or after an hour. "
        f"One run at a time on this server, at most {limits.max_epochs} epochs and "
        f"{duration(limits.max_seconds)}; others wait in a queue (one run going and one waiting per visitor, "
        f"{limits.max_train_jobs} in all)."
    )  # where the data is: the server's log (main), not the visitors' page


def train_settings(limits: live.Limits) -> list[gr.components.Component]:
    """The settings of a run, in /train's order: dataset, latent size, hidden layers, epochs, images, seed."""
    dataset = gr.Radio(list(live.DATASETS), value="MNIST", label="Dataset", elem_id="train-dataset")
    latent_dim = gr.Slider(*live.LATENT_DIMS, value=32, step=1, label="Latent size", elem_id="train-latent")
    hidden = gr.Dropdown(list(live.HIDDEN_LAYERS), value="512 → 256", label="Hidden layers (encoder)")
    epochs = gr.Slider(
        1,
        limits.max_epochs,
        value=min(9, limits.max_epochs),  # the speedrun's recipe (vae.live.RECIPE): under 100 nats on full MNIST
        step=1,
        label="Epochs",
        elem_id="train-epochs",
    )
    images = gr.Slider(
        live.MIN_TRAIN_IMAGES,
        live.MAX_TRAIN_IMAGES,
        value=live.MAX_TRAIN_IMAGES,
        step=100,
        label="Training images",
        elem_id="train-images",
    )
    seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=checks.MAX_SEED)
    return [dataset, latent_dim, hidden, epochs, images, seed]


def loss_curve(max_epochs: int) -> gr.ScatterPlot:
    """The loss per epoch, train and validation."""
    return gr.ScatterPlot(
        x="epoch",
        y="loss",
        color="data",
        x_title="epoch",
        sort=[str(epoch) for epoch in range(1, max_epochs + 1)],  # 1, 2, … 10, not 1, 10, 2
        y_title="−ELBO (nats/image)",
        color_title="",  # the legend reads "train", "validation", not the column's name
        color_map={"train": "#1f77b4", "validation": "#ff7f0e"},
        tooltip=["reconstruction", "KL"],
        label="Loss per epoch: train (blue, the epoch's mean) and validation (orange, at its end)",
        height=330,  # the legend (train, validation) sits below the axes
        elem_id="train-curve",
    )


def train_tab(demo: gr.Blocks, training: TrainTab, checkpoint: gr.Dropdown) -> None:
    limits = training.limits
    with gr.Tab("Train"):
        gr.Markdown(train_intro(limits))
        with gr.Row():
            with gr.Column(scale=1):
                settings = train_settings(limits)
                with gr.Row():
                    start = gr.Button("Train", variant="primary", elem_id="train-button")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop-button")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="train-status")
                progress = gr.HTML(elem_id="train-progress")
                # Points, not lines: a line needs two epochs, and the first epoch's points are the first news. The
                # y-axis fits the epochs' means (the first steps' ~550 nats are no point of it); hovering a point
                # shows its reconstruction and KL parts.
                curve = loss_curve(limits.max_epochs)
                samples = pixel_image("Samples from the current weights", elem_id="train-samples", height=300)
                walk = pixel_image("Walk between two class means (3 → 7)", elem_id="train-walk", height=120)
                model_name = gr.Textbox(label="Your model", interactive=False, elem_id="train-model")
                download = gr.DownloadButton(
                    "Download the model folder (.zip)", visible=False, elem_id="train-download"
                )
                with gr.Accordion("Push it to the Hugging Face Hub", open=False):
                    if os.environ.get("OAUTH_CLIENT_ID"):  # a Space with hf_oauth: true: visitors push as themselves
                        gr.LoginButton()
                    gr.Markdown(push_note(training), elem_id="push-note")
                    repo_id = gr.Textbox(label="Repo id", placeholder="your-name/vae-mnist")
                    private = gr.Checkbox(True, label="Private repo")
                    push = gr.Button("Push", elem_id="push-button")
                    pushed = gr.Markdown()
    outputs = TrainView(status, progress, curve, samples, walk, model_name, checkpoint, download)

    # Closures, not partials: Gradio injects gr.Request and gr.OAuthToken by their type hints.
    def run(dataset, latent_dim, hidden_layers, epochs, train_images, seed, request: gr.Request):
        visitor, address = request.session_hash, client_address(request.headers, request.client.host)
        yield from run_training(
            training, dataset, latent_dim, hidden_layers, epochs, train_images, seed, visitor, address
        )

    def halt(request: gr.Request) -> str:
        return stop_training(training, request.session_hash)

    def upload(model_name, repo_id, private, oauth_token: gr.OAuthToken | None, request: gr.Request) -> str:
        token = oauth_token.token if oauth_token else None
        return push_model(training, model_name, repo_id, private, token, request.session_hash)

    def leave(request: gr.Request) -> None:  # the run first: it would go on writing into the folders deleted here
        training.runs.close(request.session_hash)
        training.visitors.forget(request.session_hash)

    # One run at a time in the whole server (its own concurrency group: the other tabs keep theirs). The queue's
    # max_size counts every event's waiting calls together, so /train's own bounds are checked before a call waits.
    start.click(
        run, settings, list(outputs), api_name="train", preprocess=False, concurrency_id="train", concurrency_limit=1
    )
    demo.admit("train", training.refusal)
    stop.click(halt, None, [status], api_name="stop_training", concurrency_id="stop", concurrency_limit=None)
    push.click(upload, [model_name, repo_id, private], [pushed], api_name="push", preprocess=False)
    demo.unload(leave)
