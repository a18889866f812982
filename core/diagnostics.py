"""Measures of how far a generator follows its identities (tracked during training)."""

from __future__ import annotations

import torch


def identity_share(images: torch.Tensor) -> float:
    """Share of pixel variance explained by identity, for a grid (I identities, N noises, ...).

    var over identities of the per-identity mean image / (that + mean variance over noises).
    Real CUHK03 training crops give about 0.34 (PLATFORM.md); a generator that ignores its
    identity gives about 0.
    """
    x = images.float().flatten(2)  # (I, N, P)
    between = x.mean(1).var(0, unbiased=False).mean()
    within = x.var(1, unbiased=False).mean()
    return float(between / (between + within).clamp_min(1e-12))
