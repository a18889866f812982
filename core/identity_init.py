"""An identity table that starts informative: rows from the PCA of each person's mean image."""

from __future__ import annotations

import math

import torch


def pca_identity_init(images: torch.Tensor, labels: torch.Tensor, num: int, dim: int,
                      scale: float) -> torch.Tensor:
    """Rows from the PCA of each identity's mean (normalised) image, spread like U[-s, s]."""
    flat = images.float().flatten(1)
    sums = torch.zeros(num, flat.shape[1]).index_add_(0, labels.cpu(), flat.cpu())
    counts = torch.bincount(labels.cpu(), minlength=num).clamp_min(1).unsqueeze(1)
    means = sums / counts
    means = means - means.mean(0)
    _, _, v = torch.linalg.svd(means, full_matrices=False)
    rows = means @ v[:dim].T  # (num, k), k = min(dim, num, pixels)
    rows = rows * (scale / math.sqrt(3.0)) / rows.std().clamp_min(1e-12)
    # Fewer identities than dimensions: the remaining columns start as in the paper.
    rest = torch.empty(num, dim - rows.shape[1]).uniform_(-scale, scale)
    return torch.cat([rows, rest], dim=1)
