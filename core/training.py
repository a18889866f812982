"""The training loop every network shares: options, EMA, mixed precision, progress, periodic
saves and resume.

`Trainer` owns the loop: device, mixed precision, EMA, progress bar, periodic checkpoints
and resume. Each subclass (core/generator_trainer.py, core/trainers.py, core/baseline.py)
builds its network and returns its losses for one batch. The resumable state (weights, EMA,
optimiser, step, RNG) lives in a work folder apart from the shipped model set, which
receives half-precision EMA weights at every save.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from . import checkpoint as ckpt
from . import distributed
from .config import ModelSetConfig
from .data import Split
from .device import autocast
from .files import atomic_write
from .images import channel_stats


@dataclass
class TrainOptions:
    steps: int = 10_000
    batch_size: int = 16
    lr: float = 1e-4
    warmup: int = 0  # linear learning-rate warm-up steps
    # The last `decay` steps before `steps` lower the rate to 0 along a half cosine (0: constant
    # after the warm-up): a run that ends annealed, rather than at a noisy constant-rate iterate.
    decay: int = 0
    # The same half cosine over the last `decay_seconds` of --time-limit instead of over steps:
    # for a machine lent for minutes, whose steps per second are not known beforehand.
    decay_seconds: float = 0.0
    ema_decay: float = 0.999
    seed: int = 0
    save_every: int = 1000
    # Steps between kept copies of the exported set (WORK_DIR/kept/set-STEP; 0: none), for a
    # post-hoc mean of a run's last stretch (`genreid replace --from WORK_DIR/kept/*`).
    keep_every: int = 0
    sample_every: int = 0  # generator only: sample a grid and log the identity share
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16
    # Under torchrun: BatchNorm statistics over the whole batch (SyncBatchNorm, CUDA only)
    # instead of over each rank's shard.
    sync_bn: bool = False
    # Seconds of training after which the run saves (and exports) at the step it is on and
    # stops, resumable by the same command: for machines lent by the call (a GPU for 10 minutes).
    time_limit: float | None = None


def lr_factor(step: int, opt: TrainOptions, elapsed: float = 0.0) -> float:
    """The learning rate at `step` (0-based) as a fraction of --lr: linear warm-up, constant,
    then a half-cosine decay to 0 over the last `opt.decay` steps, or over the last
    `opt.decay_seconds` of `opt.time_limit` (`elapsed`: seconds this invocation has trained)."""
    warm = min(1.0, (step + 1) / opt.warmup) if opt.warmup else 1.0
    if opt.decay:
        into, length = step - (opt.steps - opt.decay), opt.decay
    elif opt.decay_seconds and opt.time_limit:
        into, length = elapsed - (opt.time_limit - opt.decay_seconds), opt.decay_seconds
    else:
        return warm
    if into < 0:
        return warm
    return warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, into / length)))


def ema_with_warmup(decay: float):
    """EMA whose decay grows as (1 + n) / (10 + n) up to `decay`.

    A fixed 0.999 from the first step keeps 37% of the random initial weights after 1,000
    steps, and such an average generates pure noise; the warm-up follows the live weights
    early on.
    """
    def average(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return averaged + (current - averaged) * (1.0 - d)

    return average


def fit_config(config: ModelSetConfig, split: Split) -> None:
    """Set what a configuration takes from its training split: channel statistics, identities."""
    config.mean, config.std = channel_stats(split.images)
    config.generator.num_identities = len(np.unique(split.pids))
    config.validate()


class Trainer:
    part: str = ""

    def __init__(self, out: str | Path, work_dir: str | Path, options: TrainOptions):
        self.out, self.work_dir, self.opt = Path(out), Path(work_dir), options
        self.dist, self.device = distributed.setup(options.device)
        if options.batch_size % self.dist.world:
            raise ValueError(f"--batch-size {options.batch_size} does not split over "
                             f"{self.dist.world} processes: use a multiple of {self.dist.world}")
        # Batches, flips, times and noises; the same seed on every rank (distributed.py).
        self.rng = torch.Generator().manual_seed(options.seed)
        torch.manual_seed(options.seed)
        self.log_path = self.work_dir / "log.jsonl"

    # --- to implement per network
    def param_groups(self) -> list[dict]:
        return [{"params": self.model.parameters()}]

    def losses(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def export(self) -> None:
        raise NotImplementedError

    def on_save(self, step: int) -> dict:
        return {}

    def identity(self) -> dict:
        """What a saved state belongs to (resuming checks the part)."""
        return {"part": self.part, "out": str(self.out.resolve())}

    @property
    def resuming(self) -> bool:
        """Whether the work folder holds a saved state that `run` goes on from; its weights
        then replace any warm start, so trainers skip loading one."""
        return (self.work_dir / "latest.json").is_file()

    def warm_started(self, module: torch.nn.Module, init_from: str | Path | None) -> torch.nn.Module:
        """`module` with the weights of `init_from`'s trained part of the same name (a fresh
        optimiser), so training goes on from another set's network. A resumed run goes on
        from its own state instead."""
        if init_from is None:
            return module
        ckpt.verify(init_from)
        if self.resuming:
            self.say(f"{self.part}: resuming {self.work_dir}; --init-from {init_from} is not loaded")
            return module
        ckpt.load_weights(init_from, self.part, module)
        self.say(f"{self.part}: warm start from {init_from}")
        return module

    # --- the loop
    def randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.rng).to(self.device)

    def rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.rng).to(self.device)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This process's rows of a tensor drawn for the whole batch (all of it when alone)."""
        return self.dist.shard(x)

    def setup(self, model: torch.nn.Module) -> None:
        """`self.model` is the network itself (weights, EMA, export); `self.net` is what the
        losses call forward on: the same network, wrapped in DDP under torchrun so that
        backward averages the gradients over ranks."""
        model = model.to(self.device).to(memory_format=torch.channels_last)
        if self.opt.sync_bn and self.dist.active:
            if self.device.type != "cuda":
                raise ValueError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm is GPU-only); on "
                                 "CPU each process normalises over its own shard of the batch")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.net = model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.ema = AveragedModel(self.model, avg_fn=ema_with_warmup(self.opt.ema_decay),
                                 use_buffers=True)
        self.ema.module.eval()
        groups = self.param_groups()
        for g in groups:
            g["base_lr"] = self.opt.lr * g.pop("lr_scale", 1.0)
            g["lr"] = g["base_lr"]
        self.optimizer = torch.optim.Adam(groups, lr=self.opt.lr)

    def run(self) -> None:
        state = ckpt.load_training_state(self.work_dir, {"model": self.model, "ema": self.ema},
                                         self.optimizer, {"part": self.part})
        start = 0
        if state is not None:
            meta, rng = state
            start = meta["step"]
            self.rng.set_state(rng["batch"])
            torch.set_rng_state(rng["torch"])
            self.say(f"resuming {self.part} from step {start} in {self.work_dir}")
        self.dist.check_same(start, "the step to resume from")
        if start >= self.opt.steps:
            self.say(f"{self.part}: already trained for {start} steps (asked {self.opt.steps})")
            if self.dist.main:
                self.export()
            return
        if self.dist.active:
            self.say(f"{self.part}: {self.dist.world} processes, {self.opt.batch_size // self.dist.world} "
                     f"of each batch of {self.opt.batch_size} per process ({self.device.type})")
        self.model.train()
        bar = tqdm(range(start, self.opt.steps), initial=start, total=self.opt.steps,
                   desc=f"train {self.part}", dynamic_ncols=True, mininterval=2.0,
                   disable=not self.dist.main)
        running: dict[str, float] = {}
        t0, seen = time.time(), 0
        started, elapsed = time.monotonic(), 0.0
        for step in bar:
            factor = lr_factor(step, self.opt, elapsed)
            for g in self.optimizer.param_groups:
                g["lr"] = g["base_lr"] * factor
            with autocast(self.device, self.opt.precision):
                losses = self.losses()
            loss = self.dist.mean(losses["loss"])  # every rank stops together
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{self.part} loss became {loss.item()} at step {step}; the last "
                    f"saved state in {self.work_dir} is intact: lower --lr and resume")
            self.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            self.optimizer.step()
            self.ema.update_parameters(self.model)
            seen += self.opt.batch_size
            for k, v in losses.items():
                running[k] = 0.98 * running.get(k, v.item()) + 0.02 * v.item()
            bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()}, refresh=False)
            done = step + 1
            elapsed = self.elapsed(started)
            out_of_time = self.opt.time_limit is not None and elapsed >= self.opt.time_limit
            if done % self.opt.save_every == 0 or done == self.opt.steps or out_of_time:
                averaged = self.dist.mean(torch.tensor(list(running.values()), dtype=torch.float64,
                                                       device=self.device)).tolist()
                if self.dist.main:  # one writer; the others go on and wait at the next step
                    extra = self.on_save(done)
                    self.save(done)
                    record = {"step": done, **{k: round(v, 5) for k, v in zip(running, averaged)},
                              "images_per_s": round(seen / (time.time() - t0), 1), **extra}
                    with open(self.log_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    bar.write(json.dumps(record))
                t0, seen = time.time(), 0
            if out_of_time:
                self.say(f"{self.part}: --time-limit of {self.opt.time_limit:g} s reached at step "
                         f"{done}; saved (run the same command to go on)")
                break

    def elapsed(self, started: float) -> float:
        """Seconds trained since `started`; under torchrun the mean over ranks, so that every
        rank stops at --time-limit and sets a time-based rate at the same step."""
        seconds = time.monotonic() - started
        if self.opt.time_limit is None or not self.dist.active:
            return seconds
        return float(self.dist.mean(torch.tensor(seconds, dtype=torch.float64, device=self.device)))

    def say(self, line: str) -> None:
        if self.dist.main:
            print(line, flush=True)

    def save(self, step: int) -> None:
        ckpt.save_training_state(self.work_dir, step, {"model": self.model, "ema": self.ema},
                                 self.optimizer, self.identity(),
                                 {"batch": self.rng.get_state(), "torch": torch.get_rng_state()})
        self.export()
        if self.opt.keep_every and step % self.opt.keep_every == 0:
            self.keep(step)

    def keep(self, step: int) -> None:
        """Copy the just-exported set to WORK_DIR/kept/set-STEP, atomically: a kill mid-copy
        leaves only a hidden temporary folder, which `kept/*` does not match."""
        kept = self.work_dir / "kept" / f"set-{step:08d}"
        atomic_write(kept, lambda tmp: shutil.copytree(self.out, tmp, dirs_exist_ok=True),
                     folder=True)
