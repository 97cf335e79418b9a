"""Would a reader recognise the VAE's pictures? The stage's quality numbers, measured one way everywhere.

A low-β VAE uses only part of N(0, I), so prior draws land in holes between the faces; as in RAE (Ghosh et al.
2020) and the two-stage VAE (Dai & Wipf 2019), samples come from a Gaussian mixture fitted to the training latents.
`face_quality` scores a model on held-out images: heldout_mse, heldout_ssim; face_share_reconstructions,
face_share_samples (fitted density), face_share_samples_prior (N(0, I)): shares in which MTCNN finds a face
(p >= 0.95); identity_kept_share: photos whose reconstruction dlib reads as the same person (distance < 0.6).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from .metrics import mse, ssim
from .morph import decode_latents, encode_means

# The face rectangle as fractions of the frame: aligned CelebA's 148 px centre square (vae.celeba), or a stage-1
# crop (the MTCNN box plus a 15 % margin on each side).
CELEBA_FACE_BOX = "celeba"
CROP_FACE_BOX = (0.15 / 1.3, 0.15 / 1.3, 1.15 / 1.3, 1.15 / 1.3)


def fit_latent_density(model, images, n_components: int = 10, seed: int = 0) -> GaussianMixture:
    """A Gaussian mixture over the posterior means of `images`: up to `n_components` full-covariance components
    while each gets 2 images per latent dimension, else one diagonal Gaussian (a few dozen photos of one person)."""
    latents = encode_means(model, images).cpu().double().numpy()
    n, d = latents.shape
    components = min(n_components, n // (2 * d))
    covariance = "full" if components >= 1 else "diag"
    return GaussianMixture(max(1, components), covariance_type=covariance, reg_covar=1e-4,
                           random_state=seed).fit(latents)


def density_samples(model, density: GaussianMixture, n: int, seed: int = 0) -> torch.Tensor:
    """`n` images decoded from draws of `density` (seeded: the same seed gives the same images)."""
    density.random_state = seed
    z, _ = density.sample(n)
    order = np.random.default_rng(seed).permutation(n)  # sample() groups draws by component; mix them
    return decode_latents(model, torch.as_tensor(z[order], dtype=torch.float32))


def prior_samples(model, n: int, seed: int = 0) -> torch.Tensor:
    """`n` images decoded from N(0, I) draws (seeded)."""
    z = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    return decode_latents(model, z)


def identity_kept(photos: torch.Tensor, reconstructions: torch.Tensor, face_box=CELEBA_FACE_BOX) -> np.ndarray:
    """dlib descriptor distance between each photo and its reconstruction ([N] floats)."""
    from common.images import to_pil
    from identity.embed import VAE_FACE_BOX, VAE_FRAME, EmbedderSpec, _embed_frames

    box = VAE_FACE_BOX if face_box == CELEBA_FACE_BOX else face_box
    spec = EmbedderSpec("dlib")
    a = _embed_frames([to_pil(p) for p in photos], box, VAE_FRAME, spec)
    b = _embed_frames([to_pil(r) for r in reconstructions], box, VAE_FRAME, spec)
    return np.linalg.norm(a.astype(np.float64) - b, axis=1)


@torch.inference_mode()
def face_quality(model, held_out: torch.Tensor, train_images: torch.Tensor, n_samples: int = 200,
                 face_box=CELEBA_FACE_BOX, seed: int = 0) -> dict:
    """The quality keys of the module docstring for `model` (eval mode) on `held_out` images, with the sample
    density fitted on `train_images`. MTCNN and dlib run on the CPU."""
    from identity.embed import DLIB_SAME_PERSON_DISTANCE

    from scraping.faces import mtcnn_face_share

    model.eval()
    recon = decode_latents(model, encode_means(model, held_out)).cpu()
    density = fit_latent_density(model, train_images, seed=seed)
    samples = density_samples(model, density, n_samples, seed).cpu()
    prior = prior_samples(model, n_samples, seed).cpu()
    distances = identity_kept(held_out.cpu(), recon, face_box)
    return {
        "heldout_mse": float(mse(recon, held_out.cpu()).mean()),
        "heldout_ssim": float(ssim(recon, held_out.cpu()).mean()),
        "face_share_reconstructions": mtcnn_face_share(recon)["share"],
        "face_share_samples": mtcnn_face_share(samples)["share"],
        "face_share_samples_prior": mtcnn_face_share(prior)["share"],
        "identity_kept_share": float(np.mean(distances < DLIB_SAME_PERSON_DISTANCE)),
        "heldout_images": len(held_out),
    }


QUALITY_KEYS = ("heldout_ssim", "face_share_reconstructions", "face_share_samples", "face_share_samples_prior",
                "identity_kept_share")


def recipe_table(record: str | Path = "results/benchmarks/vae_quality.json") -> str:
    """The last committed `bench_vae_quality.py` result as a plain-text table (recipe vs previous defaults)."""
    path = Path(record)
    if not path.is_file():
        return f"no benchmark result yet ({path}): python benchmarks/bench_vae_quality.py"
    bench = json.loads(path.read_text(encoding="utf-8"))
    keys = ("steps", "heldout_ssim", "face_share_reconstructions", "face_share_samples", "face_share_samples_prior",
            "identity_kept_share")
    lines = [f"{bench['command']}: {bench['result']['minutes_per_model']:g} min of training each",
             f"{'data':9}{'recipe':19}" + "".join(f"{k.replace('face_share_', 'face_'):>18}" for k in keys)]
    for row in bench["result"]["results"]:
        lines.append(f"{row['data']:9}{row['recipe']:19}" + "".join(f"{row[k]:>18}" for k in keys))
    return "\n".join(lines)


def stage_summary(run: dict, scores: dict, found: dict, verification: dict | None, tuned: dict,
                  preservation: dict, scores_csv: str | Path) -> dict:
    """Notebook 03's `summary.json`: training, the quality keys (`quality`), the identity search and the
    fine-tuning. `run`, `found`, `tuned`, `preservation` are what `train_vae`, `identity.find_identity`,
    `finetune.finetune_on_identity` and `finetune.identity_preservation_before_after` returned; `scores` is
    `face_quality` of the base model."""
    method_file = Path(scores_csv).parent / "method.json"
    after = preservation["after"]
    return {
        "train_steps": run["steps"], "train_images_per_s": run["images_per_s"],
        "perceptual_weights": {None: "none (pixel loss)", True: "imagenet",
                               False: "random"}[run["perceptual_pretrained"]],
        "heldout_mse": scores["heldout_mse"], "heldout_ssim": scores["heldout_ssim"],
        "quality": {**{k: scores[k] for k in QUALITY_KEYS},
                    "finetuned_nearest_identity_accuracy": after["nearest_identity_accuracy"],
                    "finetuned_identity_kept_share": after["share_same_person"]},
        "search_method": json.loads(method_file.read_text())["method"] if method_file.is_file() else "given scores",
        "top_k": found["k"], "picked_identity": found["identity"], "truth_identity": found.get("truth_identity"),
        "identity_correct": found.get("correct"), "precision_at_k": found.get("precision_at_k"),
        "recall": found.get("recall_at_k"), "expansion_images": found.get("n_expanded"),
        "expansion_recall": found.get("expansion_recall"),
        "verification": verification and verification["verdict"],
        "verification_reason": verification and verification["reason"],
        "finetune_steps": tuned["steps"], "finetune_beta": tuned["beta"], "finetune_images": tuned["n_images"],
        "finetune_ssim": {k: v["ssim"] for k, v in tuned["compare"].items()},
        "identity_preservation": {k: {m: preservation[k][m] for m in ("mean_distance", "nearest_identity_accuracy")}
                                  for k in ("before", "after")},
        "identity_preservation_originals": preservation["originals_nearest_identity_accuracy"],
    }
