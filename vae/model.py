"""The convolutional VAE of stage 3 (DFC-VAE architecture, Hou et al. 2017, sized for a laptop CPU).

Encoder: 4 (64 px) or 5 (128 px) strided 4×4 convolutions, each followed by BatchNorm and LeakyReLU, halving the
resolution down to 4×4, then two linear heads for the posterior mean and log-variance.
Decoder: a linear layer back to a 4×4 feature map, then per stage a nearest-neighbour ×2 upsample followed by a
3×3 convolution, BatchNorm and LeakyReLU (upsample + conv instead of transposed convolutions avoids the
checkerboard artefacts of Odena et al. 2016); the last stage upsamples to full size and its 3×3 convolution
goes straight to the 3 colour channels, followed by a sigmoid for pixels in [0, 1] (DFC-VAE's 128-64-32-3). No
convolution runs between wide feature maps at full resolution, which is where a decoder spends its time.

With `base_channels=32` and `latent_dim=128` this is DFC-VAE's 64×64 model (encoder 32-64-128-256 channels,
decoder 128-64-32-3): about 2.7 M parameters, against the 51 M of larger VAE repos, which is most of why one
training step fits a CPU budget.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_IMAGE_SIZES = (32, 64, 128)


def _encoder_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Halve the resolution: 4×4 conv, stride 2 (DFC-VAE), BatchNorm, LeakyReLU(0.2)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


def _decoder_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Double the resolution: nearest upsample, 3×3 conv, BatchNorm, LeakyReLU(0.2)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


class UpsampleConv2d(nn.Conv2d):
    """Nearest-neighbour ×2 upsampling followed by a 3×3 convolution (padding 1), without the upsampled map.

    After a nearest ×2 upsample, each of the four output phases (even/odd row × even/odd column) sees the input
    through a 2×2 window whose taps are sums of the 3×3 kernel's taps: e.g. an even output row takes kernel row 0
    from input row i−1 and kernel rows 1 + 2 from row i. So one 2×2 convolution with 4× the output channels on the
    padded low-resolution input, interleaved, gives exactly `conv(upsample(x))` (up to float rounding) with 16
    instead of 36 multiply-adds per low-resolution pixel and no 4× larger intermediate. The parameters are the
    ordinary 3×3 `weight` and `bias` of `nn.Conv2d`, so gradients and checkpoints are those of the plain pair.
    On a 2-core CPU this pays off for the decoder's last layer (few output channels at full resolution, ~3×
    faster forward + backward); for wide layers oneDNN's 3×3 kernels on the upsampled map are faster.
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
    """A DFC-VAE style convolutional VAE for square RGB images in [0, 1].

    Args:
        latent_dim: size of the latent code z (DFC-VAE uses 100; 128 here).
        image_size: side of the square input in pixels; 64 or 128 (32 is accepted for tests).
        base_channels: channels of the first encoder conv; each further stage doubles them (capped at 16×).
    """

    def __init__(self, latent_dim: int = 128, image_size: int = 64, base_channels: int = 32):
        super().__init__()
        if image_size not in SUPPORTED_IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size}")
        self.latent_dim = int(latent_dim)
        self.image_size = int(image_size)
        self.base_channels = int(base_channels)
        n_stages = int(math.log2(image_size // 4))  # 64 px -> 4 stages down to 4×4; 128 px -> 5
        widths = [base_channels * 2 ** min(i, 4) for i in range(n_stages)]  # e.g. 32, 64, 128, 256

        encoder, channels = [], 3
        for width in widths:
            encoder.append(_encoder_block(channels, width))
            channels = width
        self.encoder = nn.Sequential(*encoder)
        self.bottom_channels = channels
        flat = channels * 4 * 4
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)

        self.fc_decode = nn.Linear(latent_dim, flat)
        decoder = []
        for width in reversed(widths[:-1]):  # 256 -> 128 -> 64 -> 32 at 64 px (4×4 -> 32×32)
            decoder.append(_decoder_block(channels, width))
            channels = width
        self.decoder = nn.Sequential(*decoder)
        # Last ×2 stage: upsample to full size, then one 3×3 conv straight to RGB (no BatchNorm, sigmoid after),
        # computed as one fused exact operation (see UpsampleConv2d).
        self.to_rgb = UpsampleConv2d(channels, 3)

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
            device = next(self.parameters()).device
            z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return self.decode(z)
