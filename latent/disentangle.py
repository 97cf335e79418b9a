"""A latent space you can measure: disentanglement metrics on known factors, and a β-VAE sweep (issue 15).

The synthetic world knows every generative factor of every photo (`latent.factors`), so how well a VAE's latent
space separates them can be measured instead of eyeballed. Three scores, all computed on the encoder's means
(`mu`) of a labelled pool, implemented once here:

- **MIG**, the mutual-information gap (Chen et al. 2018, "Isolating sources of disentanglement", the discrete
  estimator of `disentanglement_lib`): each latent dimension is discretised into 20 equal-width bins over its
  range; I(z_j; v_k) is the empirical mutual information between bin and factor level. For each factor, the gap
  between the most and the second most informative dimension, divided by the factor's entropy H(v_k); averaged
  over factors. 1 = each factor read off one dimension alone; 0 = no dimension stands out (e.g. a factor copied
  into two dimensions).
- **FactorVAE score** (Kim & Mnih 2018): each vote fixes one factor at one level, takes a batch of `batch_size`
  pool images sharing it, and picks the latent dimension with the smallest variance across the batch (latents
  divided by their pool standard deviation; dimensions with no variance are ignored). A majority-vote classifier
  (each dimension votes for the factor it was most often the argmin of) is fit on training votes and scored on
  separate evaluation votes: its accuracy is the score (chance ≈ 1 / number of factors).
- **DCI** (Eastwood & Williams 2018), secondary: a gradient-boosted tree classifier per factor predicts the level
  from the latents; its feature importances R[j, k] give disentanglement (how few factors each dimension
  matters for, weighted by the dimension's share of importance), completeness (how few dimensions each factor
  needs) and informativeness (the classifiers' held-out accuracy).

Sanity cases (`tests/test_disentangle.py`, those of `disentanglement_lib`): a representation that *is* the factors
scores MIG ≈ 1 and FactorVAE 1; a constant one scores 0; a factor duplicated into two dimensions drives its MIG
term to 0; random noise scores near chance.

For scale, published numbers on dSprites (Locatello et al. 2019, Chen et al. 2018, Kim & Mnih 2018): MIG VAE ≈ 0.10,
β-VAE ≈ 0.21, β-TCVAE ≈ 0.45; FactorVAE score VAE ≈ 0.63, FactorVAE ≈ 0.82. Our factors are not dSprites', so the
numbers are for orientation only.

The β-VAE (Higgins et al. 2017) is the repo's convolutional VAE (`vae.model.ConvVAE`, here base width 16: 16-32-64 channels
at 32 px, 16-32-64-128 at 64 px; 10 latent dimensions) with a Bernoulli pixel likelihood (the convention of `disentanglement_lib`) and the KL term
weighted by β; `train_beta_vae` trains it on an in-memory `FactorData`, `beta_sweep` trains every (β, seed) pair
and scores it, `traversal_figure` sweeps the most used dimensions, each labelled with the factor it carries.

    python -m latent beta-sweep --betas 1 4 16 --seeds 0 1 2 --out runs/latent/beta
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import mutual_info_score
from tqdm import tqdm

from common.config import seed_everything
from common.files import write_record

MIG_BINS = 20


# --------------------------------------------------------------------------------------------------- metrics
def discretize(latents: np.ndarray, bins: int = MIG_BINS) -> np.ndarray:
    """Each column of `latents` [N, D] cut into `bins` equal-width bins over its own range: int [N, D]."""
    latents = np.asarray(latents, np.float64)
    out = np.zeros(latents.shape, np.int64)
    for j in range(latents.shape[1]):
        column = latents[:, j]
        edges = np.histogram_bin_edges(column, bins)
        out[:, j] = np.digitize(column, edges[1:-1])
    return out


def mutual_information(latents: np.ndarray, codes: np.ndarray, bins: int = MIG_BINS) -> np.ndarray:
    """Empirical mutual information (nats) between each discretised latent and each factor: [D, F]."""
    binned, codes = discretize(latents, bins), np.asarray(codes)
    return np.array([[mutual_info_score(codes[:, k], binned[:, j]) for k in range(codes.shape[1])]
                     for j in range(binned.shape[1])])


def factor_entropy(codes: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each factor's empirical level distribution: [F]."""
    codes = np.asarray(codes)
    return np.array([mutual_info_score(codes[:, k], codes[:, k]) for k in range(codes.shape[1])])


