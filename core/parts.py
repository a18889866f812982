"""The networks of a model set, built from its config and loaded: what every reader of a set
folder (the API, the set tools) shares."""

from __future__ import annotations

from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import ModelSetConfig
from .models import Generator, IdentityPrior, Img2ID, Img2Noise


def build_network(part: str, config: ModelSetConfig) -> torch.nn.Module:
    """The untrained network of one part, as `config` describes it."""
    builders = {
        "generator": lambda: Generator(config.generator),
        "preview": lambda: Generator(config.preview_generator()),
        "prior": lambda: IdentityPrior(config.prior),
        "img2id": lambda: Img2ID(config.img2id, tuple(config.image_size)),
        "img2noise": lambda: Img2Noise(config.img2noise),
    }
    return builders[part]()


def load_networks(folder: Path, config: ModelSetConfig) -> dict[str, torch.nn.Module]:
    """Every part the set holds, built from `config` and loaded (float32, CPU)."""
    return {part: ckpt.load_weights(folder, part, build_network(part, config))
            for part in ckpt.PARTS if ckpt.has_part(folder, part)}
