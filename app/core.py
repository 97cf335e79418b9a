"""What the web app does with one photo, as plain functions (`app.ui` puts them on a page): MTCNN faces, stage 1's
crop, the classifier's probability, the dlib distance to the target, the VAE's reconstruction and morph GIF."""
from __future__ import annotations

import contextlib
import json
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from common.errors import InputError
from common.images import is_image_file, to_pil

MAX_UPLOAD_BYTES = 15 * 1024 * 1024  # larger files are refused before they are decoded
MAX_PIXELS = 40_000_000  # width x height read from the header; more is refused (decompression bombs)
MORPH_STEPS = 6  # in-between frames from the photo to the target (and back: the GIF loops)
MORPH_SIZE = 96  # GIF frame edge per model, pixels
DEFAULT_THREADS = 1  # torch CPU threads: one photo at a time gains nothing from more (benchmarks/bench_app.py)
MIN_FACE_SIZE = 40  # smallest face searched for in the 512 px detection view, as in the demo's stage 1
BOXES_SIDE = 800  # the photo with its face boxes is sent to the page at most this many pixels on its longer side
FRAME_EYE_DISTANCE = 0.258  # MTCNN's eyes in the VAE's training frames are this fraction of the frame apart,
FRAME_EYES_AT = (0.506, 0.513)  # their midpoint at these fractions of its width and height
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


def demo_paths(root: str | Path = ".") -> ModelPaths:
    """The models of the last demo under `root`, named by its `results/demo/demo_summary.json`."""
    results, runs, data = (Path(root) / folder / "demo" for folder in ("results", "runs", "data"))
    info = _read_json(results / "demo_summary.json")
    stages, world = info.get("stages", {}), info.get("world", {})
    classification = stages.get("classification", {})
    target = classification.get("target") or stages.get("scraping", {}).get("target")
    if not target or classification.get("best_k") is None:
        raise InputError(f"the demo summary names no target or best classifier: {DEMO_HINT}")
    identity = stages.get("vae", {}).get("picked_identity", world.get("target_identity"))
    finetuned = runs / "vae" / f"finetune_{identity}" / "checkpoint.pt"
    # photos to try on the page: three of the target's, then one per other person (sorted names), six at most
    photos = {p.name: sorted(f for f in p.glob("*") if is_image_file(f)) for p in sorted((data / "raw").glob("*"))}
    picks = photos.get(target, [])[:3]
    others = [files[0] for name, files in photos.items() if name != target and files]
    return ModelPaths(
        classifier=runs / "classification" / f"k{classification['best_k']}" / "best.pt",
        scorer=results / "classification" / "embedding" / "embedding_scorer.json",
        vae=runs / "vae" / "base" / "checkpoint.pt",
        target_faces=data / "faces" / target,
        target_name=world.get("target_name") or target.replace("_", " ").title(),
        vae_finetuned=finetuned if identity is not None and finetuned.exists() else None,
        examples=picks + others[: 6 - len(picks)],
    )


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
    target_image: torch.Tensor  # [3, S, S] in [0, 1]: the target's most typical photo


def typical_target_image(vae, folder: Path, finetuned: dict | None = None, max_faces: int = 64) -> torch.Tensor:
    """The morph's end point: the target photo whose VAE mean is nearest the mean of all: among the fine-tuned VAE's
    training photos when its checkpoint is given, else the target's stage-1 crops in `folder`."""
    from vae.celeba import open_image_dataset
    from vae.morph import encode_means

    config = (finetuned or {}).get("config", {})
    if config.get("data_root") and config.get("identities") and Path(config["data_root"]).is_dir():
        dataset = open_image_dataset(config["data_root"], "all", vae.image_size, identities=config["identities"])
        images = [dataset[k] for k in range(min(len(dataset), max_faces))]
    else:
        files = sorted(f for f in Path(folder).glob("*") if is_image_file(f))[:max_faces]
        images = [to_vae_input(Image.open(f).convert("RGB"), vae.image_size) for f in files]
    if not images:
        raise InputError(f"target faces folder {folder} holds no face crops: {DEMO_HINT}")
    images = torch.stack(images)
    means = encode_means(vae, images)
    return images[int(torch.cdist(means, means.mean(0, keepdim=True)).squeeze(1).argmin())]


