"""k-reciprocal re-ranking (Zhong et al., "Re-ranking person re-identification with k-reciprocal
encoding", CVPR 2017): a test-time refinement of query-to-gallery distances from the features
alone, with no training.

    R(i, k)   = { j in N(i, k) : i in N(j, k) }            k-reciprocal neighbours
    R*(i)     = R(i, k1), grown by each R(j, k1/2), j in R(i, k1), that overlaps it by > 2/3
    V_i[j]    = exp(-d(i, j)) / sum over R*(i)  for j in R*(i), else 0
    V_i      <- mean of V_j over the k2 nearest j of i  (local query expansion)
    d_J(i, j) = 1 - sum min(V_i, V_j) / sum max(V_i, V_j)
    d*(i, j)  = (1 - lambda) d_J(i, j) + lambda d(i, j)

d is the squared Euclidean distance over queries and gallery together, each column divided by
its maximum; N(i, k) holds i and its k nearest.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

MAX_ITEMS = 20_000  # queries + gallery: the method needs their full distance matrix
K1, K2, LAMBDA = 20, 6, 0.3  # the paper's values


def _neighbours(d: np.ndarray, k: int) -> np.ndarray:
    """(N, k + 1): each row's k + 1 nearest columns, nearest first (itself, at distance 0)."""
    k = min(k + 1, d.shape[1])
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(d, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def _reciprocal(near: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = near[i, :k + 1]
    return forward[(near[forward, :k + 1] == i).any(1)]


def k_reciprocal_distances(query: np.ndarray, gallery: np.ndarray, k1: int = K1, k2: int = K2,
                           lambda_: float = LAMBDA) -> np.ndarray:
    """Re-ranked distances (Q, G) between query and gallery features (the paper's k1, k2 and
    lambda by default); rank each row in ascending order."""
    query, gallery = np.asarray(query, np.float64), np.asarray(gallery, np.float64)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D; got {query.shape} and "
                         f"{gallery.shape}")
    nq, n = len(query), len(query) + len(gallery)
    if n > MAX_ITEMS:
        raise ValueError(f"re-ranking needs the full distance matrix of queries and gallery; "
                         f"{n} pictures is over the limit of {MAX_ITEMS}")
    if not 1 <= k2 <= k1 or not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"need 1 <= k2 <= k1 and 0 <= lambda <= 1; got k1={k1}, k2={k2}, "
                         f"lambda={lambda_}")
    x = np.concatenate([query, gallery])
    sq = (x * x).sum(1)
    d = np.maximum(sq[:, None] + sq[None] - 2.0 * (x @ x.T), 0.0)
    d /= np.maximum(d.max(0, keepdims=True), 1e-12)
    near = _neighbours(d, k1)
    half, k2 = int(round(k1 / 2)), min(k2, near.shape[1])  # a set smaller than k has fewer

    rows, cols, weights = [], [], []
    for i in range(n):
        r = _reciprocal(near, i, k1)
        grown = r
        for j in r:
            rj = _reciprocal(near, j, half)
            if len(np.intersect1d(rj, r)) > 2.0 / 3.0 * len(rj):
                grown = np.union1d(grown, rj)
        w = np.exp(-d[i, grown])
        rows.append(np.full(len(grown), i))
        cols.append(grown)
        weights.append(w / w.sum())
    v = sparse.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(n, n))
    if k2 > 1:
        mean = sparse.csr_matrix((np.full(n * k2, 1.0 / k2),
                                  (np.repeat(np.arange(n), k2), near[:, :k2].ravel())), shape=(n, n))
        v = (mean @ v).tocsr()

    # Each V row sums to 1, so sum max(V_i, V_j) = 2 - sum min(V_i, V_j); only the query's
    # non-zero columns contribute to the minimum.
    gallery_columns = v[nq:].tocsc()
    jaccard = np.empty((nq, n - nq))
    for i in range(nq):
        start, end = v.indptr[i], v.indptr[i + 1]
        columns, values = v.indices[start:end], v.data[start:end]
        overlap = np.minimum(gallery_columns[:, columns].toarray(), values[None]).sum(1)
        jaccard[i] = 1.0 - overlap / (2.0 - overlap)
    return (1.0 - lambda_) * jaccard + lambda_ * d[:nq, nq:]
