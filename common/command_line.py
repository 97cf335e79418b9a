"""The command-line front shared by the three stages: `python -m <stage> <command> ...`.

Each command lives in the module that does the work and exposes `cli_add_arguments(parser)` +
`cli_run(args) -> dict`, or `cli_add_arguments_<command>` / `cli_run_<command>` (dashes as underscores) when a
module holds several commands. The dict a command returns is printed as the last stdout line, one line of JSON.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Mapping

from .config import print_summary

# Problems with the user's inputs (missing files, existing runs, bad values) that a stage may choose to report as
# one clear line with exit code 2 instead of a traceback.
INPUT_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, FileExistsError, ValueError)


def command_handler(module, prefix: str, command: str):
    """`<prefix>_<command>` when the module holds several commands, else `<prefix>`."""
    return getattr(module, f"{prefix}_{command.replace('-', '_')}", None) or getattr(module, prefix)


def run_commands(prog: str, description: str, commands: Mapping[str, tuple[str, str]],
                 argv: list[str] | None = None, input_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse `argv` against `commands` ({name: (module, one-line help)}), run the chosen one, print its summary.

    Returns the process exit code: 0 on success, 2 (with `error: ...` on stderr) for an `input_errors` exception.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in commands.items():
        modules[name] = importlib.import_module(module_name)
        command_handler(modules[name], "cli_add_arguments", name)(
            sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        summary = command_handler(modules[args.command], "cli_run", args.command)(args)
    except input_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0
