"""Generation with trained networks: images from (identity, noise), identities from the prior."""

from __future__ import annotations

import torch

from .config import ScheduleConfig
from .models import Generator, IdentityPrior
from .sampler import Callback, ddim_sample


def generate(generator: Generator, identity: torch.Tensor, noise: torch.Tensor,
             schedule: ScheduleConfig, steps: int | None = None,
             callback: Callback | None = None) -> torch.Tensor:
    """Normalised images GEN(identity (B, D), noise (B, 3, H, W)); deterministic."""
    return ddim_sample(lambda x, v: generator(x, v, identity), noise, schedule, "eps", steps, callback)


def sample_prior(prior: IdentityPrior, noise: torch.Tensor, schedule: ScheduleConfig,
                 steps: int | None = None) -> torch.Tensor:
    """New identity vectors (B, D) from Gaussian noise (B, D) through the identity prior."""
    return prior.denormalize(ddim_sample(prior, noise, schedule, "x0", steps))
