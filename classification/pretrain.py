"""`weights="synthetic"`: a MobileNetV2 backbone pretrained on synthetic faces, the offline stand-in for ImageNet.

`pretrain_backbone` renders `identities` strangers (none of them a person of the demo world of the same seed) and
trains MobileNetV2 to tell them apart, measuring top-1 accuracy on held-out photos. Face set and backbone are
cached under `<cache_root>/` by a fingerprint of the result-changing config fields and the code; an interrupted
run resumes from its last epoch.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import MobileNetV2
from tqdm import tqdm

from common.checkpoints import load_checkpoint, save_checkpoint
from common.config import (apply_overrides, code_version, config_to_dict, parse_set_options, pick_device,
                           save_config, seed_everything)
from common.files import atomic_save_image, atomic_write_bytes, atomic_write_text
from common.images import IMAGENET_MEAN, IMAGENET_STD

CHECKPOINT_NAME = "checkpoint.pt"
# Fields that do not change what is computed: they stay out of the fingerprint.
NON_RESULT_FIELDS = {"cache_root", "render_workers", "device", "overwrite", "progress"}
# Fields that decide the rendered face set (the rest only decide the training).
FACE_SET_FIELDS = ("identities", "photos_per_identity", "image_size", "seed")


@dataclass
class PretrainConfig:
    identities: int = 1000               # strangers in the set (none of them a person of the world with `seed`)
    photos_per_identity: int = 8         # face crops rendered per identity ...
    heldout_photos: int = 2              # ... of which this many are never trained on (held-out accuracy)
    image_size: int = 64                 # crop side in px: the demo classifier's input size
    epochs: int = 6                      # passes over the training photos ...
    low_res_epochs: int = 2              # ... the first of which see the photos shrunk to `low_res_size` (2x faster
    low_res_size: int = 32               # per photo: more steps in the same time, progressive resizing)
    batch_size: int = 64                 # photos per step (small: on a CPU, steps are what a short budget lacks)
    lr: float = 3e-3                     # AdamW peak learning rate (one-cycle: 15 % warm-up, cosine decay to ~0)
    weight_decay: float = 5e-4           # AdamW weight decay
    label_smoothing: float = 0.0         # softens the identity targets
    augment: bool = True                 # random flips, shifts/zooms up to ~8 %, brightness/contrast jitter
    seed: int = 0                        # decides identities, photos, init and order; avoids the world of this seed
    threads: int = 2                     # torch threads while training (float sums depend on the split of work)
    max_steps: int | None = None         # stop after this many optimiser steps (smoke runs); None = no cap
    cache_root: str = "runs/pretrained"  # where the face set and the backbone are cached (gitignored)
    render_workers: int = 2              # processes rendering the faces (the pixels do not depend on it)
    device: str = "auto"                 # "auto" = CUDA, then MPS, then CPU
    overwrite: bool = False              # pretrain again even when the cache holds a finished backbone
    progress: bool = True                # tqdm bars


def pretraining_code_version() -> str:
    """Fingerprint of the code the backbone depends on: common/ and world/ (the renderer) and this file."""
    digest = hashlib.sha256(code_version("common", "world").encode() + b"\0" + Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _fingerprint(values: dict, code: str) -> str:
    return hashlib.sha256(json.dumps({**values, "code_version": code}, sort_keys=True).encode()).hexdigest()[:12]


def pretrain_fingerprint(config: PretrainConfig) -> str:
    """12 hex digits over the result-changing config fields and `pretraining_code_version()`."""
    values = {k: v for k, v in config_to_dict(config).items() if k not in NON_RESULT_FIELDS}
    return _fingerprint(values, pretraining_code_version())


def face_set_fingerprint(config: PretrainConfig) -> str:
    """12 hex digits over the fields and code (common/, world/) that decide the rendered faces."""
    return _fingerprint({k: getattr(config, k) for k in FACE_SET_FIELDS}, code_version("common", "world"))


def pretrained_dir(config: PretrainConfig | None = None) -> Path:
    """`<cache_root>/mobilenet_v2_synthetic_<fingerprint>/` of `config` (default: `PretrainConfig()`); the default
    config's checkpoint there is what `build_classifier(weights="synthetic")` loads."""
    config = config or PretrainConfig()
    return Path(config.cache_root) / f"mobilenet_v2_synthetic_{pretrain_fingerprint(config)}"


