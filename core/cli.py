"""The `genreid` command line.

    genreid pack --data ../shared/data/cuhk03/bounding_box_train --out packs/cuhk03_train_64x32.npz
    genreid train generator --data packs/cuhk03_train_64x32.npz --out checkpoints/default
    genreid train prior --checkpoint checkpoints/default
    genreid train preview --checkpoint checkpoints/default
    genreid train img2id --checkpoint checkpoints/default
    genreid train img2noise --checkpoint checkpoints/default --data packs/cuhk03_train_64x32.npz
    genreid eval --data ../shared/data/cuhk03 --checkpoint checkpoints/default --json
    genreid index --checkpoint checkpoints/default --data ../shared/data/cuhk03
    genreid configure --checkpoint checkpoints/default img2id.flip=true img2id.metric=cosine
    genreid store --checkpoint checkpoints/default --parts img2id,img2noise --as int8
    genreid sample --checkpoint checkpoints/default --out grid.png
    genreid bench --json
    genreid loadtest --clients 16 --seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shlex
import sys
from pathlib import Path

from . import config, distributed

DEFAULT_CHECKPOINT = str(config.DEFAULT_CHECKPOINT)


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must look like 64x32 (height x width), not {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size {text} is too small")
    return h, w


BANK_HELP = ("generate N images once and draw the generated share of each batch from them "
             "(default 0: generate on the fly at every step, as the paper; a bank suits CPUs)")


def parse_setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare word: a string


def add_train_options(p: argparse.ArgumentParser, steps: int, batch: int, lr: float,
                      save_every: int) -> None:
    p.add_argument("--steps", type=int, default=steps, help="total optimiser steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=batch, help="default %(default)s")
    p.add_argument("--lr", type=float, default=lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps (default 0)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=save_every,
                   help="steps between checkpoints (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 autocast where the hardware has it natively (CUDA, "
                        "AVX-512 BF16 or AMX CPUs), else fp32")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="save and stop after this many seconds of training (resume with the "
                        "same command); for time-boxed machines")
    p.add_argument("--work-dir", default=None,
                   help="resumable state (default: runs/<checkpoint folder name>/<network>)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun on CUDA: BatchNorm statistics over the whole batch "
                        "(SyncBatchNorm) instead of each process's shard")


def add_augment_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--augment", action="store_true",
                   help="besides flips, random shifts and random erasing of the training "
                        "pictures (core/augment.py; default: flips only)")


def add_encoding_options(p: argparse.ArgumentParser) -> None:
    """How a gallery is encoded and searched (eval, index)."""
    p.add_argument("--index", default="auto", choices=["auto", "exact", "flat", "hnsw"],
                   help="gallery search: exact (NumPy), flat (FAISS, exact), hnsw (FAISS, "
                        "approximate); auto = exact up to 100,000 vectors, else hnsw")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average features with the mirrored image (default: the set's img2id.flip)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="inference precision (auto: bf16 where the hardware has it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genreid", description=(
        "Generative person re-identification: identity as the conditioning of a diffusion model."))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pack", help="pack a Market-1501-layout image folder into one compact file")
    p.add_argument("--data", required=True, help="image folder (e.g. .../bounding_box_train)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--size", type=parse_size, default=(64, 32), help="HxW (default 64x32)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="skip (with a warning) files that do not parse or decode, instead of stopping")

    train = sub.add_parser("train", help="train one network of a model set")
    nets = train.add_subparsers(dest="network", required=True)
    p = nets.add_parser("generator", help="the identity-conditioned diffusion U-Net and identity table")
    p.add_argument("--data", required=True, help="training split: image folder or pack (.npz)")
    p.add_argument("--out", default=DEFAULT_CHECKPOINT, help="model-set folder to write")
    p.add_argument("--config", default=None,
                   help="ModelSetConfig JSON (default: the paper's values, docs/method.md)")
    p.add_argument("--id-lr-scale", type=float, default=1.0,
                   help="learning-rate multiplier for the identity table (default 1)")
    p.add_argument("--guidance", type=float, default=None,
                   help="identity guidance weight stored in the set's config (sampling only; "
                        "default: the config's; 0 in the paper)")
    p.add_argument("--sample-every", type=int, default=0,
                   help="every N steps, sample a grid and log the identity share (0: never)")
    p.add_argument("--init-from", default=None, metavar="SET",
                   help="warm start: begin from this model set's generator and identity table "
                        "(same training split; fresh optimiser); ignored when resuming")
    p.add_argument("--null-fraction", type=float, default=0.0,
                   help="share of each batch trained with the 'no identity' vector, which "
                        "guidance extrapolates from (default 0, as the paper)")
    p.add_argument("--loss-weighting", default="eps", choices=["eps", "v"],
                   help="eps: L1 on the noise (the paper); v: L1 on v, which weights each "
                        "noise level's error by 1/signal (default eps)")
    add_train_options(p, steps=200_000, batch=16, lr=1e-4, save_every=1000)
    p = nets.add_parser("baseline", help="discriminative baseline: the Img2ID encoder trained "
                        "with identity classification + triplet loss on real images")
    p.add_argument("--data", required=True, help="training split: image folder or pack (.npz)")
    p.add_argument("--out", required=True, help="model-set folder to write (encoder only)")
    p.add_argument("--config", default=None, help="ModelSetConfig JSON (its img2id and image size)")
    p.add_argument("--instances", type=int, default=4, help="images per identity in a batch")
    p.add_argument("--margin", type=float, default=0.3, help="triplet margin")
    p.add_argument("--bnneck", action="store_true",
                   help="export the BatchNorm neck's output as the features, compared by cosine "
                        "(Bag of Tricks' inference; default: the encoder's, Euclidean)")
    add_augment_option(p)
    add_train_options(p, steps=20_000, batch=64, lr=3e-4, save_every=1000)
    p = nets.add_parser("prior", help="the diffusion prior over identity vectors")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    add_train_options(p, steps=20_000, batch=256, lr=1e-4, save_every=5000)
    p = nets.add_parser("preview", help="distil the guided generator into the smaller, faster "
                        "network the explorer previews with")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--prior-fraction", type=float, default=0.5,
                   help="share of trajectories with prior identities, the rest table rows")
    add_train_options(p, steps=20_000, batch=8, lr=1e-4, save_every=500)
    p = nets.add_parser("img2id", help="image -> identity (trained on generated images)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--data", default=None, help="the generator's training split, for real images")
    p.add_argument("--real-fraction", type=float, default=0.0,
                   help="share of each batch taken from real training images (default 0: paper)")
    p.add_argument("--bank", type=int, default=0, help=BANK_HELP)
    p.add_argument("--val-persons", type=int, default=0,
                   help="hold this many training persons out of the real batches, measure "
                        "retrieval among them at every save and export the best save "
                        "(early stopping; needs --data; default 0: off, the last save)")
    add_augment_option(p)
    add_train_options(p, steps=20_000, batch=32, lr=1e-4, save_every=1000)
    p = nets.add_parser("img2noise", help="image -> noise (trained by reconstruction)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--data", default=None, help="the generator's training split")
    p.add_argument("--generated-fraction", type=float, default=0.0,
                   help="share of each batch generated from prior identities (default 0)")
    p.add_argument("--bank", type=int, default=0, help=BANK_HELP)
    p.add_argument("--recon-weight", type=float, default=1.0,
                   help="weight of the reconstruction loss through the sampler (default 1)")
    p.add_argument("--noise-weight", type=float, default=0.0,
                   help="weight of L1 to the known noise of generated images (default 0)")
    add_train_options(p, steps=10_000, batch=16, lr=1e-4, save_every=500)

    p = sub.add_parser("eval", help="retrieval mAP/CMC on a query + gallery")
    p.add_argument("--data", required=True, help="dataset root with query/ and bounding_box_test/")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--features", default=None, help="save the features to this .npz")
    add_encoding_options(p)
    p.add_argument("--top", type=int, default=100,
                   help="with an approximate index: how many matches each query ranks (default 100)")
    p.add_argument("--rerank", action="store_true",
                   help="k-reciprocal re-ranking of the exact distances (Zhong et al. 2017; "
                        "k1 20, k2 6, lambda 0.3); up to 20,000 queries + gallery pictures")
    p.add_argument("--metric", default=None, choices=["euclidean", "cosine"],
                   help="retrieval distance (default: the set's img2id.metric); cosine ranks "
                        "by the angle between identity vectors")

    p = sub.add_parser("index", help="encode a gallery folder into a saved gallery index "
                       "(for large galleries, and for the explorer to load instead of encoding)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--data", required=True,
                   help="dataset root (its bounding_box_test/) or any Market-1501 style folder")
    p.add_argument("--out", default=None, help="index folder (default: <checkpoint>/gallery)")
    add_encoding_options(p)

    p = sub.add_parser("store", help="rewrite parts of a model set in float16 or int8 "
                       "(int8: half the bytes, dequantized at load; measure it with genreid eval)")
    p.add_argument("--checkpoint", required=True, help="model-set folder to rewrite in place")
    p.add_argument("--parts", required=True, type=lambda s: s.split(","),
                   help="comma-separated parts, e.g. img2id,img2noise")
    p.add_argument("--as", dest="storage", required=True, choices=list(config.STORAGES))

    p = sub.add_parser("configure", help="change settings in a model set's config.json "
                       "(validated, manifest updated), e.g. img2id.flip=true generator.guidance=2")
    p.add_argument("--checkpoint", required=True, help="model-set folder to change in place")
    p.add_argument("settings", nargs="+", type=parse_setting, metavar="KEY=VALUE",
                   help="dotted key and a JSON value (a bare word is a string: "
                        "img2id.metric=cosine)")

    p = sub.add_parser("sample", help="write a grid: identities (rows) x noises (columns)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--ids", default=None, help="comma-separated table rows (default: first rows)")
    p.add_argument("--prior", type=int, default=0, help="add N identities sampled from the prior")
    p.add_argument("--rows", type=int, default=6)
    p.add_argument("--noises", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=2, help="nearest-neighbour up-scaling (default 2)")
    p.add_argument("--device", default="auto")
    p = sub.add_parser("diagnose", help="how far generated pictures follow their identity")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
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
    p.add_argument("--save", action="store_true",
                   help="also write the result into the set as diagnose.json (the explorer "
                        "quotes it, and the model card cites it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")

    p = sub.add_parser("bench", help="speed: matmul peak, FLOPs, generation and encoding "
                       "throughput, and each explorer panel's latency")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
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

    p = sub.add_parser("loadtest", help="many users at once: concurrent clients drive every "
                       "explorer panel on loopback; failures, latency, peak memory")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--data", default=None, help="dataset root for the panels (default: none)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--seconds", type=float, default=60.0, help="duration (default 60)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("explore", help="start the Gradio latent-space explorer")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--data", default=None,
                   help="dataset root in the Market-1501 layout (real portraits, query and gallery)")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto")
    p.add_argument("--gallery", default="auto",
                   help="saved gallery index (genreid index) to search instead of encoding the "
                        "gallery; default: <checkpoint>/gallery when there")
    return parser


def work_dir_for(args, checkpoint: str) -> str:
    """runs/<set name>-<hash of its full path>/<network>: two sets never share a state."""
    if args.work_dir:
        return args.work_dir
    resolved = Path(checkpoint).resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    return str(Path("runs") / f"{resolved.name}-{digest}" / args.network)


def run_train(args) -> None:
    from .augment import Augment
    from .config import ModelSetConfig
    from .train import (
        BaselineTrainer,
        GeneratorTrainer,
        Img2IDTrainer,
        Img2NoiseTrainer,
        PreviewTrainer,
        PriorTrainer,
        TrainOptions,
    )

    opts = TrainOptions(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        warmup=args.warmup, ema_decay=args.ema_decay, seed=args.seed,
                        save_every=args.save_every, device=args.device, precision=args.precision,
                        sample_every=getattr(args, "sample_every", 0), sync_bn=args.sync_bn,
                        time_limit=args.time_limit)
    if args.network == "generator":
        config = ModelSetConfig.load(args.config) if args.config else None
        trainer = GeneratorTrainer(args.data, args.out, work_dir_for(args, args.out), opts, config,
                                   id_lr_scale=args.id_lr_scale, guidance=args.guidance,
                                   init_from=args.init_from, null_fraction=args.null_fraction,
                                   loss_weighting=args.loss_weighting)
    elif args.network == "baseline":
        config = ModelSetConfig.load(args.config) if args.config else None
        trainer = BaselineTrainer(args.data, args.out, work_dir_for(args, args.out), opts, config,
                                  args.instances, args.margin,
                                  Augment() if args.augment else None, args.bnneck)
    elif args.network == "prior":
        trainer = PriorTrainer(args.checkpoint, work_dir_for(args, args.checkpoint), opts)
    elif args.network == "preview":
        trainer = PreviewTrainer(args.checkpoint, work_dir_for(args, args.checkpoint), opts,
                                 args.prior_fraction)
    elif args.network == "img2id":
        trainer = Img2IDTrainer(args.checkpoint, work_dir_for(args, args.checkpoint), opts,
                                args.data, args.real_fraction, args.bank, args.val_persons,
                                Augment() if args.augment else None)
    else:
        trainer = Img2NoiseTrainer(args.checkpoint, work_dir_for(args, args.checkpoint), opts,
                                   args.data, args.generated_fraction, args.bank,
                                   args.recon_weight, args.noise_weight)
    trainer.run()


def run_eval(args) -> None:
    from .api import GenReID
    from .evaluate import evaluate, format_table

    ctx, device = distributed.setup(args.device)  # under torchrun each rank encodes a shard
    model = GenReID.load(args.checkpoint, device=str(device), precision=args.precision)
    result = evaluate(model, args.data, batch_size=args.batch_size, flip=args.flip,
                      features_out=args.features if ctx.main else None, index=args.index,
                      top=args.top, rerank=args.rerank, metric=args.metric)
    result["precision"] = model.precision
    if ctx.main:
        print(json.dumps(result) if args.json else format_table(result))


def run_index(args) -> None:
    from .api import GenReID
    from .gallery import build_gallery_index

    ctx, device = distributed.setup(args.device)  # under torchrun each rank encodes a share
    model = GenReID.load(args.checkpoint, device=str(device), batch_size=args.batch_size,
                         precision=args.precision)
    out = args.out or str(Path(args.checkpoint) / "gallery")
    index = build_gallery_index(model, args.data, out, args.index, args.flip)
    if ctx.main:
        print(json.dumps({"out": out, **index.describe()}))


def run_diagnose(args) -> None:
    from . import recognisability as rec
    from .api import GenReID
    from .data import load_split
    from .diagnostics import generated_identity_share, real_identity_share

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
        real = rec.encode_real(encoder, split.images, split.pids)
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
    from .gallery_bench import format_gallery, gallery_benchmark, random_identities

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # as typed, for records
    from .checkpoint import CheckpointError
    from .data import DataError

    try:
        if args.command == "pack":
            from .data import pack_split
            n = pack_split(args.data, args.out, args.size, args.quality,
                           on_error="skip" if args.skip_bad_files else "raise")
            print(f"packed {n} images of {args.data} at {args.size[0]}x{args.size[1]} into {args.out}")
        elif args.command == "train":
            run_train(args)
        elif args.command == "eval":
            run_eval(args)
        elif args.command == "index":
            run_index(args)
        elif args.command == "store":
            from .api import store_parts
            sizes = store_parts(args.checkpoint, {part: args.storage for part in args.parts})
            print(json.dumps({"checkpoint": str(args.checkpoint), "storage": args.storage,
                              "bytes": sizes}))
        elif args.command == "configure":
            from .api import configure_set
            data = configure_set(args.checkpoint, dict(args.settings)).to_dict()
            now = {}
            for key, _ in args.settings:
                section, name = config.setting_parent(data, key)
                now[key] = section[name]
            print(json.dumps(now))
        elif args.command == "sample":
            run_sample(args)
        elif args.command == "diagnose":
            run_diagnose(args)
        elif args.command == "bench":
            run_bench(args)
        elif args.command == "loadtest":
            return run_loadtest(args)
        elif args.command == "explore":
            from explorer.app import main as explore
            explore(checkpoint=args.checkpoint, data=args.data, host=args.host, port=args.port,
                    device=args.device, gallery=args.gallery)
    except (DataError, CheckpointError, ValueError, FloatingPointError) as e:
        print(f"genreid {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last saved checkpoint is intact (run the same command to resume)",
              file=sys.stderr)
        return 130
    distributed.teardown()  # under torchrun: leave the process group together
    return 0


if __name__ == "__main__":
    sys.exit(main())
