"""Device and precision choices shared by training, evaluation and the API."""

from __future__ import annotations

import torch

from .config import PRECISIONS


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present, else CPU; or the device named ("cpu", "cuda:1", ...)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but no GPU is available; use --device cpu")
    return device


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")


def bf16_is_native(device: torch.device) -> bool:
    """Whether bfloat16 matmuls and convolutions run in hardware (CUDA, or a CPU with AVX-512
    BF16 / AMX); elsewhere bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """"bf16" or "fp32", for training and inference alike: auto picks bf16 only where it is
    native."""
    _check_precision(precision)
    if precision == "auto":
        return "bf16" if bf16_is_native(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast where `resolve_precision` picks it (auto: where bf16 is native: twice as
    fast on AVX-512 BF16, ten times slower than float32 where it is emulated, e.g. AVX2 only)."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=resolve_precision(device, precision) == "bf16")
