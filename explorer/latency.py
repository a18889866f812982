"""Panel latency through the explorer's named API, as a user's notebook sees it.

The app is started in this process on a free loopback port and every endpoint is called
through `gradio_client` with varied requests: other identities, seeds, coordinates and
uploads on every call (no two alike, so no cache of identical requests can help). One
untimed call per endpoint first warms up what is computed once (projections, the gallery's
features). Used by `genreid bench` and by the load test.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

PANELS = ("generate", "sweep", "directions", "neighbors", "projection", "retrieve", "decompose")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60.0) -> None:
    """Poll url until it answers (Gradio prints "Running on" before its server answers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def running_app(checkpoint=None, data=None, device: str = "auto", timeout: float = 60.0,
                **state_options) -> Iterator[tuple[str, object]]:
    """(url with a trailing slash, the Blocks app) of an explorer started on a free loopback
    port and answering; closed on exit. The ExplorerState is `app.explorer_state`."""
    from .app import main

    port = free_port()
    demo = main(checkpoint, data, host="127.0.0.1", port=port, device=device,
                prevent_thread_lock=True, quiet=True, **state_options)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_http(url + "gradio_api/info", timeout)
        yield url, demo
    finally:
        demo.close()


class Requests:
    """Varied arguments for each endpoint, drawn from one seeded generator."""

    def __init__(self, state, seed: int = 0, folder: str | Path | None = None):
        self.state, self.rng = state, np.random.default_rng(seed)
        self.folder = Path(folder or tempfile.mkdtemp(prefix="genreid-requests-"))
        self.n = 0

    def _key(self) -> str:
        keys = self.state.train_keys
        return keys[int(self.rng.integers(len(keys)))]

    def _seed(self) -> int:
        return int(self.rng.integers(1_000_000))

    def _upload(self):
        """A picture of a person, altered so it is new: a query/gallery picture, jittered."""
        from gradio_client import handle_file

        query, gallery = self.state.pictures()
        pool = gallery if self.rng.random() < 0.5 else query
        img = pool.images[int(self.rng.integers(len(pool)))].astype(np.float32)
        img = img * self.rng.uniform(0.8, 1.2) + self.rng.normal(0, 4, img.shape)
        scale = self.rng.uniform(1.0, 3.0)  # uploads come at any size
        h, w = img.shape[:2]
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize(
            (int(w * scale), int(h * scale)))
        self.n += 1
        path = self.folder / f"upload-{self.n}.jpg"
        pil.save(path, quality=90)
        return handle_file(str(path))

    def generate(self) -> dict:
        # the default view's size (2 + 1 rows x 4 noises), other identities and seeds
        return {"identities": [self._key() for _ in range(2)], "new_identities": 1, "noises": 4,
                "noise_seed": self._seed(), "prior_seed": self._seed()}

    def sweep(self) -> dict:
        # the default view's size (one coordinate, 7 steps), another coordinate each time
        coords = [int(self.rng.integers(self.state.dim))]
        return {"identity": self._key(), "coordinates": coords, "noise_seed": self._seed()}

    def directions(self) -> dict:
        # the default view's size (two directions, 5 steps), other directions each time
        count = self.state.space.num_directions
        picked = self.rng.choice(np.arange(1, count + 1), size=min(2, count), replace=False)
        return {"identity": self._key(), "directions": [int(d) for d in picked],
                "noise_seed": self._seed()}

    def neighbors(self) -> dict:
        return {"identity": self._key(), "k": int(self.rng.integers(3, 9))}

    def projection(self) -> dict:
        return {"method": str(self.rng.choice(["PCA", "UMAP"])),
                "colour_by": str(self.rng.choice(self.state.colour_choices())),
                "selected": self._key()}

    def retrieve(self) -> dict:
        if self.rng.random() < 0.5:
            return {"upload": self._upload()}
        query, _ = self.state.pictures()
        return {"query": int(self.rng.integers(len(query))), "k": int(self.rng.integers(5, 16))}

    def decompose(self) -> dict:
        return {"upload": self._upload()}


def verifies_tls(url: str) -> bool:
    """gradio_client's ssl_verify for url. By default it loads the certificate bundle for each
    of a call's 4 HTTP requests (30 ms apiece on a 2-core CPU, measured with yappi), also over
    plain HTTP where no TLS is spoken: a client-side cost a browser never pays, skipped there."""
    return not url.startswith("http://")


def call(client, panel: str, kwargs: dict):
    return client.predict(api_name=f"/{panel}", **kwargs)


def percentiles(times: list[float]) -> dict[str, float]:
    t = np.asarray(times)
    return {"p50_s": float(np.percentile(t, 50)), "p95_s": float(np.percentile(t, 95)),
            "max_s": float(t.max()), "calls": len(t)}


def panel_latencies(url: str, state, calls: int = 20, panels=PANELS, seed: int = 0,
                    log: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """p50/p95 seconds of each panel's action, `calls` varied requests each, one at a time."""
    from gradio_client import Client

    client = Client(url, verbose=False, ssl_verify=verifies_tls(url))
    requests = Requests(state, seed)
    state.wait_background()  # steady state: the one-off start-up work is not a panel's cost
    out = {}
    for panel in panels:
        make = getattr(requests, panel)
        for method in (("PCA", "UMAP") if panel == "projection" else (None,)):
            warm = make()
            if method:
                warm["method"] = method
            call(client, panel, warm)  # untimed: one-off precomputation
        times = []
        for _ in range(calls):
            kwargs = make()
            start = time.perf_counter()
            call(client, panel, kwargs)
            times.append(time.perf_counter() - start)
        out[panel] = percentiles(times)
        log(f"  {panel:<10} p50 {out[panel]['p50_s']:.3f} s  p95 {out[panel]['p95_s']:.3f} s")
    return out
