"""Command line for stage 3: `python -m vae train|sample|morph|find-identity|finetune ...`.

Each command lives in the module that does the work (`cli_add_arguments(parser)` + `cli_run(args) -> dict`, or
`cli_add_arguments_<command>`/`cli_run_<command>`); the dict it returns is printed as the last stdout line, one
line of JSON. `train` and `finetune` take `--set key=value` for any other `TrainConfig` field.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from scraping.config import print_summary

# command -> (module holding it, one-line help)
COMMANDS = {
    "train": ("vae.train", "train the VAE on CelebA (or a folder of face crops)"),
    "sample": ("vae.figures", "write a sample grid (and reconstructions/traversal) of a trained VAE"),
    "morph": ("vae.morph", "write a looping morph GIF through faces"),
    "find-identity": ("vae.identity", "pick the CelebA identity the classifier's scan points at"),
    "finetune": ("vae.finetune", "fine-tune the VAE on one identity and compare before/after"),
}


def _handler(module, prefix: str, command: str):
    """`<prefix>_<command>` (dashes as underscores) when the module holds several commands, else `<prefix>`."""
    return getattr(module, f"{prefix}_{command.replace('-', '_')}", None) or getattr(module, prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        _handler(module, "cli_add_arguments", name)(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    summary = _handler(modules[args.command], "cli_run", args.command)(args)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
