"""One function per explorer event: each takes the ExplorerState first, then the panel's inputs
(every one with a default giving the panel's default view), calls the state and the core API,
and returns the panel's outputs. Nothing here knows about layout; expected failures become
``gr.Error`` so the user (and gradio_client) read a clear message.

The handlers live in explorer/panels/, one module per panel (what they share in
panels/common.py); this module gathers them, the names app.py and the tests use:

    from explorer.state import load_state
    from explorer import handlers
    state = load_state("checkpoints/default")
    picture, info, files = handlers.generate(state)
"""
from __future__ import annotations

from .panels.common import (
    MAX_K,
    bind,
    default_identities,
    default_identity,
    default_new_identities,
    default_second_identity,
    network_note,
    panel,
    real_note,
    with_real_column,
)
from .panels.decomposition import decompose, interpolate, swap
from .panels.generation import (
    DEFAULT_NOISES,
    MAX_NEW,
    MAX_NOISES,
    MAX_ROWS,
    RECOGNISABLE_MAP,
    generate,
    generator_note,
    new_noise_seed,
)
from .panels.neighbours import DEFAULT_K_NEIGHBOURS, neighbors
from .panels.projection import (
    SOURCE_MARKERS,
    _map,
    projection,
    select_from_plot,
    select_identity,
    select_on_map,
    selected_portrait,
)
from .panels.retrieval import DEFAULT_K_RETRIEVAL, RANKED_APPROX, retrieve
from .panels.sweep import (
    DIRECTIONS,
    MAX_COORDINATES,
    MAX_STEPS,
    SWEEP_ABSOLUTE,
    SWEEP_COORDINATES,
    SWEEP_LIMIT,
    SWEEP_SD,
    directions,
    directions_table,
    sweep,
    sweep_range_defaults,
    sweep_values,
)

__all__ = [
    # plumbing and defaults (panels/common.py)
    "MAX_K", "bind", "panel", "default_identity", "default_second_identity", "default_identities",
    "default_new_identities", "network_note", "real_note", "with_real_column",
    # 1. generation
    "MAX_ROWS", "MAX_NEW", "MAX_NOISES", "DEFAULT_NOISES", "RECOGNISABLE_MAP", "generate",
    "generator_note", "new_noise_seed",
    # 2. sweep and directions
    "MAX_COORDINATES", "MAX_STEPS", "SWEEP_COORDINATES", "SWEEP_LIMIT", "SWEEP_SD", "SWEEP_ABSOLUTE",
    "DIRECTIONS", "sweep", "sweep_values", "sweep_range_defaults", "directions", "directions_table",
    # 3. neighbours
    "DEFAULT_K_NEIGHBOURS", "neighbors",
    # 4. projection
    "SOURCE_MARKERS", "_map", "projection", "select_on_map", "select_from_plot", "select_identity",
    "selected_portrait",
    # 5. retrieval
    "DEFAULT_K_RETRIEVAL", "RANKED_APPROX", "retrieve",
    # 6. decomposition
    "decompose", "swap", "interpolate",
]
