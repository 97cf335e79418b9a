"""What the web app does with one photo, as plain functions (`app.ui` puts them on a page).

detect (MTCNN) -> stage 1's square crop -> classifier probability -> dlib distance to the target's centroid ->
VAE reconstruction -> morph GIF from the photo to the target (base and fine-tuned VAE side by side).
Models are found in the last demo's outputs (`demo_paths`) unless paths are given; `load_models` loads them once.
"""
from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.errors import InputError
from common.images import is_image_file, to_pil

MAX_UPLOAD_BYTES = 15 * 1024 * 1024  # larger files are refused before they are decoded
MAX_PIXELS = 40_000_000  # width x height read from the header; more is refused (decompression bombs)
MORPH_STEPS = 6  # in-between frames from the photo to the target (and back: the GIF loops)
MORPH_SIZE = 96  # GIF frame edge per model, pixels
DEFAULT_THREADS = 1  # torch CPU threads: one photo at a time gains nothing from more (benchmarks/bench_app.py)
MIN_FACE_SIZE = 40  # smallest face searched for in the 512 px detection view, as in the demo's stage 1
BOXES_SIDE = 800  # the photo with its face boxes is sent to the page at most this many pixels on its longer side
# Where MTCNN's eye landmarks sit in the VAE's training frames (the 148 px centre crop of an aligned 178x218
# portrait), measured on 114 demo haystack portraits: eyes 0.258 of the frame apart, their midpoint at (0.506, 0.513)
# of its width and height. The VAE sees a photo's face aligned the same way (a test checks it on fresh portraits).
FRAME_EYE_DISTANCE = 0.258
FRAME_EYES_AT = (0.506, 0.513)
DEMO_HINT = "run `make demo` first, or pass the model paths (see `python -m app serve --help`)"


class PhotoError(InputError):
    """A photo the app cannot use (too big, unreadable); the message is shown to the user as is."""


@dataclass
class ModelPaths:
    """Where the app's models live. `vae_finetuned` is optional."""

    classifier: Path  # a classifier run's best.pt (its metrics.json next to it gives the threshold)
    scorer: Path  # embedding_scorer.json of `python -m classification embed-scorer`
    vae: Path  # the base VAE's checkpoint.pt
    target_faces: Path  # the target's stage-1 crops: the morph's end point
    target_name: str = "the target"
    vae_finetuned: Path | None = None  # the VAE fine-tuned on the target identity
    examples: list[Path] = field(default_factory=list)  # demo photos offered on the page

    def check(self) -> "ModelPaths":
        """Raise one `InputError` naming every missing file, with how to make them."""
        wanted = {"classifier": self.classifier, "embedding scorer": self.scorer, "VAE": self.vae,
                  "target faces": self.target_faces, "fine-tuned VAE": self.vae_finetuned}
        missing = [f"{name} {path}" for name, path in wanted.items() if path is not None and not Path(path).exists()]
        if missing:
            raise InputError(f"missing {'; '.join(missing)}: {DEMO_HINT}")
        return self


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path} ({type(error).__name__}): {DEMO_HINT}") from None


def demo_paths(root: str | Path = ".", summary: str | Path | None = None) -> ModelPaths:
    """The models of the last demo under `root`, named by `results/demo/demo_summary.json` (or `summary`)."""
    root = Path(root)
    results, runs, data = root / "results" / "demo", root / "runs" / "demo", root / "data" / "demo"
    info = _read_json(Path(summary) if summary else results / "demo_summary.json")
    stages, world = info.get("stages", {}), info.get("world", {})
    classification = stages.get("classification", {})
    target = classification.get("target") or stages.get("scraping", {}).get("target")
    if not target or classification.get("best_k") is None:
        raise InputError(f"the demo summary names no target or best classifier: {DEMO_HINT}")
    identity = stages.get("vae", {}).get("picked_identity", world.get("target_identity"))
    finetuned = runs / "vae" / f"finetune_{identity}" / "checkpoint.pt"
    return ModelPaths(
        classifier=runs / "classification" / f"k{classification['best_k']}" / "best.pt",
        scorer=results / "classification" / "embedding" / "embedding_scorer.json",
        vae=runs / "vae" / "base" / "checkpoint.pt",
        target_faces=data / "faces" / target,
        target_name=world.get("target_name") or target.replace("_", " ").title(),
        vae_finetuned=finetuned if identity is not None and finetuned.exists() else None,
        examples=demo_examples(data / "raw", target),
    )