def mig(latents: np.ndarray, codes: np.ndarray, bins: int = MIG_BINS) -> dict:
    """Mutual-information gap (module docstring): {"mig", "per_factor" [F], "mi" [D, F], "entropy" [F]}."""
    latents = np.asarray(latents, np.float64)
    if latents.shape[1] < 2:
        raise ValueError("MIG needs at least two latent dimensions")
    mi = mutual_information(latents, codes, bins)
    entropy = factor_entropy(codes)
    top = np.sort(mi, axis=0)[::-1]
    per_factor = np.where(entropy > 0, (top[0] - top[1]) / np.maximum(entropy, 1e-12), 0.0)
    return {"mig": float(per_factor.mean()), "per_factor": per_factor.tolist(), "mi": mi.tolist(),
            "entropy": entropy.tolist()}


def _factor_votes(latents: np.ndarray, codes: np.ndarray, scale: np.ndarray, active: np.ndarray, n_votes: int,
                  batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """[n_votes, 2] rows of (argmin dimension, fixed factor)."""
    n, n_factors = codes.shape
    rows_by_level = [{int(v): np.flatnonzero(codes[:, k] == v) for v in np.unique(codes[:, k])}
                     for k in range(n_factors)]
    votes = np.empty((n_votes, 2), np.int64)
    active_idx = np.flatnonzero(active)
    for t in range(n_votes):
        k = int(rng.integers(n_factors))
        level = int(codes[int(rng.integers(n)), k])
        pool = rows_by_level[k][level]
        batch = latents[rng.choice(pool, size=batch_size, replace=len(pool) < batch_size)]
        variances = np.var(batch[:, active_idx] / scale[active_idx], axis=0, ddof=1)
        votes[t] = (active_idx[int(np.argmin(variances))], k)
    return votes


def factor_vae_score(latents: np.ndarray, codes: np.ndarray, n_train: int = 2000, n_eval: int = 1000,
                     batch_size: int = 64, seed: int = 0) -> dict:
    """FactorVAE score (module docstring): {"score", "train_accuracy", "active_dims", "dim_to_factor"}.

    Votes sample from the labelled pool (`codes` [N, F]), so the pool should hold at least `batch_size` images
    per factor level. A representation without any varying dimension scores 0.
    """
    latents, codes = np.asarray(latents, np.float64), np.asarray(codes)
    scale = latents.std(axis=0)
    active = scale > 1e-8
    if not active.any():
        return {"score": 0.0, "train_accuracy": 0.0, "active_dims": 0, "dim_to_factor": []}
    rng = np.random.default_rng(seed)
    n_factors = codes.shape[1]
    train = _factor_votes(latents, codes, scale, active, n_train, batch_size, rng)
    evaluation = _factor_votes(latents, codes, scale, active, n_eval, batch_size, rng)
    counts = np.zeros((latents.shape[1], n_factors), np.int64)
    np.add.at(counts, (train[:, 0], train[:, 1]), 1)
    dim_to_factor = counts.argmax(axis=1)
    train_accuracy = float((dim_to_factor[train[:, 0]] == train[:, 1]).mean())
    score = float((dim_to_factor[evaluation[:, 0]] == evaluation[:, 1]).mean())
    return {"score": score, "train_accuracy": train_accuracy, "active_dims": int(active.sum()),
            "dim_to_factor": dim_to_factor.tolist()}


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    logs = np.log(np.where(p > 0, p, 1.0)) / np.log(base)
    return -(p * logs).sum(axis=1)


def dci(latents: np.ndarray, codes: np.ndarray, train_fraction: float = 0.8, n_estimators: int = 30,
        seed: int = 0) -> dict:
    """DCI disentanglement / completeness / informativeness (module docstring) with gradient-boosted trees."""
    from sklearn.ensemble import GradientBoostingClassifier

    latents, codes = np.asarray(latents, np.float64), np.asarray(codes)
    n, n_dims = latents.shape
    n_factors = codes.shape[1]
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * train_fraction)
    train, test = order[:cut], order[cut:]
    importance = np.zeros((n_dims, n_factors))
    accuracy = []
    for k in range(n_factors):
        if len(np.unique(codes[train, k])) < 2:
            accuracy.append(1.0)
            continue
        model = GradientBoostingClassifier(n_estimators=n_estimators, random_state=seed)
        model.fit(latents[train], codes[train, k])
        importance[:, k] = np.abs(model.feature_importances_)
        accuracy.append(float(model.score(latents[test], codes[test, k])))
    total = importance.sum()
    if total <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": float(np.mean(accuracy)),
                "importance": importance.tolist()}
    dim_weight = importance.sum(axis=1) / total
    factor_weight = importance.sum(axis=0) / total
    disentanglement = float((dim_weight * (1 - _entropy_rows(importance, max(n_factors, 2)))).sum())
    completeness = float((factor_weight * (1 - _entropy_rows(importance.T, max(n_dims, 2)))).sum())
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness": float(np.mean(accuracy)), "importance": importance.tolist()}


