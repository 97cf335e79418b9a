"""Generative metrics that work offline: KID, FID, precision/recall, MTCNN face share and a memorisation check.

The related blog post found "no strong measure of how much has been learnt" by a GAN — only eyeballing samples
while two losses oscillate. These numbers put VAE samples, GAN samples and held-out real photos on one scale
(issue 16). All sets are compared at the same size (64 px at the defaults) against one reference set of held-out
real images (`real_image_sets`).

Features. Published FIDs use Inception-v3 pool features (Heusel et al. 2017), whose weights are a download; here
the features are dlib's 128-d face descriptor (`identity.embed`, offline, the network stage 2's identity
search uses). Values are therefore NOT comparable with published Inception FIDs or KIDs: they measure how well
samples match real faces in a face-recognition space (identity-like structure), not ImageNet texture statistics.
Face-box policy: every 64 px image is embedded with the whole frame as the face box (`face_box="whole"`): the
CelebA centre crop puts the face in the middle and fills most of the frame, and with a fixed box every image gets
a vector, so no sample is dropped (dropping the ones where no face is found would flatter a poor generator).
dlib costs ~0.18 s of CPU per image; `image_features` spreads the images over worker processes.

Metrics (features as float arrays [N, D]):
- `kid`: Kernel Inception Distance (Bińkowski et al. 2018), the unbiased MMD² estimate with the polynomial kernel
  k(x, y) = (x·y / d + 1)³, averaged over random subsets, with its standard deviation over subsets. Unbiased:
  ≈ 0 (and can be slightly negative) for two samples of one distribution, whatever the sample size.
- `fid`: Fréchet distance between Gaussians fitted to the two sets, ‖μ₁ - μ₂‖² + Tr(Σ₁ + Σ₂ - 2 (Σ₁Σ₂)^½) with
  `scipy.linalg.sqrtm`; a small ridge is added when the product is near singular, and the imaginary part that
  round-off leaves is dropped. FID is biased upwards at small N, so compare values only at equal N.
- `precision_recall`: improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
  balls around its points with radius the distance to the k-th nearest neighbour (k = 3); precision is the share
  of generated samples inside the real manifold (fidelity), recall the share of real images inside the generated
  manifold (diversity).
- `mtcnn_face_share`: the share of images in which MTCNN (facenet-pytorch's shipped weights, stage 1's detector)
  finds a face with probability >= 0.95; held-out real images give the ceiling.
- `memorisation`: each sample's distance to its nearest training image (pixels, RMS over the image) against the
  same distance for held-out real images. A sample is flagged as a likely copy when its nearest distance, divided
  by its second-nearest (so that blurry samples, close to every face alike, do not count as copies), is below
  the held-out images' 1st percentile of the same ratio.

`python -m generative metrics --checkpoint runs/gan,runs/vae --src data/celeba` scores trained models;
`benchmarks/bench_gan_vs_vae.py` trains both for the same wall time and scores them side by side.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from common.config import pick_device, seed_everything
from common.errors import InputError
from common.files import atomic_write_text
from common.images import to_uint8_arrays
from scraping.faces import mtcnn_face_share

FEATURES = "dlib face descriptor (128-d, identity.embed, whole 64 px frame as the face box)"
KID_SUBSET_SIZE = 100  # images per KID subset (the reference implementation uses 1000 on 50k-image sets)
KID_SUBSETS = 50
PR_NEIGHBOURS = 3  # k of the k-NN manifolds (Kynkäänniemi et al. 2019)
MEMORISATION_PERCENTILE = 1.0  # samples nearer a training image than this percentile of held-out real images


# ------------------------------------------------------------------------------------------------- features

def _embed_chunk(arrays: list[np.ndarray]) -> np.ndarray:
    from identity.embed import embed_images

    return embed_images(arrays, backend="dlib", face_box="whole")


def image_features(images, workers: int = 2, chunk_size: int = 25, progress: bool = True) -> np.ndarray:
    """dlib face descriptors [N, 128] (float64) of images, the whole frame taken as the face box (module docstring).

    Args:
        images: [N, 3, S, S] tensor in [0, 1] or a list of HxWx3 uint8 arrays.
        workers: processes embedding chunks in parallel (dlib runs single-threaded; 0/1 = this process).
    """
    from tqdm import tqdm

    arrays = to_uint8_arrays(images)
    chunks = [arrays[k:k + chunk_size] for k in range(0, len(arrays), chunk_size)]
    bar = tqdm(total=len(arrays), desc="face features", unit="img", disable=not progress)
    parts = []
    if workers > 1 and len(chunks) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(workers, len(chunks))) as pool:
            for part in pool.imap(_embed_chunk, chunks):
                parts.append(part)
                bar.update(len(part))
    else:
        for chunk in chunks:
            parts.append(_embed_chunk(chunk))
            bar.update(len(chunk))
    bar.close()
    features = np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 128))
    if np.isnan(features).any():  # cannot happen with a fixed box on images >= 20 px; say so if it does
        raise RuntimeError(f"{int(np.isnan(features[:, 0]).sum())} image(s) got no face descriptor")
    return features


# ------------------------------------------------------------------------------------------------------- KID

def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(x, y) = (x·y / d + 1)³ for every pair of rows (KID's kernel, d = feature dimension)."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² estimate between samples `a` [m, d] and `b` [n, d] with the polynomial kernel
    (diagonal terms left out of the within-set means; Gretton et al. 2012, eq. 3)."""
    m, n = len(a), len(b)
    k_aa, k_bb, k_ab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())