def demo_examples(raw: Path, target: str, n: int = 6) -> list[Path]:
    """A few scraped photos to try: half of the target's, the rest one per other person (sorted names)."""
    if not Path(raw).is_dir():
        return []
    photos = {p.name: sorted(f for f in p.iterdir() if is_image_file(f)) for p in sorted(Path(raw).iterdir())
              if p.is_dir()}
    picks = photos.get(target, [])[: max(1, n // 2)]
    for name, files in photos.items():
        if name != target and files and len(picks) < n:
            picks.append(files[0])
    return picks


@dataclass
class Models:
    """Everything an answer needs, loaded once (eval mode, CPU)."""

    paths: ModelPaths
    detector: object
    classifier: torch.nn.Module
    classifier_size: int
    classifier_threshold: float
    scorer: object  # identity.embed.IdentityScorer
    vae: torch.nn.Module
    vae_finetuned: torch.nn.Module | None
    target_image: torch.Tensor  # [3, S, S] in [0, 1]: the target's most typical photo (nearest the mean latent)


def typical_target_image(vae, folder: Path, finetuned: dict | None = None, max_faces: int = 64) -> torch.Tensor:
    """The morph's end point: the target photo whose VAE mean is nearest the mean of all of them. The photos are
    those the fine-tuned VAE was trained on (framed like the VAE's data) when its checkpoint is given, else the
    target's stage-1 crops in `folder`."""
    from vae.celeba import open_image_dataset
    from vae.morph import encode_means

    config = (finetuned or {}).get("config", {})
    if config.get("data_root") and config.get("identities") and Path(config["data_root"]).is_dir():
        dataset = open_image_dataset(config["data_root"], "all", vae.image_size, identities=config["identities"])
        images = [dataset[k] for k in range(min(len(dataset), max_faces))]
    else:
        files = sorted(f for f in Path(folder).iterdir() if is_image_file(f))[:max_faces] if Path(folder).is_dir() else []
        images = [to_vae_input(Image.open(f).convert("RGB"), vae.image_size) for f in files]
    if not images:
        raise InputError(f"target faces folder {folder} holds no face crops: {DEMO_HINT}")
    images = torch.stack(images)
    means = encode_means(vae, images)
    return images[int(torch.cdist(means, means.mean(0, keepdim=True)).squeeze(1).argmin())]


def load_models(paths: ModelPaths) -> Models:
    """Load every model of `paths` on the CPU, then answer the target's crop once so that the first real request
    does not pay for torch's and dlib's first-call set-up."""
    from classification.train import load_classifier
    from identity.embed import IdentityScorer
    from scraping.faces import CropConfig, build_detector
    from vae.train import load_vae

    paths.check()
    classifier, checkpoint = load_classifier(paths.classifier, "cpu")
    metrics = paths.classifier.parent / "metrics.json"  # the threshold chosen on validation, else 0.5
    threshold = _read_json(metrics).get("threshold") if metrics.is_file() else None
    vae = load_vae(paths.vae, "cpu")[0]
    finetuned, finetuned_checkpoint = load_vae(paths.vae_finetuned, "cpu") if paths.vae_finetuned else (None, None)
    models = Models(paths=paths, detector=build_detector(CropConfig(min_face_size=MIN_FACE_SIZE, device="cpu")),
                    classifier=classifier, classifier_size=int(checkpoint.get("config", {}).get("image_size", 160)),
                    classifier_threshold=0.5 if threshold is None else float(threshold),
                    scorer=IdentityScorer.load(paths.scorer), vae=vae,
                    vae_finetuned=finetuned,
                    target_image=typical_target_image(vae, paths.target_faces, finetuned_checkpoint))
    picture = to_pil(models.target_image).resize((160, 160))
    find_faces(models, picture)
    answer_photo(models, None, faces=[(picture, to_pil(models.target_image))])
    return models


def read_photo(path: str | Path, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an uploaded photo to upright RGB, or raise `PhotoError` with a message for the user (never the path).
    The file size is checked before anything is decoded, then the pixel count in the header (decompression bombs)."""
    from scraping.faces import load_rgb

    path = Path(path)
    try:
        if not path.is_file():
            raise PhotoError("it is not a file (gone already, or a folder)")
        size = path.stat().st_size
        if size > max_bytes:
            raise PhotoError(f"the file is too big ({size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB)")
        if size == 0:
            raise PhotoError("the file is empty")
        with Image.open(path) as header:
            width, height = header.size
        if width * height > max_pixels:
            raise PhotoError(f"the image is too large ({width} x {height} pixels; the limit is "
                             f"{max_pixels / 1e6:.0f} megapixels)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return load_rgb(path)
    except PhotoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError("the image is too large to decode safely (a decompression bomb?)") from None
    except (OSError, ValueError, SyntaxError) as error:  # UnidentifiedImageError, truncated data, bad headers
        raise PhotoError(f"the file is not a readable image ({type(error).__name__})") from None


def find_faces(models: Models, image: Image.Image) -> list:
    """MTCNN faces at or above stage 1's probability threshold, largest first (`scraping.faces.Face`)."""
    from scraping.faces import CropConfig, detect_faces_single, select_faces

    config = CropConfig(keep="all", min_face_size=MIN_FACE_SIZE)  # stage 1's settings, every face kept
    return select_faces(detect_faces_single(image, models.detector, config, downscale=True), config)


def boxes_picture(image: Image.Image, faces: list, side: int = BOXES_SIDE) -> Image.Image:
    """The photo at display size (longer side at most `side` pixels) with every face's box drawn on it."""
    from dataclasses import replace

    from scraping.faces import draw_faces

    scale = min(1.0, side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.BILINEAR, reducing_gap=2.0)
        faces = [replace(f, box=tuple(v * scale for v in f.box), landmarks=tuple(v * scale for v in f.landmarks))
                 for f in faces]
    return draw_faces(image, faces, line=max(2, max(image.size) // 200))


def to_vae_input(crop: Image.Image, size: int) -> torch.Tensor:
    """A crop as the VAE's input: [3, size, size] floats in [0, 1]."""
    array = np.asarray(crop.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def vae_frame(image: Image.Image, face, size: int) -> Image.Image:
    """`face` aligned like the VAE's training images: scaled, turned and shifted so that its eyes land where they
    are in those (`FRAME_EYES_AT`), at `size` pixels; parts outside the photo are black, as in the VAE's loader."""
    left_eye, right_eye = np.asarray(face.landmarks[:2], float), np.asarray(face.landmarks[2:4], float)
    (dx, dy), middle = right_eye - left_eye, (left_eye + right_eye) / 2
    work = 4 * size  # drawn at 4x, then shrunk: no aliasing from a large photo
    scale = np.hypot(dx, dy) / FRAME_EYE_DISTANCE / work  # photo pixels per frame pixel
    a, b, d, e = np.array([dx, -dy, dy, dx]) / np.hypot(dx, dy) * scale  # rotation by the eye line's angle
    u, v = FRAME_EYES_AT[0] * work, FRAME_EYES_AT[1] * work
    affine = (a, b, middle[0] - a * u - b * v, d, e, middle[1] - d * u - e * v)
    return image.transform((work, work), Image.AFFINE, affine, Image.BILINEAR).resize((size, size), Image.BOX)


@torch.inference_mode()
def classify_crop(models: Models, crop: Image.Image) -> float:
    """The classifier's probability that the crop shows the target (its evaluation transform)."""
    from classification.data import make_transforms

    device = next(models.classifier.parameters()).device
    x = make_transforms(models.classifier_size, train=False)(crop).unsqueeze(0).to(device)
    return float(torch.sigmoid(models.classifier(x)).squeeze())


def embedding_distance(models: Models, crop: Image.Image) -> dict:
    """dlib distance of the crop to the target's centroid and the scorer's verdict: {distance, threshold (None for
    a linear scorer), score, verdict: "same person" | "someone else" | "no embedding"}."""
    from identity.embed import VERIFY_CENTROID_DISTANCE, embed_images

    scorer = models.scorer
    vector = embed_images([crop], backend=scorer.backend, face_box=scorer.face_box, num_jitters=scorer.num_jitters)
    if np.isnan(vector).any():
        return {"distance": None, "threshold": None, "score": None, "verdict": "no embedding"}
    distance = float(np.linalg.norm(vector[0].astype(np.float64) - scorer.centroid))
    score = float(scorer.score(vector)[0])
    if scorer.threshold is not None:
        same = score >= scorer.threshold
        threshold = -float(scorer.threshold) if scorer.method == "centroid" else None
    else:
        threshold = VERIFY_CENTROID_DISTANCE[scorer.backend]
        same = distance < threshold
    return {"distance": distance, "threshold": threshold, "score": score,
            "verdict": "same person" if same else "someone else"}


def reconstruct(models: Models, frame: Image.Image) -> Image.Image:
    """The base VAE's reconstruction (decoded posterior mean) of a face's `vae_frame`, as a PIL image."""
    from vae.morph import decode_latents, encode_means

    x = to_vae_input(frame, models.vae.image_size)
    return to_pil(decode_latents(models.vae, encode_means(models.vae, x[None]))[0])


def morph_gif_bytes(models: Models, frame: Image.Image, scratch: Path) -> bytes:
    """A looping GIF (bytes, written in `scratch`) from the photo to the target and back: base VAE and, when given,
    the fine-tuned one side by side."""
    from vae.morph import morph_gif, side_by_side_morph_gif

    roster = torch.stack([to_vae_input(frame, models.vae.image_size), models.target_image])
    out = Path(scratch) / "morph.gif"
    if models.vae_finetuned is not None:
        side_by_side_morph_gif(models.vae, models.vae_finetuned, roster, out, MORPH_STEPS, size=MORPH_SIZE,
                               labels=("base", "fine-tuned"))
    else:
        morph_gif(models.vae, roster, out, MORPH_STEPS, size=MORPH_SIZE)
    return out.read_bytes()


@dataclass
class Answer:
    """Everything the page shows for one photo and one chosen face."""

    message: str
    n_faces: int = 0
    face_index: int = 0
    boxes: Image.Image | None = None  # the photo at display size with every face's box drawn (None: unchanged)
    crop: Image.Image | None = None
    probability: float | None = None
    classifier_threshold: float | None = None
    embedding: dict = field(default_factory=dict)
    reconstruction: Image.Image | None = None
    morph_gif: bytes | None = None
    timings: dict = field(default_factory=dict)  # seconds per step
    faces: list = field(default_factory=list)  # every face's (160 px crop, VAE frame), largest face first


def face_choices(n_faces: int) -> list[str]:
    """The labels of the face picker, largest face first."""
    return [f"face {k + 1}" + (" (largest)" if k == 0 else "") for k in range(n_faces)]


def faces_message(n_faces: int, face_index: int) -> str:
    if n_faces == 1:
        return "1 face found."
    return (f"{n_faces} faces found: showing face {face_index + 1}"
            f"{' (the largest)' if face_index == 0 else ''}; pick another one with the face selector.")


def answer_photo(models: Models, image: Image.Image | None, face_index: int = 0, faces: list | None = None,
                 with_morph: bool = True, scratch_root: str | Path | None = None) -> Answer:
    """Run the whole pipeline on a decoded photo; `faces` (an earlier answer's, same photo) skips the detection and
    `boxes` stays None. Scratch files go to a temporary folder (under `scratch_root`) removed before returning."""
    from scraping.faces import CropConfig, crop_face

    timings, started = {}, time.perf_counter()

    def timed(name: str, step, *args):
        begin = time.perf_counter()
        result = step(*args)
        timings[name] = round(time.perf_counter() - begin, 4)
        return result

    boxes = None
    if faces is None:
        found = timed("detect", find_faces, models, image)
        size = models.vae.image_size
        boxes, faces = timed("crop", lambda: (boxes_picture(image, found), [
            (crop_face(image, face, CropConfig()), vae_frame(image, face, size)) for face in found]))
    if not faces:
        timings["total"] = round(time.perf_counter() - started, 4)
        return Answer("No face found in this photo: try one where a face is clearly visible, seen from the front.",
                      boxes=boxes, timings=timings)
    face_index = min(max(0, int(face_index)), len(faces) - 1)
    crop, frame = faces[face_index]
    probability = timed("classify", classify_crop, models, crop)
    embedding = timed("embed", embedding_distance, models, crop)
    reconstruction = timed("reconstruct", reconstruct, models, frame)
    gif = None
    if with_morph:
        with tempfile.TemporaryDirectory(prefix="morph-", dir=scratch_root) as scratch:
            gif = timed("morph", morph_gif_bytes, models, frame, Path(scratch))
    timings["total"] = round(time.perf_counter() - started, 4)
    return Answer(faces_message(len(faces), face_index), len(faces), face_index, boxes, crop, probability,
                  models.classifier_threshold, embedding, reconstruction, gif, timings, list(faces))


def verdict_text(models: Models, answer: Answer) -> str:
    """The "is this the celebrity?" lines of an answer, in Markdown."""
    if answer.crop is None:
        return ""
    name, emb = models.paths.target_name, answer.embedding
    probability, threshold = answer.probability, answer.classifier_threshold
    lines = [f"**Classifier (MobileNetV2):** P({name}) = {probability:.2f}, threshold {threshold:.2f} → "
             f"**{'yes' if probability >= threshold else 'no'}**"]
    if emb.get("distance") is None:
        lines.append("**Face embedding (dlib):** no embedding for this crop.")
    else:
        limit = f", threshold {emb['threshold']:.3f}" if emb.get("threshold") is not None else ""
        lines.append(f"**Face embedding (dlib):** distance {emb['distance']:.3f} to {name}'s centroid{limit} → "
                     f"**{emb['verdict']}**")
    says = "is" if emb.get("verdict") == "same person" else "is not"
    lines.append(f"**Verdict:** the face embedding says this {says} {name}.")
    return "\n\n".join(lines)


def add_model_arguments(parser) -> None:
    """The flags naming the app's models; each defaults to the last demo's file."""
    for flag, dest, what in (("--summary", "summary", "the demo summary naming the target and the best run"),
                             ("--classifier-checkpoint", "classifier", "classifier best.pt"),
                             ("--scorer-checkpoint", "scorer", "embedding_scorer.json"),
                             ("--vae-checkpoint", "vae", "base VAE checkpoint.pt"),
                             ("--finetuned-checkpoint", "vae_finetuned", "VAE fine-tuned on the target"),
                             ("--target-faces", "target_faces", "folder of the target's face crops")):
        parser.add_argument(flag, dest=dest, default=None, help=f"{what} (default: the last demo's)")
    parser.add_argument("--target-name", default=None, help="the name shown on the page")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")


def paths_from_args(args) -> ModelPaths:
    """`ModelPaths` from the flags; the demo's files fill in whatever was not given. Every path is checked."""
    required = {key: getattr(args, key) for key in ("classifier", "scorer", "vae", "target_faces")}
    if all(required.values()) and args.summary is None:
        paths = ModelPaths(**{k: Path(v) for k, v in required.items()},
                           target_name=Path(args.target_faces).name.replace("_", " ").title())
    else:
        paths = demo_paths(summary=args.summary)
    for key in (*required, "vae_finetuned"):
        if getattr(args, key):
            setattr(paths, key, Path(getattr(args, key)))
    if args.target_name:
        paths.target_name = args.target_name
    return paths.check()
