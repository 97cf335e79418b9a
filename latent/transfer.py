"""A latent space you can steer: conditional attribute transfer measured against counterfactual ground truth.

Three ways to make a face smile (or put glasses on it), trained on the same labelled synthetic portraits
(`latent.factors`, `TRANSFER_FACTORS` with a random person per photo) and scored on the same held-out people:

- **vector**: the plain VAE with "smile vector" arithmetic (White 2016; `vae.figures.attribute_vector` on CelebA):
  add the mean latent of training faces with the attribute minus the mean latent of faces without it.
- **cvae**: a conditional VAE (Sohn et al. 2015): the condition — one bit per attribute — enters the encoder as
  constant image planes and the decoder next to z; transfer = encode with the face's own condition, decode the
  posterior mean with the flipped one.
- **trvae**: the same network trained with trVAE's extra term (Lotfollahi et al. 2020): the MMD between the
  decoder's first-layer outputs (`fc_decode`, before the reshape) of every pair of conditions present in the batch,
  with a multi-scale RBF kernel, so that the layer carries the face and not the condition, and the condition
  only enters afterwards.

The world re-renders each held-out face with the attribute flipped (same person, pose, light, drawing seed), so a
transfer can be scored against the image it should have produced:

- counterfactual error: MSE and SSIM between the transferred image and that re-render, and the MSE inside the
  pixels the re-render changes (`edit_region_mse`: the edit itself, apart from the blur elsewhere);
- transfer rate: an independent attribute classifier (`AttributeJudge`, a small CNN trained on fresh renders —
  never on a model's outputs — made blurry and washed out by `soften`, and checked on held-out renders) says the
  attribute flipped; its ceiling (`reconstruction_ceiling`) is the same judge on the model's own reconstruction
  of the re-render, the rate a transfer with the right content but the model's blur would get;
- preservation: the same judge says the other attribute did not change, and the dlib face descriptor of the
  transferred image stays near that of the original (`generative.metrics.image_features`).

"none" (the original, unchanged) is scored too: the counterfactual error of doing nothing, with a transfer rate of
0. trVAE's CelebA experiment leaves a cell out of training; here `HELD_OUT_CELL` (smiling with glasses) never
appears in training, and every transfer is grouped by whether its source and target cells were seen.

On real data the same code conditions on CelebA's attribute file:

    python -m latent transfer --src data/celeba --attributes Smiling Eyeglasses --out runs/transfer_celeba
"""
from __future__ import annotations

import argparse
import itertools
import time
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

from .disentangle import shuffled_batches
from vae.model import ConvVAE

METHODS = ("none", "vector", "cvae", "trvae")
# Multi-scale RBF bandwidths, in units of the mean squared difference per feature (so they fit any layer width).
MMD_SCALES = (0.01, 0.1, 1.0, 10.0, 100.0)
HELD_OUT_CELL = {"smile": 1, "glasses": 1}


# ------------------------------------------------------------------------------------------------- the model
class ConditionalVAE(ConvVAE):
    """`ConvVAE` with a condition vector `c` ([B, n_conditions], e.g. attribute bits) at the encoder's input (as
    constant planes) and next to z at the decoder's first layer."""

    def __init__(self, n_conditions: int, latent_dim: int = 32, image_size: int = 64, base_channels: int = 16):
        super().__init__(latent_dim=latent_dim, image_size=image_size, base_channels=base_channels)
        self.n_conditions = int(n_conditions)
        first = self.encoder[0][0]
        self.encoder[0][0] = nn.Conv2d(3 + self.n_conditions, first.out_channels, kernel_size=4, stride=2, padding=1,
                                       bias=False)
        self.fc_decode = nn.Linear(latent_dim + self.n_conditions, self.fc_decode.out_features)

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
        z = self.reparameterize(mu, logvar) if self.training else mu
        h = self.decode_first(z, c)
        return self.decode_rest(h), mu, logvar, h

    @torch.no_grad()
    def transfer(self, x: torch.Tensor, c_from: torch.Tensor, c_to: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x, c_from)[0], c_to)


