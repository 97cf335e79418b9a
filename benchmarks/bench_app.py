"""Web app latency: seconds per request step (detect, crop, classify, embed, reconstruct, morph) and for a photo's
full answer, over several of the demo's scraped photos, with the demo's 64 px models, at 1 and 2 torch threads
side by side in one run (the app runs with 1). With `--visitors`, concurrent visitors on a real server instead.

Models and photos: the last demo's (`app.core.demo_paths`: results/demo/demo_summary.json, runs/demo, data/demo);
run `make demo` first. Each photo is answered `--repeats` times after the models' warm-up (`load_models`); the
JSON gives the median and 90th percentile per step over all answers, the target being a full answer under 2 s.
The timings are those of `app.core.answer_photo`, the function each page request runs (the page adds the upload
and Gradio's own encoding of the pictures, a few tens of milliseconds on loopback).

`--visitors 1,4,16` starts `python -m app serve` (the demo's models; the tests' tiny models from
tests/app_fixture.py when no demo has been run, as the JSON says) and, for each count, lets that many visitors
at once each send `--rounds` different phone-sized photos (12 megapixel JPEGs of synthetic portraits) in a session
of their own, over HTTP as the page does (upload, then the answer). It reports the median and 95th percentile of
the time a visitor waits from the start of the upload to the answer, and the server's peak resident memory while
they are served (`VmHWM`, reset before each count); then one photo at the megapixel limit (`app.core.MAX_PIXELS`).

Usage: python benchmarks/bench_app.py [--photos 8] [--repeats 3] [--threads 1,2] [--no-record]
       python benchmarks/bench_app.py --visitors 1,4,16 [--rounds 2] [--no-record]
Prints one JSON object on its last line and writes it to results/benchmarks/app_latency.json, or
app_visitors.json with `--visitors` (`benchmarks/reporting.py`; `--no-record` prints only).
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


def visitor_photos(n: int, megapixels: float = 12.0, seed: int = 0) -> list[bytes]:
    """`n` different JPEGs of about `megapixels` (4:3), each a synthetic portrait scaled up."""
    from PIL import Image

    from app_fixture import jpeg_bytes, synthetic_photo

    width = round((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    return [jpeg_bytes(synthetic_photo(seed + k, size=(400, 300)).resize((width, height), Image.BICUBIC))
            for k in range(n)]


def serve_visitors(url: str, pid: int, photos: list[list[bytes]]) -> dict:
    """One visitor per entry of `photos`, all at once, each sending its photos one after the other in a session of
    its own; seconds from each upload's start to its answer, and the server's peak RSS meanwhile."""
    import secrets
    from concurrent.futures import ThreadPoolExecutor

    from app_fixture import call_api, file_data, reset_peak_rss, rss_mb, upload

    def visit(own: list[bytes]) -> list[tuple[float, bool]]:
        session, waits = secrets.token_hex(8), []
        for photo in own:
            started = time.perf_counter()
            stored = upload(url, photo)
            event, outputs = call_api(url, "analyse_upload", [file_data(stored.json()[0])], session=session)
            answered = event == "complete" and outputs[0] == "**1 face found.**"
            waits.append((time.perf_counter() - started, answered))
        return waits

    reset_peak_rss(pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(len(photos)) as pool:
        waits = [w for visitor in pool.map(visit, photos) for w in visitor]
    seconds = [w for w, _ in waits]
    return {"visitors": len(photos), "answers": len(waits), "answered": sum(ok for _, ok in waits),
            "p50_s": round(float(np.percentile(seconds, 50)), 3), "p95_s": round(float(np.percentile(seconds, 95)), 3),
            "wall_s": round(time.perf_counter() - started, 2), "peak_rss_mb": round(rss_mb(pid, "VmHWM")),
            "rss_after_mb": round(rss_mb(pid))}


def visitors_benchmark(levels: list[int], rounds: int) -> dict:
    """Concurrent visitors on `python -m app serve` (see the module docstring)."""
    import tempfile

    from app import core
    from app.screenshot import free_port
    from app_fixture import make_tiny_models, rss_mb, serve_in_subprocess

    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        try:
            paths, models = core.demo_paths(ROOT).check(), "demo (64 px)"
        except core.InputError:
            paths, models = make_tiny_models(Path(tmp) / "models"), "tiny test models (tests/app_fixture.py; no demo)"
        photos = visitor_photos(max(levels) * rounds)
        largest = visitor_photos(1, core.MAX_PIXELS / 1e6 * 0.99, seed=1000)
        with serve_in_subprocess(paths, free_port(), Path(tmp)) as server:
            idle = rss_mb(server.pid)
            serve_visitors(server.url, server.pid, [photos[:1]])  # first answer: lazy set-up in torch and Gradio
            runs = [serve_visitors(server.url, server.pid, [photos[v * rounds:(v + 1) * rounds] for v in range(n)])
                    for n in levels]
            at_limit = serve_visitors(server.url, server.pid, [largest])
    return {"benchmark": "app_visitors", "models": models, "rounds_per_visitor": rounds,
            "photo_megapixels": 12, "photo_mb": round(float(np.mean([len(p) for p in photos])) / 1e6, 2),
            "idle_rss_mb": round(idle), "runs": runs,
            "photo_at_the_limit": {"megapixels": round(core.MAX_PIXELS / 1e6 * 0.99, 1),
                                   "mb": round(len(largest[0]) / 1e6, 2), "answer_s": at_limit["p50_s"],
                                   "answered": at_limit["answered"], "peak_rss_mb": at_limit["peak_rss_mb"]},
            "max_upload_mb": core.MAX_UPLOAD_BYTES / 2**20, "max_megapixels": core.MAX_PIXELS / 1e6}


def main() -> tuple[str, dict, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts to compare")
    parser.add_argument("--visitors", default=None, help="comma-separated counts of concurrent visitors: measure "
                        "those on a real server instead of the per-step latency")
    parser.add_argument("--rounds", type=int, default=2, help="photos each visitor sends (with --visitors)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave results/benchmarks alone")
    args = parser.parse_args()
    if args.visitors:
        levels = [int(n) for n in args.visitors.split(",") if n.strip()]
        return "app_visitors", visitors_benchmark(levels, args.rounds), args.no_record
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
    return "app_latency", result, args.no_record


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path.insert(1, str(ROOT / "tests"))  # app_fixture.py: the tests' tiny models and HTTP helpers
    from reporting import BENCHMARKS, report  # benchmarks/reporting.py (this folder is on sys.path)

    name, outcome, print_only = main()
    report(name, outcome, None if print_only else BENCHMARKS)
