"""Disentanglement scores on known factors (`latent.factors`) and a β-VAE sweep.

MIG (Chen et al. 2018, `disentanglement_lib`'s discrete estimator), the FactorVAE score (Kim & Mnih 2018) and DCI
(Eastwood & Williams 2018) on the encoder's means; the β-VAE (Higgins et al. 2017) is `vae.model.ConvVAE` with a
Bernoulli likelihood. `python -m latent beta-sweep --betas 1 4 16 --seeds 0 1 2 --out runs/latent/beta`
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.stats import entropy
from sklearn.metrics import mutual_info_score
from tqdm import tqdm

from common.config import seed_everything
from common.files import write_record
from common.images import label_image, save_sheet

from vae.figures import labelled_grid
from vae.losses import vae_loss
from vae.metrics import mse, ssim
from vae.model import ConvVAE

MIG_BINS = 20
SUMMARY_KEYS = ("mig", "factor_vae", "dci_disentanglement", "mse", "ssim", "active_dims")


def mig(latents: np.ndarray, codes: np.ndarray, bins: int = MIG_BINS) -> dict:
    """Mutual-information gap (latents in `bins` equal-width bins): per factor, the MI gap (nats) between its two most
    informative dimensions over its entropy, averaged. Returns {"mig", "per_factor" [F], "mi" [D, F], "entropy" [F]}."""
    latents, codes = np.asarray(latents, np.float64), np.asarray(codes)
    if latents.shape[1] < 2:
        raise ValueError("MIG needs at least two latent dimensions")
    binned = [np.digitize(column, np.histogram_bin_edges(column, bins)[1:-1]) for column in latents.T]
    mi = np.array([[mutual_info_score(factor, b) for factor in codes.T] for b in binned])
    entropy = np.array([mutual_info_score(factor, factor) for factor in codes.T])
    top = np.sort(mi, axis=0)[::-1]
    per_factor = np.where(entropy > 0, (top[0] - top[1]) / np.maximum(entropy, 1e-12), 0.0)
    return {"mig": float(per_factor.mean()), "per_factor": per_factor.tolist(), "mi": mi.tolist(),
            "entropy": entropy.tolist()}


def factor_vae_score(latents: np.ndarray, codes: np.ndarray, n_train: int = 2000, n_eval: int = 1000,
                     batch_size: int = 64, seed: int = 0) -> dict:
    """FactorVAE score: each vote fixes a factor's level in `batch_size` pool images and picks the latent of least
    normalised variance; a majority-vote classifier of training votes is scored on others: {"score", "active_dims"}."""
    latents, codes = np.asarray(latents, np.float64), np.asarray(codes)
    scale = latents.std(axis=0)
    active = np.flatnonzero(scale > 1e-8)
    if not len(active):
        return {"score": 0.0, "active_dims": 0}
    rng = np.random.default_rng(seed)
    n, n_factors = codes.shape
    rows_by_level = [{v: np.flatnonzero(codes[:, k] == v) for v in np.unique(codes[:, k])} for k in range(n_factors)]

    def votes(count: int) -> np.ndarray:  # rows of (argmin dimension, fixed factor)
        out = np.empty((count, 2), np.int64)
        for t in range(count):
            k = int(rng.integers(n_factors))
            pool = rows_by_level[k][codes[int(rng.integers(n)), k]]
            batch = latents[rng.choice(pool, size=batch_size, replace=len(pool) < batch_size)]
            out[t] = (active[np.argmin(np.var(batch[:, active] / scale[active], axis=0, ddof=1))], k)
        return out

    train, evaluation = votes(n_train), votes(n_eval)
    counts = np.zeros((latents.shape[1], n_factors), np.int64)
    np.add.at(counts, (train[:, 0], train[:, 1]), 1)
    return {"score": float((counts.argmax(axis=1)[evaluation[:, 0]] == evaluation[:, 1]).mean()),
            "active_dims": len(active)}


def dci(latents: np.ndarray, codes: np.ndarray, train_fraction: float = 0.8, n_estimators: int = 30,
        seed: int = 0) -> dict:
    """DCI from one gradient-boosted classifier per factor: its importances give disentanglement (few factors per
    dimension) and completeness (few dimensions per factor), its held-out accuracy the informativeness."""
    from sklearn.ensemble import GradientBoostingClassifier

    latents, codes = np.asarray(latents, np.float64), np.asarray(codes)
    (n, n_dims), n_factors = latents.shape, codes.shape[1]
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[:int(n * train_fraction)], order[int(n * train_fraction):]
    importance, accuracy = np.zeros((n_dims, n_factors)), []
    for k in range(n_factors):
        if len(np.unique(codes[train, k])) < 2:
            accuracy.append(1.0)
            continue
        model = GradientBoostingClassifier(n_estimators=n_estimators, random_state=seed)
        model.fit(latents[train], codes[train, k])
        importance[:, k] = np.abs(model.feature_importances_)
        accuracy.append(float(model.score(latents[test], codes[test, k])))
    total = importance.sum()
    out = {"disentanglement": 0.0, "completeness": 0.0, "informativeness": float(np.mean(accuracy)),
           "importance": importance.tolist()}
    if total > 0:  # 1 - normalised entropy of each dimension's (factor's) importances, weighted by its share
        h_dims = np.nan_to_num(entropy(importance, base=max(n_factors, 2), axis=1))  # an unused dimension: 0
        h_factors = np.nan_to_num(entropy(importance.T, base=max(n_dims, 2), axis=1))
        out["disentanglement"] = float(importance.sum(1) / total @ (1 - h_dims))
        out["completeness"] = float(importance.sum(0) / total @ (1 - h_factors))
    return out


def score_representation(latents: np.ndarray, codes: np.ndarray, seed: int = 0, with_dci: bool = True) -> dict:
    """MIG, FactorVAE score and (optionally) DCI of one representation, as plain numbers plus the MI matrix."""
    m, f = mig(latents, codes), factor_vae_score(latents, codes, seed=seed)
    out = {"mig": m["mig"], "mig_per_factor": m["per_factor"], "mi": m["mi"], "entropy": m["entropy"],
           "factor_vae": f["score"], "active_dims": f["active_dims"]}
    if with_dci:
        d = dci(latents, codes, seed=seed)
        out.update(dci_disentanglement=d["disentanglement"], dci_completeness=d["completeness"],
                   dci_informativeness=d["informativeness"])
    return out


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
    """One β-VAE run on factor data (Bernoulli likelihood; the image size is the data's)."""

    beta: float = 4.0  # weight of the KL term
    seed: int = 0  # seeds the initialisation and the batches
    steps: int = 1500  # optimizer steps
    batch_size: int = 64
    lr: float = 1e-3  # Adam learning rate
    latent_dim: int = 10
    base_channels: int = 16  # width of the first conv stage of `ConvVAE`
    threads: int | None = None  # torch threads (None: PyTorch's default)


def fit_in_memory(model, images: torch.Tensor, config, conditions: torch.Tensor | None = None, penalty=None,
                  penalty_weight: float = 0.0, progress: bool = True, desc: str = "") -> tuple[torch.nn.Module, dict]:
    """Adam on `images` ([N, 3, S, S] in [0, 1], in memory) with the Bernoulli VAE loss (KL weighted by `config.beta`);
    a conditional model also gets its `conditions` [N, A] and adds `penalty_weight · penalty(first_layer, c)`.
    Returns (model in eval mode, history: recon, kl and the penalty ("mmd") per step, and seconds)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history, started = {"recon": [], "kl": [], "mmd": []}, time.perf_counter()
    model.train()
    batches = shuffled_batches(images.shape[0], config.batch_size, config.steps, config.seed)
    for index in tqdm(batches, total=config.steps, desc=desc, disable=not progress, leave=False):
        x, extra = images[index], images.new_zeros(())
        if conditions is None:
            x_hat, mu, logvar = model(x)
        else:
            x_hat, mu, logvar, first = model(x, conditions[index])
            extra = penalty(first, conditions[index]) if penalty else extra
        losses = vae_loss(x_hat, x, mu, logvar, beta=config.beta, recon_kind="bce")
        optimizer.zero_grad(set_to_none=True)
        (losses["total"] + penalty_weight * extra).backward()
        optimizer.step()
        for key, value in (("recon", losses["recon"]), ("kl", losses["kl"]), ("mmd", extra)):
            history[key].append(float(value.detach()))
    history["seconds"] = time.perf_counter() - started
    return model.eval(), history


def train_beta_vae(images: torch.Tensor, config: BetaConfig, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train a β-VAE on `images` ([N, 3, S, S] in [0, 1]); deterministic for a given seed and thread count."""
    seed_everything(config.seed, threads=config.threads)
    model = ConvVAE(latent_dim=config.latent_dim, image_size=images.shape[-1], base_channels=config.base_channels)
    return fit_in_memory(model, images, config, progress=progress, desc=f"β-VAE β={config.beta:g} seed {config.seed}")


def kl_per_dimension(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Mean KL(q(z_j|x) || N(0, 1)) of each latent dimension over a pool: which dimensions the model uses."""
    return (0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar)).mean(axis=0)


@torch.no_grad()
def evaluate_beta_vae(model, pool_images: torch.Tensor, pool_codes: np.ndarray, names: Sequence[str],
                      seed: int = 0, with_dci: bool = True) -> dict:
    """`score_representation` of the posterior means on a labelled held-out pool, plus reconstruction MSE and SSIM,
    KL per dimension and each dimension's label: the factor it carries most (by MI / H(factor)) and that ratio."""
    encoded = [model.encode(batch) for batch in pool_images.split(256)]
    mu, logvar = torch.cat([e[0] for e in encoded]), torch.cat([e[1] for e in encoded])
    x_hat = torch.cat([model.decode(batch) for batch in mu.split(256)])
    mu, logvar = mu.numpy(), logvar.numpy()
    scores = score_representation(mu, pool_codes, seed=seed, with_dci=with_dci)
    normalised = np.array(scores["mi"]) / np.maximum(np.array(scores["entropy"])[None, :], 1e-12)
    scores.update(mse=float(mse(x_hat, pool_images).mean()), ssim=float(ssim(x_hat, pool_images).mean()),
                  kl_per_dim=kl_per_dimension(mu, logvar).tolist(),
                  dimension_labels=[(names[k], float(normalised[j, k])) for j, k in enumerate(normalised.argmax(1))])
    return scores


@torch.no_grad()
def traversal_figure(model, image: torch.Tensor, kl: Sequence[float], labels: Sequence[tuple[str, float]],
                     out_png: str | Path, n_dims: int = 6, n_steps: int = 7, span: float = 2.5,
                     title: str = "") -> Path:
    """Sweep the `n_dims` most used dimensions (highest KL) of one face from −span to +span (prior units), one row
    each, labelled with the factor the dimension carries; returns the PNG's path."""
    dims = [int(d) for d in np.argsort(-np.asarray(kl))[:n_dims]]
    z0 = model.encode(image[None])[0][0]
    offsets = torch.linspace(-span, span, n_steps)
    rows = []
    for d in dims:
        z = z0.repeat(n_steps, 1)
        z[:, d] = offsets
        rows.append(list(model.decode(z)))
    grid = labelled_grid(rows, row_labels=[f"z{d} {labels[d][0]} {labels[d][1]:.2f}" for d in dims],
                         col_labels=[f"{o:+.1f}" for o in offsets.tolist()], cell_size=64, label_width=120)
    return save_sheet(label_image([grid], [title]) if title else grid, out_png)


def beta_sweep(train, pool, betas: Sequence[float], seeds: Sequence[int], out_dir: str | Path, steps: int = 1500,
               threads: int | None = None, with_dci: bool = True, progress: bool = True) -> dict:
    """Train and score a β-VAE per (β, seed) on `train` and `pool` (`FactorData`); write `sweep.json` and a traversal
    figure per β. Returns {"config", "runs", "by_beta": {β: {key: mean, min, max over seeds}}, "figures"}."""
    out_dir = Path(out_dir)
    train_images, pool_images = train.tensors(), pool.tensors()
    runs, figures = [], {}
    for beta in betas:
        for seed in seeds:
            model, history = train_beta_vae(train_images, BetaConfig(float(beta), int(seed), steps, threads=threads),
                                            progress=progress)
            scores = evaluate_beta_vae(model, pool_images, pool.codes, pool.names, seed=int(seed), with_dci=with_dci)
            runs.append({"beta": float(beta), "seed": int(seed), "steps": steps,
                         "final_recon": float(np.mean(history["recon"][-50:])),
                         "final_kl": float(np.mean(history["kl"][-50:])), "train_seconds": history["seconds"],
                         **{k: v for k, v in scores.items() if k != "mi"}})
            if seed == seeds[0]:
                title = f"beta = {beta:g}, seed {seed}: MIG {scores['mig']:.2f}, FactorVAE {scores['factor_vae']:.2f}"
                figures[f"{beta:g}"] = traversal_figure(model, pool_images[0], scores["kl_per_dim"],
                                                        scores["dimension_labels"],
                                                        out_dir / f"traversal_beta{beta:g}.png", title=title).name
    by_beta = {}
    for beta in sorted({r["beta"] for r in runs}):
        group = [r for r in runs if r["beta"] == beta]
        by_beta[f"{beta:g}"] = {key: {stat: float(f([r[key] for r in group])) for stat, f in
                                      (("mean", np.mean), ("min", np.min), ("max", np.max))}
                                for key in SUMMARY_KEYS if all(key in r for r in group)} | {"seeds": len(group)}
    summary = {"config": {**asdict(BetaConfig(steps=steps)), "betas": [float(b) for b in betas],
                          "seeds": [int(s) for s in seeds], "train_images": len(train), "pool_images": len(pool),
                          "factors": list(pool.names)},
               "runs": runs, "by_beta": by_beta, "figures": figures}
    write_record(out_dir / "sweep.json", summary)
    return summary


def factor_levels_figure(out_png: str | Path, seed: int = 0, size: int = 64, photo: int = 0) -> dict:
    """One row per factor: the same photo re-rendered at each of that factor's levels (what a counterfactual is).
    Returns {"path", "factors"}."""
    from latent.factors import FACTORS, render_codes, sample_codes

    codes = sample_codes(photo + 1, seed)[photo]
    width = max(f.n_levels for f in FACTORS)
    rows = []
    for k, factor in enumerate(FACTORS):
        variants = np.repeat(codes[None], factor.n_levels, axis=0)
        variants[:, k] = np.arange(factor.n_levels)
        blank = np.full((size, size, 3), 255, np.uint8)
        rows.append(list(render_codes(variants, seed, size, indices=[photo] * factor.n_levels))
                    + [blank] * (width - factor.n_levels))
    grid = labelled_grid(rows, row_labels=[f.name for f in FACTORS], col_labels=[f"level {i}" for i in range(width)],
                         cell_size=size, label_width=90)
    return {"path": str(save_sheet(grid, out_png)), "factors": [f.name for f in FACTORS]}


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m latent beta-sweep`: train β-VAEs on labelled synthetic portraits and score their latents."""
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500, help="training steps per model (batch 64)")
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--pool-images", type=int, default=4000, help="labelled held-out pool the metrics use")
    parser.add_argument("--size", type=int, default=32, help="portrait side in px (32 or 64)")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the portraits")
    parser.add_argument("--no-dci", action="store_true", help="skip DCI (the slowest score)")
    parser.add_argument("--out", required=True, help="folder for sweep.json and the traversal figures")


def cli_run(args: argparse.Namespace) -> dict:
    from latent.factors import factor_dataset

    train = factor_dataset(args.train_images, seed=0, size=args.size, workers=args.workers)
    pool = factor_dataset(args.pool_images, seed=1000, size=args.size, workers=args.workers)
    summary = beta_sweep(train, pool, args.betas, args.seeds, args.out, steps=args.steps, with_dci=not args.no_dci)
    return {"command": "beta-sweep", "out": args.out, "by_beta": summary["by_beta"]}
