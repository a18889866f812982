"""The continuous-time angle (cosine) noise schedule of the paper.

At time t in [0, 1] the noisy image is x_t = signal(t) * x_0 + noise(t) * eps, with
signal = cos(angle(t)), noise = sin(angle(t)) and the angle interpolated linearly between
acos(max_signal) at t = 0 and acos(min_signal) at t = 1, so signal^2 + noise^2 = 1.
"""

from __future__ import annotations

import math

import torch

from .config import ScheduleConfig


def diffusion_rates(t: torch.Tensor, schedule: ScheduleConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(signal rate, noise rate) at times t (any shape)."""
    start = math.acos(schedule.max_signal)
    end = math.acos(schedule.min_signal)
    angle = start + t * (end - start)
    return torch.cos(angle), torch.sin(angle)


def add_noise(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
              schedule: ScheduleConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward process: (x_t = signal * x0 + noise * eps, signal, noise) at times t
    (shaped to broadcast against x0)."""
    signal, noise = diffusion_rates(t, schedule)
    return signal * x0 + noise * eps, signal, noise


def sampling_times(steps: int) -> list[float]:
    """The deterministic sampler's times: 1, 1 - 1/steps, ..., 1/steps."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return [1.0 - i / steps for i in range(steps)]
