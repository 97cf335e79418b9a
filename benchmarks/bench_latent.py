"""Benchmark: a latent space you can measure and steer — β-VAE disentanglement and attribute transfer (issue 15).

Part 1 (`beta`): β-VAEs (`latent.disentangle`, 32 px by default, 10 latent dimensions, Bernoulli likelihood) trained on labelled
synthetic portraits (`latent.factors`, one base person, 9 factors) for every β in `--betas` and seed in `--seeds`;
each scored on a separate labelled pool: MIG, FactorVAE score, DCI disentanglement, held-out MSE / SSIM.
Part 2 (`transfer`): smile-vector arithmetic vs a conditional VAE vs trVAE (`latent.transfer`) on random people
without the held-out cell (smiling with glasses), flipping smile and glasses on held-out people, scored against the
world's re-render (MSE, SSIM), by an independent attribute judge (transfer rate, other attribute kept) and by the
dlib descriptor distance to the original, for every seed in `--transfer-seeds`.

Writes results/benchmarks/latent_beta.json and latent_transfer.json (via `reporting.report`) and the figures of the
first seed under results/benchmarks/latent/.

    python benchmarks/bench_latent.py [--parts beta transfer] [--betas 1 4 16 64] [--seeds 0 1 2] [--steps 1500]

Prints one JSON object per part on its last lines. About an hour on 2 cores at the defaults (measured: 59 min of CPU time, beta part about 17 min of wall time).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from reporting import BENCHMARKS, report

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _repo_path(path: Path) -> str:
    """A figure's path relative to the repo when inside it, else its file name (no machine paths in results)."""
    resolved = path.resolve()
    return resolved.relative_to(PROJECT_ROOT).as_posix() if resolved.is_relative_to(PROJECT_ROOT) else path.name


def beta_part(args) -> dict:
    from latent.disentangle import beta_sweep
    from latent.factors import factor_dataset

    started = time.perf_counter()
    train = factor_dataset(args.train_images, seed=0, size=args.size, workers=args.workers, progress=False)
    pool = factor_dataset(args.pool_images, seed=1000, size=args.size, workers=args.workers, progress=False)
    render_seconds = time.perf_counter() - started
    load = os.getloadavg()[0]
    summary = beta_sweep(train, pool, args.betas, args.seeds, Path(args.figures), steps=args.steps,
                         threads=args.threads, progress=False)
    by_beta = summary["by_beta"]
    base = by_beta[f"{min(args.betas):g}"]["mig"]["mean"]
    best = max(by_beta, key=lambda b: by_beta[b]["mig"]["mean"])
    runs = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
             if k in ("beta", "seed", "mig", "factor_vae", "dci_disentanglement", "dci_completeness",
                      "dci_informativeness", "mse", "ssim", "active_dims", "final_kl", "train_seconds")}
            | {"mig_per_factor": [round(v, 4) for v in r["mig_per_factor"]]} for r in summary["runs"]]
    per_factor = {f"{b:g}": [round(float(v), 4) for v in np.mean([r["mig_per_factor"] for r in summary["runs"]
                                                                  if r["beta"] == b], axis=0)]
                  for b in args.betas}
    return {
        "benchmark": "latent_beta", "threads": args.threads, "image_size": args.size, "latent_dim": 10,
        "steps": args.steps, "batch_size": 64, "train_images": len(train), "pool_images": len(pool),
        "factors": list(train.names), "betas": args.betas, "seeds": args.seeds,
        "by_beta": {b: {k: ({kk: round(vv, 4) for kk, vv in v.items()} if isinstance(v, dict) else v)
                        for k, v in stats.items()} for b, stats in by_beta.items()},
        "mig_per_factor_by_beta": per_factor,
        "best_beta_by_mig": float(best), "mig_gain_over_beta1": round(by_beta[best]["mig"]["mean"] - base, 4),
        "runs": runs,
        "figures": {b: _repo_path(Path(args.figures) / name) for b, name in summary["figures"].items()},
        "render_seconds": round(render_seconds, 1), "load_average_1min": round(load, 2),
        "published_dsprites": {"mig": {"vae": 0.10, "beta_vae": 0.21, "beta_tcvae": 0.45},
                               "factor_vae": {"vae": 0.63, "factorvae": 0.82}},
    }