def kid(features: np.ndarray, reference: np.ndarray, subset_size: int = KID_SUBSET_SIZE,
        subsets: int = KID_SUBSETS, seed: int = 0) -> dict[str, float]:
    """Kernel Inception Distance (here on face features): mean and std of the unbiased MMD² over `subsets` random
    subsets of `subset_size` images drawn (without replacement within a subset) from each set.

    Returns {"kid", "kid_std", "subset_size", "subsets"}; subset_size shrinks to the smaller set's size.
    """
    features, reference = np.asarray(features, np.float64), np.asarray(reference, np.float64)
    size = min(subset_size, len(features), len(reference))
    if size < 2:
        raise ValueError("KID needs at least 2 images in each set")
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(features[rng.choice(len(features), size, replace=False)],
                            reference[rng.choice(len(reference), size, replace=False)]) for _ in range(subsets)]
    return {"kid": float(np.mean(values)), "kid_std": float(np.std(values)), "subset_size": int(size),
            "subsets": int(subsets)}


# ------------------------------------------------------------------------------------------------------- FID

def fid(features: np.ndarray, reference: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula, on these features).

    Guarded like the reference implementation (pytorch-fid): when sqrtm of Σ₁Σ₂ is not finite (near-singular
    covariances, e.g. fewer images than dimensions) `eps`·I is added to both; an imaginary part left by round-off
    is dropped (a large one means the covariances are unusable and raises).
    """
    from scipy import linalg

    a, b = np.asarray(features, np.float64), np.asarray(reference, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = np.eye(cov_a.shape[0]) * eps
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has an imaginary component {np.max(np.abs(root.imag)):.3g}")
        root = root.real
    diff = mu_a - mu_b
    return float(max(0.0, diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root)))


# -------------------------------------------------------------------------------------------- precision/recall

def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)] (computed as |a|² + |b|² - 2ab, clipped at 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def knn_radii(features: np.ndarray, k: int = PR_NEIGHBOURS) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour in the same set (itself excluded)."""
    distances = pairwise_distances(features, features)
    np.fill_diagonal(distances, np.inf)
    return np.partition(distances, k - 1, axis=1)[:, k - 1]