def face_set(config: PretrainConfig) -> tuple[np.ndarray, dict]:
    """The rendered faces, uint8 `(identities, photos, size, size, 3)`, cached; returns `(faces, info)`."""
    from world.pretraining_faces import identities_unlike_world, render_face_set

    folder = Path(config.cache_root) / f"synthetic_faces_{face_set_fingerprint(config)}"
    path = folder / "faces.npy"
    shape = (config.identities, config.photos_per_identity, config.image_size, config.image_size, 3)
    if path.exists() and not config.overwrite:
        faces = np.load(path)
        if faces.shape == shape:
            return faces, {"path": str(path), "reused": True, "render_seconds": 0.0}
    started = time.perf_counter()
    people = identities_unlike_world(config.identities, config.seed)
    faces = render_face_set(people, config.photos_per_identity, config.image_size, config.seed,
                            workers=config.render_workers, progress=config.progress)
    seconds = time.perf_counter() - started
    buffer = io.BytesIO()
    np.save(buffer, faces)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_text(folder / "face_set.json", json.dumps(
        {**{k: getattr(config, k) for k in FACE_SET_FIELDS}, "world_avoided": f"WorldConfig(seed={config.seed})",
         "code_version": code_version("common", "world"), "render_seconds": round(seconds, 1)}, indent=1) + "\n")
    return faces, {"path": str(path), "reused": False, "render_seconds": seconds}


def faces_sheet(faces: np.ndarray, path: str | Path, rows: int = 6, columns: int = 8) -> Path:
    """A PNG grid: one row per identity (the first `rows`), its first `columns` photos side by side."""
    from PIL import Image

    rows, columns = min(rows, faces.shape[0]), min(columns, faces.shape[1])
    size = faces.shape[2]
    sheet = Image.new("RGB", (columns * (size + 2) + 2, rows * (size + 2) + 2), "white")
    for r in range(rows):
        for c in range(columns):
            sheet.paste(Image.fromarray(faces[r, c]), (2 + c * (size + 2), 2 + r * (size + 2)))
    return atomic_save_image(sheet, path, format="PNG")


def augment_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-photo random flip, zoom 0.92-1.08, shift up to 6 % and brightness/contrast 0.85-1.15 on a float
    `(N, 3, H, W)` batch in [0, 1]. Renders already vary pose and light; this only stops memorising pixels."""
    n = images.shape[0]
    u = torch.rand(n, 6, generator=generator)
    scale = 0.92 + 0.16 * u[:, 0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * torch.where(u[:, 1] < 0.5, -1.0, 1.0)  # zoom, mirrored half the time
    theta[:, 1, 1] = scale
    theta[:, :, 2] = (u[:, 2:4] - 0.5) * 0.12  # shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness, contrast = (0.85 + 0.3 * u[:, 4:6]).T.reshape(2, n, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * contrast + mean * brightness).clamp(0.0, 1.0)


def _prepare_batch(images_uint8: torch.Tensor, augment: bool, generator: torch.Generator | None,
                   size: int | None = None) -> torch.Tensor:
    batch = images_uint8.float() / 255.0
    if augment and generator is not None:
        batch = augment_batch(batch, generator)
    if size is not None and size != batch.shape[-1]:
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((batch - mean) / std).contiguous(memory_format=torch.channels_last)


def train_identity_epoch(model, images, labels, optimizer, scheduler, criterion, config: PretrainConfig,
                         epoch: int, step: int, device) -> tuple[float, float, int]:
    """One seeded pass (order and augmentation from `(seed, epoch)`, so a resumed run continues exactly):
    forward -> loss -> backward -> step. Returns (mean loss, training accuracy, step)."""
    model.train()
    generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    order = torch.randperm(len(labels), generator=generator)
    total, correct, count = 0.0, 0, 0
    batches = range(0, len(order), config.batch_size)
    bar = tqdm(batches, desc=f"pretraining epoch {epoch + 1}/{config.epochs}", disable=not config.progress,
               leave=False)
    for start in bar:
        if config.max_steps is not None and step >= config.max_steps:
            break
        index = order[start:start + config.batch_size]
        size = config.low_res_size if epoch < config.low_res_epochs else None
        x = _prepare_batch(images[index], config.augment, generator, size).to(device)
        y = labels[index].to(device)
        logits = model(x)
        loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        total += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        count += len(y)
        bar.set_postfix(loss=f"{loss.item():.2f}", acc=f"{correct / max(1, count):.2f}")
    return total / max(1, count), correct / max(1, count), step


def identity_accuracy(model, images, labels, device, batch_size: int = 256) -> dict[str, float]:
    """Top-1 and top-5 accuracy of the identity head on `images` (uint8 NCHW) under eval mode."""
    model.eval()
    top1 = top5 = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            logits = model(_prepare_batch(images[start:start + batch_size], False, None).to(device)).cpu()
            y = labels[start:start + batch_size]
            best = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += int((best[:, 0] == y).sum())
            top5 += int((best == y[:, None]).any(dim=1).sum())
    n = max(1, len(labels))
    return {"top1": top1 / n, "top5": top5 / n}


def _split_faces(faces: np.ndarray, heldout: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, labels, held-out images, labels) as uint8 NCHW tensors; the last `heldout` photos of each
    identity are held out."""
    n_ids, n_photos = faces.shape[:2]
    if not 0 <= heldout < n_photos:
        raise ValueError(f"heldout_photos must be between 0 and photos_per_identity - 1, got {heldout}")
    tensor = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 1, 4, 2, 3)  # ids, photos, C, H, W
    keep = n_photos - heldout
    labels = torch.arange(n_ids)
    train = tensor[:, :keep].reshape(-1, *tensor.shape[2:]).contiguous()
    test = tensor[:, keep:].reshape(-1, *tensor.shape[2:]).contiguous()
    return train, labels.repeat_interleave(keep), test, labels.repeat_interleave(heldout)


