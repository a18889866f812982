"""Where the explorer's work runs: every network call on one model thread (on ZeroGPU, a
request's call on a lent GPU instead), and `Task`s, computations run once in a background
thread while the requests that need them wait and report their progress."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from core.api import GenReID

from . import zerogpu

T = TypeVar("T")

Report = Callable[[float, str], None]  # report(fraction in [0, 1], description)
# Pictures per model-thread call: progress granularity, and other users' calls interleave
# between chunks. Larger batches generate faster (genreid bench: batch 64 1.6x batch 8 here).
CHUNK = 32


def quiet(fraction: float, desc: str) -> None:
    """A Report that reports nothing."""


class NotReady(RuntimeError):
    """A background result is not available (it failed, or was not asked for)."""


_thread_kind = threading.local()  # .background: set in the threads of background Tasks


class Task:
    """A computation run once, in a background thread, started at start-up or on first demand.
    ``wait`` reports its progress while it runs and re-raises its error."""

    def __init__(self, name: str, fn: Callable[[Report], object]):
        self.name, self._fn = name, fn
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self.value: object = None
        self.error: BaseException | None = None
        self.fraction, self.desc = 0.0, name

    def start(self) -> Task:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"explorer-{self.name}",
                                                daemon=True)
                self._thread.start()
        return self

    def _run(self) -> None:
        _thread_kind.background = True  # its network calls stay on this process's CPU model
        try:
            self.value = self._fn(self._report)
        except BaseException as e:  # kept and re-raised in the waiting request
            self.error = e
        finally:
            self.fraction = 1.0
            self._finished.set()

    def _report(self, fraction: float, desc: str) -> None:
        self.fraction, self.desc = float(min(max(fraction, 0.0), 1.0)), desc

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    @property
    def ready(self) -> bool:
        """Finished without an error: `value` holds the result."""
        return self.done and self.error is None

    def wait(self, report: Report | None = None, timeout: float | None = None):
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished.wait(0.2):
            if report is not None:
                report(self.fraction, self.desc)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} is still running ({self.fraction:.0%})")
        if self.error is not None:
            raise self.error
        return self.value


class ModelThread:
    """Runs a model set's network calls. Every call runs on this one thread, one call at a time.
    One thread, because each thread that calls PyTorch gets its own OpenMP team, and idle teams
    spin: served from Gradio's changing worker threads the same grid took up to 1.6x longer
    (measured). With `remote` (ZeroGPU, explorer.zerogpu), remote(method, *args) runs a
    request's call of a model method on a lent GPU instead; background Tasks stay here."""

    def __init__(self, model: GenReID, remote: Callable[..., object] | None = None):
        self.model, self.remote = model, remote
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genreid-model")

    def compute(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """fn(*args, **kwargs) on the model thread (queued behind other users' calls)."""
        if self.remote is not None and not getattr(_thread_kind, "background", False):
            name = getattr(fn, "__name__", "")
            if getattr(fn, "__self__", None) is self.model and name in zerogpu.METHODS:
                return self.remote(name, *args, **kwargs)
        return self._executor.submit(fn, *args, **kwargs).result()

    def generate(self, identities: np.ndarray, noises: np.ndarray, report: Report | None = None,
                 desc: str = "generating", preview: bool = False) -> np.ndarray:
        """GEN(identities, noises) in chunks of CHUNK, reporting progress. preview=True takes
        the model's fast path (GenReID.generate)."""
        identities = np.asarray(identities, np.float32)
        noises = np.asarray(noises, np.float32)
        report = report or quiet
        out = []
        n = len(identities)
        for start in range(0, n, CHUNK):
            report(start / max(n, 1), f"{desc}: {start}/{n} pictures")
            out.append(self.compute(self.model.generate, identities[start:start + CHUNK],
                                    noises[start:start + CHUNK], preview=preview))
        report(1.0, f"{desc}: {n}/{n} pictures")
        h, w = self.model.image_size
        return np.concatenate(out) if out else np.zeros((0, h, w, 3), np.uint8)
