"""Command line: the composition root. It loads the plug-ins bench ships, builds the parsers
and runs the chosen command; nothing imports it. Parsing imports nothing heavy, so
`python -m bench --help` stays fast; each command imports torch and friends only when it runs."""
from __future__ import annotations

import importlib
import sys

from bench import plugins
from bench.cli.parsers import build_parser
from bench.errors import EXIT_BAD_INPUT, BadInput

PLUGINS = ("bench.twosite",)


def main(argv: list[str] | None = None) -> int:
    from bench.twosite.cli import add_parsers as add_two_site_commands

    plugins.load(PLUGINS)
    parser = build_parser(plugin_parsers=[add_two_site_commands])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module, _, name = args.handler.partition(":")
    handler = getattr(importlib.import_module(module), name)
    try:
        return handler(args)
    except BadInput as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
