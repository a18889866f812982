"""`genreid sample` and `genreid diagnose`: generated pictures, written and measured."""

from __future__ import annotations

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
    p.add_argument("--scale", type=int, default=2, help="nearest-neighbour up-scaling (default 2)")
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
        result = {"encoder": str(args.encoder), "data": str(data), "persons": len(rows),
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
    from PIL import Image

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
    grid = image_grid(images.reshape(-1, *images.shape[2:]), len(identities))
    picture = Image.fromarray(grid)
    picture = picture.resize((picture.width * args.scale, picture.height * args.scale), Image.NEAREST)
    picture.save(args.out)
    print(f"wrote {args.out}: {len(identities)} identities x {args.noises} noises")
