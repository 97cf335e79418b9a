"""Command line for stage 2: `python -m classification <command> ...` (train, compare, sweep, pretrain, scan, ...).

Each command lives in the module that does the work (see `common.command_line`); `--set key=value` overrides any
field of the command's Config."""
from __future__ import annotations

import sys

from classification.data import FaceDataError
from classification.model import WeightsUnavailableError
from common.command_line import INPUT_ERRORS, run_commands

# command -> (module holding it, one-line help)
COMMANDS = {
    "train": ("classification.train", "train the target-vs-others classifier (split, checkpoints, metrics, figures)"),
    "evaluate": ("classification.train", "re-evaluate a checkpoint: threshold on val, metrics and figures on test"),
    "compare": ("classification.train", "train one run per unfreezing depth k and write a comparison table"),
    "sweep": ("classification.sweep", "Optuna hyperparameter sweep on validation (resumable), then one retrain + test"),
    "pretrain": ("classification.pretrain", "pretrain MobileNetV2 on synthetic faces (weights='synthetic'; cached)"),
    "scan": ("classification.scan", "score every image of a folder or CelebA root and rank them"),
    "embed-scorer": ("classification.second_opinion", "fit the face-embedding scorer (target vs others), test it"),
    "embed-scan": ("classification.second_opinion", "rank a folder or CelebA root by face-embedding similarity"),
    "choose-search": ("classification.scan", "copy the ranking of the method chosen on validation F1 to search/"),
    "sanity": ("classification.model", "ImageNet sanity check of the pretrained network (skipped offline)"),
}


def main(argv: list[str] | None = None) -> int:
    return run_commands("python -m classification", __doc__.splitlines()[0], COMMANDS, argv,
                        INPUT_ERRORS + (FaceDataError, WeightsUnavailableError))


if __name__ == "__main__":
    sys.exit(main())
