"""`genreid eval` and `genreid index`: a gallery encoded, searched and measured."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import distributed
from .config import DEFAULT_CHECKPOINT, PRECISIONS


def add_encoding_options(p: argparse.ArgumentParser) -> None:
    """How a gallery is encoded and searched (eval, index)."""
    p.add_argument("--index", default="auto", choices=["auto", "exact", "flat", "hnsw"],
                   help="gallery search: exact (NumPy), flat (FAISS, exact), hnsw (FAISS, "
                        "approximate); auto = exact up to 100,000 vectors, else hnsw")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average features with the mirrored image (default: the set's img2id.flip)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="inference precision (auto: bf16 where the hardware has it)")


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="retrieval mAP/CMC on a query + gallery")
    p.add_argument("--data", required=True, help="dataset root with query/ and bounding_box_test/")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--features", default=None, help="save the features to this .npz")
    add_encoding_options(p)
    p.add_argument("--top", type=int, default=100,
                   help="with an approximate index: how many matches each query ranks (default 100)")
    p.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking of the exact distances (Zhong et al. 2017; "
                        "k1 20, k2 6, lambda 0.3); up to 20,000 queries + gallery pictures")
    p.add_argument("--metric", default=None, choices=["euclidean", "cosine"],
                   help="retrieval distance (default: the set's img2id.metric); cosine ranks "
                        "by the angle between identity vectors")
    p.set_defaults(func=run_eval)


def add_index(sub) -> None:
    p = sub.add_parser("index", help="encode a gallery folder into a saved gallery index "
                       "(for large galleries, and for the explorer to load instead of encoding)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--data", required=True,
                   help="dataset root (its bounding_box_test/) or any Market-1501 style folder")
    p.add_argument("--out", default=None, help="index folder (default: <checkpoint>/gallery)")
    add_encoding_options(p)
    p.set_defaults(func=run_index)


def run_eval(args) -> None:
    from .api import GenReID
    from .evaluate import evaluate, format_table

    ctx, device = distributed.setup(args.device)  # under torchrun each rank encodes a shard
    model = GenReID.load(args.checkpoint, device=str(device), precision=args.precision)
    result = evaluate(model, args.data, batch_size=args.batch_size, flip=args.flip,
                      features_out=args.features if ctx.main else None, index=args.index,
                      top=args.top, rerank=args.rerank, metric=args.metric)
    result["precision"] = model.precision
    if ctx.main:
        print(json.dumps(result) if args.json else format_table(result))


def run_index(args) -> None:
    from .api import GenReID
    from .saved_gallery import build_gallery_index

    ctx, device = distributed.setup(args.device)  # under torchrun each rank encodes a share
    model = GenReID.load(args.checkpoint, device=str(device), batch_size=args.batch_size,
                         precision=args.precision)
    out = args.out or str(Path(args.checkpoint) / "gallery")
    index = build_gallery_index(model, args.data, out, args.index, args.flip)
    if ctx.main:
        print(json.dumps({"out": out, **index.describe()}))
