"""Editing a model set in place: its settings (`genreid configure`) and how its weights are
stored (`genreid store`); each change validated, then committed with the manifest.

    configure_set("checkpoints/default", {"img2id.flip": True, "generator.guidance": 2.0})
    store_parts("checkpoints/default", {"img2id": "int8", "img2noise": "int8"})
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .config import ModelSetConfig, setting_parent
from .parts import load_networks


def configure_set(folder: str | Path, settings: dict[str, Any]) -> ModelSetConfig:
    """Change settings of a model set's config.json, e.g. {"img2id.flip": True,
    "generator.guidance": 2.0}: each must exist and keep its type, the result must validate
    and the set's weights must still load into it; committed with the manifest like any
    other write. Returns the new config."""
    folder = Path(folder)
    ckpt.verify(folder)
    data = ckpt.read_config(folder).to_dict()
    for key, value in settings.items():
        if key.split(".")[0] == "storage":
            raise ValueError("storage is changed by `genreid store`, which rewrites the weights")
        node, last = setting_parent(data, key)
        if last not in node or isinstance(node[last], dict):
            raise ValueError(f"{key}: not a setting of config.json; there: "
                             f"{', '.join(sorted(node))}")
        old = node[last]
        if isinstance(old, float) and type(value) is int:
            value = float(value)
        if type(value) is not type(old):
            raise ValueError(f"{key} takes a {type(old).__name__} (now {json.dumps(old)}), "
                             f"not {json.dumps(value)}")
        node[last] = value
    config = ModelSetConfig.from_dict(data)
    config.validate()
    try:
        load_networks(folder, config)
    except ckpt.CheckpointError as e:
        raise ValueError(f"refused: with these settings the weights no longer load ({e})") from None
    writer = ckpt.ModelSetWriter(folder)
    writer.config(config)
    writer.commit()
    return config


def store_parts(folder: str | Path, storage: dict[str, str]) -> dict[str, int]:
    """Rewrite parts of a model set in another storage ("float16" or "int8", see
    core.checkpoint) and record it in the set's config, so later exports keep it.
    Returns the bytes each rewritten part now takes."""
    unknown = sorted(set(storage) - set(ckpt.PARTS))
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(map(repr, unknown))}; parts: "
                         f"{', '.join(ckpt.PARTS)}")
    folder = Path(folder)
    ckpt.verify(folder)
    config = ckpt.read_config(folder)
    networks = load_networks(folder, config)
    missing = sorted(set(storage) - set(networks))
    if missing:
        raise ValueError(f"{folder} has no {', '.join(missing)} to store "
                         f"(it holds {', '.join(networks) or 'no network'})")
    config = dataclasses.replace(config, storage={**config.storage, **storage})
    config.validate()
    writer = ckpt.ModelSetWriter(folder)
    writer.config(config)
    for part in storage:
        writer.weights(part, networks[part])
    writer.commit()
    return {part: sum((Path(folder) / n).stat().st_size for n in ckpt.part_files(folder, part))
            for part in storage}
