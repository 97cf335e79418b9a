"""A DCGAN baseline beside the VAE: same data, same loop habits, same CPU budget (issue 16).

The original write-up ends "alternatively, I can look into generative adversarial networks"; this module is that
road, built the way pytorch/examples' `dcgan` builds it (Radford et al. 2016, "Unsupervised Representation
Learning with Deep Convolutional GANs"), with widths sized for a 2-core CPU:

- Generator: z (`latent_dim`, N(0, I)) -> a 4×4 transposed convolution to 4×4×(8·width), then per stage a 4×4,
  stride-2 transposed convolution + BatchNorm + ReLU doubling the resolution, the last one straight to 3 channels
  and tanh (pixels in [-1, 1]; `Generator.sample` maps them to [0, 1] like the VAE's decoder).
- Discriminator: the mirror image, 4×4 stride-2 convolutions + BatchNorm (none on the first) + LeakyReLU(0.2), a
  final 4×4 convolution to one logit (no sigmoid: `BCEWithLogits` is the numerically safe form of DCGAN's BCE).
- Weights from N(0, 0.02) (BatchNorm scales from N(1, 0.02)), Adam with lr 2e-4 and β1 = 0.5, as in the paper.
- Loss "bce" (the original non-saturating GAN loss) or "hinge" (Lim & Ye 2017, used by SAGAN/BigGAN).

`train_gan(GanConfig(...))` writes, under `out_dir`:

    config.json              the GanConfig of the run
    checkpoint.pt            {kind: "gan", generator, discriminator, optimizer_g, optimizer_d, step, config,
                             metrics, history, rng, code_version}, written atomically
    metrics.json             the loss history (loss_d, loss_g, D(x), D(G(z)) per step)
    monitor/step_000100.png  samples of a fixed batch of latents (DCGAN's `fixed_noise`), 2 rows
    monitor.gif              those frames as a looping animation

Data comes through the VAE's own pipeline (`vae.train.split_datasets`, `CachedImages`, `StepBatchSampler`, the
seeded flips of `_Run.augment`): the same images in the same seeded order. With the RNG states stored in the
checkpoint, a resumed run computes exactly the losses an uninterrupted run would (a test checks it).

Why no multi-scale gradients (MSG-GAN, Karnik & Wang 2020): at 64 px on a CPU budget of minutes a plain DCGAN
already produces face-like samples, and MSG-GAN's extra RGB heads and concatenations cost step time where the
budget is the comparison's point; its benefit (stable training at high resolution) shows at 256 px and up.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoints import load_checkpoint, save_checkpoint
from common.config import apply_overrides, config_to_dict, parse_set_options, pick_device, save_config, seed_everything
from common.errors import InputError
from common.files import atomic_save_image, atomic_write_text

from vae.train import (MONITOR_COLUMNS, CachedImages, DistributedContext, RunExistsError, StepBatchSampler,
                    _remove_run_outputs, image_grid, out_of_time, rng_state, set_rng_state, split_datasets,
                    vae_code_version, write_monitor_gif)

GAN_ARCHITECTURE_FIELDS = ("image_size", "latent_dim", "g_width", "d_width")
MONITOR_ROWS = 2  # rows of fixed-noise samples per monitoring frame (MONITOR_COLUMNS each)


@dataclass
class GanConfig:
    """Everything one GAN training run depends on; saved as config.json next to its checkpoint.

    The data fields (data_root, split, image_size, identities, num_eval, seed) mean what they mean in
    `vae.train.TrainConfig`: `split_datasets` reads them from either config, so both models see the same images.
    """

    data_root: str = "data/celeba"  # CelebA root (official layout) or any folder of face images
    out_dir: str = "runs/gan"  # run folder: checkpoint.pt, config.json, metrics.json, monitor/, monitor.gif
    image_size: int = 64  # side of the square images in pixels (32, 64 or 128)
    latent_dim: int = 100  # size of z (DCGAN's nz)
    g_width: int = 32  # generator width of the last hidden stage (DCGAN's ngf = 64; 32 fits a CPU budget)
    d_width: int = 32  # discriminator width of the first stage (DCGAN's ndf = 64)
    batch_size: int = 64  # images per optimizer step (DCGAN used 128)
    lr: float = 2e-4  # Adam learning rate of both networks (DCGAN)
    beta1: float = 0.5  # Adam β1 (DCGAN: 0.9 made training oscillate)
    loss: str = "bce"  # "bce" (non-saturating GAN loss) or "hinge"
    max_steps: int | None = 300  # optimizer steps (one D step + one G step each) in total (None: `epochs` passes)
    max_minutes: float | None = None  # also stop (checkpointed) after this many wall-clock minutes
    epochs: int = 1  # passes over the training images, used only when max_steps is None
    monitor_every: int = 50  # steps between fixed-noise monitoring frames
    checkpoint_every: int = 100  # steps between checkpoints (also written at the last step)
    num_eval: int = 64  # held-out images set aside as in the VAE (never trained on when carved out of train)
    seed: int = 0  # seeds data order, flips, init, the training noise and the fixed monitoring noise
    device: str = "auto"  # "auto" = CUDA, then MPS, then CPU
    num_workers: int = 0  # DataLoader worker processes; 0 decodes in the training process (and allows the RAM cache)
    cache_images: int = 20000  # keep decoded uint8 images in RAM when the training set has at most this many
    hflip: bool = True  # random horizontal flips (a seeded function of the step, so resume stays exact)
    channels_last: bool = True  # NHWC layout: oneDNN's fast conv path on CPU
    resume: bool = False  # continue from out_dir/checkpoint.pt if it exists (and the code is unchanged)
    overwrite: bool = False  # delete this run's previous outputs in out_dir and start again
    identities: list[int] | None = None  # train only on images of these CelebA identity ids (None: all)
    split: str = "train"  # CelebA split to train on: "train", "valid", "test" or "all"


# --------------------------------------------------------------------------------------------------- networks

def _stages(image_size: int) -> int:
    """Stride-2 stages between 4×4 and `image_size` (3 at 32 px, 4 at 64 px, 5 at 128 px)."""
    stages = int(np.log2(image_size)) - 2
    if image_size not in (32, 64, 128):
        raise ValueError(f"image_size must be 32, 64 or 128, got {image_size}")
    return stages


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02) and shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """DCGAN generator: z [B, latent_dim] -> images [B, 3, S, S] in [-1, 1] (tanh)."""

    def __init__(self, latent_dim: int = 100, image_size: int = 64, width: int = 32):
        super().__init__()
        self.latent_dim, self.image_size = latent_dim, image_size
        stages = _stages(image_size)
        channels = width * 2 ** (stages - 1)  # 256 -> 128 -> 64 -> 32 at 64 px with width 32
        layers = [nn.ConvTranspose2d(latent_dim, channels, 4, 1, 0, bias=False), nn.BatchNorm2d(channels),
                  nn.ReLU(True)]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(channels // 2), nn.ReLU(True)]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))

    def forward_batch_statistics(self, z: torch.Tensor) -> torch.Tensor:
        """`forward` with every BatchNorm normalising by the statistics of this batch, as in training, and the
        running averages left untouched (they are not read or written)."""
        h = z.view(z.shape[0], self.latent_dim, 1, 1)
        for layer in self.net:
            if isinstance(layer, nn.BatchNorm2d):
                h = F.batch_norm(h, None, None, layer.weight, layer.bias, training=True, eps=layer.eps)
            else:
                h = layer(h)
        return h

    @torch.no_grad()
    def sample(self, n: int | None = None, z: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """Images in [0, 1] ([B, 3, S, S]) for `z` or `n` draws from N(0, I) — the VAE's `sample` contract.

        BatchNorm uses the statistics of the sampled batch, as pytorch/examples' DCGAN draws its fixed-noise frames
        (in train mode): the running averages lag behind a generator whose output moves every step, and early in
        training eval-mode samples come out flat grey where batch-statistics samples already show structure. So a
        sample depends a little on the others drawn with it; draw batches of 16 or more.
        """
        if z is None:
            z = torch.randn(n, self.latent_dim, generator=generator)
        z = z.to(next(self.parameters()).device)
        return self.forward_batch_statistics(z).add(1.0).div(2.0).clamp(0.0, 1.0)


class Discriminator(nn.Module):
    """DCGAN discriminator: images [B, 3, S, S] in [-1, 1] -> one real/fake logit per image ([B])."""

    def __init__(self, image_size: int = 64, width: int = 32):
        super().__init__()
        stages = _stages(image_size)
        layers = [nn.Conv2d(3, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]  # no BN on the input
        channels = width
        for _ in range(stages - 1):
            layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(channels * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels *= 2
        layers.append(nn.Conv2d(channels, 1, 4, 1, 0, bias=False))  # 4×4 -> 1×1 logit
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def build_networks(config: GanConfig | dict) -> tuple[Generator, Discriminator]:
    """A fresh (DCGAN-initialised) generator and discriminator for `config` (a GanConfig or its saved dict)."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key)
    return (Generator(get("latent_dim"), get("image_size"), get("g_width")),
            Discriminator(get("image_size"), get("d_width")))


