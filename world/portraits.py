"""Procedural portraits: draw a person (an `Identity`) in a photo (a `Nuisance`) with PIL and NumPy only.

Each person is drawn on a tile of their own in face units (origin between the eyes, x right, y down, one unit
about the distance between the eyes), then pasted into the photo. The faces are cartoons that MTCNN finds;
`celeba_attributes` gives the 40 CelebA attributes a drawing shows.
"""
from __future__ import annotations

import copy
import functools
import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

RGB = tuple[int, int, int]

# The 40 attribute names of CelebA's list_attr_celeba.txt, in the official order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()

# Where CelebA's aligned 178x218 crops put the face: eye midpoint at (89, 111), 39 px between the eyes.
ALIGNED_SIZE = (178, 218)
ALIGNED_EYE_XY = (89.0 / 178.0, 111.0 / 218.0)
ALIGNED_INTEROCULAR = 39.0 / 178.0

SUPERSAMPLE = 2  # draw at 2x, then downsample with Lanczos: smooth edges at a fraction of the cost of 4x

HAIR_COLOURS: dict[str, RGB] = {"black": (28, 22, 20), "brown": (96, 62, 38), "blond": (214, 182, 118),
                                "gray": (168, 166, 160), "red": (158, 68, 34)}
EYE_COLOURS: tuple[RGB, ...] = ((70, 45, 25), (110, 75, 40), (60, 110, 150), (80, 120, 70), (120, 125, 130))
GLASSES_COLOURS: tuple[RGB, ...] = ((20, 20, 20), (90, 50, 25), (190, 160, 80), (150, 30, 40), (40, 60, 120))


@dataclass(frozen=True)
class Identity:
    """What makes one person recognisable; lengths are in face units (about the distance between the eyes)."""

    male: bool
    young: bool
    skin: RGB  # base skin colour
    face_width: float  # half-width of the head at the cheekbones (0.95 .. 1.3; wide faces read as Chubby)
    face_length: float  # chin depth below the eye line (1.45 .. 1.85)
    jaw: float  # superellipse exponent of the jaw: < 1.9 pointed chin, ~2 oval, > 2.4 square
    hair_colour: str  # key of HAIR_COLOURS
    hair_rgb: RGB
    hair_length: str  # "buzz", "short", "medium" or "long"
    hair_texture: str  # "straight", "wavy" or "curly"
    hair_volume: float  # how far hair stands off the skull (0.05 .. 0.35)
    bangs: bool
    bald: bool
    receding: bool
    eye_spacing: float  # half the distance between eye centres, relative to the head scale (0.44 .. 0.56)
    eye_size: float  # eye half-width (0.19 .. 0.25)
    eye_open: float  # eye height / width (0.34 .. 0.58; small reads as Narrow_Eyes)
    eye_rgb: RGB
    brow_height: float  # brow line above the eye centres (0.30 .. 0.45)
    brow_thickness: float  # 0.04 .. 0.13 (thick reads as Bushy_Eyebrows)
    brow_arch: float  # 0 flat .. 1 strongly arched (Arched_Eyebrows)
    brow_rgb: RGB
    nose_length: float  # nose tip below the eye line (0.52 .. 0.75)
    nose_width: float  # half-width of the nostrils (0.13 .. 0.27; wide reads as Big_Nose)
    nose_pointy: bool
    mouth_width: float  # half-width of the mouth (0.36 .. 0.52)
    mouth_y: float  # mouth line below the eye line (1.0 .. 1.15)
    lip_fullness: float  # lower-lip height (0.07 .. 0.16; full reads as Big_Lips)
    lip_rgb: RGB
    lipstick: bool
    glasses: str  # "none", "round" or "rect"
    glasses_rgb: RGB
    beard: str  # "none", "stubble", "mustache", "goatee" or "full"
    sideburns: bool
    blush: float  # rosy cheeks, 0 .. 0.6
    earrings: bool


@dataclass(frozen=True)
class Nuisance:
    """What changes from photo to photo of the same person; positions are fractions of the image size."""

    face_x: float = 0.5  # eye midpoint, fraction of image width
    face_y: float = 0.5  # eye midpoint, fraction of image height
    face_scale: float = ALIGNED_INTEROCULAR  # distance between the eye centres / image width
    rotation: float = 0.0  # in-plane rotation in degrees (counter-clockwise)
    yaw: float = 0.0  # slight head turn, -1 .. 1 (features shift sideways)
    gaze: float = 0.0  # irises shift sideways, -1 .. 1
    smile: float = 0.0  # 0 neutral .. 1 broad smile
    mouth_open: float = 0.0  # 0 closed .. 1 open
    light_angle: float = 0.0  # direction the light comes from, degrees
    light_strength: float = 0.0  # brightness ratio across the image, 0 .. 0.5
    brightness: float = 1.0  # global exposure factor
    warmth: float = 0.0  # colour temperature shift, -1 (blue) .. 1 (orange)
    background_rgb: RGB = (180, 180, 185)
    clutter: int = 0  # number of blurred background objects
    clothes_rgb: RGB = (60, 70, 90)
    blur: float = 0.0  # Gaussian blur radius in output pixels
    noise: float = 0.0  # sensor noise standard deviation, 0..255 units
    jpeg_quality: int = 90  # used when the photo is saved (see `encode_jpeg`)
    seed: int = 0  # drives the small random details (clutter, hair strands, noise)


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> RGB:
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in rgb)  # type: ignore[return-value]


