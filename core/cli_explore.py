"""`genreid explore`: the Gradio latent-space explorer."""

from __future__ import annotations

from .config import DEFAULT_CHECKPOINT


def add_explore(sub) -> None:
    p = sub.add_parser("explore", help="start the Gradio latent-space explorer")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--data", default=None,
                   help="dataset root in the Market-1501 layout (real portraits, query and gallery)")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto")
    p.add_argument("--gallery", default="auto",
                   help="saved gallery index (genreid index) to search instead of encoding the "
                        "gallery; default: <checkpoint>/gallery when there")
    p.set_defaults(func=run_explore)


def run_explore(args) -> None:
    from explorer.app import main as explore

    explore(checkpoint=args.checkpoint, data=args.data, host=args.host, port=args.port,
            device=args.device, gallery=args.gallery)
