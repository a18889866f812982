"""The four trained networks of a model set.

- Generator: the identity table emb(id) and the noise-predicting U-Net eps(x_t, noise^2, emb).
- IdentityPrior: a small diffusion model over identity vectors (predicts the clean vector).
- Img2ID: image -> identity vector (the U-Net's down path, then dense layers).
- Img2Noise: image -> the noise that, with the image's identity, regenerates the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import GeneratorConfig, Img2IDConfig, Img2NoiseConfig, PriorConfig
from .layers import sinusoidal_embedding
from .unet import DownPath, UNet


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        if config.num_identities < 1:
            raise ValueError("the generator needs num_identities >= 1 (set from the data)")
        self.config = config
        self.identities = nn.Embedding(config.num_identities, config.id_dim)
        # Small initial identities (the paper's Keras default): PyTorch's N(0, 1) default
        # left identities unused after hours of CPU training (docs/experiments.md).
        nn.init.uniform_(self.identities.weight, -config.id_init_scale, config.id_init_scale)
        self.denoiser = UNet(config.unet, noise_dim=config.noise_embedding_dim,
                             id_dim=config.id_dim, zero_init_head=True)

    def forward(self, x_t: torch.Tensor, noise_variance: torch.Tensor,
                identity: torch.Tensor) -> torch.Tensor:
        """Predicted noise eps for noisy images x_t (B, 3, H, W) and identity vectors (B, D)."""
        return self.denoiser(x_t, noise_variance, identity)


class IdentityPrior(nn.Module):
    """Dense denoiser over identity vectors, normalised by the table's mean and std."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        d, e = config.id_dim, config.noise_embedding_dim
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))
        self.hidden = nn.ModuleList()
        width = d + e
        for _ in range(config.layers):
            self.hidden.append(nn.Linear(width, config.hidden))
            width = config.hidden + e  # the noise embedding is concatenated after each layer
        self.out = nn.Linear(width, d)

    def forward(self, z_t: torch.Tensor, noise_variance: torch.Tensor) -> torch.Tensor:
        """Predicted clean (normalised) identity for noisy normalised identities z_t (B, D)."""
        e = sinusoidal_embedding(noise_variance, self.config.noise_embedding_dim).to(z_t.dtype)
        h = z_t
        for layer in self.hidden:
            h = F.silu(layer(torch.cat([h, e], dim=1)))
        return self.out(torch.cat([h, e], dim=1))

    def normalize(self, identity: torch.Tensor) -> torch.Tensor:
        return (identity - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean


class Img2ID(nn.Module):
    def __init__(self, config: Img2IDConfig, image_size: tuple[int, int]):
        super().__init__()
        self.config = config
        self.down = DownPath(config.unet)
        levels = len(config.unet.widths) - 1
        h, w = image_size[0] // 2**levels, image_size[1] // 2**levels
        layers: list[nn.Module] = []
        channels = self.down.out_channels
        if config.head_channels:
            layers += [nn.Conv2d(channels, config.head_channels, 1), nn.SiLU()]
            channels = config.head_channels
        layers.append(nn.Flatten())
        width = channels * h * w
        for hidden in config.dense:
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, config.id_dim))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity vectors (B, D) of normalised images (B, 3, H, W)."""
        h, _ = self.down(x)
        return self.head(h.contiguous())

    def encode(self, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """Float identity vectors of normalised images; flip=True averages each with its
        mirror image's (test-time flip averaging)."""
        v = self(x).float()
        return 0.5 * (v + self(x.flip(3)).float()) if flip else v


class Img2Noise(nn.Module):
    def __init__(self, config: Img2NoiseConfig):
        super().__init__()
        self.config = config
        self.unet = UNet(config.unet)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The start noise (B, 3, H, W) that regenerates normalised images x with their identity."""
        return self.unet(x)
