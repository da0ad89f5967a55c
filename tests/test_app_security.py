"""What the app promises a Space's owner and its visitors, through a real server (gradio_client) and a real browser
(headless Chromium): no push with a token that is not the visitor's own unless the owner turned it on, and text from
a model folder (class names, from any Hub repo's config.json) shown as the literal text it is, never as markup.

The Hub is tests/fake_hub.py on 127.0.0.1: it records every request and the token it carried.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
from fake_hub import fake_hub
from gradio_client import Client
from gradio_client.exceptions import AppError
from huggingface_hub import HfApi
from selenium.webdriver.common.by import By
from test_app import launched
from test_browser import (  # noqa: F401 (browser and chromium are fixtures)
    TIMEOUT,
    browser,
    chromium,
    click_picture,
    hover_data,
    hover_picture,
    loaded_image,
    no_thumbnail,
    open_tab,
    waiting,
)
from test_train_tab import OUTPUTS, SETTINGS, training_studio

import app
from vae import live
from vae.assets import load_assets
from vae.checks import literal
from vae.visitors import Visitors

pytestmark = pytest.mark.slow

OWNER_TOKEN = "hf_owner_secret"  # the token of the machine (a Space's owner): HF_TOKEN in the server's environment
OWNER = "space-owner"  # whose it is, as the fake Hub's whoami answers


@pytest.fixture(scope="module")
def trained(mnist_dir, tmp_path_factory):
    """A studio built as `python app.py` builds it (no --push-with-machine-token) and a model an anonymous visitor
    trained there: (client, model name, model folder)."""
    with training_studio(mnist_dir, tmp_path_factory) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
        final = dict(zip(OUTPUTS, client.predict(**SETTINGS, api_name="/train"), strict=True))
        name = final["model_name"]
        (folder,) = Path(tempfile.gettempdir()).glob(f"vae-studio-visitors-*/*/{name}")
        yield client, name, folder


@pytest.fixture
def hub(monkeypatch):
    """The fake Hub as this process's Hub (the server runs in it), online, with the owner's token in HF_TOKEN."""
    with fake_hub() as hub:
        hub.whoami = {"name": OWNER, "orgs": [], "auth": {"accessToken": {"role": "write"}}}
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", OWNER_TOKEN)
        for name in ("SPACE_ID", "OAUTH_CLIENT_ID", "VAE_PUSH_WITH_MACHINE_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        yield hub


def test_on_a_space_an_anonymous_visitor_cannot_push_with_the_spaces_token(trained, hub, monkeypatch):
    client, name, _ = trained
    monkeypatch.setenv("SPACE_ID", f"{OWNER}/vae-studio")  # as the Spaces runtime sets it
    with pytest.raises(AppError, match="Sign in with the Hugging Face button") as refused:
        client.predict(name, f"{OWNER}/taken-over", True, api_name="/push")
    assert "nothing was pushed" in str(refused.value)
    assert hub.requests == [], f"a Hub call without the visitor's login: {hub.requests} with {hub.tokens}"


def test_a_local_app_refuses_the_machines_token_without_the_flag(trained, hub):
    client, name, _ = trained
    with pytest.raises(AppError, match="python app.py --push-with-machine-token"):
        client.predict(name, f"{OWNER}/my-vae", True, api_name="/push")
    assert hub.requests == [], f"a Hub call without the flag: {hub.requests} with {hub.tokens}"


def test_a_visitor_cannot_push_another_visitors_model(trained, hub, tmp_path_factory):
    """A second session that knows the first one's model name is told there is no such model of theirs, with no Hub
    call; the first session gets as far as the token check (the flag's message)."""
    owner, name, _ = trained
    other = Client(owner.src, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    with pytest.raises(AppError, match=f"No model '{name}' of yours to push"):
        other.predict(name, f"{OWNER}/taken", True, api_name="/push")
    with pytest.raises(AppError, match="python app.py --push-with-machine-token"):
        owner.predict(name, f"{OWNER}/my-vae", True, api_name="/push")
    assert hub.requests == [], f"a Hub call for someone else's model: {hub.requests}"


def test_with_the_flag_a_local_app_pushes_as_the_machines_account_and_says_so(trained, hub, tmp_path, monkeypatch):
    """`python app.py --push-with-machine-token`: the page names the account, the push uses that token and says whose
    it was. (The upload itself is recorded in this process: the fake Hub answers the access checks.)"""
    _, name, folder = trained
    visitors = Visitors(tmp_path / "visitors")  # the same model, trained by a visitor of this second server
    shutil.copytree(folder, visitors.root / "visitor" / name)
    monkeypatch.setattr(app, "Visitors", lambda catalog=None: visitors)
    uploads = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: uploads.append(("create", self.token)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: uploads.append(("upload", self.token)))
    limits = live.Limits(tmp_path / "data")
    with launched(app.build_demo(load_assets(app.DEFAULT_CHECKPOINT), limits=limits, machine_token=True)) as url:
        client = Client(url, verbose=False, download_files=False)
        visitors.add(name, client.session_hash, visitors.root / "visitor" / name)  # this session's model
        config = client.config
        note = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "push-note")
        assert f"Pushes as **{OWNER}**, with the Hugging Face token of the machine" in note["props"]["value"]
        answer = client.predict(name, f"{OWNER}/my-vae", True, api_name="/push")
    url = f"https://huggingface.co/{OWNER}/my-vae"
    assert answer == f"Pushed **{name}** to {url} as **{OWNER}**, with this machine's Hugging Face token."
    assert uploads == [("create", OWNER_TOKEN), ("upload", OWNER_TOKEN)]
    assert set(hub.tokens) == {f"Bearer {OWNER_TOKEN}"}, "whoami and the access check with the machine's token"
    assert sum(path.startswith("/api/whoami-v2") for _, path in hub.requests) >= 1


def test_a_failed_push_names_the_model_not_the_servers_folder(trained, hub, tmp_path, monkeypatch):
    """The Hub fails the upload (the fake Hub answers 500 to the repo's creation): the message names the model and
    says what the visitor can do, not a folder of the server and a command to run there."""
    _, name, folder = trained
    visitors = Visitors(tmp_path / "visitors")
    shutil.copytree(folder, visitors.root / "visitor" / name)
    monkeypatch.setattr(app, "Visitors", lambda catalog=None: visitors)
    limits = live.Limits(tmp_path / "data")
    with launched(app.build_demo(load_assets(app.DEFAULT_CHECKPOINT), limits=limits, machine_token=True)) as url:
        client = Client(url, verbose=False, download_files=False)
        visitors.add(name, client.session_hash, visitors.root / "visitor" / name)  # this session's model
        with pytest.raises(AppError, match=f"Uploading {name} to {OWNER}/my-vae failed") as failed:
            client.predict(name, f"{OWNER}/my-vae", True, api_name="/push")
    assert str(tmp_path) not in str(failed.value) and "python -m vae.hub" not in str(failed.value)
    assert "Press Push again" in str(failed.value)


def test_on_a_space_messages_name_the_checkpoint_not_its_folder(tmp_path, monkeypatch):
    """A Space's visitors read the status line and the errors: a checkpoint's problems name it, not where it lies."""
    monkeypatch.setenv("SPACE_ID", f"{OWNER}/vae-studio")
    folder = tmp_path / "srv" / "private place" / "no-map"
    shutil.copytree(app.DEFAULT_CHECKPOINT, folder, ignore=shutil.ignore_patterns(".*", "tsne.*"))
    with launched(app.build_demo(load_assets(folder))) as url:
        client = Client(url, verbose=False, download_files=False)
        status = next(c for c in client.config["components"] if c["props"].get("elem_id") == "checkpoint-status")
        with pytest.raises(AppError, match="no-map has no cached t-SNE map") as refused:
            client.predict(api_name="/tsne")
    assert "⚠️ no-map has no cached t-SNE map" in status["props"]["value"]
    for shown in (status["props"]["value"], str(refused.value)):
        assert "private place" not in shown and str(tmp_path) not in shown, shown


# Text from a model folder ---------------------------------------------------------------------------------------------

HOSTILE = [
    '<img src=x onerror="window.pwned=1">',
    "**bold**",
    "[link](http://example.invalid)",
    "`code`",
    "http://example.invalid/bare",
    "<script>window.pwned=2</script>",
    "_em_ & &amp;",
    "# heading",
    "www.example.invalid",
    "a|b ~~struck~~",
]


@pytest.fixture(scope="module")
def hostile_url(tmp_path_factory):
    """The studio for a copy of the committed 2-D model, in a folder whose path has spaces, whose config.json names
    its ten classes with markup."""
    folder = tmp_path_factory.mktemp("hostile") / "my models" / "hostile model"
    shutil.copytree(app.CHECKPOINTS / "vae-mnist-2d", folder, ignore=shutil.ignore_patterns(".*"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "class_names": HOSTILE}))
    with launched(app.build_demo(load_assets(folder))) as base:
        yield base + "/"


