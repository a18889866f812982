"""One function per explorer event: each takes the ExplorerState first, then the panel's inputs
(every one with a default giving the panel's default view), calls the state and the core API,
and returns the panel's outputs. Nothing here knows about layout; expected failures become
``gr.Error`` so the user (and gradio_client) read a clear message.

    from explorer.state import load_state
    from explorer import handlers
    state = load_state("checkpoints/default")
    picture, info, files = handlers.generate(state)
"""
from __future__ import annotations

import csv
import functools
import inspect
import re
import secrets
import zipfile
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from core.api import GenReID
from core.checkpoint import CheckpointError
from core.data import DataError
from core.metrics import query_average_precision
from core.recognisability import recognisability_at

from . import figures, render
from .messages import shown
from .projections import SOURCE_GALLERY, SOURCE_PRIOR, SOURCE_TRAIN
from .state import ExplorerState
from .tasks import NotReady

MAX_ROWS, MAX_NEW, MAX_NOISES = 12, 8, 12
MAX_COORDINATES, MAX_STEPS, MAX_K = 8, 15, 30
# Default views are sized to answer within a second on a 2-core CPU (`genreid bench`).
SWEEP_COORDINATES = (0,)
SWEEP_LIMIT = 10.0
SWEEP_SD, SWEEP_ABSOLUTE = "standard deviations", "absolute (the paper's)"
DIRECTIONS = (1, 2)  # the directions panel's default rows: the two main principal directions
DEFAULT_NOISES, DEFAULT_K_NEIGHBOURS, DEFAULT_K_RETRIEVAL = 4, 5, 10
RECOGNISABLE_MAP = 0.5  # the generator's goal: generated people found at mAP 0.5 or better
SOURCE_MARKERS = {SOURCE_TRAIN: "o", SOURCE_PRIOR: "s", SOURCE_GALLERY: "x"}


# ----------------------------------------------------------------------------- plumbing
def panel(fn: Callable) -> Callable:
    """Turn the expected failures of a handler into gr.Error (other errors stay bugs)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, DataError, CheckpointError, NotReady, TimeoutError) as e:
            raise gr.Error(str(e)) from e
        except ImportError as e:
            raise gr.Error(f"a library this panel needs is missing: {e}") from e
    return wrapper


def bind(fn: Callable, state: ExplorerState) -> Callable:
    """fn with its first argument (the state) filled in, keeping the signature and type hints
    Gradio reads (defaults, gr.Progress, gr.SelectData)."""
    @functools.wraps(fn)
    def bound(*args, **kwargs):
        return fn(state, *args, **kwargs)
    signature = inspect.signature(fn)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    bound.__annotations__ = {k: v for k, v in getattr(fn, "__annotations__", {}).items()
                             if k != "state"}
    return bound


def _report(progress) -> Callable[[float, str], None]:
    if progress is None:
        return lambda fraction, desc: None
    return lambda fraction, desc: progress(float(fraction), desc=desc)


def _int(value, name: str, lo: int, hi: int) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number, not {shown(value)}") from None
    if not np.isfinite(v) or v != int(v):
        raise ValueError(f"{name} must be a whole number, not {shown(value)}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be within {lo}..{hi}; got {v:.6g}")
    return int(v)


def _float(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number, not {shown(value)}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, not {shown(value)}")
    return v


def _save_csv(path: Path, header: list[str], rows) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def _bundle(files: list[str], name: str) -> list[str]:
    """One zip of a result's files (pictures, tables, arrays), next to them. One download per
    result: each file is a request for a notebook's gradio_client (50-70 ms apiece here)."""
    path = Path(files[0]).parent / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as z:
        for f in files:
            kind = zipfile.ZIP_STORED if f.endswith(".png") else zipfile.ZIP_DEFLATED
            z.write(f, Path(f).name, compress_type=kind)
    return [str(path)]


def _vector_rows(labels, vectors) -> list[list]:
    return [[label, *(f"{x:.6g}" for x in v)] for label, v in zip(labels, vectors, strict=True)]


