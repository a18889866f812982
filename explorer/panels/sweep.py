"""2. Sweep: one identity with coordinates swept over a range (one row each), and the
directions panel: one identity walked along principal directions of the training identities."""
from __future__ import annotations

import re

import gradio as gr
import numpy as np
import pandas as pd

from .. import render
from ..messages import shown
from ..state import ExplorerState
from .common import (
    as_float,
    as_int,
    bundle,
    default_identity,
    network_note,
    panel,
    progress_report,
    real_note,
    save_reals,
)

MAX_COORDINATES, MAX_STEPS = 8, 15
# Default views are sized to answer within a second on a 2-core CPU (`genreid bench`).
SWEEP_COORDINATES = (0,)
SWEEP_LIMIT = 10.0
SWEEP_SD, SWEEP_ABSOLUTE = "standard deviations", "absolute (the paper's)"
DIRECTIONS = (1, 2)  # the directions panel's default rows: the two main principal directions


def _numbers(values, default, lo: int, hi: int, prefix: str, *, form: str, out_of_range: str,
             noun: str, plural: str) -> list[int]:
    """Distinct integers lo..hi in the order given, from '1, 2' or a list; each may carry
    `prefix` ('z3', 'PC1'). The messages are formatted with {got} (the entry as typed) and {n}
    (its number)."""
    if values is None:
        values = default
    if isinstance(values, (str, int, float)):
        values = re.split(r"[,;\s]+", str(values))
    out = []
    for v in values:
        text = str(v).strip().lower()
        # a one-letter prefix may repeat ('zz3'), as the coordinates have always accepted
        text = text.lstrip(prefix) if len(prefix) == 1 else text.removeprefix(prefix)
        if not text:
            continue
        if not re.fullmatch(r"\d+(\.0+)?", text):
            raise ValueError(form.format(got=shown(v)))
        n = int(float(text))
        if not lo <= n <= hi:
            raise ValueError(out_of_range.format(got=shown(v), n=n))
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError(f"choose at least one {noun}")
    if len(out) > MAX_COORDINATES:
        raise ValueError(f"at most {MAX_COORDINATES} {plural} at once; got {len(out)}")
    return out


def _coordinates(coordinates, dim: int) -> list[int]:
    return _numbers(coordinates, [c for c in SWEEP_COORDINATES if c < dim], 0, dim - 1, "z",
                    form=f"coordinates are numbers 0..{dim - 1} (or z0..z{dim - 1}); got {{got}}",
                    out_of_range=f"coordinates are 0..{dim - 1}; got {{n}}",
                    noun="coordinate to sweep", plural="coordinates")


def _units(units) -> str:
    text = str(units).strip().lower()
    if text in ("sd", "std", SWEEP_SD, "standard deviation"):
        return SWEEP_SD
    if text.startswith("absolute"):
        return SWEEP_ABSOLUTE
    raise ValueError(f"the range is in {SWEEP_SD!r} or {SWEEP_ABSOLUTE!r}, not {shown(units)}")


def sweep_values(state: ExplorerState, vector: np.ndarray, low: float, high: float, steps: int,
                 relative: bool, units: str) -> np.ndarray:
    """(D, steps): the values each coordinate takes in a sweep. In standard deviations (of the
    coordinate over the training identities) around the coordinate's mean, or around the
    identity's own value if relative; in absolute values set as they are, or added to the
    identity's own value if relative."""
    return state.space.coordinate_grid(vector, np.linspace(low, high, steps),
                                       "sd" if units == SWEEP_SD else "absolute",
                                       "identity" if relative else "mean")


def sweep_range_defaults(units: str) -> tuple[float, float]:
    """The sweep's default range for its units: ±3 standard deviations, or the paper's ±0.3."""
    return (-0.3, 0.3) if _units(units) == SWEEP_ABSOLUTE else (-3.0, 3.0)


