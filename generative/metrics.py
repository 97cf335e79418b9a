"""Generative metrics that work offline: KID, FID, precision/recall, MTCNN face share and a memorisation check.

Features are dlib's 128-d face descriptor (the whole 64 px frame as the face box), not Inception-v3's, so values are
NOT comparable with published FIDs or KIDs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy import linalg
from scipy.spatial.distance import cdist

from common.checkpoints import load_checkpoint
from common.config import pick_device, seed_everything
from common.errors import InputError
from common.files import atomic_write_text
from common.images import label_image, save_sheet, to_uint8_arrays
from scraping.faces import mtcnn_face_share

FEATURES = "dlib face descriptor (128-d, identity.embed, whole 64 px frame as the face box)"
KID_SUBSET_SIZE = 100  # images per KID subset (the reference implementation uses 1000 on 50k-image sets)
KID_SUBSETS = 50
PR_NEIGHBOURS = 3  # k of the k-NN manifolds (Kynkäänniemi et al. 2019)
MEMORISATION_PERCENTILE = 1.0  # samples nearer a training image than this percentile of held-out real images


def _embed_chunk(arrays: list[np.ndarray]) -> np.ndarray:
    from identity.embed import embed_images

    return embed_images(arrays, backend="dlib", face_box="whole")


def image_features(images, workers: int = 2, chunk_size: int = 25, progress: bool = True) -> np.ndarray:
    """dlib face descriptors [N, 128] (float64) of images ([N, 3, S, S] in [0, 1] or HxWx3 uint8 arrays), the whole
    frame as the face box, computed by `workers` processes (0/1: this one)."""
    import multiprocessing

    from tqdm import tqdm

    arrays = to_uint8_arrays(images)
    chunks = [arrays[k:k + chunk_size] for k in range(0, len(arrays), chunk_size)]
    bar = dict(total=len(chunks), desc="face features", unit="chunk", disable=not progress)
    if workers > 1 and len(chunks) > 1:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(chunks))) as pool:
            parts = list(tqdm(pool.imap(_embed_chunk, chunks), **bar))
    else:
        parts = [_embed_chunk(chunk) for chunk in tqdm(chunks, **bar)]
    features = np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 128))
    if np.isnan(features).any():  # cannot happen with a fixed box on images >= 20 px; say so if it does
        raise RuntimeError(f"{int(np.isnan(features[:, 0]).sum())} image(s) got no face descriptor")
    return features


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² between samples `a` [m, d] and `b` [n, d] with KID's kernel k(x, y) = (x·y / d + 1)³
    (diagonal terms left out of the within-set means; Gretton et al. 2012, eq. 3)."""
    k_aa, k_bb, k_ab = ((x @ y.T / a.shape[1] + 1.0) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    within = [(k.sum() - np.trace(k)) / (len(k) * (len(k) - 1)) for k in (k_aa, k_bb)]
    return float(within[0] + within[1] - 2.0 * k_ab.mean())


def kid(features: np.ndarray, reference: np.ndarray, subset_size: int = KID_SUBSET_SIZE,
        subsets: int = KID_SUBSETS, seed: int = 0) -> dict[str, float]:
    """KID (Bińkowski et al. 2018, on face features): mean and std of the unbiased MMD² over `subsets` random subsets
    of `subset_size` images per set. Returns {"kid", "kid_std", "subset_size", "subsets"}."""
    size = min(subset_size, len(features), len(reference))
    if size < 2:
        raise ValueError("KID needs at least 2 images in each set")
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(np.asarray(features, np.float64)[rng.choice(len(features), size, replace=False)],
                            np.asarray(reference, np.float64)[rng.choice(len(reference), size, replace=False)])
              for _ in range(subsets)]
    return {"kid": float(np.mean(values)), "kid_std": float(np.std(values)), "subset_size": int(size),
            "subsets": int(subsets)}


