"""Fine-tune the CelebA VAE on one identity's photos, and show the identity's morph before vs after.

Fine-tuning continues from the general face model (`TrainConfig.init_from`) on every one of the identity's few
dozen photos (`split="all"`, none held out, no mirror images: the job is to learn her photos as they are), in its
own folder, with the KL weight lowered (β × `kl_scale`) so the encoder can spread her photos apart instead of
squeezing them towards the prior's centre. Its metrics therefore score photos it trained on.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.checkpoints import load_checkpoint
from common.config import apply_overrides, parse_set_options
from common.files import atomic_write_text

from .celeba import load_roster, open_image_dataset
from .figures import loss_comparison_figure
from .morph import DEFAULT_GIF_SIZE, side_by_side_morph_gif
from .quality import density_samples, fit_latent_density
from .train import TrainConfig, evaluate, load_vae, train_vae

# One face, a few dozen photos: a faster learning rate, a pixel loss that counts her face 16x (the base run: 4x),
# all her photos and no flips made her reconstructions recognisable as her in 1,500 steps (README, stage 3).
FINETUNE_LR = 3e-3
FINETUNE_CENTRE_WEIGHT = 16.0


def finetune_config(base_checkpoint: str | Path, data_root: str | Path, identity: int, out_dir: str | Path,
                    kl_scale: float = 0.02, max_steps: int = 200,
                    overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The `TrainConfig` of a fine-tuning run: the base run's config with the identity, data, folder, weights
    source and β × kl_scale swapped in, then `overrides` (unknown keys raise `ValueError`)."""
    base_path = Path(base_checkpoint)
    if base_path.is_dir():
        base_path = base_path / "checkpoint.pt"
    if not base_path.is_file():
        raise FileNotFoundError(f"no base checkpoint at {base_path}; train the VAE first (`python -m vae train`)")
    if Path(out_dir).resolve() == base_path.parent.resolve():
        raise ValueError(f"out_dir {out_dir} is the base run's folder; fine-tuning needs its own folder so the "
                         "base checkpoint stays untouched")
    saved = load_checkpoint(base_path, hint="train the base VAE first: python -m vae train")["config"]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = apply_overrides(TrainConfig(), {k: v for k, v in saved.items() if k in fields})
    config = apply_overrides(config, {
        "data_root": str(data_root), "out_dir": str(out_dir), "identities": [int(identity)],
        "split": "all", "hold_out": False, "hflip": False,  # her photos sit in every partition; learn them all
        "beta": saved["beta"] * kl_scale, "lr": FINETUNE_LR, "centre_weight": FINETUNE_CENTRE_WEIGHT,
        "init_from": str(base_path), "max_steps": max_steps, "resume": False, "overwrite": False,
        "monitor_every": max(1, max_steps // 10), "eval_every": max(1, max_steps // 2),
    })
    return apply_overrides(config, overrides or {})


def finetune_on_identity(base_checkpoint: str | Path, data_root: str | Path, identity: int, out_dir: str | Path,
                         kl_scale: float = 0.02, max_steps: int = 200, resume: bool = False, overwrite: bool = False,
                         device: str = "auto", out_gif: str | Path | None = None,
                         comparison_png: str | Path | None = None, n_morph: int = 8, steps_between: int = 8,
                         gif_size: int = DEFAULT_GIF_SIZE, overrides: dict[str, Any] | None = None) -> dict:
    """Continue training the base VAE (checkpoint or run folder, only read) on CelebA identity `identity` in its
    own `out_dir` with β × `kl_scale`; then compare the models before and after.

    Writes a before/after morph GIF through `n_morph` of her photos (`out_gif`), reconstructions and samples of both
    (`comparison_png`) and `finetune.json` in `out_dir`. Returns the run's checkpoint, identity, n_images, betas,
    steps, held-out metrics, "compare" (mse/psnr/ssim before and after on the morph photos), morph_gif and
    comparison_png.
    """
    config = finetune_config(base_checkpoint, data_root, identity, out_dir, kl_scale, max_steps,
                             {"resume": resume, "overwrite": overwrite, "device": device, **(overrides or {})})
    result = train_vae(config)
    before, base = load_vae(config.init_from, device=device)
    after, _ = load_vae(result["checkpoint"], device=device)
    out_dir = Path(out_dir)
    roster = load_roster(data_root, split="all", image_size=config.image_size, n=n_morph, seed=config.seed,
                         identities=[identity])
    dataset = open_image_dataset(data_root, "all", config.image_size, [identity])
    summary: dict[str, Any] = {
        "checkpoint": result["checkpoint"], "base_checkpoint": config.init_from, "out_dir": str(out_dir),
        "identity": int(identity), "n_images": len(dataset), "kl_scale": kl_scale,
        "base_beta": base["config"]["beta"], "beta": config.beta, "steps": result["steps"],
        "metrics": result["metrics"],
        "compare": {name: evaluate(model, roster.to(next(model.parameters()).device))
                    for name, model in (("before", before), ("after", after))},
        "morph_gif": None,  # a morph needs two photos
    }
    if len(roster) >= 2:
        summary["morph_gif"] = side_by_side_morph_gif(
            before, after, roster, out_gif or out_dir / "before_after_morph.gif", steps_between, size=gif_size,
            labels=("before", "after fine-tuning"))
    # samples of her: each model decodes draws from the density of its own latents of her photos
    photos = torch.stack([dataset[i] for i in range(len(dataset))])
    samples = [density_samples(m, fit_latent_density(m, photos, seed=config.seed), len(roster), config.seed)
               for m in (before, after)]
    summary["comparison_png"] = loss_comparison_figure(
        before, after, roster, comparison_png or out_dir / "before_after.png", seed=config.seed,
        labels=("before", "after"), samples=samples)["path"]
    atomic_write_text(out_dir / "finetune.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return summary


def identity_preservation_before_after(models: dict, celeba_root: str | Path, identity: int,
                                       gallery_identities: list[int], n_photos: int = 16,
                                       gallery_photos: int = 8, extra_identities: int = 10,
                                       cache: str | Path | None = None, seed: int = 0) -> dict:
    """Does each model's ({name: ConvVAE}) reconstruction of `n_photos` of the identity's photos still look like her?

    The dlib gallery holds up to `gallery_photos` photos of her, of `gallery_identities` and of `extra_identities`
    others drawn with `seed`. Returns {name: identity.embed.identity_preservation(...)}, "gallery_identities" and
    "originals_nearest_identity_accuracy" (the ceiling: the photos themselves).
    """
    from common.celeba_format import read_identities
    from common.images import to_pil
    from identity.embed import embed_files, identity_preservation

    from .figures import reconstruct

    identities = read_identities(celeba_root)
    people = [int(identity), *[int(i) for i in gallery_identities]]
    rest = sorted(set(identities.values()) - set(people))
    rng = np.random.default_rng(seed)
    people += [int(i) for i in rng.choice(rest, size=min(extra_identities, len(rest)), replace=False)]
    files = {person: sorted(f for f, i in identities.items() if i == person)[:gallery_photos]
             for person in dict.fromkeys(people)}
    # every gallery photo in one call: one pool of embedding processes, not one per person
    vectors = embed_files(Path(celeba_root) / "img_align_celeba", [f for fs in files.values() for f in fs],
                          cache=cache, progress=False)
    gallery, start = {}, 0
    for person, person_files in files.items():
        gallery[person] = vectors[start:start + len(person_files)]
        start += len(person_files)
    photos = load_roster(celeba_root, split="all", image_size=next(iter(models.values())).image_size, n=n_photos,
                         seed=seed, identities=[identity])
    report = {}
    for name, model in models.items():
        recon = reconstruct(model, photos.to(next(model.parameters()).device)).cpu()
        report[name] = identity_preservation([to_pil(p) for p in photos], [to_pil(r) for r in recon], gallery,
                                             int(identity))
    report["originals_nearest_identity_accuracy"] = next(iter(report.values()))["original_nearest_identity_accuracy"]
    report["gallery_identities"] = list(gallery)
    return report


# ------------------------------------------------------------------------------------------------------ CLI
def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m vae finetune`: fine-tune a trained VAE on one CelebA identity."""
    parser.add_argument("--checkpoint", required=True, help="base VAE checkpoint (.pt or run folder); only read")
    parser.add_argument("--src", "--data-root", dest="data_root", required=True, help="CelebA root (official layout)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--identity", type=int, help="CelebA identity id")
    who.add_argument("--identity-json", help="identity.json written by `python -m vae find-identity`")
    parser.add_argument("--out", required=True, help="the fine-tuning run's own folder")
    parser.add_argument("--kl-scale", type=float, default=0.02, help="multiplies the base run's KL weight β")
    parser.add_argument("--max-steps", type=int, default=200, help="optimizer steps of fine-tuning")
    parser.add_argument("--gif", default=None, help="before/after morph GIF path (default: in --out)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--resume", action="store_true", help="continue (or reuse) the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other TrainConfig field")


def cli_run(args: argparse.Namespace) -> dict:
    identity = args.identity
    if identity is None:
        identity = int(json.loads(Path(args.identity_json).read_text(encoding="utf-8"))["identity"])
    summary = finetune_on_identity(args.checkpoint, args.data_root, identity, args.out, kl_scale=args.kl_scale,
                                   max_steps=args.max_steps, resume=args.resume, overwrite=args.overwrite,
                                   device=args.device, out_gif=args.gif, overrides=parse_set_options(args.set))
    return {"command": "finetune", **summary}
