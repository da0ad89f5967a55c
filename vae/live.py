"""Training in the app: `vae.training.train`, the loop train.py runs, in a child process, its progress streamed back.

The Train tab (and /train) starts a run with `Runs.start(visitor, settings.config(...))`. The run's process
- is forked from a template that imported what a run imports (PRELOAD) once, when the server's first run started, so
  that no later run spends ~3.5 s of CPU importing (and its first step comes at once);
- trains with one thread at a lower priority, so that the server's process keeps a core for /sample and /walk
  (bench/app_train_load.py measures them with and without a run);
- reports as JSON lines on a socket of its own: "step" events within an epoch (at most two a second), an "epoch"
  event with the epoch's record and two pictures from the current weights (a grid of samples and the walk between the
  first two classes' means), "export" once training is over and again as each phase of writing the model folder starts (with
  "phase", "number" and "of": vae.export.EXPORT_PHASES), then "done" with the model folder, or "error" with a message;
- stops on SIGINT at the end of the step it is in: the trainer's keep_on_stop exports the best weights so far.
A crash of the child (an exception, the kernel's out-of-memory killer) comes back as an "error" event: the server's
process is not touched by it, and a template that died is started again by the next run.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vae.config import DEFAULT_CONFIG, TrainConfig, build_config, read_yaml
from vae.errors import Interrupted, UserError
from vae.folder import log_path, pictures_dir

DATASETS = {"MNIST": "mnist", "Fashion-MNIST": "fashion-mnist"}  # the tab's choice → the trainer's --dataset
HIDDEN_LAYERS = {"256": [256], "512 → 256": [512, 256], "1024 → 512": [1024, 512]}  # encoder widths; decoder mirrors
LATENT_DIMS = (2, 64)
VAL_SIZE = 1000  # held out of the training images for validation (the default recipe's)
MAX_TRAIN_IMAGES = 60_000 - VAL_SIZE  # the whole training set of MNIST or Fashion-MNIST
MIN_TRAIN_IMAGES = 100
TSNE_SAMPLES = 1000  # test digits on the exported t-SNE map: ~5 s on one core where the trainer's 2,000 take ~15 s
STEERING_IMAGES = 10_000  # training images judged for the class regions: ~5 s on one core where all 59,000 take ~29 s
NICENESS = 10  # the child's priority below the server's
STEP_EVENTS_PER_SECOND = 2
WAIT_EVENT_SECONDS = 0.5  # a "wait" event when the child has been quiet this long (its export): see LiveRun.events
WALK_STEPS = 10
RECIPE = DEFAULT_CONFIG.parent / "mnist_fast.yaml"  # the speedrun's: under 100 nats in ~9 epochs of full MNIST


@dataclass(frozen=True)
class LiveSettings:
    """What a visitor chooses; the rest is the default recipe (configs/mnist.yaml)."""

    dataset: str  # a key of DATASETS
    latent_dim: int
    hidden_layers: str  # a key of HIDDEN_LAYERS
    epochs: int
    train_images: int
    seed: int

    @property
    def label(self) -> str:
        """What the model is, at the start of its name: "mnist-z8"."""
        return f"{DATASETS[self.dataset]}-z{self.latent_dim}"

    def config(self, data_dir: str | Path, output_dir: str | Path) -> TrainConfig:
        """The run's TrainConfig: the speedrun's recipe (RECIPE: learning rate and its schedule, batch size, ELU, bf16)
        with the visitor's choices, on the GPU when the server has one (the app serves its models from the CPU). A KL
        warm-up, in a recipe that has one, is capped at a third of the run, so that a short run ends as a VAE (the KL
        term at full weight) rather than as an autoencoder."""
        recipe = read_yaml(RECIPE)
        warmup = min(float(recipe.get("kl_warmup_epochs", 0.0)), self.epochs / 3)
        return build_config(
            recipe
            | {
                "dataset": DATASETS[self.dataset],
                "data_dir": str(data_dir),
                "val_size": VAL_SIZE,
                "max_train_samples": self.train_images,
                "hidden_dims": HIDDEN_LAYERS[self.hidden_layers],
                "latent_dim": self.latent_dim,
                "epochs": self.epochs,
                "kl_warmup_epochs": warmup,
                "seed": self.seed,
                "output_dir": str(output_dir),
                "iw_samples": 0,  # the card's likelihood is the ELBO; the IW bound is train.py's (minutes on a CPU)
                "tsne_samples": TSNE_SAMPLES,
                "steering_images": STEERING_IMAGES,
                "compile": False,  # the first epoch at once: a page's run is too short to gain from compiling
            }
        )


# What a run imports: the template imports it once, so that each run, forked from it, starts at once (a small run
# then takes 2.2 s from its config to its folder instead of 4.6 s with torch and the trainer alone; one epoch on 200
# images, one core).
PRELOAD = (
    "torch",
    "vae.training",
    "torch._dynamo",  # by the first optimizer (torch.optim's decorators): ~1.2 s
    "sklearn.manifold",  # the t-SNE map at export: ~1.3 s
    "matplotlib.backends.backend_agg",  # the figures at export
)


class Template:
    """`python -m vae.live`: a process that imports PRELOAD once (~3.5 s of CPU, at the runs' lower priority) and then
    forks a process per run, so no run imports anything. A plain interpreter, not multiprocessing's forkserver: that
    would import the server's main module (app.py, Gradio) in every run again.

    The server talks to it over a socket pair: each run's config goes with a socket of the run's own, on which the run
    writes its events, one JSON object per line; the template adds the run's exit status when the run has ended."""

    def __init__(self):
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one message per run
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vae.live", str(theirs.fileno())],
                cwd=Path(__file__).resolve().parent.parent,  # where `vae` is importable from, installed or not
                stdin=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, config: TrainConfig) -> RunProcess:
        """A process that runs `config`, forked as soon as the template has imported PRELOAD."""
        ours, theirs = socket.socketpair()
        with theirs:
            socket.send_fds(self.control, [json.dumps(config.to_dict()).encode()], [theirs.fileno()])
        return RunProcess(ours)

    def close(self) -> None:
        """End the template (not the runs it forked: Runs ends those)."""
        self.control.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class RunProcess:
    """A run forked by the template, with the part of subprocess.Popen's interface that LiveRun uses: its events come
    from `lines()`, its pid with its first event, its exit status with its last.

    A forked run says its pid and waits for a go-ahead before it does anything, so that a signal sent before it was
    forked (the template may still be importing) reaches it there: SIGKILL ends it before it writes a file."""

    def __init__(self, events: socket.socket):
        self.events = events
        self.pid: int | None = None
        self.returncode: int | None = None
        self.pending: int | None = None  # a signal sent before the run had said its pid
        self.lock = threading.Lock()
        self.started, self.ended = threading.Event(), threading.Event()

    def lines(self) -> Iterator[dict]:
        """The run's events until it has ended (its own, and the template's last word: its exit status)."""
        with self.events, self.events.makefile() as stream:
            for line in stream:
                event = json.loads(line)
                if event["event"] == "started":
                    self.begin(event["pid"])
                elif event["event"] == "exited":
                    self.returncode = event["returncode"]
                else:
                    yield event
        self.started.set()  # a run that died before it said its pid has none to signal
        self.ended.set()

    def begin(self, pid: int) -> None:
        with self.lock:
            self.pid = pid
            if self.pending != signal.SIGKILL:
                with contextlib.suppress(OSError):
                    self.events.sendall(b"g")
            if self.pending is not None:
                os.kill(pid, self.pending)
        self.started.set()

    def poll(self) -> int | None:
        return self.returncode if self.ended.is_set() else None

    def send_signal(self, sig: int) -> None:
        with self.lock:
            if self.pid is None:
                self.pending = signal.SIGKILL if signal.SIGKILL in (sig, self.pending) else sig
            elif not self.ended.is_set():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        if not self.ended.wait(timeout):
            raise subprocess.TimeoutExpired("a training run", timeout)
        return self.returncode


