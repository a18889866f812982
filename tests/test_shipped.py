"""The shipped model sets: whole, loadable, and within the repository's size budget."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from core import checkpoint as ckpt
from core.api import GenReID

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
SETS = sorted(p.parent for p in CHECKPOINTS.glob("*/manifest.json"))
BUDGET = 60 * 1000 * 1000  # checkpoints/ in all, bytes
HUB_FILE_LIMIT = 10 * 1024 * 1024  # larger files need Git LFS on the Hub


def test_the_default_and_the_baseline_are_shipped():
    assert {p.name for p in SETS} >= {"default", "baseline"}


def test_checkpoints_fit_the_budget_and_the_hubs_file_limit():
    files = [p for p in CHECKPOINTS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < BUDGET
    assert max(p.stat().st_size for p in files) < HUB_FILE_LIMIT


@pytest.mark.parametrize("folder", SETS, ids=[p.name for p in SETS])
def test_a_shipped_set_verifies_loads_and_is_stored_as_its_config_says(folder):
    ckpt.verify(folder)
    model = GenReID.load(folder, device="cpu", precision="fp32")
    assert model.has("img2id")
    for part in model.networks:
        storage = model.config.storage.get(part, "float16")
        kinds = set()
        for name in ckpt.part_files(folder, part):
            with safe_open(str(folder / name), "pt") as f:
                kinds |= {f.get_slice(k).get_dtype() for k in f.keys()}
        assert ("I8" in kinds) == (storage == "int8"), part
        assert "F32" not in kinds or storage == "int8", part  # float32 only for int8 scales
    picture = np.zeros((1, *model.image_size, 3), np.uint8)
    assert model.encode(picture).shape == (1, model.config.img2id.id_dim)


def test_the_default_set_previews_with_guidance_on_every_step():
    """Its config.json says preview.guided_steps 0, which means every step: its previews (it
    has no preview network) are the generator in preview.steps steps, all of them guided."""
    model = GenReID.load(CHECKPOINTS / "default", device="cpu", precision="fp32")
    assert not model.has("preview") and model.config.preview.guided_steps == 0
    assert model.config.generator.guidance > 0 and model.config.preview.steps > 1
    ids, z = model.table_identities([0]), model.noise(1, seed=0)
    preview = model.generate(ids, z, preview=True)
    steps = model.config.preview.steps
    assert np.array_equal(preview, model.generate(ids, z, steps=steps, guided_steps=steps))
    assert not np.array_equal(preview, model.generate(ids, z, steps=steps, guided_steps=1))
