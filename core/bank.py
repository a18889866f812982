"""The generated-picture bank: (image, identity, noise) triples generated once and drawn from.

On the fly (the paper's way, and the default) every generated image costs ten generator
passes at every step; on a CPU a fixed bank amortises them over many steps. img2id and
img2noise training share one bank file per size and seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .files import atomic_write

KEYS = ("images", "identities", "noises")
CHUNK = 64  # pictures generated per call
SAVE_EVERY = 1024  # pictures between saves of a bank in progress (a multiple of CHUNK)

# Makes n triples (images, identities, noises) from a seeded generator of random numbers.
Make = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def bank_path(work_dir: Path, size: int, seed: int) -> Path:
    """Beside the networks' work folders, so img2id and img2noise share one bank."""
    return Path(work_dir).parent / f"bank-{size}-seed{seed}.safetensors"


def write_bank(path: Path, size: int, seed: int, make: Make) -> None:
    """Generate `size` triples in chunks and write them in one atomic file: pictures and
    noises in half precision (they are 8-bit pictures and unit Gaussians), identities float32.
    Every SAVE_EVERY pictures the bank so far and the random state are saved beside it
    (hidden, .partial), so a killed run goes on where it stopped and ends with the very bank
    an uninterrupted one writes: a large bank takes most of an hour on a CPU."""
    partial = path.with_name(f".{path.name}.partial")
    rng = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in KEYS}
    done = 0
    if partial.is_file():
        saved = load_file(str(partial))
        rng.set_state(saved.pop("rng"))
        for k in KEYS:
            parts[k].append(saved[k])
        done = len(saved["images"])
    bar = tqdm(total=size, initial=done, unit="picture", desc="generating the bank",
               dynamic_ncols=True)
    while done < size:
        x, identity, z = make(min(CHUNK, size - done), rng)
        parts["images"].append(x.half().cpu().contiguous())  # safetensors saves no channels-last
        parts["identities"].append(identity.float().cpu().contiguous())
        parts["noises"].append(z.half().cpu().contiguous())
        done += len(x)
        bar.update(len(x))
        if done < size and done % SAVE_EVERY == 0:
            parts = {k: [torch.cat(v)] for k, v in parts.items()}
            state = {**{k: v[0] for k, v in parts.items()}, "rng": rng.get_state()}
            atomic_write(partial, lambda p, state=state: save_file(state, str(p)))
    bar.close()
    bank = {k: torch.cat(v) for k, v in parts.items()}
    atomic_write(path, lambda p: save_file(bank, str(p)))
    partial.unlink(missing_ok=True)


def load_bank(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in load_file(str(path)).items()}


def draw(bank: dict[str, torch.Tensor], index: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, identities, noises) of the bank's rows `index`, in float32."""
    x, identity, z = (bank[k][index.to(bank[k].device)].float() for k in KEYS)
    return (x.contiguous(memory_format=torch.channels_last), identity,
            z.contiguous(memory_format=torch.channels_last))
