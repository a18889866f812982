"""Real pictures of the training persons, so that every generated person can be shown beside
who they really are.

Found in the training split of ``--data``, else in the split the model set names as its
training source (``identities.json``: a pack or an image folder) when that is still on disk.
Either is used only if it holds exactly the set's persons. One crop per person: the first in
file order.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from core.data import DataError, list_records, load_image, load_split


class RealPortraits:
    def __init__(self, pids, size: tuple[int, int], train_folder: str | os.PathLike | None = None,
                 set_folder: str | os.PathLike | None = None):
        self.size = size
        self.where = ""  # where the pictures come from ("" when there are none)
        self._records: dict[int, object] = {}  # pid -> record, read on demand (image folders)
        self._pictures: dict[int, np.ndarray] = {}
        self._cameras: dict[int, int] = {}
        wanted = {int(p) for p in pids}
        if train_folder is not None:
            self._from_folder(train_folder, wanted, "the training split of --data")
        elif set_folder is not None:
            source = _training_source(set_folder)
            if source is not None:
                try:
                    if source.is_dir():
                        self._from_folder(source, wanted, str(source))
                    else:
                        self._from_pack(source, wanted)
                except (DataError, OSError, ValueError):
                    self._records, self._pictures, self._cameras, self.where = {}, {}, {}, ""

    def __bool__(self) -> bool:
        return bool(self.where)

    def picture(self, pid: int) -> np.ndarray | None:
        pid = int(pid)
        if pid not in self._pictures and pid in self._records:
            self._pictures[pid] = load_image(self._records[pid].path, self.size)
        return self._pictures.get(pid)

    def camera(self, pid: int) -> int | None:
        return self._cameras.get(int(pid))

    def _from_folder(self, folder, wanted: set[int], where: str) -> None:
        records = {}
        for r in list_records(folder):
            records.setdefault(r.pid, r)
        if set(records) == wanted:
            self._records = records
            self._cameras = {p: int(r.camid) for p, r in records.items()}
            self.where = where

    def _from_pack(self, pack: Path, wanted: set[int]) -> None:
        split = load_split(pack, self.size)
        first = {}
        for i, p in enumerate(split.pids.tolist()):
            first.setdefault(int(p), i)
        if set(first) == wanted:
            self._pictures = {p: split.images[i].copy() for p, i in first.items()}
            self._cameras = {p: int(split.camids[i]) for p, i in first.items()}
            self.where = str(pack)


def _training_source(set_folder) -> Path | None:
    """The training split a model set names, if it is on disk (relative paths are taken from
    the working folder, where `genreid train` wrote them)."""
    try:
        source = json.loads((Path(set_folder) / "identities.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    if not source:
        return None
    path = Path(source)
    return path if path.exists() else None
