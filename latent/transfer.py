"""Conditional attribute transfer on labelled synthetic portraits, scored against counterfactual ground truth.

Smile and glasses (`latent.factors.TRANSFER_FACTORS`) flipped three ways: **vector** (attribute-vector arithmetic on a
plain VAE, White 2016), **cvae** (Sohn et al. 2015) and **trvae** (cvae plus an RBF MMD between conditions on the
decoder's first layer, Lotfollahi et al. 2020); scored against the world's re-render, by an independent
`AttributeJudge` and by the dlib descriptor distance. `HELD_OUT_CELL` never appears in training.
"""
from __future__ import annotations

import argparse
import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.config import seed_everything
from common.files import write_record
from common.images import label_image, save_sheet

from latent.disentangle import BetaConfig, fit_in_memory
from latent.factors import TRANSFER_ATTRIBUTES, TRANSFER_FACTORS, factor_dataset, factor_index
from vae.figures import labelled_grid
from vae.metrics import mse, ssim
from vae.model import ConvVAE

METHODS = ("none", "vector", "cvae", "trvae")
# Multi-scale RBF bandwidths, in units of the mean squared difference per feature (so they fit any layer width).
MMD_SCALES = (0.01, 0.1, 1.0, 10.0, 100.0)
HELD_OUT_CELL = {"smile": 1, "glasses": 1}
EDIT_THRESHOLD = 0.05  # a pixel is part of the edit when some channel of the re-render moves by more than this


