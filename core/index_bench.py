"""How search cost grows with the gallery: `genreid bench --gallery-sizes 1000,100000,1000000`.

For each size: build the index the size calls for (or the kind asked), then answer single
queries one at a time, as the explorer and an API user do, and report build time, memory,
query latency p50/p95 and recall@10 against exact search on the same queries. Queries are
`core.gallery_index.perturbed_queries`, with another seed than the index's own recall estimate.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable

import numpy as np

from .gallery_index import GalleryIndex, perturbed_queries, recall_at


def rss_mb() -> float | None:
    """Resident memory of this process (Linux), in MiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


def random_identities(n: int, dim: int, mean: np.ndarray | None = None, std: np.ndarray | None = None,
                      seed: int = 0) -> np.ndarray:
    """n Gaussian vectors with a gallery's per-dimension mean and spread (default N(0, 1))."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    if std is not None:
        x *= np.asarray(std, np.float32)
    if mean is not None:
        x += np.asarray(mean, np.float32)
    return x


def gallery_benchmark(sizes: list[int], make_vectors: Callable[[int], np.ndarray],
                      kind: str = "auto", queries: int = 200, k: int = 10,
                      log: Callable[[str], None] = print) -> list[dict]:
    rows = []
    for size in sizes:
        vectors = make_vectors(size)
        gc.collect()
        before = rss_mb()
        index = GalleryIndex.build(vectors, kind=kind)
        after = rss_mb()
        q = perturbed_queries(vectors, queries, seed=size + 1)
        index.search(q[:1], k)  # warm-up
        times = []
        for row in q:
            start = time.perf_counter()
            index.search(row[None], k)
            times.append(time.perf_counter() - start)
        memory = (after - before + vectors.nbytes / 2**20) if before is not None and after is not None \
            else index.memory_bytes / 2**20  # the vectors were resident before the build
        entry = {"size": size, "index": index.kind, "build_s": round(index.build_s, 3),
                 "memory_mb": round(memory, 1),
                 "p50_ms": round(1000 * float(np.percentile(times, 50)), 3),
                 "p95_ms": round(1000 * float(np.percentile(times, 95)), 3),
                 "recall_at_10": round(recall_at(index, q, k), 4),
                 "queries": len(q)}
        log(f"gallery {size:>9,}: {entry['index']:<5} build {entry['build_s']:.2f} s, "
            f"{entry['memory_mb']:.0f} MB, p50 {entry['p50_ms']:.3f} ms, p95 {entry['p95_ms']:.3f} ms, "
            f"recall@10 {entry['recall_at_10']:.3f}")
        rows.append(entry)
        del index, vectors
    return rows


def format_gallery(rows: list[dict]) -> str:
    lines = [f"{'gallery':>9} | {'index':<5} | {'build s':>8} | {'memory MB':>9} | {'p50 ms':>7} | "
             f"{'p95 ms':>7} | {'recall@10':>9}"]
    for r in rows:
        lines.append(f"{r['size']:>9} | {r['index']:<5} | {r['build_s']:8.2f} | {r['memory_mb']:9.1f} | "
                     f"{r['p50_ms']:7.3f} | {r['p95_ms']:7.3f} | {r['recall_at_10']:9.3f}")
    return "\n".join(lines)
