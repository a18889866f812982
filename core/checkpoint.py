"""Model-set folders and resumable training state, with safetensors only (nothing unpickled).

A model set is a folder that explains itself:
    config.json           ModelSetConfig (architecture, image size, normalisation, schedule)
    identities.json       the person id of each row of the identity table
    generator-<tag>.safetensors, prior-<tag>.safetensors, img2id-..., img2noise-..., preview-...
                          weights in float16, or for a part the config's `storage` names
                          "int8", its matrices and kernels in int8 with one float32 scale
                          per output channel; <tag> is the start of their SHA-256, and a
                          part over 8 MiB is split: img2id-<tag>-00001-of-00002.safetensors
                          (sets written before tags, e.g. generator.safetensors, still load)
    manifest.json         SHA-256 of every file above, checked at load
The manifest is the commit point: new weights go to new file names and a changed JSON file
to <name>.new, then the manifest is replaced in one atomic rename, then the .new files are
moved into place and files it no longer lists are deleted. A write killed at any moment
leaves the previous set or the new one (verify() finishes a committed move), never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import PARTS, ModelSetConfig
from .files import atomic_write

MANIFEST = "manifest.json"
STAGED = ".new"  # suffix of a changed JSON file written but not yet committed
# Files stay under the Hub's 10 MiB limit for plain git (and the GPU machine's 16 MiB).
SHARD_BYTES = 8 * 1024 * 1024


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete or altered."""


