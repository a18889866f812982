"""3. Neighbours: an identity and its nearest training identities, the closest and farthest
pairs, and the distribution of pairwise distances."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from .. import figures, render
from ..state import ExplorerState
from .common import MAX_K, as_int, bundle, default_identity, panel, progress_report

DEFAULT_K_NEIGHBOURS = 5


@panel
def neighbors(state: ExplorerState, identity: str | None = None, k: int = DEFAULT_K_NEIGHBOURS,
              progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """An identity and its k nearest training identities; the closest and farthest pairs; the
    distribution of pairwise distances. Returns (neighbours picture, table, pairs picture,
    statistics, histogram, files)."""
    key, vector = state.resolve(default_identity(state) if identity is None else identity)
    n = len(state.train_keys)
    own = state.row_of(key)
    available = n - (1 if own is not None else 0)
    if available < 1:
        raise ValueError("the identity table has no other identity to compare with")
    k = as_int(k, "k", 1, MAX_K)
    k = min(k, available)
    rows, dists = state.nearest_training(vector, k, exclude=own)
    keys = [state.train_keys[r] for r in rows]
    pair_keys = []
    if state.closest is not None:
        pair_keys = [state.train_keys[state.closest[0]], state.train_keys[state.closest[1]],
                     state.train_keys[state.farthest[0]], state.train_keys[state.farthest[1]]]
    needs_generation = [x for x in [key, *keys, *pair_keys] if state.portrait_ready(x) is None]
    if needs_generation:
        state.require("generator")
    portraits = state.portraits([key, *keys, *pair_keys], progress_report(progress))
    frames = [render.BLUE] + [None] * len(keys)
    captions = [f"{key}\n(chosen)"] + [f"#{i + 1} {kk}\nd = {d:.3f}" for i, (kk, d)
                                       in enumerate(zip(keys, dists, strict=True))]
    picture = render.strip(portraits[:1 + len(keys)], captions, frames)
    table = pd.DataFrame([[i + 1, kk, int(state.pids[r]), round(float(d), 4)]
                          for i, (kk, r, d) in enumerate(zip(keys, rows, dists, strict=True))],
                         columns=["rank", "identity", "person id", "distance"])
    pairs = None
    p = state.pair_distances
    if len(p):
        c, f = state.closest, state.farthest
        pp = portraits[1 + len(keys):]
        pairs = render.compose([[pp[0], pp[1]], [pp[2], pp[3]]],
                               captions=[[pair_keys[0], pair_keys[1]], [pair_keys[2], pair_keys[3]]],
                               row_labels=[f"closest pair\nd = {c[2]:.3f}", f"farthest pair\nd = {f[2]:.3f}"])
        stats = (f"**Identity space:** {n} training identities, {len(p)} pairs. Distances: min "
                 f"{p.min():.3f}, mean {p.mean():.3f}, median {np.median(p):.3f}, max {p.max():.3f} "
                 "(the paper reports closest 0.14, mean about 0.6, farthest 0.99).")
        histogram = figures.histogram_figure(p, {"mean": float(p.mean()),
                                                 f"{key} → nearest": float(dists[0])})
    else:
        stats = "Only one training identity: no pairs."
        histogram = figures.histogram_figure(np.zeros(0))
    source = ("real training pictures (from --data)" if state.real_portraits else
              "generated, all with the same fixed noise")
    stats += f" Portraits: {source}."
    out = state.output_dir("neighbors")
    files = [render.save_png(picture, out / "neighbors.png"), str(out / "neighbors.csv"),
             state.shared_file("pairwise_distances.npy",
                               lambda path: np.save(path, state.distances.astype(np.float32)))]
    table.to_csv(out / "neighbors.csv", index=False)
    if pairs is not None:
        files.append(render.save_png(pairs, out / "pairs.png"))
    return picture, table, pairs, stats, histogram, bundle(files, "neighbours")
