"""Command line for stage 1: `python -m scraping fetch|crop|sheet|reject|world ...`.

Each command lives in the module that does the work (`cli_add_arguments(parser)` + `cli_run(args) -> dict`);
the dict it returns is printed as the last stdout line, one line of JSON.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .config import print_summary

# command -> (module holding it, one-line help)
COMMANDS = {
    "fetch": ("scraping.download", "scrape candidate photos of a person and download them politely"),
    "crop": ("scraping.faces", "detect and crop faces with MTCNN, writing crops.csv"),
    "sheet": ("scraping.curate", "write a labelled contact sheet (likely-wrong crops first)"),
    "reject": ("scraping.curate", "move listed crops to _rejected/ (never deletes)"),
    "world": ("scraping.synthetic", "generate the synthetic celebrity world (web pages + CelebA-format haystack)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scraping", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"cli_add_arguments_{name}", getattr(module, "cli_add_arguments", None))(command_parser)
    args = parser.parse_args(argv)
    module = modules[args.command]
    run = getattr(module, f"cli_run_{args.command}", getattr(module, "cli_run", None))
    print_summary(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
