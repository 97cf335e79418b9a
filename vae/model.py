"""The convolutional VAE of stage 3: DFC-VAE's architecture (Hou et al. 2017), about 2.7 M parameters at 64 px.

Encoder: strided 4×4 convolutions with BatchNorm and LeakyReLU down to 4×4, then linear heads for the posterior
mean and log-variance. Decoder: a linear layer to 4×4, then nearest ×2 upsampling + 3×3 convolution per stage
(no checkerboard artefacts, Odena et al. 2016), the last one straight to RGB and a sigmoid.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_IMAGE_SIZES = (32, 64, 128)


def _encoder_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Halve the resolution: 4×4 conv, stride 2 (DFC-VAE), BatchNorm, LeakyReLU(0.2)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2, inplace=True))


def _decoder_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Double the resolution: nearest upsample, 3×3 conv, BatchNorm, LeakyReLU(0.2)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2, inplace=True))


class UpsampleConv2d(nn.Conv2d):
    """Nearest ×2 upsampling then a 3×3 convolution (padding 1), computed without the upsampled map.

    After a nearest ×2 upsample each output phase (even/odd row × column) sees the input through a 2×2 window whose
    taps are sums of the 3×3 kernel's taps, so one 2×2 convolution with 4× the outputs, interleaved, equals
    `conv(upsample(x))`. Parameters are those of the plain `nn.Conv2d`; ~3× faster for the last decoder layer on CPU.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)

    def phase_weights(self) -> torch.Tensor:
        """The four 2×2 kernels (phases 00, 01, 10, 11 stacked on the output axis): [4·out, in, 2, 2]."""
        w = self.weight
        rows = (torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], 2),  # even rows: input rows i-1, i
                torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], 2))  # odd rows: input rows i, i+1
        kernels = []
        for r in rows:
            kernels.append(torch.stack([r[..., 0], r[..., 1] + r[..., 2]], -1))  # even columns
            kernels.append(torch.stack([r[..., 0] + r[..., 1], r[..., 2]], -1))  # odd columns
        return torch.cat(kernels, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        o = self.out_channels
        bias = None if self.bias is None else self.bias.repeat(4)
        # Output (H+1)×(W+1): phase (a, b) of output pixel (i, j) is at (i + a, j + b) of its block.
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.phase_weights(), bias)
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((n, o, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=layout)
        for a in (0, 1):
            for b in (0, 1):
                k = 2 * a + b
                out[:, :, a::2, b::2] = y[:, k * o:(k + 1) * o, a:a + h, b:b + w]
        return out


class ConvVAE(nn.Module):
    """A DFC-VAE style convolutional VAE for square RGB images in [0, 1] of `image_size` 64 or 128 (32 for tests);
    the first encoder conv has `base_channels`, each further stage doubles them (capped at 16×)."""

    def __init__(self, latent_dim: int = 128, image_size: int = 64, base_channels: int = 32):
        super().__init__()
        if image_size not in SUPPORTED_IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size}")
        self.latent_dim, self.image_size, self.base_channels = int(latent_dim), int(image_size), int(base_channels)
        n_stages = int(math.log2(image_size // 4))  # 64 px -> 4 stages down to 4×4; 128 px -> 5
        widths = [base_channels * 2 ** min(i, 4) for i in range(n_stages)]  # e.g. 32, 64, 128, 256
        self.encoder = nn.Sequential(*[_encoder_block(i, o) for i, o in zip([3, *widths], widths)])
        self.bottom_channels = widths[-1]
        flat = widths[-1] * 4 * 4
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.fc_decode = nn.Linear(latent_dim, flat)
        up = widths[::-1]  # 256 -> 128 -> 64 -> 32 at 64 px (4×4 -> 32×32)
        self.decoder = nn.Sequential(*[_decoder_block(i, o) for i, o in zip(up, up[1:])])
        self.to_rgb = UpsampleConv2d(widths[0], 3)  # last ×2 stage straight to RGB (no BatchNorm; sigmoid after)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters for images `x` ([B, 3, S, S] in [0, 1]): `(mu, logvar)`, each [B, latent_dim]."""
        h = self.encoder(x).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], shape [B, 3, S, S], for latent codes `z` ([B, latent_dim])."""
        h = self.fc_decode(z).view(z.shape[0], self.bottom_channels, 4, 4)
        return torch.sigmoid(self.to_rgb(self.decoder(h)))

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Sample z = mu + sigma * eps with eps ~ N(0, I) (the reparameterisation trick, Kingma & Welling 2014)."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(x_hat, mu, logvar)`; z is sampled in train mode and is the posterior mean in eval mode."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int | None = None, z: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """Decode `z` (or `n` draws from the prior N(0, I)) into images in [0, 1]."""
        if z is None:
            z = torch.randn(n, self.latent_dim, generator=generator).to(next(self.parameters()).device)
        return self.decode(z)
