"""5. Retrieval: a query against the gallery, its top matches and its average precision
(the protocol and AP of `genreid eval`, core.metrics)."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from core.metrics import query_average_precision

from .. import render
from ..state import ExplorerState
from .common import MAX_K, as_int, bundle, panel, progress_report, save_csv

DEFAULT_K_RETRIEVAL = 10
RANKED_APPROX = 1000  # how far an approximate gallery index ranks each query


@panel
def retrieve(state: ExplorerState, upload: str | None = None, query: int = 0,
             k: int = DEFAULT_K_RETRIEVAL, progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """A query (uploaded, else the query set's picture at index query) against the gallery:
    top-k matches framed green/red where labels are known, and the query's average precision.
    Returns (picture, table, description, files)."""
    state.require("img2id")
    report = progress_report(progress)
    k = as_int(k, "k", 1, MAX_K)
    image, label, camid, caption, name = state.picture(as_int(query, "query index", 0, 10**9),
                                                       upload, report)
    _, gallery = state.pictures(report)
    index = state.gallery_index(report)
    q = state.compute(state.model.encode, image[None])
    # The whole ranking from an exact index; an approximate one ranks its top RANKED_APPROX.
    ranked, order = index.search(q, None if index.exact else max(k, RANKED_APPROX))
    ranked, order = ranked[0], order[0]  # ranked[r]: the distance of the r-th match, order[r]
    known = label is not None
    lines = []
    if known:
        # The protocol and AP of `genreid eval` (core.metrics): AP divides by every true match
        # in the gallery, ranked or not.
        paper = query_average_precision(order, label, camid, gallery.labels, gallery.camids,
                                        remove_same_camera=False)
        if paper is None:
            lines.append("No picture of this person in the gallery: average precision undefined.")
        elif camid is not None and not gallery.generated:
            standard = query_average_precision(order, label, camid, gallery.labels, gallery.camids)
            text = (f"**Average precision {standard:.3f}**" if standard is not None else
                    "**Average precision undefined** (no picture of this person by another camera)")
            lines.append(f"{text} (standard protocol: pictures of the query's person by the "
                         f"query's camera left out); {paper:.3f} with nothing left out (the "
                         "paper's way).")
        else:
            lines.append(f"**Average precision {paper:.3f}**.")
        if not index.exact:
            lines.append(f"(Approximate {index.kind} index, recall@10 {index.recall_at_10:.3f}; "
                         f"matches beyond its top {len(order)} count as not found.)")
    else:
        lines.append("The query's person is unknown (name the upload like Market-1501, "
                     "e.g. 0002_c1s1_000451_01.jpg, to get frames and AP).")
    if index.metric == "cosine":
        lines.append("Distances d are between the identity vectors scaled to unit length "
                     "(the set's cosine metric, `img2id.metric`).")
    if gallery.generated:
        lines.append("No dataset given: query and gallery are **generated** from prior samples "
                     "(a few noises per identity), so right and wrong are known.")
    top = order[:k]
    frames, captions = [render.BLUE], [f"query\n{caption}"]
    for r, j in enumerate(top):
        if not known:
            frames.append(render.GREY)
        else:
            frames.append(render.GREEN if gallery.labels[j] == label else render.RED)
        captions.append(f"#{r + 1}  d = {ranked[r]:.3f}\n{gallery.who[j]}")
    picture = render.strip([image] + [gallery.images[j] for j in top], captions, frames)

    def match(j):
        return "?" if not known else ("yes" if gallery.labels[j] == label else "no")
    table = pd.DataFrame([[r + 1, int(j), gallery.who[j], round(float(ranked[r]), 4), match(j),
                           gallery.names[j]] for r, j in enumerate(top)],
                         columns=["rank", "gallery index", "person", "distance", "right person",
                                  "picture"])
    out = state.output_dir("retrieve")
    files = [render.save_png(picture, out / "retrieval.png"),
             save_csv(out / "ranking.csv", ["rank", "gallery index", "picture", "person", "distance",
                                             "right person"],
                       [[r + 1, int(j), gallery.names[j], gallery.who[j], f"{ranked[r]:.6g}", match(j)]
                        for r, j in enumerate(order.tolist())]),
             str(out / "query_identity.npy")]
    np.save(out / "query_identity.npy", q[0])
    lines.insert(0, f"Query: {name}. Gallery: {len(gallery)} pictures.")
    return picture, table, " ".join(lines), bundle(files, "retrieval")