def _split_keys(identities) -> list[str]:
    if identities is None:
        return []
    if isinstance(identities, str):
        identities = re.split(r"[,;\n]", identities)
    elif not isinstance(identities, (list, tuple)):
        identities = [identities]
    return [str(k).strip() for k in identities if str(k).strip()]


# ----------------------------------------------------------------------------- defaults
def default_identity(state: ExplorerState) -> str:
    return state.train_keys[0]


def default_second_identity(state: ExplorerState) -> str:
    if len(state.train_keys) > 1:
        return state.train_keys[1]
    return state.prior_keys[0] if state.prior_keys else state.train_keys[0]


def default_identities(state: ExplorerState) -> list[str]:
    return state.train_keys[:2]


def default_new_identities(state: ExplorerState) -> int:
    return 1 if state.has("prior") else 0


def network_note(state: ExplorerState, preview: bool) -> str:
    """Which network drew the pictures (said under every generated picture)."""
    if preview:
        return (f"*Fast preview*: {state.model.preview_description()}; untick it for the full "
                f"generator ({state.model.config.schedule.steps} steps).")
    return f"Full generator ({state.model.config.schedule.steps} sampling steps)."


def real_note(state: ExplorerState) -> str:
    """Where the real pictures beside generated people come from, or how to get them."""
    if state.real_portraits:
        return (f"Framed orange and captioned *real*: the person's real picture ({state.real.where}); "
                "prior samples and typed vectors have none. ")
    return ("No real pictures of the training persons are known, so none is shown beside the "
            "generated ones: start the explorer with `--data DIR` (the dataset the set was trained "
            "on, e.g. `../shared/data/cuhk03`) to see each person as they really are. ")


def with_real_column(state: ExplorerState, keys: list[str], rows: list[list],
                     captions: list[list]) -> tuple[list[list], list[list], list[list] | None, list]:
    """Grid rows with each key's real picture (if any) first, framed and captioned as real.
    Returns (cells, captions, frames or None, [(key, real picture)])."""
    reals = [state.real_picture(k) for k in keys]
    found = [(k, r) for k, r in zip(keys, reals, strict=True) if r is not None]
    if not found:
        return rows, captions, None, []
    cells = [[r, *row] for r, row in zip(reals, rows, strict=True)]
    caps = [["real" if r is not None else None, *c] for r, c in zip(reals, captions, strict=True)]
    frames = [[render.REAL if r is not None else None] + [None] * len(row)
              for r, row in zip(reals, rows, strict=True)]
    return cells, caps, frames, found


def _save_reals(out: Path, found: list) -> list[str]:
    return [render.save_png(img, out / f"real-{key.replace(' ', '-')}.png") for key, img in found]


def generator_note(state: ExplorerState) -> str:
    """One line on how far this set's generated people look like their person, from the
    set's own `genreid diagnose --save` measure."""
    guidance = state.model.config.generator.guidance
    figures = recognisability_at(state.diagnosis, guidance)
    if figures is None:
        return ("How far this set's pictures look like their person has not been measured "
                f"(`genreid diagnose --checkpoint {state.folder} --save`). ")
    real = f" (real crops of the same persons: {figures['real_mAP']:.2f})" if figures["real_mAP"] else ""
    verdict = ("follows identity only weakly: do not read a row as a portrait of its person"
               if figures["mAP"] < RECOGNISABLE_MAP else "draws recognisable people")
    return (f"**This set's generator {verdict}.** An encoder trained on real crops finds the person "
            f"a picture was generated for among the real training crops with mAP {figures['mAP']:.2f}"
            f"{real} (`genreid diagnose`, the full sampler at guidance {guidance:g}). ")


