"""Identity search with face embeddings: embed face photos, score them against the target, verify an identity.

Backends: `dlib` (default, offline, 128-d) and `facenet` (VGGFace2 `InceptionResnetV1`, 512-d, cached weights).
The face rectangle of a stage-1 crop is the crop minus stage 1's margin ("inner"), the whole crop ("whole") or
dlib's HOG detection ("hog"). `embed_files` caches vectors in SQLite, valid while a file's size and mtime hold.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.errors import InputError
from common.files import atomic_write_text

BACKENDS = ("dlib", "facenet")
DIMENSIONS = {"dlib": 128, "facenet": 512}
FACE_BOXES = ("inner", "whole", "hog")
DLIB_LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"  # the 68-point model's data forbids commercial use
DLIB_NETWORK_FILE = "dlib_face_recognition_resnet_model_v1.dat"
FACENET_WEIGHTS_FILE = "20180402-114759-vggface2.pt"
FACENET_URL = f"https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/{FACENET_WEIGHTS_FILE}"
DLIB_SAME_PERSON_DISTANCE = 0.6  # dlib's convention: descriptors closer than this are the same person
VERIFY_CENTROID_DISTANCE = {"dlib": 0.5, "facenet": 1.0}  # verify_identity without other people (see there)
STAGE1_MARGIN = 0.15  # scraping.faces.CropConfig.margin: context stage 1 adds on each side of the MTCNN box
CELEBA_ALIGNED_SIZE = (178, 218)
CELEBA_ALIGNED_FACE_BOX = (32, 80, 139, 187)  # where HOG finds the face in an aligned CelebA frame (fallback)
MIN_FACE_SIDE = 20  # images smaller than this (px) have no usable face
METHODS = ("centroid", "linear")


def dlib_model_dir(model_dir: str | Path | None = None) -> Path:
    """The folder of dlib's `.dat` files: `model_dir`, else `$FACE_MODELS_DIR`, else `face_recognition_models`'."""
    if model_dir is not None:
        return Path(model_dir)
    if os.environ.get("FACE_MODELS_DIR"):
        return Path(os.environ["FACE_MODELS_DIR"])
    spec = importlib.util.find_spec("face_recognition_models")  # not imported: its __init__ needs pkg_resources
    if spec is None:
        raise InputError("dlib face models not found: pip install face-recognition-models "
                         "(or set FACE_MODELS_DIR to a folder holding the .dat files)")
    return Path(spec.origin).parent / "models"


def dlib_model_file(name: str, model_dir: str | Path | None = None) -> Path:
    """Path of one dlib model file; `InputError` (one line, naming the file) when it is missing."""
    path = dlib_model_dir(model_dir) / name
    if not path.is_file():
        raise InputError(f"dlib model file {path} is missing: pip install face-recognition-models "
                         f"(or set FACE_MODELS_DIR to a folder holding {name})")
    return path


def facenet_weights_file() -> Path | None:
    """The cached VGGFace2 weights, or None: `$TORCH_HOME/checkpoints/` (facenet-pytorch's), then torch hub's."""
    from common.checkpoints import torch_hub_file

    torch_home = Path(os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")))
    paths = (torch_home.expanduser() / "checkpoints" / FACENET_WEIGHTS_FILE, torch_hub_file(FACENET_WEIGHTS_FILE))
    return next((path for path in paths if path.is_file()), None)


def load_facenet(allow_download: bool = False, device: str = "cpu"):
    """facenet-pytorch's `InceptionResnetV1` with the cached VGGFace2 weights (downloaded only if
    `allow_download`), without its classification head, frozen, in eval mode."""
    import torch
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    from common.checkpoints import torch_hub_file

    path = facenet_weights_file()
    if path is None:
        path = torch_hub_file(FACENET_WEIGHTS_FILE)
        if not allow_download:
            raise InputError(f"facenet weights {FACENET_WEIGHTS_FILE} are not in the torch cache "
                             f"{path.parent}: download {FACENET_URL} there (or pass allow_download=True), "
                             f"or use backend='dlib'")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(FACENET_URL, str(path))
    model = InceptionResnetV1(classify=False)
    try:  # a truncated download, a wrong format, another network ...
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")})
    except Exception as error:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}"
        raise InputError(f"facenet weights {path} are unreadable ({reason}); delete the file and download "
                         f"{FACENET_URL} again") from error
    return model.requires_grad_(False).eval().to(device)


# ------------------------------------------------------------------------------------------------ face box
def face_rectangle(width: int, height: int, face_box: str = "inner") -> tuple[int, int, int, int]:
    """The assumed face rectangle (left, top, right, bottom; inclusive px): the aligned-CelebA box for 178x218
    frames, else the whole image ("whole") or the image shrunk by stage 1's margin (the MTCNN box)."""
    if (width, height) == CELEBA_ALIGNED_SIZE:
        return CELEBA_ALIGNED_FACE_BOX
    if face_box == "whole":
        return 0, 0, width - 1, height - 1
    inset_x, inset_y = (side * STAGE1_MARGIN / (1 + 2 * STAGE1_MARGIN) for side in (width, height))
    return round(inset_x), round(inset_y), round(width - 1 - inset_x), round(height - 1 - inset_y)


