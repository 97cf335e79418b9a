"""Command line for the web app: `python -m app [serve] [--port 7860] ...` and `python -m app screenshot --out ...`.

`serve` (the default) serves the page with the last demo's models or the paths given by flags; `screenshot` starts
it on a free port, uploads a photo in headless Chromium and saves a PNG of the answer (the README's figure).
"""
from __future__ import annotations

import sys

from common.command_line import run_commands

COMMANDS = {  # command -> (module holding it, one-line help)
    "serve": ("app.ui", "serve the page on 127.0.0.1 (default command)"),
    "screenshot": ("app.screenshot", "start the page, upload a photo in headless Chromium and save a screenshot"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, rest = "--debug" in argv, [a for a in argv if a != "--debug"]
    if not rest or (rest[0].startswith("-") and rest[0] not in ("-h", "--help")):
        rest.insert(0, "serve")  # `python -m app --port 8000` serves
    return run_commands("python -m app", __doc__.splitlines()[0], COMMANDS, ["--debug"] * debug + rest)


if __name__ == "__main__":
    sys.exit(main())