class LiveRun:
    """One training run in a process of its own: its events, and a way to stop it.

    The run writes one JSON event per line to its socket; the trainer's own lines go to a log beside the model folder.
    """

    def __init__(self, config: TrainConfig, template: Template):
        self.log = log_path(Path(config.output_dir))
        self.process = template.fork(config)
        self.queue: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()
        self.started = time.monotonic()
        self.stop_reason: str | None = None
        self.closed = False  # ended by close(): its end is no news to anyone

    def read(self) -> None:
        for event in self.process.lines():
            self.queue.put(event)
        self.queue.put({"event": "exit"})

    def stop(self, reason: str) -> None:
        """Ask the run to stop at the end of its current step (once; later calls keep the first reason)."""
        if self.stop_reason is None and self.process.poll() is None:
            self.stop_reason = reason
            self.process.send_signal(signal.SIGINT)

    def events(self, max_seconds: float) -> Iterator[dict]:
        """The child's events until "done" or "error"; a run past `max_seconds` is stopped (and still exported). While
        the child is quiet (its export: seconds), a "wait" event every WAIT_EVENT_SECONDS: the server's handler yields
        then, which is where Gradio can end it when its visitor leaves. After close(), its end comes as no event."""
        quiet_since = time.monotonic()
        while True:
            if time.monotonic() - self.started > max_seconds:
                self.stop(f"the server's time limit of {max_seconds:.0f} s")
            try:
                event = self.queue.get(timeout=0.1)
            except queue.Empty:
                if time.monotonic() - quiet_since >= WAIT_EVENT_SECONDS:
                    quiet_since = time.monotonic()
                    yield {"event": "wait"}
                continue
            quiet_since = time.monotonic()
            if self.closed:
                return
            if event["event"] == "exit":  # its stdout closed with no last word: it died
                self.process.wait()
                print(f"The training process died; the end of {self.log}:\n{log_tail(self.log)}", file=sys.stderr)
                yield {"event": "error", "message": died(self.process.returncode)}
                return
            yield event
            if event["event"] in ("done", "error"):
                self.process.wait(timeout=30)
                return

    def close(self) -> None:
        """The run's watcher went away (the visitor left): end it now. Stopping it as Stop does would have it write the
        whole model folder (figures, t-SNE map, class regions: ~11 s of CPU on a full run) only for the folder to be deleted."""
        self.closed = True
        if self.process.poll() is None:
            self.process.kill()
        if self.process.pid is not None:  # else it dies when the template has forked it, before it does anything
            self.process.wait()


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        why = " (the system's out-of-memory killer sends SIGKILL)" if exitcode == -signal.SIGKILL else ""
        return f"The training process was killed by {name}{why}. Try fewer training images or smaller layers."
    return f"The training process ended unexpectedly (exit code {exitcode}). The server's log has its output."


