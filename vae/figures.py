"""Figures of a trained VAE, each written to a PNG by one function (the notebook and the CLI only display them).

Sample grids, samples from the fitted latent density, reconstructions, pixel-loss vs perceptual-loss comparisons
(DFC-VAE's lesson: a pixel loss gives blurry faces), latent traversals and attribute vectors ("smile vector",
White 2016). Latents and rosters come from fixed seeds, so a figure redraws identically.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from common.files import atomic_save_image
from common.images import BACKGROUND, LABEL_HEIGHT, caption_font, to_pil

from .celeba import load_roster
from .metrics import ssim
from .morph import as_image_batch, decode_latents, encode_means

PADDING = 2  # pixels between grid cells


# ------------------------------------------------------------------------------------------ drawing helpers
def labelled_grid(cells: Sequence[Sequence], row_labels: Sequence[str] | None = None,
                  col_labels: Sequence[str] | None = None, cell_size: int | None = None,
                  padding: int = PADDING, label_width: int = 96) -> Image.Image:
    """A grid of images (rows of [3,S,S] tensors / arrays / PIL images) with optional row and column captions;
    `cell_size` resizes every cell to that many pixels square (None keeps the first cell's size)."""
    rows = [[to_pil(c) for c in row] for row in cells]
    size = cell_size or rows[0][0].width
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    left = label_width if row_labels else 0
    top = LABEL_HEIGHT if col_labels else 0
    canvas = Image.new("RGB", (left + n_cols * (size + padding) - padding, top + n_rows * (size + padding) - padding),
                       BACKGROUND)
    draw, font = ImageDraw.Draw(canvas), caption_font()
    for r, row in enumerate(rows):
        y = top + r * (size + padding)
        for c, tile in enumerate(row):
            if tile.size != (size, size):
                tile = tile.resize((size, size), Image.BILINEAR)
            canvas.paste(tile, (left + c * (size + padding), y))
        if row_labels:
            draw.text((3, y + size // 2 - 6), str(row_labels[r]), fill=(0, 0, 0), font=font)
    for c, label in enumerate(col_labels or []):
        draw.text((left + c * (size + padding) + 2, 2), str(label), fill=(0, 0, 0), font=font)
    return canvas


def sharpness(images: torch.Tensor) -> float:
    """Mean squared Laplacian response of grey-level images [N,3,S,S] in [0,1] — a standard blur measure
    (higher is sharper); blurry pixel-loss reconstructions score far below the photos they reconstruct."""
    grey = as_image_batch(images).mean(dim=1, keepdim=True)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return float(F.conv2d(grey, kernel).pow(2).mean())


@torch.inference_mode()
def reconstruct(model, images, batch_size: int = 64) -> torch.Tensor:
    """Eval-mode reconstructions (decode of the posterior mean) [N,3,S,S] in [0,1], on the CPU."""
    return decode_latents(model, encode_means(model, images, batch_size), batch_size)


def fixed_latents(n: int, latent_dim: int, seed: int = 0) -> torch.Tensor:
    """`n` draws from N(0, I) in `latent_dim` dims from a private generator: the same seed gives the same faces."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------------------- figures
def faces_figure(images, out_png: str | Path, columns: int = 8) -> dict:
    """A plain grid of faces ([N,3,S,S] in [0,1]), `columns` per row. Returns {"path", "n_images"}."""
    batch = as_image_batch(images)
    grid = labelled_grid([list(batch[i:i + columns]) for i in range(0, len(batch), columns)])
    return {"path": str(atomic_save_image(grid, out_png)), "n_images": len(batch)}


def sample_grid(model, out_png: str | Path, n: int = 10, seed: int = 0) -> dict:
    """An n×n grid of faces decoded from seeded latents z ~ N(0, I).
    Returns {"path", "n", "n_images", "width", "height", "seed"}; width/height in pixels."""
    images = decode_latents(model, fixed_latents(n * n, model.latent_dim, seed))
    grid = labelled_grid([list(images[r * n:(r + 1) * n]) for r in range(n)])
    path = atomic_save_image(grid, out_png)
    return {"path": str(path), "n": n, "n_images": n * n, "width": grid.width, "height": grid.height, "seed": seed}


def samples_figure(model, density, out_png: str | Path, n: int = 8, rows: int = 2, seed: int = 0) -> dict:
    """`rows` rows of samples from `density` (a fitted `vae.quality.fit_latent_density`) over `rows` rows from
    N(0, I), `n` per row, seeded. Returns {"path", "n_images"}."""
    from .quality import density_samples, prior_samples

    fitted, prior = density_samples(model, density, n * rows, seed), prior_samples(model, n * rows, seed)
    cells = [list(images[r * n:(r + 1) * n]) for images in (fitted, prior) for r in range(rows)]
    labels = ["fitted density"] + [""] * (rows - 1) + ["N(0, I)"] + [""] * (rows - 1)
    return {"path": str(atomic_save_image(labelled_grid(cells, row_labels=labels), out_png)), "n_images": 2 * n * rows}


def reconstruction_figure(model, images, out_png: str | Path) -> dict:
    """Originals ([N,3,S,S] in [0,1]) over their reconstructions.
    Returns {"path", "n_images", "mse", "ssim"}: mean squared pixel error (pixels in [0,1]) and mean SSIM."""
    batch = as_image_batch(images)
    recon = reconstruct(model, batch)
    path = atomic_save_image(labelled_grid([list(batch), list(recon)], row_labels=["original", "reconstruction"]),
                             out_png)
    return {"path": str(path), "n_images": len(batch), "mse": float(F.mse_loss(recon, batch)),
            "ssim": float(ssim(recon, batch).mean())}


def loss_comparison_figure(model_pixel, model_perceptual, images, out_png: str | Path, seed: int = 0,
                           labels: Sequence[str] = ("pixel loss", "perceptual"),
                           samples: Sequence[torch.Tensor] | None = None) -> dict:
    """Two models' reconstructions of `images` ([N,3,S,S] in [0,1]) under the originals, then a sample row each:
    `samples` ([N,3,S,S] per model) or, when both share a latent size, decodes of the same seeded N(0, I) latents.
    Returns {"path", "mse": {label: ...}, "ssim": {label: ...}, "sharpness": {"original": ..., label: ...}}."""
    batch = as_image_batch(images)
    models = {labels[0]: model_pixel, labels[1]: model_perceptual}
    recons = {label: reconstruct(model, batch) for label, model in models.items()}
    rows = [list(batch), *[list(r) for r in recons.values()]]
    row_labels = ["original", *[f"{label}: recon" for label in labels]]
    if samples is None and model_pixel.latent_dim == model_perceptual.latent_dim:
        z = fixed_latents(len(batch), model_pixel.latent_dim, seed)
        samples = [decode_latents(model, z) for model in models.values()]
    for label, images_of_model in zip(labels, samples or []):
        rows.append(list(images_of_model))
        row_labels.append(f"{label}: sample")
    path = atomic_save_image(labelled_grid(rows, row_labels=row_labels, label_width=110), out_png)
    return {
        "path": str(path),
        "mse": {label: float(F.mse_loss(recon, batch)) for label, recon in recons.items()},
        "ssim": {label: float(ssim(recon, batch).mean()) for label, recon in recons.items()},
        "sharpness": {"original": sharpness(batch), **{label: sharpness(r) for label, r in recons.items()}},
    }


def latent_traversal_figure(model, images, out_png: str | Path, n_dims: int = 6, n_steps: int = 7,
                            span: float = 2.5, face_index: int = 0) -> dict:
    """Sweep the `n_dims` latent dimensions whose posterior mean varies most over `images`: each row moves one of
    them in face `face_index`'s mean from -span to +span standard deviations, in `n_steps` columns.
    Returns {"path", "dims", "variances"} (dims sorted by variance, largest first)."""
    batch = as_image_batch(images)
    if len(batch) < 2:
        raise ValueError("need at least two images to measure latent variance")
    mu = encode_means(model, batch)
    variance = mu.var(dim=0)
    dims = torch.argsort(variance, descending=True)[: min(n_dims, mu.shape[1])]
    offsets = torch.linspace(-span, span, n_steps)
    rows = []
    for d in dims.tolist():
        z = mu[face_index].repeat(n_steps, 1)
        z[:, d] = z[:, d] + offsets * variance[d].sqrt()
        rows.append(list(decode_latents(model, z)))
    grid = labelled_grid(rows, row_labels=[f"z[{d}]" for d in dims.tolist()],
                         col_labels=[f"{o:+.1f}σ" for o in offsets.tolist()], label_width=48)
    path = atomic_save_image(grid, out_png)
    return {"path": str(path), "dims": dims.tolist(), "variances": [float(variance[d]) for d in dims.tolist()]}


def attribute_vector(model, dataset, attribute: str, max_images: int = 2000, batch_size: int = 64,
                     seed: int = 0) -> torch.Tensor:
    """Latent direction [latent_dim] of a CelebA attribute (e.g. "Smiling"): mean posterior mean of the faces of
    `dataset` (a `vae.celeba.CelebA`) with it minus that of the faces without it, over at most `max_images`
    images (a seeded subset)."""
    names = list(dataset.attributes)
    if attribute not in names:
        raise ValueError(f"unknown attribute {attribute!r}; known: {', '.join(names)}")
    labels = np.asarray(dataset.attribute_matrix)[:, names.index(attribute)]
    indices = np.arange(len(dataset))
    if len(indices) > max_images:
        indices = np.sort(np.random.default_rng(seed).choice(indices, size=max_images, replace=False))
    positive, negative = indices[labels[indices] > 0], indices[labels[indices] < 0]
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError(f"attribute {attribute!r} needs faces with and without it; got {len(positive)} with, "
                         f"{len(negative)} without")

    def mean_latent(idx: np.ndarray) -> torch.Tensor:
        total = torch.zeros(model.latent_dim)
        for start in range(0, len(idx), batch_size):
            batch = torch.stack([dataset[int(i)] for i in idx[start:start + batch_size]])
            total += encode_means(model, batch, batch_size).sum(dim=0)
        return total / len(idx)

    return mean_latent(positive) - mean_latent(negative)


def attribute_figure(model, images, z_delta: torch.Tensor, out_png: str | Path,
                     alphas: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0), attribute: str = "attribute") -> dict:
    """Faces (rows) with α·z_delta added to their latent mean for each α (columns), after the original.
    Returns {"path", "alphas", "n_faces"}."""
    batch = as_image_batch(images)
    mu = encode_means(model, batch)
    rows = []
    for face, z in zip(batch, mu):
        edited = decode_latents(model, torch.stack([z + a * z_delta for a in alphas]))
        rows.append([face, *edited])
    grid = labelled_grid(rows, col_labels=["original", *[f"{attribute} {a:+g}" for a in alphas]])
    path = atomic_save_image(grid, out_png)
    return {"path": str(path), "alphas": [float(a) for a in alphas], "n_faces": len(batch)}


# ------------------------------------------------------------------------------------------------------ CLI
def cli_add_arguments_sample(parser: argparse.ArgumentParser) -> None:
    """`python -m vae sample`: sample grid (and, given data, reconstructions and a traversal) of a checkpoint."""
    parser.add_argument("--checkpoint", required=True, help="trained VAE checkpoint (.pt)")
    parser.add_argument("--out", "--out-dir", dest="out_dir", required=True, help="folder for the PNGs")
    parser.add_argument("--n", type=int, default=10, help="grid is n×n samples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fixed latents")
    parser.add_argument("--src", "--data-root", dest="data_root", default=None,
                        help="CelebA root: also draw reconstructions and a traversal")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")


def cli_run_sample(args: argparse.Namespace) -> dict:
    from .train import load_vae

    model, _ = load_vae(args.checkpoint, device=args.device)
    out_dir = Path(args.out_dir)
    summary = {"command": "sample", "samples": sample_grid(model, out_dir / "samples.png", n=args.n, seed=args.seed)}
    if args.data_root:
        faces = load_roster(args.data_root, "test", model.image_size, n=8, seed=args.seed)
        summary["reconstructions"] = reconstruction_figure(model, faces, out_dir / "reconstructions.png")
        if len(faces) >= 2:
            summary["traversal"] = latent_traversal_figure(model, faces, out_dir / "traversal.png")
    return summary
