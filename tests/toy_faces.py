"""Tiny drawn face folders for the stage 2 tests (test-only code: the classifier's `--dataset fake`).

Two kinds of output, both in the layouts the real pipeline reads:
- `make_toy_faces(root, ...)`: `root/<person>/*.jpg`, one folder per person, like stage 1's `data/faces/`.
  Every person has a fixed look (skin, hair and eye colour, face width); the target is drawn so that it is
  clearly distinguishable from the others, so a few training steps already beat chance.
- `make_toy_celeba(root, ...)`: `root/img_align_celeba/000001.jpg ...` at CelebA's aligned 178x218 size, with the
  face centred where CelebA's alignment puts it, some of them showing the target.

This is deliberately crude (a few PIL ellipses and some noise); the project's full synthetic world lives in
`world/`. It exists so stage 2 can be tested and demonstrated without any other stage's output.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from common.files import atomic_save_image, atomic_write_text

# (skin, hair, eyes, face width as a fraction of the height): the first entry is the target's look.
LOOKS = [
    ((236, 200, 170), (200, 40, 30), (40, 120, 220), 0.62),
    ((150, 105, 80), (20, 20, 20), (60, 40, 20), 0.80),
    ((225, 185, 150), (240, 220, 120), (60, 130, 60), 0.78),
    ((190, 140, 110), (90, 60, 30), (30, 30, 30), 0.82),
    ((245, 215, 190), (120, 120, 120), (90, 90, 160), 0.76),
]


def draw_toy_face(look_index: int, rng: random.Random, width: int = 96, height: int = 96) -> Image.Image:
    """Draw one face photo (RGB) of the person with look `look_index`, with random framing and lighting."""
    skin, hair, eyes, face_width = LOOKS[look_index % len(LOOKS)]
    background = tuple(rng.randint(40, 215) for _ in range(3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    cx = width / 2 + rng.uniform(-0.05, 0.05) * side
    cy = height / 2 + rng.uniform(-0.05, 0.05) * side
    face_h = side * rng.uniform(0.70, 0.80)
    face_w = face_h * face_width
    # hair: a larger ellipse behind the top of the head
    draw.ellipse([cx - face_w * 0.62, cy - face_h * 0.62, cx + face_w * 0.62, cy + face_h * 0.2], fill=hair)
    draw.ellipse([cx - face_w / 2, cy - face_h / 2, cx + face_w / 2, cy + face_h / 2], fill=skin)
    eye_dy = -face_h * 0.08
    eye_dx = face_w * 0.22
    eye_r = max(1.0, side * 0.045)
    for sign in (-1, 1):
        ex, ey = cx + sign * eye_dx, cy + eye_dy
        draw.ellipse([ex - eye_r * 1.6, ey - eye_r, ex + eye_r * 1.6, ey + eye_r], fill=(245, 245, 245))
        draw.ellipse([ex - eye_r * 0.8, ey - eye_r * 0.8, ex + eye_r * 0.8, ey + eye_r * 0.8], fill=eyes)
    mouth_w = face_w * rng.uniform(0.25, 0.40)
    mouth_y = cy + face_h * 0.25
    draw.ellipse([cx - mouth_w / 2, mouth_y - side * 0.02, cx + mouth_w / 2, mouth_y + side * 0.03],
                 fill=(170, 60, 60))
    brightness = rng.uniform(0.8, 1.2)
    image = image.point(lambda value: max(0, min(255, int(value * brightness))))
    # Grain from this photo's own RNG: PIL's `effect_noise` draws from the C library's process-wide rand(), so
    # the photos (and a model trained on them) would depend on what else drew from it earlier in the test run.
    grain = np.random.default_rng(rng.getrandbits(64)).normal(128.0, rng.uniform(8, 20), (height, width))
    noise = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8)).convert("RGB")
    image = Image.blend(image, noise, 0.08)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8)))


def make_toy_faces(root: str | Path, target: str = "ava_marlowe", n_target: int = 24, n_per_other: int = 12,
                   n_others: int = 3, size: int = 96, seed: int = 0) -> Path:
    """Write `root/<target>/*.jpg` (look 0) and `root/person_<i>/*.jpg` for `n_others` other people.

    Sizes are in pixels (square photos). Returns `root`. Existing files are overwritten (the output is a pure
    function of the arguments).
    """
    root = Path(root)
    rng = random.Random(seed)
    people = [(target, 0, n_target)] + [(f"person_{i + 1}", i + 1, n_per_other) for i in range(n_others)]
    for name, look, count in people:
        for index in range(count):
            atomic_save_image(draw_toy_face(look, rng, size, size), root / name / f"{index:03d}.jpg", quality=90)
    return root


def make_toy_celeba(root: str | Path, n_images: int = 40, target_every: int = 5, seed: int = 1) -> Path:
    """Write `root/img_align_celeba/000001.jpg ...` (178x218 aligned-style photos); every `target_every`-th shows
    the target look (look 0). Also writes `identity_CelebA.txt` (target = identity 1). Returns `root`."""
    root = Path(root)
    rng = random.Random(seed)
    lines = []
    for index in range(1, n_images + 1):
        look = 0 if index % target_every == 0 else 1 + index % (len(LOOKS) - 1)
        face = draw_toy_face(look, rng, 130, 130)
        # CelebA's alignment puts the eyes near y=111 and the mouth near y=153 in a 178x218 frame.
        canvas = Image.new("RGB", (178, 218), tuple(rng.randint(60, 200) for _ in range(3)))
        canvas.paste(face, (24, 55))
        name = f"{index:06d}.jpg"
        atomic_save_image(canvas, root / "img_align_celeba" / name, quality=90)
        lines.append(f"{name} {1 if look == 0 else 1 + look}\n")
    atomic_write_text(root / "identity_CelebA.txt", "".join(lines))
    return root
