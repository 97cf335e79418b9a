"""VAE losses: pixel reconstruction, KL divergence and a frozen-VGG19 perceptual loss (DFC-VAE, Hou et al. 2017).

Every term is a per-image sum averaged over the batch, so total = recon + beta·KL + gamma·perceptual weighs them
comparably (squared error = Gaussian likelihood with σ² = 1/2, so beta = 1 is the ELBO). Each VGG layer's mean
squared feature error is scaled by the 3·S·S pixel values, so it weighs like the per-pixel error.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoints import torch_hub_file
from common.images import IMAGENET_MEAN, IMAGENET_STD  # what torchvision's VGG19 was trained with

# Index of each ReLU in torchvision's `vgg19().features` (conv1_1=0, relu1_1=1, conv1_2=2, ..., relu3_1=11).
VGG19_RELU_INDEX = {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13,
                    "relu4_1": 20, "relu5_1": 29}
DFC_VAE_LAYERS = ("relu1_1", "relu2_1", "relu3_1")


@functools.lru_cache(maxsize=8)  # built once per size and weight, not at every training step (never modified)
def centre_weight_map(size: int, centre_weight: float, sigma: float = 0.3) -> torch.Tensor:
    """Per-pixel weights [1, 1, S, S] with mean 1: `centre_weight` times more at the centre than at the corners
    (a Gaussian bump of width `sigma` × S), where aligned faces and face crops have the face."""
    r = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    bump = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    weights = 1.0 + (centre_weight - 1.0) * bump
    return (weights / weights.mean()).view(1, 1, size, size)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse",
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel loss of reconstructions `x_hat` against targets `x` ([B, 3, S, S] in [0, 1]), summed per image and
    averaged over the batch. `kind`: "mse" (squared error, optionally times per-pixel `weights`) or "bce"."""
    x_hat, x = x_hat.float(), x.float()  # sums of 12k terms are kept in float32 even under autocast
    if kind == "mse":
        if weights is not None:  # sum w·(x̂ − x)² = sum (√w·x̂ − √w·x)²: still one fused kernel
            x_hat, x = x_hat * weights.sqrt(), x * weights.sqrt()
        return F.mse_loss(x_hat, x, reduction="sum") / x.shape[0]
    if kind == "bce" and weights is None:
        return F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x, reduction="sum") / x.shape[0]
    raise ValueError(f"unknown reconstruction loss {kind!r} (with weights={weights is not None}); use 'mse' or 'bce'")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, averaged over the batch — DFC-VAE."""
    mu, logvar = mu.float(), logvar.float()
    return (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(1).mean()


def vgg19_weights_cached() -> Path | None:
    """Path of torchvision's VGG19 ImageNet weights in the `$TORCH_HOME` hub cache, or None if not there."""
    from torchvision.models import VGG19_Weights

    path = torch_hub_file(Path(VGG19_Weights.IMAGENET1K_V1.url).name)
    return path if path.is_file() else None


class VGGPerceptualLoss(nn.Module):
    """Frozen VGG19 (truncated after the deepest of `layers`, fed ImageNet-normalised inputs) whose one job is to
    score how different two image batches look.

    Without ImageNet weights in `$TORCH_HOME` (and no `allow_download`) it warns and uses a random VGG19 seeded by
    `seed`; `self.pretrained` says which.
    """

    def __init__(self, layers=DFC_VAE_LAYERS, allow_download: bool = False, seed: int = 0):
        super().__init__()
        from torchvision.models import VGG19_Weights
        from torchvision.models import vgg as tv_vgg

        unknown = [name for name in layers if name not in VGG19_RELU_INDEX]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; choose from {sorted(VGG19_RELU_INDEX)}")
        self.layers = tuple(layers)
        self.layer_indices = tuple(VGG19_RELU_INDEX[name] for name in self.layers)
        # torchvision's VGG19 layer list, truncated (the full model would also allocate its 123 M-parameter
        # classifier). Its in-place ReLUs only overwrite conv outputs, never an activation we read.
        features = tv_vgg.make_layers(tv_vgg.cfgs["E"], batch_norm=False)[: max(self.layer_indices) + 1]
        self.pretrained = vgg19_weights_cached() is not None or allow_download
        if self.pretrained:
            state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)  # downloads only if allowed above
            features.load_state_dict({k: state[f"features.{k}"] for k in features.state_dict()})
        else:
            warnings.warn(f"VGG19 ImageNet weights are not in the torch hub cache ({torch_hub_file('')}); the "
                          "perceptual loss uses a randomly initialised VGG19 (seeded). Set allow_download "
                          "(--set vgg_allow_download=true) to fetch the real weights.", RuntimeWarning, stacklevel=2)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for module in features:
                    if isinstance(module, nn.Conv2d):  # torchvision VGG's own initialisation
                        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                        nn.init.zeros_(module.bias)
        self.features = features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        """Stay in eval mode whatever the parent module does (the network is frozen)."""
        return super().train(False)

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of `self.layers` for images `x` in [0, 1] (ImageNet-normalised first)."""
        h = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)  # oneDNN's fast convs
        out = []
        for index, module in enumerate(self.features):
            h = module(h)
            if index in self.layer_indices:
                out.append(h)
        return out

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Perceptual loss of reconstructions `x_hat` against targets `x` (both [B, 3, S, S] in [0, 1]): each layer's
        mean squared feature error scaled by the number of pixel values; the target branch runs without autograd."""
        with torch.no_grad():
            target_features = self.extract(x)
        pixel_values = x.shape[1] * x.shape[2] * x.shape[3]
        return sum(F.mse_loss(f_hat.float(), f.float()) * pixel_values
                   for f_hat, f in zip(self.extract(x_hat), target_features))


def vae_loss(x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0,
             gamma: float = 0.0, perceptual: VGGPerceptualLoss | None = None, recon_kind: str = "mse",
             pixel_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`total = recon + beta·KL + gamma·perceptual` of reconstructions `x_hat` of `x` ([B, 3, S, S] in [0, 1]) and
    posteriors `mu`, `logvar` ([B, latent_dim]), with the unweighted terms `recon`, `kl`, `perceptual` (0 at
    gamma 0; `perceptual`, built once by the caller, is required otherwise)."""
    recon = reconstruction_loss(x_hat, x, recon_kind, pixel_weights)
    kl = kl_divergence(mu, logvar)
    if gamma > 0:
        if perceptual is None:
            raise ValueError("gamma > 0 needs a VGGPerceptualLoss module (perceptual=...)")
        feature = perceptual(x_hat, x)
    else:
        feature = torch.zeros((), device=x.device)
    return {"total": recon + beta * kl + gamma * feature, "recon": recon, "kl": kl, "perceptual": feature}