def markup_made(driver) -> list[str]:
    """Elements the class names would make if the page read them as HTML or Markdown."""
    return driver.execute_script(
        """
        const found = [];
        for (const img of document.querySelectorAll('img')) {
            if (img.getAttribute('src') === 'x') found.push('img src=x');
        }
        for (const a of document.querySelectorAll('a')) {
            if ((a.getAttribute('href') || '').includes('example.invalid')) found.push('a ' + a.getAttribute('href'));
        }
        const made = ['bold', 'code', 'em', 'heading', 'struck', 'link'];  // the text a name's markup would wrap
        for (const el of document.querySelectorAll('strong, em, code, h1, del, s, a')) {
            if (made.includes(el.textContent.trim())) found.push(el.tagName + ' ' + el.textContent);
        }
        for (const el of document.querySelectorAll('script')) {  // Gradio's own scripts hold the names as JSON
            if (el.textContent.trim() === 'window.pwned=2') found.push('script');
        }
        for (const el of document.querySelectorAll('table')) {
            if (el.textContent.includes('struck')) found.push('table');
        }
        if (window.pwned) found.push('window.pwned');
        return found;
        """
    )


def test_class_names_with_markup_show_as_literal_text(hostile_url, browser, tmp_path):  # noqa: F811
    browser.get(hostile_url)
    status = waiting(browser, TIMEOUT).until(
        lambda d: (text := d.find_element(By.ID, "checkpoint-status").text) and "2-d latent" in text and text
    )
    loaded_image(browser, "#sample-grid")
    for tab in ("Latent walk", "Sliders", "Your digit", "About"):
        open_tab(browser, tab)
    open_tab(browser, "Latent plane")  # a 2-D model: its map tab is named so
    click_picture(browser, "#click-map", 15.5 * 28, 4.5 * 28)
    caption = waiting(browser, TIMEOUT).until(
        lambda d: "decoded exactly there" in (text := d.find_element(By.ID, "pick-caption").text) and text
    )
    shown = [name for name in HOSTILE if f"is a {name}." in caption]
    assert shown, f"the caption names the nearest digit's class as written: {caption!r}"
    browser.save_screenshot(str(tmp_path / "hostile.png"))
    assert markup_made(browser) == []
    assert ", ".join(HOSTILE) in status, "the status line shows the names exactly as written"