def score_representation(latents: np.ndarray, codes: np.ndarray, seed: int = 0, with_dci: bool = True) -> dict:
    """MIG, FactorVAE score and (optionally) DCI of one representation, as plain numbers plus the MI matrix."""
    m = mig(latents, codes)
    f = factor_vae_score(latents, codes, seed=seed)
    out = {"mig": m["mig"], "mig_per_factor": m["per_factor"], "mi": m["mi"], "entropy": m["entropy"],
           "factor_vae": f["score"], "active_dims": f["active_dims"]}
    if with_dci:
        d = dci(latents, codes, seed=seed)
        out.update(dci_disentanglement=d["disentanglement"], dci_completeness=d["completeness"],
                   dci_informativeness=d["informativeness"])
    return out


# --------------------------------------------------------------------------------------------------- β-VAE
def shuffled_batches(n: int, batch_size: int, steps: int, seed: int):
    """`steps` index batches over `n` in-memory examples: a seeded permutation, drawn again once fewer than
    `batch_size` examples remain (the tail of an epoch is dropped). Shared by the β-VAE and the transfer models."""
    generator = torch.Generator().manual_seed(seed)
    order, position = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if position + batch_size > n:
            order, position = torch.randperm(n, generator=generator), 0
        yield order[position:position + batch_size]
        position += batch_size


@dataclass
class BetaConfig:
    """One β-VAE run on factor data (10 latent dimensions, Bernoulli likelihood; the image size is the data's)."""

    beta: float = 4.0
    seed: int = 0
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    latent_dim: int = 10
    base_channels: int = 16
    recon_kind: str = "bce"
    threads: int | None = None


def build_beta_vae(config: BetaConfig, image_size: int = 64):
    from vae.model import ConvVAE

    return ConvVAE(latent_dim=config.latent_dim, image_size=image_size, base_channels=config.base_channels)


def train_beta_vae(images: torch.Tensor, config: BetaConfig, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train a β-VAE on `images` ([N, 3, S, S] in [0, 1], held in memory); returns (model in eval mode, history).

    Deterministic for a given seed and thread count: the batches come from a generator seeded with `config.seed`.
    """
    from vae.losses import vae_loss

    seed_everything(config.seed, threads=config.threads)
    model = build_beta_vae(config, images.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = {"recon": [], "kl": []}
    model.train()
    started = time.perf_counter()
    batches = shuffled_batches(images.shape[0], config.batch_size, config.steps, config.seed)
    for index in tqdm(batches, total=config.steps, desc=f"β-VAE β={config.beta:g} seed {config.seed}",
                      disable=not progress, leave=False):
        batch = images[index]
        x_hat, mu, logvar = model(batch)
        losses = vae_loss(x_hat, batch, mu, logvar, beta=config.beta, recon_kind=config.recon_kind)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        history["recon"].append(float(losses["recon"].detach()))
        history["kl"].append(float(losses["kl"].detach()))
    model.eval()
    history["seconds"] = time.perf_counter() - started
    return model, history


@torch.no_grad()
def encode_pool(model, images: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of `images`: two float arrays [N, latent_dim]."""
    model.eval()
    mus, logvars = [], []
    for start in range(0, images.shape[0], batch_size):
        mu, logvar = model.encode(images[start:start + batch_size])
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus).numpy(), torch.cat(logvars).numpy()


@torch.no_grad()
def reconstruction_quality(model, images: torch.Tensor, batch_size: int = 256) -> dict:
    """Held-out reconstruction from the posterior mean: per-pixel MSE and SSIM, averaged over images."""
    from vae.metrics import mse, ssim

    errors, similarities = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        x_hat = model.decode(model.encode(batch)[0])
        errors.append(mse(x_hat, batch))
        similarities.append(ssim(x_hat, batch))
    return {"mse": float(torch.cat(errors).mean()), "ssim": float(torch.cat(similarities).mean())}


