"""Generation with trained networks: images from (identity, noise), identities from the prior."""

from __future__ import annotations

import torch

from .config import ScheduleConfig
from .models import Generator, IdentityPrior
from .sampler import Callback, ddim_sample


def guided(generator: Generator, identity: torch.Tensor, guided_steps: int | None = None):
    """The noise predictor the sampler calls, with the generator's identity guidance.

    guided_steps k >= 1: guidance only on the first k calls (steps), plain prediction after;
    0 or None: guidance on every step. 0 means the same as in `preview.guided_steps`, so a
    config's value passes through unchanged; to guide no step, set the guidance weight to 0."""
    if guided_steps is not None and guided_steps < 0:
        raise ValueError(f"guided_steps must be >= 0 (0: every step), not {guided_steps}")
    w = generator.config.guidance
    if not w:
        return lambda x, v: generator(x, v, identity)
    null = torch.zeros_like(identity)
    calls = 0

    def predict(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if guided_steps and calls > guided_steps:
            return generator(x, v, identity)
        # One batched pass for the conditional and the "no identity" predictions. The latter
        # depends on (x, v) alone, so equal rows are predicted once: at a grid's first step a
        # column shares its noise, and a sweep's pictures all start from one.
        x_null, v_null, inverse = unique_rows(x, v)
        both = generator(torch.cat([x, x_null]), torch.cat([v, v_null]),
                         torch.cat([identity, null[:len(x_null)]]))
        eps, eps_null = both[:len(x)], both[len(x):][inverse]
        return eps + w * (eps - eps_null)

    return predict


def unique_rows(x: torch.Tensor, v: torch.Tensor):
    """(distinct rows of x, their v, inverse): x == x_distinct[inverse], and likewise v."""
    keys = torch.cat([x.flatten(1), v.flatten(1).to(x.dtype)], dim=1)
    distinct, inverse = torch.unique(keys, dim=0, return_inverse=True)
    if len(distinct) == len(keys):  # the usual case after the first step: nothing to share
        return x, v, torch.arange(len(x), device=x.device)
    first = torch.full((len(distinct),), len(keys), dtype=torch.long, device=x.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(keys), device=x.device), "amin")
    return x[first], v[first], inverse


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
