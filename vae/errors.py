"""The one exception type for user mistakes: commands print its message and exit, without a traceback."""


class UserError(Exception):
    """Bad input from the user (config, data, paths, tokens): the message says what is wrong and how to fix it."""