def transfer_part(args) -> dict:
    from latent.transfer import run_transfer_experiment

    per_seed = []
    first_figures = None
    for seed in args.transfer_seeds:
        out = Path(args.figures) if seed == args.transfer_seeds[0] else Path(args.scratch) / f"transfer_seed{seed}"
        summary = run_transfer_experiment(out, train_images=args.transfer_images, test_images=args.test_images,
                                          steps=args.transfer_steps, seed=seed, data_seed=0, threads=args.threads,
                                          workers=args.workers, progress=False, size=args.size)
        per_seed.append(summary)
        if first_figures is None:
            first_figures = {k: _repo_path(out / name) for k, name in summary["figures"].items()}
    methods = list(per_seed[0]["by_method"])
    keys = ("mse", "edit_mse", "ssim", "transfer_rate", "ceiling", "other_kept", "identity_distance")
    by_method = {m: {k: {"mean": round(float(np.mean([s["by_method"][m][k] for s in per_seed])), 4),
                         "min": round(float(np.min([s["by_method"][m][k] for s in per_seed])), 4),
                         "max": round(float(np.max([s["by_method"][m][k] for s in per_seed])), 4)}
                     for k in keys if all(k in s["by_method"][m] for s in per_seed)} for m in methods}
    groups = {}
    for s in per_seed:
        for row in s["rows"]:
            key = f"{row['method']} | {row['attribute']} | {row['group']}"
            groups.setdefault(key, []).append(row)
    group_rows = []
    for key, rows in sorted(groups.items()):
        method, attribute, group = key.split(" | ")
        group_rows.append({"method": method, "attribute": attribute, "group": group,
                           "n": int(np.sum([r["n"] for r in rows])),
                           **{k: round(float(np.mean([r[k] for r in rows])), 4)
                              for k in keys if all(k in r for r in rows)}})
    return {
        "benchmark": "latent_transfer", "threads": args.threads, "image_size": args.size,
        "train_images": args.transfer_images, "test_images": args.test_images, "steps": args.transfer_steps,
        "seeds": args.transfer_seeds, "held_out_cell": per_seed[0]["config"]["held_out_cell"],
        "attributes": per_seed[0]["config"]["attributes"],
        "judge_accuracy_renders": [round(s["judge_accuracy_renders"], 4) for s in per_seed],
        "judge_accuracy_test": [round(s["judge_accuracy_test"], 4) for s in per_seed],
        "identity_reference": per_seed[0]["identity_reference"],
        "first_layer_mmd": [{k: round(v, 5) for k, v in s["first_layer_mmd"].items()} for s in per_seed],
        "by_method_seen": by_method, "groups": group_rows, "figures": first_figures,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["beta", "transfer"], choices=["beta", "transfer"])
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 4.0, 16.0, 64.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500, help="β-VAE training steps (batch 64)")
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--pool-images", type=int, default=4000)
    parser.add_argument("--transfer-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--transfer-steps", type=int, default=1500)
    parser.add_argument("--transfer-images", type=int, default=6000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--size", type=int, default=32,
                        help="portrait side in px (64 costs ~6x per step on 2 cores: 290 vs 49 ms for the β-VAE)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering portraits / computing dlib")
    parser.add_argument("--figures", default=str(BENCHMARKS / "latent"), help="folder for the first seed's figures")
    parser.add_argument("--scratch", default=str(Path(tempfile.gettempdir()) / "bench_latent"), help="folder for the other seeds' figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "beta" in args.parts:
        report("latent_beta", beta_part(args))
    if "transfer" in args.parts:
        report("latent_transfer", transfer_part(args))


if __name__ == "__main__":
    main()