def _overlap(rect, box) -> float:
    width = min(rect.right(), box[2]) - max(rect.left(), box[0])
    height = min(rect.bottom(), box[3]) - max(rect.top(), box[1])
    return max(0, width) * max(0, height)


def load_rgb_array(path: str | Path) -> np.ndarray:
    """Decode an image file to a contiguous uint8 HxWx3 array (raises OSError / ValueError when unreadable)."""
    with Image.open(path) as image:
        return as_rgb_array(image)


def as_rgb_array(image) -> np.ndarray:
    """PIL image or uint8/float array (HxWx3, HxW or CHW) -> contiguous uint8 HxWx3 array."""
    if isinstance(image, Image.Image):
        return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:  # CHW tensor layout
        array = array.transpose(1, 2, 0)
    return np.ascontiguousarray(array[..., :3])


# ----------------------------------------------------------------------------------------------- embedders
class DlibEmbedder:
    """dlib's face descriptor: rectangle -> 5 landmarks -> aligned 150 px chip -> 128-d vector (frozen models)."""

    def __init__(self, model_dir: str | Path | None = None, face_box: str = "inner", num_jitters: int = 0):
        import dlib

        self.dlib = dlib
        self.shape_predictor = dlib.shape_predictor(str(dlib_model_file(DLIB_LANDMARKS_FILE, model_dir)))
        self.network = dlib.face_recognition_model_v1(str(dlib_model_file(DLIB_NETWORK_FILE, model_dir)))
        self.face_box, self.num_jitters = face_box, int(num_jitters)
        self.detector = dlib.get_frontal_face_detector()  # "hog" mode, and aligned CelebA frames in every mode

    def rectangle(self, rgb: np.ndarray):
        """The dlib rectangle to put the landmarks in: the HOG detection overlapping the assumed box most
        ("hog" mode and aligned CelebA frames), else the assumed box."""
        height, width = rgb.shape[:2]
        guess = face_rectangle(width, height, self.face_box)
        if self.face_box == "hog" or (width, height) == CELEBA_ALIGNED_SIZE:
            found = [rect for rect in self.detector(rgb, 0) if _overlap(rect, guess) > 0]
            if found:
                return max(found, key=lambda rect: _overlap(rect, guess))
        return self.dlib.rectangle(*guess)

    def embed_image(self, rgb: np.ndarray) -> np.ndarray | None:
        """128-d float32 descriptor of the face in `rgb` (uint8 HxWx3), None when the image is too small."""
        return None if min(rgb.shape[:2]) < MIN_FACE_SIDE else self.descriptor(rgb, self.rectangle(rgb))

    def descriptor(self, rgb: np.ndarray, rectangle) -> np.ndarray:
        """128-d float32 descriptor of the face in dlib `rectangle` of `rgb`."""
        shape = self.shape_predictor(rgb, rectangle)
        return np.asarray(self.network.compute_face_descriptor(rgb, shape, self.num_jitters), dtype=np.float32)

    def embed_images(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        return [self.embed_image(image) for image in images]


class FacenetEmbedder:
    """facenet-pytorch's InceptionResnetV1 (VGGFace2): face rectangle resized to 160 px -> 512-d unit vector."""

    def __init__(self, allow_download: bool = False, face_box: str = "whole", device: str = "cpu",
                 batch_size: int = 32):
        self.model = load_facenet(allow_download, device)
        self.device, self.batch_size = device, batch_size
        self.face_box = "whole" if face_box == "hog" else face_box  # no detector in this backend

    def _tensor(self, rgb: np.ndarray):
        import torch

        left, top, right, bottom = face_rectangle(rgb.shape[1], rgb.shape[0], self.face_box)
        face = Image.fromarray(rgb).crop((left, top, right + 1, bottom + 1)).resize((160, 160), Image.BILINEAR)
        # facenet-pytorch's fixed_image_standardization, the input scaling the weights were trained with
        return (torch.from_numpy(np.asarray(face, dtype=np.float32)).permute(2, 0, 1) - 127.5) / 128.0

    def embed_images(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        import torch

        out: list[np.ndarray | None] = [None] * len(images)
        usable = [k for k, image in enumerate(images) if min(image.shape[:2]) >= MIN_FACE_SIDE]
        with torch.inference_mode():
            for start in range(0, len(usable), self.batch_size):
                index = usable[start:start + self.batch_size]
                batch = torch.stack([self._tensor(images[k]) for k in index]).to(self.device)
                for k, vector in zip(index, self.model(batch).float().cpu().numpy()):
                    out[k] = vector.astype(np.float32)
        return out


@dataclass(frozen=True)
class EmbedderSpec:
    """Everything that changes an embedding (the cache key's prefix) plus where the models live."""

    backend: str = "dlib"
    face_box: str | None = None  # None: "inner" for dlib, "whole" for facenet
    num_jitters: int = 0  # dlib only: average over this many jittered copies (x10 slower for 10)
    model_dir: str | None = None  # dlib model folder (None: FACE_MODELS_DIR, then face_recognition_models)
    allow_download: bool = False  # facenet only

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise InputError(f"unknown embedding backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.resolved_face_box() not in FACE_BOXES:
            raise InputError(f"face_box must be one of {', '.join(FACE_BOXES)}, got {self.face_box!r}")

    def resolved_face_box(self) -> str:
        return self.face_box or ("inner" if self.backend == "dlib" else "whole")

    def tag(self) -> str:
        """A short text naming the settings; embeddings are cached per tag."""
        jitter = f":j{self.num_jitters}" if self.backend == "dlib" else ""
        return f"{self.backend}:{self.resolved_face_box()}:m{STAGE1_MARGIN:g}{jitter}"

    def build(self):
        if self.backend == "dlib":
            return DlibEmbedder(self.model_dir, self.resolved_face_box(), self.num_jitters)
        return FacenetEmbedder(self.allow_download, self.resolved_face_box())


@functools.cache
def get_embedder(spec: EmbedderSpec):
    """The embedder for `spec`, built on first use in this process and kept."""
    return spec.build()


def _embed_paths(spec: EmbedderSpec, paths: Sequence[str]) -> list[tuple[str, np.ndarray | None]]:
    """(status, vector) per path: "ok", "no_face" or "unreadable"."""
    images = []
    for path in paths:
        try:
            images.append(load_rgb_array(path))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            images.append(None)
    readable = [k for k, image in enumerate(images) if image is not None]
    vectors = dict(zip(readable, get_embedder(spec).embed_images([images[k] for k in readable])))
    return [("unreadable", None) if images[k] is None else ("no_face", None) if vectors[k] is None
            else ("ok", vectors[k]) for k in range(len(paths))]


# ---------------------------------------------------------------------------------------------- embedding
def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def embed_files(root: str | Path, files: Sequence[str], backend: str = "dlib", workers: int = 2,
                cache: str | Path | None = None, progress: bool = True, face_box: str | None = None,
                num_jitters: int = 0, model_dir: str | Path | None = None, allow_download: bool = False,
                chunk_size: int = 16, stats: dict | None = None) -> np.ndarray:
    """Embed `files` (paths relative to `root`): float32 [len(files), D], NaN rows where unreadable or no face.

    Args:
        backend: "dlib" (128-d, offline) or "facenet" (512-d, needs the cached VGGFace2 weights).
        workers: processes for dlib (0/1 = this process); facenet runs here, batched.
        cache: SQLite file caching embeddings (each chunk committed in one transaction), or None.
        face_box, num_jitters, model_dir, allow_download: see `EmbedderSpec`.
        chunk_size: files per worker task (and per cache transaction).
        stats: a dict to fill with images, computed, cached, ok, no_face, unreadable, seconds, images_per_second.
    """
    import multiprocessing

    from tqdm import tqdm

    spec = EmbedderSpec(backend, face_box, int(num_jitters), None if model_dir is None else str(model_dir),
                        allow_download)
    started = time.perf_counter()
    paths = [str((Path(root) / f).resolve()) for f in files]
    keys = {p: _stat_key(p) for p in paths}
    results: dict[str, tuple[str, np.ndarray | None]] = {}
    db = None
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(cache)
        db.execute("CREATE TABLE IF NOT EXISTS embeddings (tag TEXT, path TEXT, size INTEGER, "
                   "mtime_ns INTEGER, status TEXT, vector BLOB, PRIMARY KEY (tag, path))")
        for path, size, mtime_ns, status, blob in db.execute(
                "SELECT path, size, mtime_ns, status, vector FROM embeddings WHERE tag = ?", (spec.tag(),)):
            if keys.get(path) == (size, mtime_ns):
                results[path] = (status, None if blob is None else np.frombuffer(blob, np.float32).copy())
    todo = list(dict.fromkeys(p for p in paths if p not in results))
    n_cached = len(set(paths)) - len(todo)
    compute_started = time.perf_counter()
    if todo and backend == "dlib":  # a missing model file fails here, with its InputError, not in a worker
        for name in (DLIB_LANDMARKS_FILE, DLIB_NETWORK_FILE):
            dlib_model_file(name, spec.model_dir)
    chunks = [todo[k:k + chunk_size] for k in range(0, len(todo), chunk_size)]
    pool = None
    if workers > 1 and backend == "dlib" and len(chunks) > 1:
        # each worker loads the models once, before its first chunk
        pool = multiprocessing.get_context("spawn").Pool(min(workers, len(chunks)), get_embedder, (spec,))
    try:
        embed_chunk = functools.partial(_embed_paths, spec)
        outputs = pool.imap(embed_chunk, chunks) if pool else map(embed_chunk, chunks)
        with tqdm(total=len(todo), desc=f"embed ({backend})", unit="img", disable=not (progress and todo)) as bar:
            for chunk, output in zip(chunks, outputs):
                results.update(zip(chunk, output))
                if db is not None:
                    with db:
                        db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", [
                            (spec.tag(), p, *keys[p], results[p][0],
                             None if results[p][1] is None else np.asarray(results[p][1], np.float32).tobytes())
                            for p in chunk if keys[p] is not None])
                bar.update(len(chunk))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if db is not None:
            db.close()
    compute_seconds = time.perf_counter() - compute_started
    statuses = [results[path][0] for path in paths]
    if stats is not None:
        stats.update(images=len(paths), computed=len(todo), cached=n_cached,
                     **{status: statuses.count(status) for status in ("ok", "no_face", "unreadable")},
                     seconds=round(time.perf_counter() - started, 3),
                     images_per_second=round(len(todo) / compute_seconds, 2) if todo and compute_seconds > 0
                     else None)
    return _matrix([results[path][1] for path in paths], backend)


def embed_images(images: Sequence, backend: str = "dlib", face_box: str | None = None, num_jitters: int = 0,
                 model_dir: str | Path | None = None, allow_download: bool = False) -> np.ndarray:
    """Embed in-memory images (PIL or arrays) in this process: float32 [N, D], NaN rows where no face."""
    spec = EmbedderSpec(backend, face_box, int(num_jitters), None if model_dir is None else str(model_dir),
                        allow_download)
    return _matrix(get_embedder(spec).embed_images([as_rgb_array(image) for image in images]), backend)


def _matrix(vectors: Sequence[np.ndarray | None], backend: str) -> np.ndarray:
    """float32 [N, D] of `vectors`, NaN rows where a vector is None."""
    nan = np.full(DIMENSIONS[backend], np.nan, dtype=np.float32)
    return np.array([nan if v is None else v for v in vectors], dtype=np.float32).reshape(-1, len(nan))


def valid_rows(vectors: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows that hold an embedding (not NaN)."""
    return ~np.isnan(vectors).any(axis=1)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


# -------------------------------------------------------------------------------------------------- scorers
@dataclass
class IdentityScorer:
    """A fitted "how much like the target" score on embeddings; higher = more likely the target (not a
    probability). centroid: -||x - centroid||; linear: logistic regression's logit on L2-normalised x."""

    method: str
    backend: str
    centroid: np.ndarray
    weights: np.ndarray | None = None
    bias: float = 0.0
    threshold: float | None = None  # decision threshold chosen on validation (None: not chosen)
    face_box: str | None = None
    num_jitters: int = 0
    info: dict = field(default_factory=dict)  # training counts, validation metrics ...

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Scores of embedding rows (NaN rows score NaN)."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if self.method == "centroid":
            return -np.linalg.norm(vectors - self.centroid[None, :], axis=1)
        return l2_normalise(vectors) @ self.weights + self.bias

    def embed_options(self) -> dict:
        """The `embed_files` options the scorer was fitted with (scanning must embed the same way)."""
        return {"backend": self.backend, "face_box": self.face_box, "num_jitters": self.num_jitters}

    def save(self, path: str | Path) -> Path:
        """Write the scorer as JSON (atomically)."""
        data = {**self.__dict__, "centroid": self.centroid.tolist(),
                "weights": None if self.weights is None else self.weights.tolist()}
        return atomic_write_text(path, json.dumps(_json_ready(data), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> IdentityScorer:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"embedding scorer {path} does not exist (evaluate_embedding_scorer writes one)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            weights = None if data.get("weights") is None else np.asarray(data["weights"], np.float64)
            return cls(**{**data, "centroid": np.asarray(data["centroid"], np.float64), "weights": weights})
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"embedding scorer {path} is not a scorer file ({error})") from error


def fit_scorer(positives: np.ndarray, negatives: np.ndarray | None, method: str = "linear", backend: str = "dlib",
               face_box: str | None = None, num_jitters: int = 0, C: float = 1.0) -> IdentityScorer:
    """Fit a scorer on the target's embeddings (`positives`) and other people's (`negatives`); NaN rows are
    dropped. "linear" (class-balanced logistic regression) needs negatives; "centroid" ignores them."""
    if method not in METHODS:
        raise InputError(f"unknown scorer method {method!r}; choose one of {', '.join(METHODS)}")
    positives = np.asarray(positives, np.float64)
    positives = positives[valid_rows(positives)]
    negatives = np.zeros((0, positives.shape[1])) if negatives is None else np.asarray(negatives, np.float64)
    negatives = negatives[valid_rows(negatives)]
    if len(positives) == 0:
        raise InputError("no embedded photo of the target: cannot fit a scorer")
    scorer = IdentityScorer(method, backend, positives.mean(axis=0), face_box=face_box, num_jitters=num_jitters,
                            info={"n_positive": len(positives), "n_negative": len(negatives)})
    if method == "linear":
        if len(negatives) == 0:
            raise InputError("the linear scorer needs other people's photos as negatives")
        from sklearn.linear_model import LogisticRegression

        x = l2_normalise(np.concatenate([positives, negatives]))
        y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
        model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000).fit(x, y)
        scorer.weights, scorer.bias = model.coef_[0].astype(np.float64), float(model.intercept_[0])
        scorer.info["C"] = C
    return scorer


# --------------------------------------------------------------------------------------------- verification
def _json_ready(value: Any) -> Any:
    """Dicts, lists and numpy scalars as plain JSON values (non-finite floats -> None)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def verify_identity(celeba_root: str | Path, identity: int, target_faces_folder: str | Path,
                    backend: str = "dlib", threshold: float | None = None, cache: str | Path | None = None,
                    workers: int = 2, progress: bool = False, max_photos: int = 60, **embed_options) -> dict:
    """Is CelebA identity `identity` the person of the scraped crops in `target_faces_folder`? Embeds up to
    `max_photos` of the identity's photos (evenly spread), the target's crops and the other people's crops next
    to them (stage 1 layout) and returns `verify_embeddings`' verdict plus `identity`."""
    from common.celeba_format import read_identities
    from common.files import list_person_images

    celeba_root, folder = Path(celeba_root), Path(target_faces_folder)
    names = sorted(f for f, i in read_identities(celeba_root).items() if i == int(identity))
    if not names:
        raise InputError(f"identity {identity} has no photos in {celeba_root / 'identity_CelebA.txt'}")
    if len(names) > max_photos:
        names = [names[k] for k in np.linspace(0, len(names) - 1, max_photos).round().astype(int)]
    image_dir = celeba_root / "img_align_celeba" if (celeba_root / "img_align_celeba").is_dir() else celeba_root
    options = dict(backend=backend, workers=workers, cache=cache, progress=progress, **embed_options)
    photos = embed_files(image_dir, names, **options)
    people = list_person_images(folder.parent)
    target_files = [p.relative_to(folder.parent).as_posix() for p in people.get(folder.name, [])]
    if not target_files:
        raise InputError(f"target folder {folder} holds no face crops")
    others = [p.relative_to(folder.parent).as_posix() for name, paths in people.items() if name != folder.name
              for p in paths]
    vectors = embed_files(folder.parent, target_files + others, **options)
    target, other = vectors[:len(target_files)], vectors[len(target_files):]
    if not valid_rows(target).any():
        raise InputError(f"none of the crops in {folder} gave a face embedding")
    return {"identity": int(identity), **verify_embeddings(photos, target, other, backend, threshold)}


def verify_embeddings(photos: np.ndarray, target: np.ndarray, others: np.ndarray | None = None,
                      backend: str = "dlib", threshold: float | None = None) -> dict:
    """Verdict from embeddings (NaN rows ignored): "confirmed" when the median distance of the candidate's
    `photos` to the centroid of the `target`'s crops is below the threshold, else "uncertain".

    Threshold (unless given): with `others`' crops, midway between the target's own leave-one-out distance
    (median) and the others' 5th percentile, capped at dlib's 0.6; without them `VERIFY_CENTROID_DISTANCE`.
    Returns {verdict, reason, median_distance, share_within, threshold, threshold_source, n_photos, ...}.
    """
    photos, target = photos[valid_rows(photos)], target[valid_rows(target)]
    others = np.zeros((0, target.shape[1])) if others is None else others[valid_rows(others)]
    result = {"n_photos": len(photos), "n_target_crops": len(target), "n_other_crops": len(others),
              "backend": backend}
    if len(target) == 0:
        raise InputError("none of the target's crops gave a face embedding")
    if len(photos) == 0:
        return {**result, "verdict": "uncertain", "reason": "no photo of this identity gave a face embedding",
                "median_distance": None, "share_within": None, "threshold": threshold, "threshold_source": None}
    centroid = target.mean(axis=0)
    source = "given"
    if threshold is None and len(others) and len(target) >= 3:
        total = target.sum(axis=0)
        own = float(np.median([np.linalg.norm(t - (total - t) / (len(target) - 1)) for t in target]))
        theirs = float(np.percentile(np.linalg.norm(others - centroid, axis=1), 5))
        threshold = min(DLIB_SAME_PERSON_DISTANCE if backend == "dlib" else 2.0, (own + theirs) / 2)
        result.update(own_median_distance=own, others_p5_distance=theirs)
        source = "midway between the target's own distances and other people's 5th percentile"
    elif threshold is None:
        threshold = VERIFY_CENTROID_DISTANCE[backend]
        source = f"{backend} default for distances to a centroid"
    distances = np.linalg.norm(np.asarray(photos, np.float64) - centroid, axis=1)
    median, within = float(np.median(distances)), float(np.mean(distances < threshold))
    confirmed = median < threshold
    reason = (f"median distance {median:.3f} of {len(photos)} photos to the target's centroid is "
              f"{'below' if confirmed else 'not below'} {threshold:.3f} ({source}); "
              f"{within:.0%} of the photos are within it")
    return {**result, "verdict": "confirmed" if confirmed else "uncertain", "reason": reason,
            "median_distance": median, "share_within": within, "threshold": float(threshold),
            "threshold_source": source}


# ------------------------------------------------------------------------------------- identity preservation
# VAE images (vae.celeba): the 148 px centre square of the aligned 178x218 frame; the face box in it, as
# fractions of its side, is CELEBA_ALIGNED_FACE_BOX shifted by the square's corner (15, 35).
VAE_FRAME = 148
VAE_FACE_BOX = tuple(v / VAE_FRAME for v in (CELEBA_ALIGNED_FACE_BOX[0] - 15, CELEBA_ALIGNED_FACE_BOX[1] - 35,
                                             CELEBA_ALIGNED_FACE_BOX[2] - 15, CELEBA_ALIGNED_FACE_BOX[3] - 35))


def _embed_frames(images: Sequence, box: Sequence[float], side: int, spec: EmbedderSpec) -> np.ndarray:
    """Upsample square frames to `side` px (bicubic), put the face rectangle at `box` (fractions), embed."""
    embedder, vectors = get_embedder(spec), []
    for image in images:
        rgb = np.asarray(Image.fromarray(as_rgb_array(image)).resize((side, side), Image.BICUBIC))
        if spec.backend == "dlib":
            vectors.append(embedder.descriptor(rgb, embedder.dlib.rectangle(*(round(v * (side - 1)) for v in box))))
        else:
            left, top, right, bottom = (round(v * side) for v in box)
            vectors += embedder.embed_images([np.ascontiguousarray(rgb[top:bottom, left:right])])
    return _matrix(vectors, spec.backend)


def identity_preservation(original_images: Sequence, reconstructions: Sequence,
                          gallery_embeddings_by_identity: Mapping[Any, np.ndarray], true_identity: Any,
                          backend: str = "dlib", face_box: Sequence[float] = VAE_FACE_BOX,
                          upsample: int = VAE_FRAME, model_dir: str | Path | None = None) -> dict:
    """Does a reconstruction still look like the same person? `original_images` and `reconstructions` are paired
    square frames (upsampled to `upsample` px, face at `face_box`, fractions of the side); the gallery maps
    identity -> embeddings [n, D] (or a centroid). Returns photo-to-reconstruction distances, the share of
    reconstructions (and originals) nearest to `true_identity`'s centroid and their mean distance to it."""
    if len(original_images) != len(reconstructions):
        raise ValueError(f"{len(original_images)} originals but {len(reconstructions)} reconstructions")
    if true_identity not in gallery_embeddings_by_identity:
        raise ValueError(f"true identity {true_identity!r} is not in the gallery")
    spec = EmbedderSpec(backend, model_dir=None if model_dir is None else str(model_dir))
    originals = _embed_frames(original_images, face_box, upsample, spec)
    recon = _embed_frames(reconstructions, face_box, upsample, spec)
    keys = list(gallery_embeddings_by_identity)
    galleries = [np.atleast_2d(np.asarray(gallery_embeddings_by_identity[key], np.float64)) for key in keys]
    centroids = np.stack([gallery[valid_rows(gallery)].mean(axis=0) for gallery in galleries])
    truth = keys.index(true_identity)

    def nearest_is_true(vectors):
        ok = valid_rows(vectors)
        if not ok.any():
            return None
        distances = np.linalg.norm(vectors[ok][:, None, :] - centroids[None], axis=2)
        return float(np.mean(distances.argmin(axis=1) == truth))

    pair = np.linalg.norm(originals.astype(np.float64) - recon, axis=1)
    pair = pair[np.isfinite(pair)]
    to_truth = np.linalg.norm(recon[valid_rows(recon)] - centroids[truth], axis=1)
    return {
        "n": len(original_images), "n_embedded": len(pair), "backend": backend,
        "mean_distance": float(pair.mean()) if len(pair) else None,
        "median_distance": float(np.median(pair)) if len(pair) else None,
        "share_same_person": float(np.mean(pair < DLIB_SAME_PERSON_DISTANCE)) if len(pair) and backend == "dlib"
        else None,
        "nearest_identity_accuracy": nearest_is_true(recon),
        "original_nearest_identity_accuracy": nearest_is_true(originals),
        "mean_distance_to_true_centroid": float(to_truth.mean()) if len(to_truth) else None,
        "n_identities": len(keys),
    }
