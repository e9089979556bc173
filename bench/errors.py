"""Errors the CLI turns into one sentence and an exit status."""


class BadInput(ValueError):
    """A user-supplied value is wrong. The message is one sentence naming the value and
    what is allowed; the CLI prints it and exits with status 2 before any work starts."""


EXIT_BAD_INPUT = 2
