"""`genreid pack`, `store`, `configure` and `replace`: a split packed into one file, and a
model set's storage, settings and weights changed in place."""

from __future__ import annotations

import argparse
import json
import sys

from . import config


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like 64x32 (height x width), not {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size {text} is too small")
    return h, w


def parse_parts(text: str) -> list[str]:
    return text.split(",")


def parse_setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare word: a string


def add_pack(sub) -> None:
    p = sub.add_parser("pack", help="pack a Market-1501-layout image folder into one compact file")
    p.add_argument("--data", required=True, help="image folder (e.g. .../bounding_box_train)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--size", type=parse_size, default=(64, 32), help="HxW (default 64x32)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="skip (with a warning) files that do not parse or decode, instead of stopping")
    p.set_defaults(func=run_pack)


def run_pack(args) -> None:
    from .data import pack_split

    n = pack_split(args.data, args.out, args.size, args.quality,
                   on_error="skip" if args.skip_bad_files else "raise")
    print(f"packed {n} images of {args.data} at {args.size[0]}x{args.size[1]} into {args.out}")


def add_store(sub) -> None:
    p = sub.add_parser("store", help="rewrite parts of a model set in float16 or int8 "
                       "(int8: half the bytes, dequantized at load; measure it with genreid eval)")
    p.add_argument("--checkpoint", required=True, help="model-set folder to rewrite in place")
    p.add_argument("--parts", required=True, type=parse_parts,
                   help="comma-separated parts, e.g. img2id,img2noise")
    p.add_argument("--as", dest="storage", required=True, choices=list(config.STORAGES))
    p.set_defaults(func=run_store)


def run_store(args) -> None:
    from .set_tools import store_parts

    sizes = store_parts(args.checkpoint, {part: args.storage for part in args.parts})
    print(json.dumps({"checkpoint": str(args.checkpoint), "storage": args.storage,
                      "bytes": sizes}))


def add_configure(sub) -> None:
    p = sub.add_parser("configure", help="change settings in a model set's config.json "
                       "(validated, manifest updated), e.g. img2id.flip=true generator.guidance=2")
    p.add_argument("--checkpoint", required=True, help="model-set folder to change in place")
    p.add_argument("settings", nargs="+", type=parse_setting, metavar="KEY=VALUE",
                   help="dotted key and a JSON value (a bare word is a string: "
                        "img2id.metric=cosine)")
    p.set_defaults(func=run_configure)


def run_configure(args) -> None:
    from .set_tools import configure_set

    data = configure_set(args.checkpoint, dict(args.settings)).to_dict()
    now = {}
    for key, _ in args.settings:
        section, name = config.setting_parent(data, key)
        now[key] = section[name]
    print(json.dumps(now))


def add_replace(sub) -> None:
    p = sub.add_parser("replace", help="replace parts of a model set by another set's, e.g. a "
                       "generator trained on from it (same persons and architecture)")
    p.add_argument("--checkpoint", required=True, help="model-set folder to change in place")
    p.add_argument("--from", dest="source", required=True, nargs="+", metavar="SET",
                   help="model set to take the parts from (e.g. the --out of a warm start); "
                   "with several sets, each part becomes the mean of their weights (e.g. "
                   "copies of one run's --out taken during training)")
    p.add_argument("--parts", required=True, type=parse_parts,
                   help="comma-separated parts, e.g. generator")
    p.set_defaults(func=run_replace)


def run_replace(args) -> None:
    from .set_tools import replace_parts

    stale = replace_parts(args.checkpoint, args.source, args.parts)
    source = args.source[0] if len(args.source) == 1 else args.source
    print(json.dumps({"checkpoint": str(args.checkpoint), "from": source,
                      "replaced": args.parts, "trained_on_the_old": stale}))
    if stale:
        print(f"note: {', '.join(stale)} of {args.checkpoint} were trained on the replaced "
              f"{', '.join(args.parts)}; train them again (genreid train PART --checkpoint "
              f"{args.checkpoint}) and measure", file=sys.stderr)
