"""Command line for the web app: `python -m app [serve] [--port 7860] ...` and `python -m app screenshot --out ...`."""
from __future__ import annotations

import sys

from common.command_line import run_commands

COMMANDS = {"serve": ("app.ui", "serve the page on 127.0.0.1 (default command)"),  # name: (module, one-line help)
            "screenshot": ("app.screenshot", "start the page, upload a photo in headless Chromium, save a screenshot")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, rest = "--debug" in argv, [a for a in argv if a != "--debug"]
    if not rest or (rest[0].startswith("-") and rest[0] not in ("-h", "--help")):
        rest.insert(0, "serve")  # `python -m app --port 8000` serves
    return run_commands("python -m app", __doc__.splitlines()[0], COMMANDS, ["--debug"] * debug + rest)


if __name__ == "__main__":
    sys.exit(main())
