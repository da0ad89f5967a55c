"""The Hub side: exactly which files an upload sends, a failed upload that keeps the folder and says how to
retry, the token check before training (against a stand-in for the Hub's HTTP API on 127.0.0.1), the model
card as the Hub parses it, and save_pretrained / push_to_hub carrying the trained card. Nothing reaches the
network: uploads are replaced by recorders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from fake_hub import fake_hub
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.utils import filter_repo_objects

from vae import VAE, UserError, evaluate
from vae.architecture import ModelConfig
from vae.card import HUB_METADATA, card_data, write_model_card
from vae.config import build_config, shareable_config
from vae.hub import IGNORED, check_hub_access, push_folder

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "checkpoints" / "vae-mnist"

UPLOADED = {"config.json", "model.safetensors", "README.md", "samples.png", "figures/latent_walk.png"}
LOCAL_ONLY = {"training_state/epoch-0001/x", "training_state/epoch-0001/model.safetensors", "eval.json"}
LOCAL_ONLY |= {".README.md.abc123.tmp", "figures/.samples.png.tmp", ".gitattributes"}


class CommitInfo:
    commit_url = "https://huggingface.co/someone/vae/commit/abc"


class FakeApi:
    """Records the calls push_folder makes; `fail_on` names the method that raises, as a network error would."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.fail_on = fail_on
        self.sent: dict[str, bytes] = {}  # the files of the folder given to upload_folder, read during the call

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))
        if self.fail_on == "create_repo":
            raise ConnectionError("the Hub is unreachable")

    def upload_folder(self, *args, **kwargs):
        self.calls.append(("upload_folder", args, kwargs))
        folder = Path(kwargs["folder_path"])
        self.sent = {name: (folder / name).read_bytes() for name in files_in(folder)}
        if self.fail_on == "upload_folder":
            raise ConnectionError("connection reset during upload")
        return CommitInfo()


@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = tmp_path / "vae-mnist"
    for name in UPLOADED | LOCAL_ONLY:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    return folder


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_push_folder_uploads_the_model_files_in_one_commit(model_folder, capsys):
    api = FakeApi()
    url = push_folder(model_folder, "someone/vae", private=True, api=api)
    assert url == CommitInfo.commit_url
    assert [name for name, _, _ in api.calls] == ["create_repo", "upload_folder"]
    (_, args, kwargs) = api.calls[0]
    assert args == ("someone/vae",) and kwargs["private"] is True and kwargs["exist_ok"] is True
    (_, args, kwargs) = api.calls[1]
    assert kwargs["repo_id"] == "someone/vae" and kwargs["ignore_patterns"] == IGNORED
    # what huggingface_hub itself would send from the copy it was given (removed since), given these patterns
    assert Path(kwargs["folder_path"]).name == model_folder.name and not Path(kwargs["folder_path"]).exists()
    assert set(filter_repo_objects(list(api.sent), ignore_patterns=IGNORED)) == set(api.sent) == UPLOADED
    assert "pushed" in capsys.readouterr().out


def test_a_pushed_train_config_names_no_place_on_the_machine(model_folder):
    """Absolute data and output folders (a user name, a server's layout, a visitor's session id) stay home."""
    settings = {"data_dir": "/home/alice/data", "output_dir": "/tmp/visitors/3f9a2c1b/visitor-1", "epochs": 3}
    (model_folder / "train_config.yaml").write_text(yaml.safe_dump(settings))
    api = FakeApi()
    push_folder(model_folder, "someone/vae", api=api)
    pushed = yaml.safe_load(api.sent["train_config.yaml"])
    assert pushed == {"data_dir": "data", "output_dir": "outputs/vae-mnist", "epochs": 3}
    assert "alice" in (model_folder / "train_config.yaml").read_text(), "the local record is kept as it was"
    relative = {"data_dir": "my data", "output_dir": "outputs/run 1"}
    assert yaml.safe_load(shareable_config(yaml.safe_dump(relative))) == relative
    for climbing in ("../../home/alice", "C:\\Users\\alice\\data", "~alice/data"):
        assert yaml.safe_load(shareable_config(yaml.safe_dump({"data_dir": climbing})))["data_dir"] == "data"


