"""A DCGAN baseline beside the VAE (pytorch/examples' `dcgan`, Radford et al. 2016, widths sized for a CPU).

`train_gan` reuses the VAE's data pipeline and run bookkeeping (`vae.train`: checkpoint, exact resume, monitor GIF).
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
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoints import load_checkpoint, save_checkpoint
from common.config import apply_overrides, config_to_dict, parse_set_options, pick_device, save_config, seed_everything
from common.errors import InputError
from common.files import atomic_save_image, atomic_write_text

from vae.train import (MONITOR_COLUMNS, CachedImages, RunExistsError, StepBatchSampler, _remove_run_outputs,
                       image_grid, rng_state, set_rng_state, split_datasets, vae_code_version, write_monitor_gif)

GAN_ARCHITECTURE_FIELDS = ("image_size", "latent_dim", "g_width", "d_width")
MONITOR_ROWS = 2  # rows of fixed-noise samples per monitoring frame (MONITOR_COLUMNS each)
CACHE_IMAGES = 20000  # keep decoded training images in RAM when there are at most this many


@dataclass
class GanConfig:
    """Everything one GAN run depends on; the data fields mean what they mean in `vae.train.TrainConfig`."""

    data_root: str = "data/celeba"  # CelebA root (official layout) or any folder of face images
    out_dir: str = "runs/gan"  # run folder: checkpoint.pt, config.json, metrics.json, monitor/, monitor.gif
    image_size: int = 64  # side of the square images in pixels (32, 64 or 128)
    latent_dim: int = 100  # size of z (DCGAN's nz)
    g_width: int = 32  # generator width of the last hidden stage (DCGAN's ngf = 64; 32 fits a CPU budget)
    d_width: int = 32  # discriminator width of the first stage (DCGAN's ndf = 64)
    batch_size: int = 64  # images per optimizer step (DCGAN used 128)
    lr: float = 2e-4  # Adam learning rate of both networks (DCGAN)
    beta1: float = 0.5  # Adam β1 (DCGAN: 0.9 made training oscillate)
    loss: str = "bce"  # "bce" (non-saturating GAN loss) or "hinge" (Lim & Ye 2017)
    max_steps: int = 300  # optimizer steps (one D step + one G step each) in total
    max_minutes: float | None = None  # also stop (checkpointed) after this many wall-clock minutes
    monitor_every: int = 50  # steps between fixed-noise monitoring frames
    checkpoint_every: int = 100  # steps between checkpoints (also written at the last step)
    num_eval: int = 64  # held-out images set aside as in the VAE (never trained on when carved out of train)
    seed: int = 0  # seeds data order, flips, init, the training noise and the fixed monitoring noise
    device: str = "auto"  # "auto" = CUDA, then MPS, then CPU
    resume: bool = False  # continue from out_dir/checkpoint.pt if it exists (and the code is unchanged)
    overwrite: bool = False  # delete this run's previous outputs in out_dir and start again
    identities: list[int] | None = None  # train only on images of these CelebA identity ids (None: all)
    split: str = "train"  # CelebA split to train on: "train", "valid", "test" or "all"


def _stages(image_size: int) -> int:
    """Stride-2 stages between 4×4 and `image_size` (3 at 32 px, 4 at 64 px, 5 at 128 px)."""
    if image_size not in (32, 64, 128):
        raise ValueError(f"image_size must be 32, 64 or 128, got {image_size}")
    return int(np.log2(image_size)) - 2


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
        return self.net(z.view(-1, self.latent_dim, 1, 1))

    @torch.no_grad()
    def sample(self, n: int | None = None, z: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """Images in [0, 1] ([B, 3, S, S]) for `z` or `n` draws from N(0, I). BatchNorm uses the sampled batch's
        statistics, as in training (running averages lag a moving generator): draw batches of 16 or more."""
        z = torch.randn(n, self.latent_dim, generator=generator) if z is None else z
        h = z.to(next(self.parameters()).device).view(-1, self.latent_dim, 1, 1)
        for layer in self.net:
            if isinstance(layer, nn.BatchNorm2d):
                h = F.batch_norm(h, None, None, layer.weight, layer.bias, training=True, eps=layer.eps)
            else:
                h = layer(h)
        return h.add(1.0).div(2.0).clamp(0.0, 1.0)


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
        layers.append(nn.Conv2d(channels, 1, 4, 1, 0, bias=False))  # 4×4 -> 1×1 logit, no sigmoid (BCEWithLogits)
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def build_networks(c: dict) -> tuple[Generator, Discriminator]:
    """A fresh generator and discriminator for a GanConfig's dict."""
    return Generator(c["latent_dim"], c["image_size"], c["g_width"]), Discriminator(c["image_size"], c["d_width"])


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """D's loss, averaged over each batch: BCE says real -> 1, fake -> 0; hinge is relu(1 - real) + relu(1 + fake)."""
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """G's loss: the non-saturating -log D(G(z)) (Goodfellow et al. 2014) or hinge's -mean D(G(z))."""
    if kind == "hinge":
        return -fake_logits.mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def gan_step(generator: Generator, discriminator: Discriminator, optimizer_g, optimizer_d, real: torch.Tensor,
             z: torch.Tensor, kind: str = "bce") -> dict[str, float]:
    """One DCGAN step on real images [B, 3, S, S] in [0, 1]: D on real and G(z), then G through D; returns loss_d,
    loss_g and the mean sigmoid outputs d_real, d_fake (before D's update)."""
    fake = generator(z)
    optimizer_d.zero_grad(set_to_none=True)
    real_logits = discriminator(real * 2.0 - 1.0)  # [0, 1] -> the [-1, 1] of G's tanh
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


