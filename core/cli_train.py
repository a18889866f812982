"""`genreid train NETWORK`: one command per network of a model set, one handler for all."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from .config import DEFAULT_CHECKPOINT, PRECISIONS

BANK_HELP = ("generate N images once and draw the generated share of each batch from them "
             "(default 0: generate on the fly at every step, as the paper; a bank suits CPUs)")


def add_train_options(p: argparse.ArgumentParser, steps: int, batch: int, lr: float,
                      save_every: int) -> None:
    p.add_argument("--steps", type=int, default=steps, help="total optimiser steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=batch, help="default %(default)s")
    p.add_argument("--lr", type=float, default=lr, help="Adam learning rate (default %(default)s)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps (default 0)")
    p.add_argument("--decay", type=int, default=0, metavar="STEPS",
                   help="lower the rate to 0 along a half cosine over the last STEPS steps "
                        "before --steps, so the run ends annealed (default 0: constant)")
    p.add_argument("--decay-seconds", type=float, default=0.0, metavar="SECONDS",
                   help="the same decay over the last SECONDS of --time-limit instead, for a "
                        "machine whose steps per second are not known beforehand (default 0)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=save_every,
                   help="steps between checkpoints (default %(default)s)")
    p.add_argument("--keep-every", type=int, default=0, metavar="STEPS",
                   help="also keep a copy of the exported set every STEPS steps (a multiple "
                        "of --save-every) in WORK_DIR/kept/, to average a run's last stretch "
                        "with `genreid replace --from WORK_DIR/kept/*` (default 0: none)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
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


def add_inverter_init_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init-from", default=None, metavar="SET",
                   help="warm start: begin from this model set's trained network of the same "
                        "kind (e.g. the shipped set's, after a new generator; fresh "
                        "optimiser); ignored when resuming")


def add_augment_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--augment", action="store_true",
                   help="besides flips, random shifts and random erasing of the training "
                        "pictures (core/augment.py; default: flips only)")


def add_train(sub) -> None:
    train = sub.add_parser("train", help="train one network of a model set")
    nets = train.add_subparsers(dest="network", required=True)
    p = nets.add_parser("generator", help="the identity-conditioned diffusion U-Net and identity table")
    p.add_argument("--data", required=True, help="training split: image folder or pack (.npz)")
    p.add_argument("--out", default=str(DEFAULT_CHECKPOINT), help="model-set folder to write")
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
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    add_train_options(p, steps=20_000, batch=256, lr=1e-4, save_every=5000)
    p = nets.add_parser("preview", help="distil the guided generator into the smaller, faster "
                        "network the explorer previews with")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--prior-fraction", type=float, default=0.5,
                   help="share of trajectories with prior identities, the rest table rows")
    add_train_options(p, steps=20_000, batch=8, lr=1e-4, save_every=500)
    p = nets.add_parser("img2id", help="image -> identity (trained on generated images)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--data", default=None, help="the generator's training split, for real images")
    p.add_argument("--real-fraction", type=float, default=0.0,
                   help="share of each batch taken from real training images (default 0: paper)")
    p.add_argument("--bank", type=int, default=0, help=BANK_HELP)
    p.add_argument("--val-persons", type=int, default=0,
                   help="hold this many training persons out of the real batches, measure "
                        "retrieval among them at every save and export the best save "
                        "(early stopping; needs --data; default 0: off, the last save)")
    add_inverter_init_option(p)
    add_augment_option(p)
    add_train_options(p, steps=20_000, batch=32, lr=1e-4, save_every=1000)
    p = nets.add_parser("img2noise", help="image -> noise (trained by reconstruction)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--data", default=None, help="the generator's training split")
    p.add_argument("--generated-fraction", type=float, default=0.0,
                   help="share of each batch generated from prior identities (default 0)")
    p.add_argument("--bank", type=int, default=0, help=BANK_HELP)
    p.add_argument("--recon-weight", type=float, default=1.0,
                   help="weight of the reconstruction loss through the sampler (default 1)")
    p.add_argument("--noise-weight", type=float, default=0.0,
                   help="weight of L1 to the known noise of generated images (default 0)")
    add_inverter_init_option(p)
    add_train_options(p, steps=10_000, batch=16, lr=1e-4, save_every=500)
    train.set_defaults(func=run_train)


def work_dir_for(args, checkpoint: str) -> str:
    """runs/<set name>-<hash of its full path>/<network>: two sets never share a state."""
    if args.work_dir:
        return args.work_dir
    resolved = Path(checkpoint).resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    return str(Path("runs") / f"{resolved.name}-{digest}" / args.network)


def run_train(args) -> None:
    from .augment import Augment
    from .baseline import BaselineTrainer
    from .config import ModelSetConfig
    from .generator_trainer import GeneratorTrainer
    from .trainers import Img2IDTrainer, Img2NoiseTrainer, PreviewTrainer, PriorTrainer
    from .training import TrainOptions

    if args.save_every < 1:
        raise ValueError(f"--save-every must be at least 1 step (got {args.save_every})")
    if not 0 <= args.decay <= args.steps:
        raise ValueError(f"--decay {args.decay} must be between 0 and --steps {args.steps}")
    if args.decay_seconds:
        if args.decay:
            raise ValueError("--decay (steps) and --decay-seconds (time) both set: choose one")
        if args.time_limit is None or not 0 < args.decay_seconds <= args.time_limit:
            raise ValueError(f"--decay-seconds {args.decay_seconds:g} needs --time-limit, at "
                             "least as long (the decay ends where the time limit stops the run)")
    if args.keep_every < 0 or args.keep_every % args.save_every:
        raise ValueError(f"--keep-every {args.keep_every} must be a multiple of --save-every "
                         f"{args.save_every} (the steps at which the run saves), or 0")
    opts = TrainOptions(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        warmup=args.warmup, decay=args.decay,
                        decay_seconds=args.decay_seconds, ema_decay=args.ema_decay,
                        seed=args.seed,
                        save_every=args.save_every, keep_every=args.keep_every,
                        device=args.device, precision=args.precision,
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
                                Augment() if args.augment else None, args.init_from)
    else:
        trainer = Img2NoiseTrainer(args.checkpoint, work_dir_for(args, args.checkpoint), opts,
                                   args.data, args.generated_fraction, args.bank,
                                   args.recon_weight, args.noise_weight, args.init_from)
    trainer.run()