def test_push_folder_leaves_the_visibility_to_the_account_unless_asked(model_folder):
    """No --hub-private: the Hub's default for the account (private=None), not private=False."""
    for private in (None, False, True):
        api = FakeApi()
        push_folder(model_folder, "someone/vae", private=private, api=api)
        assert api.calls[0][2]["private"] is private


@pytest.mark.parametrize("fail_on", ["create_repo", "upload_folder"])
@pytest.mark.parametrize(("private", "flag"), [(None, ""), (False, " --no-private"), (True, " --private")])
def test_a_failed_upload_keeps_the_folder_and_says_how_to_retry(model_folder, fail_on, private, flag):
    before = files_in(model_folder)
    with pytest.raises(UserError, match="failed \\(ConnectionError") as err:
        push_folder(model_folder, "someone/vae", private=private, api=FakeApi(fail_on=fail_on))
    assert files_in(model_folder) == before
    assert str(err.value).endswith(f'python -m vae.hub --folder "{model_folder}" --hub-model-id someone/vae{flag}')


def test_push_folder_lets_programming_errors_through(model_folder):
    """Only the Hub's and the network's errors become a message; a bug stays a traceback."""

    class Broken(FakeApi):
        def upload_folder(self, *args, **kwargs):
            raise TypeError("a bug")

    with pytest.raises(TypeError):
        push_folder(model_folder, "someone/vae", api=Broken())


@pytest.fixture
def no_token(tmp_path, monkeypatch) -> Path:
    """No HF_TOKEN in the environment and an empty Hugging Face home: not logged in. Returns the token path."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(home / "token"))  # read at import
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    return home / "token"


def test_check_hub_access_without_a_token_says_how_to_log_in(no_token):
    with pytest.raises(UserError, match="needs a Hugging Face token") as err:
        check_hub_access("someone/vae")
    assert "hf auth login" in str(err.value) and "HF_TOKEN" in str(err.value)


@pytest.fixture
def online(no_token, monkeypatch):
    """A token in HF_TOKEN and offline mode off (the tests' default is on): what a user pushing has."""
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)


def test_check_hub_access_passes_a_write_token_and_asks_the_hub(online):
    with fake_hub() as hub:
        check_hub_access("someone/vae", HfApi(endpoint=hub.url))
        hub.auth_check_status = 200  # the repo exists and the token may write to it
        check_hub_access("someone/vae", HfApi(endpoint=hub.url))
        hub.whoami["orgs"] = [{"name": "a-lab"}]
        check_hub_access("a-lab/vae", HfApi(endpoint=hub.url))
    assert ("GET", "/api/whoami-v2") in hub.requests
    assert ("GET", "/api/models/someone/vae/auth-check/write") in hub.requests


def test_check_hub_access_finds_a_token_where_hf_auth_login_leaves_it(no_token, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    no_token.write_text("hf_not_a_real_token_either")
    with fake_hub() as hub:
        check_hub_access("someone/vae", HfApi(endpoint=hub.url))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"whoami_status": 401}, "The Hugging Face Hub rejected the token"),
        ({"whoami": {"name": "someone", "auth": {"accessToken": {"role": "read"}}}}, "is read-only"),
        ({"auth_check_status": 403}, "refused write access to someone/vae \\(HTTP 403\\)"),
    ],
    ids=["rejected", "read-only", "no-write-access"],
)
def test_check_hub_access_names_a_token_that_cannot_push(online, change, message):
    with fake_hub() as hub:
        for key, value in change.items():
            setattr(hub, key, value)
        with pytest.raises(UserError, match=message) as err:
            check_hub_access("someone/vae", HfApi(endpoint=hub.url))
    assert "\n" not in str(err.value) and "token" in str(err.value)


def test_check_hub_access_names_a_namespace_the_token_does_not_own(online):
    with fake_hub() as hub, pytest.raises(UserError, match="belongs to someone, who cannot create repos under 'other'"):
        check_hub_access("other/vae", HfApi(endpoint=hub.url))


