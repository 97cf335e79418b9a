"""Morph GIFs: walk the VAE's latent space through a roster of faces and write the decoded walk as a looping GIF.

Each face is encoded to its posterior mean; the walk interpolates between consecutive means (linearly, or along
the great circle with slerp, White 2016) and closes the loop back to the first face, so the GIF has no jump.
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

DEFAULT_GIF_SIZE = 128  # frame edge in pixels: a face is visible and a 40-frame GIF stays a few hundred kB


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
def _in_eval_mode(model, function, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`function` of `inputs` batch by batch, on the model's device in eval mode; the result is on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([function(chunk.to(device)).float().cpu() for chunk in inputs.split(batch_size)])
    model.train(was_training)
    return out


def encode_means(model, images, batch_size: int = 64) -> torch.Tensor:
    """Posterior means [N, latent_dim] of `images` (floats in [0, 1]), in eval mode, returned on the CPU."""
    return _in_eval_mode(model, lambda x: model.encode(x)[0], as_image_batch(images), batch_size)


def decode_latents(model, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Decode latents [N, latent_dim] to images [N, 3, S, S] in [0, 1] (eval mode, returned on the CPU)."""
    return _in_eval_mode(model, model.decode, latents, batch_size).clamp(0, 1)


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """Linear interpolation: z0 at t=0, z1 at t=1."""
    return (1.0 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from z0 (t=0) to z1 (t=1); lerp where the great circle is undefined."""
    n0, n1 = z0.norm(), z1.norm()
    if n0 < 1e-8 or n1 < 1e-8:
        return lerp(z0, z1, t)
    omega = torch.arccos(torch.clamp((z0 @ z1) / (n0 * n1), -1.0, 1.0))
    s = torch.sin(omega)
    if s.abs() < 1e-6:
        return lerp(z0, z1, t)
    return (torch.sin((1.0 - t) * omega) / s) * z0 + (torch.sin(t * omega) / s) * z1


def interpolate_path(latents: torch.Tensor, steps_between: int = 8, method: str = "linear",
                     closed: bool = True) -> torch.Tensor:
    """Latent walk through `latents` [N, D] in order, `steps_between` in-between frames from each face to the next.

    A closed walk (back to the first face) has N * (steps_between + 1) frames, an open one
    (N - 1) * (steps_between + 1) + 1; frame i * (steps_between + 1) is face i. `method`: "linear" or "slerp".
    """
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp', got {method!r}")
    if len(latents) < 2 or steps_between < 0:
        raise ValueError("a morph needs at least two faces and steps_between >= 0")
    mix = lerp if method == "linear" else slerp
    n = len(latents)
    frames = [mix(latents[i], latents[(i + 1) % n], k / (steps_between + 1))
              for i in range(n if closed else n - 1) for k in range(steps_between + 1)]
    if not closed:
        frames.append(latents[-1])
    return torch.stack(frames)


def to_uint8_frames(images: torch.Tensor, size: int | None = DEFAULT_GIF_SIZE) -> np.ndarray:
    """[N,3,S,S] floats in [0,1] -> [N,size,size,3] uint8 (bilinear resize; `size=None` keeps S)."""
    if size is not None and images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_gif(frames: np.ndarray, out_gif: str | Path, fps: float = 12.0) -> dict:
    """Write uint8 frames [N,H,W,3] as a GIF that loops forever. Returns {"path", "n_frames" (read back: Pillow
    merges identical consecutive frames), "n_decoded" (frames given), "bytes", "fps"}."""
    import imageio.v3 as iio

    if len(frames) == 0:
        raise ValueError("no frames to write")
    data = iio.imwrite("<bytes>", np.asarray(frames), extension=".gif", duration=int(round(1000.0 / fps)), loop=0)
    with Image.open(io.BytesIO(data)) as written:
        n_frames = int(getattr(written, "n_frames", 1))
    path = atomic_write_bytes(out_gif, data)
    return {"path": str(path), "n_frames": n_frames, "n_decoded": int(len(frames)), "bytes": len(data), "fps": fps}


def morph_gif(model, images, out_gif: str | Path, steps_between: int = 8, fps: float = 12.0,
              size: int | None = DEFAULT_GIF_SIZE, method: str = "linear") -> dict:
    """Morph through a roster of faces ([N,3,S,S] in [0,1], N >= 2, in order) and write a looping GIF of
    n_faces * (steps_between + 1) frames of `size` pixels (None: the model's), "linear" or "slerp".
    Returns write_gif's keys plus "n_faces", "method" and "frames_per_face"."""
    batch = as_image_batch(images)
    frames = decode_latents(model, interpolate_path(encode_means(model, batch), steps_between, method))
    info = write_gif(to_uint8_frames(frames, size), out_gif, fps)
    return {**info, "n_faces": len(batch), "method": method, "frames_per_face": steps_between + 1}


def side_by_side_morph_gif(model_before, model_after, images, out_gif: str | Path, steps_between: int = 8,
                           fps: float = 12.0, size: int | None = DEFAULT_GIF_SIZE, method: str = "linear",
                           labels: Sequence[str] = ("before", "after")) -> dict:
    """The same morph by two models side by side, a label over each half; each model walks through its own
    encodings of the photos (fine-tuning moves the encoder too). Returns write_gif's keys plus "n_faces", "method"."""
    batch = as_image_batch(images)
    halves = [to_uint8_frames(decode_latents(m, interpolate_path(encode_means(m, batch), steps_between, method)), size)
              for m in (model_before, model_after)]
    frames = np.stack([np.asarray(label_image([left, right], list(labels))) for left, right in zip(*halves)])
    return {**write_gif(frames, out_gif, fps), "n_faces": len(batch), "method": method}


# ----------------------------------------------------------------------------------------------------- CLI
def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m vae morph`: a morph GIF through faces of a CelebA folder (or plain image folder)."""
    parser.add_argument("--checkpoint", required=True, help="trained VAE checkpoint (.pt)")
    parser.add_argument("--src", "--data-root", dest="data_root", required=True,
                        help="CelebA root (official layout) or a folder of images")
    parser.add_argument("--out", required=True, help="output folder (writes morph.gif there), or a path ending in .gif")
    parser.add_argument("--split", default=None,
                        help="split to take faces from (default: test, or all with --identity)")
    parser.add_argument("--identity", type=int, default=None, help="morph through this CelebA identity's photos")
    parser.add_argument("--n-faces", type=int, default=8, help="how many faces the roster holds")
    parser.add_argument("--steps-between", type=int, default=8, help="in-between frames from one face to the next")
    parser.add_argument("--method", choices=["linear", "slerp"], default="linear", help="interpolation")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")


def cli_run(args: argparse.Namespace) -> dict:
    from .train import load_vae

    model, _ = load_vae(args.checkpoint, device=args.device)
    identities = [args.identity] if args.identity is not None else None
    roster = load_roster(args.data_root, split=args.split or ("all" if identities else "test"),
                         image_size=model.image_size, n=args.n_faces, identities=identities)
    out = Path(args.out)
    gif = out if out.suffix.lower() == ".gif" else out / "morph.gif"
    return {"command": "morph", **morph_gif(model, roster, gif, args.steps_between, method=args.method)}
