"""What the explorer keeps in files: results slow to make, on disk per model set
(``~/.cache/genreid/explorer/<model fingerprint>/``) so a restart finds them again, and the
folders of each request's downloads."""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.files import atomic_write

CACHE_VERSION = "2"  # 2: portraits drawn by the fast preview


def default_cache_root() -> Path:
    env = os.environ.get("GENREID_EXPLORER_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "genreid" / "explorer"


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:16]


def model_fingerprint(folder: Path) -> str:
    """The cache's name for a model set: its manifest names every weight file by SHA-256."""
    manifest = folder / "manifest.json"
    return digest(CACHE_VERSION, manifest.read_bytes() if manifest.is_file() else b"")


class DiskCache:
    """npz/npy files in one folder; every failure is silent (the cache is only a shortcut)."""

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


class Downloads:
    """Folders for the files a request returns (Gradio copies them to its own cache), in one
    temporary folder removed at exit."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="genreid-explorer-"))
        self._lock = threading.Lock()
        atexit.register(shutil.rmtree, self.folder, True)

    def output_dir(self, name: str, keep_s: float = 3600.0) -> Path:
        """A fresh folder for one request's downloads (folders older than keep_s are removed,
        all of them at exit)."""
        now = time.time()
        for old in self.folder.glob("call-*"):
            try:
                if now - old.stat().st_mtime > keep_s:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return Path(tempfile.mkdtemp(prefix=f"call-{name}-", dir=self.folder))

    def shared_file(self, name: str, write: Callable[[Path], None]) -> str:
        """A download file that never changes (e.g. all pairwise distances), written once."""
        with self._lock:
            path = self.folder / name
            if not path.is_file():
                write(path)
            return str(path)