# ----------------------------------------------------------------------------- 1. generation
@panel
def generate(state: ExplorerState, identities: list[str] | None = None,
             new_identities: int | None = None, noises: int = DEFAULT_NOISES, noise_seed: int = 0,
             prior_seed: int = 0, preview: bool = True,
             progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """Identities (rows) x noises (columns), the noise the same down each column.
    Returns (grid picture, description, files)."""
    state.require("generator")
    keys = _split_keys(default_identities(state) if identities is None else identities)
    new = _int(default_new_identities(state) if new_identities is None else new_identities,
               "new identities", 0, MAX_NEW)
    n = _int(noises, "noises", 1, MAX_NOISES)
    noise_seed = _int(noise_seed, "noise seed", 0, 2**31 - 1)
    prior_seed = _int(prior_seed, "prior seed", 0, 2**31 - 1)
    labels, vectors = [], []
    for k in keys:
        key, v = state.resolve(k)
        labels.append(key)
        vectors.append(v)
    if new:
        state.require("prior")
        sampled = state.compute(state.model.sample_identities, new, seed=prior_seed)
        labels += [f"new {i}\n(prior seed {prior_seed})" for i in range(new)]
        vectors += list(sampled)
    if not vectors:
        raise ValueError("choose at least one identity, or ask for new ones from the prior")
    if len(vectors) > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} identities at once; got {len(vectors)}")
    vectors = np.stack(vectors).astype(np.float32)
    noise = state.noise(n, noise_seed)
    images = state.generate(np.repeat(vectors, n, 0), np.tile(noise, (len(vectors), 1, 1, 1)),
                            _report(progress), "generation", preview)
    grid = images.reshape(len(vectors), n, *images.shape[1:])
    captions = [[f"noise {j + 1}" for j in range(n)]] + [[None] * n] * (len(vectors) - 1)
    row_keys = labels[:len(keys)] + [""] * new
    cells, captions, frames, reals = with_real_column(state, row_keys, list(grid), captions)
    picture = render.compose(cells, row_labels=labels, captions=captions, frames=frames)
    out = state.output_dir("generate")
    plain = [label.replace("\n", " ") for label in labels]
    files = [render.save_png(picture, out / "generation.png"), *_save_reals(out, reals),
             _save_csv(out / "identities.csv", ["identity"] + [f"z{i}" for i in range(state.dim)],
                       _vector_rows(plain, vectors)),
             str(out / "identities.npy"), str(out / "noises.npy")]
    np.save(out / "identities.npy", vectors)
    np.save(out / "noises.npy", noise)
    info = (generator_note(state) + "\n\n"
            f"**{len(vectors)} identities × {n} noises** (noise seed {noise_seed}; the same noise "
            "down each column, so a column differs only by identity). "
            + (f"New identities are prior samples with seed {prior_seed}. " if new else "")
            + real_note(state)
            + "Same inputs, same pictures: everything here is deterministic. "
            + network_note(state, preview))
    return picture, info, _bundle(files, "generation")


def new_noise_seed() -> int:
    """A fresh random noise seed (for the 'New noises' button)."""
    return secrets.randbelow(1_000_000)


