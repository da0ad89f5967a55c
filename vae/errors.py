"""The exceptions commands turn into a message and an exit code instead of a traceback."""

import signal


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
