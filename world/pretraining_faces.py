"""A face set of many strangers for pretraining a backbone: the offline stand-in for ImageNet (issue 13).

Stage 2 transfers a pretrained MobileNetV2 to "is this the celebrity?". Offline there are no ImageNet weights, so
the classifier is pretrained on faces the world's own renderer (`world.portraits`) draws: many identities, many
photos each, with the usual per-photo nuisance. Those people must not be the demo world's people:

- identities come from a random stream of their own (`PRETRAINING_STREAM`, never one of `world.generate`'s
  streams), and
- every candidate is compared with the identity factors of every person a world with the same seed makes
  (`world.generate.world_identities`: web people, the target, the haystack strangers) and redrawn when it is
  within `min_distance` of any of them or within `min_target_distance` of the target (`identity_distance`, the
  same rule that keeps haystack strangers away from the planted target). So the target never leaks into
  pretraining, not even as a near-copy.

Photos are framed like stage 1's MTCNN crops (eye midpoint a little above the centre, eyes about a third of the
width apart) and like the scan's centred crop of aligned CelebA photos, drawn directly at the network's input size
(64 px by default: about 110 photos/s per core, rendering cost hardly depends on size at this scale) and passed
through JPEG once at the photo's quality, as scraped crops are. Every photo has its own seed, so the set does not
depend on how rendering is split across processes.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import multiprocessing
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from .portraits import Identity, Nuisance, identity_distance, random_identity, random_nuisance, render_portrait

# Seed-sequence namespace of the pretraining faces: the world's streams are [seed, 1..5] and [seed, 4, number];
# entropy that starts with this constant can never equal one of them.
PRETRAINING_STREAM = 0x5EEDFACE

# Framing of a face crop, as fractions of the crop side (measured on the demo's MTCNN crops: eyes ~0.33 of the
# width apart with the eye midpoint at ~0.42 of the height; the scan's CelebA crop gives 0.325 and 0.425).
CROP_EYE_Y = (0.38, 0.46)
CROP_INTEROCULAR = (0.29, 0.37)
CROP_EYE_X_JITTER = 0.03
CROP_ROTATION_SD = 4.0  # degrees
CROP_REFERENCE_SIZE = 120  # px: the side of the scan's crop of an aligned CelebA photo


def pretraining_identities(n: int, seed: int = 0, avoid: Sequence[Identity] = (), target: Identity | None = None,
                           min_distance: float = 1.0, min_target_distance: float = 3.0) -> list[Identity]:
    """`n` people for pretraining, deterministic for `seed`, none of them close to a person in `avoid`.

    avoid: identities the set must not contain (a world's people, see `world.generate.world_identities`);
        candidates within `min_distance` of one of them (`identity_distance`; 0 = the same factors) are redrawn.
    target: the person the downstream task looks for; candidates within `min_target_distance` of it are redrawn.
    """
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
    """Photo conditions of one `size`-px face crop: the world's usual nuisance (expression, light, background, blur,
    noise, JPEG quality) with the face placed the way a face detector's crop frames it.

    Blur and noise are drawn in pixels of a `CROP_REFERENCE_SIZE` crop and scaled to `size`, as if the crop had been
    cut at that size and resized: a 2 px blur drawn straight at 64 px would smear the face far more than any photo
    the classifier sees (it resizes 160 px MTCNN crops and 120 px CelebA crops).
    """
    nuisance = random_nuisance(
        rng, face_x=0.5 + float(rng.uniform(-CROP_EYE_X_JITTER, CROP_EYE_X_JITTER)),
        face_y=float(rng.uniform(*CROP_EYE_Y)), face_scale=float(rng.uniform(*CROP_INTEROCULAR)),
        rotation=float(rng.normal(0.0, CROP_ROTATION_SD)))
    shrink = min(1.0, size / CROP_REFERENCE_SIZE)
    return dataclasses.replace(nuisance, blur=nuisance.blur * shrink, noise=nuisance.noise * shrink)


def render_face_crop(identity: Identity, nuisance: Nuisance, size: int = 64) -> np.ndarray:
    """One `size` x `size` face crop of `identity`, JPEG-compressed once at `nuisance.jpeg_quality`; uint8 HxWx3."""
    image = render_portrait(identity, nuisance, (size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(nuisance.jpeg_quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8)


def _render_identities(args) -> tuple[int, np.ndarray]:
    first, identities, photos, size, seed = args
    out = np.empty((len(identities), photos, size, size, 3), np.uint8)
    for k, identity in enumerate(identities):
        for photo in range(photos):
            rng = np.random.default_rng([PRETRAINING_STREAM, seed, first + k, photo])
            out[k, photo] = render_face_crop(identity, face_crop_nuisance(rng, size), size)
    return first, out


def render_face_set(identities: Sequence[Identity], photos_per_identity: int, size: int = 64, seed: int = 0,
                    workers: int = 1, progress: bool = True) -> np.ndarray:
    """Render `photos_per_identity` face crops of every identity: a uint8 array (identities, photos, size, size, 3).

    workers: processes that render (1 renders here); the pixels do not depend on it (one seed per photo).
    """
    people = list(identities)
    chunk = 8
    jobs = [(first, people[first:first + chunk], photos_per_identity, size, seed)
            for first in range(0, len(people), chunk)]
    out = np.empty((len(people), photos_per_identity, size, size, 3), np.uint8)
    bar = tqdm(total=len(people) * photos_per_identity, desc="rendering pretraining faces", disable=not progress,
               leave=False)
    if workers <= 1:
        for job in jobs:
            first, block = _render_identities(job)
            out[first:first + len(block)] = block
            bar.update(block.shape[0] * block.shape[1])
    else:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            for first, block in pool.map(_render_identities, jobs):
                out[first:first + len(block)] = block
                bar.update(block.shape[0] * block.shape[1])
    bar.close()
    return out


def identities_unlike_world(n: int, seed: int = 0, world=None) -> list[Identity]:
    """`n` pretraining identities that share nobody with the world `world` (default: `WorldConfig(seed=seed)`,
    the demo world of the same seed): none within 1.0 of any of its people, none within the world's
    `min_target_distance` of its target."""
    from .generate import WorldConfig, world_identities

    world = world if world is not None else WorldConfig(seed=seed)
    people = world_identities(world)
    return pretraining_identities(n, seed, avoid=people, target=people[0],
                                  min_target_distance=world.min_target_distance)
