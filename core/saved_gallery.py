"""A gallery folder -> a saved `GalleryIndex`, for galleries far larger than memory.

    genreid index --checkpoint checkpoints/default --data ../shared/data/cuhk03
    torchrun --nproc_per_node=8 "$(which genreid)" index --checkpoint ... --data ...

Pictures are read and encoded a chunk at a time (never the whole gallery in memory); under
torchrun each process encodes its own contiguous share of the files and rank 0 builds and
saves the index. The index records what it was made from (the set's Img2ID weights, the
folder, the flip setting), so the explorer can tell a stale one from a good one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import checkpoint as ckpt
from . import distributed
from .api import GenReID
from .data import dataset_splits, list_records, load_image
from .gallery_index import GalleryIndex

CHUNK = 2048  # pictures decoded at a time (12 MB at 64x32)


def encoder_fingerprint(model: GenReID, flip: bool | None = None) -> dict:
    """What the vectors depend on: the set's Img2ID weight files (by SHA-256), the image size
    and whether pictures were averaged with their mirror image (default: the set's choice)."""
    manifest = ckpt.read_manifest(model.folder) or {}
    return {"img2id": {n: manifest.get(n, "") for n in ckpt.part_files(model.folder, "img2id")},
            "image_size": list(model.image_size),
            "flip": bool(model.config.img2id.flip if flip is None else flip),
            # Named only when not the default, so indexes saved before metrics stay valid.
            **({"metric": model.retrieval_metric} if model.retrieval_metric != "euclidean" else {})}


def gallery_folder(data: str | os.PathLike, split: str = "gallery") -> Path:
    """A dataset root's split folder (Market-1501 layout), or the folder itself."""
    data = Path(data)
    if (data / "bounding_box_test").is_dir() or (data / "query").is_dir():
        return Path(dataset_splits(data, required=(split,))[split])
    return data


def encode_folder(model: GenReID, folder: str | os.PathLike, flip: bool | None = None,
                  chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(vectors, pids, camids, file names) of every picture in a Market-1501 style folder."""
    ctx = distributed.context()
    records = list_records(folder)
    mine = records[ctx.rows(len(records))]
    parts = []
    for start in tqdm(range(0, len(mine), chunk), desc="encoding the gallery", dynamic_ncols=True,
                      disable=not ctx.main, unit="chunk"):
        batch = mine[start:start + chunk]
        images = np.stack([load_image(r.path, model.image_size) for r in batch])
        parts.append(model.encode(images, flip=flip))
    vectors = np.concatenate(parts) if parts else np.zeros((0, model.id_dim), np.float32)
    vectors = ctx.gather_rows(vectors)
    return (vectors, np.array([r.pid for r in records], np.int64),
            np.array([r.camid for r in records], np.int64),
            [os.path.basename(r.path) for r in records])


def build_gallery_index(model: GenReID, data: str | os.PathLike, out: str | os.PathLike | None,
                        kind: str = "auto", flip: bool | None = None,
                        split: str = "gallery") -> GalleryIndex:
    folder = gallery_folder(data, split)
    vectors, pids, camids, names = encode_folder(model, folder, flip)
    meta = {"source": str(folder.resolve()), "encoder": encoder_fingerprint(model, flip)}
    index = model.index_vectors(vectors, pids, camids, names, kind, meta=meta)
    if out is not None and distributed.context().main:
        index.save(out)
    return index


def load_gallery_index(folder: str | os.PathLike, model: GenReID) -> GalleryIndex:
    """A saved index, checked to belong to this model set's encoder."""
    index = GalleryIndex.load(folder)
    if index.meta.get("encoder") != encoder_fingerprint(model):
        raise ValueError(f"the gallery index in {folder} was encoded by another Img2ID than "
                         f"{model.folder}'s (or with another flip or metric setting): rebuild it with "
                         f"`genreid index --checkpoint {model.folder} --data ...`")
    if index.dim != model.id_dim:
        raise ValueError(f"the gallery index in {folder} holds {index.dim}-d vectors, the model "
                         f"{model.id_dim}-d")
    return index


def picture_path(index: GalleryIndex, row: int) -> Path:
    return Path(index.meta.get("source", ".")) / index.names[row]
