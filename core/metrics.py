"""Person re-identification retrieval metrics (CMC and mAP).

These follow the Market-1501 / torchreid conventions: for each query the
gallery is ranked by ascending distance, gallery items sharing both the
query's identity and camera are discarded (standard protocol), queries
without any remaining true match are skipped, CMC is the clipped cumulative
hit curve and AP is the mean of precision at each true-match position.
Distractor identities (e.g. pid 0) are ordinary negatives.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "average_precision",
    "evaluate_rank",
    "evaluate_ranking",
    "euclidean_distances",
    "query_average_precision",
    "query_matches",
    "ranking_summary",
    "truncated_average_precision",
    "retrieval_summary",
]


def _as_1d(name: str, values, expected_len: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != expected_len:
        raise ValueError(
            f"{name} has length {arr.shape[0]} but distmat implies {expected_len}"
        )
    return arr


def average_precision(ranked_matches: np.ndarray) -> float:
    """AP of one query from its boolean match vector ordered by rank.

    Returns 0.0 when the vector contains no true match.
    """
    matches = np.asarray(ranked_matches).astype(bool).ravel()
    num_rel = int(matches.sum())
    if num_rel == 0:
        return 0.0
    hits_so_far = np.cumsum(matches)
    positions = np.arange(1, matches.size + 1)
    precision_at_hits = hits_so_far[matches] / positions[matches]
    return float(precision_at_hits.sum() / num_rel)


def truncated_average_precision(ranked_matches: np.ndarray, relevant: int) -> float:
    """AP of a ranking that may stop before the gallery ends: precision at each true match
    found, divided by all `relevant` true matches (those never ranked count as 0)."""
    matches = np.asarray(ranked_matches).astype(bool).ravel()
    return average_precision(matches) * int(matches.sum()) / relevant if relevant else 0.0


def query_matches(
    ranked: np.ndarray,
    q_pid: int,
    q_camid: int | None,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    remove_same_camera: bool = True,
) -> tuple[np.ndarray, int]:
    """One query under the retrieval protocol: (its match vector in rank order, how many true
    matches the whole gallery holds for it). The protocol, in one place: with
    ``remove_same_camera`` (the standard one) the gallery pictures of the query's person taken
    by the query's camera are left out of both; otherwise (the paper's) nothing is.

    ranked: gallery indices nearest first, the whole gallery or its top K (true matches
    beyond rank K then count as never found). q_camid is only read when left-out pictures
    are removed.
    """
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    ranked = np.asarray(ranked)
    ranked_pids = g_pids[ranked]
    person = g_pids == q_pid
    if remove_same_camera:
        person &= g_camids != q_camid
        ranked_pids = ranked_pids[~((ranked_pids == q_pid) & (g_camids[ranked] == q_camid))]
    return ranked_pids == q_pid, int(person.sum())


def query_average_precision(
    ranked: np.ndarray,
    q_pid: int,
    q_camid: int | None,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
    remove_same_camera: bool = True,
) -> float | None:
    """AP of one query from its ranked gallery indices (see `query_matches`), as
    `evaluate_ranking` counts it into mAP; None when the query has no true match left in the
    gallery (such a query is skipped there)."""
    matches, relevant = query_matches(ranked, q_pid, q_camid, g_pids, g_camids, remove_same_camera)
    return truncated_average_precision(matches, relevant) if relevant else None


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
    remove_same_camera: bool = True,
) -> tuple[np.ndarray, float, int]:
    """Compute (CMC curve of length max_rank, mAP, number of valid queries).

    With ``remove_same_camera`` gallery items with the query's pid *and*
    camid are dropped (standard protocol); otherwise nothing is dropped.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    distmat, q_pids, g_pids, q_camids, g_camids = _checked(distmat, q_pids, g_pids, q_camids,
                                                            g_camids)
    order = np.argsort(distmat, axis=1, kind="stable")
    return evaluate_ranking(order, q_pids, g_pids, q_camids, g_camids, max_rank,
                            remove_same_camera)


def _checked(distmat, q_pids, g_pids, q_camids, g_camids):
    """The inputs as arrays, after checking that their shapes agree with distmat's."""
    distmat = np.asarray(distmat, dtype=np.float64)
    if distmat.ndim != 2:
        raise ValueError(
            f"distmat must be 2-D (num_query, num_gallery), got shape {distmat.shape}"
        )
    num_q, num_g = distmat.shape
    if num_q == 0 or num_g == 0:
        raise ValueError(f"distmat must be non-empty, got shape {distmat.shape}")
    return (distmat, _as_1d("q_pids", q_pids, num_q), _as_1d("g_pids", g_pids, num_g),
            _as_1d("q_camids", q_camids, num_q), _as_1d("g_camids", g_camids, num_g))