# ----------------------------------------------------------------------------- 2. sweep
def _coordinates(coordinates, dim: int) -> list[int]:
    if coordinates is None:
        coordinates = [c for c in SWEEP_COORDINATES if c < dim]
    if isinstance(coordinates, (str, int, float)):
        coordinates = re.split(r"[,;\s]+", str(coordinates))
    out = []
    for c in coordinates:
        text = str(c).strip().lower().lstrip("z")
        if not text:
            continue
        if not re.fullmatch(r"\d+(\.0+)?", text):
            raise ValueError(f"coordinates are numbers 0..{dim - 1} (or z0..z{dim - 1}); got {shown(c)}")
        c = int(float(text))
        if not 0 <= c < dim:
            raise ValueError(f"coordinates are 0..{dim - 1}; got {c}")
        if c not in out:
            out.append(c)
    if not out:
        raise ValueError("choose at least one coordinate to sweep")
    if len(out) > MAX_COORDINATES:
        raise ValueError(f"at most {MAX_COORDINATES} coordinates at once; got {len(out)}")
    return out


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
    s = np.linspace(low, high, steps)
    if units == SWEEP_SD:
        centre = vector if relative else state.space.mean
        return centre[:, None] + state.space.std[:, None] * s[None]
    return (vector[:, None] if relative else np.zeros((state.dim, 1))) + s[None]


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
    low, high = _float(low, "low"), _float(high, "high")
    if max(abs(low), abs(high)) > SWEEP_LIMIT:
        unit = ("standard deviations" if units == SWEEP_SD
                else "(identity coordinates are of the order of 0.1)")
        raise ValueError(f"the range must stay within ±{SWEEP_LIMIT:g} {unit}; got {low:g} to {high:g}")
    if low == high:
        raise ValueError("the range is empty: low and high are equal")
    steps = _int(steps, "steps", 2, MAX_STEPS)
    noise_seed = _int(noise_seed, "noise seed", 0, 2**31 - 1)
    values = sweep_values(state, vector, low, high, steps, relative, units)  # (D, steps)
    vectors = np.repeat(vector[None], len(coords) * steps, 0)
    for r, c in enumerate(coords):
        vectors[r * steps:(r + 1) * steps, c] = values[c]
    vectors = vectors.astype(np.float32)
    report = _report(progress)
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
             str(out / "vectors.npy"), *_save_reals(out, [(key, real)] if real is not None else [])]
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
    return picture, table, info, _bundle(files, "sweep")


# ----------------------------------------------------------------------------- directions
def _directions(directions, count: int) -> list[int]:
    """Principal directions as 0-based indices from '1, 2' (or 'PC1', or numbers)."""
    if directions is None:
        directions = [d for d in DIRECTIONS if d <= count]
    if isinstance(directions, (str, int, float)):
        directions = re.split(r"[,;\s]+", str(directions))
    out = []
    for d in directions:
        text = str(d).strip().lower().removeprefix("pc")
        if not text:
            continue
        if not re.fullmatch(r"\d+(\.0+)?", text) or not 1 <= int(float(text)) <= count:
            raise ValueError(f"principal directions are numbered 1..{count}; got {shown(d)}")
        if int(float(text)) - 1 not in out:
            out.append(int(float(text)) - 1)
    if not out:
        raise ValueError("choose at least one principal direction")
    if len(out) > MAX_COORDINATES:
        raise ValueError(f"at most {MAX_COORDINATES} directions at once; got {len(out)}")
    return out


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
    low, high = _float(low, "low"), _float(high, "high")
    if max(abs(low), abs(high)) > SWEEP_LIMIT:
        raise ValueError(f"the range must stay within ±{SWEEP_LIMIT:g} standard deviations; "
                         f"got {low:g} to {high:g}")
    if low == high:
        raise ValueError("the range is empty: low and high are equal")
    steps = _int(steps, "steps", 2, MAX_STEPS)
    noise_seed = _int(noise_seed, "noise seed", 0, 2**31 - 1)
    sds = np.linspace(low, high, steps)
    vectors = np.concatenate([space.along_direction(vector, k, sds) for k in chosen]).astype(np.float32)
    images = state.generate(vectors, np.repeat(state.noise(1, noise_seed), len(vectors), 0),
                            _report(progress), "directions", preview)
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
             *_save_reals(out, [(key, real)] if real is not None else [])]
    shares = ", ".join(f"PC{k + 1} {space.explained[k]:.1%} (sd {np.sqrt(space.variances[k]):.3f})"
                       for k in chosen)
    info = (f"**{key}**, noise seed {noise_seed}: moved along principal direction"
            f"{'s' if len(chosen) > 1 else ''} of the {len(state.train_keys)} training identities, "
            f"from {low:+g} to {high:+g} of each direction's standard deviation in {steps} steps "
            f"(share of the identities' variance and deviation: {shares}). The column at 0 is the "
            "identity itself. Each direction is a unit vector in the identity space "
            "(`direction-PC<k>.npy` in the download; all of them in `all-directions.npy`, one per "
            "row). " + (real_note(state) if real is not None else "") + network_note(state, preview))
    return picture, table, info, _bundle(files, "directions")