def test_literal_escapes_markup_and_leaves_names_and_paths_as_they_read():
    """What the page's Markdown receives: the browser test above shows how it renders."""
    assert literal("vae-mnist") == "vae-mnist" and literal("T-shirt/top") == "T-shirt/top"
    assert literal("python -m vae.tsne --checkpoint /srv/my models") == "python -m vae.tsne --checkpoint /srv/my models"
    assert literal("<b>a & b</b>") == "&lt;b&gt;a &amp; b&lt;/b&gt;"
    assert literal("**x** _y_ `z` [l](u) a|b ~~s~~ $$m$$ a@b.c") == (
        "\\*\\*x\\*\\* \\_y\\_ \\`z\\` \\[l\\](u) a\\|b \\~\\~s\\~\\~ \\$\\$m\\$\\$ a\\@b.c"
    )
    assert literal("see www.x.org or https://x.org") == "see www\\.x.org or https\\://x.org"
    assert literal("# h\n- x\n  + y\n1. z\n=") == "\\# h\n\\- x\n  \\+ y\n1\\. z\n\\="


@pytest.fixture(scope="module")
def no_map_url(tmp_path_factory):
    """The studio for a copy of the committed 2-D model without tsne.safetensors (its latent plane is still a map)."""
    folder = tmp_path_factory.mktemp("no map") / "my models" / "no map"
    shutil.copytree(app.CHECKPOINTS / "vae-mnist-2d", folder, ignore=shutil.ignore_patterns(".*", "tsne.safetensors"))
    with launched(app.build_demo(load_assets(folder))) as base:
        yield base + "/"


def test_a_model_without_its_tsne_map_gets_a_plain_note_not_an_error_badge(no_map_url, browser):  # noqa: F811
    browser.get(no_map_url)
    loaded_image(browser, "#sample-grid")
    open_tab(browser, "Latent plane")  # a 2-D model: its map tab is named so
    caption = lambda d: d.find_element(By.ID, "pick-caption").text  # noqa: E731
    waiting(browser, TIMEOUT).until(lambda d: "latent plane itself" in caption(d))
    assert "Hover to see the point under the pointer decoded." in caption(browser), "no test digit promised"
    assert "nearest" not in caption(browser)
    assert json.loads(hover_data(browser))["points"] == []  # the plane's axes only, for web/decoder.js
    waiting(browser, TIMEOUT).until(lambda d: d.execute_script("return window.studioDecoder.model"), "no decoder")
    hover_picture(browser, "#click-map", 280, 280)
    waiting(browser, TIMEOUT).until(lambda d: d.find_element(By.ID, "map-decoded").is_displayed(), "no decoded digit")
    thumb = browser.find_element(By.ID, "map-thumb")
    assert thumb.get_attribute("data-index") is None and "nearest" not in thumb.text, "the decoded point alone"
    time.sleep(1)  # an error badge would come with the move
    assert not browser.find_elements(By.CSS_SELECTOR, ".toast-body"), "no error toast"
    loaded_image(browser, "#click-map")  # the latent plane, clickable as ever
