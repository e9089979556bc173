"""Errors the CLI turns into one sentence and an exit status."""


class BadInput(ValueError):
    """A user-supplied value is wrong. The message is one sentence naming the value and
    what is allowed; the CLI prints it and exits with status 2 before any work starts."""


EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command Ctrl-C stopped


class Interrupted(Exception):
    """A command was asked to stop (Ctrl-C, SIGTERM) and keeps nothing a re-run could resume
    from; the CLI says so in one line and exits with 128 + the signal's number, as a shell
    does (130 for Ctrl-C). Ctrl-C elsewhere (KeyboardInterrupt) ends the same way."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


def stop_name(signal_name: str) -> str:
    """How messages and records name what stopped a command: a terminal's Ctrl-C by its key."""
    return "Ctrl-C (SIGINT)" if signal_name == "SIGINT" else signal_name
