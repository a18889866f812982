"""Many users at once: concurrent clients drive every panel through the named API.

    genreid loadtest [--clients 16] [--seconds 60] [--checkpoint DIR] [--data DIR] [--json]

The app runs in this process on a free loopback port (nothing leaves the machine); each
client is a thread with its own `gradio_client.Client`, calling the six panels in turn with
varied requests (explorer.latency.Requests) until the time is up. Reported: calls, failed
calls (any exception: an error event, a timeout, a refused connection), latency p50/p95 per
panel and overall, and the process's peak resident memory (server and clients together).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable

from .latency import PANELS, Requests, call, percentiles, verifies_tls


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux VmHWM), in MB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_test(url: str, state, clients: int = 16, seconds: float = 60.0, seed: int = 0,
              panels=PANELS, log: Callable[[str], None] = print) -> dict:
    """Drive every panel from `clients` concurrent clients for `seconds`; returns the report."""
    from gradio_client import Client

    state.wait_background()
    times: dict[str, list[float]] = defaultdict(list)
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(i: int) -> None:
        try:
            api = Client(url, verbose=False, ssl_verify=verifies_tls(url))
        except Exception as e:  # a client that cannot connect is a failure, not a silent thread death
            with lock:
                failures.append(f"connect: {type(e).__name__}: {str(e)[:200]}")
            return
        requests = Requests(state, seed + i)
        n = i  # clients start on different panels
        while time.monotonic() < deadline:
            panel = panels[n % len(panels)]
            n += 1
            kwargs = getattr(requests, panel)()
            start = time.perf_counter()
            try:
                call(api, panel, kwargs)
                with lock:
                    times[panel].append(time.perf_counter() - start)
            except Exception as e:  # every kind of failure counts, and is shown
                with lock:
                    failures.append(f"{panel}: {type(e).__name__}: {str(e)[:200]}")

    log(f"load test: {clients} clients for {seconds:g} s on {url}")
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    everything = [t for ts in times.values() for t in ts]
    overall = percentiles(everything) if everything else {"p50_s": None, "p95_s": None}
    report = {"clients": clients, "seconds": round(wall, 1),
              "calls": len(everything) + len(failures), "failed": len(failures),
              "failures": failures[:20], "p50_s": overall["p50_s"], "p95_s": overall["p95_s"],
              "peak_rss_mb": round(peak_rss_mb(), 1),
              "panels": {p: percentiles(times[p]) for p in panels if times[p]}}
    return report


def format_report(report: dict) -> str:
    latency = ("no call answered" if report["p50_s"] is None
               else f"p50 {report['p50_s']:.2f} s, p95 {report['p95_s']:.2f} s")
    lines = [f"{report['clients']} clients, {report['seconds']} s: {report['calls']} calls, "
             f"{report['failed']} failed; {latency}; peak memory {report['peak_rss_mb']:.0f} MB"]
    for name, p in report["panels"].items():
        lines.append(f"  {name:<10} {p['calls']:>4} calls  p50 {p['p50_s']:.2f} s  p95 {p['p95_s']:.2f} s")
    lines += [f"  failure: {f}" for f in report["failures"]]
    return "\n".join(lines)