# ------------------------------------------------------------------------------------------------------ losses

def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """D's loss, averaged over each batch: BCE says real -> 1, fake -> 0; hinge is relu(1 - real) + relu(1 + fake)."""
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """G's loss: the non-saturating -log D(G(z)) (Goodfellow et al. 2014, DCGAN) or hinge's -mean D(G(z))."""
    if kind == "hinge":
        return -fake_logits.mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def gan_step(generator: Generator, discriminator: Discriminator, optimizer_g, optimizer_d, real: torch.Tensor,
             z: torch.Tensor, kind: str = "bce") -> dict[str, float]:
    """One DCGAN step (pytorch/examples' order): update D on a real batch and a fake batch, then G through D.

    Args:
        real: training images [B, 3, S, S] in [0, 1] (mapped to [-1, 1] here, the range of G's tanh).
        z: latents [B, latent_dim] for the fake batch.
    Returns: loss_d, loss_g, d_real (mean sigmoid D(x)) and d_fake (mean sigmoid D(G(z)) before D's update).
    """
    x = real * 2.0 - 1.0
    fake = generator(z)
    optimizer_d.zero_grad(set_to_none=True)
    real_logits = discriminator(x)
    fake_logits = discriminator(fake.detach())
    loss_d = discriminator_loss(real_logits, fake_logits, kind)
    loss_d.backward()
    optimizer_d.step()

    optimizer_g.zero_grad(set_to_none=True)
    loss_g = generator_loss(discriminator(fake), kind)
    loss_g.backward()
    optimizer_g.step()
    return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()),
            "d_real": float(torch.sigmoid(real_logits.detach()).mean()),
            "d_fake": float(torch.sigmoid(fake_logits.detach()).mean())}