# ---------------------------------------------------------------------------------------------------------------------
# The child process
# ---------------------------------------------------------------------------------------------------------------------


def child(config: TrainConfig, events_fd: int, threads: int = 1) -> None:
    """Run `train` and report on the socket EVENTS_FD; every outcome ends in a "done" or "error" event."""
    events = os.fdopen(events_fd, "w", buffering=1)  # line-buffered: each event at once

    def send(event: dict) -> None:
        events.write(json.dumps(event) + "\n")

    try:
        send({"event": "started", "pid": os.getpid()})  # so that the server can signal it (Stop: SIGINT)
        if not os.read(events_fd, 1):  # the go-ahead (RunProcess.begin)
            return
    except OSError:  # the server has gone: no one to train for
        return
    log = log_path(Path(config.output_dir))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:  # from here on, whatever prints (the trainer, a traceback) goes to the log
        os.dup2(out.fileno(), sys.stdout.fileno())
        os.dup2(out.fileno(), sys.stderr.fileno())
    os.environ["TQDM_DISABLE"] = "1"  # the bars' lines would only fill the log

    try:
        import torch

        from vae.training import train

        torch.set_num_threads(threads)
        reporter = Reporter(config, send)
        folder = train(
            config,
            on_epoch_end=reporter.epoch_end,
            on_step=reporter.step,
            on_train_end=lambda: send({"event": "export"}),
            keep_on_stop=True,
            on_export=reporter.export,
        )
        send({"event": "done", "folder": str(folder)})
    except (Interrupted, KeyboardInterrupt):  # stopped before the first step, or while exporting
        send({"event": "error", "message": "The run was stopped before it had a model to keep."})
    except UserError as err:  # bad or missing data, a full disk: the trainer's own message
        send({"event": "error", "message": str(err)})
    except MemoryError:
        send({"event": "error", "message": "Training ran out of memory. Try fewer training images."})
    except Exception as err:  # a bug: the traceback goes to the log, the visitor gets its last line
        traceback.print_exc()
        send({"event": "error", "message": f"Training failed: {type(err).__name__}: {err}"})


