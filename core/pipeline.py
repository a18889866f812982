"""Generation with trained networks: images from (identity, noise), identities from the prior."""

from __future__ import annotations

import torch

from .config import ScheduleConfig
from .models import Generator, IdentityPrior
from .sampler import Callback, ddim_sample


def guided(generator: Generator, identity: torch.Tensor, guided_steps: int | None = None):
    """The noise predictor the sampler calls, with the generator's identity guidance; with
    guided_steps, guidance only on that many first calls (steps), plain prediction after."""
    w = generator.config.guidance
    if not w:
        return lambda x, v: generator(x, v, identity)
    null = torch.zeros_like(identity)
    calls = 0

    def predict(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if guided_steps is not None and calls > guided_steps:
            return generator(x, v, identity)
        # One batched pass for the conditional and the "no identity" predictions.
        both = generator(torch.cat([x, x]), torch.cat([v, v]), torch.cat([identity, null]))
        eps, eps_null = both.chunk(2)
        return eps + w * (eps - eps_null)

    return predict


def generate(generator: Generator, identity: torch.Tensor, noise: torch.Tensor,
             schedule: ScheduleConfig, steps: int | None = None,
             callback: Callback | None = None, guided_steps: int | None = None) -> torch.Tensor:
    """Normalised images GEN(identity (B, D), noise (B, 3, H, W)); deterministic."""
    return ddim_sample(guided(generator, identity, guided_steps), noise, schedule, "eps", steps,
                       callback)


def sample_prior(prior: IdentityPrior, noise: torch.Tensor, schedule: ScheduleConfig,
                 steps: int | None = None) -> torch.Tensor:
    """New identity vectors (B, D) from Gaussian noise (B, D) through the identity prior."""
    return prior.denormalize(ddim_sample(prior, noise, schedule, "x0", steps))
