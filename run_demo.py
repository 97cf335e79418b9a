"""`make demo`: the whole story on the embedded default (a synthetic celebrity world), offline, in minutes.

Generates the world (web pages + CelebA-format haystack), serves its web on a free loopback port, then runs the
three notebooks top to bottom with demo parameters (papermill), saving the executed notebooks with their outputs
and every figure and GIF under `results/demo/`. Ends with a summary table of counts, metrics and timings.

    python run_demo.py                 # full demo (~10 min on a 2-core CPU); notebooks are executed in place
    python run_demo.py --smoke --out .tmp/smoke   # tiny world, a few steps (what the tests run)

A second run resumes: the world, downloads, crops and checkpoints already on disk are reused.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scraping.config import apply_overrides, config_to_dict, parse_set_options, print_summary, save_config

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = (
    "scraping/01_scrape_and_crop.ipynb",
    "classification/02_classify.ipynb",
    "vae/03_vae.ipynb",
)


@dataclass
class DemoConfig:
    out: str = "results/demo"          # figures, GIFs and per-stage summaries (relative to the repo root)
    data: str = "data/demo"            # the generated world, scraped photos and face crops
    runs: str = "runs/demo"            # checkpoints and logs
    seed: int = 0                      # seeds the world and every stage
    port: int = 0                      # loopback port for the local web; 0 (or a busy port) picks a free one
    smoke: bool = False                # tiny world and a few steps: what CI runs
    notebooks_out: str | None = None   # where executed notebooks go; None = in place (the committed copies)
    stages: tuple = (1, 2, 3)          # which notebooks to run
    extra: dict = field(default_factory=dict)  # per-notebook parameter overrides {"vae": {"MAX_STEPS": 10}}