def load_gan(checkpoint_path: str | Path, device: str = "auto") -> tuple[Generator, dict]:
    """`(generator in eval mode, checkpoint dict)` from a GAN `checkpoint.pt` or its run folder."""
    path = Path(checkpoint_path)
    path = path / "checkpoint.pt" if path.is_dir() else path
    hint = "train one with `python -m generative gan`"
    checkpoint = load_checkpoint(path, hint=hint)
    if checkpoint.get("kind") != "gan":
        raise InputError(f"checkpoint {path} is not a GAN checkpoint; {hint}")
    generator, _ = build_networks(checkpoint["config"])
    generator.load_state_dict(checkpoint["generator"])
    return generator.to(pick_device(device)).eval(), checkpoint


def recent_means(history: list[dict], window: int = 20) -> dict[str, float]:
    """Mean losses and D outputs over the last `window` steps (a GAN's losses say little on their own)."""
    rows = history[-window:]
    return {k: float(np.mean([r[k] for r in rows])) for k in ("loss_d", "loss_g", "d_real", "d_fake")} if rows else {}


def train_gan(config: GanConfig) -> dict:
    """Train (or resume) the DCGAN of `config`; returns a JSON-ready summary (steps, images_per_s, history, metrics,
    monitor_gif, ...). RunExistsError when out_dir holds a run and neither resume nor overwrite is set."""
    if config.loss not in ("bce", "hinge"):
        raise ValueError(f"loss must be 'bce' or 'hinge', got {config.loss!r}")
    out_dir = Path(config.out_dir)
    path = out_dir / "checkpoint.pt"
    if path.exists() and not (config.resume or config.overwrite):
        raise RunExistsError(f"{out_dir} already holds a training run ({path.name}); pass resume=True "
                             "(--resume) to continue it or overwrite=True (--overwrite) to start again")
    checkpoint = load_checkpoint(path) if config.resume and path.exists() else None
    redone_because = None
    if checkpoint is not None and checkpoint.get("code_version") != vae_code_version():
        config, checkpoint = dataclasses.replace(config, resume=False, overwrite=True), None
        redone_because = "code changed"  # its numbers describe other code
    mismatched = [f"{k}: {checkpoint['config'].get(k)} there vs {getattr(config, k)} here"
                  for k in GAN_ARCHITECTURE_FIELDS if checkpoint and checkpoint["config"].get(k) != getattr(config, k)]
    if mismatched:
        raise ValueError(f"checkpoint {path} has a different architecture ({'; '.join(mismatched)})")
    start = checkpoint["step"] if checkpoint else 0
    _remove_run_outputs(out_dir, after_step=-1 if config.overwrite and not checkpoint else start)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.json")

    seed_everything(config.seed)
    device = pick_device(config.device)
    train_set, train_indices, _, _, held_from = split_datasets(config)
    batch_size = min(config.batch_size, len(train_indices))
    generator, discriminator = build_networks(config_to_dict(config))
    for net in (generator, discriminator):
        net.to(device, memory_format=torch.channels_last).train()
    optimizer_g, optimizer_d = (torch.optim.Adam(net.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
                                for net in (generator, discriminator))
    history = []
    if checkpoint is not None:
        for name, module in (("generator", generator), ("discriminator", discriminator),
                             ("optimizer_g", optimizer_g), ("optimizer_d", optimizer_d)):
            module.load_state_dict(checkpoint[name])
        history = checkpoint.get("history", [])
        set_rng_state(checkpoint["rng"])
    # DCGAN's fixed_noise from a private generator: every frame shows the same latents
    monitor_noise = torch.randn(MONITOR_ROWS * MONITOR_COLUMNS, config.latent_dim,
                                generator=torch.Generator().manual_seed(config.seed)).to(device)
    sampler = StepBatchSampler(train_indices, batch_size, config.seed, start, config.max_steps)
    # the loader's own generator: creating it draws nothing from the global RNG (resume stays exact)
    loader = DataLoader(CachedImages(train_set, len(train_indices) <= CACHE_IMAGES), batch_sampler=sampler,
                        pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(config.seed * 1_000_003 + start))

    step, train_seconds = start, 0.0
    progress = tqdm(total=config.max_steps, initial=step, desc="gan train", dynamic_ncols=True)
    tick = loop_started = time.perf_counter()
    for batch in loader:
        # the VAE's seeded per-image flips: a function of seed and step, so resume stays exact
        flip = torch.rand(batch.shape[0], generator=torch.Generator().manual_seed(config.seed * 7_919 + step * 104_729))
        x = torch.where((flip < 0.5).view(-1, 1, 1, 1), batch.flip(-1), batch)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        z = torch.randn(x.shape[0], config.latent_dim).to(device)
        row = {"step": step + 1, **gan_step(generator, discriminator, optimizer_g, optimizer_d, x, z, config.loss)}
        if not all(np.isfinite(v) for v in row.values()):
            raise RuntimeError(f"non-finite GAN loss at step {step + 1} ({row}); lower lr or check the data")
        step += 1
        history.append(row)
        progress.update(1)
        train_seconds += time.perf_counter() - tick
        out_of_time = config.max_minutes is not None and time.perf_counter() - loop_started >= 60 * config.max_minutes
        last = step == config.max_steps or out_of_time
        if step % config.monitor_every == 0 or last:
            grid = image_grid(list(generator.sample(z=monitor_noise).cpu().split(MONITOR_COLUMNS)))
            atomic_save_image(Image.fromarray(grid), out_dir / "monitor" / f"step_{step:06d}.png")
        if step % config.checkpoint_every == 0 or last:
            metrics = recent_means(history)
            save_checkpoint(path, {
                "kind": "gan", "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                "optimizer_g": optimizer_g.state_dict(), "optimizer_d": optimizer_d.state_dict(), "step": step,
                "config": config_to_dict(config), "metrics": metrics, "history": history, "rng": rng_state(),
                "code_version": vae_code_version()})
            atomic_write_text(out_dir / "metrics.json", json.dumps(
                {"step": step, "metrics": metrics, "history": history}, indent=1) + "\n")
            write_monitor_gif(out_dir / "monitor", out_dir / "monitor.gif")
        progress.set_postfix(d=f"{row['loss_d']:.2f}", g=f"{row['loss_g']:.2f}", refresh=False)
        tick = time.perf_counter()
        if last:
            break
    progress.close()
    gif = out_dir / "monitor.gif"
    return {
        "checkpoint": str(path), "out_dir": str(out_dir), "steps": step, "steps_this_run": step - start,
        "reused": step == start, "history": history, "metrics": recent_means(history),
        "images_per_s": round((step - start) * batch_size / train_seconds, 2) if train_seconds > 0 else None,
        "monitor_gif": str(gif) if gif.exists() else None,
        "train_images": len(train_indices), "held_out_from": held_from, "redone_because": redone_because,
    }


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m generative gan`."""
    parser.add_argument("--src", "--data-root", dest="data_root", required=True,
                        help="CelebA root (official layout) or a folder of face crops")
    parser.add_argument("--out", dest="out_dir", default=GanConfig.out_dir, help="run folder (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps in total")
    parser.add_argument("--max-minutes", type=float, help="stop after this many wall-clock minutes")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other GanConfig field")


def cli_run(args: argparse.Namespace) -> dict:
    """Train from CLI arguments; the summary keeps only the last history row (all of it is in metrics.json)."""
    fields = {f.name for f in dataclasses.fields(GanConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v not in (None, False)}
    summary = train_gan(apply_overrides(GanConfig(), {**overrides, **parse_set_options(args.set)}))
    summary["history"] = summary["history"][-1:]
    return summary
