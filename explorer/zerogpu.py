"""Hugging Face ZeroGPU: a request's network calls run on a GPU lent for the call.

On ZeroGPU hardware (SPACES_ZERO_GPU set, the `spaces` package installed) the Space's own
process has no GPU. A function decorated with `@spaces.GPU` runs, while it is called, in a
worker process forked from the Space's, with a GPU; its arguments and result are pickled
across. So, there:

- the explorer keeps its model on the CPU for start-up and background work (portraits,
  gallery features), as on CPU hardware;
- a second copy of the model set is loaded at start-up for the GPU (tensors placed on
  "cuda" there are moved onto the lent GPU in the worker, which inherits them by the fork);
- each request's network call goes through `run`, by the model method's name, with NumPy
  arguments and results only (no model thread: its thread would not exist in the fork).

Elsewhere none of this is used and the `spaces` package is not needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from core.api import GenReID

# The methods of GenReID a request may run on the GPU (all take and return NumPy arrays).
METHODS = ("generate", "encode", "decompose", "sample_identities")
GPU_SECONDS = 60  # the longest call asked for: the largest grid at the full sampler

_model: GenReID | None = None
_run: Callable | None = None
_main_pid = os.getpid()


def available() -> bool:
    """True on ZeroGPU hardware with the `spaces` package importable."""
    if not os.environ.get("SPACES_ZERO_GPU"):
        return False
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False
    return True


def _call(method: str, *args, **kwargs):
    if method not in METHODS:
        raise ValueError(f"not a GPU method: {method!r}")
    if os.getpid() != _main_pid:
        # A fork does not copy OpenMP's worker threads: a CPU op with several threads would
        # wait for them forever (seen with 2 threads); the work here is the GPU's anyway.
        import torch
        torch.set_num_threads(1)
    return getattr(_model, method)(*args, **kwargs)


def setup(checkpoint) -> Callable[..., object]:
    """Load the GPU copy of the model set and register the decorated call (both at start-up,
    in the Space's process, as ZeroGPU requires); returns run(method, *args, **kwargs)."""
    global _model, _run
    import spaces
    import torch

    # On ZeroGPU `spaces` makes CUDA look present here and defers the copy to the worker.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _model = GenReID.load(checkpoint, device=device)
    _run = spaces.GPU(duration=GPU_SECONDS)(_call)
    return _run
