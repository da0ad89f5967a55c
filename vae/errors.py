"""Errors a user can fix, and how commands report them: a one-paragraph message and an exit code, no traceback."""

import functools
import json
import signal
import sys
from collections.abc import Callable

MAX_ECHO = 200  # characters of a user's value quoted in a message


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for a one-paragraph error that names its cause."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else "no details"


class UserError(Exception):
    """Bad input from the user (config, data, paths, tokens): the message says what is wrong and how to fix it."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped a training run; the last complete checkpoint (resume_epoch, 0 for none) stays."""

    def __init__(self, signum: int, resume_epoch: int):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.resume_epoch = signum, resume_epoch


def clip(value, limit: int = MAX_ECHO) -> str:
    """A user's value as quoted in a message: cut to `limit` characters, so that a huge one is not echoed whole."""
    try:
        text = str(value)
    except RecursionError:  # a list nested a thousand deep, from a JSON file
        text = f"a {type(value).__name__} nested too deep to show"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote(value, limit: int = MAX_ECHO) -> str:
    """A value read from a JSON file as a message shows it: as JSON (so that "32" is seen to be a string), cut."""
    try:
        return clip(json.dumps(value), limit)
    except (RecursionError, TypeError, ValueError):
        return clip(value, limit)


def name_list(names, shown: int = 3, sep: str = ", ") -> str:
    """A few of many names for a message: "a, b, c and 7 more"."""
    names = [clip(name, 120) for name in names]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return sep.join(names[:shown]) + more


def json_kind(value) -> str:
    """What a value parsed from JSON is, in JSON's words."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true or false", type(None): "null"}
    return kinds.get(type(value), "a number")


def command(main: Callable) -> Callable:
    """A command's main(): a UserError it raises ends the process with `error: <message>` and exit code 1, no
    traceback. Every command line of the project (train.py, app.py, python -m vae.*) exits this way."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            sys.exit(f"error: {err}")

    return run
