"""What config an export writes into a model set that may already have been configured."""

from __future__ import annotations

from pathlib import Path

from . import checkpoint as ckpt
from .config import ModelSetConfig, setting_parent

# Settings a user may change in an exported set (`genreid configure`, `genreid store`) that no
# weights depend on: a later export keeps the set's values rather than the run's.
SETTINGS = ("generator.guidance", "preview.steps", "preview.guided_steps", "img2id.flip",
            "img2id.metric", "storage")


def export_config(out: Path, config: ModelSetConfig, explicit: tuple[str, ...] = ()) -> ModelSetConfig:
    """The config an export writes: the run's, with the settings the set already has, except
    those this run was told explicitly (e.g. --guidance)."""
    try:
        current = ckpt.read_config(out).to_dict() if (Path(out) / "config.json").is_file() else None
    except ckpt.CheckpointError:
        current = None  # an unreadable config is replaced, as a new set's would be
    if current is None:
        return config
    data = config.to_dict()
    for key in SETTINGS:
        if key not in explicit:
            (src, name), (dst, _) = setting_parent(current, key), setting_parent(data, key)
            dst[name] = src[name]
    merged = ModelSetConfig.from_dict(data)
    merged.validate()
    return merged
