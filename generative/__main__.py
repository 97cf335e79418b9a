"""Command line for the GAN baseline and its metrics: `python -m generative gan|metrics ...`."""
from __future__ import annotations

import sys

from common.command_line import run_commands

COMMANDS = {
    "gan": ("generative.gan", "train the DCGAN baseline on the same data as the VAE"),
    "metrics": ("generative.metrics", "score VAE/GAN samples: KID, FID, precision/recall, MTCNN, copies"),
}


def main(argv: list[str] | None = None) -> int:
    return run_commands("python -m generative", __doc__.splitlines()[0], COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