# ------------------------------------------------------------------------------------------------------- MMD
def rbf_mmd(x: torch.Tensor, y: torch.Tensor, scales: Sequence[float] = MMD_SCALES) -> torch.Tensor:
    """Squared MMD (biased V-statistic, so MMD(x, x) = 0 exactly) with a sum of RBF kernels
    exp(−‖a − b‖² / (s · D)) over the bandwidths `scales` (D = feature count)."""
    x, y = x.flatten(1).float(), y.flatten(1).float()
    d = x.shape[1]

    def kernel(a, b):
        squared = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-squared / (s * d)) for s in scales)

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def condition_ids(c: torch.Tensor) -> torch.Tensor:
    """One integer per distinct condition vector (bits read as a binary number): [B]."""
    weights = 2 ** torch.arange(c.shape[1], device=c.device)
    return (c.round().long() * weights).sum(1)


def pairwise_mmd(h: torch.Tensor, ids: torch.Tensor, scales: Sequence[float] = MMD_SCALES):
    """Sum of `rbf_mmd` over every pair of conditions present in the batch (each with ≥ 2 rows).
    Returns (total, pairs), pairs a list of (id_a, id_b)."""
    present = [int(i) for i in torch.unique(ids) if int((ids == i).sum()) >= 2]
    pairs = list(itertools.combinations(present, 2))
    total = h.new_zeros(())
    for a, b in pairs:
        total = total + rbf_mmd(h[ids == a], h[ids == b], scales)
    return total, pairs


# ------------------------------------------------------------------------------------------------- training
@dataclass
class TransferConfig:
    """Training of one transfer model; `method` is "vector" (plain VAE), "cvae" or "trvae"."""

    method: str = "trvae"
    seed: int = 0
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    latent_dim: int = 32
    base_channels: int = 16
    beta: float = 1.0
    mmd_weight: float = 100.0  # trvae only: weight of the pairwise MMD (recon and KL are nats per image)
    recon_kind: str = "bce"
    threads: int | None = None


def build_transfer_model(config: TransferConfig, n_conditions: int, image_size: int = 64) -> nn.Module:
    if config.method == "vector":
        return ConvVAE(latent_dim=config.latent_dim, image_size=image_size, base_channels=config.base_channels)
    if config.method in ("cvae", "trvae"):
        return ConditionalVAE(n_conditions, config.latent_dim, image_size, config.base_channels)
    raise ValueError(f"unknown method {config.method!r}; use 'vector', 'cvae' or 'trvae'")


