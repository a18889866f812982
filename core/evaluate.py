"""Retrieval evaluation: Img2ID features of query and gallery, ranked by Euclidean distance.

    genreid eval --data ../shared/data/cuhk03 --checkpoint checkpoints/default --json
"""

from __future__ import annotations

import numpy as np

from . import distributed
from . import rerank as reranking
from .api import GenReID
from .data import dataset_splits, load_split
from .gallery_index import GalleryIndex, scaled
from .metrics import ranking_summary, retrieval_summary


def evaluate(model: GenReID, root: str, batch_size: int = 128, flip: bool | None = None,
             features_out: str | None = None, index: str = "auto", top: int = 100,
             rerank: bool = False, metric: str | None = None) -> dict:
    """The `standard` (Market-1501) and `paper` protocol metrics on root's query + gallery.

    The gallery goes through a `GalleryIndex` of the given kind: exact kinds rank the whole
    gallery; an approximate one returns each query's `top` nearest, and true matches beyond
    them count as not found (reported under "index"). rerank: rank the whole gallery by
    k-reciprocal re-ranked distances instead (core.rerank; exact only). metric: euclidean or
    cosine (default: the set's `img2id.metric`)."""
    metric = model.retrieval_metric if metric is None else metric
    if rerank and index not in ("auto", "exact"):
        raise ValueError(f"re-ranking computes its own exact distances; it cannot use the "
                         f"{index!r} index (leave --index at auto or exact)")
    splits = dataset_splits(root, required=("query", "gallery"))
    query = load_split(splits["query"], model.image_size)
    gallery = load_split(splits["gallery"], model.image_size)
    model.batch_size = batch_size
    qf = encode_split(model, query.images, flip)
    gf = encode_split(model, gallery.images, flip)
    if features_out:
        np.savez(features_out, query_features=qf, gallery_features=gf,
                 query_pids=query.pids, gallery_pids=gallery.pids,
                 query_camids=query.camids, gallery_camids=gallery.camids)
    if rerank:
        qf, gf = scaled(qf, metric), scaled(gf, metric)
        result = retrieval_summary(reranking.k_reciprocal_distances(qf, gf), query.pids,
                                   gallery.pids, query.camids, gallery.camids)
        result["rerank"] = {"method": "k-reciprocal", "k1": reranking.K1, "k2": reranking.K2,
                            "lambda": reranking.LAMBDA}
        result["metric"] = metric
        return result
    gallery_index = GalleryIndex.build(gf, gallery.pids, gallery.camids, gallery.names, index,
                                       metric=metric)
    _, order = gallery_index.search(qf, None if gallery_index.exact else top)
    result = ranking_summary(order, query.pids, gallery.pids, query.camids, gallery.camids)
    result["index"] = {**gallery_index.describe(), "ranked": int(order.shape[1])}
    return result


def encode_split(model: GenReID, images: np.ndarray, flip: bool | None = None) -> np.ndarray:
    """Identity features (N, D) of many pictures, in batches; under torchrun each process
    encodes its own contiguous part and every process receives all of them, in order."""
    ctx = distributed.context()
    mine = images[ctx.rows(len(images))]
    features = model.encode(mine, flip=flip) if len(mine) else np.zeros((0, model.id_dim), np.float32)
    return ctx.gather_rows(features)


def format_table(result: dict) -> str:
    keys = ["mAP", "rank1", "rank5", "rank10", "rank20"]
    lines = [f"queries {result['num_query']}, gallery {result['num_gallery']}",
             f"{'protocol':<10}" + "".join(f"{k:>9}" for k in keys)]
    for protocol in ("standard", "paper"):
        lines.append(f"{protocol:<10}" + "".join(f"{100 * result[protocol][k]:>8.2f}%" for k in keys))
    return "\n".join(lines)
