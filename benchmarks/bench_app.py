"""Web app latency: seconds per request step (detect, crop, classify, embed, reconstruct, morph) and for a photo's
full answer, over several of the demo's scraped photos, with the demo's 64 px models, at 1 and 2 torch threads
side by side in one run (the app runs with 1).

Models and photos: the last demo's (`app.core.demo_paths`: results/demo/demo_summary.json, runs/demo, data/demo);
run `make demo` first. Each photo is answered `--repeats` times after the models' warm-up (`load_models`); the
JSON gives the median and 90th percentile per step over all answers, the target being a full answer under 2 s.
The timings are those of `app.core.answer_photo`, the function each page request runs (the page adds the upload
and Gradio's own encoding of the pictures, a few tens of milliseconds on loopback).

Usage: python benchmarks/bench_app.py [--photos 8] [--repeats 3] [--threads 1,2] [--no-record]
Prints one JSON object on its last line and writes it to results/benchmarks/app_latency.json
(`benchmarks/reporting.py`; `--no-record` prints only).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("detect", "crop", "classify", "embed", "reconstruct", "morph", "total")
TARGET_SECONDS = 2.0


def demo_photos(n: int) -> list[Path]:
    """`n` scraped photos of the demo, alternating the target and the other people (sorted names)."""
    from common.images import is_image_file

    raw = ROOT / "data" / "demo" / "raw"
    people = sorted(p for p in raw.iterdir() if p.is_dir()) if raw.is_dir() else []
    lists = [sorted(f for f in p.iterdir() if is_image_file(f)) for p in people]
    photos = [photo for group in zip(*lists) for photo in group] if lists else []
    return photos[:n]


def stats(values: list[float]) -> dict:
    return {"median_s": round(float(np.median(values)), 4), "p90_s": round(float(np.percentile(values, 90)), 4),
            "n": len(values)} if values else {"median_s": None, "p90_s": None, "n": 0}


def time_answers(models, photos: list[Path], repeats: int, threads: int) -> dict:
    """Per-step timings of `repeats` answers to each photo with `threads` torch threads."""
    from app import core

    torch.set_num_threads(threads)
    core.answer_photo(models, core.read_photo(photos[0]))  # warm-up at this thread count
    samples: dict[str, list[float]] = {step: [] for step in STEPS}
    faces_found, read_seconds = [], []
    for photo in photos:
        t = time.perf_counter()
        image = core.read_photo(photo)
        read_seconds.append(time.perf_counter() - t)
        for _ in range(repeats):
            answer = core.answer_photo(models, image)
            for step in STEPS:
                if step in answer.timings:
                    samples[step].append(answer.timings[step])
        faces_found.append(answer.n_faces)
    full = stats(samples["total"])["median_s"]
    return {"threads": threads, "photos_with_a_face": int(sum(n > 0 for n in faces_found)),
            "read_photo": stats(read_seconds), **{step: stats(samples[step]) for step in STEPS},
            "meets_target": bool(full is not None and full < TARGET_SECONDS)}


def main() -> tuple[dict, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts to compare")
    parser.add_argument("--no-record", action="store_true", help="print only; leave results/benchmarks alone")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    torch.set_num_threads(thread_counts[0])

    from app import core

    paths = core.demo_paths(ROOT)
    paths.examples = []
    started = time.perf_counter()
    models = core.load_models(paths)  # includes the warm-up answer
    load_seconds = time.perf_counter() - started
    photos = demo_photos(args.photos)
    if not photos:
        raise SystemExit(f"error: no demo photos under {ROOT / 'data' / 'demo' / 'raw'}: run `make demo` first")
    runs = [time_answers(models, photos, args.repeats, threads) for threads in thread_counts]
    result = {
        "benchmark": "app_latency",
        "photos": len(photos),
        "repeats": args.repeats,
        "classifier_image_size": models.classifier_size,
        "vae_image_size": models.vae.image_size,
        "finetuned_vae": models.vae_finetuned is not None,
        "morph_frames": 2 * (core.MORPH_STEPS + 1),
        "morph_frame_size": core.MORPH_SIZE,
        "runs": runs,
        "load_and_warm_up_seconds": round(load_seconds, 2),
        "target_full_answer_s": TARGET_SECONDS,
        "app_threads": core.DEFAULT_THREADS,
    }
    return result, args.no_record


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from reporting import BENCHMARKS, report  # benchmarks/reporting.py (this folder is on sys.path)

    outcome, print_only = main()
    report("app_latency", outcome, None if print_only else BENCHMARKS)