class ConditionalVAE(ConvVAE):
    """`ConvVAE` with a condition vector `c` ([B, n_conditions], e.g. attribute bits) at the encoder's input (as
    constant planes) and next to z at the decoder's first layer."""

    def __init__(self, n_conditions: int, latent_dim: int = 32, image_size: int = 64, base_channels: int = 16):
        super().__init__(latent_dim=latent_dim, image_size=image_size, base_channels=base_channels)
        self.encoder[0][0] = nn.Conv2d(3 + n_conditions, self.encoder[0][0].out_channels, 4, 2, 1, bias=False)
        self.fc_decode = nn.Linear(latent_dim + n_conditions, self.fc_decode.out_features)

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        planes = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        h = self.encoder(torch.cat([x, planes], 1)).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode_first(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The decoder's first layer: [B, bottom_channels·16], the features trVAE's MMD aligns."""
        return self.fc_decode(torch.cat([z, c.to(z.dtype)], 1))

    def decode_rest(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.to_rgb(self.decoder(h.view(h.shape[0], self.bottom_channels, 4, 4))))

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.decode_rest(self.decode_first(z, c))

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        """`(x_hat, mu, logvar, first_layer)`; z is sampled in train mode, the posterior mean in eval mode."""
        mu, logvar = self.encode(x, c)
        h = self.decode_first(self.reparameterize(mu, logvar) if self.training else mu, c)
        return self.decode_rest(h), mu, logvar, h


def rbf_mmd(x: torch.Tensor, y: torch.Tensor, scales: Sequence[float] = MMD_SCALES) -> torch.Tensor:
    """Squared MMD (biased V-statistic, so MMD(x, x) = 0 exactly) with a sum of RBF kernels
    exp(−‖a − b‖² / (s · D)) over the bandwidths `scales` (D = feature count)."""
    x, y = x.flatten(1).float(), y.flatten(1).float()

    def kernel(a, b):
        return sum(torch.exp(-torch.cdist(a, b).pow(2) / (s * x.shape[1])) for s in scales).mean()

    return kernel(x, x) + kernel(y, y) - 2 * kernel(x, y)


def condition_ids(c: torch.Tensor) -> torch.Tensor:
    """One integer per distinct condition vector (bits read as a binary number): [B]."""
    return (c.round().long() * 2 ** torch.arange(c.shape[1], device=c.device)).sum(1)


def pairwise_mmd(h: torch.Tensor, ids: torch.Tensor, scales: Sequence[float] = MMD_SCALES):
    """Sum of `rbf_mmd` over every pair of conditions present in the batch (each with ≥ 2 rows).
    Returns (total, pairs), pairs a list of (id_a, id_b)."""
    present = [int(i) for i in torch.unique(ids) if int((ids == i).sum()) >= 2]
    pairs = list(itertools.combinations(present, 2))
    return sum((rbf_mmd(h[ids == a], h[ids == b], scales) for a, b in pairs), h.new_zeros(())), pairs


@dataclass
class TransferConfig(BetaConfig):
    """Training of one transfer model; `method` is "vector" (plain VAE), "cvae" or "trvae"."""

    method: str = "trvae"
    beta: float = 1.0  # weight of the KL term
    latent_dim: int = 32
    mmd_weight: float = 100.0  # trvae only: weight of the pairwise MMD (recon and KL are nats per image)


def train_transfer_model(images: torch.Tensor, conditions: torch.Tensor, config: TransferConfig,
                         progress: bool = True) -> tuple[nn.Module, dict]:
    """Train on `images` [N, 3, S, S] in [0, 1] with condition bits `conditions` [N, A]; returns (model, history)."""
    if config.method not in ("vector", "cvae", "trvae"):
        raise ValueError(f"unknown method {config.method!r}; use 'vector', 'cvae' or 'trvae'")
    seed_everything(config.seed, threads=config.threads)
    size, desc = images.shape[-1], f"{config.method} seed {config.seed}"
    if config.method == "vector":
        model = ConvVAE(latent_dim=config.latent_dim, image_size=size, base_channels=config.base_channels)
        return fit_in_memory(model, images, config, progress=progress, desc=desc)
    model = ConditionalVAE(conditions.shape[1], config.latent_dim, size, config.base_channels)
    penalty = (lambda first, c: pairwise_mmd(first, condition_ids(c))[0]) if config.method == "trvae" else None
    return fit_in_memory(model, images, config, conditions.float(), penalty, config.mmd_weight, progress, desc)


@torch.no_grad()
def first_layer_mmd(model: ConditionalVAE, images: torch.Tensor, conditions: torch.Tensor) -> float:
    """Pairwise MMD of the decoder's first layer on a held-out set (posterior means): what trVAE minimises."""
    mu = model.encode(images, conditions.float())[0]
    return float(pairwise_mmd(model.decode_first(mu, conditions.float()), condition_ids(conditions))[0])


@torch.no_grad()
def attribute_vectors(model: ConvVAE, images: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
    """Per attribute, mean posterior mean of faces with it minus faces without it: [A, latent_dim]."""
    mu = torch.cat([model.encode(images[s:s + 256])[0] for s in range(0, len(images), 256)])
    rows = []
    for a in range(conditions.shape[1]):
        on = conditions[:, a] > 0.5
        if on.all() or (~on).all():
            raise ValueError(f"attribute {a} needs training faces with and without it")
        rows.append(mu[on].mean(0) - mu[~on].mean(0))
    return torch.stack(rows)


class AttributeJudge(nn.Module):
    """A small CNN that reads the attribute bits off an image: 4 strided conv layers, then one logit per attribute."""

    def __init__(self, n_attributes: int, width: int = 16):
        super().__init__()
        widths, layers = [3, width, width * 2, width * 4, width * 8], []
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(widths[-1], n_attributes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Attribute bits (0/1 ints) for images in [0, 1]: [B, A]."""
        self.eval()
        return torch.cat([(self(x[s:s + batch_size]) > 0).long() for s in range(0, len(x), batch_size)])


def soften(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A render made to look like a decoder's output (per batch: unchanged, blurred σ 0.5–1.5 px, or halved and
    enlarged; then 0–30 % less contrast and a little noise), so the judge reads the attribute, not the sharpness."""
    from torchvision.transforms.functional import gaussian_blur

    kind = int(torch.randint(3, (), generator=generator))
    if kind == 1:
        sigma = float(0.5 + torch.rand((), generator=generator))
        x = gaussian_blur(x, kernel_size=[5, 5], sigma=[sigma, sigma])
    elif kind == 2:
        x = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True),
                          size=x.shape[-2:], mode="bilinear", align_corners=False)
    contrast = 1.0 - 0.3 * torch.rand((x.shape[0], 1, 1, 1), generator=generator)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + contrast * (x - mean) + 0.03 * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def train_judge(images: torch.Tensor, bits: torch.Tensor, steps: int = 400, seed: int = 0, lr: float = 2e-3,
                batch_size: int = 64, progress: bool = True) -> AttributeJudge:
    """Fit `AttributeJudge` on renders with known attribute bits, each batch passed through `soften` (it never sees
    a model's output)."""
    seed_everything(seed)
    judge = AttributeJudge(bits.shape[1])
    optimizer = torch.optim.Adam(judge.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    judge.train()
    for _ in tqdm(range(steps), desc="attribute judge", disable=not progress, leave=False):
        index = torch.randint(len(images), (batch_size,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(judge(soften(images[index], generator)), bits[index].float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return judge.eval()


@torch.no_grad()
def transfer_images(method: str, model, x: torch.Tensor, c_from: torch.Tensor, c_to: torch.Tensor,
                    vectors: torch.Tensor | None = None, amount: float = 1.0) -> torch.Tensor:
    """Transfer faces `x` from condition bits `c_from` to `c_to` with one method ("none" returns `x`), in batches
    of 256. `amount` in [0, 1] goes part of the way (the condition or the vector scaled), for the sliding GIF."""
    if method == "none":
        return x.clone()
    parts = []
    for xs, cf, ct in zip(x.split(256), c_from.float().split(256), c_to.float().split(256)):
        if method == "vector":  # +vector to switch on, −vector to switch off
            parts.append(model.decode(model.encode(xs)[0] + amount * (ct - cf) @ vectors))
        else:
            parts.append(model.decode(model.encode(xs, cf)[0], cf + amount * (ct - cf)))
    return torch.cat(parts)


def reconstruction_ceiling(method: str, model, truth: torch.Tensor, target: torch.Tensor, judge: AttributeJudge,
                           attribute: int, vectors: torch.Tensor | None = None) -> np.ndarray:
    """Per face ([N] bools), whether the judge reads the target attribute off the model's own reconstruction of the
    world's re-render: the best transfer rate the model's reconstruction quality allows under this judge."""
    out = transfer_images(method, model, truth, target, target, vectors)  # from the target to itself
    return (judge.predict(out)[:, attribute] == target[:, attribute]).numpy()


def edit_region_mse(out: torch.Tensor, truth: torch.Tensor, original: torch.Tensor,
                    threshold: float = EDIT_THRESHOLD) -> np.ndarray:
    """Per image ([N]), the MSE to the re-render inside the pixels the re-render changes (some channel moves by more
    than `threshold`): the error of the edit itself, apart from the blur elsewhere; NaN where no pixel changes."""
    mask = ((truth.float() - original.float()).abs().amax(1) > threshold).float()  # [N, H, W]
    count = mask.flatten(1).sum(1)
    per_image = ((out.float() - truth.float()).pow(2).mean(1) * mask).flatten(1).sum(1) / count.clamp_min(1)
    return torch.where(count > 0, per_image, torch.full_like(per_image, float("nan"))).numpy()


def evaluate_transfers(models: dict, vectors: torch.Tensor, judge: AttributeJudge, test, attributes: Sequence[str],
                       held_out: dict | None = HELD_OUT_CELL, identity_workers: int = 2,
                       with_identity: bool = True, progress: bool = True) -> dict:
    """Flip each attribute of every face of `test` (`FactorData`) with every method, scored against the re-render:
    rows per (method, attribute, cell group), by_method (seen cells pooled), judge_accuracy, identity_reference and
    outputs."""
    x = test.tensors()
    bits = torch.as_tensor(test.codes[:, [factor_index(a, test.factors) for a in attributes]])

    def cell(row: torch.Tensor) -> str:
        inside = bool(held_out) and all(int(row[attributes.index(k)]) == v for k, v in held_out.items())
        return "held-out" if inside else "seen"

    outputs, records = {}, []
    for a, name in enumerate(attributes):
        target = bits.clone()
        target[:, a] = 1 - target[:, a]
        truth = np.empty_like(test.images)
        for level in (0, 1):
            rows = np.flatnonzero(target[:, a].numpy() == level)
            if len(rows):
                truth[rows] = test.counterfactual(rows, name, level)
        truth = outputs[("truth", name)] = torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 255.0
        groups = np.array([f"{cell(b)} -> {cell(t)}" for b, t in zip(bits, target)])
        other = [k for k in range(len(attributes)) if k != a]
        for method in [m for m in METHODS if m == "none" or m in models]:
            out = outputs[(method, name)] = transfer_images(method, models.get(method), x, bits, target, vectors)
            predicted = judge.predict(out)
            records.append({"method": method, "attribute": name, "groups": groups,
                            "mse": mse(out, truth).numpy(), "ssim": ssim(out, truth).numpy(),
                            "edit_mse": edit_region_mse(out, truth, x),
                            "transfer_rate": (predicted[:, a] == target[:, a]).numpy(),
                            "ceiling": reconstruction_ceiling(method, models.get(method), truth, target, judge, a,
                                                              vectors),
                            "other_kept": (predicted[:, other] == bits[:, other]).all(1).numpy()})
    reference = None
    if with_identity:
        from generative.metrics import image_features

        keys = [k for k in outputs if k[0] != "none"]
        features = image_features(torch.cat([x] + [outputs[k] for k in keys]), workers=identity_workers,
                                  progress=progress).reshape(len(keys) + 1, len(x), -1)
        distances = {key: np.linalg.norm(features[j + 1] - features[0], axis=1) for j, key in enumerate(keys)}
        for record in records:
            record["identity_distance"] = distances.get((record["method"], record["attribute"]), np.zeros(len(x)))
        reference = {name: float(np.nanmean(distances[("truth", name)])) for name in attributes}
    keys = ("mse", "edit_mse", "ssim", "transfer_rate", "ceiling", "other_kept", "identity_distance")
    rows = [{"method": r["method"], "attribute": r["attribute"], "group": str(group),
             "n": int((r["groups"] == group).sum()),
             **{k: float(np.nanmean(r[k][r["groups"] == group])) for k in keys if k in r}}
            for r in records for group in sorted(set(r["groups"]))]
    seen = {m: [r for r in rows if r["method"] == m and r["group"] == "seen -> seen"] for m in METHODS}
    by_method = {m: {k: float(np.average([r[k] for r in g], weights=[r["n"] for r in g])) for k in keys if k in g[0]}
                 for m, g in seen.items() if g}
    return {"rows": rows, "by_method": by_method, "judge_accuracy": float((judge.predict(x) == bits).float().mean()),
            "identity_reference": reference, "outputs": outputs}


def transfer_figures(models: dict, vectors: torch.Tensor, x: torch.Tensor, c: torch.Tensor,
                     attributes: Sequence[str], out_dir: Path, truth: dict | None = None, note: str = "") -> dict:
    """Per method and attribute, `<method>_<attribute>.png`: rows of faces, columns original / transferred / the
    world's re-render (`truth[attribute]`, when known). Returns {"<method>_<attribute>": file name}."""
    figures = {}
    for a, name in enumerate(attributes):
        target = c.clone()
        target[:, a] = 1 - target[:, a]
        for method in METHODS[1:]:
            columns = [x, transfer_images(method, models[method], x, c, target, vectors)]
            columns += [truth[name]] if truth else []
            grid = labelled_grid(list(zip(*columns)), cell_size=64,
                                 col_labels=["original", method] + (["ground truth"] if truth else []))
            figures[f"{method}_{name}"] = save_sheet(label_image([grid], [f"{method}: {name} flipped{note}"]),
                                                     out_dir / f"{method}_{name}.png").name
    return figures


@torch.no_grad()
def sliding_gif(models: dict, vectors: torch.Tensor, x: torch.Tensor, c_from: torch.Tensor, c_to: torch.Tensor,
                out_gif: str | Path, steps: int = 12, fps: float = 8.0) -> dict:
    """A looping GIF sliding the condition from the face's own to the flipped one and back; one panel per method,
    faces stacked vertically, at least 64 px."""
    from vae.morph import to_uint8_frames, write_gif

    frames = []
    for t in list(np.linspace(0, 1, steps)) + list(np.linspace(1, 0, steps))[1:-1]:
        panels = [transfer_images(m, models[m], x, c_from, c_to, vectors, float(t)) for m in METHODS[1:]]
        if x.shape[-1] < 64:
            panels = [F.interpolate(p, size=(64, 64), mode="bilinear", align_corners=False) for p in panels]
        frames.append(torch.cat([torch.cat(list(p), dim=1) for p in panels], dim=2))
    return write_gif(to_uint8_frames(torch.stack(frames), size=None), out_gif, fps=fps)


def train_three(x: torch.Tensor, c: torch.Tensor, steps: int, seed: int, threads: int | None, mmd_weight: float,
                progress: bool = True) -> tuple[dict, dict, torch.Tensor]:
    """The vector, cvae and trvae models trained on the same images: (models, histories, attribute vectors)."""
    models, histories = {}, {}
    for method in METHODS[1:]:
        config = TransferConfig(method=method, seed=seed, steps=steps, threads=threads, mmd_weight=mmd_weight)
        models[method], histories[method] = train_transfer_model(x, c, config, progress=progress)
    return models, histories, attribute_vectors(models["vector"], x, c)


def run_transfer_experiment(out_dir: str | Path, train_images: int = 6000, test_images: int = 300,
                            judge_images: int = 3000, steps: int = 1500, seed: int = 0, data_seed: int = 0,
                            threads: int | None = None, workers: int = 2, mmd_weight: float = 100.0,
                            with_identity: bool = True, progress: bool = True, size: int = 32,
                            judge_steps: int = 800) -> dict:
    """The synthetic experiment end to end: render training (without `HELD_OUT_CELL`), judge and test sets, train
    vector / cvae / trvae, score every transfer, write `transfer.json`, one figure per method and the GIF."""
    out_dir, attributes = Path(out_dir), list(TRANSFER_ATTRIBUTES)
    factor_of = [factor_index(a, TRANSFER_FACTORS) for a in attributes]
    common = dict(vary_identity=True, size=size, factors=TRANSFER_FACTORS, workers=workers, progress=progress)
    train = factor_dataset(train_images, seed=data_seed, exclude=[HELD_OUT_CELL], **common)
    judge_set = factor_dataset(judge_images, seed=data_seed + 2000, **common)
    test = factor_dataset(test_images, seed=data_seed + 1000, **common)
    models, histories, vectors = train_three(train.tensors(), torch.as_tensor(train.codes[:, factor_of]), steps, seed,
                                             threads, mmd_weight, progress)
    check = min(500, len(judge_set) // 4)  # renders held out to check the judge itself
    judge_x, judge_bits = judge_set.tensors(), torch.as_tensor(judge_set.codes[:, factor_of])
    judge = train_judge(judge_x[:-check], judge_bits[:-check], steps=judge_steps, seed=seed, progress=progress)
    judge_check = float((judge.predict(judge_x[-check:]) == judge_bits[-check:]).float().mean())
    result = evaluate_transfers(models, vectors, judge, test, attributes, HELD_OUT_CELL, workers, with_identity,
                                progress)
    x_test, c_test = test.tensors(), torch.as_tensor(test.codes[:, factor_of])
    truth = {name: result["outputs"][("truth", name)][:6] for name in attributes}
    figures = transfer_figures(models, vectors, x_test[:6], c_test[:6], attributes, out_dir, truth)
    flip = c_test[:3].clone()
    flip[:, 0] = 1 - flip[:, 0]
    figures["gif"] = Path(sliding_gif(models, vectors, x_test[:3], c_test[:3], flip, out_dir / "smile_slide.gif",
                                      steps=8)["path"]).name
    summary = {
        "config": {"image_size": size, "train_images": train_images, "test_images": test_images,
                   "judge_images": judge_images, "judge_steps": judge_steps, "held_out_cell": HELD_OUT_CELL,
                   "attributes": attributes, "factors": [f.name for f in TRANSFER_FACTORS],
                   "training": asdict(TransferConfig(steps=steps, seed=seed, mmd_weight=mmd_weight))},
        "judge_accuracy_renders": judge_check, "judge_accuracy_test": result["judge_accuracy"],
        "identity_reference": result["identity_reference"],
        "first_layer_mmd": {m: first_layer_mmd(models[m], x_test, c_test) for m in ("cvae", "trvae")},
        "by_method": result["by_method"], "rows": result["rows"], "figures": figures,
        "final_loss": {m: {k: float(np.mean(h[k][-50:])) for k in ("recon", "kl", "mmd")}
                       for m, h in histories.items()},
        "train_seconds": {m: h["seconds"] for m, h in histories.items()},
    }
    write_record(out_dir / "transfer.json", summary)
    return summary


def celeba_transfer(src: str | Path, attributes: Sequence[str], out_dir: str | Path, images: int = 6000,
                    steps: int = 1500, seed: int = 0, mmd_weight: float = 100.0, threads: int | None = None,
                    progress: bool = True, size: int = 32) -> dict:
    """Real data: train vector / cvae / trvae on CelebA conditioned on `attributes` (±1 in list_attr_celeba.txt)
    and write original / transferred figures of test faces (no ground truth exists for real photos)."""
    from vae.celeba import CelebA

    train_set, test_set = CelebA(src, "train", size), CelebA(src, "test", size)
    missing = [a for a in attributes if a not in train_set.attributes]
    if missing:
        raise ValueError(f"{src} has no attribute {missing[0]!r} (list_attr_celeba.txt names: "
                         f"{', '.join(train_set.attributes[:6])}, ...)")
    columns = [train_set.attributes.index(a) for a in attributes]
    chosen = np.sort(np.random.default_rng(seed).choice(len(train_set), min(images, len(train_set)), replace=False))
    x = torch.stack([train_set[int(i)] for i in tqdm(chosen, desc="loading CelebA", disable=not progress)])
    c = torch.as_tensor(train_set.attribute_matrix[chosen][:, columns] > 0).long()
    models, _, vectors = train_three(x, c, steps, seed, threads, mmd_weight, progress)
    shown = list(range(min(6, len(test_set))))
    x_test = torch.stack([test_set[i] for i in shown])
    c_test = torch.as_tensor(test_set.attribute_matrix[shown][:, columns] > 0).long()
    summary = {"src": str(src), "attributes": list(attributes), "train_images": len(x),
               "attribute_share": {a: float(c[:, k].float().mean()) for k, a in enumerate(attributes)},
               "figures": transfer_figures(models, vectors, x_test, c_test, attributes, Path(out_dir),
                                           note=" (CelebA test faces)")}
    write_record(Path(out_dir) / "transfer_celeba.json", summary)
    return summary


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m latent transfer`: conditional attribute transfer (synthetic, scored; or CelebA attributes)."""
    parser.add_argument("--out", required=True, help="folder for transfer.json, the figures and the GIF")
    parser.add_argument("--src", help="CelebA root: condition on its list_attr_celeba.txt, not the synthetic factors")
    parser.add_argument("--attributes", nargs="+", default=["Smiling"], help="CelebA attributes to condition on")
    parser.add_argument("--images", type=int, default=6000, help="training images")
    parser.add_argument("--test-images", type=int, default=300, help="held-out people (synthetic only)")
    parser.add_argument("--judge-images", type=int, default=3000, help="renders the attribute judge learns from")
    parser.add_argument("--judge-steps", type=int, default=800, help="training steps of the attribute judge")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--size", type=int, default=32, help="image side in px (synthetic portraits and CelebA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-identity", action="store_true", help="skip the dlib identity distances")


def cli_run(args: argparse.Namespace) -> dict:
    if args.src:
        summary = celeba_transfer(args.src, args.attributes, args.out, args.images, args.steps, args.seed,
                                  size=args.size)
        return {"command": "transfer", "data": "celeba", **summary}
    summary = run_transfer_experiment(args.out, train_images=args.images, test_images=args.test_images,
                                      judge_images=args.judge_images, judge_steps=args.judge_steps, steps=args.steps,
                                      seed=args.seed, workers=args.workers, with_identity=not args.no_identity,
                                      size=args.size)
    return {"command": "transfer", "data": "synthetic", "by_method": summary["by_method"],
            "judge_accuracy_test": summary["judge_accuracy_test"]}
