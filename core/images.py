"""Between uint8 pictures (N, H, W, 3) and the networks' normalised tensors (N, 3, H, W)."""

from __future__ import annotations

import numpy as np
import torch


class Normalizer:
    """Per-channel standardisation with the training set's statistics (docs/method.md, data)."""

    def __init__(self, mean, std, device: torch.device | str = "cpu"):
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(1, 3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).reshape(1, 3, 1, 1)

    def encode(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W), channels-last in memory."""
        x = torch.as_tensor(images).to(self.mean.device)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised -> [0, 1], clipped (the generator's output space)."""
        return (x.float() * self.std + self.mean).clamp(0.0, 1.0)

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """Clip normalised images to what a real picture can hold."""
        return (self.to_unit(x) - self.mean) / self.std

    def decode(self, x: torch.Tensor) -> np.ndarray:
        """Normalised (N, 3, H, W) -> uint8 (N, H, W, 3)."""
        unit = self.to_unit(x).permute(0, 2, 3, 1)
        return (unit * 255.0).round().to(torch.uint8).cpu().numpy()


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W, 3) images in [0, 1]."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return x.mean(0).tolist(), x.std(0).tolist()


def image_grid(images: np.ndarray, rows: int) -> np.ndarray:
    """uint8 (R*C, H, W, 3) -> one (R*H, C*W, 3) picture, row-major."""
    n, h, w, c = images.shape
    cols = n // rows
    return images[: rows * cols].reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4) \
        .reshape(rows * h, cols * w, c)