def test_check_hub_access_names_an_unreachable_hub(online):
    with fake_hub() as hub:
        closed = hub.url  # nothing listens there once the stand-in has stopped
    with pytest.raises(UserError, match="Could not reach the Hugging Face Hub at .*ConnectError"):
        check_hub_access("someone/vae", HfApi(endpoint=closed))


def test_check_hub_access_names_offline_mode(online, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="HF_HUB_OFFLINE=1"):
        check_hub_access("someone/vae", FakeApi())  # refused before any call


@pytest.mark.parametrize("repo_id", ["vae-mnist", "", None, "a/b/c", "/vae", "user/", "my user/vae mnist", "u/x--y"])
def test_check_hub_access_refuses_repo_ids_the_hub_would(online, repo_id):
    with pytest.raises(UserError, match="--hub-model-id"):
        check_hub_access(repo_id, FakeApi())


ARCHITECTURE = {"image_shape": [1, 28, 28], "hidden_dims": [512, 256], "latent_dim": 32, "dropout": 0.0}
ARCHITECTURE |= {"class_names": [str(d) for d in range(10)]}
METRICS = {"test_loss": 91.2345, "test_recon": 64.5, "test_kl": 26.7345, "test_iw_nll": 86.019, "iw_samples": 100}
METRICS |= {"test_images": 10000, "best_epoch": 28, "device": "cpu", "train_wall_seconds": 412.0}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_model_card_has_hub_front_matter_and_the_test_metrics(tmp_path):
    (tmp_path / "samples.png").write_bytes(b"png")
    write_model_card(tmp_path, build_config({"epochs": 30}), ModelConfig(**ARCHITECTURE), METRICS)
    card = (tmp_path / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "pytorch" and meta["license"] == "mit"
    assert {"vae", "variational-autoencoder", "pytorch_model_hub_mixin"} <= set(meta["tags"])
    assert meta["datasets"] == ["ylecun/mnist"]
    data = ModelCard.load(tmp_path / "README.md").data  # as the Hub's own parser reads it
    mixin = VAE._hub_mixin_info.model_card_data  # what the mixin writes for the class: one source, no drift
    for key in ("library_name", "license", "tags", "pipeline_tag"):
        assert getattr(data, key) == getattr(mixin, key), key
    assert data.pipeline_tag == "unconditional-image-generation" and data.datasets == ["ylecun/mnist"]
    results = {r.metric_type: r for r in data.eval_results}
    assert results["negative_elbo"].metric_value == 91.23 and results["nll"].metric_value == 86.02
    assert results["nll"].metric_args == {"importance_samples": 100} and "K=100" in results["nll"].metric_name
    assert {(r.dataset_type, r.dataset_split, r.task_type) for r in data.eval_results} == {
        ("ylecun/mnist", "test", "unconditional-image-generation")
    }
    assert "https://arxiv.org/abs/1312.6114" in card and "MNIST VAE studio" in card and "train.py" in card
    assert "| test negative ELBO (nats / image) | 91.23 |" in card
    assert "| test -log p(x), IW bound with k=100 | 86.02 |" in card
    assert "| latent dimension | 32 |" in card and "784 → 512 → 256 → 2 x 32" in card
    assert "](samples.png)" in card and "tsne.png" not in card  # only figures that exist are shown
    assert "30 epochs" in card and "On 10000 test images" in card


def test_model_card_reads_well(tmp_path):
    """Issue 29: numbers as people read them (2015 s read as a year; 1.6666666666666667 epochs), a table header with
    words in it, one Links section, and a code sample that loads this model, not "path/or/user-repo"."""
    config = build_config({"kl_warmup_epochs": 5 / 3, "output_dir": "outputs/my vae"})
    write_model_card(tmp_path, config, ModelConfig(**ARCHITECTURE), METRICS | {"train_wall_seconds": 2015.4})
    card = (tmp_path / "README.md").read_text()
    assert "KL warm-up 1.7 epochs" in card and "in 33 min 35 s." in card
    assert "| part | this model |" in card and "| | |" not in card
    assert card.count("## Links") == 1
    assert 'VAE.from_pretrained("outputs/my vae")' in card and "path/or/user-repo" not in card

    config = build_config({"kl_warmup_epochs": 0, "output_dir": "/srv/visitors/visitor-1", "hub_model_id": None})
    write_model_card(tmp_path, config, ModelConfig(**ARCHITECTURE), METRICS | {"train_wall_seconds": 4551})
    card = (tmp_path / "README.md").read_text()
    assert "no KL warm-up" in card and "in 1 h 15 min." in card
    assert 'VAE.from_pretrained("visitor-1")' in card and "/srv" not in card, "no place on the machine that wrote it"
    config = build_config({"hub_model_id": "someone/vae-mnist", "push_to_hub": True})
    write_model_card(tmp_path, config, ModelConfig(**ARCHITECTURE), METRICS | {"train_wall_seconds": 42})
    card = (tmp_path / "README.md").read_text()
    assert 'VAE.from_pretrained("someone/vae-mnist")' in card and "in 42 s." in card
    assert "torch.compile" not in card
    compiled = {"compiled_step": True, "compile_seconds": 12.3, "train_wall_seconds": 541.2}
    write_model_card(tmp_path, config, ModelConfig(**ARCHITECTURE), METRICS | compiled)
    card = (tmp_path / "README.md").read_text()
    assert "(mixed precision no, the step compiled by torch.compile in 12 s) in 9 min 1 s." in card


def test_a_pushed_card_loads_the_repo_it_was_pushed_to(model_folder):
    (model_folder / "README.md").write_text('# A VAE\n\n```python\nmodel = VAE.from_pretrained("outputs/vae")\n```\n')
    api = FakeApi()
    push_folder(model_folder, "someone/vae", api=api)
    assert b'VAE.from_pretrained("someone/vae")' in api.sent["README.md"]
    assert 'from_pretrained("outputs/vae")' in (model_folder / "README.md").read_text(), "the local card is kept"


def test_a_card_written_again_keeps_the_id_its_code_sample_loads(tmp_path):
    """--card-only (and --update-card, vae.steering) keep the card's id; the placeholder of older cards becomes the
    folder as given."""
    folder = tmp_path / "vae-mnist"
    shutil.copytree(CHECKPOINT, folder, ignore=shutil.ignore_patterns(".*", "*.safetensors"))
    card = (folder / "README.md").read_text()
    evaluate.main(["--checkpoint", str(folder), "--card-only"])
    assert (folder / "README.md").read_text() == card, 'still loads "checkpoints/vae-mnist"'
    (folder / "README.md").write_text(card.replace('"checkpoints/vae-mnist"', '"path/or/user-repo"'))
    evaluate.main(["--checkpoint", str(folder), "--card-only"])
    assert 'VAE.from_pretrained("vae-mnist")' in (folder / "README.md").read_text(), "its name: no path of this machine"


def test_the_committed_cards_are_the_ones_the_code_writes(tmp_path, monkeypatch):
    """checkpoints/*/README.md are what `python -m vae.evaluate --checkpoint checkpoints/NAME --card-only` writes
    today (run again when the card's text changes), their code sample loading checkpoints/NAME."""
    monkeypatch.chdir(tmp_path)
    for folder in sorted((ROOT / "checkpoints").iterdir()):
        copy = Path("checkpoints") / folder.name
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(".*", "*.safetensors"))
        evaluate.main(["--checkpoint", str(copy), "--card-only"])
        assert (copy / "README.md").read_text() == (folder / "README.md").read_text(), folder.name