def load_models(paths: ModelPaths) -> Models:
    """Load every model of `paths` on the CPU, then answer the target's crop once (torch's and dlib's set-up)."""
    from classification.train import load_classifier
    from identity.embed import IdentityScorer
    from scraping.faces import CropConfig, build_detector
    from vae.train import load_vae

    paths.check()
    classifier, checkpoint = load_classifier(paths.classifier, "cpu")
    metrics = paths.classifier.parent / "metrics.json"  # the threshold chosen on validation, else 0.5
    threshold = (_read_json(metrics) if metrics.is_file() else {}).get("threshold")
    vae = load_vae(paths.vae, "cpu")[0]
    finetuned, finetuned_checkpoint = load_vae(paths.vae_finetuned, "cpu") if paths.vae_finetuned else (None, None)
    models = Models(paths=paths, detector=build_detector(CropConfig(min_face_size=MIN_FACE_SIZE, device="cpu")),
                    classifier=classifier, classifier_size=int(checkpoint.get("config", {}).get("image_size", 160)),
                    classifier_threshold=0.5 if threshold is None else float(threshold),
                    scorer=IdentityScorer.load(paths.scorer), vae=vae, vae_finetuned=finetuned,
                    target_image=typical_target_image(vae, paths.target_faces, finetuned_checkpoint))
    picture = to_pil(models.target_image).resize((160, 160))
    find_faces(models, picture)
    answer_photo(models, None, faces=[(picture, to_pil(models.target_image))])
    return models


