"""Command line: the composition root. It loads the plug-ins bench ships, builds the parsers
and runs the chosen command; nothing imports it. Parsing imports nothing heavy, so
`python -m bench --help` stays fast; each command imports torch and friends only when it runs."""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import signal
import sys

from bench import plugins
from bench.cli.parsers import build_parser
from bench.errors import EXIT_BAD_INPUT, BadInput, Interrupted, stop_name

PLUGINS = ("bench.twosite",)
# A reader that stops early (`bench spec --schema | head`) ends a command quietly with the
# status a process killed by SIGPIPE has (128 + 13), as `yes | head` reports it.
EXIT_BROKEN_PIPE = 141


def command_parser() -> argparse.ArgumentParser:
    """Every command's parser, the plug-ins' included."""
    from bench.twosite.cli import add_parsers as add_two_site_commands

    plugins.load(PLUGINS)
    return build_parser(plugin_parsers=[add_two_site_commands])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's arguments; a bad one exits 2 (SystemExit) before anything runs. A flag
    the command does not know is shown with that command's usage, not the top level's."""
    parser = command_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = commands.choices.get(args.command, parser)
        known = [s for a in command._actions for s in a.option_strings]
        guesses = [difflib.get_close_matches(word.split("=")[0], known, n=1)
                   for word in unknown if word.startswith("-")]
        hint = ", ".join(g[0] for g in guesses if g)
        command.error(f"unrecognized arguments: {' '.join(unknown)}"
                      + (f" (did you mean {hint}?)" if hint else ""))
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(argv)
        sys.stdout.flush()  # a closed pipe is found here, inside main, not at exit
        return code
    except BrokenPipeError:
        # Python's advice: point stdout at devnull, so the flush at exit cannot fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (a test's capture)
            pass
        return EXIT_BROKEN_PIPE


def _run(argv: list[str] | None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help (0) or a refused argument (2), already printed
        return EXIT_BAD_INPUT if isinstance(exc.code, str) else exc.code or 0
    if args.command is None:
        command_parser().print_help()
        return 0
    module, _, name = args.handler.partition(":")
    try:
        handler = getattr(importlib.import_module(module), name)
        return handler(args)
    except BadInput as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return interrupted(args.command, "SIGINT")
    except Interrupted as exc:
        return interrupted(args.command, exc.signal_name)


def interrupted(command: str, signal_name: str) -> int:
    """One line instead of a traceback, for a command that stopped with nothing to resume
    (`run` and `cell` keep a checkpoint instead: they exit 3 and say how to resume)."""
    print(f"bench: {command} stopped by {stop_name(signal_name)} before it finished; run it "
          "again for its results", file=sys.stderr)
    return 128 + signal.Signals[signal_name].value
