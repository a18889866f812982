"""Results slow to make, kept on disk so that the next run finds them: npz files in one
folder per use (``~/.cache/genreid/<use>/``, or ``$GENREID_CACHE/<use>/``), named by a digest
of what they were made from. A cache is only a shortcut: every failure to read or write one is
silent, and the result is computed again."""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np

from .files import atomic_write


def cache_root(use: str) -> Path:
    """The folder for one use of the cache (e.g. "diagnose")."""
    base = os.environ.get("GENREID_CACHE")
    if not base:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "genreid"
    return Path(base) / use


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:16]


def set_fingerprint(folder: str | os.PathLike, version: str = "") -> str:
    """A model set's name in a cache: its manifest names every weight file by SHA-256, so
    retrained or edited weights get a new name."""
    manifest = Path(folder) / "manifest.json"
    return digest(version, manifest.read_bytes() if manifest.is_file() else b"")


class DiskCache:
    """npz files in one folder (None: a cache that keeps nothing)."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        if self.folder is None or not (self.folder / name).is_file():
            return None
        try:
            with np.load(self.folder / name, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:
            return None

    def save(self, name: str, **arrays: np.ndarray) -> None:
        if self.folder is None:
            return
        def write(path: Path) -> None:
            with open(path, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, **arrays)

        with contextlib.suppress(OSError):
            atomic_write(self.folder / name, write)
