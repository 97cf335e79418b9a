"""Morph GIFs: walk the VAE's latent space through a roster of faces and write the decoded walk as a looping GIF.

The walk encodes each face to its posterior mean, interpolates between consecutive means (linearly, or along the
great circle with slerp — White 2016, "Sampling Generative Networks", argues slerp stays where a Gaussian prior
puts its mass) and closes the loop back to the first face, so the GIF plays forever without a jump.
`side_by_side_morph_gif` decodes the same walk with two models (before/after fine-tuning) next to each other.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common.files import atomic_write_bytes
from common.images import label_image

from .celeba import load_roster

# Frames are written at this edge length (pixels) unless asked otherwise: big enough to see a face, small enough
# that a 40-frame GIF stays a few hundred kilobytes (the repo commits them; the budget is 2 MB per GIF).
DEFAULT_GIF_SIZE = 128


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's weights live on (inputs must follow them)."""
    return next(model.parameters()).device


def as_image_batch(images) -> torch.Tensor:
    """Stack `images` (a [N,3,S,S] tensor or a sequence of [3,S,S] tensors, floats in [0, 1]) into one batch."""
    if isinstance(images, torch.Tensor):
        batch = images if images.dim() == 4 else images.unsqueeze(0)
    else:
        batch = torch.stack([torch.as_tensor(image) for image in images])
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected images shaped [N, 3, S, S], got {tuple(batch.shape)}")
    return batch.float()


@torch.inference_mode()
def encode_means(model, images, batch_size: int = 64) -> torch.Tensor:
    """Posterior means mu [N, latent_dim] of `images` (floats in [0, 1]), computed in eval mode on the model's device."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    batch = as_image_batch(images)
    means = [model.encode(batch[i : i + batch_size].to(device))[0].float().cpu() for i in range(0, len(batch), batch_size)]
    model.train(was_training)
    return torch.cat(means)


@torch.inference_mode()
def decode_latents(model, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Decode latents [N, latent_dim] to images [N, 3, S, S] in [0, 1] (eval mode, returned on the CPU)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    out = [model.decode(latents[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(latents), batch_size)]
    model.train(was_training)
    return torch.cat(out).clamp(0, 1)


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """Linear interpolation: z0 at t=0, z1 at t=1."""
    return (1.0 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation along the great circle from z0 (t=0) to z1 (t=1); falls back to lerp when the
    two vectors are (anti)parallel or one is zero, where the great circle is undefined."""
    n0, n1 = z0.norm(), z1.norm()
    if n0 < 1e-8 or n1 < 1e-8:
        return lerp(z0, z1, t)
    cos = torch.clamp((z0 @ z1) / (n0 * n1), -1.0, 1.0)
    omega = torch.arccos(cos)
    if torch.sin(omega).abs() < 1e-6:
        return lerp(z0, z1, t)
    s = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / s) * z0 + (torch.sin(t * omega) / s) * z1


def interpolate_path(latents: torch.Tensor, steps_between: int = 8, method: str = "linear", closed: bool = True) -> torch.Tensor:
    """Latent walk through `latents` [N, D] in order.

    Each face is followed by `steps_between` in-between frames on the way to the next one, so a closed walk
    (back to the first face, for a looping GIF) has N * (steps_between + 1) frames, and an open one
    (N - 1) * (steps_between + 1) + 1 frames ending on the last face. Frame i * (steps_between + 1) is exactly
    face i's latent. `method` is "linear" or "slerp".
    """
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp', got {method!r}")
    if len(latents) < 2:
        raise ValueError("a morph needs at least two faces")
    if steps_between < 0:
        raise ValueError("steps_between must be >= 0")
    mix = lerp if method == "linear" else slerp
    n = len(latents)
    segments = n if closed else n - 1
    frames = []
    for i in range(segments):
        z0, z1 = latents[i], latents[(i + 1) % n]
        for k in range(steps_between + 1):
            frames.append(mix(z0, z1, k / (steps_between + 1)))
    if not closed:
        frames.append(latents[-1])
    return torch.stack(frames)


def to_uint8_frames(images: torch.Tensor, size: int | None = DEFAULT_GIF_SIZE) -> np.ndarray:
    """[N,3,S,S] floats in [0,1] -> [N,size,size,3] uint8 (bilinear resize; `size=None` keeps S)."""
    if size is not None and images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_gif(frames: np.ndarray, out_gif: str | Path, fps: float = 12.0) -> dict:
    """Write uint8 frames [N,H,W,3] as a GIF that loops forever (loop=0), atomically.

    Returns {"path", "n_frames", "n_decoded", "bytes", "fps"}: `n_frames` is read back from the written file;
    it is below `n_decoded` (frames given) only when consecutive frames were pixel-identical, which Pillow merges
    into one longer frame. Pillow quantises each frame to an adaptive 256-colour palette, which keeps face GIFs
    small without visible banding.
    """
    import imageio.v3 as iio

    if len(frames) == 0:
        raise ValueError("no frames to write")
    duration_ms = int(round(1000.0 / fps))
    data = iio.imwrite("<bytes>", np.asarray(frames), extension=".gif", duration=duration_ms, loop=0)
    with Image.open(io.BytesIO(data)) as written:
        n_frames = int(getattr(written, "n_frames", 1))
    path = atomic_write_bytes(out_gif, data)
    return {"path": str(path), "n_frames": n_frames, "n_decoded": int(len(frames)), "bytes": len(data), "fps": fps}


