"""Command line for stage 3: `python -m vae train|sample|morph|find-identity|finetune ...`.

Each command lives in the module that does the work; its summary dict is printed as the last stdout line (JSON).
"""
from __future__ import annotations

import sys

from common.command_line import run_commands

# command -> (module holding it, one-line help)
COMMANDS = {
    "train": ("vae.train", "train the VAE on CelebA (or a folder of face crops)"),
    "sample": ("vae.figures", "write a sample grid (and reconstructions/traversal) of a trained VAE"),
    "morph": ("vae.morph", "write a looping morph GIF through faces"),
    "find-identity": ("identity.find", "pick the CelebA identity the classifier's scan points at"),
    "finetune": ("vae.finetune", "fine-tune the VAE on one identity and compare before/after"),
}


def main(argv: list[str] | None = None) -> int:
    return run_commands("python -m vae", __doc__.splitlines()[0], COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
