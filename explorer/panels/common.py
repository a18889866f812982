"""What every panel's handler shares: turning expected failures into gr.Error, binding the
state for Gradio, reading a user's numbers and identity lists, writing the downloads, the
default identities, and the notes said under generated pictures."""
from __future__ import annotations

import csv
import functools
import inspect
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import numpy as np

from core.checkpoint import CheckpointError
from core.data import DataError

from .. import render
from ..messages import shown
from ..state import ExplorerState
from ..tasks import NotReady

MAX_K = 30  # the most neighbours or matches a panel shows


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


def progress_report(progress) -> Callable[[float, str], None]:
    if progress is None:
        return lambda fraction, desc: None
    return lambda fraction, desc: progress(float(fraction), desc=desc)


def as_int(value, name: str, lo: int, hi: int) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number, not {shown(value)}") from None
    if not np.isfinite(v) or v != int(v):
        raise ValueError(f"{name} must be a whole number, not {shown(value)}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be within {lo}..{hi}; got {v:.6g}")
    return int(v)


def as_float(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number, not {shown(value)}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, not {shown(value)}")
    return v


def save_csv(path: Path, header: list[str], rows) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def bundle(files: list[str], name: str) -> list[str]:
    """One zip of a result's files (pictures, tables, arrays), next to them. One download per
    result: each file is a request for a notebook's gradio_client (50-70 ms apiece here)."""
    path = Path(files[0]).parent / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as z:
        for f in files:
            kind = zipfile.ZIP_STORED if f.endswith(".png") else zipfile.ZIP_DEFLATED
            z.write(f, Path(f).name, compress_type=kind)
    return [str(path)]


def vector_rows(labels, vectors) -> list[list]:
    return [[label, *(f"{x:.6g}" for x in v)] for label, v in zip(labels, vectors, strict=True)]


def split_keys(identities) -> list[str]:
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


def save_reals(out: Path, found: list) -> list[str]:
    return [render.save_png(img, out / f"real-{key.replace(' ', '-')}.png") for key, img in found]

