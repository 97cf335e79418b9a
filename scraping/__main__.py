"""Command line for stage 1: `python -m scraping fetch|crop|sheet|reject ...`; the last stdout line is JSON."""
from __future__ import annotations

import sys

from common.command_line import run_commands

# command -> (module holding it, one-line help)
COMMANDS = {
    "fetch": ("scraping.download", "scrape candidate photos of a person and download them politely"),
    "crop": ("scraping.faces", "detect and crop faces with MTCNN, writing crops.csv"),
    "sheet": ("scraping.curate", "write a labelled contact sheet (likely-wrong crops first)"),
    "reject": ("scraping.curate", "move listed crops to _rejected/ (never deletes)"),
}


def main(argv: list[str] | None = None) -> int:
    return run_commands("python -m scraping", __doc__.splitlines()[0], COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