def morph_frames(model, images, steps_between: int = 8, method: str = "linear", closed: bool = True,
                 latents: torch.Tensor | None = None) -> torch.Tensor:
    """Decoded morph frames [F,3,S,S] in [0,1]; `latents` reuses an already computed walk start (the faces' means)."""
    means = encode_means(model, images) if latents is None else latents
    return decode_latents(model, interpolate_path(means, steps_between, method, closed))


def morph_gif(model, images, out_gif: str | Path, steps_between: int = 8, fps: float = 12.0,
              size: int | None = DEFAULT_GIF_SIZE, method: str = "linear", closed: bool = True) -> dict:
    """Morph through a roster of faces and write a looping GIF.

    Args:
        model: a trained `ConvVAE` (switched to eval mode for the duration, then restored).
        images: the roster, [N,3,S,S] floats in [0,1] (N >= 2), visited in order.
        out_gif: output path (.gif).
        steps_between: in-between frames from one face to the next.
        fps: frames per second of playback.
        size: frame edge length in pixels (None keeps the model's image size).
        method: "linear" or "slerp" interpolation between the faces' posterior means.
        closed: walk back to the first face at the end so the loop is seamless.
    Returns {"path", "n_frames", "n_decoded", "n_faces", "bytes", "fps", "method", "frames_per_face"};
    a closed walk decodes n_faces * (steps_between + 1) frames.
    """
    batch = as_image_batch(images)
    frames = morph_frames(model, batch, steps_between, method, closed)
    info = write_gif(to_uint8_frames(frames, size), out_gif, fps)
    return {**info, "n_faces": len(batch), "method": method, "frames_per_face": steps_between + 1}


def side_by_side_morph_gif(model_before, model_after, images, out_gif: str | Path, steps_between: int = 8,
                           fps: float = 12.0, size: int | None = DEFAULT_GIF_SIZE, method: str = "linear",
                           labels: Sequence[str] = ("before", "after"), path_from: str = "each") -> dict:
    """The same morph through `images` decoded by two models, frames side by side with a label over each half.

    The walk visits the same photos in the same order with the same interpolation weights in both halves.
    `path_from` picks whose latents the walk uses: "each" (default) lets every model walk through its own
    encodings of the photos — the fair comparison after fine-tuning, because fine-tuning moves the encoder
    too; "before" or "after" decodes literally the same latent vectors with both decoders.
    Returns {"path", "n_frames", "n_faces", "bytes", "fps", "method", "path_from"}.
    """

    if path_from not in ("each", "before", "after"):
        raise ValueError(f"path_from must be 'each', 'before' or 'after', got {path_from!r}")
    batch = as_image_batch(images)
    shared = None
    if path_from != "each":
        shared = encode_means(model_before if path_from == "before" else model_after, batch)
    halves = []
    for model in (model_before, model_after):
        latents = shared if shared is not None else encode_means(model, batch)
        halves.append(to_uint8_frames(morph_frames(model, batch, steps_between, method, latents=latents), size))
    frames = []
    for left, right in zip(*halves):
        frames.append(np.asarray(label_image([left, right], list(labels))))
    info = write_gif(np.stack(frames), out_gif, fps)
    return {**info, "n_faces": len(batch), "method": method, "path_from": path_from}


# ----------------------------------------------------------------------------------------------------- CLI
def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m vae morph`: a morph GIF through faces of a CelebA folder (or plain image folder)."""
    parser.add_argument("--checkpoint", required=True, help="trained VAE checkpoint (.pt)")
    parser.add_argument("--src", "--data-root", dest="data_root", required=True,
                        help="CelebA root (official layout) or a folder of images")
    parser.add_argument("--out", required=True, help="output folder (writes morph.gif there), or a path ending in .gif")
    parser.add_argument("--split", default=None,
                        help="CelebA split to take faces from (train/valid/test/all; default: test, or all with "
                             "--identity, since one person's photos sit in every split)")
    parser.add_argument("--identity", type=int, default=None, help="morph through this CelebA identity's photos")
    parser.add_argument("--n-faces", type=int, default=8, help="how many faces the roster holds")
    parser.add_argument("--steps-between", type=int, default=8, help="in-between frames from one face to the next")
    parser.add_argument("--fps", type=float, default=12.0, help="playback frames per second")
    parser.add_argument("--size", type=int, default=DEFAULT_GIF_SIZE, help="frame edge length in pixels")
    parser.add_argument("--method", choices=["linear", "slerp"], default="linear", help="interpolation")
    parser.add_argument("--seed", type=int, default=0, help="seed for choosing the roster")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")


def cli_run(args: argparse.Namespace) -> dict:
    from .train import load_vae

    model, _ = load_vae(args.checkpoint, device=args.device)
    identities = [args.identity] if args.identity is not None else None
    split = args.split or ("all" if identities else "test")
    roster = load_roster(args.data_root, split=split, image_size=model.image_size, n=args.n_faces,
                         seed=args.seed, identities=identities)
    out = Path(args.out)
    gif = out if out.suffix.lower() == ".gif" else out / "morph.gif"
    return {"command": "morph", **morph_gif(model, roster, gif, args.steps_between, args.fps, args.size,
                                            args.method)}