def test_model_card_for_an_image_folder_names_no_hub_dataset_and_skips_missing_metrics(tmp_path):
    config = build_config({"dataset": "imagefolder", "data_dir": "photos"})
    metrics = {k: v for k, v in METRICS.items() if k != "test_iw_nll"}
    write_model_card(tmp_path, config, ModelConfig(**ARCHITECTURE | {"image_shape": [3, 32, 32]}), metrics)
    card = (tmp_path / "README.md").read_text()
    assert "datasets" not in front_matter(card)
    assert [r.metric_type for r in ModelCard.load(tmp_path / "README.md").data.eval_results] == ["negative_elbo"]
    assert "IW bound" not in card and "| test negative ELBO (nats / image) | 91.23 |" in card
    assert "3x32x32" in card and "3072 → 512" in card
    assert files_in(tmp_path) == ["README.md"]  # written atomically: no temporary file left behind


class MixinUpload:
    """Stands in for the HfApi that VAE.push_to_hub (the mixin) creates: records what the upload would send."""

    uploads: list[dict[str, bytes]] = []

    def __init__(self, *args, **kwargs):
        pass

    def create_repo(self, repo_id, **kwargs):
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, folder_path, **kwargs):
        folder = Path(folder_path)
        MixinUpload.uploads.append({p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
        return "https://huggingface.co/someone/vae/commit/abc"


@pytest.fixture
def trained_copy(tmp_path) -> Path:
    """The committed model folder, copied where a user keeps models (a path with a space)."""
    folder = tmp_path / "my models" / "vae-mnist"
    shutil.copytree(CHECKPOINT, folder, ignore=shutil.ignore_patterns(".*", "eval.json"))
    return folder


def test_save_pretrained_carries_the_trained_card_metrics_and_figures(trained_copy, tmp_path):
    settings = yaml.safe_load((trained_copy / "train_config.yaml").read_text())
    (trained_copy / "train_config.yaml").write_text(yaml.safe_dump(settings | {"data_dir": "/home/alice/data"}))
    model = VAE.from_pretrained(trained_copy)
    model.save_pretrained(tmp_path / "saved")
    saved = tmp_path / "saved"
    for name in ("README.md", "metrics.json", "samples.png", "tsne.png", "tsne.safetensors"):
        assert (saved / name).read_bytes() == (trained_copy / name).read_bytes(), name
    assert yaml.safe_load((saved / "train_config.yaml").read_text()) == settings | {"data_dir": "data"}, "no paths"
    assert ModelCard.load(saved / "README.md").data.eval_results, "the card with its test metrics"
    again = VAE.from_pretrained(saved)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))


