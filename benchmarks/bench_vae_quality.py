"""Benchmark: how recognisable the VAE's pictures are after a fixed CPU training budget, new recipe vs old.

For each data set, trains two VAEs from scratch for `--minutes` of wall-clock time each (10 by default), with
`torch.set_num_threads(2)`, in one run:

- `recipe`: today's `TrainConfig()` defaults (the recipe chosen by measurement, see the README);
- `previous_defaults`: the defaults before that choice (random-init VGG19 perceptual loss offline, β = 1,
  a flat pixel loss, float32 on the CPU, batches of 64).

Each is scored by `vae.quality.face_quality` on up to 200 held-out images: heldout_mse, heldout_ssim,
face_share_reconstructions, face_share_samples (samples from the latent density fitted on training faces),
face_share_samples_prior (N(0, I)) and identity_kept_share (dlib distance photo -> reconstruction < 0.6).

Data sets:
(a) `haystack`: the synthetic CelebA haystack `data/demo/celeba` (held out: its "valid" partition);
(b) `wild`: MTCNN face crops of the real in-the-wild photos `$SHARED_DATA/data/celeba_wild_dev` (any folder of
    photos with an `images/` folder and an `identity_CelebA.txt` works), cropped with stage 1's
    `scraping.faces.crop_faces` into `--crops` (reused when present). Held out: a seeded tenth.

Usage:
    python benchmarks/bench_vae_quality.py [--minutes 10] [--datasets haystack,wild] [--threads 2]

Prints one JSON object on its last line (also written to results/benchmarks/vae_quality.json, where the rows of
data sets not run this time are kept from the previous file, each row with the command that made it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from reporting import report

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DATA", PROJECT_ROOT.parent / "shared"))
PREVIOUS_DEFAULTS = {"gamma": 1.0, "beta": 1.0, "centre_weight": 1.0, "amp": False, "batch_size": 64}
HELD_OUT = 200  # held-out images scored
DENSITY_IMAGES = 2000  # training images the sample density is fitted on


def wild_crops(crops: Path) -> Path:
    """Face crops of the shared in-the-wild photos, one folder per CelebA identity (made once, then reused)."""
    from scraping.faces import CropConfig, crop_faces

    source = SHARED / "data" / "celeba_wild_dev"
    if not (source / "images").is_dir():
        raise SystemExit(f"{source}/images not found; set SHARED_DATA to the folder holding data/celeba_wild_dev")
    crop_faces(source / "images", crops, CropConfig(progress=False, device="cpu"),
               identities=source / "identity_CelebA.txt")
    return crops


def score(summary: dict, config, face_box) -> dict:
    """`face_quality` of the trained checkpoint on the run's held-out images."""
    from vae.quality import face_quality
    from vae.train import load_vae, split_datasets

    model, _ = load_vae(summary["checkpoint"], device="cpu")
    train_set, train_indices, held_set, held_indices, _ = split_datasets(dataclasses.replace(config, num_eval=HELD_OUT))
    picks = torch.randperm(len(train_indices), generator=torch.Generator().manual_seed(0))[:DENSITY_IMAGES]
    train = torch.stack([train_set[train_indices[i]] for i in picks.tolist()])
    held = torch.stack([held_set[i] for i in held_indices])
    return face_quality(model, held, train, face_box=face_box)


def run(name: str, recipe: str, data_root: Path, minutes: float, out_root: Path, face_box) -> dict:
    """Train one recipe for `minutes` on `data_root` from scratch and score it."""
    from vae.train import TrainConfig, train_vae

    overrides = PREVIOUS_DEFAULTS if recipe == "previous_defaults" else {}
    config = dataclasses.replace(TrainConfig(), data_root=str(data_root), out_dir=str(out_root / f"{name}_{recipe}"),
                                 max_steps=10**9, max_minutes=minutes, device="cpu", overwrite=True,
                                 eval_every=10**9, monitor_every=10**9, **overrides)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "no ImageNet weights offline": reported below
        summary = train_vae(config)
    row = {"data": name, "recipe": recipe, "steps": summary["steps"], "images_per_s": summary["images_per_s"],
           "train_images": summary["train_images"], "train_seconds": round(time.perf_counter() - started, 1),
           "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after training
           "vgg_weights": None if summary["perceptual_pretrained"] is None
           else "imagenet" if summary["perceptual_pretrained"] else "random (offline)"}
    quality = score(summary, config, face_box)
    return {**row, **{k: round(v, 4) if isinstance(v, float) else v for k, v in quality.items()}}


def main() -> None:
    from vae.quality import CELEBA_FACE_BOX, CROP_FACE_BOX

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per model (wall clock)")
    parser.add_argument("--datasets", default="haystack,wild", help="comma-separated: haystack, wild")
    parser.add_argument("--haystack", default=str(PROJECT_ROOT / "data" / "demo" / "celeba"))
    scratch = Path(tempfile.gettempdir())
    parser.add_argument("--crops", default=str(scratch / "bench_crops"),
                        help="face crops of the wild photos (made if absent)")
    parser.add_argument("--out", default=str(scratch / "bench_vae_quality"), help="scratch folder for the runs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name == "haystack":
            root, box = Path(args.haystack), CELEBA_FACE_BOX
            if not (root / "img_align_celeba").is_dir():
                raise SystemExit(f"{root} is not a CelebA folder; run `make demo` (or `python -m world generate`)")
        elif name == "wild":
            root, box = wild_crops(Path(args.crops)), CROP_FACE_BOX
        else:
            raise SystemExit(f"unknown data set {name!r}; use haystack and/or wild")
        for recipe in ("recipe", "previous_defaults"):
            results.append(run(name, recipe, root, args.minutes, Path(args.out), box))
    command = " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    for row in results:
        row["command"] = command
    previous = PROJECT_ROOT / "results" / "benchmarks" / "vae_quality.json"
    if previous.is_file():  # data sets not run this time keep their rows: each recipe pair comes from one run
        old = json.loads(previous.read_text())
        results += [{**row, "command": row.get("command", old["command"])} for row in old["result"]["results"]
                    if row["data"] not in {r["data"] for r in results}]
    report("vae_quality", {"benchmark": "vae_quality", "device": "cpu", "threads": args.threads,
                           "minutes_per_model": args.minutes, "image_size": 64, "results": results})


if __name__ == "__main__":
    main()