def random_identity(rng: np.random.Generator) -> Identity:
    """Draw a new person; `rng` is a `numpy.random.Generator` (the same stream gives the same person)."""
    male = bool(rng.random() < 0.5)
    young = bool(rng.random() < 0.7)
    tone = rng.random()  # 0 pale .. 1 dark
    pale, dark = np.array([246, 218, 200]), np.array([98, 64, 46])
    skin = _jitter(rng, pale + (dark - pale) * tone ** 1.3 + np.array([6, 0, -6]) * rng.normal(), 5)

    hair_colour = str(rng.choice(["black", "brown", "blond", "red", "gray"], p=[0.3, 0.3, 0.22, 0.08, 0.10]))
    if not young and rng.random() < 0.5:
        hair_colour = "gray"
    if young and hair_colour == "gray":
        hair_colour = "brown"
    # Vary hair brightness more than hue, so black hair never turns green.
    hair_rgb = _jitter(rng, np.array(HAIR_COLOURS[hair_colour]) * rng.uniform(0.85, 1.15), 4)

    bald = bool(male and not young and rng.random() < 0.35) or bool(male and rng.random() < 0.04)
    receding = bool(male and not bald and not young and rng.random() < 0.4)
    if male:
        hair_length = str(rng.choice(["buzz", "short", "medium", "long"], p=[0.2, 0.55, 0.17, 0.08]))
    else:
        hair_length = str(rng.choice(["short", "medium", "long"], p=[0.12, 0.33, 0.55]))
    hair_texture = str(rng.choice(["straight", "wavy", "curly"], p=[0.5, 0.35, 0.15]))
    bangs = bool(not bald and not receding and hair_length != "buzz" and rng.random() < (0.25 if male else 0.4))

    beard = "none"
    if male and rng.random() < 0.45:
        beard = str(rng.choice(["stubble", "mustache", "goatee", "full"], p=[0.3, 0.15, 0.2, 0.35]))
    glasses = str(rng.choice(["none", "round", "rect"], p=[0.72, 0.12, 0.16]))
    brow_scale = 0.55 if hair_colour in ("blond", "gray") else 0.8  # eyebrows a shade darker than the hair
    brow_base = np.array(HAIR_COLOURS["brown"]) * 0.8 if bald else np.array(hair_rgb) * brow_scale
    lip_base = np.array(skin) * np.array([0.85, 0.62, 0.62]) + np.array([25, 0, 5])
    lipstick = bool(not male and rng.random() < 0.45)
    if lipstick:
        lip_base = np.array([[185, 30, 50], [200, 70, 90], [150, 25, 40]][int(rng.integers(3))])

    # Keyword arguments are evaluated in order: this order is the order of the random draws.
    return Identity(
        male=male, young=young, skin=skin, face_width=float(rng.uniform(0.95, 1.3) + (0.04 if male else 0.0)),
        face_length=float(rng.uniform(1.45, 1.85)), jaw=float(rng.uniform(1.6, 2.8) + (0.15 if male else -0.1)),
        hair_colour=hair_colour, hair_rgb=hair_rgb, hair_length=hair_length, hair_texture=hair_texture,
        hair_volume=float(rng.uniform(0.05, 0.35)), bangs=bangs, bald=bald, receding=receding,
        eye_spacing=float(rng.uniform(0.44, 0.56)), eye_size=float(rng.uniform(0.19, 0.25)),
        eye_open=float(rng.uniform(0.34, 0.58)),
        eye_rgb=_jitter(rng, EYE_COLOURS[int(rng.integers(len(EYE_COLOURS)))], 8),
        brow_height=float(rng.uniform(0.30, 0.45)),
        brow_thickness=float(rng.uniform(0.04, 0.13) + (0.02 if male else 0.0)),
        brow_arch=float(rng.random()), brow_rgb=_jitter(rng, brow_base, 6),
        nose_length=float(rng.uniform(0.52, 0.75)), nose_width=float(rng.uniform(0.13, 0.27)),
        nose_pointy=bool(rng.random() < 0.3), mouth_width=float(rng.uniform(0.36, 0.52)),
        mouth_y=float(rng.uniform(1.0, 1.15)), lip_fullness=float(rng.uniform(0.07, 0.16)),
        lip_rgb=_jitter(rng, lip_base, 6), lipstick=lipstick, glasses=glasses,
        glasses_rgb=GLASSES_COLOURS[int(rng.integers(len(GLASSES_COLOURS)))], beard=beard,
        sideburns=bool(male and (beard == "full" or rng.random() < 0.15) and not bald),
        blush=float(rng.uniform(0.0, 0.6) if rng.random() < 0.4 else 0.0),
        earrings=bool(not male and rng.random() < 0.4),
    )


