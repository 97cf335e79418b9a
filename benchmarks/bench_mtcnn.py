"""Benchmark: batched MTCNN face detection (`scraping.faces.detect_faces`) vs one `MTCNN.detect` call per photo.

Data: the first N (sorted by name, default 200) of the real in-the-wild CelebA photos in
`<project root>/../shared/data/celeba_wild_dev/images` (various sizes, ~100 to 4,700 px; override the folder's
parent with the SHARED_DATA environment variable). Photos are decoded once before timing; only detection is
timed. The methods take turns on chunks of `--chunk` photos (rotating order) so that load from other processes on
a shared CPU hits them alike.

Four timings, all on CPU with torch.set_num_threads(2) and the same MTCNN (min_face_size from CropConfig):
- per_image_s: `detect_faces_single` (one `MTCNN.detect(pil_image)` call) on each full-resolution photo -- the
  plain facenet-pytorch usage, and the baseline of `speedup` (the repo's target is >= 2x);
- per_image_downscaled_s: the same plain calls on the `max_side` view, i.e. the gain from downscaling alone;
- same_pipeline_one_per_call_s: `detect_faces` with batch_size=1 and no padding: downscaling plus the contiguous
  input layout (see `scraping.faces._channels_first_batch`), one image per call;
- batched_s: `detect_faces` (downscale to max_side, pad to `bucket`-rounded canvases, batches of batch_size).
So speedup = per_image_s / batched_s, and `speedup_from_batching_alone` = same_pipeline_one_per_call_s /
batched_s says how much of it is batching proper. Prints one JSON object as its last line.

Usage: python benchmarks/bench_mtcnn.py [--images 200] [--batch-size 16] [--max-side 512] [--bucket 32] [--chunk 100]
                                        [--crops-out <temp dir>/bench_crops]

`--crops-out DIR` afterwards crops every photo of the folder (all identities in `identity_CelebA.txt`, not just
the N timed) into `DIR/<identity>/` with `crop_faces(..., identities=...)`, for other benchmarks that want real
face crops; it resumes, so a second run costs nothing. The same from the shell:
`python -m scraping crop --src <celeba_wild_dev>/images --identities <celeba_wild_dev>/identity_CelebA.txt
--out <temp dir>/bench_crops`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from reporting import report  # noqa: E402
from scraping.faces import (  # noqa: E402
    CropConfig, build_detector, crop_faces, detect_faces, detect_faces_single, load_rgb,
)


def shared_images_folder() -> Path:
    shared = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared"))
    return shared / "data" / "celeba_wild_dev" / "images"


def share_with_face(detections, min_prob: float) -> float:
    return sum(any(face.prob >= min_prob for face in faces) for faces in detections) / max(1, len(detections))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="how many photos (first N by name)")
    parser.add_argument("--batch-size", type=int, default=CropConfig.batch_size)
    parser.add_argument("--max-side", type=int, default=CropConfig.max_side)
    parser.add_argument("--bucket", type=int, default=CropConfig.bucket)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=100, help="photos per round of the round-robin timing")
    parser.add_argument("--crops-out", default="", help="also write crops of every photo to DIR/<identity>/")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    folder = shared_images_folder()
    paths = sorted(p for p in folder.glob("*.jpg"))[: args.images]
    if not paths:
        sys.exit(f"no photos found in {folder} (set SHARED_DATA to the folder holding data/celeba_wild_dev)")
    images = [load_rgb(p) for p in paths]
    config = CropConfig(device="cpu", batch_size=args.batch_size, max_side=args.max_side, bucket=args.bucket)
    detector = build_detector(config)
    detect_faces(images[:2], detector, config)  # warm-up (first-call allocations)

    # Methods run round-robin over chunks of photos, rotating their order, so that load from other processes on a
    # shared CPU falls on all of them alike rather than on whichever ran during a busy minute.
    one_at_a_time = dataclasses.replace(config, batch_size=1, bucket=1)
    methods = {
        "per_image": lambda chunk: [detect_faces_single(image, detector, config) for image in chunk],
        "per_image_downscaled": lambda chunk: [detect_faces_single(image, detector, config, downscale=True)
                                               for image in chunk],
        # same pipeline as batched (downscale, contiguous input) but one image per MTCNN call and no padding
        "same_pipeline_one_per_call": lambda chunk: detect_faces(chunk, detector, one_at_a_time),
        "batched": lambda chunk: detect_faces(chunk, detector, config),
    }
    seconds = dict.fromkeys(methods, 0.0)
    found = {name: [] for name in methods}
    names = list(methods)
    for round_index, first in enumerate(range(0, len(images), args.chunk)):
        chunk = images[first:first + args.chunk]
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            found[name].extend(methods[name](chunk))
            seconds[name] += time.perf_counter() - start
    per_image_s, batched_s = seconds["per_image"], seconds["batched"]
    per_image_downscaled_s = seconds["per_image_downscaled"]
    same_pipeline_one_per_call_s = seconds["same_pipeline_one_per_call"]
    single, single_small, batched = found["per_image"], found["per_image_downscaled"], found["batched"]

    crops = {}
    if args.crops_out:
        cropped = crop_faces(folder, Path(args.crops_out), dataclasses.replace(config, progress=False),
                             identities=folder.parent / "identity_CelebA.txt")
        crops = {"crops_out": args.crops_out, "crops_identities": len(cropped["per_person"]),
                 "crops_faces": cropped["faces"], "crops_seconds": cropped["seconds"]}

    sizes = sorted(max(image.size) for image in images)
    report("mtcnn", {
        "benchmark": "mtcnn_batched_vs_per_image",
        "images": len(images),
        "longer_side_px_min_median_max": [sizes[0], sizes[len(sizes) // 2], sizes[-1]],
        "per_image_s": round(per_image_s, 2),
        "per_image_downscaled_s": round(per_image_downscaled_s, 2),
        "batched_s": round(batched_s, 2),
        "speedup": round(per_image_s / batched_s, 2),
        "same_pipeline_one_per_call_s": round(same_pipeline_one_per_call_s, 2),
        "speedup_vs_per_image_downscaled": round(per_image_downscaled_s / batched_s, 2),
        "speedup_from_batching_alone": round(same_pipeline_one_per_call_s / batched_s, 2),
        "face_found_share": round(share_with_face(batched, config.min_prob), 3),
        "face_found_share_per_image": round(share_with_face(single, config.min_prob), 3),
        "face_found_share_per_image_downscaled": round(share_with_face(single_small, config.min_prob), 3),
        "min_prob": config.min_prob,
        "batch_size": config.batch_size,
        "max_side": config.max_side,
        "bucket": config.bucket,
        "min_face_size": config.min_face_size,
        "threads": args.threads,
        "round_robin_chunk": args.chunk,
        "device": "cpu",
        **crops,
    })


if __name__ == "__main__":
    main()
