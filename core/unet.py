"""The U-Net of the paper (Fig. 6-7), used by the generator, Img2ID and Img2Noise.

Down path: per level `block_depth` residual blocks (each output kept as a skip), then 2x2
average pooling; the identity vector, when given, is broadcast and concatenated to the
first features and again after every pooling. Middle: residual blocks at the last width.
Up path: bilinear up-sampling, then per block a concatenation with the matching skip and a
residual block. The noise variance enters once, as a sinusoidal embedding broadcast over
the image and concatenated to the first features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import UNetConfig
from .layers import ResidualBlock, broadcast_to_image, sinusoidal_embedding


class DownPath(nn.Module):
    """Stem, down blocks and middle blocks; returns the bottleneck features and the skips."""

    def __init__(self, config: UNetConfig, in_channels: int = 3, noise_dim: int = 0,
                 id_dim: int = 0):
        super().__init__()
        widths, depth = config.widths, config.block_depth
        self.noise_dim, self.id_dim = noise_dim, id_dim
        self.stem = nn.Conv2d(in_channels, widths[0], 1)
        self.levels = nn.ModuleList()
        channels = widths[0] + noise_dim + id_dim
        self.skip_channels: list[int] = []
        for width in widths[:-1]:
            blocks = nn.ModuleList()
            for _ in range(depth):
                blocks.append(ResidualBlock(channels, width))
                channels = width
                self.skip_channels.append(width)
            self.levels.append(blocks)
            channels += id_dim  # identity concatenated again after pooling
        self.middle = nn.ModuleList()
        for _ in range(depth):
            self.middle.append(ResidualBlock(channels, widths[-1]))
            channels = widths[-1]
        self.out_channels = channels

    def forward(self, x: torch.Tensor, noise_variance: torch.Tensor | None = None,
                identity: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.stem(x)  # (B, w0, H, W)
        extra = []
        if self.noise_dim:
            extra.append(broadcast_to_image(sinusoidal_embedding(noise_variance, self.noise_dim), h))
        if self.id_dim:
            extra.append(broadcast_to_image(identity, h))
        h = torch.cat([h, *extra], dim=1) if extra else h
        skips = []
        for blocks in self.levels:
            for block in blocks:
                h = block(h)
                skips.append(h)
            h = F.avg_pool2d(h, 2)
            if self.id_dim:
                h = torch.cat([h, broadcast_to_image(identity, h)], dim=1)
        for block in self.middle:
            h = block(h)
        return h, skips


class UNet(nn.Module):
    """Image-to-image U-Net, optionally conditioned on a noise variance and an identity."""

    def __init__(self, config: UNetConfig, in_channels: int = 3, out_channels: int = 3,
                 noise_dim: int = 0, id_dim: int = 0, zero_init_head: bool = False):
        super().__init__()
        self.down = DownPath(config, in_channels, noise_dim, id_dim)
        widths, depth = config.widths, config.block_depth
        skip_channels = list(self.down.skip_channels)
        channels = self.down.out_channels
        self.up_levels = nn.ModuleList()
        for width in reversed(widths[:-1]):
            blocks = nn.ModuleList()
            for _ in range(depth):
                blocks.append(ResidualBlock(channels + skip_channels.pop(), width))
                channels = width
            self.up_levels.append(blocks)
        self.head = nn.Conv2d(channels, out_channels, 1)
        if zero_init_head:  # the generator starts by predicting zero noise, as in the paper
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, noise_variance: torch.Tensor | None = None,
                identity: torch.Tensor | None = None) -> torch.Tensor:
        h, skips = self.down(x, noise_variance, identity)
        for blocks in self.up_levels:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1))
        return self.head(h)
