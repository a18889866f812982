"""The 128x64 configuration shipped in core/configs builds and samples at its size (every
shipped configuration loads: tests/test_model.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from core.config import ModelSetConfig
from core.models import Generator, Img2ID, Img2Noise
from core.pipeline import generate

CONFIGS = Path(__file__).resolve().parent.parent / "core" / "configs"


def test_128x64_has_one_more_level_and_samples_at_its_size():
    config = ModelSetConfig.load(CONFIGS / "spec-128x64.json")
    spec = ModelSetConfig.load(CONFIGS / "spec-64x32.json")
    assert config.image_size == [128, 64]
    for unet, base in ((config.generator.unet, spec.generator.unet),
                       (config.img2id.unet, spec.img2id.unet),
                       (config.img2noise.unet, spec.img2noise.unet)):
        assert len(unet.widths) == len(base.widths) + 1
        assert unet.widths[1:] == base.widths  # the paper's levels, below one more at full size
    config.generator.num_identities = 3
    torch.manual_seed(0)
    generator = Generator(config.generator).eval()
    identity = generator.identities(torch.tensor([0, 2]))
    noise = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        x = generate(generator, identity, noise, config.schedule, steps=2)
        assert x.shape == (2, 3, 128, 64) and torch.isfinite(x).all()
        assert Img2ID(config.img2id, (128, 64)).eval()(x).shape == (2, config.img2id.id_dim)
        assert Img2Noise(config.img2noise).eval()(x).shape == (2, 3, 128, 64)