# ----------------------------------------------------------------------------- 3. neighbours
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
    k = _int(k, "k", 1, MAX_K)
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
    portraits = state.portraits([key, *keys, *pair_keys], _report(progress))
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
    return picture, table, pairs, stats, histogram, _bundle(files, "neighbours")


# ----------------------------------------------------------------------------- 4. projection
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
                                                       _report(progress))
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
    files = [_save_csv(out / "projection.csv", ["identity", "source", "camera", "x", "y"], rows),
             render.save_png(picture, out / "projection.png")]
    return fig, picture, " ".join(info), _bundle(files, "projection")


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
    ids = [key] + [k for k in _split_keys(generation_identities) if k != key]
    return (render.upscale(portrait, 4) if portrait is not None else None, info, picture, key, key,
            key, key, ids[:6])


@panel
def selected_portrait(state: ExplorerState, identity: str | None = None):
    """The portrait and description of the selected identity, as on selection, for the page's
    first view. Returns (portrait, description)."""
    return select_identity(state, identity)[:2]


# ----------------------------------------------------------------------------- 5. retrieval
RANKED_APPROX = 1000  # how far an approximate gallery index ranks each query


@panel
def retrieve(state: ExplorerState, upload: str | None = None, query: int = 0,
             k: int = DEFAULT_K_RETRIEVAL, progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """A query (uploaded, else the query set's picture at index query) against the gallery:
    top-k matches framed green/red where labels are known, and the query's average precision.
    Returns (picture, table, description, files)."""
    state.require("img2id")
    report = _report(progress)
    k = _int(k, "k", 1, MAX_K)
    image, label, camid, caption, name = state.picture(_int(query, "query index", 0, 10**9),
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
             _save_csv(out / "ranking.csv", ["rank", "gallery index", "picture", "person", "distance",
                                             "right person"],
                       [[r + 1, int(j), gallery.names[j], gallery.who[j], f"{ranked[r]:.6g}", match(j)]
                        for r, j in enumerate(order.tolist())]),
             str(out / "query_identity.npy")]
    np.save(out / "query_identity.npy", q[0])
    lines.insert(0, f"Query: {name}. Gallery: {len(gallery)} pictures.")
    return picture, table, " ".join(lines), _bundle(files, "retrieval")


# ----------------------------------------------------------------------------- 6. decomposition
@panel
def decompose(state: ExplorerState, upload: str | None = None, picture: int = 0,
              progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """A picture (uploaded, else the query set's picture at index picture) split into identity
    (Img2ID) and noise (Img2Noise), regenerated from the two.
    Returns (picture, identity figure, description, files)."""
    state.require("generator", "img2id", "img2noise")
    report = _report(progress)
    image, _, _, caption, name = state.picture(_int(picture, "picture index", 0, 10**9), upload,
                                               report)
    report(0.5, "decomposing")
    parts = state.compute(state.model.decompose, image[None])
    noise_picture = GenReID.noise_picture(parts.noise)[0]
    recon, error = parts.reconstruction[0], float(parts.error[0])
    strip = render.strip([parts.image[0], noise_picture, recon,
                          render.error_map(parts.image[0], recon)],
                         [f"input\n{caption}", "noise\n(clipped ±2.5)", "regenerated\nGEN(noise, id)",
                          f"|error| x 4\nMAE {error:.3f}"], [render.EDGE] * 4)
    vector = parts.identity[0]
    rows, dists = state.nearest_training(vector, 5)
    near = ", ".join(f"{state.train_keys[r]} ({d:.3f})" for r, d in zip(rows, dists, strict=True))
    z = parts.noise[0]
    info = (f"**{name}**: reconstruction error {error:.4f} (mean absolute, pixels in [0, 1]). "
            f"Identity |v| = {np.linalg.norm(vector):.3f}; nearest training identities: {near}. "
            f"Noise: mean {z.mean():+.3f}, std {z.std():.3f}, "
            f"{(np.abs(z) > 2.5).mean():.1%} of values clipped for display.")
    out = state.output_dir("decompose")
    files = [render.save_png(strip, out / "decomposition.png"),
             render.save_png(noise_picture, out / "noise.png"),
             render.save_png(recon, out / "regenerated.png"),
             _save_csv(out / "identity.csv", [f"z{i}" for i in range(state.dim)],
                       [[f"{x:.6g}" for x in vector]]),
             str(out / "identity.npy"), str(out / "noise.npy")]
    np.save(out / "identity.npy", vector)
    np.save(out / "noise.npy", z)
    figure = figures.vector_figure(vector, "identity vector (Img2ID)")
    return strip, figure, info, _bundle(files, "decomposition")


@panel
def swap(state: ExplorerState, upload_a: str | None = None, upload_b: str | None = None,
         picture_a: int = 0, picture_b: int = 1, progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """A's noise with B's identity (A's pose and background, B's person), and the reverse.
    Returns (picture, description, files)."""
    state.require("generator", "img2id", "img2noise")
    report = _report(progress)
    a = state.picture(_int(picture_a, "picture A", 0, 10**9), upload_a, report)
    b = state.picture(_int(picture_b, "picture B", 0, 10**9), upload_b, report)
    report(0.3, "decomposing A and B")
    parts = state.compute(state.model.decompose, np.stack([a[0], b[0]]))
    swapped = state.generate(parts.identity[[1, 0]], parts.noise[[0, 1]],
                             lambda f, d: report(0.6 + 0.4 * f, d), "swapping")
    picture = render.strip([parts.image[0], parts.image[1], swapped[0], swapped[1]],
                           [f"A\n{a[3]}", f"B\n{b[3]}", "A's pose,\nB's person",
                            "B's pose,\nA's person"],
                           [None, None, render.BLUE, render.BLUE])
    out = state.output_dir("swap")
    files = [render.save_png(picture, out / "swap.png"),
             render.save_png(swapped[0], out / "a_pose_b_person.png"),
             render.save_png(swapped[1], out / "b_pose_a_person.png")]
    info = (f"GEN(noise of A, identity of B) keeps A's pose, background and light and puts B's "
            f"person in; the last picture is the reverse. A: {a[4]}; B: {b[4]}.")
    return picture, info, _bundle(files, "swap")


@panel
def interpolate(state: ExplorerState, identity_a: str | None = None, identity_b: str | None = None,
                steps: int = 8, noise_seed: int = 0, preview: bool = True,
                progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """A straight path from identity A to identity B with one fixed noise.
    Returns (picture, description, files)."""
    state.require("generator")
    ka, va = state.resolve(default_identity(state) if identity_a is None else identity_a)
    kb, vb = state.resolve(default_second_identity(state) if identity_b is None else identity_b)
    steps = _int(steps, "steps", 2, 16)
    noise_seed = _int(noise_seed, "noise seed", 0, 2**31 - 1)
    t = np.linspace(0.0, 1.0, steps)
    vectors = ((1 - t)[:, None] * va[None] + t[:, None] * vb[None]).astype(np.float32)
    images = state.generate(vectors, np.repeat(state.noise(1, noise_seed), steps, 0),
                            _report(progress), "interpolation", preview)
    captions = [f"t = {x:.2f}" for x in t]
    captions[0], captions[-1] = f"{ka}\nt = 0", f"{kb}\nt = 1"
    picture = render.strip(list(images), captions)
    out = state.output_dir("interpolate")
    files = [render.save_png(picture, out / "interpolation.png"), str(out / "vectors.npy"),
             _save_csv(out / "vectors.csv", ["t"] + [f"z{i}" for i in range(state.dim)],
                       _vector_rows([f"{x:.4f}" for x in t], vectors))]
    np.save(out / "vectors.npy", vectors)
    info = (f"(1 − t) · {ka} + t · {kb}, {steps} steps, noise seed {noise_seed}; "
            f"distance {np.linalg.norm(va - vb):.3f}. " + network_note(state, preview))
    return picture, info, _bundle(files, "interpolation")
