"""Command line for stage 0: `python -m world generate --out data/demo --seed 0`."""
from __future__ import annotations

import sys

from common.command_line import run_commands

# command -> (module holding it, one-line help)
COMMANDS = {
    "generate": ("world.generate", "generate the synthetic celebrity world (web pages + CelebA-format haystack)"),
}


def main(argv: list[str] | None = None) -> int:
    return run_commands("python -m world", __doc__.splitlines()[0], COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