def train_transfer_model(images: torch.Tensor, conditions: torch.Tensor, config: TransferConfig,
                         progress: bool = True) -> tuple[nn.Module, dict]:
    """Train on `images` [N, 3, S, S] in [0, 1] with condition bits `conditions` [N, A]; returns (model, history)."""
    from vae.losses import vae_loss

    seed_everything(config.seed, threads=config.threads)
    model = build_transfer_model(config, conditions.shape[1], images.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    conditions = conditions.float()
    history: dict = {"recon": [], "kl": [], "mmd": []}
    started = time.perf_counter()
    model.train()
    batches = shuffled_batches(images.shape[0], config.batch_size, config.steps, config.seed)
    for index in tqdm(batches, total=config.steps, desc=f"{config.method} seed {config.seed}", disable=not progress,
                      leave=False):
        x, c = images[index], conditions[index]
        if config.method == "vector":
            x_hat, mu, logvar = model(x)
            mmd = x.new_zeros(())
        else:
            x_hat, mu, logvar, h = model(x, c)
            mmd = pairwise_mmd(h, condition_ids(c))[0] if config.method == "trvae" else x.new_zeros(())
        losses = vae_loss(x_hat, x, mu, logvar, beta=config.beta, recon_kind=config.recon_kind)
        total = losses["total"] + config.mmd_weight * mmd if config.method == "trvae" else losses["total"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        history["recon"].append(float(losses["recon"].detach()))
        history["kl"].append(float(losses["kl"].detach()))
        history["mmd"].append(float(mmd.detach()))
    model.eval()
    history["seconds"] = time.perf_counter() - started
    return model, history


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


# ------------------------------------------------------------------------------------------------ the judge
class AttributeJudge(nn.Module):
    """A small CNN that reads the attribute bits off an image: 4 strided conv layers, then one logit per attribute."""

    def __init__(self, n_attributes: int, width: int = 16):
        super().__init__()
        layers, channels = [], 3
        for k in range(4):
            layers += [nn.Conv2d(channels, width * 2**k, 3, stride=2, padding=1), nn.BatchNorm2d(width * 2**k),
                       nn.ReLU(inplace=True)]
            channels = width * 2**k
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, n_attributes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Attribute bits (0/1 ints) for images in [0, 1]: [B, A]."""
        self.eval()
        return torch.cat([(self(x[s:s + batch_size]) > 0).long() for s in range(0, len(x), batch_size)])


def soften(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A render made to look like a decoder's output, one random look per batch: unchanged, a Gaussian blur
    (σ 0.5–1.5 px), or halved and bilinearly enlarged again; then contrast pulled 0–30 % towards the image mean
    and a little pixel noise. The judge learns from these so that it reads the attribute, not the sharpness: a
    judge trained on sharp renders alone calls every blurred mouth "not smiling"."""
    from torchvision.transforms.functional import gaussian_blur

    kind = int(torch.randint(3, (), generator=generator))
    if kind == 1:
        sigma = float(0.5 + torch.rand((), generator=generator))
        x = gaussian_blur(x, kernel_size=[5, 5], sigma=[sigma, sigma])
    elif kind == 2:
        size = x.shape[-1]
        x = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True),
                          size=(size, size), mode="bilinear", align_corners=False)
    contrast = 1.0 - 0.3 * torch.rand((x.shape[0], 1, 1, 1), generator=generator)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + contrast * (x - mean)
    return (x + 0.03 * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def train_judge(images: torch.Tensor, bits: torch.Tensor, steps: int = 400, seed: int = 0, lr: float = 2e-3,
                batch_size: int = 64, progress: bool = True) -> AttributeJudge:
    """Fit `AttributeJudge` on renders with known attribute bits, each batch passed through `soften` (it will
    judge decoded, smoother images; it never sees a model's output)."""
    seed_everything(seed)
    judge = AttributeJudge(bits.shape[1])
    optimizer = torch.optim.Adam(judge.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    judge.train()
    for _ in tqdm(range(steps), desc="attribute judge", disable=not progress, leave=False):
        index = torch.randint(len(images), (batch_size,), generator=generator)
        x = soften(images[index], generator)
        loss = F.binary_cross_entropy_with_logits(judge(x), bits[index].float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    judge.eval()
    return judge


@torch.no_grad()
def reconstruction_ceiling(method: str, model, truth: torch.Tensor, target: torch.Tensor, judge: AttributeJudge,
                           attribute: int, vectors: torch.Tensor | None = None) -> np.ndarray:
    """Per face, whether the judge reads the target attribute off the model's own reconstruction of the world's
    re-render (the image a perfect transfer would produce, passed through the model): [N] bools. The share that
    passes is the best transfer rate the model's reconstruction quality allows under this judge."""
    out = torch.cat([transfer_images(method, model, truth[s:s + 256], target[s:s + 256], target[s:s + 256], vectors)
                     for s in range(0, len(truth), 256)])  # from the target to itself: a reconstruction
    return (judge.predict(out)[:, attribute] == target[:, attribute]).numpy()


# ------------------------------------------------------------------------------------------------ evaluation
EDIT_THRESHOLD = 0.05  # a pixel is part of the edit when some channel of the re-render moves by more than this


def edit_region_mse(out: torch.Tensor, truth: torch.Tensor, original: torch.Tensor,
                    threshold: float = EDIT_THRESHOLD) -> np.ndarray:
    """Per image, the MSE to the re-render inside the pixels the re-render changes (some channel differs from the
    original by more than `threshold`): the error of the edit itself, apart from the blur everywhere else. [N];
    NaN where the flip changes no pixel."""
    mask = ((truth.float() - original.float()).abs().amax(1) > threshold).float()  # [N, H, W]
    error = (out.float() - truth.float()).pow(2).mean(1)
    count = mask.flatten(1).sum(1)
    per_image = (error * mask).flatten(1).sum(1) / count.clamp_min(1)
    return torch.where(count > 0, per_image, torch.full_like(per_image, float("nan"))).numpy()


def cell_name(bits: Sequence[int], attributes: Sequence[str]) -> str:
    return ", ".join(f"{a}={'on' if b else 'off'}" for a, b in zip(attributes, bits))


def is_held_out(bits: Sequence[int], attributes: Sequence[str], held_out: dict | None) -> bool:
    return bool(held_out) and all(int(bits[attributes.index(k)]) == int(v) for k, v in held_out.items())


@torch.no_grad()
def transfer_images(method: str, model, x: torch.Tensor, c_from: torch.Tensor, c_to: torch.Tensor,
                    vectors: torch.Tensor | None = None, amount: float = 1.0) -> torch.Tensor:
    """Transfer faces `x` from condition bits `c_from` to `c_to` with one method ("none" returns `x`).
    `amount` in [0, 1] goes part of the way (the condition or the vector scaled), for the sliding GIF."""
    if method == "none":
        return x.clone()
    if method == "vector":
        change = (c_to.float() - c_from.float()) @ vectors  # +vector to switch on, −vector to switch off
        return model.decode(model.encode(x)[0] + amount * change)
    c_from, c_to = c_from.float(), c_to.float()
    return model.decode(model.encode(x, c_from)[0], c_from + amount * (c_to - c_from))


def evaluate_transfers(models: dict, vectors: torch.Tensor, judge: AttributeJudge, test, attributes: Sequence[str],
                       held_out: dict | None = HELD_OUT_CELL, identity_workers: int = 2,
                       with_identity: bool = True, progress: bool = True) -> dict:
    """Flip each attribute of every held-out face with every method and score it against the world's re-render.

    test: a `latent.factors.FactorData` of held-out people (vary_identity=True). Returns {"rows": one per
    (method, attribute, group) with n, mse, edit_mse (`edit_region_mse`), ssim, transfer_rate, ceiling, other_kept,
    identity_distance;
    "by_method": the seen -> seen rows of each method, pooled over attributes; "judge_accuracy"; "identity_reference"}.
    "ceiling" (`reconstruction_ceiling`): the judge's rate on the model's own reconstruction of the world's
    re-render, i.e. what a transfer with the right content but the model's blur would score; for "none" the
    judge's rate on the re-render itself.
    """
    from latent.factors import factor_index

    from vae.metrics import mse, ssim

    x = test.tensors()
    factor_of = [factor_index(a, test.factors) for a in attributes]
    bits = torch.as_tensor(test.codes[:, factor_of])
    judge_bits = judge.predict(x)
    judge_accuracy = float((judge_bits == bits).float().mean())
    outputs, records = {}, []
    for a, name in enumerate(attributes):
        target = bits.clone()
        target[:, a] = 1 - target[:, a]
        levels = target[:, a].numpy()
        truth_np = np.empty_like(test.images)
        for level in (0, 1):
            rows = np.flatnonzero(levels == level)
            if len(rows):
                truth_np[rows] = test.counterfactual(rows, name, level)
        truth = torch.from_numpy(truth_np).permute(0, 3, 1, 2).float() / 255.0
        groups = []
        for i in range(len(test)):
            source = "held-out" if is_held_out(bits[i].tolist(), list(attributes), held_out) else "seen"
            dest = "held-out" if is_held_out(target[i].tolist(), list(attributes), held_out) else "seen"
            groups.append(f"{source} -> {dest}")
        for method in METHODS:
            model = models.get(method)
            if method != "none" and model is None:
                continue
            out = torch.cat([transfer_images(method, model, x[s:s + 256], bits[s:s + 256], target[s:s + 256], vectors)
                             for s in range(0, len(x), 256)])
            outputs[(method, name)] = out
            predicted = judge.predict(out)
            other = [k for k in range(len(attributes)) if k != a]
            records.append({"method": method, "attribute": name, "groups": groups,
                            "mse": mse(out, truth).numpy(), "ssim": ssim(out, truth).numpy(),
                            "edit_mse": edit_region_mse(out, truth, x),
                            "flipped": (predicted[:, a] == target[:, a]).numpy(),
                            "ceiling": reconstruction_ceiling(method, model, truth, target, judge, a, vectors),
                            "other_kept": (predicted[:, other] == bits[:, other]).all(1).numpy()
                            if other else np.ones(len(x), bool)})
        outputs[("truth", name)] = truth
    distances, reference = {}, None
    if with_identity:
        from generative.metrics import image_features

        keys = [k for k in outputs if k[0] not in ("none",)]
        stacked = torch.cat([x] + [outputs[k] for k in keys])
        features = image_features(stacked, workers=identity_workers, progress=progress)
        n = len(x)
        original = features[:n]
        for j, key in enumerate(keys):
            f = features[n * (j + 1): n * (j + 2)]
            distances[key] = np.linalg.norm(f - original, axis=1)
        reference = {name: float(np.nanmean(distances[("truth", name)])) for name in attributes}
    rows = []
    for record in records:
        groups = np.array(record["groups"])
        for group in sorted(set(record["groups"])):
            mask = groups == group
            row = {"method": record["method"], "attribute": record["attribute"], "group": group, "n": int(mask.sum()),
                   "mse": float(record["mse"][mask].mean()), "ssim": float(record["ssim"][mask].mean()),
                   "edit_mse": float(np.nanmean(record["edit_mse"][mask])),
                   "transfer_rate": float(record["flipped"][mask].mean()),
                   "ceiling": float(record["ceiling"][mask].mean()),
                   "other_kept": float(record["other_kept"][mask].mean())}
            key = (record["method"], record["attribute"])
            if key in distances:
                row["identity_distance"] = float(np.nanmean(distances[key][mask]))
            elif record["method"] == "none" and with_identity:
                row["identity_distance"] = 0.0
            rows.append(row)
    by_method = {}
    for method in METHODS:
        seen = [r for r in rows if r["method"] == method and r["group"] == "seen -> seen"]
        if seen:
            weights = np.array([r["n"] for r in seen], float)
            by_method[method] = {k: float(np.average([r[k] for r in seen], weights=weights))
                                 for k in ("mse", "edit_mse", "ssim", "transfer_rate", "ceiling", "other_kept",
                                           "identity_distance")
                                 if all(k in r for r in seen)}
    return {"rows": rows, "by_method": by_method, "judge_accuracy": judge_accuracy,
            "identity_reference": reference, "outputs": outputs}


# -------------------------------------------------------------------------------------------------- figures
def transfer_figure(method: str, x: torch.Tensor, transferred: torch.Tensor, truth: torch.Tensor | None,
                    out_png: str | Path, title: str) -> str:
    """Rows of faces; columns original / transferred / ground truth (the world's re-render, when known)."""
    from common.images import label_image

    from vae.figures import labelled_grid

    rows = [[a, b] + ([c] if truth is not None else []) for a, b, c in
            zip(x, transferred, truth if truth is not None else transferred)]
    columns = ["original", method] + (["ground truth"] if truth is not None else [])
    grid = labelled_grid(rows, col_labels=columns, cell_size=64)
    from common.images import save_sheet

    return str(save_sheet(label_image([grid], [title]), out_png))


@torch.no_grad()
def sliding_gif(models: dict, vectors: torch.Tensor, x: torch.Tensor, c_from: torch.Tensor, c_to: torch.Tensor,
                out_gif: str | Path, steps: int = 12, fps: float = 8.0) -> dict:
    """A looping GIF sliding the condition from the face's own to the flipped one and back; one panel per method
    (vector | cvae | trvae, as present), faces stacked vertically."""
    from vae.morph import to_uint8_frames, write_gif

    methods = [m for m in ("vector", "cvae", "trvae") if m in models]
    amounts = list(np.linspace(0, 1, steps)) + list(np.linspace(1, 0, steps))[1:-1]
    frames = []
    for t in amounts:
        panels = [transfer_images(m, models[m], x, c_from, c_to, vectors, float(t)) for m in methods]
        if x.shape[-1] < 64:  # small faces shown at 64 px
            panels = [F.interpolate(p, size=(64, 64), mode="bilinear", align_corners=False) for p in panels]
        column = [torch.cat(list(p), dim=1) for p in panels]  # faces stacked: [3, n·S, S]
        frames.append(torch.cat(column, dim=2))
    images = torch.stack(frames)
    return write_gif(to_uint8_frames(images, size=None), out_gif, fps=fps) | {"methods": methods}


# ---------------------------------------------------------------------------------------------- experiment
def run_transfer_experiment(out_dir: str | Path, train_images: int = 6000, test_images: int = 300,
                            judge_images: int = 3000, steps: int = 1500, seed: int = 0, data_seed: int = 0,
                            threads: int | None = None, workers: int = 2, mmd_weight: float = 100.0,
                            with_identity: bool = True, progress: bool = True, size: int = 32,
                            judge_steps: int = 800) -> dict:
    """The synthetic experiment end to end: render training (without `HELD_OUT_CELL`), judge and test sets, train
    vector / cvae / trvae, score every transfer, write `transfer.json`, one figure per method and the GIF."""
    from latent.factors import TRANSFER_ATTRIBUTES, TRANSFER_FACTORS, factor_dataset, factor_index

    out_dir = Path(out_dir)
    attributes = list(TRANSFER_ATTRIBUTES)
    factor_of = [factor_index(a, TRANSFER_FACTORS) for a in attributes]
    held_out_codes = {k: v for k, v in HELD_OUT_CELL.items()}
    train = factor_dataset(train_images, seed=data_seed, vary_identity=True, size=size, factors=TRANSFER_FACTORS,
                           exclude=[held_out_codes], workers=workers, progress=progress)
    judge_set = factor_dataset(judge_images, seed=data_seed + 2000, vary_identity=True, size=size, factors=TRANSFER_FACTORS,
                               workers=workers, progress=progress)
    test = factor_dataset(test_images, seed=data_seed + 1000, vary_identity=True, size=size, factors=TRANSFER_FACTORS,
                          workers=workers, progress=progress)
    x_train, c_train = train.tensors(), torch.as_tensor(train.codes[:, factor_of])
    models, histories = {}, {}
    for method in ("vector", "cvae", "trvae"):
        config = TransferConfig(method=method, seed=seed, steps=steps, threads=threads, mmd_weight=mmd_weight)
        models[method], histories[method] = train_transfer_model(x_train, c_train, config, progress=progress)
    vectors = attribute_vectors(models["vector"], x_train, c_train)
    check = min(500, len(judge_set) // 4)  # renders held out to check the judge itself
    judge_x, judge_bits = judge_set.tensors(), torch.as_tensor(judge_set.codes[:, factor_of])
    judge = train_judge(judge_x[:-check], judge_bits[:-check], steps=judge_steps, seed=seed, progress=progress)
    judge_check = float((judge.predict(judge_x[-check:]) == judge_bits[-check:]).float().mean())
    result = evaluate_transfers(models, vectors, judge, test, attributes, HELD_OUT_CELL, workers, with_identity,
                                progress)
    x_test, c_test = test.tensors(), torch.as_tensor(test.codes[:, factor_of])
    mmd = {m: first_layer_mmd(models[m], x_test, c_test) for m in ("cvae", "trvae")}
    figures = {}
    show = np.arange(6)
    for a, name in enumerate(attributes):
        for method in METHODS[1:]:
            figures[f"{method}_{name}"] = transfer_figure(
                method, x_test[show], result["outputs"][(method, name)][show], result["outputs"][("truth", name)][show],
                out_dir / f"{method}_{name}.png", f"{method}: {name} flipped")
            figures[f"{method}_{name}"] = Path(figures[f"{method}_{name}"]).name
    flip = c_test[:3].clone()
    flip[:, 0] = 1 - flip[:, 0]
    figures["gif"] = Path(sliding_gif(models, vectors, x_test[:3], c_test[:3], flip, out_dir / "smile_slide.gif",
                                      steps=8)["path"]).name
    summary = {
        "config": {"image_size": size, "train_images": train_images, "test_images": test_images, "judge_images": judge_images, "judge_steps": judge_steps,
                   "held_out_cell": HELD_OUT_CELL, "attributes": attributes,
                   "factors": [f.name for f in TRANSFER_FACTORS],
                   "training": asdict(TransferConfig(steps=steps, seed=seed, mmd_weight=mmd_weight))},
        "judge_accuracy_renders": judge_check, "judge_accuracy_test": result["judge_accuracy"],
        "identity_reference": result["identity_reference"], "first_layer_mmd": mmd,
        "by_method": result["by_method"], "rows": result["rows"], "figures": figures,
        "final_loss": {m: {k: float(np.mean(h[k][-50:])) for k in ("recon", "kl", "mmd")} for m, h in histories.items()},
        "train_seconds": {m: h["seconds"] for m, h in histories.items()},
    }
    write_record(out_dir / "transfer.json", summary)
    return summary


# ------------------------------------------------------------------------------------------------------ CLI
def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m latent transfer`: conditional attribute transfer (synthetic, scored; or CelebA attributes)."""
    parser.add_argument("--out", required=True, help="folder for transfer.json, the figures and the GIF")
    parser.add_argument("--src", default=None,
                        help="CelebA root: condition on its list_attr_celeba.txt instead of the synthetic factors")
    parser.add_argument("--attributes", nargs="+", default=["Smiling"], help="CelebA attributes to condition on")
    parser.add_argument("--images", type=int, default=6000, help="training images")
    parser.add_argument("--test-images", type=int, default=300, help="held-out people (synthetic only)")
    parser.add_argument("--judge-images", type=int, default=3000, help="renders the attribute judge learns from")
    parser.add_argument("--judge-steps", type=int, default=800, help="training steps of the attribute judge")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--size", type=int, default=32, help="image side in px (synthetic portraits and CelebA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mmd-weight", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-identity", action="store_true", help="skip the dlib identity distances")


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
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(train_set), size=min(images, len(train_set)), replace=False))
    x = torch.stack([train_set[int(i)] for i in tqdm(chosen, desc="loading CelebA", disable=not progress)])
    c = torch.as_tensor(train_set.attribute_matrix[chosen][:, columns] > 0).long()
    models = {}
    for method in ("vector", "cvae", "trvae"):
        config = TransferConfig(method=method, seed=seed, steps=steps, threads=threads, mmd_weight=mmd_weight)
        models[method], _ = train_transfer_model(x, c, config, progress=progress)
    vectors = attribute_vectors(models["vector"], x, c)
    shown = list(range(min(6, len(test_set))))
    x_test = torch.stack([test_set[i] for i in shown])
    c_test = torch.as_tensor(test_set.attribute_matrix[shown][:, columns] > 0).long()
    figures = {}
    for a, name in enumerate(attributes):
        target = c_test.clone()
        target[:, a] = 1 - target[:, a]
        for method in ("vector", "cvae", "trvae"):
            out = transfer_images(method, models[method], x_test, c_test, target, vectors)
            figures[f"{method}_{name}"] = Path(transfer_figure(
                method, x_test, out, None, Path(out_dir) / f"{method}_{name}.png",
                f"{method}: {name} flipped (CelebA test faces)")).name
    summary = {"src": str(src), "attributes": list(attributes), "train_images": len(x),
               "attribute_share": {a: float(c[:, k].float().mean()) for k, a in enumerate(attributes)},
               "figures": figures}
    write_record(Path(out_dir) / "transfer_celeba.json", summary)
    return summary


def cli_run(args: argparse.Namespace) -> dict:
    if args.src:
        summary = celeba_transfer(args.src, args.attributes, args.out, args.images, args.steps, args.seed,
                                  args.mmd_weight, args.threads, size=args.size)
        return {"command": "transfer", "data": "celeba", **summary}
    summary = run_transfer_experiment(args.out, train_images=args.images, test_images=args.test_images,
                                      judge_images=args.judge_images, judge_steps=args.judge_steps,
                                      steps=args.steps, seed=args.seed,
                                      threads=args.threads, workers=args.workers, mmd_weight=args.mmd_weight,
                                      with_identity=not args.no_identity, size=args.size)
    return {"command": "transfer", "data": "synthetic", "by_method": summary["by_method"],
            "judge_accuracy_test": summary["judge_accuracy_test"]}