class Reporter:
    """The trainer's hooks in the child: progress and pictures → events."""

    def __init__(self, config: TrainConfig, send: Callable[[dict], None]):
        self.config, self.send = config, send
        self.first_step: float | None = None  # the clock starts at the first step: data loading is not training
        self.images = 0  # trained on so far (an image seen in two epochs counts twice)
        self.sent = 0.0
        self.loss: float | None = None  # an exponential moving average of the batches' loss
        self.val_images = None  # loaded at the first epoch's end, for the class means of the walk
        self.pictures = pictures_dir(Path(config.output_dir))

    def step(self, epoch: int, step: int, steps: int, images: int, loss: float) -> None:
        now = time.monotonic()
        if self.first_step is None:
            self.first_step = now
        self.images += images
        self.loss = loss if self.loss is None else 0.9 * self.loss + 0.1 * loss
        if now - self.sent < 1 / STEP_EVENTS_PER_SECOND and step != steps:
            return
        self.sent = now
        done, total = (epoch - 1) * steps + step, self.config.epochs * steps
        elapsed = now - self.first_step
        self.send(
            {
                "event": "step",
                "epoch": epoch,
                "epochs": self.config.epochs,
                "step": step,
                "steps": steps,
                "loss": self.loss,
                "images_per_sec": self.images / elapsed if elapsed > 0 else None,
                "seconds_left": elapsed / done * (total - done) if done > 1 else None,
            }
        )

    def export(self, phase: str, number: int, of: int) -> None:
        """The export's next phase starts (vae.export.EXPORT_PHASES): the Train tab's bar shows it."""
        self.send({"event": "export", "phase": phase, "number": number, "of": of})

    def epoch_end(self, epoch: int, model) -> None:
        from vae.folder import HISTORY

        record = json.loads((Path(self.config.output_dir) / HISTORY).read_text().splitlines()[-1])
        samples, walk = self.draw(epoch, model)
        self.send({"event": "epoch", "record": record, "samples": str(samples), "walk": str(walk)})

    def draw(self, epoch: int, model) -> tuple[Path, Path]:
        """The epoch's pictures from the current weights: 64 samples (the same z every epoch, so the digits are seen to
        sharpen) and the walk between the means of the first and second class (3 → 7 on ten classes), as the export
        and the Latent walk tab define a class mean (vae.classes), here of the validation images: the training set's
        would take a pass over all of it every epoch."""
        from vae.classes import class_walk, fit_classes
        from vae.data import DataSettings, load_splits
        from vae.figures import samples_grid, save_png
        from vae.imaging import to_grid
        from vae.latent import posterior_means

        if self.val_images is None:
            val = load_splits(DataSettings.of(self.config)).val
            self.val_images, self.val_labels = val.images, val.labels
        self.pictures.mkdir(exist_ok=True)
        samples = self.pictures / f"epoch-{epoch:03d}-samples.png"
        save_png(samples_grid(model, 64, seed=self.config.seed), samples)
        classes = fit_classes(posterior_means(model, self.val_images), self.val_labels, len(model.class_names))
        frames = class_walk(model, classes, *walk_classes(len(model.class_names)), WALK_STEPS)
        path = self.pictures / f"epoch-{epoch:03d}-walk.png"
        save_png(to_grid(frames, nrow=WALK_STEPS, scale=2), path)
        return samples, path


def walk_classes(n: int) -> tuple[int, int]:
    """The classes of the live walk, as the Latent walk tab's default: 3 → 7 on ten classes (the tutorial's walk)."""
    return (3, 7) if n > 7 else (0, n - 1)


# ---------------------------------------------------------------------------------------------------------------------
# The server's side: its limits, and one run at a time
# ---------------------------------------------------------------------------------------------------------------------

TRAINING_PACKAGES = ("accelerate", "torchvision", "sklearn", "matplotlib", "tqdm")


@dataclass(frozen=True)
class Limits:
    """What the server allows a visitor's run: VAE_MAX_TRAIN_EPOCHS (default 20), VAE_MAX_TRAIN_SECONDS (default 600,
    after which the run stops and keeps its best weights), VAE_MAX_TRAIN_JOBS (default 8: runs going and waiting on the
    server, beyond which /train is refused before it takes a place in the queue the other tabs share), and where the
    data is (VAE_DATA_DIR, app.py --data-dir)."""

    data_dir: Path
    max_epochs: int = 20
    max_seconds: float = 600.0
    max_train_jobs: int = 8

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None, default_data_dir: str | Path = "data") -> Limits:
        return cls(
            Path(data_dir or os.environ.get("VAE_DATA_DIR") or default_data_dir).expanduser().resolve(),
            env_number("VAE_MAX_TRAIN_EPOCHS", cls.max_epochs, int),
            env_number("VAE_MAX_TRAIN_SECONDS", cls.max_seconds, float),
            env_number("VAE_MAX_TRAIN_JOBS", cls.max_train_jobs, int),
        )


