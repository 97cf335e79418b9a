"""Benchmark: the road not taken, measured — a DCGAN beside the VAE after equal wall time on the same data (issue 16).

Trains the repo's VAE (`vae.train.train_vae`, default TrainConfig: the recipe of notebook 03) and
the DCGAN baseline (`generative.gan.train_gan`, default GanConfig: 64×64, batch 64, widths 32) for `--minutes` of
wall-clock training each, one after the other, with `torch.set_num_threads(--threads)`, on the CelebA-format
`--src` (default: the synthetic haystack `data/demo/celeba`). Then draws `--samples` images from each model (the
VAE decodes draws from the latent density fitted on 2,000 training images, the GAN maps z ~ N(0, I)) and scores them, and as many held-out real images ("test"
split, seen by neither model), with `generative.metrics.score_sets` against a reference of as many "valid"
images (also never trained on): KID (± std over subsets), FID, precision and recall (k = 3) on dlib face features, the MTCNN face share,
and the memorisation check (samples nearer a training image than the held-out 1st percentile).

Writes results/benchmarks/gan_vs_vae.json (via `reporting.report`) and the figure results/benchmarks/gan_vs_vae.png
(`generative.metrics.comparison_figure`: samples of real / VAE / GAN over one bar chart per metric). Training
runs go to a scratch folder (`--out`, default <temp dir>/bench_gan_vs_vae) and are started afresh each time;
`--score-only` scores the runs (and training summaries) a previous call left there, without training again.

    python benchmarks/bench_gan_vs_vae.py [--minutes 4] [--samples 300] [--src data/demo/celeba] [--threads 2]

Prints one JSON object on its last line. About 2 × minutes + 4 minutes on 2 cores at the defaults.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from reporting import BENCHMARKS, report

from common.files import atomic_write_text

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ROUNDING = {"kid": 4, "kid_std": 4, "fid": 3, "precision": 3, "recall": 3, "mtcnn_face_share": 3,
            "memorised_share": 3, "memorisation_threshold": 4, "nearest_train_distance_median": 4}


def train_both(src: Path, minutes: float, out: Path, seed: int) -> dict:
    """Train the VAE, then the GAN, for `minutes` of wall-clock training each; returns their summaries."""
    from generative.gan import GanConfig, train_gan
    from vae.train import TrainConfig, train_vae

    endless = 10**9  # steps: the wall-clock budget decides when each stops
    started = time.perf_counter()
    load = {"before_vae": os.getloadavg()[0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "no ImageNet weights offline": reported below
        vae = train_vae(TrainConfig(data_root=str(src), out_dir=str(out / "vae"), max_steps=endless,
                                    max_minutes=minutes, device="cpu", overwrite=True, eval_every=endless,
                                    monitor_every=50, seed=seed))
    load["before_gan"] = os.getloadavg()[0]
    gan = train_gan(GanConfig(data_root=str(src), out_dir=str(out / "gan"), max_steps=endless, max_minutes=minutes,
                              device="cpu", overwrite=True, checkpoint_every=endless, monitor_every=50, seed=seed))
    load["after_gan"] = os.getloadavg()[0]
    runs = {"vae": vae, "gan": gan, "load_average_1min": {k: round(v, 2) for k, v in load.items()},
            "training_seconds": round(time.perf_counter() - started, 1)}
    atomic_write_text(out / "summaries.json", json.dumps(runs, default=str) + "\n")
    return runs


def rounded(scores: dict) -> dict:
    return {k: round(v, ROUNDING[k]) if k in ROUNDING else v for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(PROJECT_ROOT / "data" / "demo" / "celeba"),
                        help="CelebA-format root both models train on (default: the demo haystack)")
    parser.add_argument("--minutes", type=float, default=4.0, help="wall-clock training budget per model")
    parser.add_argument("--samples", type=int, default=300, help="images per scored set")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and sampling")
    parser.add_argument("--workers", type=int, default=2, help="processes computing dlib face features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "bench_gan_vs_vae"),
                        help="scratch folder for the two training runs")
    parser.add_argument("--score-only", action="store_true",
                        help="skip training: score the two runs a previous call left in --out")
    parser.add_argument("--figure", default=str(BENCHMARKS / "gan_vs_vae.png"), help="where the figure goes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vae.celeba import load_roster
    from generative.gan import load_gan
    from vae.quality import density_samples, fit_latent_density
    from generative.metrics import FEATURES, comparison_figure, real_image_sets, score_sets
    from vae.train import load_vae

    if args.score_only:
        runs = json.loads((Path(args.out) / "summaries.json").read_text())
    else:
        runs = train_both(Path(args.src), args.minutes, Path(args.out), args.seed)
    vae_model, _ = load_vae(runs["vae"]["checkpoint"], device="cpu")
    gan_model, _ = load_gan(runs["gan"]["checkpoint"], device="cpu")
    # the VAE samples its fitted latent density (vae.quality, as notebook 03 does); the GAN maps z ~ N(0, I)
    train_faces = load_roster(args.src, "train", 64, n=2000, seed=args.seed)
    density = fit_latent_density(vae_model, train_faces, seed=args.seed)
    samples = {"vae": density_samples(vae_model, density, args.samples, args.seed + 1),
               "gan": gan_model.sample(args.samples, generator=torch.Generator().manual_seed(args.seed + 1)).cpu()}
    real = real_image_sets(args.src, args.samples, 64, args.seed)
    tick = time.perf_counter()
    scores = score_sets(samples, real, args.workers, progress=False, seed=args.seed)
    scoring_seconds = time.perf_counter() - tick

    rows = []
    for name in ("vae", "gan", "real"):
        row = {"model": name, **rounded(scores[name])}
        if name in ("vae", "gan"):
            summary = runs[name]
            row.update(steps=summary["steps"], images_per_s=summary["images_per_s"],
                       train_images=summary["train_images"])
        rows.append(row)
    figure = comparison_figure({"real": real["held_out"], "vae": samples["vae"], "gan": samples["gan"]},
                               {row["model"]: row for row in rows}, args.figure,
                               title=f"after {args.minutes:g} min of training each on {args.threads} CPU threads; "
                                     f"{args.samples} images per set; features: dlib face descriptor")
    report("gan_vs_vae", {
        "benchmark": "gan_vs_vae",
        "device": "cpu",
        "threads": args.threads,
        "minutes_per_model": args.minutes,
        "image_size": 64,
        "batch_size": 64,
        "samples_per_set": args.samples,
        "reference_images": scores["reference_images"],
        "reference_from": scores["reference_from"],
        "train_images": scores["train_images"],
        "features": FEATURES,
        "kid_subsets": rows[0]["subsets"],
        "kid_subset_size": rows[0]["subset_size"],
        "vgg_weights": {None: "none (pixel loss)", True: "imagenet", False: "random (offline)"}[
            runs["vae"]["perceptual_pretrained"]],
        "rows": rows,
        "figure": Path(figure).relative_to(PROJECT_ROOT).as_posix() if Path(figure).resolve().is_relative_to(
            PROJECT_ROOT) else Path(figure).name,
        "training_seconds": runs["training_seconds"],
        "scoring_seconds": round(scoring_seconds, 1),
        "scoring_seconds_by_part": scores["seconds"],
        # the machine's 1-minute load average around each training phase: other work on the 2 cores slows both
        "load_average_1min": runs["load_average_1min"],
    })


if __name__ == "__main__":
    main()
