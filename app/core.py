"""What the web app does with one photo, as plain functions (no web code here; `app.ui` puts them on a page).

detect (MTCNN, `scraping.faces`) -> crop (stage 1's square crop with its 15 % margin) -> classify (the MobileNetV2
"is this the celebrity?" probability) -> embed distance (dlib's 128-d descriptor vs the target's centroid, the
embedding scorer of stage 2) -> VAE reconstruction -> morph GIF from the photo to the target (base and fine-tuned
VAE side by side, `vae.morph.side_by_side_morph_gif`) -> optional attribute sliders.

Models are found in the last demo's outputs (`demo_paths`) unless paths are given; `load_models` loads them once.
Uploads are checked before decoding (`read_photo`: file size, then the pixel count from the header, so a
decompression bomb is refused before Pillow allocates it). Scratch files of a request (the GIF on its way to
bytes) live in a `tempfile.TemporaryDirectory` that is gone when `answer_photo` returns.
"""
from __future__ import annotations

import base64
import json
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from common.checkpoints import load_checkpoint
from common.errors import InputError

MAX_UPLOAD_BYTES = 15 * 1024 * 1024  # larger files are refused before they are decoded
MAX_PIXELS = 40_000_000  # width x height read from the header; more is refused (Pillow warns at 89 M)
MORPH_STEPS = 6  # in-between frames from the photo to the target (and back: the GIF loops)
MORPH_SIZE = 96  # GIF frame edge per model, pixels (GIF palette quantisation is most of the morph's cost)
# torch CPU threads: one photo at a time gains nothing from more, and loses a lot when other processes share the
# cores (benchmarks/bench_app.py times 1 and 2 side by side)
DEFAULT_THREADS = 1
# Smallest face searched for, in pixels of the detection view (the longer side downscaled to 512 px): the demo's
# stage-1 setting. MTCNN's pyramid at 20 px costs about 7x more and finds only faces too small to judge.
MIN_FACE_SIZE = 40
BOXES_SIDE = 800  # the photo with its face boxes is sent to the page at most this many pixels on its longer side
MAX_ATTRIBUTE_SLIDERS = 8  # the page shows at most this many attribute sliders
SLIDER_RANGE = 3.0  # sliders go from -SLIDER_RANGE to +SLIDER_RANGE times the attribute's direction
DEMO_HINT = "run `make demo` first, or pass the model paths (see `python -m app serve --help`)"


class PhotoError(InputError):
    """A photo the app cannot use (too big, unreadable, no face); the message is shown to the user as is."""


# ------------------------------------------------------------------------------------------------ discovery
@dataclass
class ModelPaths:
    """Where the app's models live. `vae_finetuned` and `attributes` are optional."""

    classifier: Path  # a classifier run's best.pt (its metrics.json next to it gives the threshold)
    scorer: Path  # embedding_scorer.json of `python -m classification embed-scorer`
    vae: Path  # the base VAE's checkpoint.pt
    target_faces: Path  # the target's stage-1 crops: the morph's end point
    target_name: str = "the target"
    vae_finetuned: Path | None = None  # the VAE fine-tuned on the target identity
    attributes: Path | None = None  # attribute-transfer model: {"attributes": [...], "directions": [A, latent]}
    examples: list[Path] = field(default_factory=list)  # demo photos offered on the page

    def check(self) -> "ModelPaths":
        """Raise one `InputError` naming every missing file, with how to make them."""
        wanted = {"classifier": self.classifier, "embedding scorer": self.scorer, "VAE": self.vae,
                  "target faces": self.target_faces, "fine-tuned VAE": self.vae_finetuned,
                  "attribute model": self.attributes}
        missing = [f"{name} {path}" for name, path in wanted.items() if path is not None and not Path(path).exists()]
        if missing:
            raise InputError(f"missing {'; '.join(missing)}: {DEMO_HINT}")
        return self


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist: {DEMO_HINT}") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{path} is not a readable JSON file ({error}): {DEMO_HINT}") from error


