"""The deterministic implicit (DDIM) sampler, for any network and either parametrisation.

    eps_hat, x0_hat = split(prediction)              # the network predicts eps or x_0
    x_next = signal_next * x0_hat + noise_next * eps_hat

Symbols: x_t the current sample, signal/noise the schedule's rates at t, eps the Gaussian
noise, x0_hat the predicted clean sample. The output is the last step's x0_hat. No noise is
drawn inside: the same start noise and condition always give the same sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from .config import ScheduleConfig
from .schedule import diffusion_rates, sampling_times

# model(x_t, noise_variance) -> prediction (of eps or of x_0, same shape as x_t)
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(step, x_t, x0_hat)
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]


def split_prediction(prediction: torch.Tensor, x_t: torch.Tensor, signal: torch.Tensor,
                     noise: torch.Tensor, predicts: Literal["eps", "x0"]):
    """(eps_hat, x0_hat) from the network's output, inverting x_t = signal*x0 + noise*eps."""
    if predicts == "eps":
        eps = prediction
        return eps, (x_t - noise * eps) / signal
    if predicts == "x0":
        x0 = prediction
        return (x_t - signal * x0) / noise, x0
    raise ValueError(f"predicts must be 'eps' or 'x0', not {predicts!r}")


def ddim_sample(model: Denoiser, x_T: torch.Tensor, schedule: ScheduleConfig,
                predicts: Literal["eps", "x0"] = "eps", steps: int | None = None,
                callback: Callback | None = None) -> torch.Tensor:
    """Run the reverse process from pure noise x_T (shape (B, ...)); returns x0_hat."""
    steps = schedule.steps if steps is None else steps
    shape = (x_T.shape[0],) + (1,) * (x_T.dim() - 1)
    x = x_T
    x0 = x_T
    for i, t in enumerate(sampling_times(steps)):
        t_now = torch.full(shape, t, device=x.device, dtype=torch.float32)
        signal, noise = diffusion_rates(t_now, schedule)
        eps, x0 = split_prediction(model(x, noise**2), x, signal, noise, predicts)
        signal_next, noise_next = diffusion_rates(t_now - 1.0 / steps, schedule)
        x = signal_next * x0 + noise_next * eps
        if callback is not None:
            callback(i, x, x0)
    return x0
