"""Labelled portraits for measuring a latent space: every generative factor of every photo is known.

A photo is a row of discrete factor codes drawn by `world.portraits.render_portrait`; changing one code re-renders
the same face, in the same light, with only that factor changed (`FactorData.counterfactual`). The person is one
fixed base person (`vary_identity=False`) or a random one per photo (`vary_identity=True`, the transfer data).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from world.generate import process_pool
from world.portraits import HAIR_COLOURS, Identity, Nuisance, random_identity, render_portrait

# Seed-sequence namespace of the factor data, disjoint from the world's and the pretraining faces' streams.
FACTOR_STREAM = 0xFAC7

PALE_SKIN, DARK_SKIN = np.array([246, 218, 200]), np.array([98, 64, 46])


@dataclass(frozen=True)
class Factor:
    """One generative factor: its levels (what the renderer gets) and whether it belongs to the person or the photo."""

    name: str
    levels: tuple
    kind: str  # "identity" or "photo"

    @property
    def n_levels(self) -> int:
        return len(self.levels)


FACTORS: tuple[Factor, ...] = (
    Factor("hair_colour", ("black", "brown", "blond", "red", "gray"), "identity"),
    Factor("hair_length", ("short", "medium", "long"), "identity"),
    Factor("skin", (0.05, 0.35, 0.65, 0.95), "identity"),  # tone: 0 pale .. 1 dark
    Factor("glasses", ("none", "round", "rect"), "identity"),
    Factor("beard", ("none", "full"), "identity"),
    Factor("smile", (0.0, 0.35, 0.7, 1.0), "photo"),
    Factor("mouth_open", (0.0, 0.8), "photo"),
    Factor("yaw", (-0.6, -0.3, 0.0, 0.3, 0.6), "photo"),
    Factor("light", (0.0, 90.0, 180.0, 270.0), "photo"),  # direction the light comes from, degrees
)

# The transfer experiment's factors (with `vary_identity=True`: everything else is a random person): two binary
# attributes to transfer — smile (neutral / broad smile) and glasses (none / rectangular frames) — plus a head
# turn and a light direction that a transfer must leave alone.
TRANSFER_FACTORS: tuple[Factor, ...] = (
    Factor("smile", (0.0, 1.0), "photo"),
    Factor("glasses", ("none", "rect"), "identity"),
    Factor("yaw", (-0.3, 0.0, 0.3), "photo"),
    Factor("light", (0.0, 90.0, 180.0, 270.0), "photo"),
)
TRANSFER_ATTRIBUTES = ("smile", "glasses")
GLASSES_RGB = (30, 60, 170)  # one frame colour that stands out on every skin tone (dark frames vanish on dark skin)


def factor_index(name: str, factors: Sequence[Factor] = FACTORS) -> int:
    """Position of factor `name` in `factors`."""
    names = [f.name for f in factors]
    if name not in names:
        raise ValueError(f"unknown factor {name!r}; known: {', '.join(names)}")
    return names.index(name)


def base_identity(seed: int = 0) -> Identity:
    """The fixed person of the disentanglement data (everything the factors do not set)."""
    person = random_identity(np.random.default_rng([FACTOR_STREAM, seed, 0]))
    return dataclasses.replace(person, bald=False, receding=False, bangs=False, sideburns=False, earrings=False,
                               lipstick=False, blush=0.0)


def photo_identity(seed: int, index: int, vary_identity: bool) -> Identity:
    """The person behind photo `index`: the base person, or a random person of the photo's own stream."""
    if not vary_identity:
        return base_identity(seed)
    person = random_identity(np.random.default_rng([FACTOR_STREAM, seed, 1, index]))
    return dataclasses.replace(person, bald=False, receding=False)  # hair factors need hair


def apply_codes(person: Identity, codes: Sequence[int], factors: Sequence[Factor] = FACTORS,
                photo_seed: int = 0) -> tuple[Identity, Nuisance]:
    """The (identity, photo) the renderer draws for one row of factor codes; unlisted factors keep `person`'s value."""
    value = {f.name: f.levels[int(c)] for f, c in zip(factors, codes)}
    changes = {name: value[name] for name in ("hair_length", "beard") if name in value}
    if "hair_colour" in value:
        colour = value["hair_colour"]
        rgb = HAIR_COLOURS[colour]
        brow = np.array(rgb) * (0.55 if colour in ("blond", "gray") else 0.8)
        changes.update(hair_colour=colour, hair_rgb=rgb, brow_rgb=tuple(int(c) for c in brow))
    if "skin" in value:
        tone = float(value["skin"])
        skin = tuple(int(c) for c in PALE_SKIN + (DARK_SKIN - PALE_SKIN) * tone ** 1.3)
        lip = np.array(skin) * np.array([0.85, 0.62, 0.62]) + np.array([25, 0, 5])
        changes.update(skin=skin, lip_rgb=tuple(int(np.clip(c, 0, 255)) for c in lip))
    if "glasses" in value:
        changes.update(glasses=value["glasses"], glasses_rgb=GLASSES_RGB)
    identity = dataclasses.replace(person, **changes)
    nuisance = Nuisance(  # an aligned crop (eyes at 42 % height, 33 % apart), a plain backdrop, no photo defects
        face_x=0.5, face_y=0.42, face_scale=0.33, rotation=0.0, yaw=float(value.get("yaw", 0.0)), gaze=0.0,
        smile=float(value.get("smile", 0.0)), mouth_open=float(value.get("mouth_open", 0.0)),
        light_angle=float(value.get("light", 0.0)), light_strength=0.4 if "light" in value else 0.0,
        brightness=1.0, warmth=0.0, background_rgb=(176, 178, 184), clutter=0, clothes_rgb=(60, 70, 90), blur=0.0,
        noise=0.0, jpeg_quality=95, seed=int(photo_seed))
    return identity, nuisance