def demo_paths(root: str | Path = ".", summary: str | Path | None = None, data: str | Path | None = None,
               runs: str | Path | None = None, results: str | Path | None = None, n_examples: int = 6) -> ModelPaths:
    """The models of the last demo: `results/demo/demo_summary.json` names the target, its identity and the
    best classifier run; the files are under `runs/demo`, `data/demo` and `results/demo` (each overridable).

    Nothing is checked here (`ModelPaths.check` does); a missing summary is an `InputError` with the hint.
    """
    root = Path(root)
    results = Path(results) if results else root / "results" / "demo"
    runs = Path(runs) if runs else root / "runs" / "demo"
    data = Path(data) if data else root / "data" / "demo"
    info = _read_json(Path(summary) if summary else results / "demo_summary.json")
    stages = info.get("stages", {})
    classification = stages.get("classification", {})
    target = classification.get("target") or stages.get("scraping", {}).get("target")
    if not target or classification.get("best_k") is None:
        raise InputError(f"the demo summary names no target or best classifier: {DEMO_HINT}")
    identity = stages.get("vae", {}).get("picked_identity", info.get("world", {}).get("target_identity"))
    finetuned = runs / "vae" / f"finetune_{identity}" / "checkpoint.pt" if identity is not None else None
    return ModelPaths(
        classifier=runs / "classification" / f"k{classification['best_k']}" / "best.pt",
        scorer=results / "classification" / "embedding" / "embedding_scorer.json",
        vae=runs / "vae" / "base" / "checkpoint.pt",
        target_faces=data / "faces" / target,
        target_name=info.get("world", {}).get("target_name") or target.replace("_", " ").title(),
        vae_finetuned=finetuned if finetuned is not None and finetuned.exists() else None,
        examples=demo_examples(data / "raw", target, n_examples),
    )


