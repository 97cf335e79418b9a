"""Write a tiny CelebA folder in the official layout (generated, never downloaded) for tests.

`write_celeba_fixture(root)` draws one simple face per image (identity = face/hair colours, per-photo jitter),
saves them as JPEGs in `img_align_celeba/` (and, larger and off-centre, in `img_celeba/` with
`list_bbox_celeba.txt`), and writes `identity_CelebA.txt`, `list_attr_celeba.txt` (double-space padded like the
real file) and `list_eval_partition.txt`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()


def _draw_face(rng: np.random.Generator, size: tuple[int, int], skin, hair, smiling: bool) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    cx = width / 2 + rng.normal(0, width * 0.02)
    cy = height / 2 + rng.normal(0, height * 0.02)
    fw, fh = width * 0.32, height * 0.3
    draw.ellipse((cx - fw * 1.15, cy - fh * 1.25, cx + fw * 1.15, cy + fh * 0.6), fill=hair)
    draw.ellipse((cx - fw, cy - fh, cx + fw, cy + fh), fill=skin)
    for side in (-1, 1):
        ex, ey = cx + side * fw * 0.4, cy - fh * 0.2
        draw.ellipse((ex - 6, ey - 4, ex + 6, ey + 4), fill=(250, 250, 250))
        draw.ellipse((ex - 3, ey - 3, ex + 3, ey + 3), fill=(30, 30, 60))
    mouth_h = 10 if smiling else 3
    draw.ellipse((cx - fw * 0.35, cy + fh * 0.45, cx + fw * 0.35, cy + fh * 0.45 + mouth_h), fill=(150, 40, 50))
    return image


def write_celeba_fixture(root, n_identities: int = 4, per_identity: int = 6, size=(178, 218), seed: int = 0) -> dict:
    """Write a CelebA-layout folder under `root` and return what was written.

    Args:
        root: folder to create (or fill).
        n_identities: number of people; their identity ids are 101, 102, ...
        per_identity: images per person; file names are 000001.jpg, 000002.jpg, ... interleaved across people.
        size: (width, height) of the aligned images (CelebA's 178×218 by default).
        seed: seed of every random choice.

    Returns: dict with `root` (Path), `files` (image ids in order), `identities` ({file: id}), `partitions`
    ({file: 0|1|2}), `attribute_names` (40 names), `attributes` ({file: np.int8 array}), `bboxes`
    ({file: (x, y, w, h)} in `img_celeba/` coordinates).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    (root / "img_celeba").mkdir(parents=True, exist_ok=True)
    people = {
        101 + i: (tuple(int(v) for v in rng.integers(120, 255, 3)), tuple(int(v) for v in rng.integers(0, 120, 3)))
        for i in range(n_identities)
    }
    files, identities, partitions, attributes, bboxes = [], {}, {}, {}, {}
    smiling_col = ATTRIBUTE_NAMES.index("Smiling")
    for k in range(per_identity):
        for identity, (skin, hair) in people.items():
            name = f"{len(files) + 1:06d}.jpg"
            smiling = bool(rng.integers(0, 2))
            face = _draw_face(rng, size, skin, hair, smiling)
            face.save(root / "img_align_celeba" / name, quality=90)
            # In-the-wild: the same face pasted off-centre on a larger canvas; its box is where it was pasted.
            canvas = Image.new("RGB", (size[0] * 2, size[1] * 2), (90, 110, 90))
            x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
            canvas.paste(face, (x, y))
            canvas.save(root / "img_celeba" / name, quality=90)
            values = rng.choice(np.array([-1, 1], dtype=np.int8), size=len(ATTRIBUTE_NAMES))
            values[smiling_col] = 1 if smiling else -1
            files.append(name)
            identities[name] = identity
            partitions[name] = 0 if k < per_identity - 2 else (1 if k == per_identity - 2 else 2)
            attributes[name] = values
            bboxes[name] = (x, y, size[0], size[1])
    (root / "identity_CelebA.txt").write_text("".join(f"{f} {identities[f]}\n" for f in files))
    (root / "list_eval_partition.txt").write_text("".join(f"{f} {partitions[f]}\n" for f in files))
    rows = ["".join(f"{v:>3d}" if v == -1 else f"  {v}" for v in attributes[f]) for f in files]
    (root / "list_attr_celeba.txt").write_text(
        f"{len(files)}\n{' '.join(ATTRIBUTE_NAMES)} \n" + "".join(f"{f}{row}\n" for f, row in zip(files, rows))
    )
    (root / "list_bbox_celeba.txt").write_text(
        f"{len(files)}\nimage_id x_1 y_1 width height\n"
        + "".join(f"{f}{x:>6d}{y:>6d}{w:>6d}{h:>6d}\n" for f, (x, y, w, h) in bboxes.items())
    )
    return {
        "root": root,
        "files": files,
        "identities": identities,
        "partitions": partitions,
        "attribute_names": list(ATTRIBUTE_NAMES),
        "attributes": attributes,
        "bboxes": bboxes,
    }