def random_nuisance(rng: np.random.Generator, aligned: bool = False, **fixed) -> Nuisance:
    """Draw the photo conditions of one picture: `aligned` places the face like CelebA's aligned crops; `fixed`
    sets `Nuisance` fields instead of drawing them."""
    smile = float(rng.random() ** 0.7) if rng.random() < 0.5 else float(rng.uniform(0, 0.15))
    values = dict(
        face_x=ALIGNED_EYE_XY[0] + rng.normal(0, 0.008) if aligned else float(rng.uniform(0.35, 0.65)),
        face_y=ALIGNED_EYE_XY[1] + rng.normal(0, 0.008) if aligned else float(rng.uniform(0.38, 0.5)),
        face_scale=ALIGNED_INTEROCULAR * float(rng.uniform(0.95, 1.05)) if aligned else float(rng.uniform(0.12, 0.22)),
        rotation=float(rng.normal(0, 2.0 if aligned else 6.0)), yaw=float(np.clip(rng.normal(0, 0.35), -1, 1)),
        gaze=float(np.clip(rng.normal(0, 0.3), -1, 1)), smile=smile,
        mouth_open=float(rng.uniform(0.3, 1.0)) if rng.random() < 0.3 else 0.0,
        light_angle=float(rng.uniform(0, 360)), light_strength=float(rng.uniform(0.0, 0.45)),
        brightness=float(rng.uniform(0.82, 1.12)), warmth=float(rng.normal(0, 0.35)),
        background_rgb=tuple(int(c) for c in rng.integers(30, 235, size=3)), clutter=int(rng.integers(0, 9)),
        clothes_rgb=tuple(int(c) for c in rng.integers(15, 230, size=3)),
        blur=float(rng.uniform(1.2, 2.2)) if rng.random() < 0.1 else float(rng.uniform(0, 0.6)),
        noise=float(rng.uniform(0, 7)), jpeg_quality=int(rng.integers(55, 96)), seed=int(rng.integers(2**31 - 1)),
    )
    values.update(fixed)
    return Nuisance(**values)


def identity_distance(a: Identity, b: Identity) -> float:
    """A rough visual distance between two people (0 = same parameters, each term ~1 for 'clearly different')."""
    d = float(np.abs(np.array(a.skin, float) - np.array(b.skin, float)).sum() / 90.0)
    d += float(np.abs(np.array(a.hair_rgb, float) - np.array(b.hair_rgb, float)).sum() / 120.0)
    d += float(a.hair_length != b.hair_length) + float(a.bangs != b.bangs) + float(a.bald != b.bald)
    d += float(a.glasses != b.glasses) + float(a.beard != b.beard) + float(a.male != b.male)
    d += abs(a.face_width - b.face_width) / 0.2 + abs(a.face_length - b.face_length) / 0.25
    d += float(np.abs(np.array(a.eye_rgb, float) - np.array(b.eye_rgb, float)).sum() / 120.0)
    return d


def celeba_attributes(identity: Identity, nuisance: Nuisance) -> dict[str, int]:
    """The 40 CelebA attributes (+1 / -1) of a rendered photo; attributes the renderer does not model are -1."""
    i, n = identity, nuisance
    has_hair = not i.bald
    hair_shown = has_hair and i.hair_length != "buzz"
    on = {
        "5_o_Clock_Shadow": i.beard == "stubble", "Arched_Eyebrows": i.brow_arch > 0.6, "Bald": i.bald,
        "Bangs": i.bangs and has_hair, "Big_Lips": i.lip_fullness > 0.13, "Big_Nose": i.nose_width > 0.23,
        "Black_Hair": has_hair and i.hair_colour == "black", "Blond_Hair": has_hair and i.hair_colour == "blond",
        "Brown_Hair": has_hair and i.hair_colour == "brown", "Gray_Hair": has_hair and i.hair_colour == "gray",
        "Blurry": n.blur > 1.0, "Bushy_Eyebrows": i.brow_thickness > 0.11, "Chubby": i.face_width > 1.23,
        "Eyeglasses": i.glasses != "none", "Goatee": i.beard == "goatee", "Male": i.male,
        "Mouth_Slightly_Open": n.mouth_open > 0.25, "Mustache": i.beard in ("mustache", "goatee", "full"),
        "Narrow_Eyes": i.eye_open < 0.39 or (n.smile > 0.6 and i.eye_open < 0.45),
        "No_Beard": i.beard in ("none", "stubble"), "Oval_Face": 1.8 <= i.jaw <= 2.3 and i.face_length > 1.6,
        "Pale_Skin": sum(i.skin) > 650, "Pointy_Nose": i.nose_pointy, "Receding_Hairline": i.receding,
        "Rosy_Cheeks": i.blush > 0.35, "Sideburns": i.sideburns, "Smiling": n.smile > 0.5,
        "Straight_Hair": hair_shown and i.hair_texture == "straight",
        "Wavy_Hair": hair_shown and i.hair_texture in ("wavy", "curly"),
        "Wearing_Earrings": i.earrings, "Wearing_Lipstick": i.lipstick, "Young": i.young,
    }
    return {name: (1 if on.get(name, False) else -1) for name in CELEBA_ATTRIBUTES}


# Scalar clamps use min/max: np.clip on one number costs ~20x more, and drawing calls these thousands of times.
def _scale_rgb(rgb: Sequence[float], factor: float) -> RGB:
    return tuple(int(min(max(c * factor, 0), 255)) for c in rgb)  # type: ignore[return-value]


def _mix_rgb(a: Sequence[float], b: Sequence[float], t: float) -> RGB:
    return tuple(int(min(max(x * (1 - t) + y * t, 0), 255)) for x, y in zip(a, b))  # type: ignore[return-value]