def manifold_coverage(points: np.ndarray, support: np.ndarray, k: int = PR_NEIGHBOURS) -> float:
    """Share of `points` inside the k-NN manifold of `support` (within some support point's k-NN radius)."""
    radii = knn_radii(support, k)
    inside = (pairwise_distances(points, support) <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(features: np.ndarray, reference: np.ndarray, k: int = PR_NEIGHBOURS) -> dict[str, float]:
    """Improved precision (samples inside the real manifold) and recall (real inside the samples' manifold)."""
    if min(len(features), len(reference)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per set")
    return {"precision": manifold_coverage(features, reference, k), "recall": manifold_coverage(reference, features, k)}


# --------------------------------------------------------------------------------------------------- MTCNN

# ------------------------------------------------------------------------------------------------ memorisation

def nearest_distances(queries: torch.Tensor, references: torch.Tensor | Iterable[torch.Tensor],
                      batch: int = 512) -> np.ndarray:
    """RMS pixel distances from each query image to its nearest and second-nearest reference image ([N, 2], in
    [0, 1] units). `references` is a [M, 3, S, S] tensor or an iterable of such batches (to stream a large
    training set); a query that is itself one of the references has a nearest distance of 0."""
    q = queries.detach().float().cpu().flatten(1)
    best = torch.full((len(q), 2), float("inf"))
    blocks = [references] if isinstance(references, torch.Tensor) else references
    for block in blocks:
        for start in range(0, len(block), batch):
            r = block[start:start + batch].detach().float().cpu().flatten(1)
            squared = ((q * q).sum(1, keepdim=True) + (r * r).sum(1)[None, :] - 2.0 * q @ r.T).clamp_min(0)
            two = squared.topk(min(2, squared.shape[1]), dim=1, largest=False).values
            best = torch.cat([best, two], dim=1).topk(2, dim=1, largest=False).values
    return (best / q.shape[1]).sqrt().numpy()


def memorisation(sample_nearest: np.ndarray, held_out_nearest: np.ndarray,
                 percentile: float = MEMORISATION_PERCENTILE) -> dict:
    """Flag samples that sit unusually close to one training image, measured against held-out real images.

    Each image's nearness is its nearest-training-image distance divided by its second-nearest one (both from
    `nearest_distances`): a copy of a training image scores ~0, while a blurry, average-looking sample is close
    to many training images alike and scores ~1. The raw nearest distance alone would flag such blurry samples
    as copies (they are near everything: in a first test run, 35 of 40 samples of a barely trained VAE fell
    under the held-out 1st percentile), hence the ratio. Samples whose ratio is below `percentile` % of the
    held-out images' ratios are flagged, so about that share of real, unseen images would be flagged too.

    Returns {"threshold" (of the ratio), "flagged" (count), "flagged_share", "flagged_indices",
    "median_sample_distance", "median_held_out_distance" (raw nearest distances)}.
    """
    sample_nearest, held_out_nearest = np.asarray(sample_nearest, float), np.asarray(held_out_nearest, float)

    def ratio(nearest: np.ndarray) -> np.ndarray:
        return nearest[:, 0] / np.maximum(nearest[:, 1], 1e-12)

    threshold = float(np.percentile(ratio(held_out_nearest), percentile))
    flagged = np.flatnonzero(ratio(sample_nearest) < threshold)
    return {"threshold": threshold, "flagged": int(len(flagged)),
            "flagged_share": float(len(flagged) / max(1, len(sample_nearest))),
            "flagged_indices": [int(i) for i in flagged],
            "median_sample_distance": float(np.median(sample_nearest[:, 0])),
            "median_held_out_distance": float(np.median(held_out_nearest[:, 0]))}


# ------------------------------------------------------------------------------------------------- one report

def training_batches(dataset, indices: Sequence[int], batch: int = 256):
    """The training images of `dataset` at `indices`, as [B, 3, S, S] batches (for `nearest_distances`)."""
    for start in range(0, len(indices), batch):
        yield torch.stack([dataset[i] for i in indices[start:start + batch]])


def real_image_sets(data_root: str | Path, n: int = 300, image_size: int = 64, seed: int = 0) -> dict:
    """The real images every set is scored against, each chosen by a seeded draw of `n`:

    reference: images of the "valid" split, the distribution a generator should reach (faces of people it did not
    train on); held_out: images of the "test" split, scored like a generator's samples as the real ceiling. Both
    splits are held out from training, and in CelebA both split by identity, so the two have the same structure
    (a training sample as reference would not: with identity features, k-NN radii shrink where a set holds
    several photos of one person). A split that is empty falls back to training images (reference) or a carved-out
    tenth of them (held_out). train_dataset and train_indices: the training images, for the memorisation check.
    """
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
    """Every metric for each image set in `sets` ({name: [N, 3, S, S] in [0, 1]}) against `real`
    (`real_image_sets`). The held-out real images are scored too, as "real" (the ceiling / floor every generator
    is measured against). Returns {name: {kid, kid_std, fid, precision, recall, mtcnn_face_share,
    memorised, memorised_share, nearest_train_distance_median, images}} plus "reference_images", "train_images",
    "features" and "seconds" (time spent on features, memorisation and MTCNN).
    """
    all_sets = {**sets, "real": real["held_out"]}
    # one feature pass over everything: the worker processes load dlib's models once
    import time

    seconds, tick = {}, time.perf_counter()
    names = list(all_sets)
    stacked = torch.cat([real["reference"], *[all_sets[name] for name in names]])
    features = image_features(stacked, workers, progress=progress)
    reference_features, start, per_set = features[:len(real["reference"])], len(real["reference"]), {}
    for name in names:
        per_set[name], start = features[start:start + len(all_sets[name])], start + len(all_sets[name])
    seconds["features"], tick = time.perf_counter() - tick, time.perf_counter()
    batches = list(training_batches(real["train_dataset"], real["train_indices"]))
    held_distances = nearest_distances(real["held_out"], batches)
    memos = {name: memorisation(held_distances if name == "real" else nearest_distances(all_sets[name], batches),
                                held_distances) for name in names}
    seconds["memorisation"], tick = time.perf_counter() - tick, time.perf_counter()
    shares = {name: mtcnn_face_share(all_sets[name])["share"] for name in names}
    seconds["mtcnn"] = time.perf_counter() - tick
    out = {"reference_images": len(real["reference"]), "reference_from": real.get("reference_from"),
           "train_images": len(real["train_indices"]),
           "features": FEATURES, "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    for name in names:
        images, memo = all_sets[name], memos[name]
        out[name] = {
            "images": len(images),
            **kid(per_set[name], reference_features, seed=seed),
            "fid": fid(per_set[name], reference_features),
            **precision_recall(per_set[name], reference_features),
            "mtcnn_face_share": shares[name],
            "memorised": memo["flagged"], "memorised_share": memo["flagged_share"],
            "memorisation_threshold": memo["threshold"],
            "nearest_train_distance_median": memo["median_sample_distance"],
        }
    return out


# ---------------------------------------------------------------------------------------------------- figure

METRIC_BARS = (("kid", "KID (face features)"), ("fid", "FID (face features)"), ("precision", "precision (k=3)"),
               ("recall", "recall (k=3)"), ("mtcnn_face_share", "MTCNN face share"))


def comparison_figure(samples: Mapping[str, torch.Tensor], scores: Mapping[str, dict], out_png: str | Path,
                      columns: int = 6, rows: int = 3, title: str = "") -> Path:
    """Sample grids side by side (`rows` × `columns` per set) over one bar chart per metric (KID with its std
    over subsets as an error bar), saved as a 256-colour PNG (`common.images.save_sheet`).

    Args:
        samples: {set name: [N, 3, S, S] in [0, 1]}, e.g. real / vae / gan; the first rows·columns are shown.
        scores: {set name: the dict `score_sets` gives for it}; bars follow the order of `samples`.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from common.images import save_sheet

    from vae.train import image_grid

    names = list(samples)
    colours = {"real": "#4d4d4d", "vae": "#1f77b4", "gan": "#d62728"}
    figure = plt.figure(figsize=(12, 5.6), dpi=90)
    # top row: one panel per set, bottom row: one per metric, on a shared grid of len(names)·len(metrics) columns
    top, bottom = len(METRIC_BARS), len(names)
    grid = figure.add_gridspec(2, top * bottom, height_ratios=[1.1, 1])
    for k, name in enumerate(names):
        axis = figure.add_subplot(grid[0, k * top:(k + 1) * top])
        shown = samples[name][:rows * columns]
        axis.imshow(image_grid([shown[r * columns:(r + 1) * columns] for r in range(len(shown) // columns)]))
        axis.set_title(name, fontsize=11)
        axis.axis("off")
    for k, (key, label) in enumerate(METRIC_BARS):
        axis = figure.add_subplot(grid[1, k * bottom:(k + 1) * bottom])
        values = [scores[name][key] for name in names]
        errors = [scores[name]["kid_std"] for name in names] if key == "kid" else None
        axis.bar(names, values, yerr=errors, capsize=3, color=[colours.get(n, "#888888") for n in names])
        axis.set_title(label, fontsize=9)
        axis.tick_params(labelsize=8)
        if key in ("precision", "recall", "mtcnn_face_share"):
            axis.set_ylim(0, 1.05)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    buffer.seek(0)
    with Image.open(buffer) as image:
        return save_sheet(image.convert("RGB"), out_png)


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

    lines = ["| " + " | ".join(label for _, label in TABLE_COLUMNS) + " |",
             "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell(row, key) for key, _ in TABLE_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


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


# -------------------------------------------------------------------------------------------------- samplers

def load_sampler(checkpoint: str | Path, device: str = "cpu"):
    """A trained VAE or GAN checkpoint -> (kind, image_size, sample(n, seed) -> [n, 3, S, S] in [0, 1])."""
    from common.checkpoints import load_checkpoint

    path = Path(checkpoint)
    path = path / "checkpoint.pt" if path.is_dir() else path
    kind = "gan" if load_checkpoint(path).get("kind") == "gan" else "vae"
    if kind == "gan":
        from generative.gan import load_gan

        model, saved = load_gan(path, device)
    else:
        from vae.train import load_vae

        model, saved = load_vae(path, device)
    model.eval()

    def sample(n: int, seed: int = 0, batch: int = 100) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        parts = [model.sample(min(batch, n - k), generator=generator).cpu() for k in range(0, n, batch)]
        return torch.cat(parts)

    return kind, int(saved["config"]["image_size"]), sample


# ------------------------------------------------------------------------------------------------------------ CLI

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
