"""Face crops of many strangers for pretraining a backbone offline, the stand-in for ImageNet (issue 13).

The people come from a random stream of their own and are redrawn when near anyone of the world with the same
seed (`world.generate.world_identities`), so the target never leaks into pretraining. Crops are framed like
stage 1's MTCNN crops, drawn at the network's input size and JPEG-compressed once; every photo has its own seed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from .generate import WorldConfig, process_pool, world_identities
from .portraits import (Identity, Nuisance, encode_jpeg, identity_distance, random_identity, random_nuisance,
                        render_portrait)

PRETRAINING_STREAM = 0x5EEDFACE  # seed-sequence namespace that no stream of the world ([seed, ...]) can equal

# Framing of a face crop, as fractions of the crop side (measured on the demo's MTCNN crops).
CROP_EYE_Y = (0.38, 0.46)
CROP_INTEROCULAR = (0.29, 0.37)
CROP_REFERENCE_SIZE = 120  # px: the side of the scan's crop of an aligned CelebA photo


def pretraining_identities(n: int, seed: int = 0, avoid: Sequence[Identity] = (), target: Identity | None = None,
                           min_distance: float = 1.0, min_target_distance: float = 3.0) -> list[Identity]:
    """`n` people for pretraining, deterministic for `seed`: candidates within `min_distance` of one in `avoid` or
    within `min_target_distance` of `target` (`identity_distance`) are redrawn."""
    rng = np.random.default_rng([PRETRAINING_STREAM, seed])
    people: list[Identity] = []
    for _ in range(n):
        for _ in range(10_000):
            candidate = random_identity(rng)
            if target is not None and identity_distance(candidate, target) < min_target_distance:
                continue
            if all(identity_distance(candidate, other) >= min_distance for other in avoid):
                break
        else:
            raise RuntimeError("could not draw a pretraining identity far enough from the world: lower min_distance")
        people.append(candidate)
    return people


def face_crop_nuisance(rng: np.random.Generator, size: int = 64) -> Nuisance:
    """Photo conditions of one `size`-px face crop framed like a face detector's crop; blur and noise are drawn
    for a `CROP_REFERENCE_SIZE` crop and scaled to `size`, as if that crop had been resized."""
    nuisance = random_nuisance(
        rng, face_x=0.5 + float(rng.uniform(-0.03, 0.03)), face_y=float(rng.uniform(*CROP_EYE_Y)),
        face_scale=float(rng.uniform(*CROP_INTEROCULAR)), rotation=float(rng.normal(0.0, 4.0)))  # degrees
    shrink = min(1.0, size / CROP_REFERENCE_SIZE)
    return dataclasses.replace(nuisance, blur=nuisance.blur * shrink, noise=nuisance.noise * shrink)


def _render_identities(args) -> tuple[int, np.ndarray]:
    """Face crops of a block of identities, each JPEG-compressed once at its `jpeg_quality`."""
    first, identities, photos, size, seed = args
    out = np.empty((len(identities), photos, size, size, 3), np.uint8)
    for k, identity in enumerate(identities):
        for photo in range(photos):
            nuisance = face_crop_nuisance(np.random.default_rng([PRETRAINING_STREAM, seed, first + k, photo]), size)
            jpeg = encode_jpeg(render_portrait(identity, nuisance, (size, size)), nuisance.jpeg_quality)
            with Image.open(io.BytesIO(jpeg)) as decoded:
                out[k, photo] = np.asarray(decoded.convert("RGB"), dtype=np.uint8)
    return first, out


def render_face_set(identities: Sequence[Identity], photos_per_identity: int, size: int = 64, seed: int = 0,
                    workers: int = 1, progress: bool = True) -> np.ndarray:
    """`photos_per_identity` face crops of every identity as uint8 (identities, photos, size, size, 3); `workers`
    processes render (1: here), which does not change the pixels."""
    people, chunk = list(identities), 8
    jobs = [(first, people[first:first + chunk], photos_per_identity, size, seed)
            for first in range(0, len(people), chunk)]
    out = np.empty((len(people), photos_per_identity, size, size, 3), np.uint8)
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(process_pool(workers)).map if workers > 1 else map
        for first, block in tqdm(run(_render_identities, jobs), total=len(jobs), desc="rendering pretraining faces",
                                 unit="block", disable=not progress, leave=False):
            out[first:first + len(block)] = block
    return out


def identities_unlike_world(n: int, seed: int = 0, world=None) -> list[Identity]:
    """`n` pretraining identities that share nobody with the world `world` (default: `WorldConfig(seed=seed)`)."""
    world = world if world is not None else WorldConfig(seed=seed)
    people = world_identities(world)
    return pretraining_identities(n, seed, avoid=people, target=people[0],
                                  min_target_distance=world.min_target_distance)
