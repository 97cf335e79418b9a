"""VAE training losses: pixel reconstruction, KL divergence, and a frozen-VGG19 perceptual (feature) loss.

Reduction convention (used by every term, so that the weights `beta` and `gamma` are comparable):
every term is a per-image SUM, then AVERAGED OVER THE BATCH — the negative ELBO in nats per image.

* reconstruction: summed over the 3·S·S pixel values of an image, averaged over the batch. With `kind="mse"`
  this is the Gaussian log-likelihood with variance 1/2 up to a constant, so `beta = 1` is the plain ELBO.
* KL(q(z|x) || N(0, I)): summed over the latent dimensions, averaged over the batch — DFC-VAE.
* perceptual: for each VGG19 layer (relu1_1, relu2_1, relu3_1 — DFC-VAE's choice) the squared feature error is
  averaged over that layer's elements (DFC-VAE's 1/(C·H·W) per layer) and multiplied by 3·S·S, the number of
  pixel values, so that one unit of feature error weighs like one unit of per-pixel error in the pixel sum;
  the layers are summed, and the result averaged over the batch.

total = recon + beta · KL + gamma · perceptual. `gamma = 0` never builds VGG.
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
    """Pixel reconstruction loss, summed over the pixels of each image and averaged over the batch.

    Args:
        x_hat: reconstructions in [0, 1], [B, 3, S, S].
        x: targets in [0, 1], same shape.
        kind: "mse" (squared error), "l1" (absolute error) or "bce" (binary cross-entropy, for [0, 1] targets).
    """
    x_hat, x = x_hat.float(), x.float()  # sums of 12k terms are kept in float32 even under autocast
    if weights is not None:  # per-pixel weights w: sum w·(x̂ − x)² = sum (√w·x̂ − √w·x)² (same for |·| with w)
        if kind == "mse":
            x_hat, x = x_hat * weights.sqrt(), x * weights.sqrt()
        elif kind == "l1":
            x_hat, x = x_hat * weights, x * weights
        else:
            raise ValueError("per-pixel weights work with 'mse' or 'l1'")
    # Fused reductions (one kernel forward and backward, any memory layout): the batch sum / B equals the
    # per-image sum averaged over the batch.
    if kind == "mse":
        total = F.mse_loss(x_hat, x, reduction="sum")
    elif kind == "l1":
        total = F.l1_loss(x_hat, x, reduction="sum")
    elif kind == "bce":
        total = F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x, reduction="sum")
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r}; use 'mse', 'l1' or 'bce'")
    return total / x.shape[0]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, averaged over the batch — DFC-VAE.

    Closed form per dimension: 0.5 · (mu² + exp(logvar) − 1 − logvar); e.g. mu = 1, logvar = 0 gives 0.5.
    """
    mu, logvar = mu.float(), logvar.float()
    return (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(1).mean()


def vgg19_weights_cached() -> Path | None:
    """Path of torchvision's VGG19 ImageNet weights in the `$TORCH_HOME` hub cache, or None if not there."""
    from torchvision.models import VGG19_Weights

    filename = Path(VGG19_Weights.IMAGENET1K_V1.url).name
    path = torch_hub_file(filename)
    return path if path.is_file() else None


class _FeatureMSE(torch.autograd.Function):
    """mean((a − b)²) with its gradient 2(a − b)/N kept from the forward pass: one read-one-write pass backward.

    F.mse_loss's backward recomputes the difference and, on channels-last feature maps, runs ~10 % of a CPU
    training step here; this is the same value (a dot product instead of a sum of squares) and gradient.
    Only `a` gets a gradient (the target features come from a no-grad pass).
    """

    @staticmethod
    def forward(ctx, a, b):
        diff = a.float() - b.float()
        # a contiguous 1-D view in either layout, for one BLAS dot product
        flat = diff.reshape(-1) if diff.is_contiguous() else diff.permute(0, 2, 3, 1).reshape(-1)
        ctx.save_for_backward(diff)
        ctx.input_dtype = a.dtype
        return torch.dot(flat, flat) / diff.numel()

    @staticmethod
    def backward(ctx, grad_output):
        (diff,) = ctx.saved_tensors
        return (diff * (2.0 * grad_output / diff.numel())).to(ctx.input_dtype), None


def feature_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two feature maps, as `F.mse_loss(a, b)` (float32), differentiable in `a`."""
    if b.requires_grad:
        raise ValueError("feature_mse gives no gradient to its target `b`; compute it under torch.no_grad()")
    return _FeatureMSE.apply(a, b)


class VGGPerceptualLoss(nn.Module):
    """Frozen VGG19 feature extractor whose one job is to score how different two image batches look.

    It compares ReLU activations (default relu1_1, relu2_1, relu3_1, as in DFC-VAE) of reconstructions and
    targets; the network is truncated after the deepest requested layer (relu3_1 → 12 of VGG19's 37 feature
    modules), never trained (`requires_grad_(False)`, `.eval()`), and fed the ImageNet mean/std normalisation it
    was trained with.

    Args:
        layers: names of the VGG19 ReLUs to compare (keys of `VGG19_RELU_INDEX`).
        allow_download: fetch the ImageNet weights when they are not in the `$TORCH_HOME` cache. When False (the
            default, and always in tests) and the weights are missing, a seeded random-init VGG19 is used instead
            and a warning says so; `self.pretrained` records which one it is.
        seed: seed of that random initialisation (the global RNG is left untouched).
        chunk_size: on CPU, run VGG on this many images at a time when a gradient is needed (see
            `_ChunkedPerceptual`): the same loss and gradient, 1.1-1.3× faster training steps on a 2-core CPU
            (smaller activations stay in cache and skip fresh page mappings) and a quarter of the activation
            memory at batch 64. None (or a GPU tensor) runs the whole batch at once.

    Attributes:
        pretrained: True when the ImageNet weights were loaded.
    """

    def __init__(self, layers=DFC_VAE_LAYERS, allow_download: bool = False, seed: int = 0,
                 chunk_size: int | None = 16):
        super().__init__()
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of images or None, got {chunk_size}")
        self.chunk_size = chunk_size
        from torchvision.models import VGG19_Weights
        from torchvision.models import vgg as tv_vgg

        unknown = [name for name in layers if name not in VGG19_RELU_INDEX]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; choose from {sorted(VGG19_RELU_INDEX)}")
        self.layers = tuple(layers)
        self.layer_indices = tuple(VGG19_RELU_INDEX[name] for name in self.layers)
        last = max(self.layer_indices)
        # torchvision's own VGG19 layer list (config "E"), truncated: building the full model would also allocate
        # its 123 M-parameter classifier for nothing.
        features = tv_vgg.make_layers(tv_vgg.cfgs["E"], batch_norm=False)[: last + 1]
        # In-place ReLUs (torchvision's default) are safe here: each overwrites only the conv output before it,
        # never an activation we read (the ReLU outputs), and they save a 64×S×S allocation per layer.

        weights = VGG19_Weights.IMAGENET1K_V1
        self.pretrained = False
        if vgg19_weights_cached() is not None or allow_download:
            state = weights.get_state_dict(progress=False)  # reads the cache; downloads only if allowed above
            prefix = "features."
            own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            features.load_state_dict({k: own[k] for k in features.state_dict()})
            self.pretrained = True
        else:
            warnings.warn(
                "VGG19 ImageNet weights are not in the torch hub cache "
                f"({torch_hub_file('')}); the perceptual loss uses a randomly initialised "
                "VGG19 (seeded). Set allow_download / --vgg-allow-download to fetch the real weights.",
                RuntimeWarning,
                stacklevel=2,
            )
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

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map RGB in [0, 1] to the ImageNet-normalised input VGG19 expects."""
        return (x - self.mean) / self.std

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of `self.layers` for images `x` in [0, 1]."""
        h = self.normalize(x).contiguous(memory_format=torch.channels_last)  # faster convs on CPU (oneDNN)
        out = []
        for index, module in enumerate(self.features):
            h = module(h)
            if index in self.layer_indices:
                out.append(h)
        return out

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Perceptual loss of reconstructions `x_hat` against targets `x` (both [B, 3, S, S] in [0, 1]).

        Per layer the squared feature error is averaged over its elements (DFC-VAE), scaled by 3·S·S pixel values
        (see the module docstring), summed over layers and averaged over the batch. The target branch runs
        without autograd: it needs no gradient, which saves a third of the VGG memory and time.
        """
        chunk = self.chunk_size
        if (chunk is not None and x_hat.device.type == "cpu" and x_hat.shape[0] > chunk
                and x_hat.requires_grad and torch.is_grad_enabled()):
            return _ChunkedPerceptual.apply(x_hat, x, self)
        return self.batch_loss(x_hat, x)

    def batch_loss(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`forward` on the whole batch at once (plain autograd)."""
        with torch.no_grad():
            target_features = self.extract(x)
        pixel_values = x.shape[1] * x.shape[2] * x.shape[3]
        total = x_hat.new_zeros((), dtype=torch.float32)
        for f_hat, f in zip(self.extract(x_hat), target_features):
            # Every image has the same number of feature elements, so the mean over the whole batch equals the
            # batch average of the per-image means.
            total = total + feature_mse(f_hat, f) * pixel_values
        return total


class _ChunkedPerceptual(torch.autograd.Function):
    """The perceptual loss computed chunk by chunk, with its gradient taken chunk by chunk during the forward pass.

    The loss is a batch mean of per-image terms, so the batch value is the sum over chunks of
    `batch_loss(chunk) · len(chunk) / B`, and its gradient with respect to each chunk of `x_hat` is that chunk's own
    gradient: exact, not an approximation. Only one chunk's VGG activations exist at a time; the backward pass
    just returns the stored gradient (times the incoming one), so the VAE's own backward is unchanged.
    """

    @staticmethod
    def forward(ctx, x_hat, x, loss_module):
        batch = x_hat.shape[0]
        grad = torch.empty_like(x_hat)
        total = torch.zeros((), dtype=torch.float32, device=x_hat.device)
        with torch.enable_grad():
            for start in range(0, batch, loss_module.chunk_size):
                stop = min(start + loss_module.chunk_size, batch)
                piece = x_hat[start:stop].detach().requires_grad_(True)
                value = loss_module.batch_loss(piece, x[start:stop]) * ((stop - start) / batch)
                (grad[start:stop],) = torch.autograd.grad(value, piece)
                total += value.detach()
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None


def vae_loss(
    x_hat: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 0.0,
    perceptual: VGGPerceptualLoss | None = None,
    recon_kind: str = "mse",
    pixel_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted VAE objective: `total = recon + beta·KL + gamma·perceptual` (reductions: module docstring).

    Args:
        x_hat, x: reconstructions and targets, [B, 3, S, S] in [0, 1].
        mu, logvar: posterior parameters, [B, latent_dim].
        beta: KL weight (1 = ELBO with the Gaussian σ² = 1/2 pixel likelihood).
        gamma: perceptual-loss weight; 0 skips VGG entirely.
        perceptual: the `VGGPerceptualLoss` to use when `gamma > 0` (required then; built by the caller once).
        recon_kind: pixel loss, see `reconstruction_loss`.

    Returns: dict of scalar tensors `total`, `recon`, `kl`, `perceptual` (the unweighted terms; perceptual is 0
    when gamma is 0).
    """
    recon = reconstruction_loss(x_hat, x, recon_kind, pixel_weights)
    kl = kl_divergence(mu, logvar)
    if gamma > 0:
        if perceptual is None:
            raise ValueError("gamma > 0 needs a VGGPerceptualLoss module (perceptual=...)")
        feature = perceptual(x_hat, x)
    else:
        feature = torch.zeros((), device=x.device)
    total = recon + beta * kl + gamma * feature
    return {"total": total, "recon": recon, "kl": kl, "perceptual": feature}
