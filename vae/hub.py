"""The upload of a model folder to the Hugging Face Hub, and the checks made before it (the card is vae.card's).

Retry a failed upload with:
    python -m vae.hub --folder outputs/vae-mnist --hub-model-id user/vae-mnist [--private]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from vae.card import with_model_id
from vae.config import shareable_config
from vae.errors import UserError, command, first_line
from vae.folder import CARD, EVAL, STATE_DIR, TRAIN_CONFIG, WEIGHTS

IGNORED = [f"{STATE_DIR}/*", f"{STATE_DIR}/**", ".*", "**/.*", EVAL]  # never uploaded
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
