"""The command-line front shared by every stage: `python -m <stage> <command> ...`.

A command's module exposes `cli_add_arguments(parser)` + `cli_run(args) -> dict` (or `..._<command>` when it holds
several); the returned dict is printed as the last stdout line, one line of JSON. Bad input prints one line
`error: ...` on stderr and exits 2, a failed run (`RunFailed`) exits 1, Ctrl-C 130; `--debug` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Mapping, NoReturn

from .errors import RunFailed

# Bad input (exit 2); ValueError covers InputError and the stages' own input errors. A KeyError is a bug, not input.
INPUT_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line (`error: ... (see --help)`) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def command_handler(module, prefix: str, command: str):
    """`<prefix>_<command>` when the module holds several commands, else `<prefix>`."""
    return getattr(module, f"{prefix}_{command.replace('-', '_')}", None) or getattr(module, prefix)


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for `error: ...`."""
    text = str(error).strip()
    if isinstance(error, OSError) and getattr(error, "filename", None) and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return (text.splitlines()[0] if text else type(error).__name__)


def run_commands(prog: str, description: str, commands: Mapping[str, tuple[str, str]],
                 argv: list[str] | None = None, input_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse `argv` against `commands` ({name: (module, one-line help)}), run the chosen one, print its summary.

    Returns the process exit code: 0 on success, 2 for bad input, 1 for `RunFailed`, 130 on Ctrl-C; the reason goes
    to stderr as one line. `input_errors` adds exception types a stage counts as bad input.
    """
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    modules = {}
    for name, (module_name, help_text) in commands.items():
        modules[name] = importlib.import_module(module_name)
        command_handler(modules[name], "cli_add_arguments", name)(
            sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        summary = command_handler(modules[args.command], "cli_run", args.command)(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted (Ctrl-C); finished work is saved, run the same command again to resume",
              file=sys.stderr)
        return 130
    except (RunFailed, *INPUT_ERRORS, *input_errors) as error:
        if args.debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1 if isinstance(error, RunFailed) else 2
    if summary is not None:  # None: nothing to report (e.g. a torchrun worker other than rank 0)
        print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    return 0