# ------------------------------------------------------------------------------------------------ checkpoints

def load_gan(checkpoint_path: str | Path, device: str = "auto") -> tuple[Generator, dict]:
    """Rebuild the trained generator from a GAN `checkpoint.pt` (or its run folder), in eval mode.

    Returns `(generator, checkpoint_dict)`.
    """
    path = Path(checkpoint_path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    checkpoint = load_checkpoint(path, hint="train one with `python -m generative gan`")
    if checkpoint.get("kind") != "gan" or "generator" not in checkpoint:
        raise InputError(f"checkpoint {path} is not a GAN checkpoint; train one with `python -m generative gan`")
    generator, _ = build_networks(checkpoint["config"])
    generator.load_state_dict(checkpoint["generator"])
    return generator.to(pick_device(device)).eval(), checkpoint


def _check_architecture(config: GanConfig, saved: dict, source: Path) -> None:
    mismatched = [f"{k}: {saved.get(k)} there vs {getattr(config, k)} here" for k in GAN_ARCHITECTURE_FIELDS
                  if saved.get(k) != getattr(config, k)]
    if mismatched:
        raise ValueError(f"checkpoint {source} has a different architecture ({'; '.join(mismatched)})")


def write_sample_frame(generator: Generator, noise: torch.Tensor, path: Path) -> Path:
    """Samples of the fixed latents `noise` as a grid of MONITOR_COLUMNS columns (generator in eval mode)."""
    from PIL import Image

    was_training = generator.training
    generator.eval()
    with torch.inference_mode():
        images = generator.sample(z=noise).cpu()
    generator.train(was_training)
    rows = [images[r * MONITOR_COLUMNS:(r + 1) * MONITOR_COLUMNS] for r in range(len(images) // MONITOR_COLUMNS)]
    return atomic_save_image(Image.fromarray(image_grid(rows)), path)


# ---------------------------------------------------------------------------------------------------- training

class _GanRun:
    """One GAN run between steps: both networks, both optimisers, the VAE's data pipeline, fixed noise, history."""

    def __init__(self, config: GanConfig, out_dir: Path, checkpoint_path: Path):
        self.config, self.out_dir, self.checkpoint_path = config, out_dir, checkpoint_path
        self.device = pick_device(config.device)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        resuming = config.resume and checkpoint_path.exists()
        checkpoint = load_checkpoint(checkpoint_path) if resuming else None
        if checkpoint is not None:
            _check_architecture(config, checkpoint["config"], checkpoint_path)
        if config.overwrite and checkpoint is None:
            _remove_run_outputs(out_dir)
        _remove_run_outputs(out_dir, after_step=checkpoint["step"] if checkpoint else 0)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.json")

        seed_everything(config.seed)
        train_set, self.train_indices, _, _, self.held_from = split_datasets(config)
        batch_size = min(config.batch_size, len(self.train_indices))
        steps_per_epoch = max(1, len(self.train_indices) // batch_size)
        self.total_steps = config.max_steps if config.max_steps else config.epochs * steps_per_epoch

        self.generator, self.discriminator = build_networks(config)
        for net in (self.generator, self.discriminator):
            net.to(self.device, memory_format=self.memory_format).train()
        betas = (config.beta1, 0.999)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        self.start_step, self.history = 0, []
        if checkpoint is not None:
            self._restore(checkpoint)
        # DCGAN's fixed_noise, from a private generator: the same seed shows the same latents in every frame.
        self.monitor_noise = torch.randn(MONITOR_ROWS * MONITOR_COLUMNS, config.latent_dim,
                                         generator=torch.Generator().manual_seed(config.seed)).to(self.device)
        cache = config.num_workers == 0 and len(self.train_indices) <= config.cache_images
        sampler = StepBatchSampler(self.train_indices, batch_size, config.seed, self.start_step, self.total_steps)
        # its own generator, so creating the loader draws nothing from the global RNG (resume stays exact)
        self.loader = DataLoader(CachedImages(train_set, cache), batch_sampler=sampler,
                                 num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(config.seed * 1_000_003 + self.start_step))

    def _restore(self, checkpoint: dict) -> None:
        self.generator.load_state_dict(checkpoint["generator"])
        self.discriminator.load_state_dict(checkpoint["discriminator"])
        self.optimizer_g.load_state_dict(checkpoint["optimizer_g"])
        self.optimizer_d.load_state_dict(checkpoint["optimizer_d"])
        self.start_step, self.history = checkpoint["step"], checkpoint.get("history", [])
        set_rng_state(checkpoint["rng"])

    def augment(self, batch: torch.Tensor, step: int) -> torch.Tensor:
        """The batch on the device with the VAE's seeded per-image flips (a function of seed and step)."""
        x = batch.to(self.device, non_blocking=True)
        if self.config.hflip:
            flip_gen = torch.Generator().manual_seed(self.config.seed * 7_919 + step * 104_729)
            flip = (torch.rand(x.shape[0], generator=flip_gen) < 0.5).to(self.device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x.contiguous(memory_format=self.memory_format)

    def monitor(self, step: int) -> None:
        write_sample_frame(self.generator, self.monitor_noise, self.out_dir / "monitor" / f"step_{step:06d}.png")

    def save(self, step: int) -> None:
        metrics = self.latest_metrics()
        save_checkpoint(self.checkpoint_path, {
            "kind": "gan", "generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict(),
            "step": step, "config": config_to_dict(self.config), "metrics": metrics, "history": self.history,
            "rng": rng_state(), "code_version": vae_code_version(),
        })
        atomic_write_text(self.out_dir / "metrics.json", json.dumps(
            {"step": step, "metrics": metrics, "history": self.history}, indent=1) + "\n")
        write_monitor_gif(self.out_dir / "monitor", self.out_dir / "monitor.gif")  # once per checkpoint, not frame

    def latest_metrics(self, window: int = 20) -> dict[str, float]:
        """Mean losses and D outputs over the last `window` steps (a GAN's losses say little on their own)."""
        rows = self.history[-window:]
        keys = ("loss_d", "loss_g", "d_real", "d_fake")
        return {k: float(np.mean([r[k] for r in rows])) for k in keys} if rows else {}


def gan_code_version() -> str:
    """Fingerprint of the code a GAN run depends on (common/ and vae/, as for the VAE)."""
    return vae_code_version()


def train_gan(config: GanConfig) -> dict:
    """Train (or resume) the DCGAN described by `config`; returns a JSON-ready summary.

    Summary keys: checkpoint, out_dir, steps, steps_this_run, reused, images_per_s (real training images per
    second of this run, excluding monitoring and checkpoints), history (step, loss_d, loss_g, d_real, d_fake per
    step), metrics (means of the last 20 steps), monitor_gif, train_images, held_out_from, redone_because.

    With `resume`, a checkpoint written by other code (its `code_version` differs) is not continued: the run starts
    again and the summary says `redone_because: "code changed"`. Raises RunExistsError when out_dir holds a
    checkpoint and neither `resume` nor `overwrite` is set.
    """
    if config.loss not in ("bce", "hinge"):
        raise ValueError(f"loss must be 'bce' or 'hinge', got {config.loss!r}")
    out_dir = Path(config.out_dir)
    checkpoint_path = out_dir / "checkpoint.pt"
    if checkpoint_path.exists() and not (config.resume or config.overwrite):
        raise RunExistsError(f"{out_dir} already holds a training run ({checkpoint_path.name}); pass resume=True "
                             "(--resume) to continue it or overwrite=True (--overwrite) to start again")
    redone_because = None
    if config.resume and checkpoint_path.exists():
        made_by = load_checkpoint(checkpoint_path).get("code_version")
        if made_by != gan_code_version():
            config = dataclasses.replace(config, resume=False, overwrite=True)
            redone_because = "code changed"
    run = _GanRun(config, out_dir, checkpoint_path)
    step, train_seconds, images_seen = run.start_step, 0.0, 0
    progress = tqdm(total=run.total_steps, initial=step, desc="gan train", dynamic_ncols=True)
    tick = loop_started = time.perf_counter()
    for batch in run.loader:
        x = run.augment(batch, step)
        z = torch.randn(x.shape[0], config.latent_dim).to(run.device)
        row = {"step": step + 1, **gan_step(run.generator, run.discriminator, run.optimizer_g, run.optimizer_d,
                                            x, z, config.loss)}
        if not all(np.isfinite(v) for v in row.values()):
            raise RuntimeError(f"non-finite GAN loss at step {step + 1} ({row}); lower lr or check the data")
        step += 1
        images_seen += x.shape[0]
        run.history.append(row)
        progress.update(1)
        train_seconds += time.perf_counter() - tick
        last = step == run.total_steps or out_of_time(config, loop_started, DistributedContext())
        if step % config.monitor_every == 0 or last:
            run.monitor(step)
        if step % config.checkpoint_every == 0 or last:
            run.save(step)
        progress.set_postfix(d=f"{row['loss_d']:.2f}", g=f"{row['loss_g']:.2f}", refresh=False)
        tick = time.perf_counter()
        if last:
            break
    progress.close()
    gif = out_dir / "monitor.gif"
    return {
        "checkpoint": str(checkpoint_path), "out_dir": str(out_dir), "steps": step,
        "steps_this_run": step - run.start_step, "reused": step == run.start_step,
        "images_per_s": round(images_seen / train_seconds, 2) if train_seconds > 0 else None,
        "history": run.history, "metrics": run.latest_metrics(), "monitor_gif": str(gif) if gif.exists() else None,
        "train_images": len(run.train_indices), "held_out_from": run.held_from, "redone_because": redone_because,
    }


# ------------------------------------------------------------------------------------------------------------- CLI

def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m generative gan`."""
    parser.add_argument("--src", "--data-root", dest="data_root", required=True,
                        help="CelebA root (official layout) or a folder of face crops")
    parser.add_argument("--out", default=GanConfig.out_dir, help="run folder (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps in total")
    parser.add_argument("--max-minutes", type=float, help="stop after this many wall-clock minutes")
    parser.add_argument("--image-size", type=int, help="32, 64 or 128")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--loss", choices=("bce", "hinge"))
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other GanConfig field")


def config_from_args(args: argparse.Namespace) -> GanConfig:
    """GanConfig from parsed CLI arguments (`--set` keys are checked against the dataclass fields)."""
    overrides = {"data_root": args.data_root, "out_dir": args.out}
    for field in ("max_steps", "max_minutes", "image_size", "batch_size", "loss", "device", "seed"):
        if getattr(args, field) is not None:
            overrides[field] = getattr(args, field)
    for flag in ("resume", "overwrite"):
        if getattr(args, flag):
            overrides[flag] = True
    overrides.update(parse_set_options(args.set))
    return apply_overrides(GanConfig(), overrides)


def cli_run(args: argparse.Namespace) -> dict:
    """Train from CLI arguments; the summary keeps only the last history row (all of it is in metrics.json)."""
    summary = train_gan(config_from_args(args))
    summary["history"] = summary["history"][-1:]
    return summary
