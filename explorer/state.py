"""Everything the explorer's panels share, built once at start from a model set and an
optional dataset: `ExplorerState` puts the parts together and resolves identity keys.

At start (fast): the identity table, prior samples and the identity space (core.identity_space:
spreads, principal directions, pairwise distances). In the background (with progress, waited
for by the panels that need it): the query and gallery pictures and the gallery's features
(explorer.pictures), portraits of every identity (explorer.portraits), and UMAP only when asked
for (explorer.projections). Network calls run on one model thread (explorer.tasks); slow
results are also kept on disk (explorer.cache). Nothing here knows about Gradio.
"""
from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from core.api import GenReID
from core.data import dataset_splits
from core.gallery_index import GalleryIndex
from core.identity_space import IdentitySpace
from core.recognisability import load_diagnosis
from core.saved_gallery import load_gallery_index

from . import messages, zerogpu
from .cache import DiskCache, Downloads, default_cache_root, model_fingerprint
from .messages import MissingPart, shown
from .pictures import PictureSet, QueryAndGallery
from .portraits import Portraits
from .projections import Points, Projections
from .real_pictures import RealPortraits
from .tasks import ModelThread, Report

T = TypeVar("T")

PRIOR_SEED = 0  # the prior samples shown as "prior i"


class ExplorerState:
    """Caches over one GenReID model set (and optionally a dataset in the Market-1501 layout)."""

    def __init__(self, model: GenReID, data: str | os.PathLike | None = None, *,
                 num_prior: int = 64, generated_identities: int = 8, generated_per_identity: int = 4,
                 projection_gallery_limit: int = 1000, cache_dir: str | os.PathLike | None | bool = True,
                 background: bool = True, gallery: str | os.PathLike | None = "auto",
                 remote: Callable[..., object] | None = None, set_portraits: bool = True):
        self.model = model
        self.remote = remote  # ZeroGPU (explorer.zerogpu): runs a request's call on a lent GPU
        self.runner = ModelThread(model, remote)
        self.size = model.image_size
        self.dim = model.id_dim
        self.folder = Path(model.folder)
        self.pids = np.asarray(model.pids, dtype=np.int64)
        self.table = model.table_identities(np.arange(model.num_identities))  # (N, D)
        self.train_keys = [f"pid {p}" for p in self.pids]
        self.prior = (model.sample_identities(num_prior, seed=PRIOR_SEED) if model.has("prior")
                      else np.zeros((0, self.dim), np.float32))
        self.prior_keys = [f"prior {i}" for i in range(len(self.prior))]
        self.generated_identities = generated_identities
        self.generated_per_identity = generated_per_identity
        self.projection_gallery_limit = projection_gallery_limit

        # Identity space: spreads and principal directions of the training identities, and all
        # their pairwise distances, computed once.
        self.space = IdentitySpace(self.table)
        self.distances = self.space.pairwise_distances()
        self.pair_distances, self.closest, self.farthest = self.space.pairs()

        # Disk cache, per model set (explorer.cache).
        self.fingerprint = model_fingerprint(self.folder)
        if cache_dir is True:
            cache_dir = default_cache_root()
        self.cache = DiskCache(Path(cache_dir) / self.fingerprint if cache_dir else None)

        # The dataset (optional).
        self.data = Path(data) if data else None
        self.splits: dict[str, str] = {}
        if self.data is not None:
            self.splits = dataset_splits(self.data, required=("query", "gallery"))
        # The set's own measure of how far its pictures follow their person (if it has one).
        self.diagnosis = load_diagnosis(self.folder)
        # Real pictures of the training persons: --data's training split, else the split the
        # set was trained on (if it is still on disk); each only if it holds the set's persons.
        self.real = RealPortraits(self.pids, self.size, train_folder=self.splits.get("train"),
                                  set_folder=self.folder if set_portraits and self.data is None else None)
        self.downloads = Downloads()  # the folders of requests' downloads

        # A saved gallery index (`genreid index`): its vectors instead of encoding the gallery.
        # "auto" takes <checkpoint>/gallery when it is there and belongs to this set.
        self.saved_gallery: GalleryIndex | None = None
        if gallery == "auto":
            candidate = self.folder / "gallery"
            if (candidate / "meta.json").is_file() and model.has("img2id"):
                try:
                    self.saved_gallery = load_gallery_index(candidate, model)
                except ValueError as e:
                    warnings.warn(f"ignored {candidate.name}/: {e}", stacklevel=2)
        elif gallery:
            self.require("img2id")
            self.saved_gallery = load_gallery_index(gallery, model)

        # Without a dataset, the query and gallery show prior samples (or training identities
        # without a prior), generated.
        people = (self.prior_keys, self.prior) if len(self.prior) else (self.train_keys, self.table)
        self.query_gallery = QueryAndGallery(
            model, self.runner, self.cache, splits=self.splits, saved_gallery=self.saved_gallery,
            people=(people[0][:generated_identities], people[1][:generated_identities]),
            per_identity=generated_per_identity)
        self.portrait_store = Portraits(
            model, self.runner, self.cache, self.real, self.query_gallery, self.resolve,
            lambda: self.prior_keys if self.real_portraits else self.identity_keys)
        self.portrait_noise = self.portrait_store.noise
        self.projections = Projections(
            self.space, self.cache, self.query_gallery, (self.train_keys, self.table),
            (self.prior_keys, self.prior), self.pids, self.real.camera if self.real else None,
            projection_gallery_limit)
        self._sweep_ranks: dict[tuple, np.ndarray] = {}

        self.pictures_task = self.query_gallery.pictures_task
        self.features_task = self.query_gallery.features_task
        self.portraits_task = self.portrait_store.task
        self._warmup: threading.Thread | None = None
        if background:
            self.start_background()

    def compute(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """fn(*args, **kwargs) on the model thread (queued behind other users' calls); with
        `remote` (ZeroGPU), a request's call of a model method runs there instead."""
        return self.runner.compute(fn, *args, **kwargs)

    # ----------------------------------------------------------------- description
    def has(self, part: str) -> bool:
        return self.model.has(part)

    def missing(self, *parts: str) -> str | None:
        """A message naming the networks this model set lacks among parts, or None."""
        return messages.missing(self.model, *parts)

    def require(self, *parts: str) -> None:
        messages.require(self.model, *parts)

    @property
    def real_data(self) -> bool:
        return self.data is not None

    @property
    def real_gallery(self) -> bool:
        """Whether the gallery holds real pictures (from --data or a saved gallery index)."""
        return self.data is not None or self.saved_gallery is not None

    @property
    def real_portraits(self) -> bool:
        return bool(self.real)

    def real_picture(self, key: str) -> np.ndarray | None:
        """The real picture behind a canonical key: a training person's crop, or the gallery
        picture itself; None for prior samples and typed vectors."""
        if key.startswith("pid "):
            return self.real.picture(int(key[4:]))
        if key.startswith("gallery ") and self.real_gallery:
            return self.portrait_ready(key)
        return None

    @property
    def identity_keys(self) -> list[str]:
        return self.train_keys + self.prior_keys

    # ----------------------------------------------------------------- identities
    _KEY = re.compile(r"^\s*(?:(pid|prior|gallery|row)\s*#?\s*)?(-?\d+)\s*$", re.IGNORECASE)

    def resolve(self, key) -> tuple[str, np.ndarray]:
        """(canonical key, identity vector (D,)) of 'pid 2' (or just '2'), 'row 0', 'prior 3'
        or 'gallery 12' (the encoded gallery picture)."""
        m = self._KEY.match(str(key))
        if m is None:
            raise ValueError(f"unknown identity {shown(key)}: use 'pid 2' (a training person id), "
                             "'row 0' (an identity-table row), 'prior 3' (a prior sample) or "
                             "'gallery 12' (an encoded gallery picture)")
        kind, n = (m.group(1) or "pid").lower(), int(m.group(2))
        if kind == "pid":
            row = self.model.row_of_pid(n)
            return f"pid {n}", self.table[row]
        if kind == "row":
            if not 0 <= n < len(self.table):
                raise ValueError(f"identity rows are 0..{len(self.table) - 1}; got {n}")
            return f"pid {self.pids[n]}", self.table[n]
        if kind == "prior":
            if not len(self.prior):
                raise MissingPart(self.missing("prior") or "no prior samples")
            if not 0 <= n < len(self.prior):
                raise ValueError(f"prior samples are 0..{len(self.prior) - 1}; got {n}")
            return f"prior {n}", self.prior[n]
        features = self.gallery_features()
        if not 0 <= n < len(features):
            raise ValueError(f"gallery pictures are 0..{len(features) - 1}; got {n}")
        return f"gallery {n}", features[n]

    def row_of(self, key: str) -> int | None:
        """Identity-table row of a canonical training key, else None."""
        if key.startswith("pid "):
            return self.model.row_of_pid(int(key[4:]))
        return None

    def nearest_training(self, vector: np.ndarray, k: int, exclude: int | None = None):
        """(rows, distances) of the k training identities nearest to vector."""
        return self.space.nearest(vector, k, exclude)

    # ----------------------------------------------------------------- generation
    def generate(self, identities: np.ndarray, noises: np.ndarray, report: Report | None = None,
                 desc: str = "generating", preview: bool = False) -> np.ndarray:
        """GEN(identities, noises) in chunks on the model thread, reporting progress.
        preview=True takes the model's fast path (GenReID.generate)."""
        return self.runner.generate(identities, noises, report, desc, preview)

    def noise(self, n: int, seed: int) -> np.ndarray:
        return self.model.noise(n, seed=seed)

    def sweep_ranking(self, vector: np.ndarray, noise_seed: int, lows: np.ndarray, highs: np.ndarray,
                      report: Report | None = None, preview: bool = False) -> np.ndarray:
        """Mean |pixel change| in [0, 1] between coordinate c set to lows[c] and to highs[c], for
        every coordinate (2 * D pictures; memoised)."""
        v = np.asarray(vector, np.float32)
        lows, highs = np.asarray(lows, np.float32), np.asarray(highs, np.float32)
        key = (v.tobytes(), int(noise_seed), lows.tobytes(), highs.tobytes(), bool(preview))
        if key not in self._sweep_ranks:
            ends = np.repeat(v[None], 2 * self.dim, 0)
            for c in range(self.dim):
                ends[2 * c, c], ends[2 * c + 1, c] = lows[c], highs[c]
            images = self.generate(ends, np.repeat(self.noise(1, noise_seed), len(ends), 0), report,
                                   "ranking every coordinate", preview).astype(np.float32)
            change = np.abs(images[0::2] - images[1::2]).mean((1, 2, 3)) / 255.0
            self._sweep_ranks[key] = change
        return self._sweep_ranks[key]

    # ----------------------------------------------------------------- the parts, delegated
    def pictures(self, report: Report | None = None) -> tuple[PictureSet, PictureSet]:
        """(query, gallery): from --data, or generated (labelled as generated)."""
        return self.query_gallery.pictures(report)

    def gallery_features(self, report: Report | None = None) -> np.ndarray:
        return self.query_gallery.gallery_features(report)

    def gallery_index(self, report: Report | None = None) -> GalleryIndex:
        return self.query_gallery.gallery_index(report)

    def picture(self, index: int, upload: str | None = None, report: Report | None = None):
        return self.query_gallery.picture(index, upload, report)

    def portrait_ready(self, key: str) -> np.ndarray | None:
        return self.portrait_store.ready(key)

    def portraits(self, keys: list[str], report: Report | None = None) -> list[np.ndarray]:
        return self.portrait_store.get(keys, report)

    def thumbnail(self, key: str) -> str:
        return self.portrait_store.thumbnail(key)

    def points(self) -> Points:
        return self.projections.points()

    def projection(self, method: str, points: Points, report: Report | None = None,
                   compute: bool = True) -> tuple[np.ndarray, str]:
        return self.projections.projection(method, points, report, compute)

    def colour_values(self, points: Points, by: str) -> tuple[str, list | np.ndarray]:
        return self.projections.colour_values(points, by)

    def colour_choices(self) -> list[str]:
        return self.projections.colour_choices()

    def output_dir(self, name: str, keep_s: float = 3600.0) -> Path:
        return self.downloads.output_dir(name, keep_s)

    def shared_file(self, name: str, write: Callable[[Path], None]) -> str:
        return self.downloads.shared_file(name, write)

    # ----------------------------------------------------------------- background work
    def start_background(self) -> None:
        """Warm the caches in one background thread: pictures, gallery features, portraits."""
        if self._warmup is not None:
            return
        tasks = []
        if self.real_data or (self.has("img2id") and self.has("generator")):
            tasks.append(self.pictures_task)
        if self.has("img2id"):
            tasks.append(self.features_task)
        tasks.append(self.portraits_task)

        def run():
            for t in tasks:
                try:
                    t.wait()
                except Exception:
                    pass  # the error is kept in the task and shown to the panel that needs it
        self._warmup = threading.Thread(target=run, name="explorer-warmup", daemon=True)
        self._warmup.start()

    def wait_background(self) -> None:
        """Block until the start-up work (pictures, gallery features, portraits) is finished."""
        if self._warmup is not None:
            self._warmup.join()

    def background_status(self) -> str:
        parts = []
        for t in (self.pictures_task, self.features_task, self.portraits_task):
            if t.done:
                parts.append(f"{t.name}: {'failed (' + str(t.error) + ')' if t.error else 'ready'}")
            elif t.started:
                parts.append(f"{t.name}: {t.fraction:.0%}")
        return "; ".join(parts)


def load_state(checkpoint, data=None, device: str = "auto", **kw) -> ExplorerState:
    """Load the model set and build the explorer's state (kw: ExplorerState's options, e.g.
    gallery=DIR for a saved gallery index). On ZeroGPU hardware the model stays on the CPU
    and requests' network calls go to a GPU copy (explorer.zerogpu)."""
    if zerogpu.available() and "remote" not in kw:
        kw["remote"] = zerogpu.setup(checkpoint)
        device = "cpu"
    model = GenReID.load(checkpoint, device=device)
    return ExplorerState(model, data, **kw)
