"""`genreid bench` and `genreid loadtest`: what the model and the explorer cost, and how the
explorer holds up under many users."""

from __future__ import annotations

import contextlib
import json
import sys

from .config import DEFAULT_CHECKPOINT


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="speed: matmul peak, FLOPs, generation and encoding "
                       "throughput, and each explorer panel's latency")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--data", default=None, help="dataset root for the panels (default: none, "
                   "as the Space runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--batches", default="1,8,64", help="generation batch sizes (default 1,8,64)")
    p.add_argument("--calls", type=int, default=20, help="timed calls per panel (default 20)")
    p.add_argument("--min-seconds", type=float, default=1.0,
                   help="shortest timed round of each throughput measurement (default 1)")
    p.add_argument("--quality", action="store_true",
                   help="also the quality cost of the fast paths (picture gap, identity mAP)")
    p.add_argument("--side-by-side", default=None,
                   help="with --quality: write full vs fast pictures to this PNG")
    p.add_argument("--gallery-sizes", default=None,
                   help="comma-separated gallery sizes (e.g. 1000,100000,1000000): measure only "
                        "gallery search instead (index build time, memory, query p50/p95, recall@10)")
    p.add_argument("--gallery-source", default="random", choices=["random", "prior"],
                   help="gallery vectors: Gaussian with the identity table's spread, or identities "
                        "sampled from the set's prior (slower to make)")
    p.add_argument("--gallery-index", default="auto", choices=["auto", "exact", "flat", "hnsw"],
                   help="index kind for every size (default auto: exact up to 100,000, else hnsw)")
    p.add_argument("--gallery-queries", type=int, default=200, help="timed queries per size")
    p.add_argument("--skip-model", action="store_true", help="only the panels' latency")
    p.add_argument("--skip-panels", action="store_true", help="only the model-level figures")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_bench)


def add_loadtest(sub) -> None:
    p = sub.add_parser("loadtest", help="many users at once: concurrent clients drive every "
                       "explorer panel on loopback; failures, latency, peak memory")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--data", default=None, help="dataset root for the panels (default: none)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--seconds", type=float, default=60.0, help="duration (default 60)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_loadtest)


def _log(args):
    """Progress lines: to stderr with --json, so stdout holds only the JSON."""
    return (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print


@contextlib.contextmanager
def _explorer_on_loopback(args):
    """(url, app) of the explorer started for a measurement; Gradio's own stdout lines (e.g.
    when closing) go to stderr with --json."""
    from explorer.latency import running_app

    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout), \
            running_app(args.checkpoint, args.data, args.device) as (url, app):
        yield url, app


def run_bench(args) -> None:
    from .api import GenReID
    from .bench import format_bench, model_benchmark, quality_report

    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        raise ValueError(f"--batches must be comma-separated integers, not {args.batches!r}") from None
    if not batches or min(batches) < 1 or args.calls < 1:
        raise ValueError("--batches and --calls must be positive")
    log = _log(args)
    result = {}
    if args.gallery_sizes:
        return run_gallery_bench(args, log)
    if not args.skip_model or args.quality:
        model = GenReID.load(args.checkpoint, device=args.device)
        if not args.skip_model:
            result.update(model_benchmark(model, batches, args.min_seconds, log))
        if args.quality:
            result["quality"] = quality_report(model, args.side_by_side, log)
    if not args.skip_panels:
        from explorer.latency import panel_latencies

        log("explorer panels (through gradio_client) ...")
        with _explorer_on_loopback(args) as (url, app):
            result["panels"] = panel_latencies(url, app.explorer_state, args.calls, log=log)
    print(json.dumps(result) if args.json else format_bench(result))


def run_gallery_bench(args, log) -> None:
    import numpy as np

    from .api import GenReID
    from .bench import machine_description
    from .index_bench import format_gallery, gallery_benchmark, random_identities

    try:
        sizes = [int(v) for v in args.gallery_sizes.replace("_", "").split(",")]
    except ValueError:
        raise ValueError(f"--gallery-sizes must be comma-separated integers, not "
                         f"{args.gallery_sizes!r}") from None
    if not sizes or min(sizes) < 1 or max(sizes) > 100_000_000 or args.gallery_queries < 1:
        raise ValueError("--gallery-sizes must be within 1..100,000,000 and --gallery-queries >= 1")
    model = GenReID.load(args.checkpoint, device=args.device)
    table = model.table_identities(np.arange(model.num_identities))

    def make(n: int) -> np.ndarray:
        if args.gallery_source == "prior":
            log(f"sampling {n:,} identities from the prior ...")
            return np.concatenate([model.sample_identities(min(65536, n - s), seed=s)
                                   for s in range(0, n, 65536)])
        return random_identities(n, model.id_dim, table.mean(0), table.std(0), seed=n)

    rows = gallery_benchmark(sizes, make, args.gallery_index, args.gallery_queries, log=log)
    result = {"machine": machine_description(model.device), "gallery_source": args.gallery_source,
              "gallery": rows}
    print(json.dumps(result) if args.json else format_gallery(rows))


def run_loadtest(args) -> int:
    from explorer.loadtest import format_report, load_test

    if args.clients < 1 or not 0 < args.seconds <= 3600:
        raise ValueError("--clients must be >= 1 and --seconds within (0, 3600]")
    log = _log(args)
    with _explorer_on_loopback(args) as (url, app):
        report = load_test(url, app.explorer_state, args.clients, args.seconds, log=log)
    print(json.dumps(report) if args.json else format_report(report))
    return 1 if report["failed"] else 0