def read_photo(path: str | Path, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an uploaded photo to upright RGB, or raise `PhotoError` with a message for the user (never the path).
    The file size is checked before anything is decoded, then the header's pixel count (decompression bombs)."""
    from scraping.faces import load_rgb

    size = Path(path).stat().st_size if Path(path).is_file() else None
    if size is None:
        raise PhotoError("it is not a file (gone already, or a folder)")
    if size > max_bytes:
        raise PhotoError(f"the file is too big ({size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB)")
    if size == 0:
        raise PhotoError("the file is empty")
    try:
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
    from scraping.faces import draw_faces

    scale = min(1.0, side / max(image.size))
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.BILINEAR, reducing_gap=2.0)
    faces = [replace(f, box=tuple(v * scale for v in f.box), landmarks=tuple(v * scale for v in f.landmarks))
             for f in faces]
    return draw_faces(image, faces, line=max(2, max(image.size) // 200))


def to_vae_input(crop: Image.Image, size: int) -> torch.Tensor:
    """A crop as the VAE's input: [3, size, size] floats in [0, 1]."""
    return to_tensor(crop.convert("RGB").resize((size, size), Image.BILINEAR))


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


def embedding_distance(models: Models, crop: Image.Image) -> dict:
    """{distance (dlib, to the target's centroid), threshold (None for a linear scorer), score, verdict: "same
    person" | "someone else" | "no embedding"}."""
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


@dataclass
class Answer:
    """Everything the page shows for one photo and one chosen face."""

    message: str
    n_faces: int = 0
    face_index: int = 0
    boxes: Image.Image | None = None  # the photo with its face boxes, display size (None: unchanged)
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


@torch.inference_mode()
def answer_photo(models: Models, image: Image.Image | None, face_index: int = 0, faces: list | None = None,
                 with_morph: bool = True, scratch_root: str | Path | None = None) -> Answer:
    """Run the whole pipeline on a decoded photo; `faces` (an earlier answer's, same photo) skips the detection and
    `boxes` stays None. Scratch files go to a temporary folder under `scratch_root`, removed before returning."""
    from classification.data import make_transforms
    from scraping.faces import CropConfig, crop_face
    from vae.figures import reconstruct
    from vae.morph import morph_gif, side_by_side_morph_gif

    timings, started = {}, time.perf_counter()

    @contextlib.contextmanager
    def timed(name: str):
        begin = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - begin, 4)

    boxes = None
    if faces is None:
        with timed("detect"):
            found = find_faces(models, image)
        with timed("crop"):
            boxes = boxes_picture(image, found)
            faces = [(crop_face(image, face, CropConfig()), vae_frame(image, face, models.vae.image_size))
                     for face in found]
    if not faces:
        timings["total"] = round(time.perf_counter() - started, 4)
        return Answer("No face found in this photo: try one where a face is clearly visible, seen from the front.",
                      boxes=boxes, timings=timings)
    face_index = min(max(0, int(face_index)), len(faces) - 1)
    crop, frame = faces[face_index]
    with timed("classify"):  # the classifier's probability that the crop shows the target
        x = make_transforms(models.classifier_size, train=False)(crop)[None]
        probability = float(torch.sigmoid(models.classifier(x)).squeeze())
    with timed("embed"):
        embedding = embedding_distance(models, crop)
    with timed("reconstruct"):  # the base VAE's decoded posterior mean
        reconstruction = to_pil(reconstruct(models.vae, to_vae_input(frame, models.vae.image_size)[None])[0])
    gif = None
    if with_morph:  # photo -> target -> photo, by the base VAE and the fine-tuned one side by side
        with tempfile.TemporaryDirectory(prefix="morph-", dir=scratch_root) as scratch, timed("morph"):
            roster = torch.stack([to_vae_input(frame, models.vae.image_size), models.target_image])
            out = Path(scratch) / "morph.gif"
            if models.vae_finetuned is None:
                morph_gif(models.vae, roster, out, MORPH_STEPS, size=MORPH_SIZE)
            else:
                side_by_side_morph_gif(models.vae, models.vae_finetuned, roster, out, MORPH_STEPS, size=MORPH_SIZE,
                                       labels=("base", "fine-tuned"))
            gif = out.read_bytes()
    timings["total"] = round(time.perf_counter() - started, 4)
    message = "1 face found." if len(faces) == 1 else (
        f"{len(faces)} faces found: showing face {face_index + 1}{' (the largest)' if face_index == 0 else ''}; "
        "pick another one with the face selector.")
    return Answer(message, len(faces), face_index, boxes, crop, probability, models.classifier_threshold,
                  embedding, reconstruction, gif, timings, list(faces))


def verdict_text(models: Models, answer: Answer) -> str:
    """The "is this the celebrity?" lines of an answer, in Markdown."""
    if answer.crop is None:
        return ""
    name, emb = models.paths.target_name, answer.embedding
    probability, threshold = answer.probability, answer.classifier_threshold
    limit = f", threshold {emb['threshold']:.3f}" if emb.get("threshold") is not None else ""
    embedding = ("no embedding for this crop." if emb.get("distance") is None else
                 f"distance {emb['distance']:.3f} to {name}'s centroid{limit} → **{emb['verdict']}**")
    says = "is" if emb.get("verdict") == "same person" else "is not"
    return (f"**Classifier (MobileNetV2):** P({name}) = {probability:.2f}, threshold {threshold:.2f} → "
            f"**{'yes' if probability >= threshold else 'no'}**\n\n**Face embedding (dlib):** {embedding}\n\n"
            f"**Verdict:** the face embedding says this {says} {name}.")


def add_model_arguments(parser) -> None:
    """The flags naming the app's models; each defaults to the last demo's file."""
    for flag, dest, what in (("--classifier-checkpoint", "classifier", "classifier best.pt"),
                             ("--scorer-checkpoint", "scorer", "embedding_scorer.json"),
                             ("--vae-checkpoint", "vae", "base VAE checkpoint.pt"),
                             ("--finetuned-checkpoint", "vae_finetuned", "VAE fine-tuned on the target"),
                             ("--target-faces", "target_faces", "folder of the target's face crops")):
        parser.add_argument(flag, dest=dest, help=f"{what} (default: the last demo's)")
    parser.add_argument("--target-name", help="the name shown on the page")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads (default %(default)s)")


def models_from_args(args) -> Models:
    """Load the models the flags name (the demo's files fill in the rest), with `--threads` torch threads."""
    given = {key: Path(getattr(args, key)) for key in ("classifier", "scorer", "vae", "target_faces", "vae_finetuned")
             if getattr(args, key)}
    if {"classifier", "scorer", "vae", "target_faces"} <= set(given):
        paths = ModelPaths(**given, target_name=given["target_faces"].name.replace("_", " ").title())
    else:
        paths = replace(demo_paths(), **given)
    paths.target_name = args.target_name or paths.target_name
    torch.set_num_threads(args.threads)
    return load_models(paths)
