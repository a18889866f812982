"""Everything the explorer's panels share, built once at start from a model set and an
optional dataset.

At start (fast): the identity table, prior samples, pairwise identity distances and their
statistics, and the PCA of the identity space. In the background (with progress, waited for
by the panels that need it): the query and gallery pictures (read from ``--data``, or
generated from prior samples), the gallery's identity features, portraits of every identity,
and UMAP (only when asked for: ``import umap`` alone costs ~20 s). Results that are slow to
make are also kept on disk (``~/.cache/genreid/explorer/<model fingerprint>/``) so a restart
finds them again. Nothing here knows about Gradio.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from core.api import GenReID
from core.data import DataError, dataset_splits, load_image, load_split, parse_name
from core.files import atomic_write
from core.gallery_index import GalleryIndex
from core.identity_space import IdentitySpace
from core.metrics import euclidean_distances
from core.recognisability import load_diagnosis
from core.saved_gallery import load_gallery_index, picture_path

from . import zerogpu
from .real_pictures import RealPortraits

T = TypeVar("T")

PRIOR_SEED = 0  # the prior samples shown as "prior i"
PORTRAIT_SEED = 1501  # the fixed noise of generated portraits
QUERY_SEED, GALLERY_SEED = 101, 102  # noises of the generated query and gallery
SOURCE_TRAIN, SOURCE_PRIOR, SOURCE_GALLERY = "training identity", "prior sample", "gallery (encoded)"
# Uploads: Gradio refuses files over UPLOAD_MAX_BYTES; pictures over UPLOAD_MAX_PIXELS are
# refused from their header (a 30000x30000 PNG of a few kB would need 2.7 GB decoded).
UPLOAD_MAX_BYTES, UPLOAD_MAX_PIXELS = 10_000_000, 25_000_000
UPLOAD_LIMITS = (f"JPEG, PNG, WebP, BMP, TIFF or GIF; at most {UPLOAD_MAX_BYTES // 10**6} MB and "
                 f"{UPLOAD_MAX_PIXELS // 10**6} megapixels")
# Pictures per model-thread call: progress granularity, and other users' calls interleave
# between chunks. Larger batches generate faster (genreid bench: batch 64 1.6x batch 8 here).
CHUNK = 32
CACHE_VERSION = "2"  # 2: portraits drawn by the fast preview

Report = Callable[[float, str], None]  # report(fraction in [0, 1], description)


def shown(value, limit: int = 40) -> str:
    """repr of a user's value, cut short: a message must stay readable whatever was sent."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _quiet(fraction: float, desc: str) -> None:
    pass


class MissingPart(ValueError):
    """The model set lacks a network a panel needs."""


class NotReady(RuntimeError):
    """A background result is not available (it failed, or was not asked for)."""


# ----------------------------------------------------------------------------- helpers
_thread_kind = threading.local()  # .background: set in the threads of background Tasks


class Task:
    """A computation run once, in a background thread, started at start-up or on first demand.
    ``wait`` reports its progress while it runs and re-raises its error."""

    def __init__(self, name: str, fn: Callable[[Report], object]):
        self.name, self._fn = name, fn
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self.value: object = None
        self.error: BaseException | None = None
        self.fraction, self.desc = 0.0, name

    def start(self) -> Task:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"explorer-{self.name}",
                                                daemon=True)
                self._thread.start()
        return self

    def _run(self) -> None:
        _thread_kind.background = True  # its network calls stay on this process's CPU model
        try:
            self.value = self._fn(self._report)
        except BaseException as e:  # kept and re-raised in the waiting request
            self.error = e
        finally:
            self.fraction = 1.0
            self._finished.set()

    def _report(self, fraction: float, desc: str) -> None:
        self.fraction, self.desc = float(min(max(fraction, 0.0), 1.0)), desc

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, report: Report | None = None, timeout: float | None = None):
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished.wait(0.2):
            if report is not None:
                report(self.fraction, self.desc)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} is still running ({self.fraction:.0%})")
        if self.error is not None:
            raise self.error
        return self.value


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


@dataclass
class Points:
    """The points of the identity-space projection."""

    keys: list[str]
    sources: list[str]
    vectors: np.ndarray  # (N, D)
    cameras: list[str]


