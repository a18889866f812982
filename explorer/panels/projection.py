"""4. Projection: the identity space in 2-D, and selecting an identity (by a click on the map
or the plot, or by name) for every panel."""
from __future__ import annotations

import gradio as gr
import numpy as np

from .. import figures, render
from ..projections import SOURCE_GALLERY, SOURCE_PRIOR, SOURCE_TRAIN
from ..state import ExplorerState
from ..tasks import NotReady
from .common import bundle, default_identity, panel, progress_report, save_csv, split_keys

SOURCE_MARKERS = {SOURCE_TRAIN: "o", SOURCE_PRIOR: "s", SOURCE_GALLERY: "x"}


def _map(state: ExplorerState, method: str, colour_by: str, selected: str | None, report=None,
         compute: bool = True):
    points = state.points()
    coords, note = state.projection(str(method or "PCA"), points, report, compute)
    kind, values = state.colour_values(points, str(colour_by or "source"))
    if kind == "categorical":
        cats = list(dict.fromkeys(values))
        colours = np.array([render.PALETTE[cats.index(v) % len(render.PALETTE)] for v in values],
                           np.uint8)
        legend = [(c, render.PALETTE[i % len(render.PALETTE)]) for i, c in enumerate(cats[:8])]
    else:
        values = np.asarray(values, dtype=np.float64)
        colours = render.continuous_colours(values)
        ramp = render.continuous_colours(np.array([0.0, 1.0]))
        legend = [(f"{colour_by} {np.nanmin(values):.3g}", tuple(ramp[0])),
                  (f"{colour_by} {np.nanmax(values):.3g}", tuple(ramp[1]))]
    markers = [SOURCE_MARKERS.get(s, "o") for s in points.sources]
    index = None
    text = str(selected or "").strip()
    if text in points.keys:
        index = points.keys.index(text)
    elif text and not text.lower().startswith("gallery"):  # never wait for the gallery here
        try:
            canonical = state.resolve(text)[0]
            index = points.keys.index(canonical) if canonical in points.keys else None
        except ValueError:
            index = None
    picture = render.scatter_map(coords, colours, markers, index, legend=legend)
    return points, coords, note, kind, values, picture


@panel
def projection(state: ExplorerState, method: str = "PCA", colour_by: str = "source",
               selected: str | None = None, progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """The identity space in 2-D (PCA, or UMAP computed once in the background), as an
    interactive plotly scatter and as a clickable picture. Returns (figure, picture,
    description, files)."""
    method = str(method or "PCA")
    points, coords, note, kind, values, picture = _map(state, method, colour_by, selected,
                                                       progress_report(progress))
    thumbs = [state.thumbnail(k) for k in points.keys]
    counts = {s: points.sources.count(s) for s in dict.fromkeys(points.sources)}
    title = f"{method.upper()} · " + " · ".join(f"{s}: {n}" for s, n in counts.items())
    fig = figures.projection_figure(coords, points.keys, points.sources, points.cameras, kind, values,
                                    colour_by, thumbs, title)
    info = [f"{note}. Computed once and cached; colour changes and clicks reuse it."]
    if state.real_gallery and not (state.features_task.done and not state.features_task.error):
        info.append("The encoded gallery joins the plot once it is encoded ("
                    + (state.background_status() or "not started") + ").")
    ready = sum(1 for t in thumbs if t)
    if ready < len(thumbs):
        busy = state.portraits_task.started and not state.portraits_task.done
        info.append(f"Hover thumbnails: {ready} of {len(thumbs)} portraits ready"
                    + (" (the rest are being generated in the background; press *Show* again "
                       "later)." if busy else "."))
    out = state.output_dir("projection")
    rows = [[k, s, c, f"{x:.6g}", f"{y:.6g}"] for k, s, c, (x, y)
            in zip(points.keys, points.sources, points.cameras, coords, strict=True)]
    files = [save_csv(out / "projection.csv", ["identity", "source", "camera", "x", "y"], rows),
             render.save_png(picture, out / "projection.png")]
    return fig, picture, " ".join(info), bundle(files, "projection")


@panel
def select_on_map(state: ExplorerState, method: str, colour_by: str, evt: gr.SelectData):
    """A click on the rendered projection: the identity nearest to the clicked pixel."""
    points, coords, *_ = _map(state, method, colour_by, None, compute=False)
    i = render.nearest_point(render.map_positions(coords), evt.index)
    if i is None:
        return gr.update()
    return points.keys[i]


def select_from_plot(evt: gr.EventData):
    """A click on a plotly point (sent by the page's script): the point's identity key."""
    key = getattr(evt, "_data", None) or {}
    key = key.get("key") if isinstance(key, dict) else None
    return key if key else gr.update()


@panel
def select_identity(state: ExplorerState, identity: str | None = None,
                    generation_identities: list[str] | None = None, method: str = "PCA",
                    colour_by: str = "source"):
    """Make an identity the current one in every panel. Returns (portrait, description,
    projection picture, sweep identity, directions identity, neighbours identity, interpolation
    start, generation identities)."""
    key, vector = state.resolve(default_identity(state) if identity is None else identity)
    portrait = state.portraits([key])[0] if (state.portrait_ready(key) is not None
                                            or state.has("generator")) else None
    rows, dists = state.nearest_training(vector, 3, exclude=state.row_of(key))
    near = ", ".join(f"{state.train_keys[r]} ({d:.3f})" for r, d in zip(rows, dists, strict=True))
    info = (f"**{key}** selected (now the identity of the sweep, directions, neighbours and interpolation "
            f"panels, and first in generation). |identity| = {np.linalg.norm(vector):.3f}; "
            f"nearest training identities: {near or 'none'}.")
    try:
        *_, picture = _map(state, method, colour_by, key, compute=False)
    except NotReady:  # never start a projection from a selection
        picture = gr.update()
    ids = [key] + [k for k in split_keys(generation_identities) if k != key]
    return (render.upscale(portrait, 4) if portrait is not None else None, info, picture, key, key,
            key, key, ids[:6])


@panel
def selected_portrait(state: ExplorerState, identity: str | None = None):
    """The portrait and description of the selected identity, as on selection, for the page's
    first view. Returns (portrait, description)."""
    return select_identity(state, identity)[:2]
