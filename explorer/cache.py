"""What the explorer keeps in files: results slow to make, on disk per model set
(``~/.cache/genreid/explorer/<model fingerprint>/``) so a restart finds them again, and the
folders of each request's downloads."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.disk_cache import DiskCache, cache_root, digest, set_fingerprint

__all__ = ["DiskCache", "Downloads", "default_cache_root", "digest", "model_fingerprint"]

CACHE_VERSION = "2"  # 2: portraits drawn by the fast preview


def default_cache_root() -> Path:
    env = os.environ.get("GENREID_EXPLORER_CACHE")
    return Path(env) if env else cache_root("explorer")


def model_fingerprint(folder: Path) -> str:
    """The cache's name for a model set (its manifest, with this cache's version)."""
    return set_fingerprint(folder, CACHE_VERSION)


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
