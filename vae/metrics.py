"""Image reconstruction metrics for batches of images in [0, 1]: MSE, PSNR and SSIM.

SSIM follows Wang et al. (2004) with an 11×11 Gaussian window (σ = 1.5) over the valid region: the numbers of
`skimage.metrics.structural_similarity(..., gaussian_weights=True, use_sample_covariance=False, data_range=1)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image ([B]), averaged over pixels and channels."""
    return (x_hat.float() - x.float()).pow(2).flatten(1).mean(1)


def psnr(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image ([B]); identical images are capped at 100 dB."""
    error = mse(x_hat, x).clamp_min(1e-10)
    return 10.0 * torch.log10(data_range**2 / error)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian of `size` taps."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0, window_size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image ([B]) of [B, C, H, W] batches (window shrinks for images under 11 px)."""
    x_hat, x = x_hat.float(), x.float()
    channels = x.shape[1]
    window_size = min(window_size, x.shape[-1], x.shape[-2])
    g = gaussian_window(window_size, sigma).to(x.device)
    # A separable Gaussian: filter rows then columns, one group per channel.
    kernel_h = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    kernel_v = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kernel_h, groups=channels), kernel_v, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x_hat), blur(x)
    sigma_xx = blur(x_hat * x_hat) - mu_x**2
    sigma_yy = blur(x * x) - mu_y**2
    sigma_xy = blur(x_hat * x) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_xx + sigma_yy + c2))
    return ssim_map.flatten(1).mean(1)
