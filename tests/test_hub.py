"""The Hub side: exactly which files an upload sends, a failed upload that keeps the folder and says how to
retry, the token check before training, and the model card. The Hub API is replaced by a recorder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects

from vae import UserError
from vae.config import build_config
from vae.hub import IGNORED, check_hub_access, push_folder, write_model_card

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

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))
        if self.fail_on == "create_repo":
            raise ConnectionError("the Hub is unreachable")

    def upload_folder(self, *args, **kwargs):
        self.calls.append(("upload_folder", args, kwargs))
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
    assert kwargs["repo_id"] == "someone/vae" and kwargs["folder_path"] == str(model_folder)
    assert kwargs["ignore_patterns"] == IGNORED
    # what huggingface_hub itself would send, given these patterns
    sent = set(filter_repo_objects(files_in(model_folder), ignore_patterns=kwargs["ignore_patterns"]))
    assert sent == UPLOADED
    assert "pushed" in capsys.readouterr().out


def test_push_folder_creates_a_public_repo_unless_asked(model_folder):
    api = FakeApi()
    push_folder(model_folder, "someone/vae", api=api)
    assert api.calls[0][2]["private"] is False


@pytest.mark.parametrize("fail_on", ["create_repo", "upload_folder"])
@pytest.mark.parametrize("private", [False, True])
def test_a_failed_upload_keeps_the_folder_and_prints_the_retry_command(model_folder, capsys, fail_on, private):
    before = files_in(model_folder)
    assert push_folder(model_folder, "someone/vae", private=private, api=FakeApi(fail_on=fail_on)) is None
    assert files_in(model_folder) == before
    err = capsys.readouterr().err
    assert err.startswith("error:") and "ConnectionError" in err
    retry = f"python -m vae.hub --folder {model_folder} --hub-model-id someone/vae"
    assert retry in err
    assert ("--private" in err) == private


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


def test_check_hub_access_passes_with_a_token(no_token, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    check_hub_access("someone/vae")
    monkeypatch.delenv("HF_TOKEN")
    no_token.write_text("hf_not_a_real_token_either")  # as `hf auth login` leaves it
    check_hub_access("someone/vae")


@pytest.mark.parametrize("repo_id", ["vae-mnist", "", None])
def test_check_hub_access_wants_user_slash_name(monkeypatch, repo_id):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(UserError, match="must look like user/name"):
        check_hub_access(repo_id)


ARCHITECTURE = {"image_shape": [1, 28, 28], "hidden_dims": [512, 256], "latent_dim": 32, "dropout": 0.0}
ARCHITECTURE |= {"class_names": [str(d) for d in range(10)]}
METRICS = {"test_loss": 91.2345, "test_recon": 64.5, "test_kl": 26.7345, "test_iw_nll": 86.019, "iw_samples": 100}
METRICS |= {"test_images": 10000, "best_epoch": 28, "device": "cpu", "train_wall_seconds": 412.0}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_model_card_has_hub_front_matter_and_the_test_metrics(tmp_path):
    (tmp_path / "samples.png").write_bytes(b"png")
    write_model_card(tmp_path, build_config({"epochs": 30}), ARCHITECTURE, METRICS)
    card = (tmp_path / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "pytorch" and meta["license"] == "mit"
    assert {"vae", "variational-autoencoder", "pytorch_model_hub_mixin"} <= set(meta["tags"])
    assert meta["datasets"] == ["ylecun/mnist"]
    parsed = ModelCard.load(tmp_path / "README.md")  # the Hub's own parser agrees
    assert parsed.data.library_name == "pytorch" and "vae" in parsed.data.tags
    assert "| test negative ELBO (nats / image) | 91.23 |" in card
    assert "| test -log p(x), IW bound with k=100 | 86.02 |" in card
    assert "| latent dimension | 32 |" in card and "784 → 512 → 256 → 2 x 32" in card
    assert "](samples.png)" in card and "tsne.png" not in card  # only figures that exist are shown
    assert "30 epochs" in card and "On 10000 test images" in card


def test_model_card_for_an_image_folder_names_no_hub_dataset_and_skips_missing_metrics(tmp_path):
    config = build_config({"dataset": "imagefolder", "data_dir": "photos"})
    metrics = {k: v for k, v in METRICS.items() if k != "test_iw_nll"}
    write_model_card(tmp_path, config, ARCHITECTURE | {"image_shape": [3, 32, 32]}, metrics)
    card = (tmp_path / "README.md").read_text()
    assert "datasets" not in front_matter(card)
    assert "IW bound" not in card and "| test negative ELBO (nats / image) | 91.23 |" in card
    assert "3x32x32" in card and "3072 → 512" in card
    assert files_in(tmp_path) == ["README.md"]  # written atomically: no temporary file left behind
