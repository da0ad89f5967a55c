"""The Space's settings: the README's front matter as the Hub reads it, and what the Space installs.

The Hub builds a Space from this README's YAML header and installs requirements.txt; a wrong key, a
description over the Hub's limit or a missing package only shows when the Space fails to build.
"""

from __future__ import annotations

import re
from pathlib import Path

import gradio
from huggingface_hub import SpaceCard

ROOT = Path(__file__).resolve().parent.parent
# The keys of a Space's configuration (https://huggingface.co/docs/hub/spaces-config-reference).
SPACE_KEYS = {
    "title", "emoji", "colorFrom", "colorTo", "sdk", "python_version", "sdk_version", "suggested_hardware",
    "suggested_storage", "app_file", "app_port", "base_path", "fullWidth", "header", "short_description",
    "models", "datasets", "tags", "thumbnail", "pinned", "hf_oauth", "hf_oauth_scopes", "hf_oauth_expiration_minutes",
    "hf_oauth_authorized_org", "disable_embedding", "startup_duration_timeout", "custom_headers", "preload_from_hub",
    "license",
}  # fmt: skip
COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def space_settings() -> dict:
    return SpaceCard.load(ROOT / "README.md").data.to_dict()  # the Hub's own parser


def test_front_matter_is_a_valid_space_configuration():
    settings = space_settings()
    assert set(settings) <= SPACE_KEYS, set(settings) - SPACE_KEYS
    assert settings["sdk"] == "gradio" and (ROOT / settings["app_file"]).is_file()
    assert settings["sdk_version"] == gradio.__version__, "the Space runs the Gradio the tests ran"
    assert settings["colorFrom"] in COLOURS and settings["colorTo"] in COLOURS
    assert re.fullmatch(r"3\.1[1-9]", str(settings["python_version"])), "a Python the project supports"
    assert settings["license"] == "mit"


def test_short_description_fits_and_is_true():
    description = space_settings()["short_description"]
    assert 0 < len(description) <= 60, "the Hub refuses longer ones"
    assert "VAE" in description


def test_the_space_signs_visitors_in_to_push_their_models():
    settings = space_settings()
    assert settings["hf_oauth"] is True
    assert {"write-repos", "manage-repos"} <= set(settings["hf_oauth_scopes"])


def test_the_space_installs_the_app_and_the_trainer():
    """requirements.txt is the Space's install: the app's packages and the trainer's (the Train tab runs it), and
    Gradio's OAuth extra for the Train tab's login button."""
    names = {
        re.split(r"[<>=!~;\[ ]", line.strip())[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-r"))
    }
    assert {"torch", "gradio", "huggingface-hub", "safetensors", "numpy", "pandas", "pillow", "pyyaml"} <= names
    assert {"torchvision", "accelerate", "scikit-learn", "matplotlib", "tqdm"} <= names
    assert "gradio[oauth]" in (ROOT / "requirements.txt").read_text()
    assert "-r requirements.txt" in (ROOT / "requirements-train.txt").read_text(), "the name older commands use"


def test_the_documented_preload_is_what_the_app_reads_pinned_to_a_commit():
    """docs/space.md's front matter for a Space that bakes its model in: `models:` links the model, and
    `preload_from_hub` lists exactly the files the app reads (vae.folder.APP_FILES) at one full commit sha, which
    VAE_CHECKPOINT names too."""
    import yaml

    from vae.folder import APP_FILES

    page = (ROOT / "docs" / "space.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", page, re.S)
    settings = yaml.safe_load(block)
    assert settings["models"] == ["your-name/vae-mnist"]
    (entry,) = settings["preload_from_hub"]
    repo, files, commit = entry.split()
    assert repo == "your-name/vae-mnist" and files.split(",") == APP_FILES
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and f"VAE_CHECKPOINT={repo}@{commit}" in page
