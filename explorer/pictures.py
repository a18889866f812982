"""The query and gallery pictures the retrieval and decomposition panels work on: read from a
dataset (``--data``), taken from a saved gallery index, or generated from known identities
when there is no data; the gallery's identity features and the index every retrieval
searches; and single pictures, a query's or an upload's."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from core.api import GenReID
from core.data import DataError, load_image, load_split, parse_name
from core.gallery_index import GalleryIndex
from core.saved_gallery import picture_path

from .cache import DiskCache, digest
from .messages import require
from .tasks import ModelThread, Report, Task

QUERY_SEED, GALLERY_SEED = 101, 102  # noises of the generated query and gallery
# Uploads: Gradio refuses files over UPLOAD_MAX_BYTES; pictures over UPLOAD_MAX_PIXELS are
# refused from their header (a 30000x30000 PNG of a few kB would need 2.7 GB decoded).
UPLOAD_MAX_BYTES, UPLOAD_MAX_PIXELS = 10_000_000, 25_000_000
UPLOAD_LIMITS = (f"JPEG, PNG, WebP, BMP, TIFF or GIF; at most {UPLOAD_MAX_BYTES // 10**6} MB and "
                 f"{UPLOAD_MAX_PIXELS // 10**6} megapixels")


@dataclass
class PictureSet:
    """Labelled pictures: a real split, or pictures generated from known identities."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int64 (N,): the person (pid, or the index of the generating identity)
    camids: np.ndarray  # int64 (N,); -1 where unknown
    names: list[str]  # file names, or a description of how the picture was generated
    who: list[str]  # short caption: "pid 0003 · c2" or "prior 3 (generated)"
    generated: bool

    def __len__(self) -> int:
        return len(self.names)


class IndexedPictures:
    """The pictures of a saved gallery index, read from their files when shown (a gallery of
    millions is never held in memory); a missing file shows as a grey tile."""

    def __init__(self, index: GalleryIndex, size: tuple[int, int], keep: int = 4096):
        self.index, self.size, self.keep = index, size, keep
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, row) -> np.ndarray:
        row = int(row)
        if not 0 <= row < len(self):
            raise IndexError(f"gallery picture {row} is outside 0..{len(self) - 1}")
        with self._lock:
            if row in self._cache:
                return self._cache[row]
        try:
            img = load_image(picture_path(self.index, row), self.size)
        except (DataError, OSError):
            img = np.full((*self.size, 3), 128, np.uint8)
        with self._lock:
            if len(self._cache) >= self.keep:
                self._cache.pop(next(iter(self._cache)))
            self._cache[row] = img
        return img


def _who(pids, camids) -> list[str]:
    return [f"pid {p:04d} · c{c}" for p, c in zip(pids.tolist(), camids.tolist(), strict=True)]


def _real(split) -> PictureSet:
    return PictureSet(split.images, split.pids, split.camids, list(split.names),
                      _who(split.pids, split.camids), generated=False)


