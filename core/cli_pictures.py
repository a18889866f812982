"""`genreid sample`, `genreid diagnose` and `genreid decompose`: generated pictures, written and
measured."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from . import config


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="write a grid: identities (rows) x noises (columns)")
    p.add_argument("--checkpoint", default=str(config.DEFAULT_CHECKPOINT))
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--ids", default=None, help="comma-separated table rows (default: first rows)")
    p.add_argument("--prior", type=int, default=0, help="add N identities sampled from the prior")
    p.add_argument("--rows", type=int, default=6)
    p.add_argument("--noises", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=_scale, default=2, help="nearest-neighbour up-scaling (default 2)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_sample)


def add_diagnose(sub) -> None:
    p = sub.add_parser("diagnose", help="how far generated pictures follow their identity")
    p.add_argument("--checkpoint", default=str(config.DEFAULT_CHECKPOINT))
    p.add_argument("--data", default=None, help="also measure real pictures of this split")
    p.add_argument("--guidance", default=None,
                   help="comma-separated guidance weights to compare (default: the set's)")
    p.add_argument("--identities", type=int, default=16, help="generated grid rows (default 16)")
    p.add_argument("--noises", type=int, default=6, help="generated grid columns (default 6)")
    p.add_argument("--per-identity", type=int, default=6,
                   help="real pictures per identity, of 100 identities (default 6)")
    p.add_argument("--encoder", default=str(config.DEFAULT_CHECKPOINT.parent / "baseline"),
                   help="model set whose img2id, trained on real crops only, judges whether "
                        "generated pictures show their person (default: the shipped baseline)")
    p.add_argument("--persons", type=int, default=100,
                   help="training persons generated for the recognisability measure (default 100)")
    p.add_argument("--pictures", type=int, default=4,
                   help="noises per person, and real crops per person for the reference "
                        "(default 4)")
    p.add_argument("--no-recognisability", action="store_true",
                   help="only the identity share (fast; no encoder, no real crops needed)")
    p.add_argument("--no-cache", action="store_true",
                   help="encode the real crops again instead of reading the encoder's features "
                        "of them from the cache (~/.cache/genreid/diagnose, or $GENREID_CACHE)")
    p.add_argument("--save", action="store_true",
                   help="also write the result into the set as diagnose.json (the explorer "
                        "quotes it, and the model card cites it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_diagnose)


def add_decompose(sub) -> None:
    p = sub.add_parser("decompose", help="split real pictures into identity and noise, "
                                         "regenerate them, and report the reconstruction error")
    p.add_argument("--checkpoint", default=str(config.DEFAULT_CHECKPOINT))
    p.add_argument("--data", required=True,
                   help="Market-1501-layout image folder or `genreid pack` file to draw from")
    p.add_argument("--count", type=int, default=200,
                   help="pictures drawn at random (without replacement) and measured (default 200)")
    p.add_argument("--out", default=None,
                   help="also write a PNG of the first --show of them: the pictures (top), their "
                        "noise clipped to +-2.5 (middle), GEN(noise, identity) (bottom)")
    p.add_argument("--show", type=int, default=8, help="columns of the --out figure (default 8)")
    p.add_argument("--scale", type=_scale, default=2, help="nearest-neighbour up-scaling (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=config.PRECISIONS, default="auto",
                   help="auto: bfloat16 where the hardware does it natively, else float32")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_decompose)


def run_decompose(args) -> None:
    import numpy as np

    from .api import GenReID
    from .data import load_split
    from .images import image_grid

    if args.count < 1 or args.show < 0:
        raise ValueError("--count must be at least 1 and --show at least 0")
    model = GenReID.load(args.checkpoint, device=args.device, precision=args.precision)
    split = load_split(args.data, model.image_size)
    if args.count > len(split):
        raise ValueError(f"--count {args.count}: {args.data} holds only {len(split)} pictures")
    pick = np.random.default_rng(args.seed).choice(len(split), args.count, replace=False)
    parts = model.decompose(split.images[pick])
    report = {"checkpoint": str(args.checkpoint), "data": str(args.data), "pictures": args.count,
              "seed": args.seed, "precision": model.precision,
              "reconstruction_error": round(float(parts.error.mean()), 5)}
    show = min(args.show, args.count)
    if args.out and show:
        rows = np.concatenate([parts.image[:show], GenReID.noise_picture(parts.noise[:show]),
                               parts.reconstruction[:show]])
        _save_scaled(image_grid(rows, 3), args.out, args.scale)
        report["figure"] = str(args.out)
    print(json.dumps(report))


def run_diagnose(args) -> None:
    from . import recognisability as rec
    from .api import GenReID
    from .data import load_split
    from .diagnostics import generated_identity_share, real_identity_share
    from .disk_cache import DiskCache, cache_root

    try:
        weights = [float(w) for w in args.guidance.split(",")] if args.guidance else None
    except ValueError:
        raise ValueError(f"--guidance must be comma-separated numbers, not {args.guidance!r}") from None
    model = GenReID.load(args.checkpoint, device=args.device)
    weights = weights or [model.config.generator.guidance]
    data = args.data
    if data is None and not args.no_recognisability:
        data = _training_source(args.checkpoint)
    split = load_split(data, model.image_size) if data else None
    share, result = {}, {}
    if split is not None:
        labels, _ = split.relabel()
        share["real"] = round(real_identity_share(split.images, labels, model.normalizer,
                                                  per_identity=args.per_identity, seed=args.seed), 4)
    if not args.no_recognisability:
        encoder = GenReID.load(args.encoder, device=args.device)
        if not encoder.has("img2id"):
            raise ValueError(f"--encoder {args.encoder} has no img2id to judge pictures with")
        cache = DiskCache(None if args.no_cache else cache_root("diagnose"))
        real = rec.encode_real(encoder, split.images, split.pids, cache)
        rows, crops = rec.choose_persons(split.pids, model.pids, args.persons, args.pictures,
                                         args.seed)
        noises = model.noise(args.pictures, seed=args.seed)
        result = {"encoder": _as_typed_here(args.encoder), "data": str(data), "persons": len(rows),
                  "pictures_per_person": args.pictures, "real_crops": len(split.pids),
                  "real": _rounded(rec.real_reference(real, crops))}
    for w in weights:
        model.config.generator.guidance = w
        share[f"generated_guidance_{w:g}"] = round(generated_identity_share(
            model, args.identities, args.noises, args.seed), 4)
        if result:
            result[f"generated_guidance_{w:g}"] = _rounded(
                rec.generated_recognisability(model, encoder, real, rows, crops, noises))
    report = {"identity_share": share, **({"recognisability": result} if result else {})}
    if args.save:
        from .bench import machine_description
        from .recognisability import save_diagnosis
        save_diagnosis(args.checkpoint, report, command=shlex.join(["genreid", *args.argv]),
                       machine=machine_description(model.device))
    print(json.dumps(report))


def _rounded(figures: dict) -> dict:
    return {k: round(v, 4) for k, v in figures.items()}


def _as_typed_here(path: str) -> str:
    """`path` relative to the working folder when it lies inside it: the default encoder is an
    absolute path, and a report saved into a set must not carry this machine's folders."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _training_source(checkpoint: str) -> str:
    """The training split a set names in its identities.json, when it is still there."""
    source = json.loads((Path(checkpoint) / "identities.json").read_text()).get("source")
    if not source or not Path(source).exists():
        raise ValueError(f"the recognisability measure needs the real training crops: pass "
                         f"--data (the split {checkpoint} was trained on"
                         f"{', ' + repr(source) if source else ''}; pack it with `genreid pack`) "
                         "or --no-recognisability")
    return source


def run_sample(args) -> None:
    import numpy as np

    from .api import GenReID
    from .images import image_grid

    model = GenReID.load(args.checkpoint, device=args.device)
    try:
        rows = [int(v) for v in args.ids.split(",")] if args.ids else \
            list(range(min(args.rows, model.num_identities)))
    except ValueError:
        raise ValueError(f"--ids must be comma-separated integers, not {args.ids!r}") from None
    identities = model.table_identities(rows)
    if args.prior:
        identities = np.concatenate([identities, model.sample_identities(args.prior, seed=args.seed)])
    images = model.generate_grid(identities, model.noise(args.noises, seed=args.seed))
    _save_scaled(image_grid(images.reshape(-1, *images.shape[2:]), len(identities)), args.out,
                 args.scale)
    print(f"wrote {args.out}: {len(identities)} identities x {args.noises} noises")


def _scale(text: str) -> int:
    """--scale's type: checked when the command line is read, before any picture is made."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _save_scaled(grid, path, scale: int) -> None:
    """Write a uint8 picture to path, up-scaled scale times by nearest neighbour (pixels stay
    sharp)."""
    from PIL import Image

    picture = Image.fromarray(grid)
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(path)
