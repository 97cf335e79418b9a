"""Command line for the latent-space work: `python -m latent beta-sweep|transfer ...`."""
from __future__ import annotations

import sys

from common.command_line import run_commands

COMMANDS = {
    "beta-sweep": ("latent.disentangle", "train β-VAEs on labelled synthetic portraits; score MIG, FactorVAE, DCI"),
    "transfer": ("latent.transfer", "conditional attribute transfer: smile vector vs CVAE vs trVAE, scored"),
}


def main(argv: list[str] | None = None) -> int:
    return run_commands("python -m latent", __doc__.splitlines()[0], COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