def env_number(name: str, default, kind):
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or value != value:
        raise UserError(f"{name}={text!r} must be a positive {'whole ' if kind is int else ''}number, or unset.")
    return value


def missing_packages() -> list[str]:
    """The training packages this Python lacks (a server installed from an older requirements.txt)."""
    import importlib.util

    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except ModuleNotFoundError:  # an import hook that refuses it
            return True

    return [name for name in TRAINING_PACKAGES if missing(name)]


class Runs:
    """The server's training run (one at a time: the /train event's concurrency limit is 1), who started it, so that
    only they can stop it, and the template that forks the runs."""

    def __init__(self):
        self.current: tuple[str, LiveRun] | None = None
        self.template: Template | None = None
        self.ending = False  # whether the server's exit ends a run still going (registered with the first run)

    def start(self, visitor: str, config: TrainConfig) -> LiveRun:
        """The visitor's run, forked by the template. The server's first run starts the template (its run waits for the
        imports), and so does the next run after a template has died: a server whose Train tab is never used keeps no
        idle trainer in memory."""
        if not self.ending:
            atexit.register(self.end)
            self.ending = True
        if self.template is None or not self.template.alive():
            self.template = Template()
        try:
            run = LiveRun(config, self.template)
        except OSError:  # the template died after the check above
            self.template = Template()
            run = LiveRun(config, self.template)
        self.current = (visitor, run)
        return run

    def end(self) -> None:
        """The server exits: a run still going is killed, not left writing into folders about to be deleted; the
        template goes too (it would also end on its own when its socket closes)."""
        if self.current is not None:
            self.current[1].close()
        if self.template is not None:
            self.template.close()

    def close(self, visitor: str) -> None:
        """The visitor left: their run, if one is going, is killed (their folder is about to be deleted under it)."""
        if self.current is not None and self.current[0] == visitor:
            self.current[1].close()

    def stop(self, visitor: str) -> bool:
        """Stop the visitor's run, if one is going; whether there was one."""
        if self.current is None or self.current[0] != visitor:
            return False
        self.current[1].stop("Stop was pressed")
        return True

    def finish(self, run: LiveRun) -> None:
        if self.current is not None and self.current[1] is run:
            self.current = None


def serve(control_fd: int) -> tuple[TrainConfig, int] | None:
    """The template: below the server's priority, imports PRELOAD, then forks a run per message from the server (a
    config and the run's socket) and tells each run's socket its exit status. Returns only in a run's process, with
    its config and socket; or None in the template when the server has gone."""
    os.nice(NICENESS)
    for name in PRELOAD:
        with contextlib.suppress(
            Exception
        ):  # a failed import fails again in child(), where it becomes an "error" event
            importlib.import_module(name)
    # What the imports made, out of the garbage collector's sight: a run's collections would otherwise write to every
    # object's header, and so copy all of the template's memory into the run, page by page (~1.5 s of CPU).
    gc.freeze()
    control = socket.socket(fileno=control_fd)
    runs: dict[int, socket.socket] = {}  # pid → its socket, for its exit status
    while True:
        for pid, events in list(runs.items()):
            ended, status = os.waitpid(pid, os.WNOHANG)
            if ended:
                with contextlib.suppress(OSError), events:
                    code = os.waitstatus_to_exitcode(status)
                    events.sendall(json.dumps({"event": "exited", "returncode": code}).encode() + b"\n")
                del runs[pid]
        if not select.select([control], [], [], 0.2)[0]:
            continue
        message, fds, _, _ = socket.recv_fds(control, 1 << 20, 1)
        if not message:  # the server has gone; a run still going ends when it next writes to it
            return None
        events = socket.socket(fileno=fds[0])
        pid = os.fork()
        if pid == 0:
            control.close()
            for other in runs.values():
                other.close()
            return build_config(json.loads(message)), events.detach()
        runs[pid] = events


def main() -> None:
    """`python -m vae.live FD`, started by Template(): the template, and in each process it forks, a run."""
    forked = serve(int(sys.argv[1]))
    if forked is not None:
        child(*forked)


if __name__ == "__main__":
    main()