def test_save_pretrained_of_a_changed_model_writes_a_card_of_its_own(trained_copy, tmp_path):
    model = VAE.from_pretrained(trained_copy)
    with torch.no_grad():
        model.decoder[0].bias.add_(1.0)  # no longer the model the trained card describes
    model.save_pretrained(tmp_path / "changed")
    card = (tmp_path / "changed" / "README.md").read_text()
    assert "More Information Needed" not in card and "No test metrics were recorded" in card
    data = ModelCard.load(tmp_path / "changed" / "README.md").data
    assert data.library_name == "pytorch" and not data.eval_results
    assert not (tmp_path / "changed" / "metrics.json").exists()
    fresh = VAE(hidden_dims=(16,), latent_dim=2)  # never trained by train.py
    fresh.save_pretrained(tmp_path / "fresh")
    assert "More Information Needed" not in (tmp_path / "fresh" / "README.md").read_text()


def test_push_to_hub_uploads_the_trained_card_or_refuses(trained_copy, monkeypatch):
    monkeypatch.setattr("huggingface_hub.hub_mixin.HfApi", MixinUpload)
    MixinUpload.uploads.clear()
    model = VAE.from_pretrained(trained_copy)
    model.push_to_hub("someone/vae")
    (sent,) = MixinUpload.uploads
    assert sent["README.md"] == (trained_copy / "README.md").read_bytes()
    assert {"metrics.json", "samples.png", "tsne.png", "config.json", "model.safetensors"} <= set(sent)
    with torch.no_grad():
        model.encoder[0].weight.mul_(0.5)
    with pytest.raises(UserError, match="no trained model card to push") as err:
        model.push_to_hub("someone/vae")
    assert "python -m vae.hub --folder" in str(err.value)
    assert len(MixinUpload.uploads) == 1, "nothing more was uploaded"


def test_the_card_front_matter_is_the_models_hub_metadata():
    """vae.card, below vae.model, writes the same Hub metadata as the model class's mixin holds (issue 31: the card no
    longer reads it from the class, which would make the two modules import each other)."""
    assert card_data(None, "", {}).to_dict() == VAE._hub_mixin_info.model_card_data.to_dict()
    assert VAE._hub_mixin_info.paper_url == HUB_METADATA["paper_url"]