def sample_codes(n: int, seed: int = 0, factors: Sequence[Factor] = FACTORS,
                 exclude: Sequence[Mapping[str, int]] = ()) -> np.ndarray:
    """`n` rows of factor codes, each factor uniform and independent, deterministic for `seed`; a row matching every
    entry of one `exclude` cell ({factor name: level index}) is redrawn."""
    rng = np.random.default_rng([FACTOR_STREAM, seed, 2])
    sizes = np.array([f.n_levels for f in factors])
    cells = [[(factor_index(k, factors), int(v)) for k, v in cell.items()] for cell in exclude]
    codes = np.empty((n, len(sizes)), np.int64)
    for row in range(n):
        for _ in range(10_000):
            candidate = (rng.random(len(sizes)) * sizes).astype(np.int64)
            if not any(all(candidate[j] == v for j, v in cell) for cell in cells):
                break
        else:
            raise RuntimeError("every cell is excluded: exclude fewer")
        codes[row] = candidate
    return codes


def _render_rows(job) -> np.ndarray:
    indices, codes, seed, size, vary_identity, factors = job
    out = np.empty((len(codes), size, size, 3), np.uint8)
    for k, (index, row) in enumerate(zip(indices, codes)):
        photo_seed = int(np.random.default_rng([FACTOR_STREAM, seed, 3, int(index)]).integers(2**31 - 1))
        identity, nuisance = apply_codes(photo_identity(seed, int(index), vary_identity), row, factors, photo_seed)
        out[k] = np.asarray(render_portrait(identity, nuisance, (size, size)), np.uint8)
    return out


def render_codes(codes: np.ndarray, seed: int = 0, size: int = 64, vary_identity: bool = False,
                 factors: Sequence[Factor] = FACTORS, indices: Sequence[int] | None = None, workers: int = 1,
                 progress: bool = False) -> np.ndarray:
    """Render one photo per row of `codes`: uint8 [N, size, size, 3]. `indices` (default 0..N-1) fix each row's person
    and drawing seed, so a changed code gives the counterfactual; the pixels do not depend on `workers`."""
    codes = np.asarray(codes, np.int64)
    indices = np.arange(len(codes)) if indices is None else np.asarray(indices, np.int64)
    if len(indices) != len(codes):
        raise ValueError("indices must have one entry per row of codes")
    jobs = [(indices[s:s + 32], codes[s:s + 32], seed, size, vary_identity, tuple(factors))
            for s in range(0, len(codes), 32)]
    bar = dict(total=len(jobs), desc="rendering factor portraits", disable=not progress, leave=False)
    if workers <= 1 or len(jobs) < 4:
        blocks = [_render_rows(job) for job in tqdm(jobs, **bar)]
    else:
        with process_pool(workers) as pool:
            blocks = list(tqdm(pool.map(_render_rows, jobs), **bar))
    return np.concatenate(blocks) if blocks else np.empty((0, size, size, 3), np.uint8)


@dataclass
class FactorData:
    """Rendered portraits with their factor codes: `images` uint8 [N, S, S, 3], `codes` int64 [N, F]."""

    images: np.ndarray
    codes: np.ndarray
    seed: int
    vary_identity: bool
    factors: tuple[Factor, ...] = FACTORS

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.factors)

    def tensors(self):
        """Images as float tensors [N, 3, S, S] in [0, 1]."""
        import torch

        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div_(255.0)

    def counterfactual(self, rows: Sequence[int], factor: str, level: int, workers: int = 1) -> np.ndarray:
        """Re-render photos `rows` with `factor` set to `level`, all else identical: uint8 [len(rows), S, S, 3]."""
        rows = np.asarray(rows, np.int64)
        codes = self.codes[rows].copy()
        codes[:, factor_index(factor, self.factors)] = int(level)
        return render_codes(codes, self.seed, self.images.shape[1], self.vary_identity, self.factors, indices=rows,
                            workers=workers)


def factor_dataset(n: int, seed: int = 0, size: int = 64, vary_identity: bool = False,
                   factors: Sequence[Factor] = FACTORS, exclude: Sequence[Mapping[str, int]] = (), workers: int = 1,
                   progress: bool = True) -> FactorData:
    """`n` labelled portraits (see the module docstring); deterministic for (`n`, `seed`, `size`, `vary_identity`,
    `factors`, `exclude`)."""
    codes = sample_codes(n, seed, factors, exclude)
    images = render_codes(codes, seed, size, vary_identity, factors, workers=workers, progress=progress)
    return FactorData(images=images, codes=codes, seed=seed, vary_identity=vary_identity, factors=tuple(factors))