def umap_embedding(x: np.ndarray, seed: int = 0, report: Report = _quiet) -> np.ndarray:
    """2-D UMAP of x. Imports umap-learn here, never at start-up (the import alone takes ~20 s)."""
    report(0.05, "UMAP: importing umap-learn (about 20 s the first time)")
    if "NUMBA_CACHE_DIR" not in os.environ:  # numba needs a writable cache (read-only installs)
        os.environ["NUMBA_CACHE_DIR"] = str(default_cache_root() / "numba")
    import umap  # noqa: PLC0415 (deliberately lazy)

    report(0.5, f"UMAP: fitting {len(x)} points (about 20-40 s the first time)")
    n = len(x)
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 points; the identity space has {n}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), min_dist=0.1,
                            random_state=seed, init="spectral" if n > 16 else "random")
        return np.asarray(reducer.fit_transform(np.asarray(x, dtype=np.float32)), dtype=np.float64)


# ----------------------------------------------------------------------------- the state
class ExplorerState:
    """Caches over one GenReID model set (and optionally a dataset in the Market-1501 layout)."""

    def __init__(self, model: GenReID, data: str | os.PathLike | None = None, *,
                 num_prior: int = 64, generated_identities: int = 8, generated_per_identity: int = 4,
                 projection_gallery_limit: int = 1000, cache_dir: str | os.PathLike | None | bool = True,
                 background: bool = True, gallery: str | os.PathLike | None = "auto",
                 remote: Callable[..., object] | None = None, set_portraits: bool = True):
        self.model = model
        # ZeroGPU (explorer.zerogpu): remote(method, *args) runs a request's call on a lent GPU.
        self.remote = remote
        # Every network call runs on this one thread, one call at a time. One thread, because
        # each thread that calls PyTorch gets its own OpenMP team, and idle teams spin: served
        # from Gradio's changing worker threads the same grid took up to 1.6x longer (measured).
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genreid-model")
        self.size = model.image_size
        self.dim = model.id_dim
        self.folder = Path(model.folder)
        self.pids = np.asarray(model.pids, dtype=np.int64)
        self.table = model.table_identities(np.arange(model.num_identities))  # (N, D)
        self.train_keys = [f"pid {p}" for p in self.pids]
        self.prior = (model.sample_identities(num_prior, seed=PRIOR_SEED) if model.has("prior")
                      else np.zeros((0, self.dim), np.float32))
        self.prior_keys = [f"prior {i}" for i in range(len(self.prior))]
        self.portrait_noise = model.noise(1, seed=PORTRAIT_SEED)
        self.generated_identities = generated_identities
        self.generated_per_identity = generated_per_identity
        self.projection_gallery_limit = projection_gallery_limit

        # Identity space: spreads and principal directions of the training identities, and all
        # their pairwise distances, computed once.
        self.space = IdentitySpace(self.table)
        self.distances = euclidean_distances(self.table, self.table)
        self._pair_statistics()

        # Disk cache, per model set (its manifest names every weight file by SHA-256).
        manifest = self.folder / "manifest.json"
        self.fingerprint = digest(CACHE_VERSION, manifest.read_bytes() if manifest.is_file() else b"")
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

        self._portraits: dict[str, np.ndarray] = {}
        self._thumbs: dict[str, str] = {}
        cached = self.cache.load(f"portraits-{PORTRAIT_SEED}.npz")
        if cached is not None and "keys" in cached:
            for k, img in zip(cached["keys"].tolist(), cached["images"], strict=True):
                self._portraits[str(k)] = img
        self._projections: dict[tuple, tuple[np.ndarray, str]] = {}
        self._umap_tasks: dict[str, Task] = {}
        self._sweep_ranks: dict[tuple, np.ndarray] = {}
        self._files_dir = Path(tempfile.mkdtemp(prefix="genreid-explorer-"))
        self._files_lock = threading.Lock()
        atexit.register(shutil.rmtree, self._files_dir, True)

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
        self._search_index: GalleryIndex | None = self.saved_gallery

        self.pictures_task = Task("query and gallery pictures", self._make_pictures)
        self.features_task = Task("gallery features", self._make_features)
        self.portraits_task = Task("portraits", self._fill_portraits)
        self._warmup: threading.Thread | None = None
        if background:
            self.start_background()

    def compute(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """fn(*args, **kwargs) on the model thread (queued behind other users' calls); with
        `remote` (ZeroGPU), a request's call of a model method runs there instead."""
        if self.remote is not None and not getattr(_thread_kind, "background", False):
            name = getattr(fn, "__name__", "")
            if getattr(fn, "__self__", None) is self.model and name in zerogpu.METHODS:
                return self.remote(name, *args, **kwargs)
        return self._model_thread.submit(fn, *args, **kwargs).result()

    # ----------------------------------------------------------------- description
    def has(self, part: str) -> bool:
        return self.model.has(part)

    def missing(self, *parts: str) -> str | None:
        """A message naming the networks this model set lacks among parts, or None."""
        lacking = [p for p in parts if not self.model.has(p)]
        if not lacking:
            return None
        commands = "; ".join(f"`genreid train {p} --checkpoint {self.folder}`" for p in lacking)
        return (f"This panel needs the {' and '.join(lacking)} network{'s' if len(lacking) > 1 else ''}, "
                f"which the model set {self.folder} does not have yet. Train "
                f"{'them' if len(lacking) > 1 else 'it'} with {commands}, then restart the explorer.")

    def require(self, *parts: str) -> None:
        message = self.missing(*parts)
        if message:
            raise MissingPart(message)

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

    def _pair_statistics(self) -> None:
        n = len(self.table)
        iu = np.triu_indices(n, k=1)
        self.pair_distances = self.distances[iu]  # every pair once
        if len(self.pair_distances):
            lo, hi = int(np.argmin(self.pair_distances)), int(np.argmax(self.pair_distances))
            self.closest = (int(iu[0][lo]), int(iu[1][lo]), float(self.pair_distances[lo]))
            self.farthest = (int(iu[0][hi]), int(iu[1][hi]), float(self.pair_distances[hi]))
        else:
            self.closest = self.farthest = None

    # ----------------------------------------------------------------- generation
    def generate(self, identities: np.ndarray, noises: np.ndarray, report: Report | None = None,
                 desc: str = "generating", preview: bool = False) -> np.ndarray:
        """GEN(identities, noises) in chunks on the model thread, reporting progress.
        preview=True takes the model's fast path (GenReID.generate)."""
        identities = np.asarray(identities, np.float32)
        noises = np.asarray(noises, np.float32)
        report = report or _quiet
        out = []
        n = len(identities)
        for start in range(0, n, CHUNK):
            report(start / max(n, 1), f"{desc}: {start}/{n} pictures")
            out.append(self.compute(self.model.generate, identities[start:start + CHUNK],
                                    noises[start:start + CHUNK], preview=preview))
        report(1.0, f"{desc}: {n}/{n} pictures")
        h, w = self.size
        return np.concatenate(out) if out else np.zeros((0, h, w, 3), np.uint8)

    def noise(self, n: int, seed: int) -> np.ndarray:
        return self.model.noise(n, seed=seed)

    # ----------------------------------------------------------------- portraits
    def portrait_ready(self, key: str) -> np.ndarray | None:
        """The portrait of a canonical key if it costs no generation, else None."""
        if key.startswith("pid ") and self.real_portraits:
            return self.real.picture(int(key[4:]))
        if key in self._portraits:
            return self._portraits[key]
        if key.startswith("gallery ") and self.pictures_task.done and not self.pictures_task.error:
            return self.pictures_task.value[1].images[int(key[8:])]
        return None

    def portraits(self, keys: list[str], report: Report | None = None) -> list[np.ndarray]:
        """Portraits of canonical keys: the real training picture with --data, else generated
        with one fixed noise; generated ones are memoised (and kept on disk)."""
        out: dict[str, np.ndarray] = {}
        todo = []
        for k in keys:
            if k.startswith("gallery "):  # a gallery picture is its own portrait
                out[k] = self.pictures(report)[1].images[int(k[8:])]
                continue
            img = self.portrait_ready(k)
            if img is None:
                todo.append(k)
            else:
                out[k] = img
        todo = list(dict.fromkeys(todo))
        if todo:
            self.require("generator")
            vectors = np.stack([self.resolve(k)[1] for k in todo])
            # The fast preview: a thumbnail-sized portrait of every identity at first start costs
            # a third of the full sampler's CPU, and looks the same at that size.
            images = self.generate(vectors, np.repeat(self.portrait_noise, len(todo), 0), report,
                                   "portraits", preview=True)
            for k, img in zip(todo, images, strict=True):
                self._portraits[k] = out[k] = img
        return [out[k] for k in keys]

    def thumbnail(self, key: str) -> str:
        """Inline JPEG of a key's portrait if it is ready, else ''."""
        from .render import thumbnail_uri

        if key not in self._thumbs:
            img = self.portrait_ready(key)
            if img is None:
                return ""
            self._thumbs[key] = thumbnail_uri(img)
        return self._thumbs[key]

    def _save_portraits(self) -> None:
        generated = sorted(k for k in list(self._portraits)
                           if not (k.startswith("pid ") and self.real_portraits))
        if generated:
            self.cache.save(f"portraits-{PORTRAIT_SEED}.npz", keys=np.array(generated),
                            images=np.stack([self._portraits[k] for k in generated]))

    def _fill_portraits(self, report: Report) -> int:
        keys = [k for k in (self.prior_keys if self.real_portraits else self.identity_keys)
                if k not in self._portraits]
        for n, start in enumerate(range(0, len(keys), CHUNK)):
            report(start / max(len(keys), 1), f"portraits {start}/{len(keys)}")
            self.portraits(keys[start:start + CHUNK])
            if n % 16 == 15:  # kept on disk as it goes: a restart picks up from here
                self._save_portraits()
        if keys:
            self._save_portraits()
        return len(keys)

    def output_dir(self, name: str, keep_s: float = 3600.0) -> Path:
        """A fresh folder for one request's downloads (Gradio copies what it returns to its own
        cache; folders older than keep_s are removed, all of them at exit)."""
        now = time.time()
        for old in self._files_dir.glob("call-*"):
            try:
                if now - old.stat().st_mtime > keep_s:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        return Path(tempfile.mkdtemp(prefix=f"call-{name}-", dir=self._files_dir))

    def shared_file(self, name: str, write: Callable[[Path], None]) -> str:
        """A download file that never changes (e.g. all pairwise distances), written once."""
        with self._files_lock:
            path = self._files_dir / name
            if not path.is_file():
                write(path)
            return str(path)

    # ----------------------------------------------------------------- query and gallery
    def _make_pictures(self, report: Report) -> tuple[PictureSet, PictureSet]:
        def who(pids, camids) -> list[str]:
            return [f"pid {p:04d} · c{c}" for p, c in zip(pids.tolist(), camids.tolist(), strict=True)]

        def real(split) -> PictureSet:
            return PictureSet(split.images, split.pids, split.camids, list(split.names),
                              who(split.pids, split.camids), generated=False)

        if self.saved_gallery is not None:
            index = self.saved_gallery
            gallery = PictureSet(IndexedPictures(index, self.size), index.pids, index.camids,
                                 index.names, who(index.pids, index.camids), generated=False)
            if self.data is not None:
                report(0.0, "reading the query pictures")
                return real(load_split(self.splits["query"], self.size)), gallery
            query, _ = self._generated_pictures(report)
            query.labels = np.full(len(query), -1)  # generated people are not in a real gallery
            return query, gallery
        if self.data is not None:
            report(0.0, "reading the query pictures")
            q = load_split(self.splits["query"], self.size)
            report(0.3, "reading the gallery pictures")
            g = load_split(self.splits["gallery"], self.size)
            report(1.0, "pictures read")
            return real(q), real(g)
        return self._generated_pictures(report)

    def _generated_pictures(self, report: Report) -> tuple[PictureSet, PictureSet]:
        # No dataset: pictures generated from prior samples (or training identities without a
        # prior), one query and a few gallery pictures per identity, each with its own noise.
        self.require("generator")
        if len(self.prior):
            keys = self.prior_keys[: self.generated_identities]
        else:
            keys = self.train_keys[: self.generated_identities]
        vectors = np.stack([self.resolve(k)[1] for k in keys])
        n, per = len(keys), self.generated_per_identity
        labels = np.arange(n)
        q_img = self.generate(vectors, self.noise(n, QUERY_SEED),
                              lambda f, d: report(0.2 * f, d), "generated queries")
        g_lab = np.repeat(labels, per)
        g_img = self.generate(vectors[g_lab], self.noise(n * per, GALLERY_SEED),
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

    def _make_features(self, report: Report) -> np.ndarray:
        self.require("img2id")
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
            out.append(self.compute(self.model.encode, gallery.images[start:start + 64]))
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

    # ----------------------------------------------------------------- projection
    def points(self) -> Points:
        """Training identities, prior samples and (with --data, once encoded) the gallery."""
        keys = list(self.train_keys) + list(self.prior_keys)
        sources = [SOURCE_TRAIN] * len(self.train_keys) + [SOURCE_PRIOR] * len(self.prior_keys)
        vectors = [self.table, self.prior]
        if self.real_portraits:
            cameras = [f"camera {self.real.camera(p)}" for p in self.pids]
        else:
            cameras = ["unknown"] * len(self.train_keys)
        cameras += ["unknown"] * len(self.prior_keys)
        if self.real_gallery and self.features_task.done and not self.features_task.error:
            features = self.features_task.value
            _, gallery = self.pictures_task.value
            n = len(features)
            take = np.arange(n)
            if n > self.projection_gallery_limit:
                take = np.sort(np.random.default_rng(0).choice(n, self.projection_gallery_limit,
                                                               replace=False))
            keys += [f"gallery {j}" for j in take]
            sources += [SOURCE_GALLERY] * len(take)
            vectors.append(features[take])
            cameras += [f"camera {gallery.camids[j]}" for j in take]
        return Points(keys, sources, np.concatenate(vectors).astype(np.float64), cameras)

    def projection(self, method: str, points: Points, report: Report | None = None,
                   compute: bool = True) -> tuple[np.ndarray, str]:
        """(2-D coordinates of points, a note), computed once per method and point set;
        with compute=False, only what is already computed (else NotReady)."""
        method = method.lower()
        key = (method, len(points.keys), points.keys[-1] if points.keys else "")
        if key in self._projections:
            return self._projections[key]
        if not compute and method != "pca":
            raise NotReady(f"the {method.upper()} projection of these points is not computed yet: "
                           "press Show")
        if method == "pca":
            coords = self.space.coordinates(points.vectors, 2)
            ratio = np.pad(self.space.explained[:2], (0, 2))
            note = (f"PCA of the training identities: the two axes explain {ratio[0]:.0%} and "
                    f"{ratio[1]:.0%} of their variance")
        elif method == "umap":
            name = f"umap-{digest(points.vectors.astype(np.float32).tobytes())}.npz"
            cached = self.cache.load(name)
            if cached is not None and cached["coords"].shape == (len(points.keys), 2):
                coords = cached["coords"]
            else:
                task = self._umap_tasks.get(name)
                if task is None:
                    vectors = points.vectors

                    def fit(rep: Report) -> np.ndarray:
                        out = umap_embedding(vectors, report=rep)
                        self.cache.save(name, coords=out)
                        return out
                    task = self._umap_tasks.setdefault(name, Task("UMAP", fit))
                coords = task.wait(report)
            note = "UMAP of the identity space (15 neighbours, min_dist 0.1, seed 0)"
        else:
            raise ValueError(f"projection method must be 'PCA' or 'UMAP', not {shown(method)}")
        self._projections[key] = (np.asarray(coords, np.float64), note)
        return self._projections[key]

    def colour_values(self, points: Points, by: str) -> tuple[str, list | np.ndarray]:
        """('categorical', labels) or ('continuous', values) of the points for a colour choice."""
        if by == "source":
            return "categorical", points.sources
        if by == "camera":
            return "categorical", points.cameras
        if by == "identity norm":
            return "continuous", np.linalg.norm(points.vectors, axis=1)
        if by == "nearest-identity distance":
            d = euclidean_distances(points.vectors, self.table)
            n = len(self.train_keys)
            if n > 1:
                d[np.arange(n), np.arange(n)] = np.inf  # a training identity is not its own neighbour
            return "continuous", d.min(1) if d.shape[1] else np.zeros(len(points.keys))
        m = re.fullmatch(r"z(\d+)", by)
        if m and int(m.group(1)) < self.dim:
            return "continuous", points.vectors[:, int(m.group(1))]
        raise ValueError(f"cannot colour by {shown(by)}")

    def colour_choices(self) -> list[str]:
        return (["source", "camera", "identity norm", "nearest-identity distance"]
                + [f"z{i}" for i in range(self.dim)])

    # ----------------------------------------------------------------- sweep ranking
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


def load_state(checkpoint, data=None, device: str = "auto", **kw) -> ExplorerState:
    """Load the model set and build the explorer's state (kw: ExplorerState's options, e.g.
    gallery=DIR for a saved gallery index). On ZeroGPU hardware the model stays on the CPU
    and requests' network calls go to a GPU copy (explorer.zerogpu)."""
    if zerogpu.available() and "remote" not in kw:
        kw["remote"] = zerogpu.setup(checkpoint)
        device = "cpu"
    model = GenReID.load(checkpoint, device=device)
    return ExplorerState(model, data, **kw)
