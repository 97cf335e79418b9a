"""Tiny models and synthetic photos for the web app's tests (test-only code).

`make_tiny_models(root)` trains, in a few seconds on a CPU, every model the app loads, in the layouts the real
pipeline writes: a MobileNetV2 classifier checkpoint at 32 px (+ metrics.json with its threshold) after two
optimiser steps on its head, a dlib centroid scorer fitted on synthetic face crops, a 32 px VAE after two steps
and a "fine-tuned" copy after one more on the target's crops. Photos are drawn by the synthetic world's
`render_portrait`.

A served page is driven as a browser drives it, over HTTP: `upload` posts a file to Gradio's upload route,
`call_api` runs one event through Gradio's REST API (`/gradio_api/call/<api_name>`, one new session per call unless
a session id is given) and waits for its answer; `serve_in_subprocess` runs `python -m app serve` on the tiny models.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.core import ModelPaths, to_vae_input
from world.generate import target_identity
from world.portraits import random_identity, random_nuisance, render_portrait

# Where a stage-1 crop (MTCNN box + 15 % margin, squared) sits in a 178x218 aligned portrait (as in test_embed).
CROP_BOX = (16, 63, 156, 203)
SEED = 5


def face_crop(identity, rng) -> Image.Image:
    """A stage-1-like 160 px crop of `identity` in fresh photo conditions."""
    return render_portrait(identity, random_nuisance(rng, aligned=True)).crop(CROP_BOX).resize((160, 160))


def synthetic_photo(seed: int = 0, size: tuple[int, int] = (360, 300), people: int = 1) -> Image.Image:
    """An in-the-wild-like photo of `people` persons side by side (the target first), faces of ~20 % width."""
    rng = np.random.default_rng([SEED, seed])
    identities = [target_identity(SEED)] + [random_identity(rng) for _ in range(people - 1)]
    tiles = [render_portrait(identity, random_nuisance(rng, face_x=0.5, face_y=0.42, face_scale=0.2,
                                                           rotation=0.0, yaw=0.0, blur=0.0), size)
             for identity in identities]
    canvas = Image.new("RGB", (size[0] * people, size[1]))
    for k, tile in enumerate(tiles):
        canvas.paste(tile, (k * size[0], 0))
    return canvas


def no_face_photo(size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A smooth colour gradient: nothing MTCNN takes for a face."""
    x = np.linspace(0, 1, size[0])[None, :, None]
    y = np.linspace(0, 1, size[1])[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (size[1], size[0], 1)), np.broadcast_to(y, (size[1], size[0], 1)),
                          np.full((size[1], size[0], 1), 0.5)], axis=2)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def _vae_steps(model, images: torch.Tensor, steps: int, lr: float = 2e-3) -> None:
    from vae.losses import kl_divergence, reconstruction_loss

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        reconstruction, mu, logvar = model(images)
        loss = reconstruction_loss(reconstruction, images) + kl_divergence(mu, logvar)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def make_tiny_models(root: str | Path, n_target: int = 5, n_other: int = 3) -> ModelPaths:
    """Train and save every model the app needs under `root`; returns their `ModelPaths` (checked)."""
    from classification.data import make_transforms
    from identity.embed import embed_images, fit_scorer
    from classification.model import build_classifier, unfreeze_last_blocks
    from common.checkpoints import save_checkpoint
    from vae.model import ConvVAE

    root = Path(root)
    torch.manual_seed(0)
    rng = np.random.default_rng(SEED)
    target = target_identity(SEED)
    targets = [face_crop(target, rng) for _ in range(n_target)]
    others = [face_crop(random_identity(rng), rng) for _ in range(n_other)]
    faces = root / "faces" / "ava_marlowe"
    faces.mkdir(parents=True, exist_ok=True)
    for k, crop in enumerate(targets):
        crop.save(faces / f"{k:02d}.jpg", quality=92)

    # classifier: two AdamW steps on the head (the demo trains k=0 too), target vs others, at 32 px
    classifier = build_classifier("none")
    unfreeze_last_blocks(classifier, 0)
    transform = make_transforms(32, train=False)
    x = torch.stack([transform(c) for c in targets + others])
    y = torch.tensor([1.0] * len(targets) + [0.0] * len(others))
    optimizer = torch.optim.AdamW([p for p in classifier.parameters() if p.requires_grad], lr=1e-3)
    classifier.train()
    for _ in range(2):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(classifier(x).squeeze(1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    run = root / "classification" / "k0"
    save_checkpoint(run / "best.pt", {"model": classifier.eval().state_dict(), "config": {"image_size": 32},
                                      "step": 2})
    (run / "metrics.json").write_text(json.dumps({"threshold": 0.5}))

    # embedding scorer: the target's centroid, threshold halfway to the nearest other person
    positives, negatives = embed_images(targets), embed_images(others)
    scorer = fit_scorer(positives, negatives, method="centroid")
    own = np.linalg.norm(positives - scorer.centroid, axis=1).max()
    theirs = np.linalg.norm(negatives - scorer.centroid, axis=1).min()
    scorer.threshold = -float((own + theirs) / 2)
    scorer.save(root / "embedding" / "embedding_scorer.json")

    # VAE at 32 px: a few steps on all crops; the "fine-tuned" copy takes a few more on the target's
    images = torch.stack([to_vae_input(c, 32) for c in targets + others])
    vae = ConvVAE(latent_dim=16, image_size=32, base_channels=8)
    _vae_steps(vae, images, 2)
    config = {"latent_dim": 16, "image_size": 32, "base_channels": 8}
    save_checkpoint(root / "vae" / "checkpoint.pt", {"model": vae.state_dict(), "config": config, "step": 2})
    finetuned = copy.deepcopy(vae)
    _vae_steps(finetuned, images[: len(targets)], 1)
    save_checkpoint(root / "vae_finetuned" / "checkpoint.pt", {"model": finetuned.state_dict(), "config": config,
                                                               "step": 3})
    return ModelPaths(classifier=run / "best.pt", scorer=root / "embedding" / "embedding_scorer.json",
                      vae=root / "vae" / "checkpoint.pt", target_faces=faces, target_name="Ava Marlowe",
                      vae_finetuned=root / "vae_finetuned" / "checkpoint.pt").check()


def jpeg_bytes(picture: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality)
    return out.getvalue()


def large_photo(seed: int, side: int = 3000) -> bytes:
    """A synthetic portrait scaled up to `side` x `side` pixels, as a JPEG: what a phone camera sends."""
    return jpeg_bytes(synthetic_photo(seed, size=(300, 300)).resize((side, side), Image.BICUBIC))


# ----------------------------------------------------------------------------------------- a served page
def upload(url: str, content: bytes, filename: str = "photo.jpg", headers: dict | None = None):
    """POST a file to the page's upload route as the browser does; the response's JSON lists the stored paths."""
    import requests

    return requests.post(f"{url}gradio_api/upload", files={"files": (filename, content)}, headers=headers,
                         timeout=60)


def file_data(path: str) -> dict:
    """The value the page sends for an uploaded file (Gradio's FileData)."""
    return {"path": path, "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


def call_api(url: str, api_name: str, data: list, session: str | None = None, timeout: float = 180) -> tuple:
    """Run one event of the page (`api_name`) with `data` and wait for it: ("complete", outputs) or ("error", the
    message Gradio sent, None when it shows none)."""
    import requests

    started = requests.post(f"{url}gradio_api/call/{api_name}", json={"data": data, "session_hash": session},
                            timeout=60)
    started.raise_for_status()
    with requests.get(f"{url}gradio_api/call/{api_name}/{started.json()['event_id']}", stream=True,
                      timeout=timeout) as stream:
        event = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event in ("complete", "error"):
                return event, json.loads(line[len("data: "):])
    raise AssertionError(f"the answer stream of {api_name} ended without an answer")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of process `pid` in MB (Linux /proc): now (`VmRSS`), or the peak (`VmHWM`) since the process
    started or since `reset_peak_rss`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def reset_peak_rss(pid: int) -> None:
    """Start `VmHWM` of process `pid` over from its current RSS (Linux: `clear_refs` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _signals_at_default() -> None:
    """In the child: SIGINT and SIGTERM unblocked, whatever the test process did to its own signal mask."""
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def serve_in_subprocess(paths: ModelPaths, port: int, tmp: Path, timeout: float = 240):
    """`python -m app serve` on `paths` at 127.0.0.1:`port`, its temporary files under `tmp` (TMPDIR); yields the
    process once the page answers, and kills it on the way out if it still runs."""
    import requests

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "app", "serve", "--port", str(port), "--classifier-checkpoint",
               str(paths.classifier), "--scorer-checkpoint", str(paths.scorer), "--vae-checkpoint", str(paths.vae),
               "--target-faces", str(paths.target_faces), "--target-name", paths.target_name]
    if paths.vae_finetuned:
        command += ["--finetuned-checkpoint", str(paths.vae_finetuned)]
    log = open(tmp / "serve.log", "w+b")
    process = subprocess.Popen(command, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                               preexec_fn=_signals_at_default)
    process.url, process.log = f"http://127.0.0.1:{port}/", log
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise AssertionError(f"the server stopped ({process.returncode}): {log.read()[-2000:]!r}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(process.url, timeout=5).ok:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer within {timeout} s")
            time.sleep(0.5)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        log.close()
