"""Nothing a model folder holds can hang or crash the loader: a standing suite of corrupted copies of the committed
checkpoints/vae-mnist (each case copies it to tmp_path and breaks one thing).

For every case, `load_assets` and `VAE.from_pretrained` either load (a bad side file leaves a problem recorded,
shown in the page) or raise a UserError whose message names the file or tensor at fault; never another exception
type, each call within TIME_LIMIT seconds, and the process never more than MEMORY_LIMIT bytes above where it started
(sampled while the call runs: a bomb-sized config or map must be refused before anything is allocated for it).
The last test prints a table of the outcomes.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import torch
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image
from safetensors.torch import load_file, save_file

from vae.assets import Assets, load_assets
from vae.errors import UserError
from vae.folder import APP_FILES
from vae.model import VAE

SOURCE = Path(__file__).resolve().parent.parent / "checkpoints" / "vae-mnist"
TIME_LIMIT = 2.0  # seconds per call, on a busy 2-core machine: a real load takes a fraction of that
MEMORY_LIMIT = 200 * 2**20  # a 4 MB model and a 2,000-point map need far less
MESSAGE_LIMIT = 1500  # characters: a message names what is wrong, it does not echo the input back
ECHO = 300  # no run of one character this long in a message: a huge value was cut before it was echoed


# ---------------------------------------------------------------------------------------------------------------------
# Ways to break a folder
# ---------------------------------------------------------------------------------------------------------------------


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def corrupt(folder: Path) -> None:
        (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)

    return corrupt


def remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def truncate(name: str, cut: Callable[[int], int]) -> Callable[[Path], None]:
    def corrupt(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: cut(len(data))])

    return corrupt


def header_end(name: str) -> int:
    """Where a safetensors file's JSON header ends and its tensor data starts."""
    return 8 + struct.unpack("<Q", (SOURCE / name).read_bytes()[:8])[0]


def random_bytes(name: str, size: int) -> Callable[[Path], None]:
    return write(
        name, torch.randint(0, 256, (size,), generator=torch.Generator().manual_seed(size)).byte().numpy().tobytes()
    )


def config(**changes) -> Callable[[Path], None]:
    """config.json with some keys changed; a value of ... removes the key."""

    def corrupt(folder: Path) -> None:
        values = json.loads((folder / "config.json").read_text()) | changes
        (folder / "config.json").write_text(json.dumps({k: v for k, v in values.items() if v is not ...}))

    return corrupt


