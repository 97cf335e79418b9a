"""Command line for stage 2: `python -m classification train|evaluate|compare|scan|sanity ...`.

Each command lives in the module that does the work (`cli_add_arguments_<command>(parser)` +
`cli_run_<command>(args) -> dict`, or the plain names when a module holds one command); the dict it returns is
printed as the last stdout line, one line of JSON. `--set key=value` overrides any field of the command's Config.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from classification.data import FaceDataError
from classification.model import WeightsUnavailableError
from scraping.config import print_summary

# command -> (module holding it, one-line help)
COMMANDS = {
    "train": ("classification.train", "train the target-vs-others classifier (split, checkpoints, metrics, figures)"),
    "evaluate": ("classification.train", "re-evaluate a checkpoint: threshold on val, metrics and figures on test"),
    "compare": ("classification.train", "train one run per unfreezing depth k and write a comparison table"),
    "scan": ("classification.scan", "score every image of a folder or CelebA root and rank them"),
    "sanity": ("classification.model", "ImageNet sanity check of the pretrained network (skipped offline)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classification", description=__doc__.splitlines()[0])
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
    try:
        summary = run(args)
    except (FaceDataError, WeightsUnavailableError, FileNotFoundError, FileExistsError, ValueError) as error:
        # expected problems with the inputs: one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