class QueryAndGallery:
    """The query and gallery pictures and the gallery's features, made in background Tasks.

    people: (keys, identity vectors) of the identities generated pictures show when there is
    no dataset, one query and `per_identity` gallery pictures each, each with its own noise."""

    def __init__(self, model: GenReID, runner: ModelThread, cache: DiskCache, *,
                 splits: dict[str, str], saved_gallery: GalleryIndex | None,
                 people: tuple[list[str], np.ndarray], per_identity: int):
        self.model, self.runner, self.cache = model, runner, cache
        self.size, self.dim = model.image_size, model.id_dim
        self.splits, self.saved_gallery = splits, saved_gallery
        self.people, self.per_identity = people, per_identity
        self._search_index: GalleryIndex | None = saved_gallery
        self.pictures_task = Task("query and gallery pictures", self._make_pictures)
        self.features_task = Task("gallery features", self._make_features)

    @property
    def real_data(self) -> bool:
        return "query" in self.splits

    @property
    def real_gallery(self) -> bool:
        """Whether the gallery holds real pictures (from --data or a saved gallery index)."""
        return self.real_data or self.saved_gallery is not None

    # ----------------------------------------------------------------- pictures
    def _make_pictures(self, report: Report) -> tuple[PictureSet, PictureSet]:
        if self.saved_gallery is not None:
            index = self.saved_gallery
            gallery = PictureSet(IndexedPictures(index, self.size), index.pids, index.camids,
                                 index.names, _who(index.pids, index.camids), generated=False)
            if self.real_data:
                report(0.0, "reading the query pictures")
                return _real(load_split(self.splits["query"], self.size)), gallery
            query, _ = self._generated_pictures(report)
            query.labels = np.full(len(query), -1)  # generated people are not in a real gallery
            return query, gallery
        if self.real_data:
            report(0.0, "reading the query pictures")
            q = load_split(self.splits["query"], self.size)
            report(0.3, "reading the gallery pictures")
            g = load_split(self.splits["gallery"], self.size)
            report(1.0, "pictures read")
            return _real(q), _real(g)
        return self._generated_pictures(report)

    def _generated_pictures(self, report: Report) -> tuple[PictureSet, PictureSet]:
        # No dataset: pictures generated from prior samples (or training identities without a
        # prior), one query and a few gallery pictures per identity, each with its own noise.
        require(self.model, "generator")
        keys, vectors = self.people
        n, per = len(keys), self.per_identity
        labels = np.arange(n)
        q_img = self.runner.generate(vectors, self.model.noise(n, seed=QUERY_SEED),
                                     lambda f, d: report(0.2 * f, d), "generated queries")
        g_lab = np.repeat(labels, per)
        g_img = self.runner.generate(vectors[g_lab], self.model.noise(n * per, seed=GALLERY_SEED),
                                     lambda f, d: report(0.2 + 0.8 * f, d), "generated gallery")
        query = PictureSet(q_img, labels, np.full(n, -1), [f"generated query {i}: {keys[i]}, "
                                                           f"noise seed {QUERY_SEED} #{i}"
                                                           for i in range(n)],
                           [f"{k} (generated)" for k in keys], generated=True)
        gallery = PictureSet(g_img, g_lab, np.full(n * per, -1),
                             [f"generated gallery {j}: {keys[g_lab[j]]}, noise seed {GALLERY_SEED} #{j}"
                              for j in range(n * per)],
                             [f"{keys[g_lab[j]]} (generated)" for j in range(n * per)], generated=True)
        return query, gallery

    def pictures(self, report: Report | None = None) -> tuple[PictureSet, PictureSet]:
        """(query, gallery): from --data, or generated (labelled as generated)."""
        return self.pictures_task.wait(report)

    # ----------------------------------------------------------------- features and index
    def _make_features(self, report: Report) -> np.ndarray:
        require(self.model, "img2id")
        if self.saved_gallery is not None:
            return self.saved_gallery.vectors
        _, gallery = self.pictures(lambda f, d: report(0.0, d))
        key = f"gallery-features-{digest(gallery.images.tobytes(), str(gallery.names))}.npz"
        cached = self.cache.load(key)
        if cached is not None and cached["features"].shape == (len(gallery), self.dim):
            return cached["features"]
        out = []
        n = len(gallery)
        for start in range(0, n, 64):
            report(start / n, f"encoding the gallery: {start}/{n} pictures")
            out.append(self.runner.compute(self.model.encode, gallery.images[start:start + 64]))
        features = np.concatenate(out)
        self.cache.save(key, features=features)
        return features

    def gallery_features(self, report: Report | None = None) -> np.ndarray:
        return self.features_task.wait(report)

    def gallery_index(self, report: Report | None = None) -> GalleryIndex:
        """The index every retrieval searches: the saved one, else one over the encoded gallery
        (exact at the sizes a dataset folder has), built once."""
        if self._search_index is None:
            features = self.gallery_features(report)
            _, gallery = self.pictures(report)
            self._search_index = self.model.index_vectors(features, gallery.labels,
                                                          gallery.camids, gallery.names)
        return self._search_index

    # ----------------------------------------------------------------- one picture
    def picture(self, index: int, upload: str | None = None, report: Report | None = None):
        """(picture uint8 (H, W, 3), label or None, camera or None, caption, name): an uploaded
        file, or the query picture at index."""
        if upload:
            name = os.path.basename(str(upload))
            try:
                img = load_image(upload, self.size, UPLOAD_MAX_PIXELS)
            except DataError as e:  # name the file as the user knows it, not the server's path
                raise DataError(str(e).replace(str(upload), name)) from None
            label = camid = None
            if self.real_gallery:
                try:
                    label, camid = parse_name(name)
                except DataError:
                    pass
            caption = f"upload ({name})" if label is None else f"upload pid {label:04d} · c{camid}"
            return img, label, camid, caption, name
        query, _ = self.pictures(report)
        index = int(index)
        if not 0 <= index < len(query):
            raise ValueError(f"query picture index must be within 0..{len(query) - 1}; got {index}")
        cam, label = int(query.camids[index]), int(query.labels[index])
        return (query.images[index], label if label >= 0 else None, cam if cam >= 0 else None,
                query.who[index], query.names[index])

    def gallery_picture(self, row: int) -> np.ndarray | None:
        """Gallery picture `row` if the pictures are ready, else None (never waits)."""
        if self.pictures_task.ready:
            return self.pictures_task.value[1].images[row]
        return None
