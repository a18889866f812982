"""Editing a model set in place: its settings (`genreid configure`), how its weights are
stored (`genreid store`) and which weights it holds (`genreid replace`); each change
validated, then committed with the manifest.

    configure_set("checkpoints/default", {"img2id.flip": True, "generator.guidance": 2.0})
    store_parts("checkpoints/default", {"img2id": "int8", "img2noise": "int8"})
    replace_parts("checkpoints/default", "runs/more/set", ["generator"])
    replace_parts("runs/avg", ["runs/snap/a", "runs/snap/b"], ["generator"])  # their mean
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .config import ModelSetConfig, setting_parent
from .parts import build_network, load_networks


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


def _check_part_names(parts) -> None:
    unknown = sorted(set(parts) - set(ckpt.PARTS))
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(map(repr, unknown))}; parts: "
                         f"{', '.join(ckpt.PARTS)}")


def store_parts(folder: str | Path, storage: dict[str, str]) -> dict[str, int]:
    """Rewrite parts of a model set in another storage ("float16" or "int8", see
    core.checkpoint) and record it in the set's config, so later exports keep it.
    Returns the bytes each rewritten part now takes."""
    _check_part_names(storage)
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


# What each part was trained on: replacing a part leaves these parts of the set trained on
# the weights it replaced, until they are trained again.
TRAINED_ON = {
    "generator": ("preview", "prior", "img2id", "img2noise"),  # its pictures or identity table
}


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform mean of several state dicts of one architecture, in float32; integer
    buffers (BatchNorm's step counter) are the last one's. Averaging snapshots of one run
    smooths the steps' noise beyond what the training EMA keeps (checkpoint averaging)."""
    mean = {}
    for name, last in states[-1].items():
        if last.is_floating_point():
            mean[name] = torch.stack([s[name].float() for s in states]).mean(0)
        else:
            mean[name] = last
    return mean


def replace_parts(folder: str | Path, source, parts: list[str]) -> list[str]:
    """Replace parts of the set in `folder` by `source`'s, e.g. a generator trained on from
    it (`genreid train generator --init-from`). With a list of sources, each part becomes
    the mean of their weights (e.g. snapshots of one run's --out, see `average_state`).
    Every source must hold the set's persons and its weights must load into the set's own
    architecture; the set keeps its settings and storage. Returns the set's other parts
    that were trained on a replaced one."""
    folder = Path(folder)
    sources = [Path(s) for s in ([source] if isinstance(source, (str, Path)) else source)]
    if not parts:
        raise ValueError(f"name at least one part to replace; parts: {', '.join(ckpt.PARTS)}")
    if not sources:
        raise ValueError("name at least one set to take the parts from")
    _check_part_names(parts)
    ckpt.verify(folder)
    persons = ckpt.read_identities(folder)
    for source in sources:
        ckpt.verify(source)
        missing = [part for part in parts if not ckpt.has_part(source, part)]
        if missing:
            raise ValueError(f"{source} has no {', '.join(missing)} to take")
        if ckpt.read_identities(source) != persons:
            # the identity table's rows, and every vector the other parts learned, are these persons
            raise ValueError(f"{source} and {folder} hold different persons (identities.json)")
    config = ckpt.read_config(folder)
    writer = ckpt.ModelSetWriter(folder)
    for part in parts:
        states = []
        for source in sources:
            try:
                network = ckpt.load_weights(source, part, build_network(part, config))
            except ckpt.CheckpointError as e:
                raise ValueError(f"{source}'s {part} does not fit {folder}'s architecture "
                                 f"({e})") from None
            states.append(network.state_dict())
        if len(states) > 1:
            network.load_state_dict(average_state(states))
        writer.weights(part, network)
    writer.commit()
    return [other for part in parts for other in TRAINED_ON.get(part, ())
            if other not in parts and ckpt.has_part(folder, other)]