@panel
def sweep(state: ExplorerState, identity: str | None = None, coordinates: list | None = None,
          low: float = -3.0, high: float = 3.0, steps: int = 7, noise_seed: int = 0,
          relative: bool = False, rank_all: bool = False, preview: bool = True,
          units: str = SWEEP_SD,
          progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """One identity, one fixed noise, coordinates swept over [low, high] (one row each), in
    standard deviations of the training identities (the default) or in absolute values (the
    paper's -0.3 to 0.3). Returns (picture, ranking table, description, files)."""
    state.require("generator")
    key, vector = state.resolve(default_identity(state) if identity is None else identity)
    vector = np.asarray(vector, np.float64)
    coords = _coordinates(coordinates, state.dim)
    units = _units(units)
    low, high = as_float(low, "low"), as_float(high, "high")
    if max(abs(low), abs(high)) > SWEEP_LIMIT:
        unit = ("standard deviations" if units == SWEEP_SD
                else "(identity coordinates are of the order of 0.1)")
        raise ValueError(f"the range must stay within ±{SWEEP_LIMIT:g} {unit}; got {low:g} to {high:g}")
    if low == high:
        raise ValueError("the range is empty: low and high are equal")
    steps = as_int(steps, "steps", 2, MAX_STEPS)
    noise_seed = as_int(noise_seed, "noise seed", 0, 2**31 - 1)
    values = sweep_values(state, vector, low, high, steps, relative, units)  # (D, steps)
    vectors = np.repeat(vector[None], len(coords) * steps, 0)
    for r, c in enumerate(coords):
        vectors[r * steps:(r + 1) * steps, c] = values[c]
    vectors = vectors.astype(np.float32)
    report = progress_report(progress)
    scale = 0.5 if rank_all else 1.0
    images = state.generate(vectors, np.repeat(state.noise(1, noise_seed), len(vectors), 0),
                            lambda f, d: report(scale * f, d), "sweep", preview)
    grid = images.reshape(len(coords), steps, *images.shape[1:])
    offsets = np.linspace(low, high, steps)
    if units == SWEEP_SD:
        captions = [[f"z{c} = {v:+.3f}\n{o:+.1f} sd" for v, o in zip(values[c], offsets, strict=True)]
                    for c in coords]
    else:
        captions = [[(f"dz{c} = {o:+.2f}" if relative else f"z{c} = {o:+.2f}") for o in offsets]
                    for c in coords]
    real = state.real_picture(key)
    cells, frames = [list(row) for row in grid], None
    if real is not None:
        cells = [[real if r == 0 else None, *row] for r, row in enumerate(cells)]
        captions = [["real" if r == 0 else None, *caps] for r, caps in enumerate(captions)]
        frames = [[render.REAL if r == 0 else None] + [None] * steps for r in range(len(coords))]
    picture = render.compose(cells, captions=captions, frames=frames)
    g = grid.astype(np.float32) / 255.0
    along = np.abs(np.diff(g, axis=1)).mean((2, 3, 4)).sum(1)  # path length of each row
    ends = np.abs(g[:, -1] - g[:, 0]).mean((1, 2, 3))
    swept = {c: (float(e), float(a)) for c, e, a in zip(coords, ends, along, strict=True)}
    if rank_all:
        change = state.sweep_ranking(vector, noise_seed, values[:, 0], values[:, -1],
                                     lambda f, d: report(0.5 + 0.5 * f, d), preview)
        rows = [(c, float(change[c]), swept.get(c, (None, None))[1]) for c in range(state.dim)]
    else:
        rows = [(c, e, a) for c, (e, a) in swept.items()]
    rows.sort(key=lambda r: -r[1])
    table = pd.DataFrame([[i + 1, f"z{c}", float(f"{values[c, 0]:.4g}"), float(f"{values[c, -1]:.4g}"),
                           float(f"{e:.4g}"), None if a is None else float(f"{a:.4g}")]
                          for i, (c, e, a) in enumerate(rows)],
                         columns=["rank", "coordinate", "from", "to", "change end to end",
                                  "change along the sweep"])
    out = state.output_dir("sweep")
    files = [render.save_png(picture, out / "sweep.png"), str(out / "ranking.csv"),
             str(out / "vectors.npy"), *save_reals(out, [(key, real)] if real is not None else [])]
    table.to_csv(out / "ranking.csv", index=False)
    np.save(out / "vectors.npy", vectors)
    if units == SWEEP_SD:
        centre = "the identity's own value" if relative else "the training identities' mean"
        ranges = "; ".join(f"z{c}: sd {state.space.std[c]:.3f}, {values[c, 0]:+.3f} to {values[c, -1]:+.3f}"
                           for c in coords)
        what = (f"from {low:+g} to {high:+g} standard deviations (of that coordinate over the "
                f"{len(state.train_keys)} training identities) around {centre} ({ranges})")
    else:
        what = (f"{'added to the identity' + chr(39) + 's own value' if relative else 'set to each value'}, "
                f"{low:+.2f} to {high:+.2f} (absolute values, as the paper)")
    info = (f"**{key}**, noise seed {noise_seed}, {steps} steps: "
            f"coordinate{'s' if len(coords) > 1 else ''} {', '.join(f'z{c}' for c in coords)} {what}. "
            "Ranking (" + ("every coordinate, each over its own range" if rank_all
                           else "the swept coordinates") + "): "
            "mean absolute pixel change in [0, 1] between the two ends of the range"
            + ("" if rank_all else "; tick *rank every coordinate* to rank all "
               f"{state.dim} (2 × {state.dim} pictures)") + ". "
            + (real_note(state) if real is not None else "") + network_note(state, preview))
    return picture, table, info, bundle(files, "sweep")


# ----------------------------------------------------------------------------- directions
def _directions(directions, count: int) -> list[int]:
    """Principal directions as 0-based indices from '1, 2' (or 'PC1', or numbers)."""
    message = f"principal directions are numbered 1..{count}; got {{got}}"
    chosen = _numbers(directions, [d for d in DIRECTIONS if d <= count], 1, count, "pc",
                      form=message, out_of_range=message, noun="principal direction",
                      plural="directions")
    return [d - 1 for d in chosen]


def directions_table(state: ExplorerState) -> pd.DataFrame:
    """Every principal direction of the training identities with its share of their variance."""
    space = state.space
    share = space.explained
    return pd.DataFrame({"direction": [f"PC{k + 1}" for k in range(space.num_directions)],
                         "share of variance": np.round(share, 4),
                         "cumulative share": np.round(np.cumsum(share), 4),
                         "standard deviation": np.round(np.sqrt(space.variances), 5)})


@panel
def directions(state: ExplorerState, identity: str | None = None, directions: list | None = None,
               low: float = -3.0, high: float = 3.0, steps: int = 5, noise_seed: int = 0,
               preview: bool = True,
               progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """One identity walked along principal directions of the training identities (one row each),
    in each direction's standard deviations, with one fixed noise. Returns (picture, table of
    every direction's share of variance, description, files)."""
    state.require("generator")
    key, vector = state.resolve(default_identity(state) if identity is None else identity)
    space = state.space
    chosen = _directions(directions, space.num_directions)
    low, high = as_float(low, "low"), as_float(high, "high")
    if max(abs(low), abs(high)) > SWEEP_LIMIT:
        raise ValueError(f"the range must stay within ±{SWEEP_LIMIT:g} standard deviations; "
                         f"got {low:g} to {high:g}")
    if low == high:
        raise ValueError("the range is empty: low and high are equal")
    steps = as_int(steps, "steps", 2, MAX_STEPS)
    noise_seed = as_int(noise_seed, "noise seed", 0, 2**31 - 1)
    sds = np.linspace(low, high, steps)
    vectors = np.concatenate([space.along_direction(vector, k, sds) for k in chosen]).astype(np.float32)
    images = state.generate(vectors, np.repeat(state.noise(1, noise_seed), len(vectors), 0),
                            progress_report(progress), "directions", preview)
    grid = images.reshape(len(chosen), steps, *images.shape[1:])
    captions = [[f"{s:+.1f} sd" if s else "0 (itself)" for s in sds] for _ in chosen]
    labels = [f"PC{k + 1}\n{space.explained[k]:.0%} of var." for k in chosen]
    real = state.real_picture(key)
    cells, frames = [list(row) for row in grid], None
    if real is not None:
        cells = [[real if r == 0 else None, *row] for r, row in enumerate(cells)]
        captions = [["real" if r == 0 else None, *caps] for r, caps in enumerate(captions)]
        frames = [[render.REAL if r == 0 else None] + [None] * steps for r in range(len(chosen))]
    picture = render.compose(cells, captions=captions, row_labels=labels, frames=frames)
    table = directions_table(state)
    out = state.output_dir("directions")
    for k in chosen:
        np.save(out / f"direction-PC{k + 1}.npy", space.direction_vector(k).astype(np.float32))
    np.save(out / "vectors.npy", vectors)
    np.save(out / "all-directions.npy", space.directions.astype(np.float32))
    table.to_csv(out / "directions.csv", index=False)
    files = [render.save_png(picture, out / "directions.png"), str(out / "directions.csv"),
             str(out / "all-directions.npy"), str(out / "vectors.npy"),
             *[str(out / f"direction-PC{k + 1}.npy") for k in chosen],
             *save_reals(out, [(key, real)] if real is not None else [])]
    shares = ", ".join(f"PC{k + 1} {space.explained[k]:.1%} (sd {np.sqrt(space.variances[k]):.3f})"
                       for k in chosen)
    info = (f"**{key}**, noise seed {noise_seed}: moved along principal direction"
            f"{'s' if len(chosen) > 1 else ''} of the {len(state.train_keys)} training identities, "
            f"from {low:+g} to {high:+g} of each direction's standard deviation in {steps} steps "
            f"(share of the identities' variance and deviation: {shares}). The column at 0 is the "
            "identity itself. Each direction is a unit vector in the identity space "
            "(`direction-PC<k>.npy` in the download; all of them in `all-directions.npy`, one per "
            "row). " + (real_note(state) if real is not None else "") + network_note(state, preview))
    return picture, table, info, bundle(files, "directions")
