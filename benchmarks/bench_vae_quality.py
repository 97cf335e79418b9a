"""Benchmark: held-out reconstruction quality of the VAE after a fixed CPU training budget.

Trains the repo's VAE (`vae.train.train_vae`, default TrainConfig: 64×64, batch 64, perceptual loss on, β = 1)
for `--minutes` of wall-clock time (10 by default, as the issue asks) on each data set, with
`torch.set_num_threads(2)`, then reports the held-out reconstruction MSE, PSNR and SSIM that training itself
measures (eval mode: decode of the posterior mean), on:

(a) `haystack`: the synthetic CelebA haystack `data/demo/celeba` (held out: its "valid" partition);
(b) `wild`: MTCNN face crops of the real CelebA in-the-wild sample `<shared>/data/celeba_wild_dev`, cropped with
    stage 1's `scraping.faces.crop_faces` into `--crops` (default <temp dir>/bench_crops, reused when another benchmark
    has already filled it; cropping resumes there). Held out: the stable 10 % hash split of `ImageFolderFlat`.

For scale, the JSON also gives the same metrics for the "mean face" (every held-out image reconstructed as the
average training image), the best a model that ignores its input can do on MSE.

The shared folder is `<project root>/../shared` (override with the SHARED_DATA env var). Runs and crops are
written under the temp folder only. Usage:

    python benchmarks/bench_vae_quality.py [--minutes 10] [--datasets haystack,wild] [--threads 2]

Prints one JSON object on its last line.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from reporting import report

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DATA", PROJECT_ROOT.parent / "shared"))


def wild_crops(crops: Path) -> Path:
    """Face crops of the shared in-the-wild sample, one folder per CelebA identity (made once, then reused)."""
    from scraping.faces import CropConfig, crop_faces

    source = SHARED / "data" / "celeba_wild_dev"
    if not (source / "images").is_dir():
        raise FileNotFoundError(f"{source}/images not found; set SHARED_DATA to the folder holding data/")
    crop_faces(source / "images", crops, CropConfig(progress=False, device="cpu"),
               identities=source / "identity_CelebA.txt")
    return crops


@torch.inference_mode()
def mean_face_baseline(config) -> dict:
    """Held-out MSE/PSNR/SSIM of reconstructing every held-out image as the mean training image."""
    from vae.metrics import mse, psnr, ssim
    from vae.train import split_datasets

    train_set, train_indices, held_set, held_indices, _ = split_datasets(config)
    step = max(1, len(train_indices) // 500)  # 500 training images estimate the mean face well enough
    mean = torch.stack([train_set[i] for i in train_indices[::step]]).mean(0, keepdim=True)
    held = torch.stack([held_set[i] for i in held_indices])
    guess = mean.expand_as(held)
    return {"mse": float(mse(guess, held).mean()), "psnr": float(psnr(guess, held).mean()),
            "ssim": float(ssim(guess, held).mean())}


def run(name: str, data_root: Path, minutes: float, out_root: Path, gamma: float) -> dict:
    """Train for `minutes` on `data_root` from scratch and return the held-out metrics."""
    from vae.train import TrainConfig, train_vae

    config = TrainConfig(data_root=str(data_root), out_dir=str(out_root / name), max_steps=10**9,
                         max_minutes=minutes, gamma=gamma, device="cpu", overwrite=True, eval_every=10**9,
                         monitor_every=10**9)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "no ImageNet weights offline": reported below
        summary = train_vae(config)
    return {
        "data": name,
        "train_images": summary["train_images"],
        "heldout_images": summary["held_out_images"],
        "held_out_from": summary["held_out_from"],
        "steps": summary["steps"],
        "epochs": round(summary["steps"] * config.batch_size / summary["train_images"], 2),
        "images_per_s": summary["images_per_s"],
        "seconds": round(time.perf_counter() - started, 1),
        "heldout_mse": round(summary["metrics"]["mse"], 5),
        "heldout_psnr": round(summary["metrics"]["psnr"], 2),
        "heldout_ssim": round(summary["metrics"]["ssim"], 4),
        "mean_face": {k: round(v, 5) for k, v in mean_face_baseline(config).items()},
        "vgg_weights": "imagenet" if summary["perceptual_pretrained"] else "random (offline)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per data set (wall clock)")
    parser.add_argument("--datasets", default="haystack,wild", help="comma-separated: haystack, wild")
    parser.add_argument("--haystack", default=str(PROJECT_ROOT / "data" / "demo" / "celeba"))
    scratch = Path(tempfile.gettempdir())
    parser.add_argument("--crops", default=str(scratch / "bench_crops"),
                        help="face crops of the wild sample (made if absent)")
    parser.add_argument("--out", default=str(scratch / "bench_vae_quality"), help="scratch folder for the training runs")
    parser.add_argument("--gamma", type=float, default=1.0, help="perceptual loss weight (0: pixel loss only)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results, crop_seconds = [], None
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name == "haystack":
            root = Path(args.haystack)
        elif name == "wild":
            tick = time.perf_counter()
            root = wild_crops(Path(args.crops))
            crop_seconds = round(time.perf_counter() - tick, 1)
        else:
            raise SystemExit(f"unknown data set {name!r}; use haystack and/or wild")
        results.append(run(name, root, args.minutes, Path(args.out), args.gamma))
    report("vae_quality", {
        "benchmark": "vae_quality",
        "device": "cpu",
        "threads": args.threads,
        "minutes_per_dataset": args.minutes,
        "image_size": 64,
        "batch_size": 64,
        "gamma": args.gamma,
        "crop_seconds": crop_seconds,
        "results": results,
    })


if __name__ == "__main__":
    main()
