"""Building blocks shared by the U-Nets: the residual block and the sinusoidal embedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(noise_variance: torch.Tensor, dim: int,
                         min_frequency: float = 1.0, max_frequency: float = 1000.0) -> torch.Tensor:
    """(B, dim) embedding of a per-sample scalar: sin and cos at dim/2 log-spaced frequencies."""
    v = noise_variance.reshape(-1, 1).float()
    frequencies = torch.exp(torch.linspace(math.log(min_frequency), math.log(max_frequency),
                                           dim // 2, device=v.device))
    angles = 2.0 * math.pi * frequencies * v  # (B, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def broadcast_to_image(vector: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, C) -> (B, C, H, W) matching `like`'s spatial size and dtype."""
    b, c = vector.shape
    return vector.to(like.dtype).reshape(b, c, 1, 1).expand(b, c, like.shape[2], like.shape[3])


class ResidualBlock(nn.Module):
    """BatchNorm (no learned scale/shift) -> 3x3 conv + swish -> 3x3 conv, plus the shortcut."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.shortcut = nn.Identity() if in_channels == width else nn.Conv2d(in_channels, width, 1)
        self.norm = nn.BatchNorm2d(in_channels, affine=False)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv1(self.norm(x)))
        return self.conv2(h) + self.shortcut(x)