@functools.lru_cache(maxsize=4096)
def _unit_curve(start: float, end: float, steps: int, power: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of `steps` angles from `start` to `end` degrees (superellipse `power`), cached."""
    t = np.linspace(math.radians(start), math.radians(end), steps, endpoint=(end - start) < 360)
    c, s = np.cos(t), np.sin(t)
    if power != 1.0:
        c, s = np.sign(c) * np.abs(c) ** power, np.sign(s) * np.abs(s) ** power
    return c, s


class _FacePen:
    """Draws shapes given in face units on a tile: origin at the eye midpoint, `unit` pixels per unit, turned by
    `rotation` degrees counter-clockwise."""

    def __init__(self, origin: tuple[float, float], unit: float, rotation: float = 0.0):
        self.ox, self.oy = origin
        self.unit = unit
        angle = math.radians(rotation)
        self.cos, self.sin = math.cos(angle), math.sin(angle)

    def w(self, width: float) -> int:
        return max(1, int(round(width * self.unit)))

    def _curve(self, cx, cy, hw, hh, start=0.0, end=360.0, power=1.0) -> list[float]:
        steps = int(min(max((hw + hh) * self.unit * abs(end - start) / 360.0 / 2.5, 10), 72))
        c, s = _unit_curve(start, end, steps, power)
        return self.points(cx + hw * c, cy + hh * s)

    def points(self, xs, ys) -> list[float]:
        """Flat [x0, y0, x1, y1, ...] tile pixels of face-unit coordinate arrays (what ImageDraw accepts)."""
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        return np.column_stack((self.ox + (xs * self.cos + ys * self.sin) * self.unit,
                                self.oy + (-xs * self.sin + ys * self.cos) * self.unit)).ravel().tolist()

    def ellipse(self, draw, cx, cy, hw, hh, fill, power=1.0):
        """A filled ellipse; `power` 0.3 makes it a rounded rectangle."""
        draw.polygon(self._curve(cx, cy, hw, hh, power=power), fill=fill)

    def arc(self, draw, cx, cy, hw, hh, start, end, fill, width, power=1.0):
        """An elliptic arc from `start` to `end` degrees; a full turn is drawn closed."""
        pts = self._curve(cx, cy, hw, hh, start, end, power)
        draw.line(pts + pts[:2] if end - start >= 360 else pts, fill=fill, width=self.w(width), joint="curve")

    def poly(self, draw, pts, fill):
        draw.polygon(self.points(*np.asarray(pts, float).T), fill=fill)

    def line(self, draw, pts, fill, width):
        draw.line(self.points(*np.asarray(pts, float).T), fill=fill, width=self.w(width), joint="curve")

    def rect(self, draw, x0, y0, x1, y1, fill):
        self.poly(draw, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill=fill)

    def moved(self, dx: float = 0.0, dy: float = 0.0, factor: float = 1.0) -> "_FacePen":
        """The same face on a crop whose top-left corner is at tile pixel (dx, dy), scaled by `factor`."""
        pen = copy.copy(self)
        pen.ox, pen.oy, pen.unit = (self.ox - dx) * factor, (self.oy - dy) * factor, self.unit * factor
        return pen

    def bounds(self, x0, y0, x1, y1, size) -> tuple[int, int, int, int]:
        """Tile-pixel box (clipped to `size`) holding the face-unit rectangle, rotation included."""
        flat = self.points([x0, x1, x1, x0], [y0, y0, y1, y1])
        xs, ys = flat[0::2], flat[1::2]
        return (max(0, int(min(xs))), max(0, int(min(ys))),
                min(size[0], int(math.ceil(max(xs)))), min(size[1], int(math.ceil(max(ys)))))


def _head_outline(i: Identity, n_points: int = 64) -> list[tuple[float, float]]:
    """Head outline in face units: an ellipse over the skull, a superellipse jaw below the cheekbones."""
    top, cheek_y = 1.95, 0.05
    pts = []
    for k in range(n_points):
        t = 2 * math.pi * k / n_points
        c, s = math.cos(t), math.sin(t)
        if s < 0:  # upper half: skull
            pts.append((i.face_width * c, cheek_y + top * s))
        else:  # lower half: jaw, narrowing toward the chin
            e = 2.0 / i.jaw
            x = math.copysign(abs(c) ** e, c) * i.face_width
            y = abs(s) ** e * (i.face_length - cheek_y)
            x *= 1.0 - 0.22 * (y / (i.face_length - cheek_y)) ** 2
            pts.append((x, cheek_y + y))
    return pts


SHADE_REDUCTION = 4  # shading masks are smooth, so they are drawn and blurred at 1/4 of the tile resolution


def _shade_face(tile: Image.Image, i: Identity, n: Nuisance, pen: _FacePen, outline) -> Image.Image:
    """Darken the face toward its rim, in the eye sockets, under the nose and the lower lip; add highlights and
    blush. This shading is what makes a detector read the drawing as a face."""
    box = pen.bounds(-i.face_width - 0.4, -2.1, i.face_width + 0.4, i.face_length + 0.3, tile.size)
    region = tile.crop(box)
    r = SHADE_REDUCTION
    size = (max(1, region.width // r), max(1, region.height // r))
    small = pen.moved(box[0], box[1], 1.0 / r)
    fx = n.yaw * 0.12
    face_mask = Image.new("L", size, 0)
    small.poly(ImageDraw.Draw(face_mask), [(x + fx * 0.2, y) for x, y in outline], fill=255)
    rim = np.asarray(face_mask.filter(ImageFilter.BoxBlur(max(1, int(0.35 * small.unit)))), np.float32) / 255.0
    inside = np.asarray(face_mask, np.float32) / 255.0
    shade = Image.new("L", size, 255)
    sd = ImageDraw.Draw(shade)
    for side in (-1, 1):
        small.ellipse(sd, side * i.eye_spacing + fx, -0.03, i.eye_size * 1.55, 0.2, fill=160)
    small.ellipse(sd, fx * 1.4, i.nose_length + 0.06, i.nose_width * 0.9, 0.07, fill=150)
    small.line(sd, [(fx - 0.13, 0.05), (fx * 1.3 - 0.16, i.nose_length - 0.08)], fill=205, width=0.07)
    small.ellipse(sd, fx, i.mouth_y + i.lip_fullness + 0.1, i.mouth_width * 0.45, 0.06, fill=200)
    if not i.young:  # forehead lines and nasolabial folds
        for k in range(2):
            small.arc(sd, fx, -0.75 - 0.14 * k, 0.45, 0.1, 200, 340, fill=185, width=0.03)
        for side in (-1, 1):
            small.line(sd, [(fx + side * (i.nose_width + 0.05), i.nose_length),
                            (fx + side * (i.mouth_width + 0.04), i.mouth_y + 0.05)], fill=185, width=0.035)
    shade_arr = np.asarray(shade.filter(ImageFilter.GaussianBlur(0.07 * small.unit)), np.float32) / 255.0
    rim_factor = 0.74 + 0.26 * np.clip(rim * 1.6 - 0.3, 0, 1)
    factor = shade_arr * (inside * rim_factor + (1 - inside))
    factor_img = Image.fromarray(np.clip(factor * 255, 0, 255).astype(np.uint8), "L").resize(region.size,
                                                                                               Image.BILINEAR)
    opaque = Image.new("L", region.size, 255)
    region = ImageChops.multiply(region, Image.merge("RGBA", (factor_img, factor_img, factor_img, opaque)))
    # Highlights on the forehead, the nose bridge and the cheekbones: on dark skin they carry most of the relief.
    shine = Image.new("L", size, 0)
    hd = ImageDraw.Draw(shine)
    small.ellipse(hd, fx * 0.6, -1.0, 0.45, 0.28, fill=110)
    small.ellipse(hd, fx * 1.3, 0.32, 0.07, 0.24, fill=130)
    for side in (-1, 1):
        small.ellipse(hd, side * 0.62 + fx, 0.42, 0.2, 0.1, fill=90)
    shine = shine.filter(ImageFilter.GaussianBlur(0.08 * small.unit)).resize(region.size, Image.BILINEAR)
    region.paste(_mix_rgb(i.skin, (255, 250, 245), 0.4) + (255,), (0, 0), shine)
    if i.blush > 0:
        cheeks = Image.new("L", size, 0)
        for side in (-1, 1):
            small.ellipse(ImageDraw.Draw(cheeks), side * 0.62 + fx, 0.62, 0.22, 0.15, fill=int(140 * i.blush))
        cheeks = cheeks.filter(ImageFilter.GaussianBlur(0.1 * small.unit)).resize(region.size, Image.BILINEAR)
        region.paste((225, 95, 105, 255), (0, 0), cheeks)
    tile.paste(region, box[:2])
    return tile


def _draw_hair_cap(tile: Image.Image, i: Identity, n: Nuisance, pen: _FacePen, rng: np.random.Generator) -> None:
    """Hair on top of the head: a cap with a curved hairline (lower for bangs, higher with temple notches when
    receding), side locks over the cheeks for medium and long cuts, a horseshoe of hair for bald heads."""
    fx = n.yaw * 0.12
    vol = 0.04 if i.hair_length == "buzz" else i.hair_volume
    hw, cy, hh = i.face_width + vol, 0.05, 1.95 + vol
    # How far the hair reaches down the sides; what is left of a bald head's hair stays above the ears.
    side_drop = -0.1 if i.bald else {"buzz": -0.35, "short": -0.2, "medium": 1.0, "long": 1.35}[i.hair_length]
    margin = 0.1 + vol  # room for the bumps of wavy hair
    box = pen.bounds(-hw - margin, cy - hh - margin, hw + margin, side_drop + 0.1, tile.size)
    if box[2] <= box[0] or box[3] <= box[1]:
        return
    pen = pen.moved(box[0], box[1])
    crop_size = (box[2] - box[0], box[3] - box[1])
    mask = Image.new("L", crop_size, 0)
    md = ImageDraw.Draw(mask)
    bumps = {"straight": 0, "wavy": 22, "curly": 34}[i.hair_texture] if i.hair_length != "buzz" else 0
    pen.ellipse(md, 0, cy, hw, hh, fill=255)
    if bumps:  # round bumps along the rim: wavy or curly hair
        bump = 0.1 + 0.5 * vol * (1.4 if i.hair_texture == "curly" else 1.0)
        for k in range(bumps):
            t = 2 * math.pi * k / bumps
            x, y = hw * math.cos(t), cy + hh * math.sin(t)
            if y < 0.3:
                pen.ellipse(md, x, y, bump, bump, fill=255)
    pen.rect(md, -9, side_drop, 9, 9, fill=0)
    if i.bald:
        pen.rect(md, -i.face_width * 0.72, -9, i.face_width * 0.72, 9, fill=0)
        pen.rect(md, -9, -9, 9, -0.95, fill=0)
    else:
        hairline = -0.55 if i.bangs else (-1.25 if i.receding else -1.02)
        opening_w = i.face_width * (0.8 if i.hair_length in ("medium", "long") else 0.9)
        pen.ellipse(md, fx * 0.5, hairline + 2.2, opening_w, 2.2, fill=0)
        if i.receding:
            for side in (-1, 1):
                pen.ellipse(md, side * 0.5 + fx * 0.5, -1.05, 0.26, 0.3, fill=0)
        if i.bangs:  # a ragged fringe over the forehead
            for k in range(9):
                x = -opening_w * 0.8 + k * opening_w * 1.6 / 8 + fx * 0.5
                pen.poly(md, [(x - 0.12, hairline - 0.05), (x + 0.12, hairline - 0.05), (x + 0.02, hairline + 0.09)],
                         fill=255)
    hair_layer = Image.new("RGB", crop_size, i.hair_rgb)
    hl = ImageDraw.Draw(hair_layer)
    strand_dark, strand_light = _scale_rgb(i.hair_rgb, 0.7), _mix_rgb(i.hair_rgb, (255, 255, 255), 0.18)
    if i.hair_length != "buzz":
        for k in range(26):
            x0 = float(rng.uniform(-hw, hw))
            colour = strand_dark if k % 3 else strand_light
            if i.hair_texture == "straight":
                pen.line(hl, [(x0 * 0.3, -2.0), (x0, -1.2), (x0 * 1.15, side_drop)], fill=colour, width=0.025)
            else:
                y0 = float(rng.uniform(-2.0, side_drop))
                pen.arc(hl, x0, y0, 0.12, 0.09, 0, 300, fill=colour, width=0.03)
    if i.hair_length == "buzz":  # skin shows through a buzz cut
        mask = mask.point(lambda v: v * 55 // 100)
    tile.paste(hair_layer, box[:2], mask)


def _draw_person_tile(i: Identity, n: Nuisance, unit: float, below_chin: float, rng: np.random.Generator):
    """One head-and-shoulders person on a transparent RGBA tile at `unit` pixels per face unit, shoulders reaching
    `below_chin` face units below the eyes; returns (tile, eye midpoint in tile pixels)."""
    half_w, top, bottom = 3.0, 2.7, max(below_chin, 2.4)
    width, height = int(2 * half_w * unit), int((top + bottom) * unit)
    pen = _FacePen((half_w * unit, top * unit), unit, n.rotation)
    tile = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(tile)
    skin, hair = i.skin, i.hair_rgb
    fx = n.yaw * 0.12  # how far the face's features slide sideways when the head turns

    # Hair behind the head (medium and long cuts fall behind the neck and shoulders).
    if not i.bald and i.hair_length in ("medium", "long"):
        drop = 1.1 if i.hair_length == "medium" else 2.4
        back = _scale_rgb(hair, 0.8)
        w = i.face_width + 0.25 + i.hair_volume
        pen.ellipse(draw, 0, (drop - 1.9) / 2, w, (drop + 1.9) / 2 + 0.1, fill=back, power=0.3)
        if i.hair_texture != "straight":
            for k in range(9):
                y = -0.6 + k * (drop + 0.6) / 8
                pen.ellipse(draw, -w, y, 0.18, 0.18, fill=back)
                pen.ellipse(draw, w, y, 0.18, 0.18, fill=back)

    # Shoulders and neck.
    shoulder_y = i.face_length + 0.75
    pen.ellipse(draw, 0, shoulder_y + 3.0, 2.6, 3.0, fill=n.clothes_rgb, power=0.3)
    pen.poly(draw, [(-0.75, shoulder_y), (0.75, shoulder_y), (0.0, shoulder_y + 0.7)], fill=_scale_rgb(skin, 0.8))
    pen.rect(draw, -0.48, 0.8, 0.48, shoulder_y, fill=_scale_rgb(skin, 0.78))

    # Ears, then the face, then its shading.
    for side in (-1, 1):
        pen.ellipse(draw, side * (i.face_width - 0.02) + fx * 0.3, 0.3, 0.16, 0.36, fill=_scale_rgb(skin, 0.9))
    outline = _head_outline(i)
    pen.poly(draw, [(x + fx * 0.2, y) for x, y in outline], fill=skin)
    tile = _shade_face(tile, i, n, pen, outline)
    draw = ImageDraw.Draw(tile)

    # Beard (under the lips, which are drawn next).
    beard_rgb = _scale_rgb(hair, 0.85)
    if i.beard in ("full", "stubble"):
        r = SHADE_REDUCTION
        beard_mask = Image.new("L", (max(1, tile.width // r), max(1, tile.height // r)), 0)
        small = pen.moved(factor=1.0 / r)
        bd = ImageDraw.Draw(beard_mask)
        small.poly(bd, [(x + fx * 0.2, y + (0.12 if y > 1.0 else 0.0)) for x, y in outline if y > 0.25],
                   fill=255 if i.beard == "full" else 120)
        small.ellipse(bd, fx, 0.42, i.face_width * 0.62, 0.42, fill=0)
        if i.beard == "stubble":  # a speckled shadow rather than a solid beard
            dots = rng.random((beard_mask.height, beard_mask.width)) < 0.6
            beard_mask = Image.fromarray((np.asarray(beard_mask) * dots).astype(np.uint8), "L")
        tile.paste(beard_rgb, (0, 0), beard_mask.resize(tile.size, Image.BILINEAR))
    if i.beard == "goatee":
        pen.ellipse(draw, fx, i.mouth_y + 0.33, 0.26, 0.28, fill=beard_rgb)
    if i.sideburns:
        for side in (-1, 1):
            x_out, x_in = side * (i.face_width - 0.02), side * (i.face_width - 0.2)
            pen.poly(draw, [(x_out, -0.4), (x_in, -0.4), (x_in, 0.55), (x_out - side * 0.03, 0.55)], fill=beard_rgb)

    # Eyes: white, iris, pupil, catch light, upper and lower lids.
    squint = 1.0 - 0.3 * n.smile
    lid_rgb = _scale_rgb(skin, 0.35)
    for side in (-1, 1):
        ex = side * i.eye_spacing + fx
        hw, hh = i.eye_size, i.eye_size * i.eye_open * squint
        pen.ellipse(draw, ex, 0, hw, hh, fill=(238, 236, 232))
        r = min(hh * 1.0, hw * 0.55)
        ix = ex + n.gaze * hw * 0.3 + fx * 0.3
        pen.ellipse(draw, ix, 0, r, r, fill=i.eye_rgb)
        pen.ellipse(draw, ix, 0, r * 0.45, r * 0.45, fill=(12, 10, 10))
        pen.ellipse(draw, ix + r * 0.3, -r * 0.3, r * 0.18, r * 0.18, fill=(250, 250, 250))
        pen.arc(draw, ex, 0.0, hw * 1.05, hh * 1.08, 190, 350, fill=lid_rgb, width=0.045)
        pen.arc(draw, ex, 0.0, hw, hh, 20, 160, fill=_scale_rgb(skin, 0.7), width=0.015)

    # Brows.
    for side in (-1, 1):
        ex = side * i.eye_spacing + fx
        by = -i.brow_height - 0.05 * n.smile
        inner, outer, peak = ex - side * 0.25, ex + side * 0.27, ex + side * 0.05
        arch, t = 0.04 + 0.13 * i.brow_arch, i.brow_thickness
        pen.poly(draw, [(inner, by - t * 0.5), (peak, by - arch - t * 0.55), (outer, by + 0.05 - t * 0.2),
                        (outer, by + 0.06), (peak, by - arch + t * 0.45), (inner, by + t * 0.5)], fill=i.brow_rgb)

    # Nose: alar curves, nostrils and (for pointy noses) a highlight on the bridge.
    nx, ny, nw = fx * 1.4, i.nose_length, i.nose_width
    for side in (-1, 1):
        start, end = (90, 270) if side < 0 else (-90, 90)
        pen.arc(draw, nx + side * nw * 0.78, ny - 0.04, nw * 0.38, 0.11, start, end, fill=_scale_rgb(skin, 0.6),
                width=0.03)
        pen.ellipse(draw, nx + side * nw * 0.45, ny + 0.04, 0.055, 0.03, fill=_scale_rgb(skin, 0.32))
    if i.nose_pointy:
        pen.ellipse(draw, nx, ny - 0.12, 0.05, 0.18, fill=_mix_rgb(skin, (255, 255, 255), 0.25))

    # Mouth: corners rise with the smile; an open mouth shows a dark inside and teeth.
    mx, my, mw = fx * 1.2, i.mouth_y, i.mouth_width * (1 + 0.12 * n.smile)
    lift, gap = 0.12 * n.smile, 0.18 * n.mouth_open
    xs = np.linspace(-mw, mw, 13)
    mouth_line = [(mx + x, my - lift * (x / mw) ** 2 + 0.04 * n.smile * (1 - (x / mw) ** 2)) for x in xs]
    upper = [(mx + x, my - 0.07 - 0.04 * (1 - abs(x) / mw) - lift * (x / mw) ** 2 + 0.03 * math.exp(-(x / 0.08) ** 2))
             for x in xs]
    lower_edge = [(x, y + gap) for x, y in mouth_line]
    lower = [(mx + x, my + gap + i.lip_fullness * (1 - (x / mw) ** 2) ** 0.7 - lift * (x / mw) ** 2) for x in xs]
    if gap > 0.01:
        pen.poly(draw, mouth_line + lower_edge[::-1], fill=(70, 22, 25))
        teeth = [(x, y + gap * 0.45) for x, y in mouth_line]
        pen.poly(draw, mouth_line[2:-2] + teeth[2:-2][::-1], fill=(235, 232, 220))
    pen.poly(draw, upper + mouth_line[::-1], fill=_scale_rgb(i.lip_rgb, 0.9))
    pen.poly(draw, lower_edge + lower[::-1], fill=i.lip_rgb)
    pen.line(draw, mouth_line, fill=_scale_rgb(i.lip_rgb, 0.35), width=0.03)
    if i.beard in ("mustache", "goatee", "full"):
        pen.poly(draw, [(mx - mw - 0.06, my + 0.02), (mx - 0.2, my - 0.24), (mx, my - 0.2), (mx + 0.2, my - 0.24),
                        (mx + mw + 0.06, my + 0.02), (mx + mw * 0.6, my - 0.08), (mx - mw * 0.6, my - 0.08)],
                 fill=_scale_rgb(hair, 0.8))

    if i.earrings:
        for side in (-1, 1):
            pen.ellipse(draw, side * (i.face_width + 0.02) + fx * 0.3, 0.72, 0.06, 0.06, fill=(225, 190, 80))

    _draw_hair_cap(tile, i, n, pen, rng)

    # Glasses over everything else on the face.
    if i.glasses != "none":
        g = i.glasses_rgb
        for side in (-1, 1):
            ex = side * i.eye_spacing + fx
            pen.arc(draw, ex, 0.02, i.eye_size + 0.1, 0.21, 0, 360, fill=g, width=0.035,
                    power=0.3 if i.glasses == "rect" else 1.0)
            pen.line(draw, [(ex + side * (i.eye_size + 0.1), -0.02), (side * i.face_width + fx * 0.2, 0.0)],
                     fill=g, width=0.035)
        pen.arc(draw, fx, 0.0, i.eye_spacing - i.eye_size - 0.1, 0.08, 200, 340, fill=g, width=0.035)

    return tile, (pen.ox, pen.oy)


def paste_person(canvas: Image.Image, identity: Identity, nuisance: Nuisance) -> tuple[int, int, int, int]:
    """Draw `identity` into RGB `canvas` (in place) where `nuisance` puts the face; returns the face box
    (x0, y0, x1, y1) in pixels, brows to chin and cheek to cheek."""
    width, height = canvas.size
    rng = np.random.default_rng(nuisance.seed)
    interocular = nuisance.face_scale * width
    unit = interocular / (2 * identity.eye_spacing)  # output pixels per face unit
    eye_x, eye_y = nuisance.face_x * width, nuisance.face_y * height
    below = (height - eye_y) / unit + 0.5
    tile, (tx, ty) = _draw_person_tile(identity, nuisance, unit * SUPERSAMPLE, below, rng)
    # Downsample with premultiplied alpha, so the transparent surround does not bleed dark fringes.
    small = tile.convert("RGBa").reduce(SUPERSAMPLE).convert("RGBA")
    x0, y0 = int(round(eye_x - tx / SUPERSAMPLE)), int(round(eye_y - ty / SUPERSAMPLE))
    canvas.paste(small, (x0, y0), small)
    fw = identity.face_width * unit
    return (int(eye_x - fw), int(eye_y - (identity.brow_height + 0.25) * unit),
            int(eye_x + fw), int(eye_y + identity.face_length * unit))


def draw_background(size: tuple[int, int], nuisance: Nuisance, scene: bool = False) -> Image.Image:
    """A wall with a soft gradient and `nuisance.clutter` out-of-focus objects (drawn at 1/4 size, enlarged);
    `scene` adds a floor, a window and furniture for in-the-wild photos."""
    rng = np.random.default_rng([nuisance.seed, 7])
    width, height = size
    w, h = max(2, width // 4), max(2, height // 4)
    base = np.array(nuisance.background_rgb, np.float32)
    ramp = np.linspace(1.08, 0.88, h, dtype=np.float32)[:, None, None]
    image = Image.fromarray(np.clip(base * ramp * np.ones((1, w, 1), np.float32), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    if scene:
        floor_y = h * rng.uniform(0.6, 0.85)
        draw.rectangle([0, floor_y, w, h], fill=tuple(int(c) for c in rng.integers(40, 160, size=3)))
        wx = rng.uniform(0.05, 0.7) * w
        draw.rectangle([wx, 0.08 * h, wx + 0.25 * w, 0.45 * h], fill=(200, 220, 240))
        draw.line([wx + 0.125 * w, 0.08 * h, wx + 0.125 * w, 0.45 * h], fill=(90, 80, 70), width=max(1, w // 120))
    for _ in range(nuisance.clutter + (6 if scene else 0)):
        colour = tuple(int(c) for c in rng.integers(0, 255, size=3))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        bw, bh = rng.uniform(0.03, 0.25) * w, rng.uniform(0.03, 0.25) * h
        kind, box = rng.integers(3), [x, y, x + bw, y + bh]
        if kind < 2:  # a box or a blob
            (draw.rectangle, draw.ellipse)[kind](box, fill=colour)
        else:
            draw.line(box, fill=colour, width=max(1, int(min(bw, bh) * 0.1)))
    return image.filter(ImageFilter.GaussianBlur(0.8)).resize(size, Image.BILINEAR)


def finish_photo(image: Image.Image, nuisance: Nuisance) -> Image.Image:
    """Apply the camera: lighting gradient, exposure, colour temperature, blur and sensor noise."""
    width, height = image.size
    if nuisance.blur > 0.3:  # below a third of a pixel a blur is invisible and costs as much as a large one
        image = image.filter(ImageFilter.GaussianBlur(nuisance.blur))
    arr = np.asarray(image, dtype=np.float32)
    angle = math.radians(nuisance.light_angle)
    xs = (np.arange(width, dtype=np.float32) / width - 0.5) * math.cos(angle)
    ys = (np.arange(height, dtype=np.float32) / height - 0.5) * math.sin(angle)
    gain = nuisance.brightness * (1.0 + nuisance.light_strength * (ys[:, None] + xs[None, :]))
    tint = np.array([1 + 0.08 * nuisance.warmth, 1.0, 1 - 0.08 * nuisance.warmth], np.float32)
    arr *= gain[..., None] * tint
    if nuisance.noise > 0:
        noise = np.random.default_rng([nuisance.seed, 11]).standard_normal(arr.shape, dtype=np.float32)
        arr += noise * np.float32(nuisance.noise)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def render_portrait(identity: Identity, nuisance: Nuisance, size: tuple[int, int] = ALIGNED_SIZE) -> Image.Image:
    """One photo of `identity` as an RGB image of `size` = (width, height) pixels; JPEG is applied on saving
    (`encode_jpeg(image, nuisance.jpeg_quality)`)."""
    image = draw_background(size, nuisance)
    paste_person(image, identity, nuisance)
    return finish_photo(image, nuisance)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes of `image` at `quality` (1..95), deterministic for a given Pillow/libjpeg."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()
