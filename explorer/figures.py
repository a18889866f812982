"""Plotly figures of the explorer (no Gradio here)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .render import PALETTE

SYMBOLS = {"training identity": "circle", "prior sample": "diamond", "gallery (encoded)": "x"}


def _rgb(c) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def projection_figure(coords: np.ndarray, keys: Sequence[str], sources: Sequence[str],
                      cameras: Sequence[str], colour_kind: str, colour_values, colour_by: str,
                      thumbnails: Sequence[str], title: str) -> go.Figure:
    """The identity-space scatter: one trace per source (marker shape), coloured by category or
    value. Each point carries [key, thumbnail data URI] as customdata: the page's hover script
    shows the thumbnail, a click selects the identity."""
    fig = go.Figure()
    sources = list(sources)
    order = list(dict.fromkeys(sources))
    if colour_kind == "categorical":
        cats = list(dict.fromkeys(colour_values))
        colour_of = {c: _rgb(PALETTE[i % len(PALETTE)]) for i, c in enumerate(cats)}
        groups = [(s, c) for s in order for c in cats]
    else:
        values = np.asarray(colour_values, dtype=np.float64)
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        groups = [(s, None) for s in order]
    first_colourbar = True
    for source, cat in groups:
        idx = [i for i, s in enumerate(sources) if s == source
               and (cat is None or colour_values[i] == cat)]
        if not idx:
            continue
        text = [f"<b>{keys[i]}</b><br>{sources[i]}<br>{cameras[i]}" for i in idx]
        if colour_kind == "categorical":
            marker = dict(color=colour_of[cat], size=8 if source != "gallery (encoded)" else 6)
            name = source if colour_by == "source" else f"{source} · {cat}"
        else:
            marker = dict(color=values[idx], colorscale="Viridis", cmin=lo, cmax=hi,
                          size=8 if source != "gallery (encoded)" else 6,
                          showscale=first_colourbar,
                          colorbar=dict(title=dict(text=colour_by), thickness=14))
            first_colourbar = False
            text = [f"{t}<br>{colour_by} = {values[i]:.3f}" for t, i in zip(text, idx, strict=True)]
            name = source
        marker.update(symbol=SYMBOLS.get(source, "circle"), line=dict(width=0.5, color="white"),
                      opacity=0.85)
        fig.add_trace(go.Scatter(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=name, marker=marker,
            text=text, hovertemplate="%{text}<extra></extra>",
            customdata=[[keys[i], thumbnails[i]] for i in idx]))
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=560, template="plotly_white",
                      margin=dict(l=40, r=20, t=50, b=40), legend=dict(orientation="h", y=-0.08),
                      uirevision="projection", hovermode="closest", clickmode="event")
    return fig


def histogram_figure(distances: np.ndarray, marks: dict[str, float] | None = None,
                     bins: int = 40) -> go.Figure:
    """Histogram of pairwise identity distances (binned here, so the page gets 40 bars, not
    every pair), with vertical lines at named values."""
    distances = np.asarray(distances, dtype=np.float64)
    fig = go.Figure()
    if len(distances):
        counts, edges = np.histogram(distances, bins=bins)
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                             marker_color=_rgb(PALETTE[0]), name="pairs",
                             hovertemplate="%{x:.3f}: %{y} pairs<extra></extra>"))
    for i, (name, value) in enumerate((marks or {}).items()):
        fig.add_vline(x=value, line=dict(color=_rgb(PALETTE[(i + 1) % len(PALETTE)]), dash="dash"),
                      annotation_text=name, annotation_position="top")
    fig.update_layout(height=300, template="plotly_white", margin=dict(l=40, r=20, t=70, b=40),
                      xaxis_title="Euclidean distance between two training identities",
                      yaxis_title="pairs", showlegend=False, bargap=0.02)
    return fig


def vector_figure(vector: np.ndarray, title: str = "identity vector") -> go.Figure:
    """Bar chart of an identity vector's coordinates z0..z{D-1}."""
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    fig = go.Figure(go.Bar(x=[f"z{i}" for i in range(len(v))], y=v, marker_color=_rgb(PALETTE[0])))
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=260,
                      template="plotly_white", margin=dict(l=40, r=20, t=40, b=40))
    return fig