def pretrain_backbone(config: PretrainConfig | None = None) -> dict:
    """Pretrain (or reuse) the synthetic-faces MobileNetV2 of `config`; return a JSON-ready summary (checkpoint,
    fingerprint, heldout_accuracy = top-1 on photos never trained on, timings, reused, ...)."""
    config = config or PretrainConfig()
    if config.identities < 2:
        raise ValueError(f"identities must be at least 2, got {config.identities}")
    out = pretrained_dir(config)
    if not config.overwrite and (out / "model_card.json").exists() and (out / CHECKPOINT_NAME).exists():
        return {**json.loads((out / "model_card.json").read_text())["summary"], "reused": True}
    started = time.perf_counter()
    faces, faces_info = face_set(config)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.json")
    faces_sheet(faces, out / "faces_sheet.png")
    train_images, train_labels, heldout_images, heldout_labels = _split_faces(faces, config.heldout_photos)

    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    # Not PyTorch's deterministic mode (8x slower on CPU); with fixed threads runs agree anyway (tests check it).
    seed_everything(config.seed, threads=config.threads, deterministic=False)
    torch.use_deterministic_algorithms(False)
    device = pick_device(config.device)
    model = MobileNetV2(num_classes=config.identities, dropout=0.1).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_labels) / config.batch_size)
    total_steps = max(1, config.epochs * steps_per_epoch if config.max_steps is None
                      else min(config.max_steps, config.epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps + 1,
                                                    pct_start=0.15, anneal_strategy="cos", div_factor=20.0,
                                                    final_div_factor=200.0)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    state = {"epoch": 0, "step": 0, "history": [], "train_seconds": 0.0}
    last = out / "last.pt"
    if last.exists() and not config.overwrite:  # an interrupted run with this fingerprint: continue it
        saved = load_checkpoint(last)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["training_state"]
    try:
        while state["epoch"] < config.epochs and (config.max_steps is None or state["step"] < config.max_steps):
            epoch_started = time.perf_counter()
            loss, accuracy, state["step"] = train_identity_epoch(
                model, train_images, train_labels, optimizer, scheduler, criterion, config, state["epoch"],
                state["step"], device)
            state["epoch"] += 1
            state["train_seconds"] += time.perf_counter() - epoch_started
            state["history"].append({"epoch": state["epoch"], "step": state["step"], "train_loss": round(loss, 4),
                                     "train_accuracy": round(accuracy, 4), "lr": scheduler.get_last_lr()[0]})
            save_checkpoint(last, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict(), "step": state["step"],
                                   "config": config_to_dict(config), "training_state": state})
        heldout = identity_accuracy(model, heldout_images, heldout_labels, device) if len(heldout_labels) else {}
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])
    summary = {
        "command": "pretrain", "checkpoint": str(out / CHECKPOINT_NAME), "out_dir": str(out),
        "fingerprint": pretrain_fingerprint(config), "identities": config.identities,
        "train_photos": len(train_labels), "heldout_photos": len(heldout_labels), "image_size": config.image_size,
        "epochs_run": state["epoch"], "steps": state["step"],
        "heldout_accuracy": round(heldout.get("top1", float("nan")), 4),
        "heldout_top5_accuracy": round(heldout.get("top5", float("nan")), 4),
        "chance_accuracy": round(1.0 / config.identities, 5),
        "train_accuracy": state["history"][-1]["train_accuracy"] if state["history"] else None,
        "faces_reused": faces_info["reused"], "render_seconds": round(faces_info["render_seconds"], 1),
        "train_seconds": round(state["train_seconds"], 1), "seconds": round(time.perf_counter() - started, 1),
    }
    metrics = {"heldout": heldout, "history": state["history"]}
    save_checkpoint(out / CHECKPOINT_NAME, {"model": model.cpu().state_dict(), "optimizer": optimizer.state_dict(),
                                            "step": state["step"], "config": config_to_dict(config),
                                            "metrics": metrics, "code_version": pretraining_code_version()})
    write_model_card(out, config, summary, metrics)  # written last: its presence marks the cache as finished
    last.unlink(missing_ok=True)
    return {**summary, "reused": False}