def evaluate_ranking(
    order: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
    remove_same_camera: bool = True,
) -> tuple[np.ndarray, float, int]:
    """(CMC, mAP, valid queries) from ranked gallery indices (num_query, K), nearest first.

    K may be the whole gallery (then this is `evaluate_rank` exactly) or its top K, as an
    approximate index returns: true matches beyond rank K then count as never found (AP
    divides by all of the query's true matches in the gallery, so it can only be lower).
    """
    order = np.asarray(order)
    num_q = order.shape[0]
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    num_g = len(g_pids)
    if order.ndim != 2 or num_q != len(q_pids) or order.shape[1] > num_g:
        raise ValueError(f"ranking of shape {order.shape} does not fit {len(q_pids)} queries "
                         f"and {num_g} gallery items")
    all_cmc: list[np.ndarray] = []
    all_ap: list[float] = []
    for i in range(num_q):
        matches, relevant = query_matches(order[i], int(q_pids[i]), int(q_camids[i]), g_pids,
                                          g_camids, remove_same_camera)
        if relevant == 0:
            continue  # query identity absent from the (filtered) gallery
        cmc = np.minimum(np.cumsum(matches), 1)[:max_rank].astype(np.float64)
        if cmc.size < max_rank:
            cmc = np.pad(cmc, (0, max_rank - cmc.size), mode="edge") if cmc.size else \
                np.zeros(max_rank)
        all_cmc.append(cmc)
        all_ap.append(truncated_average_precision(matches, relevant))

    if not all_cmc:
        raise ValueError(
            "no valid query: no query has a true match in the gallery "
            f"(remove_same_camera={remove_same_camera})"
        )
    cmc_mean = np.mean(np.stack(all_cmc), axis=0)
    return cmc_mean, float(np.mean(all_ap)), len(all_cmc)


def euclidean_distances(
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    chunk_size: int = 256,
    gallery_sq_norms: np.ndarray | None = None,
) -> np.ndarray:
    """Pairwise Euclidean distances (num_query, num_gallery), float64.

    Queries are processed in chunks of ``chunk_size`` to bound memory. A gallery searched
    many times can be passed as float64 with its squared norms, so neither is recomputed.
    """
    q = np.asarray(query_features, dtype=np.float64)
    g = np.asarray(gallery_features, dtype=np.float64)
    if q.ndim != 2 or g.ndim != 2:
        raise ValueError(
            f"features must be 2-D, got query {q.shape} and gallery {g.shape}"
        )
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"feature dimensions differ: query {q.shape[1]} vs gallery {g.shape[1]}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    g_sq = np.einsum("ij,ij->i", g, g) if gallery_sq_norms is None else gallery_sq_norms
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float64)
    for start in range(0, q.shape[0], chunk_size):
        block = q[start : start + chunk_size]
        sq = np.einsum("ij,ij->i", block, block)[:, None] + g_sq[None, :]
        sq -= 2.0 * (block @ g.T)
        np.maximum(sq, 0.0, out=sq)
        out[start : start + block.shape[0]] = np.sqrt(sq)
    return out


def retrieval_summary(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
) -> dict:
    """mAP and rank-1/5/10/20 under the standard and paper protocols."""
    distmat, q_pids, g_pids, q_camids, g_camids = _checked(distmat, q_pids, g_pids, q_camids,
                                                            g_camids)
    order = np.argsort(distmat, axis=1, kind="stable")
    return ranking_summary(order, q_pids, g_pids, q_camids, g_camids)


def ranking_summary(
    order: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
) -> dict:
    """`retrieval_summary` from ranked gallery indices (num_query, K), K the whole gallery or
    its top K (see `evaluate_ranking`)."""
    summary: dict = {}
    for key, remove in (("standard", True), ("paper", False)):
        cmc, mAP, _ = evaluate_ranking(
            order, q_pids, g_pids, q_camids, g_camids,
            max_rank=20, remove_same_camera=remove,
        )
        summary[key] = {
            "mAP": float(mAP),
            "rank1": float(cmc[0]),
            "rank5": float(cmc[4]),
            "rank10": float(cmc[9]),
            "rank20": float(cmc[19]),
        }
    summary["num_query"] = int(np.shape(order)[0])
    summary["num_gallery"] = int(len(g_pids))
    return summary
