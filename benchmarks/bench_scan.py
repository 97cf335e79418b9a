"""Scan throughput: `classification.scan`'s fast path vs a tutorial-style loop, on real in-the-wild photos.

Photos: `<project root>/../shared/data/celeba_wild_dev/images` (override the `shared` folder with SHARED_DATA).
Model: a randomly initialised `FaceClassifier` saved as a checkpoint (throughput does not depend on the weights).

- tutorial: `ImageFolder`-style loop as in the PyTorch transfer-learning tutorial: PIL decode at full size,
  torchvision Resize(224) + CenterCrop(224) + ToTensor + Normalize, `DataLoader(num_workers=0, batch_size=32)`,
  `torch.no_grad()`.
- fast: `scan_images` with its defaults (DataLoader workers, JPEG draft decoding, uint8 transfer, channels_last,
  `inference_mode`) at `--image-size` (the size the classifier is trained at; the checkpoint records it).

Each path scores the same `--limit` photos once after a short warm-up. Prints one JSON line.
Usage: python benchmarks/bench_scan.py [--limit 400] [--image-size 96] [--batch-size 64] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from reporting import report

ROOT = Path(__file__).resolve().parents[1]


def photo_folder() -> Path:
    shared = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared"))
    return shared / "data" / "celeba_wild_dev" / "images"


def tutorial_images_per_second(checkpoint: Path, files: list[Path], batch_size: int = 32, size: int = 224) -> float:
    from PIL import Image
    from torchvision import transforms as T

    from common.images import IMAGENET_MEAN, IMAGENET_STD
    from classification.train import load_classifier

    model, _ = load_classifier(checkpoint)
    transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, index):
            with Image.open(files[index]) as image:
                return transform(image.convert("RGB"))

    loader = torch.utils.data.DataLoader(Photos(), batch_size=batch_size, num_workers=0)
    with torch.no_grad():
        model(torch.zeros(2, 3, size, size))  # warm-up
        started = time.perf_counter()
        for batch in loader:
            torch.sigmoid(model(batch))
    return len(files) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=400, help="photos scored by each path")
    parser.add_argument("--image-size", type=int, default=96, help="fast path input size (the trained size)")
    parser.add_argument("--batch-size", type=int, default=64, help="fast path batch size")
    parser.add_argument("--workers", type=int, default=2, help="fast path decoding processes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both paths (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from classification.model import build_classifier
    from classification.scan import ScanConfig, scan_images
    from classification.train import save_checkpoint

    folder = photo_folder()
    files = sorted(p for p in folder.glob("*.jpg"))[: args.limit] if folder.is_dir() else []
    if not files:
        sys.exit(f"no photos found in {folder} (set SHARED_DATA to the folder holding data/celeba_wild_dev)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        checkpoint = save_checkpoint(tmp / "best.pt", {"model": build_classifier("none").state_dict(),
                                                       "config": {"image_size": args.image_size}, "metrics": {}})
        subset = tmp / "photos"
        subset.mkdir()
        for path in files:
            (subset / path.name).symlink_to(path.resolve())
        tutorial = tutorial_images_per_second(checkpoint, files)
        config = ScanConfig(batch_size=args.batch_size, num_workers=args.workers, overwrite=True)
        started = time.perf_counter()
        fast = scan_images(checkpoint, subset, tmp / "scan", config)
        wall = time.perf_counter() - started  # includes worker start-up, listing and the contact sheet
    report("scan", {
        "benchmark": "scan", "photos": len(files), "source": "celeba_wild_dev/images",
        "tutorial_images_per_second": round(tutorial, 1), "tutorial_image_size": 224, "tutorial_batch_size": 32,
        "tutorial_workers": 0,
        "fast_images_per_second": fast["images_per_second"], "fast_images_per_second_wall": round(len(files) / wall, 1),
        "fast_image_size": args.image_size, "fast_batch_size": args.batch_size, "fast_workers": args.workers,
        "speedup": round(fast["images_per_second"] / tutorial, 2), "unreadable": fast["unreadable"],
        "torch_threads": torch.get_num_threads(),
    })


if __name__ == "__main__":
    main()