def kl_per_dimension(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Mean KL(q(z_j|x) || N(0, 1)) of each latent dimension over a pool: which dimensions the model uses."""
    return (0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar)).mean(axis=0)


def dimension_labels(mi: np.ndarray, entropy: np.ndarray, names: Sequence[str]) -> list[tuple[str, float]]:
    """For each latent dimension, the factor it carries most (by MI / H(factor)) and that normalised MI."""
    normalised = np.asarray(mi) / np.maximum(np.asarray(entropy)[None, :], 1e-12)
    return [(names[int(k)], float(normalised[j, k])) for j, k in enumerate(normalised.argmax(axis=1))]


@torch.no_grad()
def traversal_figure(model, image: torch.Tensor, kl: np.ndarray, labels: Sequence[tuple[str, float]],
                     out_png: str | Path, n_dims: int = 6, n_steps: int = 7, span: float = 2.5,
                     title: str | None = None) -> dict:
    """Sweep the `n_dims` most used dimensions (highest KL) of one face from −span to +span (prior units), one row
    each, labelled with the factor the dimension carries (`dimension_labels`). Returns {"path", "dims", "labels"}."""
    from vae.figures import labelled_grid

    dims = [int(d) for d in np.argsort(-np.asarray(kl))[:n_dims]]
    z0 = model.encode(image[None])[0][0]
    offsets = torch.linspace(-span, span, n_steps)
    rows, row_labels = [], []
    for d in dims:
        z = z0.repeat(n_steps, 1)
        z[:, d] = offsets
        rows.append(list(model.decode(z)))
        factor, share = labels[d]
        row_labels.append(f"z{d} {factor} {share:.2f}")
    grid = labelled_grid(rows, row_labels=row_labels, col_labels=[f"{o:+.1f}" for o in offsets.tolist()],
                         cell_size=64, label_width=120)
    from common.images import label_image, save_sheet

    if title:
        grid = label_image([grid], [title])
    path = save_sheet(grid, out_png)
    return {"path": str(path), "dims": dims, "labels": [labels[d] for d in dims]}


def evaluate_beta_vae(model, pool_images: torch.Tensor, pool_codes: np.ndarray, names: Sequence[str],
                      seed: int = 0, with_dci: bool = True) -> dict:
    """Scores of one trained model on a labelled held-out pool (MIG, FactorVAE, DCI, reconstruction, KL per dim)."""
    mu, logvar = encode_pool(model, pool_images)
    scores = score_representation(mu, pool_codes, seed=seed, with_dci=with_dci)
    kl = kl_per_dimension(mu, logvar)
    scores.update(reconstruction_quality(model, pool_images))
    scores["kl_per_dim"] = kl.tolist()
    scores["dimension_labels"] = dimension_labels(np.array(scores["mi"]), np.array(scores["entropy"]), names)
    return scores


def beta_sweep(train: "FactorData", pool: "FactorData", betas: Sequence[float], seeds: Sequence[int],
               out_dir: str | Path, steps: int = 1500, threads: int | None = None, with_dci: bool = True,
               progress: bool = True, figure_seed: int | None = None) -> dict:
    """Train and score a β-VAE for every (β, seed); write `sweep.json` and one traversal figure per β (of the
    `figure_seed` run, default the first seed; "figures" holds their file names in `out_dir`). Returns {"runs": [...], "by_beta": {β: means}, "figures": {...}}."""
    out_dir = Path(out_dir)
    train_images, pool_images = train.tensors(), pool.tensors()
    figure_seed = seeds[0] if figure_seed is None else figure_seed
    runs, figures = [], {}
    for beta in betas:
        for seed in seeds:
            config = BetaConfig(beta=float(beta), seed=int(seed), steps=steps, threads=threads)
            model, history = train_beta_vae(train_images, config, progress=progress)
            scores = evaluate_beta_vae(model, pool_images, pool.codes, pool.names, seed=int(seed), with_dci=with_dci)
            run = {"beta": float(beta), "seed": int(seed), "steps": steps,
                   "final_recon": float(np.mean(history["recon"][-50:])),
                   "final_kl": float(np.mean(history["kl"][-50:])), "train_seconds": history["seconds"],
                   **{k: v for k, v in scores.items() if k not in ("mi",)}}
            runs.append(run)
            if seed == figure_seed:
                figures[f"{beta:g}"] = Path(traversal_figure(
                    model, pool_images[0], np.array(scores["kl_per_dim"]), scores["dimension_labels"],
                    out_dir / f"traversal_beta{beta:g}.png",
                    title=f"beta = {beta:g}, seed {seed}: MIG {scores['mig']:.2f}, FactorVAE {scores['factor_vae']:.2f}")["path"]).name
    summary = {"config": {**asdict(BetaConfig(steps=steps)), "betas": [float(b) for b in betas],
                          "seeds": [int(s) for s in seeds], "train_images": len(train), "pool_images": len(pool),
                          "factors": list(pool.names)},
               "runs": runs, "by_beta": summarise_by_beta(runs), "figures": figures}
    write_record(out_dir / "sweep.json", summary)
    return summary


SUMMARY_KEYS = ("mig", "factor_vae", "dci_disentanglement", "mse", "ssim", "active_dims")


def summarise_by_beta(runs: Sequence[dict]) -> dict:
    """Mean, min and max over seeds of the headline scores, per β."""
    by: dict[str, dict] = {}
    for beta in sorted({r["beta"] for r in runs}):
        group = [r for r in runs if r["beta"] == beta]
        by[f"{beta:g}"] = {key: {"mean": float(np.mean([r[key] for r in group])),
                                 "min": float(np.min([r[key] for r in group])),
                                 "max": float(np.max([r[key] for r in group]))}
                           for key in SUMMARY_KEYS if all(key in r for r in group)}
        by[f"{beta:g}"]["seeds"] = len(group)
    return by


# ------------------------------------------------------------------------------------------------------ CLI
def cli_add_arguments_beta_sweep(parser: argparse.ArgumentParser) -> None:
    """`python -m latent beta-sweep`: train β-VAEs on labelled synthetic portraits and score their latents."""
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500, help="training steps per model (batch 64)")
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--pool-images", type=int, default=4000, help="labelled held-out pool the metrics use")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=32, help="portrait side in px (32 or 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the portraits")
    parser.add_argument("--no-dci", action="store_true", help="skip DCI (the slowest score)")
    parser.add_argument("--out", required=True, help="folder for sweep.json and the traversal figures")


def cli_run_beta_sweep(args: argparse.Namespace) -> dict:
    from latent.factors import factor_dataset

    train = factor_dataset(args.train_images, seed=args.data_seed, size=args.size, workers=args.workers)
    pool = factor_dataset(args.pool_images, seed=args.data_seed + 1000, size=args.size, workers=args.workers)
    summary = beta_sweep(train, pool, args.betas, args.seeds, args.out, steps=args.steps, threads=args.threads,
                         with_dci=not args.no_dci)
    return {"command": "beta-sweep", "out": args.out, "by_beta": json.loads(json.dumps(summary["by_beta"]))}


def factor_levels_figure(out_png: str | Path, seed: int = 0, size: int = 64, vary_identity: bool = False,
                         factors=None, photo: int = 0) -> dict:
    """One row per factor: the same photo re-rendered at each of that factor's levels (what a counterfactual is).
    Returns {"path", "factors"}."""
    from latent.factors import FACTORS, sample_codes, render_codes

    from vae.figures import labelled_grid

    factors = tuple(FACTORS if factors is None else factors)
    codes = sample_codes(photo + 1, seed, factors)[photo]
    width = max(f.n_levels for f in factors)
    rows, labels = [], []
    for k, factor in enumerate(factors):
        variants = np.repeat(codes[None], factor.n_levels, axis=0)
        variants[:, k] = np.arange(factor.n_levels)
        images = render_codes(variants, seed, size, vary_identity, factors, indices=[photo] * factor.n_levels)
        cells = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
        cells += [torch.ones(3, size, size)] * (width - len(cells))
        rows.append(cells)
        labels.append(factor.name)
    grid = labelled_grid(rows, row_labels=labels, col_labels=[f"level {i}" for i in range(width)], cell_size=size,
                         label_width=90)
    from common.images import save_sheet

    return {"path": str(save_sheet(grid, out_png)), "factors": [f.name for f in factors]}
