"""Tiny models and synthetic photos for the web app's tests (test-only code).

`make_tiny_models(root)` trains, in a few seconds on a CPU, every model the app loads, in the layouts the real
pipeline writes: a MobileNetV2 classifier checkpoint at 32 px (+ metrics.json with its threshold) after two
optimiser steps on its head, a dlib centroid scorer fitted on synthetic face crops, a 32 px VAE after two steps
and a "fine-tuned" copy after one more on the target's crops. Photos are drawn by the synthetic world's
`render_portrait`.
"""
from __future__ import annotations

import copy
import json
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
    from classification.embed import embed_images, fit_scorer
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


def save_attribute_model(path: str | Path, names=("Smiling", "Eyeglasses"), latent_dim: int = 16) -> Path:
    """An attribute-transfer model file in the format `app.core.load_attribute_model` reads (random directions)."""
    from common.checkpoints import save_checkpoint

    directions = torch.randn(len(names), latent_dim, generator=torch.Generator().manual_seed(0))
    return save_checkpoint(path, {"attributes": list(names), "directions": directions})