def tensors(name: str, change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    """A safetensors file rewritten with its tensors changed in place by `change`."""

    def corrupt(folder: Path) -> None:
        values = load_file(folder / name)
        change(values)
        save_file({k: v.contiguous() for k, v in values.items()}, folder / name)

    return corrupt


def setting(key: str, value) -> Callable[[dict], None]:
    def change(values: dict) -> None:
        if value is ...:
            del values[key]
        elif callable(value):
            values[key] = value(values[key])
        else:
            values[key] = value

    return change


def drop_prefix(prefix: str) -> Callable[[dict], None]:
    def change(values: dict) -> None:
        for key in [k for k in values if k.startswith(prefix)]:
            del values[key]

    return change


def poisoned(value: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def change(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        tensor.view(-1)[7] = value
        return tensor

    return change


def png_claiming(width: int, height: int) -> Callable[[Path], None]:
    """tsne.png with its IHDR patched to claim another size (CRC fixed): a decompression bomb by its header."""

    def corrupt(folder: Path) -> None:
        data = bytearray((folder / "tsne.png").read_bytes())
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        (folder / "tsne.png").write_bytes(bytes(data))

    return corrupt


def jpeg_figure(folder: Path) -> None:
    with Image.open(folder / "tsne.png") as img:
        buffer = io.BytesIO()
        img.convert("RGB").save(buffer, format="JPEG")
    (folder / "tsne.png").write_bytes(buffer.getvalue())


def tsne_points(n: int) -> Callable[[Path], None]:
    """A well-formed map of n points: the app's neighbour search on it needs n² distances."""

    def corrupt(folder: Path) -> None:
        generator = torch.Generator().manual_seed(0)
        save_file(
            {
                "coords": torch.randn(n, 2, generator=generator),
                "labels": torch.randint(0, 10, (n,), generator=generator),
                "latents": torch.randn(n, 32, generator=generator),
            },
            folder / "tsne.safetensors",
        )

    return corrupt


# ---------------------------------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    corrupt: Callable[[Path], None]
    assets: str  # what load_assets does: "error" (a UserError), "problem" (loads with one recorded) or "clean"
    model: str  # what VAE.from_pretrained does: "error" or "loads" (side files are not its business)
    names: tuple[str, ...] = ()  # what load_assets' UserError or recorded problem must name
    model_names: tuple[str, ...] | None = None  # what from_pretrained's UserError must name, if not `names`


def refused(name: str, corrupt: Callable[[Path], None], *names: str) -> Case:
    """Both loaders raise a UserError naming `names`."""
    return Case(name, corrupt, "error", "error", names)


def side(name: str, corrupt: Callable[[Path], None], *names: str) -> Case:
    """load_assets loads with a problem naming `names`; from_pretrained, which reads no side file, loads."""
    return Case(name, corrupt, "problem", "loads", names)


def fine(name: str, corrupt: Callable[[Path], None]) -> Case:
    return Case(name, corrupt, "clean", "loads")


W, C, TS, PNG, M, R = "model.safetensors", "config.json", "tsne.safetensors", "tsne.png", "metrics.json", "README.md"
HUGE_NAME = "x" * 100_000
SHOWN_METRICS = {"test_loss", "test_recon", "test_kl", "test_iw_nll", "iw_samples"}  # what the app and card show
CUTS = {"0 bytes": lambda n: 0, "7 bytes": lambda n: 7, "100 bytes (inside the header)": lambda n: 100}
CUTS |= {"5,000 bytes": lambda n: 5000, "half": lambda n: n // 2, "all but 1 byte": lambda n: n - 1}

CASES = [
    fine("control: the committed folder as is", lambda folder: None),
    # model.safetensors
    *[refused(f"weights truncated to {label}", truncate(W, cut), W) for label, cut in CUTS.items()],
    refused("weights truncated to the header", truncate(W, lambda n: header_end(W)), W),
    refused("weights: 4 MB of random bytes", random_bytes(W, 4_371_368), W),
    refused("weights: 16 random bytes", random_bytes(W, 16), W),
    refused("weights: a header length of 2**62", write(W, struct.pack("<Q", 2**62) + b"{}"), W),
    refused("weights: a header that is not JSON", write(W, struct.pack("<Q", 16) + b"not json at all!"), W),
    refused("weights: a trailing byte", lambda f: f.joinpath(W).write_bytes(f.joinpath(W).read_bytes() + b"\0"), W),
    refused("weights: encoder.0.weight a column short", tensors(W, setting("encoder.0.weight", lambda t: t[:, :-1])),
            W, "encoder.0.weight"),
    refused("weights: decoder.2.weight transposed", tensors(W, setting("decoder.2.weight", lambda t: t.T)),
            W, "decoder.2.weight"),
    refused("weights: decoder.4.bias missing", tensors(W, setting("decoder.4.bias", ...)), W, "decoder.4.bias"),
    refused("weights: the whole decoder missing", tensors(W, drop_prefix("decoder.")), W, "decoder.", "more"),
    refused("weights: an extra tensor", tensors(W, setting("surprise", torch.zeros(3))), W, "surprise"),
    refused("weights: int32 encoder.0.weight", tensors(W, setting("encoder.0.weight", lambda t: t.int())),
            W, "encoder.0.weight"),
    refused("weights: int64 class_stds", tensors(W, setting("class_stds", lambda t: t.long())), W, "class_stds"),
    refused("weights: bool decoder.0.bias", tensors(W, setting("decoder.0.bias", lambda t: t > 0)),
            W, "decoder.0.bias"),
    fine("weights: float16 (loads as float32)", tensors(W, lambda v: v.update({k: t.half() for k, t in v.items()}))),
    fine("weights: float64 (loads as float32)", tensors(W, lambda v: v.update({k: t.double() for k, t in v.items()}))),
    refused("weights: a NaN in encoder.2.weight", tensors(W, setting("encoder.2.weight", poisoned(math.nan))),
            W, "encoder.2.weight"),
    refused("weights: an inf in class_means", tensors(W, setting("class_means", poisoned(math.inf))), W, "class_means"),
    refused("weights: float64 1e300 (inf as float32)",
            tensors(W, setting("decoder.4.bias", lambda t: poisoned(1e300)(t.double()))), W, "decoder.4.bias"),
    # The app reads the class statistics from steering.safetensors (vae.classes): weights without them still serve.
    Case("weights: no class statistics", tensors(W, drop_prefix("class_")), "clean", "error", (), (W, "class_means")),
    # config.json: bombs, refused before anything is allocated for them
    refused("config: hidden_dims [20000, 20000]", config(hidden_dims=[20000, 20000]), C, "hidden_dims"),
    refused("config: latent_dim 1e9", config(latent_dim=1e9), C, "latent_dim"),
    refused("config: latent_dim 1000000000", config(latent_dim=1_000_000_000), C, "latent_dim"),
    refused("config: image_shape [1, 100000, 100000]", config(image_shape=[1, 100_000, 100_000]), C, "image_shape"),
    refused("config: 80M parameters, within bounds", config(hidden_dims=[8192, 4096]), C, W, "encoder.0.weight"),
    refused("config: 5,000 classes", config(class_names=[str(i) for i in range(5000)]), C, "class_names"),
    refused("config: a file of 5 MB", write(C, " " * 5_000_000 + "{}"), C),
    # config.json: not a config
    refused("config: not JSON", write(C, "{not json"), C),
    refused("config: empty", write(C, ""), C),
    refused("config: non-UTF-8", write(C, b'{"latent_dim": "\xff\xfe"}'), C),
    refused("config: a list", write(C, "[1, 2]"), C),
    refused("config: null", write(C, "null"), C),
    refused("config: nested 100,000 deep", write(C, '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"), C),
    # config.json: wrong values
    refused("config: latent_dim '32'", config(latent_dim="32"), C, "latent_dim"),
    refused("config: latent_dim true", config(latent_dim=True), C, "latent_dim"),
    refused("config: latent_dim 33", config(latent_dim=33), C, W, "encoder.4.weight"),
    refused("config: hidden_dims '512'", config(hidden_dims="512"), C, "hidden_dims"),
    refused("config: hidden_dims null", config(hidden_dims=None), C, "hidden_dims"),
    refused("config: image_shape 784", config(image_shape=784), C, "image_shape"),
    refused("config: image_shape [28, 28]", config(image_shape=[28, 28]), C, "image_shape"),
    refused("config: dropout NaN", config(dropout=math.nan), C, "dropout"),
    refused("config: dropout 'none'", config(dropout="none"), C, "dropout"),
    refused("config: activation 'sigmoid'", config(activation="sigmoid"), C, "activation"),
    refused("config: activation 5", config(activation=5), C, "activation"),
    refused("config: an unknown key", config(norm="layer"), C, "norm"),
    refused("config: no class_names", config(class_names=...), C, "class_names"),
    refused("config: no latent_dim", config(latent_dim=...), C, "latent_dim"),
    refused("config: class_names []", config(class_names=[]), C, "class_names"),
    refused("config: no classes, and class statistics of none", lambda folder: [config(class_names=[])(folder), tensors(
        W, lambda v: v.update({k: v[k][:0] for k in ("class_means", "class_stds")}))(folder)], C, "class_names"),
    refused("config: class_names '0123456789'", config(class_names="0123456789"), C, "class_names"),
    refused("config: class_names 0..9 as numbers", config(class_names=list(range(10))), C, "class_names"),
    refused("config: a class name of 100,000 characters", config(class_names=[HUGE_NAME, *"123456789"]), C,
            "class_names"),
    refused("config: two classes named '3'", config(class_names=[*"0123456783"]), C, "class_names"),
    refused("config: 11 class names for 10 classes", config(class_names=[*"0123456789", "10"]), C, W, "class_means"),
    fine("config: no activation (older folders: ReLU)", config(activation=...)),
    # metrics.json
    side("metrics: test_loss 'abc'", write(M, '{"test_loss": "abc"}'), M, "test_loss"),
    side("metrics: one bad value among good ones", write(M, '{"test_loss": 93.9, "test_kl": "x"}'), M, "test_kl"),
    side("metrics: null", write(M, "null"), M),
    side("metrics: a list", write(M, "[93.9]"), M),
    side("metrics: not JSON", write(M, "{test_loss: 93.9"), M),
    side("metrics: non-UTF-8", write(M, b'{"test_loss": 93.9, "device": "\xff"}'), M),
    side("metrics: test_loss NaN", write(M, '{"test_loss": NaN}'), M, "test_loss"),
    side("metrics: test_loss true", write(M, '{"test_loss": true}'), M, "test_loss"),
    side("metrics: test_loss 10**400", write(M, '{"test_loss": 1' + "0" * 400 + "}"), M, "test_loss"),
    side("metrics: nested 100,000 deep", write(M, "[" * 100_000 + "]" * 100_000), M),
    side("metrics: a file of 5 MB", write(M, " " * 5_000_000 + "{}"), M),
    # README.md
    side("card: binary garbage", random_bytes(R, 5000), R),
    side("card: non-UTF-8", write(R, "---\nlicense: mit\n---\n# Caf\xe9\n".encode("latin-1")), R),
    side("card: NUL bytes", write(R, "---\nlicense: mit\n---\n# VAE\n\0\0\0"), R),
    fine("card: no front matter (shown as it is)", write(R, "# A VAE\n\nTrained on MNIST.\n")),
    side("card: front matter never closed", write(R, "---\nlicense: mit\n# A VAE\n"), R),
    side("card: a file of 5 MB", write(R, "# A VAE\n" + "words " * 900_000), R),
    # tsne.safetensors
    *[side(f"map truncated to {label}", truncate(TS, CUTS[label]), TS) for label in ("0 bytes", "half")],
    side("map truncated to the header", truncate(TS, lambda n: header_end(TS)), TS),
    side("map: random bytes", random_bytes(TS, 100_000), TS),
    side("map: latents of another size", tensors(TS, setting("latents", lambda t: t[:, :16])), TS, "latents"),
    side("map: no latents", tensors(TS, setting("latents", ...)), TS, "latents"),
    side("map: a NaN coordinate", tensors(TS, setting("coords", poisoned(math.nan))), TS, "coords"),
    side("map: a label out of range", tensors(TS, setting("labels", lambda t: t.clone().fill_(10))), TS, "labels"),
    side("map: float labels", tensors(TS, setting("labels", lambda t: t.float() + 0.5)), TS, "labels"),
    side("map: 25,000 points", tsne_points(25_000), TS),
    # tsne.png
    side("figure: truncated to half", truncate(PNG, lambda n: n // 2), PNG),
    side("figure: truncated to 100 bytes", truncate(PNG, lambda n: 100), PNG),
    side("figure: empty", write(PNG, b""), PNG),
    side("figure: random bytes", random_bytes(PNG, 50_000), PNG),
    side("figure: a JPEG", jpeg_figure, PNG),
    side("figure: claims 100000x100000 pixels", png_claiming(100_000, 100_000), PNG),
    side("figure: missing", remove(PNG), PNG),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Running a case
# ---------------------------------------------------------------------------------------------------------------------


class PeakMemory:
    """The most this process's resident memory rose above its level at the start, sampled every millisecond."""

    def __init__(self):
        self.process = psutil.Process()

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


@dataclass
class Outcome:
    kind: str  # "error", "problem", "clean", "loads" or "TRACEBACK <type>"
    text: str  # the UserError's message, or the problems recorded
    seconds: float
    memory: int  # bytes above the start


def run(load: Callable[[str], object], folder: Path) -> Outcome:
    loaded = None
    with PeakMemory() as memory:
        start = time.perf_counter()
        try:
            loaded = load(str(folder))
        except UserError as err:
            kind, text = "error", str(err)
        except Exception as err:  # what this suite exists to rule out
            kind, text = f"TRACEBACK {type(err).__name__}", f"{type(err).__name__}: {str(err)[:300]}"
        else:
            problems = loaded.problems if isinstance(loaded, Assets) else []
            kind = ("problem" if problems else "clean") if isinstance(loaded, Assets) else "loads"
            text = "\n".join(problems)
        seconds = time.perf_counter() - start
    del loaded
    return Outcome(kind, text, seconds, memory.growth)


RESULTS: dict[str, tuple[Outcome, Outcome]] = {}


@pytest.fixture(scope="module", autouse=True)
def warm_up(tmp_path_factory):
    """One load of the intact folder first, so lazy imports and caches do not count against the first case."""
    load_assets(SOURCE)


def copy_of_source(folder: Path) -> Path:
    folder.mkdir()
    for name in APP_FILES:
        if (SOURCE / name).is_file():  # latent_grid.png: only a 2-D model has one
            shutil.copy(SOURCE / name, folder / name)
    return folder


def check_usable(assets: Assets) -> None:
    """What the app reads from Assets without further checks."""
    assert assets.class_names and all(isinstance(name, str) for name in assets.class_names)
    for key in SHOWN_METRICS & assets.metrics.keys():  # formatted with :.2f
        value = assets.metrics[key]
        assert isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value), key
    assert isinstance(assets.card, str)
    if assets.tsne_png is not None:
        with Image.open(io.BytesIO(assets.tsne_png)) as img:
            assert img.format == "PNG"
            img.load()
    if assets.tsne is not None:
        assert torch.isfinite(assets.tsne["coords"]).all() and torch.isfinite(assets.tsne["latents"]).all()
        assert int(assets.tsne["labels"].max()) < len(assets.class_names)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_broken_folder_loads_or_fails_with_a_clear_message(case, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", lambda *a, **k: pytest.fail("Hub lookup"))
    folder = copy_of_source(tmp_path / "vae-mnist")
    case.corrupt(folder)
    assets = run(load_assets, folder)
    model = run(VAE.from_pretrained, folder)
    RESULTS[case.name] = (assets, model)
    failures = []  # both calls checked before failing, so that a failure tells the whole story of its case
    for call, outcome, expected in [("load_assets", assets, case.assets), ("from_pretrained", model, case.model)]:
        if outcome.kind != expected:
            failures.append(f"{call}: {outcome.kind} instead of {expected}: {outcome.text[:500]}")
        elif outcome.kind in ("error", "problem"):
            names = case.names if call == "load_assets" or case.model_names is None else case.model_names
            missing = [name for name in names if name not in outcome.text]
            if missing:
                failures.append(f"{call} does not name {missing}: {outcome.text[:500]}")
            if len(outcome.text) > MESSAGE_LIMIT:
                failures.append(f"{call}: a message of {len(outcome.text):,} characters")
            if re.search(rf"(.)\1{{{ECHO}}}", outcome.text):
                failures.append(f"{call} echoes a huge value")
        if outcome.seconds > TIME_LIMIT:
            failures.append(f"{call} took {outcome.seconds:.1f} s")
        if outcome.memory > MEMORY_LIMIT:
            failures.append(f"{call} took {outcome.memory / 2**20:,.0f} MB")
    assert not failures, "\n".join(failures)
    if assets.kind in ("problem", "clean"):
        check_usable(load_assets(folder))


def test_a_bad_side_file_keeps_the_rest_of_the_folder(tmp_path):
    """A bad metrics.json keeps the good values; a bad figure leaves the interactive map on."""
    folder = copy_of_source(tmp_path / "vae-mnist")
    (folder / "metrics.json").write_text(json.dumps({"test_loss": 93.9, "test_kl": "abc", "test_recon": None}))
    jpeg_figure(folder)
    assets = load_assets(folder)
    assert assets.metrics == {"test_loss": 93.9}
    assert assets.tsne is not None and assets.map_points is not None and assets.tsne_png is None
    assert assets.no_steering is None and assets.no_map is None
    assert "# " in assets.card


def test_a_clear_error_names_at_most_a_few_tensors(tmp_path):
    folder = copy_of_source(tmp_path / "vae-mnist")
    tensors(W, lambda values: values.clear() or values.update({f"extra.{i}": torch.zeros(1) for i in range(50)}))(
        folder
    )
    with pytest.raises(UserError) as err:
        VAE.from_pretrained(folder)
    message = str(err.value)
    assert "extra.0" in message and "and 47 more" in message and "extra.49" not in message


def test_a_hub_repo_is_checked_as_a_folder_is(tmp_path, monkeypatch):
    """The same checks on the files a Hub download brings, with the repo id in the message."""
    folder = copy_of_source(tmp_path / "snapshot")
    monkeypatch.setattr(
        "huggingface_hub.hub_mixin.hf_hub_download", lambda repo_id, filename, **kwargs: str(folder / filename)
    )
    config(latent_dim="32")(folder)
    with pytest.raises(UserError, match="latent_dim") as err:
        VAE.from_pretrained("someone/vae-mnist")
    assert "someone/vae-mnist/config.json" in str(err.value)
    shutil.copy(SOURCE / C, folder / C)
    truncate(W, lambda n: n // 2)(folder)
    with pytest.raises(UserError, match="Could not load the model in someone/vae-mnist: its model.safetensors"):
        VAE.from_pretrained("someone/vae-mnist")

    def no_config(repo_id: str, filename: str, **kwargs) -> str:
        raise EntryNotFoundError(f"{filename} not in {repo_id}")

    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", no_config)
    with pytest.raises(UserError, match="The Hub repo someone/vae-mnist has no config.json"):
        VAE.from_pretrained("someone/vae-mnist")


def test_summary_of_broken_folders(capsys):
    """The outcomes of every case above, as a table (printed even without -s)."""
    if not RESULTS:
        pytest.skip("no case ran")
    rows = [
        (name, a.kind, m.kind, max(a.seconds, m.seconds), max(a.memory, m.memory) / 2**20)
        for name, (a, m) in RESULTS.items()
    ]
    width = max(len(row[0]) for row in rows)
    lines = [f"{'case':{width}}  {'load_assets':22}  {'from_pretrained':22}  {'s':>5}  {'MB':>6}"]
    lines += [f"{n:{width}}  {a:22}  {m:22}  {s:5.2f}  {mb:6.0f}" for n, a, m, s, mb in rows]
    kinds = [kind for row in rows for kind in row[1:3]]
    tracebacks = sum(kind.startswith("TRACEBACK") for kind in kinds)
    lines.append(
        f"{len(rows)} cases: load_assets {sum(r[1] == 'error' for r in rows)} clear errors, "
        f"{sum(r[1] == 'problem' for r in rows)} loaded with a problem, {sum(r[1] == 'clean' for r in rows)} clean; "
        f"from_pretrained {sum(r[2] == 'error' for r in rows)} clear errors, {sum(r[2] == 'loads' for r in rows)} "
        f"loaded; tracebacks {tracebacks}; over {TIME_LIMIT:.0f} s {sum(r[3] >= TIME_LIMIT for r in rows)}; "
        f"over {MEMORY_LIMIT / 2**20:.0f} MB {sum(r[4] * 2**20 >= MEMORY_LIMIT for r in rows)}"
    )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert tracebacks == 0
