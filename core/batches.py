"""Training batches drawn from a split held on the device: random images, or P persons x K
of their images for metric learning, with persons held out for validation."""

from __future__ import annotations

import numpy as np
import torch

from .data import Split
from .images import Normalizer


class TrainingImages:
    """A split held on the device as uint8; batches are normalised, randomly flipped."""

    def __init__(self, split: Split, normalizer: Normalizer, device: torch.device):
        self.images = torch.from_numpy(split.images).to(device)
        labels, self.pids = split.relabel()
        self.labels = torch.from_numpy(labels).to(device)
        self.camids = split.camids
        self.normalizer = normalizer
        self.pool: torch.Tensor | None = None  # the rows batches draw from (None: all)

    def hold_out(self, persons: int, seed: int) -> np.ndarray:
        """Take `persons` identities (seeded, among those seen by 2+ cameras) out of the
        batches; returns their image rows, for validation."""
        labels = self.labels.cpu().numpy()
        seen = [lab for lab in range(len(self.pids))
                if len(np.unique(self.camids[labels == lab])) > 1]
        if not 2 <= persons < len(seen):
            raise ValueError(f"--val-persons must be within 2..{len(seen) - 1} (persons seen "
                             f"by two or more cameras); got {persons}")
        chosen = np.random.default_rng(seed).choice(seen, persons, replace=False)
        held = np.isin(labels, chosen)
        self.pool = torch.from_numpy(np.flatnonzero(~held))
        return np.flatnonzero(held)

    def batch(self, n: int, rng: torch.Generator, keep=lambda rows: rows
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """n random images (with replacement); `keep` picks this process's rows of the draw."""
        if self.pool is None:
            return self.take(torch.randint(len(self.images), (n,), generator=rng), rng, keep)
        return self.take(self.pool[torch.randint(len(self.pool), (n,), generator=rng)], rng, keep)

    def pk_batch(self, p: int, k: int, rng: torch.Generator, keep=lambda rows: rows
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """p identities x k of their images (with replacement), as metric learning needs."""
        labels = self.labels.cpu()
        chosen = torch.randperm(len(self.pids), generator=rng)[:p]
        index = []
        for label in chosen.tolist():
            pool = torch.nonzero(labels == label).flatten()
            index.append(pool[torch.randint(len(pool), (k,), generator=rng)])
        return self.take(torch.cat(index), rng, keep)

    def take(self, index: torch.Tensor, rng: torch.Generator, keep) -> tuple[torch.Tensor, torch.Tensor]:
        flip = torch.rand(len(index), generator=rng) < 0.5  # drawn for the whole batch
        index, flip = keep(index).to(self.images.device), keep(flip).to(self.images.device)
        x = self.normalizer.encode(self.images[index])
        return torch.where(flip.reshape(-1, 1, 1, 1), x.flip(3), x), self.labels[index]
