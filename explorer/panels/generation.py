"""1. Generation: identities (rows) times fixed noises (columns)."""
from __future__ import annotations

import secrets

import gradio as gr
import numpy as np

from core.recognisability import recognisability_at

from .. import render
from ..state import ExplorerState
from .common import (
    as_int,
    bundle,
    default_identities,
    default_new_identities,
    network_note,
    panel,
    progress_report,
    real_note,
    save_csv,
    save_reals,
    split_keys,
    vector_rows,
    with_real_column,
)

MAX_ROWS, MAX_NEW, MAX_NOISES = 12, 8, 12
DEFAULT_NOISES = 4  # sized to answer within a second on a 2-core CPU (`genreid bench`)
RECOGNISABLE_MAP = 0.5  # the generator's goal: generated people found at mAP 0.5 or better


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


@panel
def generate(state: ExplorerState, identities: list[str] | None = None,
             new_identities: int | None = None, noises: int = DEFAULT_NOISES, noise_seed: int = 0,
             prior_seed: int = 0, preview: bool = True,
             progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """Identities (rows) x noises (columns), the noise the same down each column.
    Returns (grid picture, description, files)."""
    state.require("generator")
    keys = split_keys(default_identities(state) if identities is None else identities)
    new = as_int(default_new_identities(state) if new_identities is None else new_identities,
               "new identities", 0, MAX_NEW)
    n = as_int(noises, "noises", 1, MAX_NOISES)
    noise_seed = as_int(noise_seed, "noise seed", 0, 2**31 - 1)
    prior_seed = as_int(prior_seed, "prior seed", 0, 2**31 - 1)
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
                            progress_report(progress), "generation", preview)
    grid = images.reshape(len(vectors), n, *images.shape[1:])
    captions = [[f"noise {j + 1}" for j in range(n)]] + [[None] * n] * (len(vectors) - 1)
    row_keys = labels[:len(keys)] + [""] * new
    cells, captions, frames, reals = with_real_column(state, row_keys, list(grid), captions)
    picture = render.compose(cells, row_labels=labels, captions=captions, frames=frames)
    out = state.output_dir("generate")
    plain = [label.replace("\n", " ") for label in labels]
    files = [render.save_png(picture, out / "generation.png"), *save_reals(out, reals),
             save_csv(out / "identities.csv", ["identity"] + [f"z{i}" for i in range(state.dim)],
                       vector_rows(plain, vectors)),
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
    return picture, info, bundle(files, "generation")


def new_noise_seed() -> int:
    """A fresh random noise seed (for the 'New noises' button)."""
    return secrets.randbelow(1_000_000)