def write_json(path: Path, data: Any) -> None:
    atomic_write(Path(path), lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# The scale of an int8 tensor <name> is stored as <name><SCALE>; ":" is never part of a
# state-dict key, so the two cannot collide.
SCALE = ":scale"


def _stored(state: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """The tensors a part's file holds. float16: every float tensor halved. int8: each weight
    with 2+ dimensions rounded to q = round(w / s) in [-127, 127], one s = max|w| / 127 per
    output channel (row), so a channel of small weights keeps its own resolution; biases and
    normalisation parameters (a few per mille of the bytes) stay float16."""
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if storage == "int8" and v.is_floating_point() and v.dim() >= 2:
            v = v.float()
            scale = v.abs().amax(dim=tuple(range(1, v.dim())), keepdim=True).clamp_min(1e-12) / 127
            out[k] = torch.round(v / scale).clamp_(-127, 127).to(torch.int8).contiguous()
            out[k + SCALE] = scale.reshape(-1).contiguous()
        else:
            out[k] = (v.half() if v.is_floating_point() else v).contiguous()
    return out


def _restored(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo `_stored`: int8 tensors times their per-channel scale (float32)."""
    out = {}
    for k, v in state.items():
        if k.endswith(SCALE):
            continue
        scale = state.get(k + SCALE)
        if scale is not None:
            v = v.float() * scale.float().reshape(-1, *([1] * (v.dim() - 1)))
        out[k] = v
    return out


def _weight_part(name: str) -> str | None:
    """The part a weight file name belongs to (any layout), or None."""
    m = _WEIGHT_NAME.fullmatch(name)
    return m.group(1) if m else None


_WEIGHT_NAME = re.compile(r"(" + "|".join(PARTS) + r")(?:-[0-9a-f]{8})?(?:-\d{5}-of-\d{5})?\.safetensors")


def read_manifest(folder: str | Path) -> dict[str, str] | None:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


class ModelSetWriter:
    """Writes parts of a model set; `commit()` makes them the set, in one atomic step."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.written: dict[str, list[str]] = {}
        self.staged: list[str] = []  # changed JSON files waiting as <name>.new
        self.storage: dict[str, str] | None = None  # from config(), else the folder's config

    def _storage(self, part: str) -> str:
        if self.storage is None:
            has_config = (self.folder / "config.json").is_file()
            self.storage = read_config(self.folder).storage if has_config else {}
        return self.storage.get(part, "float16")

    def _json(self, name: str, data: Any) -> None:
        text = json.dumps(data, indent=2) + "\n"
        path = self.folder / name
        if path.is_file() and path.read_text() == text:
            return  # unchanged files are not rewritten
        if read_manifest(self.folder) is None:  # a new set: nothing to protect yet
            atomic_write(path, lambda p: p.write_text(text))
            return
        # A changed file of an existing set waits beside it until the manifest commits it
        # (verify() rolls a committed <name>.new forward if a kill came in between).
        atomic_write(self.folder / f"{name}{STAGED}", lambda p: p.write_text(text))
        self.staged.append(name)

    def config(self, config: ModelSetConfig) -> None:
        self._json("config.json", config.to_dict())
        self.storage = dict(config.storage)

    def identities(self, pids: list[int], source: str) -> None:
        self._json("identities.json", {"pids": [int(p) for p in pids], "source": source})

    def weights(self, part: str, module: torch.nn.Module) -> None:
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; valid: {PARTS}")
        state = _stored(module.state_dict(), self._storage(part))
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        digest = hashlib.sha256()
        for name, tensor in state.items():
            nbytes = tensor.numel() * tensor.element_size()
            if shards[-1] and size + nbytes > SHARD_BYTES:
                shards.append({})
                size = 0
            shards[-1][name] = tensor
            size += nbytes
            digest.update(name.encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        tag = digest.hexdigest()[:8]
        n = len(shards)
        names = [f"{part}-{tag}.safetensors"] if n == 1 else \
            [f"{part}-{tag}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for name, shard in zip(names, shards):
            if not (self.folder / name).is_file():  # same tag, same content: already there
                atomic_write(self.folder / name, lambda p, shard=shard: save_file(shard, str(p)))
        self.written[part] = names

    def commit(self) -> None:
        """Replace the manifest (the commit point), then delete weight files it no longer lists."""
        current = read_manifest(self.folder) or {}
        live = {name for name in current if _weight_part(name)}
        if not current:  # no manifest yet: whatever weights the folder holds are the set's
            live = {p.name for p in self.folder.glob("*.safetensors") if _weight_part(p.name)}
        for part, names in self.written.items():
            live = {n for n in live if _weight_part(n) != part} | set(names)
        live = {n for n in live if (self.folder / n).is_file()}  # a part deleted by hand is gone
        files = sorted(live | {n for n in ("config.json", "identities.json")
                               if (self.folder / n).is_file()})

        def current_file(name: str) -> Path:
            return self.folder / (f"{name}{STAGED}" if name in self.staged else name)
        write_json(self.folder / MANIFEST, {name: sha256(current_file(name)) for name in files})
        for name in self.staged:  # committed: move them into place
            os.replace(current_file(name), self.folder / name)
        for path in self.folder.glob("*.safetensors"):
            if _weight_part(path.name) and path.name not in live:
                path.unlink()
        self.written, self.staged = {}, []


def verify(folder: str | Path) -> dict[str, str]:
    """Check every file of the manifest; returns it. Raises CheckpointError naming the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no {MANIFEST}: not a genreid model set") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{folder / MANIFEST} is not valid JSON ({e})") from None
    for name, digest in manifest.items():
        path = folder / name
        staged = folder / f"{name}{STAGED}"
        if staged.is_file() and sha256(staged) == digest and \
                not (path.is_file() and sha256(path) == digest):
            os.replace(staged, path)  # committed before a kill, not yet moved: roll forward
        if not path.is_file():
            raise CheckpointError(f"{path} is listed in the manifest but missing")
        if sha256(path) != digest:
            raise CheckpointError(f"{path} does not match its SHA-256 in the manifest "
                                  "(truncated or altered); re-export or re-download it")
    return manifest


def read_config(folder: str | Path) -> ModelSetConfig:
    try:
        return ModelSetConfig.load(Path(folder) / "config.json")
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def read_identities(folder: str | Path) -> list[int]:
    path = Path(folder) / "identities.json"
    try:
        return [int(p) for p in json.loads(path.read_text())["pids"]]
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None


def part_files(folder: str | Path, part: str) -> list[str]:
    """File names holding a part, in shard order: those the manifest lists (else, for a folder
    without one, those present)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    names = manifest.keys() if manifest else (p.name for p in folder.glob("*.safetensors"))
    return sorted(n for n in names if _weight_part(n) == part)


def has_part(folder: str | Path, part: str) -> bool:
    return bool(part_files(folder, part))


def load_weights(folder: str | Path, part: str, module: torch.nn.Module) -> torch.nn.Module:
    """Load a part's weights into `module` (float32); the caller verified the manifest."""
    names = part_files(folder, part)
    if not names:
        raise CheckpointError(f"{folder} has no {part} (expected {part}.safetensors); "
                              f"train it with `genreid train {part} --checkpoint {folder}`")
    state = {}
    for name in names:
        path = Path(folder) / name
        try:
            state.update(load_file(str(path)))
        except Exception as e:  # safetensors raises its own error types on bad headers
            raise CheckpointError(f"cannot read {path}: {e}") from None
    path = Path(folder) / names[0]
    target = module.state_dict()
    state = _restored(state)
    state = {k: v.to(target[k].dtype) if k in target else v for k, v in state.items()}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the architecture in config.json: {e}") from None
    return module


# ---------------------------------------------------------------- resumable training state

def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for index, values in state["state"].items():
        for name, value in values.items():
            key = f"{index}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                meta["scalars"][key] = value
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(work_dir: str | Path, step: int, modules: dict[str, torch.nn.Module],
                        optimizer: torch.optim.Optimizer, extra: dict[str, Any],
                        rng: dict[str, torch.Tensor], keep: int = 2) -> Path:
    """Write step-numbered state, then point `latest.json` at it (atomic), then prune old ones."""
    work_dir = Path(work_dir)
    target = work_dir / f"step-{step:08d}"

    def write(tmp: Path) -> None:
        for name, module in modules.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                      str(tmp / f"{name}.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": opt_meta, **extra}))
    atomic_write(target, write, folder=True)
    write_json(work_dir / "latest.json", {"dir": target.name, "step": step})
    for old in sorted(work_dir.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_training_state(work_dir: str | Path, modules: dict[str, torch.nn.Module],
                        optimizer: torch.optim.Optimizer,
                        expect: dict[str, Any] | None = None) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """Restore the latest state into modules and optimizer; returns (state.json, rng) or None.

    `expect` lists state.json entries (network, output folder) that must match, so a work
    folder is never resumed into another network or another model set.
    """
    pointer = Path(work_dir) / "latest.json"
    if not pointer.is_file():
        return None
    try:
        folder = Path(work_dir) / json.loads(pointer.read_text())["dir"]
        meta = json.loads((folder / "state.json").read_text())
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot resume from {work_dir}: {e}; remove it to start afresh") from None
    for key, value in (expect or {}).items():
        if key in meta and meta[key] != value:
            raise CheckpointError(
                f"{work_dir} holds the training state of {key} {meta[key]!r}, not {value!r}: "
                "pass another --work-dir (or remove that folder to start afresh)")
    try:
        for name, module in modules.items():
            module.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
        optimizer.load_state_dict(_unflatten_optimizer(
            load_file(str(folder / "optimizer.safetensors")), meta.pop("optimizer")))
        return meta, load_file(str(folder / "rng.safetensors"))
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot resume from {folder}: {e}") from None