def demo_examples(raw: Path, target: str, n: int = 6) -> list[Path]:
    """A few scraped photos to try: half of the target's, the rest one per other person (sorted names)."""
    from common.images import is_image_file

    if not Path(raw).is_dir():
        return []
    people = sorted(p for p in Path(raw).iterdir() if p.is_dir())
    photos = {p.name: sorted(f for f in p.iterdir() if is_image_file(f)) for p in people}
    picks = photos.get(target, [])[: max(1, n // 2)]
    for name, files in photos.items():
        if name != target and files and len(picks) < n:
            picks.append(files[0])
    return picks


# ------------------------------------------------------------------------------------------------- loading
@dataclass
class Models:
    """Everything an answer needs, loaded once (eval mode, CPU unless asked otherwise)."""

    paths: ModelPaths
    detector: object
    classifier: torch.nn.Module
    classifier_size: int
    classifier_threshold: float
    scorer: object  # identity.embed.IdentityScorer
    vae: torch.nn.Module
    vae_finetuned: torch.nn.Module | None
    target_image: torch.Tensor  # [3, S, S] in [0, 1]: the target's most typical crop (nearest the mean latent)
    attributes: list[str] = field(default_factory=list)
    directions: torch.Tensor | None = None  # [A, latent_dim]


def classifier_threshold(checkpoint: Path) -> float:
    """The decision threshold chosen on validation (the run's metrics.json), 0.5 when the run has none."""
    metrics = Path(checkpoint).parent / "metrics.json"
    if metrics.is_file():
        value = _read_json(metrics).get("threshold")
        if value is not None:
            return float(value)
    return 0.5


def load_attribute_model(path: Path, latent_dim: int) -> tuple[list[str], torch.Tensor]:
    """An attribute-transfer model: a checkpoint dict with `attributes` (names) and `directions`, one latent
    direction per attribute ([A, latent_dim], e.g. from `vae.figures.attribute_vector`) for the base VAE."""
    checkpoint = load_checkpoint(path, hint="an attribute model holds 'attributes' and 'directions'")
    names, directions = checkpoint.get("attributes"), checkpoint.get("directions")
    if not names or directions is None:
        raise InputError(f"attribute model {path} needs 'attributes' (names) and 'directions' ([A, latent_dim])")
    directions = torch.as_tensor(directions, dtype=torch.float32).reshape(len(names), -1)
    if directions.shape[1] != latent_dim:
        raise InputError(f"attribute model {path} has {directions.shape[1]}-d directions; the VAE's latent has "
                         f"{latent_dim} dimensions")
    return [str(n) for n in names][:MAX_ATTRIBUTE_SLIDERS], directions[:MAX_ATTRIBUTE_SLIDERS]


def typical_target_image(vae, folder: Path, max_faces: int = 64) -> torch.Tensor:
    """The target crop whose VAE mean is nearest the mean of all the target's crops (the morph's end point)."""
    from common.images import is_image_file
    from vae.morph import encode_means

    files = sorted(f for f in Path(folder).iterdir() if is_image_file(f))[:max_faces] if Path(folder).is_dir() else []
    if not files:
        raise InputError(f"target faces folder {folder} holds no face crops: {DEMO_HINT}")
    images = torch.stack([to_vae_input(Image.open(f).convert("RGB"), vae.image_size) for f in files])
    means = encode_means(vae, images)
    nearest = int(torch.cdist(means, means.mean(0, keepdim=True)).squeeze(1).argmin())
    return images[nearest]


def detection_config(device: str = "cpu"):
    """Stage 1's detector settings for the app: every face above the probability threshold, largest first."""
    from scraping.faces import CropConfig

    return CropConfig(keep="all", min_face_size=MIN_FACE_SIZE, device=device)


def load_models(paths: ModelPaths, device: str = "cpu", warm_up: bool = True) -> Models:
    """Load every model of `paths` (after `paths.check()`). `warm_up` answers one photo (the target's crop) so
    the first real request does not pay for torch's and dlib's first-call set-up."""
    from identity.embed import IdentityScorer
    from classification.train import load_classifier
    from scraping.faces import build_detector
    from vae.train import load_vae

    from common.config import pick_device

    paths.check()
    device = str(pick_device(device))
    classifier, checkpoint = load_classifier(paths.classifier, device)
    size = int(checkpoint.get("config", {}).get("image_size", 160))
    vae, _ = load_vae(paths.vae, device)
    finetuned = load_vae(paths.vae_finetuned, device)[0] if paths.vae_finetuned else None
    names, directions = load_attribute_model(paths.attributes, vae.latent_dim) if paths.attributes else ([], None)
    models = Models(paths=paths, detector=build_detector(detection_config(device)), classifier=classifier,
                    classifier_size=size, classifier_threshold=classifier_threshold(paths.classifier),
                    scorer=IdentityScorer.load(paths.scorer), vae=vae, vae_finetuned=finetuned,
                    target_image=typical_target_image(vae, paths.target_faces), attributes=names,
                    directions=directions)
    if warm_up:
        from common.images import to_pil

        picture = to_pil(models.target_image).resize((160, 160))
        find_faces(models, picture)
        with tempfile.TemporaryDirectory(prefix="warm-up-") as scratch:
            for step in (classify_crop, embedding_distance, reconstruct):
                step(models, picture)
            morph_gif_bytes(models, picture, Path(scratch))
    return models


# ---------------------------------------------------------------------------------------------- the photo
def read_photo(path: str | Path, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an uploaded photo to upright RGB, or raise `PhotoError` with a message for the user.

    The file size is checked first (nothing is decoded above `max_bytes`), then the pixel count in the header
    (decompression bombs: a small file that would decode to gigabytes), then the decode itself. No message names
    the path: it is shown to whoever sent the file.
    """
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
    from scraping.faces import detect_faces_single, select_faces

    config = detection_config()
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


def face_crop(image: Image.Image, face) -> Image.Image:
    """Stage 1's square crop of `face` (15 % margin, 160 px): what the classifier and the scorer were fit on."""
    from scraping.faces import CropConfig, crop_face

    return crop_face(image, face, CropConfig())


def to_vae_input(crop: Image.Image, size: int) -> torch.Tensor:
    """A crop as the VAE's input: [3, size, size] floats in [0, 1]."""
    array = np.asarray(crop.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


@torch.inference_mode()
def classify_crop(models: Models, crop: Image.Image) -> float:
    """The classifier's probability that the crop shows the target (its evaluation transform)."""
    from classification.data import make_transforms

    device = next(models.classifier.parameters()).device
    x = make_transforms(models.classifier_size, train=False)(crop).unsqueeze(0).to(device)
    return float(torch.sigmoid(models.classifier(x)).squeeze())


def embedding_distance(models: Models, crop: Image.Image) -> dict:
    """dlib distance of the crop to the target's centroid and the scorer's verdict.

    Returns {distance, threshold (a distance, or None for a linear scorer), score, verdict: "same person" |
    "someone else" | "no embedding"}; the scorer's own threshold (chosen on validation) decides.
    """
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


def reconstruct(models: Models, crop: Image.Image) -> Image.Image:
    """The base VAE's reconstruction (decoded posterior mean) of the crop, as a PIL image."""
    from common.images import to_pil
    from vae.morph import decode_latents, encode_means

    x = to_vae_input(crop, models.vae.image_size)
    return to_pil(decode_latents(models.vae, encode_means(models.vae, x[None]))[0])


def morph_gif_bytes(models: Models, crop: Image.Image, scratch: Path, steps_between: int = MORPH_STEPS,
                    size: int = MORPH_SIZE) -> bytes:
    """A looping GIF from the photo to the target and back: base VAE and (when given) the fine-tuned one side by
    side, each walking between its own encodings. Written in `scratch`, returned as bytes."""
    from vae.morph import morph_gif, side_by_side_morph_gif

    roster = torch.stack([to_vae_input(crop, models.vae.image_size), models.target_image])
    out = Path(scratch) / "morph.gif"
    if models.vae_finetuned is not None:
        side_by_side_morph_gif(models.vae, models.vae_finetuned, roster, out, steps_between, size=size,
                               labels=("base", "fine-tuned"))
    else:
        morph_gif(models.vae, roster, out, steps_between, size=size)
    return out.read_bytes()


def edit_attributes(models: Models, crop: Image.Image, amounts: Sequence[float]) -> Image.Image:
    """The crop decoded by the base VAE after moving its latent by `amounts[i]` x direction i."""
    from common.images import to_pil
    from vae.morph import decode_latents, encode_means

    if models.directions is None:
        raise InputError("no attribute model was given (--attribute-checkpoint)")
    mu = encode_means(models.vae, to_vae_input(crop, models.vae.image_size)[None])
    shift = torch.as_tensor(list(amounts), dtype=torch.float32)[: len(models.directions)]
    z = mu + (shift[:, None] * models.directions[: len(shift)]).sum(0, keepdim=True)
    return to_pil(decode_latents(models.vae, z)[0])


# ------------------------------------------------------------------------------------------------ answers
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
    crops: list = field(default_factory=list)  # every face's 160 px crop, largest face first


def face_choices(n_faces: int) -> list[str]:
    """The labels of the face picker, largest face first."""
    return [f"face {k + 1}" + (" (largest)" if k == 0 else "") for k in range(n_faces)]


def faces_message(n_faces: int, face_index: int) -> str:
    if n_faces == 1:
        return "1 face found."
    return (f"{n_faces} faces found: showing face {face_index + 1}"
            f"{' (the largest)' if face_index == 0 else ''}; pick another one with the face selector.")


def answer_photo(models: Models, image: Image.Image | None, face_index: int = 0, crops: list | None = None,
                 with_morph: bool = True, scratch_root: str | Path | None = None) -> Answer:
    """Run the whole pipeline on a decoded photo. `crops` (an earlier answer's, same photo) skips the detection:
    `image` is not needed then and the answer's `boxes` is None (the picture has not changed).

    A photo without a face gives an `Answer` whose message says so (no exception: it is a normal outcome).
    Scratch files go to a `TemporaryDirectory` (under `scratch_root` when given) removed before returning.
    """
    timings, started = {}, time.perf_counter()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 4)
        return now

    t, boxes = time.perf_counter(), None
    if crops is None:
        faces = find_faces(models, image)
        t = lap("detect", t)
        boxes = boxes_picture(image, faces)
        crops = [face_crop(image, face) for face in faces]
        t = lap("crop", t)
    if not crops:
        timings["total"] = round(time.perf_counter() - started, 4)
        return Answer("No face found in this photo: try one where a face is clearly visible, seen from the front.",
                      boxes=boxes, timings=timings)
    face_index = min(max(0, int(face_index)), len(crops) - 1)
    crop = crops[face_index]
    probability = classify_crop(models, crop)
    t = lap("classify", t)
    embedding = embedding_distance(models, crop)
    t = lap("embed", t)
    reconstruction = reconstruct(models, crop)
    t = lap("reconstruct", t)
    gif = None
    if with_morph:
        with tempfile.TemporaryDirectory(prefix="morph-", dir=scratch_root) as scratch:
            gif = morph_gif_bytes(models, crop, Path(scratch))
        t = lap("morph", t)
    timings["total"] = round(time.perf_counter() - started, 4)
    return Answer(faces_message(len(crops), face_index), len(crops), face_index, boxes, crop, probability,
                  models.classifier_threshold, embedding, reconstruction, gif, timings, list(crops))


def verdict_text(models: Models, answer: Answer) -> str:
    """The "is this the celebrity?" lines of an answer, in Markdown."""
    if answer.crop is None:
        return ""
    name = models.paths.target_name
    probability, threshold = answer.probability, answer.classifier_threshold
    lines = [f"**Classifier (MobileNetV2):** P({name}) = {probability:.2f}, threshold {threshold:.2f} → "
             f"**{'yes' if probability >= threshold else 'no'}**"]
    emb = answer.embedding
    if emb.get("distance") is None:
        lines.append("**Face embedding (dlib):** no embedding for this crop.")
    else:
        limit = f", threshold {emb['threshold']:.3f}" if emb.get("threshold") is not None else ""
        lines.append(f"**Face embedding (dlib):** distance {emb['distance']:.3f} to {name}'s centroid{limit} → "
                     f"**{emb['verdict']}**")
    verdict = ("the face embedding says this is " + name) if emb.get("verdict") == "same person" else \
        ("the face embedding says this is not " + name)
    lines.append(f"**Verdict:** {verdict}.")
    return "\n\n".join(lines)


def gif_data_uri(gif: bytes) -> str:
    """A `data:` URI of GIF bytes (the page shows and downloads it without a file on the server)."""
    return "data:image/gif;base64," + base64.b64encode(gif).decode("ascii")


# ---------------------------------------------------------------------------------------------------- CLI
def add_model_arguments(parser) -> None:
    """The flags naming the app's models; each defaults to the last demo's file."""
    parser.add_argument("--summary", default=None, help="the demo summary naming the target and the best run "
                        "(default results/demo/demo_summary.json)")
    parser.add_argument("--classifier-checkpoint", default=None, help="classifier best.pt (default: the demo's "
                        "best run, runs/demo/classification/k<best_k>/best.pt)")
    parser.add_argument("--scorer-checkpoint", default=None, help="embedding_scorer.json (default "
                        "results/demo/classification/embedding/embedding_scorer.json)")
    parser.add_argument("--vae-checkpoint", default=None, help="base VAE checkpoint.pt (default "
                        "runs/demo/vae/base/checkpoint.pt)")
    parser.add_argument("--finetuned-checkpoint", default=None, help="VAE fine-tuned on the target (default "
                        "runs/demo/vae/finetune_<identity>/checkpoint.pt when it exists)")
    parser.add_argument("--attribute-checkpoint", default=None, help="attribute-transfer model (attributes + "
                        "latent directions); its sliders appear only when given")
    parser.add_argument("--target-faces", default=None, help="folder of the target's face crops, the morph's end "
                        "(default data/demo/faces/<target>)")
    parser.add_argument("--target-name", default=None, help="the name shown on the page")
    parser.add_argument("--examples", nargs="*", default=None, help="demo photos offered on the page "
                        "(default: a few of data/demo/raw)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, mps")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch CPU threads (default {DEFAULT_THREADS}; see benchmarks/bench_app.py)")


def paths_from_args(args) -> ModelPaths:
    """`ModelPaths` from the flags; the demo's files fill in whatever was not given. Every path is checked."""
    given = {"classifier": args.classifier_checkpoint, "scorer": args.scorer_checkpoint, "vae": args.vae_checkpoint,
             "target_faces": args.target_faces}
    if all(given.values()) and args.summary is None:
        paths = ModelPaths(**{k: Path(v) for k, v in given.items()})
        paths.target_name = Path(args.target_faces).name.replace("_", " ").title()
    else:
        paths = demo_paths(summary=args.summary)
        for key, value in given.items():
            if value:
                setattr(paths, key, Path(value))
    if args.finetuned_checkpoint:
        paths.vae_finetuned = Path(args.finetuned_checkpoint)
    if args.attribute_checkpoint:
        paths.attributes = Path(args.attribute_checkpoint)
    if args.target_name:
        paths.target_name = args.target_name
    if args.examples is not None:
        paths.examples = [Path(p) for p in args.examples]
    return paths.check()
