"""Atomic writes of files and folders: a crash or a kill never leaves a half-written one behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], folder: bool = False) -> None:
    """Call write(tmp_path) beside `path`, then rename it over `path` (atomic on one file system).

    folder=True: tmp_path is an empty folder for `write` to fill, and replaces the folder at
    `path` whole. Folders have one writer (a training run, `genreid index`), so their temporary
    name is fixed: the next write clears what a killed one left, which may be large."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        _write_folder(path, write)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these files are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # only still there if writing or renaming failed
            os.unlink(tmp)


def _write_folder(path: Path, write: Callable[[Path], None]) -> None:
    tmp, old = path.parent / f".{path.name}.tmp", path.parent / f".{path.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        shutil.rmtree(old, ignore_errors=True)
        # A folder cannot be renamed over one with files in it: the current one steps aside.
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there if writing or renaming failed
