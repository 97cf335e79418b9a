"""The command-line front shared by every stage: `python -m world|scraping|classification|vae <command> ...`.

Each command lives in the module that does the work and exposes `cli_add_arguments(parser)` +
`cli_run(args) -> dict`, or `cli_add_arguments_<command>` / `cli_run_<command>` (dashes as underscores) when a
module holds several commands. The dict a command returns is printed as the last stdout line, one line of JSON.

All stages fail alike: bad input (missing or malformed files, unknown `--set` keys, unreadable checkpoints,
unsupported URLs, bad arguments) prints one line `error: ...` on stderr and exits 2; a run that failed although its
input was fine (`RunFailed`) exits 1; Ctrl-C exits 130. `--debug` (before the command) shows the traceback.

The flag vocabulary is the same in every stage: `--src` what a command reads (a folder, a CelebA root, a scores
file), `--out` the folder it writes, `--checkpoint` a model file or run folder, `--set KEY=VALUE` a Config field,
`--seed`, `--overwrite`, `--quiet`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Mapping, NoReturn

from .config import print_summary
from .errors import InputError, RunFailed

# Problems with the user's inputs that every stage reports as one clear line with exit code 2. ValueError covers
# InputError and the stages' own input errors (FaceDataError, CelebAFormatError, ...), which derive from it.
# KeyError is left out on purpose: a missing key is a bug to show with its traceback, not bad input.
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
    except RunFailed as error:
        if args.debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    except (InputError, *INPUT_ERRORS, *input_errors) as error:
        if args.debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0