def write_model_card(out: Path, config: PretrainConfig, summary: dict, metrics: dict) -> Path:
    """`model_card.json` (config, summary, history) and `model_card.md` next to the checkpoint."""
    record = {"config": config_to_dict(config), "code_version": pretraining_code_version(), "summary": summary,
              "metrics": metrics}
    atomic_write_text(out / "model_card.json", json.dumps(record, indent=1) + "\n")
    held = metrics.get("heldout") or {}
    text = (f"# Model card: MobileNetV2 pretrained on synthetic faces\n\n"
            f"The offline stand-in for ImageNet weights in stage 2 (`build_classifier(weights=\"synthetic\")`).\n"
            f"Data: {config.identities} synthetic identities unlike the people of `WorldConfig(seed={config.seed})`, "
            f"{config.photos_per_identity} crops each at {config.image_size} px; {summary['train_photos']} photos "
            f"train, {summary['heldout_photos']} are held out.\n"
            f"Training: {config.identities}-way softmax, AdamW lr {config.lr} one-cycle, batch {config.batch_size}, "
            f"{summary['epochs_run']} epochs ({summary['steps']} steps), seed {config.seed}, "
            f"{summary['train_seconds']} s.\n"
            f"Held-out photos of the pretraining identities: top-1 accuracy {held.get('top1', float('nan')):.3f}, "
            f"top-5 {held.get('top5', float('nan')):.3f} (chance {1 / config.identities:.4f}).\n"
            "Limits: it has only seen procedural cartoon faces; its use on real photos is measured "
            "(`benchmarks/bench_classifier_quality.py --weights synthetic`).\n")
    return atomic_write_text(out / "model_card.md", text)


def load_synthetic_backbone(checkpoint: str | Path | None = None) -> dict:
    """The `features.*` tensors of a pretrained synthetic backbone (default: the default config's cache);
    `InputError` saying how to make it when the checkpoint does not exist."""
    from common.errors import InputError

    path = Path(checkpoint) if checkpoint is not None else pretrained_dir() / CHECKPOINT_NAME
    if not path.is_file():
        raise InputError(f"synthetic pretrained weights not found at {path}: make them with `python -m "
                         "classification pretrain` (under 4 minutes on 2 cores; cached for later runs), or use "
                         "weights='none'")
    state = load_checkpoint(path, hint="make it with: python -m classification pretrain")["model"]
    return {k: v for k, v in state.items() if k.startswith("features.")}


def cli_add_arguments(parser) -> None:
    parser.add_argument("--out", dest="cache_root", help="cache folder (default runs/pretrained)")
    parser.add_argument("--seed", type=int, help="decides identities, photos and init; avoids that world's people")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--identities", type=int)
    parser.add_argument("--max-steps", dest="max_steps", type=int, help="cap on optimiser steps (smoke runs)")
    parser.add_argument("--overwrite", action="store_true", default=None, help="pretrain again")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any PretrainConfig field")


def cli_run(args) -> dict:
    overrides = {k: getattr(args, k) for k in ("cache_root", "seed", "epochs", "identities", "max_steps",
                                               "overwrite") if getattr(args, k, None) is not None}
    if args.quiet:
        overrides["progress"] = False
    overrides.update(parse_set_options(args.set))
    return pretrain_backbone(apply_overrides(PretrainConfig(), overrides))
