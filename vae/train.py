"""Train the ConvVAE on CelebA (or a folder of face crops): a plain loop with checkpoints, resume, monitoring and DDP.

`train_vae(TrainConfig(...))` writes under `out_dir` (rank 0 only): config.json, checkpoint.pt (model, optimizer,
step, config, metrics, history, RNG states), metrics.json (held-out MSE/PSNR/SSIM and the loss history) and
monitor/step_*.png frames (fixed held-out originals, their reconstructions, fixed-noise samples) with monitor.gif.

Data order is a pure function of (seed, step), and the checkpoint holds every RNG state, so a resumed run computes
exactly the losses an uninterrupted one would. Runs unchanged under `torchrun --nproc_per_node=N -m vae train ...`
(gloo on CPU, NCCL on CUDA).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.checkpoints import load_checkpoint, save_checkpoint
from common.config import (apply_overrides, code_version, config_to_dict, parse_set_options, pick_device,
                           save_config, seed_everything)
from common.errors import InputError
from common.files import atomic_save_image, atomic_write_bytes, atomic_write_text

from .celeba import open_image_dataset
from .losses import VGGPerceptualLoss, centre_weight_map, vae_loss, vgg19_weights_cached
from .metrics import mse, psnr, ssim
from .model import ConvVAE

MONITOR_COLUMNS = 12  # fixed held-out images and fixed latent samples per monitoring frame
ARCHITECTURE_FIELDS = ("image_size", "latent_dim", "base_channels")


@dataclass
class TrainConfig:
    """Everything one VAE training run depends on; saved as config.json next to its checkpoint."""

    data_root: str = "data/celeba"  # CelebA root (official layout) or any folder of face images (searched recursively)
    out_dir: str = "runs/vae"  # run folder: checkpoint.pt, config.json, metrics.json, monitor/, monitor.gif
    image_size: int = 64  # side of the square training images in pixels (64 or 128)
    latent_dim: int = 128  # size of the latent code z
    base_channels: int = 32  # width of the first encoder conv (doubles per stage): 32 = DFC-VAE's 64 px model
    batch_size: int = 32  # GLOBAL batch per optimizer step (under DDP each of N processes takes batch_size / N); in
    # a fixed time on a CPU, 32 beat 64 and 16: ~80 % of 64's images per second, ~1.6x its steps
    lr: float = 1e-3  # Adam learning rate (constant)
    beta: float = 0.05  # KL weight; 1 = the ELBO with a Gaussian σ² = 1/2 pixel likelihood (vae/losses.py)
    # Perceptual (VGG19) loss weight; 0 never builds VGG. None: 1 when VGG19's ImageNet weights are on disk (or may
    # be downloaded), else 0: offline a random-init VGG19 loses to the pixel loss at equal time.
    gamma: float | None = None
    centre_weight: float = 4.0  # pixel-loss weight at the image centre (the face) against its edges; 1: flat
    max_steps: int | None = 300  # optimizer steps to train in total (None: `epochs` full passes instead)
    max_minutes: float | None = None  # also stop (evaluated and checkpointed) after this many wall-clock minutes
    epochs: int = 1  # passes over the training images, used only when max_steps is None
    monitor_every: int = 50  # steps between monitoring frames
    eval_every: int = 100  # steps between held-out evaluations and checkpoints (also done at the last step)
    num_eval: int = 64  # held-out images scored; the first 12 are shown in the monitoring frames
    seed: int = 0  # seeds data order, flips, sampling noise, init and the fixed monitoring noise
    device: str = "auto"  # "auto" = CUDA, then MPS, then CPU; under torchrun each process uses its LOCAL_RANK GPU
    num_workers: int = 0  # DataLoader worker processes; 0 decodes in the training process (and allows the RAM cache)
    cache_images: int = 20000  # keep decoded uint8 images in RAM when the training set has at most this many (0: off)
    hflip: bool = True  # random horizontal flips (a seeded function of the step, so resume stays exact)
    amp: bool = True  # mixed precision: float16 + GradScaler on CUDA; bfloat16 on a CPU with native bf16
    channels_last: bool = True  # NHWC layout for model and batches: oneDNN's fast conv path on CPU
    grad_clip: float = 100.0  # max global gradient norm (losses are per-image sums, so norms are large); 0: off
    max_bad_steps: int = 10  # stop after this many consecutive steps with a non-finite loss or gradient
    resume: bool = False  # continue from out_dir/checkpoint.pt if it exists
    overwrite: bool = False  # delete this run's previous outputs in out_dir and start again
    init_from: str | None = None  # checkpoint whose model weights initialise this run (fine-tuning); optimizer is fresh
    identities: list[int] | None = None  # train only on images of these CelebA identity ids (None: all)
    split: str = "train"  # CelebA split to train on: "train", "valid", "test" or "all"
    hold_out: bool = True  # without a "valid" split, hold a tenth out for the metrics; False: train on all, score them
    vgg_allow_download: bool = False  # download the VGG19 ImageNet weights if they are not in $TORCH_HOME


class RunExistsError(FileExistsError):
    """The output folder already holds a run and neither `resume` nor `overwrite` was asked for."""


# ----------------------------------------------------------------------------------------------------------- data
class CachedImages(Dataset):
    """A dataset view that keeps each decoded image as uint8 in RAM after its first read (exact: images are 8-bit)."""

    def __init__(self, base: Dataset, enabled: bool):
        self.base, self.enabled, self.cache = base, enabled, {}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index in self.cache:
            return self.cache[index].float().div_(255.0)
        image = self.base[index]
        if self.enabled:
            self.cache[index] = image.mul(255.0).round_().to(torch.uint8)
        return image


class StepBatchSampler:
    """For steps start..stop-1, this process's share (every world-th index from `rank`) of the step's global batch:
    batch s mod E of a permutation seeded by (seed, s div E), E = len(indices) div batch_size."""

    def __init__(self, indices: list[int], batch_size: int, seed: int, start: int, stop: int, rank: int = 0,
                 world: int = 1):
        self.indices, self.batch_size, self.seed = indices, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.steps_per_epoch = max(1, len(indices) // batch_size)

    def __iter__(self):
        for step in range(self.start, self.stop):
            epoch, position = divmod(step, self.steps_per_epoch)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.indices), generator=generator)
            chosen = order[position * self.batch_size:(position + 1) * self.batch_size].tolist()
            yield [self.indices[i] for i in chosen[self.rank::self.world]]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def split_datasets(config: TrainConfig):
    """`(train_set, train_indices, held_set, held_indices, held_from)`.

    Held-out images are the CelebA "valid" split (same identity filter) when training on "train"; when that is
    empty a seeded tenth of the training images (at most `num_eval`) is held out instead and not trained on, unless
    `hold_out` is off (or there is one image): then the metrics score training images, and `held_from` says so.
    """
    train_set = open_image_dataset(config.data_root, config.split, config.image_size, config.identities)
    if len(train_set) == 0:
        raise ValueError(f"no training images in {config.data_root} (split={config.split!r}, "
                         f"identities={config.identities})")
    train_indices = list(range(len(train_set)))
    held_set, held_indices, held_from = train_set, [], "train (carved out)"
    if config.split == "train":
        valid = open_image_dataset(config.data_root, "valid", config.image_size, config.identities)
        if len(valid) > 0:
            held_set, held_indices, held_from = valid, list(range(len(valid))), "valid"
    if not held_indices and config.hold_out and len(train_set) > 1:
        n_hold = min(config.num_eval, max(1, len(train_set) // 10))
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed)).tolist()
        held_indices, train_indices = sorted(order[:n_hold]), sorted(order[n_hold:])
    if not held_indices:  # nothing held out: score training images, and say so
        held_indices, held_from = list(train_indices), "train (not held out)"
    if len(held_indices) > config.num_eval:  # evenly spaced, so the monitor shows many people, not one
        picks = np.linspace(0, len(held_indices) - 1, config.num_eval).round().astype(int)
        held_indices = [held_indices[i] for i in sorted(set(picks.tolist()))]
    return train_set, train_indices, held_set, held_indices, held_from


# ---------------------------------------------------------------------------------------------------- distributed
@dataclass
class DistributedContext:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context(device_name: str) -> DistributedContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA (GPU LOCAL_RANK), else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world <= 1 or "RANK" not in os.environ:
        return DistributedContext(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type == "mps":
        device = torch.device("cpu")  # no MPS collective backend: gloo on CPU
    initialized_here = not dist.is_initialized()
    if initialized_here:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(int(os.environ["RANK"]), world, device, initialized_here)


def all_ranks_true(flag: bool, ctx: DistributedContext) -> bool:
    """True only if `flag` is true on every process (so all ranks skip a bad step together)."""
    if ctx.world == 1:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item() > 0.5)


# ------------------------------------------------------------------------------------------------ checkpoints/rng
def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states, to be restored on resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_vae(checkpoint_path: str | Path, device: str = "auto") -> tuple[ConvVAE, dict]:
    """The trained ConvVAE of `checkpoint.pt` (or its run folder) in eval mode, and the checkpoint dict."""
    path = Path(checkpoint_path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    checkpoint = load_checkpoint(path, hint="train one with `python -m vae train`")
    missing = [key for key in ("config", "model") if key not in checkpoint]
    if missing:
        raise InputError(f"checkpoint {path} is not a VAE checkpoint (no {', '.join(missing)}); "
                         "train one with `python -m vae train`")
    model = ConvVAE(*(checkpoint["config"][k] for k in ("latent_dim", "image_size", "base_channels")))
    model.load_state_dict(checkpoint["model"])
    return model.to(pick_device(device)).eval(), checkpoint


def _check_architecture(config: TrainConfig, saved: dict, source: Path) -> None:
    mismatched = [f"{k}: {saved.get(k)} there vs {getattr(config, k)} here" for k in ARCHITECTURE_FIELDS
                  if saved.get(k) != getattr(config, k)]
    if mismatched:
        raise ValueError(f"checkpoint {source} has a different architecture ({'; '.join(mismatched)})")


def _remove_run_outputs(out_dir: Path, after_step: int = -1) -> None:
    """Delete the files a run writes (only those), keeping monitoring frames up to `after_step`."""
    for frame in (out_dir / "monitor").glob("step_*.png"):
        if frame.stem[5:].isdigit() and int(frame.stem[5:]) > after_step:
            frame.unlink()
    if after_step < 0:
        for name in ("checkpoint.pt", "metrics.json", "monitor.gif", "config.json"):
            (out_dir / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------- monitoring
def image_grid(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Stack rows of images in [0, 1] ([N, 3, S, S], N from the first row) into one uint8 HxWx3 grid with `pad`
    white pixels between and around."""
    from torchvision.utils import make_grid

    n = len(rows[0])
    grid = make_grid(torch.cat([row[:n].detach().float().cpu().clamp(0, 1) for row in rows]), nrow=n, padding=pad,
                     pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def write_monitor_frame(model: ConvVAE, images: torch.Tensor, noise: torch.Tensor, path: Path) -> Path:
    """Originals, their reconstructions and fixed-noise samples as a 3-row PNG (model in eval mode)."""
    from PIL import Image

    with torch.inference_mode():
        reconstructions, _, _ = model(images)
        samples = model.decode(noise)
    return atomic_save_image(Image.fromarray(image_grid([images, reconstructions, samples])), path)


def write_monitor_gif(monitor_dir: Path, gif_path: Path, frame_seconds: float = 0.4) -> Path | None:
    """All `step_*.png` frames in step order as a GIF that loops forever (the last frame held 4× longer)."""
    import imageio.v3 as iio

    frames = sorted(monitor_dir.glob("step_*.png"))
    if not frames:
        return None
    durations = [int(frame_seconds * 1000)] * len(frames)
    durations[-1] *= 4
    # (a single frame takes a scalar duration: Pillow's GIF writer rejects a one-element list)
    data = iio.imwrite("<bytes>", np.stack([iio.imread(f) for f in frames]), extension=".gif", loop=0,
                       duration=durations if len(durations) > 1 else durations[0])
    return atomic_write_bytes(gif_path, data)


@torch.inference_mode()
def evaluate(model: ConvVAE, images: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Held-out reconstruction metrics of `model` (eval mode: z = posterior mean): mse, psnr (dB), ssim."""
    was_training = model.training
    model.eval()
    pairs = [(model(x)[0], x) for x in images.split(batch_size)]
    model.train(was_training)
    return {name: float(torch.cat([metric(x_hat, x) for x_hat, x in pairs]).mean())
            for name, metric in (("mse", mse), ("psnr", psnr), ("ssim", ssim))}


# -------------------------------------------------------------------------------------------------------- training
def out_of_time(config: TrainConfig, started: float, ctx: DistributedContext) -> bool:
    """True once `config.max_minutes` have passed since `started` (rank 0's clock decides for every process)."""
    if config.max_minutes is None:
        return False
    late = torch.tensor([1.0 if time.perf_counter() - started >= 60.0 * config.max_minutes else 0.0])
    if ctx.world > 1:
        late = late.to(ctx.device)
        dist.broadcast(late, src=0)
    return bool(late.item() > 0.5)


def memory_format(config: TrainConfig) -> torch.memory_format:
    """Layout of the model's conv weights and of each training batch (`config.channels_last`)."""
    return torch.channels_last if config.channels_last else torch.contiguous_format


def cpu_has_bf16() -> bool:
    """True on a CPU with native bfloat16 arithmetic (AVX-512 BF16 or AMX), where bf16 autocast pays off."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe())


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """float16 on CUDA, bfloat16 on a bf16 CPU, None (float32) otherwise or when `amp` is off."""
    if amp and device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if amp and device.type == "cpu" and cpu_has_bf16() else None


def train_step(train_model, model: ConvVAE, optimizer, scaler, x: torch.Tensor, config: TrainConfig,
               perceptual: VGGPerceptualLoss | None, ctx: DistributedContext, amp_dtype: torch.dtype | None = None):
    """One optimizer step on batch `x`: forward → loss → backward → clip → step; returns `(losses dict, ok)`.

    `train_model` is `model` or its DistributedDataParallel wrapper. A step whose loss (on any rank) or gradient
    norm is not finite changes no weight.
    """
    device = x.device
    with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        x_hat, mu, logvar = train_model(x)
        weights = None if config.centre_weight == 1 else centre_weight_map(x.shape[-1], config.centre_weight).to(device)
        losses = vae_loss(x_hat, x, mu, logvar, config.beta, config.gamma, perceptual, pixel_weights=weights)
    ok = all_ranks_true(bool(torch.isfinite(losses["total"])), ctx)
    optimizer.zero_grad(set_to_none=True)
    if ok:
        scaler.scale(losses["total"]).backward()
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
        ok = bool(torch.isfinite(norm))  # gradients are all-reduced, so every rank agrees
        if ok or scaler.is_enabled():
            scaler.step(optimizer)  # with AMP the scaler itself skips non-finite steps and lowers its scale
        scaler.update()
    return losses, ok


def vae_code_version() -> str:
    """Fingerprint of the code a VAE run depends on (common/ and vae/)."""
    return code_version("common", "vae")


def train_vae(config: TrainConfig) -> dict:
    """Train (or resume) a ConvVAE as described by `config`; returns a JSON-ready summary.

    Summary: checkpoint, out_dir, steps, steps_this_run, reused, images_per_s (evaluation excluded), history (per
    step: step, loss, recon, kl, perceptual, skipped, eval_* at evaluations), metrics (held-out mse, psnr, ssim),
    monitor_gif, skipped_steps, perceptual_pretrained, held_out_from, held_out_images, train_images, world_size and
    redone_because ("code changed": a checkpoint of other code is not resumed but redone). Raises RunExistsError
    when out_dir holds a checkpoint and neither `resume` nor `overwrite` is set.
    """
    if config.gamma is None:
        config = dataclasses.replace(config, gamma=1.0 if config.vgg_allow_download or vgg19_weights_cached() else 0.0)
    out_dir = Path(config.out_dir)
    checkpoint_path = out_dir / "checkpoint.pt"
    if checkpoint_path.exists() and not (config.resume or config.overwrite):
        raise RunExistsError(
            f"{out_dir} already holds a training run ({checkpoint_path.name}); pass resume=True (--resume) to "
            "continue it or overwrite=True (--overwrite) to start again, or choose another out_dir")
    redone_because = None
    if config.resume and checkpoint_path.exists():
        if load_checkpoint(checkpoint_path).get("code_version") != vae_code_version():
            config = dataclasses.replace(config, resume=False, overwrite=True)  # its numbers describe other code
            redone_because = "code changed"
    ctx = distributed_context(config.device)
    try:
        return {**_train(config, ctx, out_dir, checkpoint_path), "redone_because": redone_because}
    finally:
        if ctx.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


class _Run:
    """What one run holds between steps (model, optimiser, data, fixed monitoring inputs, history), built from the
    config and, when resuming, the checkpoint; its methods are the parts of `_train` around the step."""

    def __init__(self, config: TrainConfig, ctx: DistributedContext, out_dir: Path, checkpoint_path: Path):
        self.config, self.ctx, self.out_dir, self.checkpoint_path = config, ctx, out_dir, checkpoint_path
        resuming = config.resume and checkpoint_path.exists()
        checkpoint = load_checkpoint(checkpoint_path) if resuming else None
        if checkpoint is not None:
            _check_architecture(config, checkpoint["config"], checkpoint_path)
        if ctx.is_main:  # clean outputs newer than the resumed step (all of them when overwriting)
            if config.overwrite and checkpoint is None:
                _remove_run_outputs(out_dir)
            _remove_run_outputs(out_dir, after_step=checkpoint["step"] if checkpoint else 0)
            out_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, out_dir / "config.json")
        if ctx.world > 1:
            dist.barrier()  # nobody reads out_dir before rank 0 has cleaned it

        seed_everything(config.seed + ctx.rank)
        train_set, self.train_indices, held_set, self.held_indices, self.held_from = split_datasets(config)
        batch_size = min(config.batch_size, len(self.train_indices))
        if batch_size < ctx.world:
            raise ValueError(f"{len(self.train_indices)} training image(s) cannot feed {ctx.world} processes")
        steps_per_epoch = max(1, len(self.train_indices) // batch_size)
        self.total_steps = config.max_steps if config.max_steps else config.epochs * steps_per_epoch

        device = ctx.device
        self.model = ConvVAE(config.latent_dim, config.image_size, config.base_channels)
        if config.init_from and not resuming:
            init = load_checkpoint(config.init_from)
            _check_architecture(config, init["config"], Path(config.init_from))
            self.model.load_state_dict(init["model"])
        self.model.to(device, memory_format=memory_format(config))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.amp_dtype = autocast_dtype(device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.perceptual = None
        if config.gamma > 0:
            self.perceptual = VGGPerceptualLoss(allow_download=config.vgg_allow_download, seed=config.seed).to(device)
        self.start_step, self.history, self.metrics, self.skipped, self.bad_in_a_row = 0, [], {}, 0, 0
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if "scaler" in checkpoint and self.scaler.is_enabled():
                self.scaler.load_state_dict(checkpoint["scaler"])
            self.start_step, self.history = checkpoint["step"], checkpoint.get("history", [])
            self.metrics, self.skipped = checkpoint.get("metrics", {}), checkpoint.get("skipped_steps", 0)
            states = checkpoint["rng"]
            set_rng_state(states[ctx.rank] if ctx.rank < len(states) else states[0])
        self.train_model = self.model
        if ctx.world > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)

        # Fixed monitoring inputs: the first 12 held-out images and 12 latent draws (DCGAN's fixed_noise).
        self.eval_images = torch.stack([held_set[i] for i in self.held_indices]).to(device)
        self.monitor_images = self.eval_images[:MONITOR_COLUMNS]
        self.monitor_noise = torch.randn(MONITOR_COLUMNS, config.latent_dim,
                                         generator=torch.Generator().manual_seed(config.seed)).to(device)
        cache = config.num_workers == 0 and len(self.train_indices) <= config.cache_images
        sampler = StepBatchSampler(self.train_indices, batch_size, config.seed, self.start_step, self.total_steps,
                                   ctx.rank, ctx.world)
        # Its own generator: a new DataLoader iterator otherwise draws its worker seed from the global torch RNG,
        # which would shift the reparameterisation noise of a resumed run by one draw.
        self.loader = DataLoader(
            CachedImages(train_set, cache), batch_sampler=sampler, num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(config.seed * 1_000_003 + self.start_step + ctx.rank))

    def augment(self, batch: torch.Tensor, step: int) -> torch.Tensor:
        """The batch on the device, flipped per image by a draw seeded by (seed, step, rank), in the memory format."""
        x = batch.to(self.ctx.device, non_blocking=True)
        if self.config.hflip:
            flip_gen = torch.Generator().manual_seed(self.config.seed * 7_919 + step * 104_729 + self.ctx.rank)
            flip = (torch.rand(x.shape[0], generator=flip_gen) < 0.5).to(self.ctx.device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x.contiguous(memory_format=memory_format(self.config))

    def record(self, step: int, losses: dict, ok: bool) -> dict:
        """Append the step's losses to the history; stop the run after too many non-finite steps in a row."""
        self.bad_in_a_row = 0 if ok else self.bad_in_a_row + 1
        self.skipped += not ok
        if not ok and self.bad_in_a_row >= self.config.max_bad_steps:
            raise RuntimeError(f"{self.bad_in_a_row} consecutive steps with a non-finite loss or gradient "
                               f"(step {step}); lower lr or check the data")
        row = {"step": step, **{k: float(v.detach()) for k, v in losses.items()}, "skipped": not ok}
        row["loss"] = row.pop("total")
        self.history.append(row)
        return row

    def evaluate_and_save(self, step: int, row: dict) -> None:
        """Held-out metrics (rank 0) into the history row, then checkpoint + metrics.json + monitor.gif."""
        if self.ctx.is_main:
            self.metrics = evaluate(self.model, self.eval_images)
            row.update({f"eval_{k}": v for k, v in self.metrics.items()})
        rng = [rng_state()]
        if self.ctx.world > 1:  # every rank's RNG, so each resumes its own noise stream
            rng = [None] * self.ctx.world
            dist.all_gather_object(rng, rng_state())
        if not self.ctx.is_main:
            return
        save_checkpoint(self.checkpoint_path, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "step": step, "config": config_to_dict(self.config),
            "metrics": self.metrics, "history": self.history, "rng": rng, "skipped_steps": self.skipped,
            "held_out_from": self.held_from, "code_version": vae_code_version(),
        })
        atomic_write_text(self.out_dir / "metrics.json", json.dumps(
            {"step": step, "metrics": self.metrics, "skipped_steps": self.skipped, "held_out_from": self.held_from,
             "history": self.history}, indent=1) + "\n")
        # the GIF is refreshed here, not per frame: re-encoding every frame was most of a short CPU run's time
        write_monitor_gif(self.out_dir / "monitor", self.out_dir / "monitor.gif")


def _train(config: TrainConfig, ctx: DistributedContext, out_dir: Path, checkpoint_path: Path) -> dict:
    """The loop: forward → loss → backward → step, with monitoring and evaluate + checkpoint every N steps."""
    run = _Run(config, ctx, out_dir, checkpoint_path)
    step, train_seconds, images_seen = run.start_step, 0.0, 0
    progress = tqdm(total=run.total_steps, initial=step, desc="vae train", disable=not ctx.is_main,
                    dynamic_ncols=True)
    run.model.train()
    tick = loop_started = time.perf_counter()
    for batch in run.loader:
        x = run.augment(batch, step)
        losses, ok = train_step(run.train_model, run.model, run.optimizer, run.scaler, x, config, run.perceptual,
                                ctx, run.amp_dtype)
        step += 1
        images_seen += x.shape[0] * ctx.world
        row = run.record(step, losses, ok)
        progress.update(1)
        train_seconds += time.perf_counter() - tick

        last = step == run.total_steps or out_of_time(config, loop_started, ctx)
        if ctx.is_main and (step % config.monitor_every == 0 or last):
            run.model.eval()
            write_monitor_frame(run.model, run.monitor_images, run.monitor_noise,
                                out_dir / "monitor" / f"step_{step:06d}.png")
            run.model.train()
        if step % config.eval_every == 0 or last:
            run.evaluate_and_save(step, row)
        progress.set_postfix(loss=f"{row['loss']:.1f}", kl=f"{row['kl']:.1f}", refresh=False)
        tick = time.perf_counter()
        if last:
            break
    progress.close()
    if ctx.world > 1:
        dist.barrier()  # all ranks leave together, after rank 0 has written everything
    if run.start_step >= run.total_steps and not run.metrics:
        run.metrics = evaluate(run.model, run.eval_images) if ctx.is_main else {}
    gif = out_dir / "monitor.gif"
    return {
        "checkpoint": str(checkpoint_path), "out_dir": str(out_dir), "steps": step,
        "steps_this_run": step - run.start_step, "reused": step == run.start_step,
        "images_per_s": round(images_seen / train_seconds, 2) if train_seconds > 0 else None,
        "history": run.history, "metrics": run.metrics, "monitor_gif": str(gif) if gif.exists() else None,
        "skipped_steps": run.skipped,
        "perceptual_pretrained": None if run.perceptual is None else run.perceptual.pretrained,
        "held_out_from": run.held_from, "held_out_images": len(run.held_indices),
        "train_images": len(run.train_indices), "world_size": ctx.world,
    }


# ------------------------------------------------------------------------------------------------------------- CLI
def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m vae train`; `--set` reaches every TrainConfig field."""
    parser.add_argument("--src", "--data-root", dest="data_root", required=True,
                        help="CelebA root (official layout) or a folder of face crops")
    parser.add_argument("--out", default=TrainConfig.out_dir, help="run folder (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps in total")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other TrainConfig field")


def cli_run(args: argparse.Namespace) -> dict:
    """Run training from CLI arguments; the summary drops the per-step history (it is in metrics.json)."""
    overrides = {"data_root": args.data_root, "out_dir": args.out, "resume": args.resume, "overwrite": args.overwrite}
    overrides.update({k: getattr(args, k) for k in ("max_steps", "device") if getattr(args, k) is not None})
    summary = train_vae(apply_overrides(TrainConfig(), {**overrides, **parse_set_options(args.set)}))
    summary["history"] = summary["history"][-1:]
    return summary if int(os.environ.get("RANK", "0")) == 0 else None  # under torchrun, rank 0 reports