def fid(features: np.ndarray, reference: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets; `eps`·I is added when sqrtm is not finite, as in
    pytorch-fid. Biased upwards at small N: compare values only at equal N."""
    a, b = np.asarray(features, np.float64), np.asarray(reference, np.float64)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = np.eye(cov_a.shape[0]) * eps
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has an imaginary component {np.max(np.abs(root.imag)):.3g}")
        root = root.real
    diff = a.mean(0) - b.mean(0)
    return float(max(0.0, diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root)))


def precision_recall(features: np.ndarray, reference: np.ndarray, k: int = PR_NEIGHBOURS) -> dict[str, float]:
    """Improved precision (share of samples inside the real k-NN manifold: fidelity) and recall (share of real images
    inside the samples' manifold: diversity), Kynkäänniemi et al. 2019."""
    if min(len(features), len(reference)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per set")

    def coverage(points: np.ndarray, support: np.ndarray) -> float:  # within a support point's k-th NN distance
        radii = np.sort(cdist(support, support), axis=1)[:, k]
        return float((cdist(points, support) <= radii[None, :]).any(axis=1).mean())

    return {"precision": coverage(features, reference), "recall": coverage(reference, features)}


def nearest_distances(queries: torch.Tensor, references: torch.Tensor | Iterable[torch.Tensor],
                      batch: int = 512) -> np.ndarray:
    """RMS pixel distances ([N, 2], [0, 1] units) from each query image to its nearest and second-nearest reference.
    `references` is a [M, 3, S, S] tensor or an iterable of such batches (to stream a large training set)."""
    q = queries.detach().float().cpu().flatten(1)
    best = torch.full((len(q), 2), float("inf"))
    for block in [references] if isinstance(references, torch.Tensor) else references:
        for start in range(0, len(block), batch):
            r = block[start:start + batch].detach().float().cpu().flatten(1)
            squared = ((q * q).sum(1, keepdim=True) + (r * r).sum(1)[None, :] - 2.0 * q @ r.T).clamp_min(0)
            best = torch.cat([best, squared], dim=1).topk(2, dim=1, largest=False).values
    return (best / q.shape[1]).sqrt().numpy()


def memorisation(sample_nearest: np.ndarray, held_out_nearest: np.ndarray,
                 percentile: float = MEMORISATION_PERCENTILE) -> dict:
    """Flag samples whose nearest/second-nearest training distance ratio (`nearest_distances`; a copy ~0, a blurry
    average face ~1) is below `percentile` % of the held-out images' ratios: threshold, flagged, median distance."""
    sample_nearest, held_out_nearest = np.asarray(sample_nearest, float), np.asarray(held_out_nearest, float)
    ratio = [n[:, 0] / np.maximum(n[:, 1], 1e-12) for n in (sample_nearest, held_out_nearest)]
    threshold = float(np.percentile(ratio[1], percentile))
    flagged = np.flatnonzero(ratio[0] < threshold)
    return {"threshold": threshold, "flagged": len(flagged),
            "flagged_share": len(flagged) / max(1, len(sample_nearest)), "flagged_indices": flagged.tolist(),
            "median_sample_distance": float(np.median(sample_nearest[:, 0]))}


def real_image_sets(data_root: str | Path, n: int = 300, image_size: int = 64, seed: int = 0) -> dict:
    """Seeded draws of `n` real images: reference (the "valid" split) and held_out (the "test" split, the real ceiling),
    each falling back to training images when empty, plus train_dataset and train_indices for the copy check."""
    from vae.celeba import open_image_dataset

    train = open_image_dataset(data_root, "train", image_size)
    if len(train) == 0:
        raise InputError(f"no training images in {data_root}")
    rng = np.random.default_rng(seed)
    train_indices = list(range(len(train)))
    test = open_image_dataset(data_root, "test", image_size)
    if len(test) > 0:
        held_set, held_pool = test, list(range(len(test)))
    else:
        held_pool = sorted(rng.choice(len(train), max(2, len(train) // 10), replace=False).tolist())
        held_set, train_indices = train, sorted(set(train_indices) - set(held_pool))
    valid = open_image_dataset(data_root, "valid", image_size)
    reference_set, reference_pool = (valid, list(range(len(valid)))) if len(valid) > 0 else (train, train_indices)
    reference = sorted(rng.choice(reference_pool, min(n, len(reference_pool)), replace=False).tolist())
    held = sorted(rng.choice(held_pool, min(n, len(held_pool)), replace=False).tolist())
    return {"reference": torch.stack([reference_set[i] for i in reference]),
            "reference_from": "valid" if reference_set is valid else "train",
            "held_out": torch.stack([held_set[i] for i in held]), "train_dataset": train,
            "train_indices": train_indices}


def score_sets(sets: Mapping[str, torch.Tensor], real: dict, workers: int = 2, progress: bool = True,
               seed: int = 0) -> dict:
    """Every metric for each set in `sets` ({name: [N, 3, S, S] in [0, 1]}) and for the held-out real images ("real")
    against `real` (`real_image_sets`): {name: {kid, fid, precision, recall, mtcnn_face_share, memorised, ...}}."""
    all_sets = {**sets, "real": real["held_out"]}
    names, seconds, tick = list(all_sets), {}, time.perf_counter()
    # one feature pass over everything: the worker processes load dlib's models once
    features = image_features(torch.cat([real["reference"], *all_sets.values()]), workers, progress=progress)
    ends = np.cumsum([len(real["reference"])] + [len(all_sets[name]) for name in names])
    reference, *parts = np.split(features, ends[:-1])
    per_set = dict(zip(names, parts))
    seconds["features"], tick = time.perf_counter() - tick, time.perf_counter()
    train = real["train_dataset"]
    batches = [torch.stack([train[i] for i in real["train_indices"][s:s + 256]])
               for s in range(0, len(real["train_indices"]), 256)]
    held = nearest_distances(real["held_out"], batches)
    memos = {name: memorisation(held if name == "real" else nearest_distances(all_sets[name], batches), held)
             for name in names}
    seconds["memorisation"], tick = time.perf_counter() - tick, time.perf_counter()
    shares = {name: mtcnn_face_share(all_sets[name])["share"] for name in names}
    seconds["mtcnn"] = time.perf_counter() - tick
    out = {"reference_images": len(real["reference"]), "reference_from": real.get("reference_from"),
           "train_images": len(real["train_indices"]), "features": FEATURES,
           "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    for name, memo in memos.items():
        out[name] = {"images": len(all_sets[name]), **kid(per_set[name], reference, seed=seed),
                     "fid": fid(per_set[name], reference), **precision_recall(per_set[name], reference),
                     "mtcnn_face_share": shares[name], "memorised": memo["flagged"],
                     "memorised_share": memo["flagged_share"], "memorisation_threshold": memo["threshold"],
                     "nearest_train_distance_median": memo["median_sample_distance"]}
    return out


METRIC_BARS = (("kid", "KID (face features)"), ("fid", "FID (face features)"), ("precision", "precision (k=3)"),
               ("recall", "recall (k=3)"), ("mtcnn_face_share", "MTCNN face share"))


def comparison_figure(samples: Mapping[str, torch.Tensor], scores: Mapping[str, dict], out_png: str | Path,
                      columns: int = 6, rows: int = 3, title: str = "") -> Path:
    """Captioned sample grids (`rows` × `columns` of each set in `samples`, e.g. real / vae / gan) over one bar
    chart per metric of `scores` ({set name: its `score_sets` dict}; KID with its std as an error bar)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    from vae.train import image_grid

    names, colours = list(samples), {"real": "#4d4d4d", "vae": "#1f77b4", "gan": "#d62728"}
    grids = [image_grid(list(samples[n][:rows * columns].split(columns))[:rows]) for n in names]
    figure = Figure(figsize=(12, 5.6), dpi=90)
    canvas = FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, len(METRIC_BARS), height_ratios=[1.1, 1])
    top = figure.add_subplot(grid[0, :])
    top.imshow(label_image(grids, names))
    top.axis("off")
    for k, (key, label) in enumerate(METRIC_BARS):
        axis = figure.add_subplot(grid[1, k])
        errors = [scores[name]["kid_std"] for name in names] if key == "kid" else None
        axis.bar(names, [scores[name][key] for name in names], yerr=errors, capsize=3,
                 color=[colours.get(n, "#888888") for n in names])
        axis.set_title(label, fontsize=9)
        axis.tick_params(labelsize=8)
        if key in ("precision", "recall", "mtcnn_face_share"):
            axis.set_ylim(0, 1.05)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    canvas.draw()
    return save_sheet(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]), out_png)


TABLE_COLUMNS = (("model", "set"), ("steps", "steps"), ("images_per_s", "img/s"), ("kid", "KID"),
                 ("fid", "FID"), ("precision", "precision"), ("recall", "recall"),
                 ("mtcnn_face_share", "MTCNN face share"), ("memorised", "flagged as copies"))


def results_table(rows: Sequence[Mapping]) -> str:
    """A markdown table of benchmark rows (`results/benchmarks/gan_vs_vae.json` → result.rows): one line per set,
    KID as mean ± std over subsets, "—" where a value does not apply (the real images were not trained)."""
    def cell(row: Mapping, key: str) -> str:
        value = row.get(key)
        if value is None:
            return "—"
        if key == "kid":
            return f"{value:.4f} ± {row['kid_std']:.4f}"
        if key == "memorised":
            return f"{value} / {row['images']}"
        if key == "mtcnn_face_share":
            return f"{100 * value:.0f} %"
        return f"{value:.3f}" if isinstance(value, float) and key != "images_per_s" else str(value)

    lines = ["| " + " | ".join(label for _, label in TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(cell(row, key) for key, _ in TABLE_COLUMNS) + " |" for row in rows])


def benchmark_summary(record: str | Path = "results/benchmarks/gan_vs_vae.json") -> tuple[str, str | None]:
    """The last committed GAN-vs-VAE benchmark as (text with its table, its figure's path or None)."""
    path = Path(record)
    if not path.is_file():
        return f"no GAN benchmark yet ({path}): python benchmarks/bench_gan_vs_vae.py", None
    bench = json.loads(path.read_text(encoding="utf-8"))
    result = bench["result"]
    text = (f"{bench['command']}: {result['minutes_per_model']:g} min of training each, "
            f"{result['samples_per_set']} images per set\n{results_table(result['rows'])}")
    return text, result.get("figure")


def load_sampler(checkpoint: str | Path, device: str = "cpu"):
    """A trained VAE or GAN checkpoint -> (kind, image_size, sample(n, seed) -> [n, 3, S, S] in [0, 1])."""
    from generative.gan import load_gan
    from vae.train import load_vae

    path = Path(checkpoint)
    path = path / "checkpoint.pt" if path.is_dir() else path
    kind = "gan" if load_checkpoint(path).get("kind") == "gan" else "vae"
    model, saved = (load_gan if kind == "gan" else load_vae)(path, device)  # in eval mode

    def sample(n: int, seed: int = 0, batch: int = 100) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.cat([model.sample(min(batch, n - k), generator=generator).cpu() for k in range(0, n, batch)])

    return kind, int(saved["config"]["image_size"]), sample


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m generative metrics`."""
    parser.add_argument("--checkpoint", required=True,
                        help="comma-separated VAE and/or GAN checkpoints (files or run folders)")
    parser.add_argument("--src", "--data-root", dest="data_root", required=True,
                        help="the CelebA root (or face folder) the models were trained on")
    parser.add_argument("--out", help="JSON file to write the scores to (default: print only)")
    parser.add_argument("--samples", type=int, default=300, help="images per set (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="processes computing face features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def cli_run(args: argparse.Namespace) -> dict:
    """Score each checkpoint's samples (and held-out real images) with every metric; names are `<kind>_<k>`."""
    seed_everything(args.seed)
    samplers = [load_sampler(p.strip(), str(pick_device("cpu"))) for p in args.checkpoint.split(",") if p.strip()]
    sizes = {size for _, size, _ in samplers}
    if len(sizes) != 1:
        raise InputError(f"checkpoints have different image sizes {sorted(sizes)}; score them separately")
    real = real_image_sets(args.data_root, args.samples, sizes.pop(), args.seed)
    sets = {f"{kind}_{k}": sample(args.samples, args.seed) for k, (kind, _, sample) in enumerate(samplers)}
    scores = score_sets(sets, real, args.workers, progress=not args.quiet, seed=args.seed)
    if args.out:
        atomic_write_text(args.out, json.dumps(scores, indent=1, sort_keys=True) + "\n")
    return {"out": args.out, **scores}
