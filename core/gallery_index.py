"""One gallery index for every retrieval: `genreid eval`, the explorer and the Python API.

    index = GalleryIndex.build(vectors, pids, camids, names)     # kind "auto"
    distances, rows = index.search(queries, k=10)                # (Q, k) each, nearest first
    index.save("checkpoints/default/gallery"); GalleryIndex.load(...)

Kinds:
- "exact": NumPy, float64 Euclidean distances to every vector (what the metrics have always
  used). The default up to EXACT_LIMIT vectors.
- "flat": FAISS IndexFlatL2, exact too (float32), on every GPU FAISS sees when it has any.
- "hnsw": FAISS HNSW graph, approximate; the default beyond EXACT_LIMIT. Its recall@10
  against exact search is measured when it is built and kept with it (`recall_at_10`).

Metrics: "euclidean" (the paper's) or "cosine" (vectors and queries scaled to unit length;
the set's `img2id.metric` chooses for its retrievals).

A saved index is a folder: vectors, person ids and cameras (safetensors), the source file
names (one per line), meta.json (kind, parameters, recall, what it was encoded with) and the
FAISS structure where there is one; written to a temporary folder and renamed into place, so
a killed write never leaves half an index.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from .config import METRICS
from .files import atomic_write
from .metrics import euclidean_distances

KINDS = ("auto", "exact", "flat", "hnsw")
EXACT_LIMIT = 100_000  # exact NumPy search answers a query in a few ms up to here (2 cores)
# The saved folders' format name, from this module's old name (core/index.py); unchanged so that
# indexes saved before the rename still load.
FORMAT = "core.index/1"


class GalleryIndexError(ValueError):
    """A gallery index that cannot be built, read or searched; the message says why."""


def _faiss():
    try:
        import faiss
    except ImportError:
        raise GalleryIndexError("FAISS is not installed: pip install faiss-cpu (or faiss-gpu), "
                                "or use --index exact") from None
    return faiss


def pick_kind(kind: str, n: int) -> str:
    if kind not in KINDS:
        raise GalleryIndexError(f"index kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind != "auto":
        return kind
    return "exact" if n <= EXACT_LIMIT else "hnsw"


@dataclass
class HNSWParams:
    m: int = 32  # graph degree
    ef_construction: int = 80
    ef_search: int = 256  # measured on 100,000 random 32-d vectors: recall@10 0.996, p95 0.7 ms


@dataclass
class GalleryIndex:
    vectors: np.ndarray  # (N, D) float32
    pids: np.ndarray  # (N,) int64, -1 where unknown
    camids: np.ndarray  # (N,) int64, -1 where unknown
    names: list[str]  # source file of each vector
    kind: str = "exact"
    hnsw: HNSWParams = field(default_factory=HNSWParams)
    recall_at_10: float = 1.0
    meta: dict = field(default_factory=dict)  # what it was made from (model set, data)
    build_s: float = 0.0
    # "cosine": vectors and queries are scaled to unit length first, so that Euclidean
    # distances rank as cosine similarity does (distance = sqrt(2 - 2 cos)).
    metric: str = "euclidean"
    _structure: object = None  # FAISS's index, or for "exact" the float64 vectors and their norms

    # ----------------------------------------------------------------- build
    @classmethod
    def build(cls, vectors, pids=None, camids=None, names=None, kind: str = "auto",
              hnsw: HNSWParams | None = None, meta: dict | None = None,
              recall_queries: int = 256, metric: str = "euclidean") -> GalleryIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or not len(vectors):
            raise GalleryIndexError(f"a gallery needs vectors of shape (N, D), N > 0; got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise GalleryIndexError("gallery vectors contain NaN or infinite values")
        n = len(vectors)
        pids = np.full(n, -1, np.int64) if pids is None else np.asarray(pids, np.int64)
        camids = np.full(n, -1, np.int64) if camids is None else np.asarray(camids, np.int64)
        names = [f"#{i}" for i in range(n)] if names is None else [str(s) for s in names]
        if not len(pids) == len(camids) == len(names) == n:
            raise GalleryIndexError(f"{n} vectors but {len(pids)} person ids, {len(camids)} "
                                    f"cameras and {len(names)} names")
        index = cls(scaled(vectors, metric), pids, camids, names, pick_kind(kind, n),
                    hnsw or HNSWParams(), meta=dict(meta or {}), metric=metric)
        start = time.perf_counter()
        index._make_structure()
        index.build_s = time.perf_counter() - start
        if index.kind == "hnsw":
            index.recall_at_10 = index.measure_recall(recall_queries)
        return index

    def _make_structure(self) -> None:
        if self.kind == "exact":  # float64 as the metrics compute, converted once
            g = self.vectors.astype(np.float64)
            self._structure = (g, np.einsum("ij,ij->i", g, g))
            return
        faiss = _faiss()
        d = self.vectors.shape[1]
        if self.kind == "flat":
            index = faiss.IndexFlatL2(d)
            if getattr(faiss, "get_num_gpus", lambda: 0)() > 0:
                index = faiss.index_cpu_to_all_gpus(index)
            index.add(self.vectors)
        else:
            index = faiss.IndexHNSWFlat(d, self.hnsw.m)
            index.hnsw.efConstruction = self.hnsw.ef_construction
            index.add(self.vectors)
            index.hnsw.efSearch = self.hnsw.ef_search
        self._structure = index

    # ----------------------------------------------------------------- search
    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def exact(self) -> bool:
        return self.kind in ("exact", "flat")

    def search(self, queries, k: int | None = 10) -> tuple[np.ndarray, np.ndarray]:
        """(distances, rows), each (Q, k), nearest first; k=None ranks the whole gallery (exact
        kinds only). Euclidean distances, as the paper ranks (between unit vectors for the
        cosine metric)."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise GalleryIndexError(f"queries must have shape (Q, {self.dim}); got {q.shape}")
        if not np.isfinite(q).all():
            raise GalleryIndexError("queries contain NaN or infinite values")
        q = scaled(q, self.metric)
        if k is None:
            if not self.exact:
                raise GalleryIndexError("an approximate (hnsw) index returns the top k, not a "
                                        "whole ranking: pass k, or build an exact index")
            k = len(self)
        if k < 1:
            raise GalleryIndexError(f"k must be >= 1, got {k}")
        k = min(k, len(self))
        if self.kind == "exact":
            chunk = max(1, 2**24 // len(self))  # at most 128 MB of distances at a time
            parts = [self._exact(q[i:i + chunk], k) for i in range(0, len(q), chunk)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        squared, rows = self._structure.search(np.ascontiguousarray(q), k)
        return np.sqrt(np.maximum(squared, 0.0)).astype(np.float64), rows.astype(np.int64)

    def _exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        g, g_sq = self._structure
        d = euclidean_distances(q, g, gallery_sq_norms=g_sq)
        if k < len(self):  # partial sort first: O(N) per query instead of O(N log N)
            part = np.argpartition(d, k - 1, axis=1)[:, :k]
            order = np.take_along_axis(part, np.argsort(np.take_along_axis(d, part, 1), 1,
                                                        kind="stable"), 1)
        else:
            order = np.argsort(d, axis=1, kind="stable")
        return np.take_along_axis(d, order, 1), order

    def measure_recall(self, n: int = 256, seed: int = 0) -> float:
        """recall@10 against exact search, on n `perturbed_queries` of the gallery."""
        return recall_at(self, perturbed_queries(self.vectors, n, seed), 10)

    @property
    def memory_bytes(self) -> int:
        """Bytes the index holds for search: the vectors, plus the FAISS structure."""
        base = self.vectors.nbytes
        if self.kind == "hnsw":
            # Each vector's neighbour lists: 2M links on level 0, about M more above (int32).
            base += len(self) * (2 * self.hnsw.m + self.hnsw.m) * 4
        elif self.kind == "flat":
            base += self.vectors.nbytes  # FAISS keeps its own copy
        return base

    def describe(self) -> dict:
        return {"kind": self.kind, "metric": self.metric, "size": len(self), "dim": self.dim,
                "recall_at_10": round(self.recall_at_10, 4), "build_s": round(self.build_s, 3),
                **({"hnsw": vars(self.hnsw)} if self.kind == "hnsw" else {})}

    # ----------------------------------------------------------------- files
    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        meta = {"format": FORMAT, "kind": self.kind, "metric": self.metric,
                "size": len(self), "dim": self.dim,
                "recall_at_10": self.recall_at_10, "hnsw": vars(self.hnsw), **self.meta}

        def write(tmp: Path) -> None:
            save_file({"vectors": self.vectors, "pids": self.pids, "camids": self.camids},
                      str(tmp / "gallery.safetensors"))
            (tmp / "names.txt").write_text("".join(f"{name}\n" for name in self.names))
            if self.kind == "hnsw":
                _faiss().write_index(self._structure, str(tmp / "hnsw.faiss"))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        atomic_write(folder, write, folder=True)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> GalleryIndex:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            arrays = load_file(str(folder / "gallery.safetensors"))
            names = (folder / "names.txt").read_text().splitlines()
        except FileNotFoundError as e:
            raise GalleryIndexError(f"{folder} is not a gallery index (missing "
                                    f"{Path(e.filename).name}); build one with `genreid index`") from None
        except (OSError, ValueError) as e:
            raise GalleryIndexError(f"cannot read the gallery index in {folder}: {e}") from None
        if meta.get("format") != FORMAT:
            raise GalleryIndexError(f"{folder}: unknown index format {meta.get('format')!r}; rebuild it")
        kind = meta.pop("kind")
        hnsw = HNSWParams(**meta.pop("hnsw"))
        recall = float(meta.pop("recall_at_10"))
        metric = meta.pop("metric", "euclidean")  # indexes saved before metrics existed
        if metric not in METRICS:
            raise GalleryIndexError(f"{folder}: unknown metric {metric!r}; rebuild it")
        for key in ("format", "size", "dim"):
            meta.pop(key, None)
        index = cls(arrays["vectors"], arrays["pids"], arrays["camids"], names, kind, hnsw,
                    recall, meta, metric=metric)
        if not len(index.names) == len(index.pids) == len(index.vectors):
            raise GalleryIndexError(f"{folder}: {len(index.vectors)} vectors but {len(index.names)} names")
        if kind == "hnsw":
            try:
                index._structure = _faiss().read_index(str(folder / "hnsw.faiss"))
            except RuntimeError as e:
                raise GalleryIndexError(f"cannot read {folder / 'hnsw.faiss'}: {e}") from None
            index._structure.hnsw.efSearch = hnsw.ef_search
        else:
            index._make_structure()
        return index


def scaled(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Vectors as the metric compares them: unit length for cosine (zero stays zero). Every
    retrieval path scales through here, so an unknown metric is refused here."""
    if metric not in METRICS:
        raise GalleryIndexError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if metric == "euclidean":
        return vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def perturbed_queries(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n queries made like real ones: gallery vectors (drawn without replacement) moved by
    Gaussian noise of a quarter of the gallery's spread in each dimension."""
    rng = np.random.default_rng(seed)
    take = rng.choice(len(vectors), min(n, len(vectors)), replace=False)
    noise = rng.standard_normal((len(take), vectors.shape[1])).astype(np.float32)
    return vectors[take] + noise * (0.25 * vectors.std(0))


def recall_at(index: GalleryIndex, queries: np.ndarray, k: int = 10) -> float:
    """Share of each query's k exact nearest neighbours that the index returns in its top k."""
    if index.exact:
        return 1.0
    exact = GalleryIndex.build(index.vectors, index.pids, index.camids, index.names, "exact",
                               metric=index.metric)
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(truth, found)]))
