"""Training of the four networks, one loop for all.

    genreid train generator --data packs/cuhk03_train_64x32.npz --out checkpoints/default
    genreid train prior     --checkpoint checkpoints/default
    genreid train img2id    --checkpoint checkpoints/default [--data ... --real-fraction 0.5]
    genreid train img2noise --checkpoint checkpoints/default --data ...

`Trainer` owns the loop: device, mixed precision, EMA, progress bar, periodic checkpoints
and resume. Each subclass builds its network and returns its losses for one batch. The
resumable state (weights, EMA, optimiser, step, RNG) lives in a work folder apart from the
shipped model set, which receives half-precision EMA weights at every save.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from . import checkpoint as ckpt
from . import distributed
from .augment import Augment
from .config import ModelSetConfig, setting_parent
from .data import Split, load_split
from .device import autocast
from .diagnostics import identity_share
from .images import Normalizer, channel_stats, image_grid
from .index import scaled
from .metrics import euclidean_distances, retrieval_summary
from .models import Generator, IdentityPrior, Img2ID, Img2Noise
from .pipeline import generate, guided, sample_prior
from .sampler import ddim_sample
from .schedule import add_noise


@dataclass
class TrainOptions:
    steps: int = 10_000
    batch_size: int = 16
    lr: float = 1e-4
    warmup: int = 0  # linear learning-rate warm-up steps
    ema_decay: float = 0.999
    seed: int = 0
    save_every: int = 1000
    sample_every: int = 0  # generator only: sample a grid and log the identity share
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16
    # Under torchrun: BatchNorm statistics over the whole batch (SyncBatchNorm, CUDA only)
    # instead of over each rank's shard.
    sync_bn: bool = False
    # Seconds of training after which the run saves (and exports) at the step it is on and
    # stops, resumable by the same command: for machines lent by the call (a GPU for 10 minutes).
    time_limit: float | None = None


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


class TrainingImages:
    """A split held on the device as uint8; batches are normalised, randomly flipped."""

    def __init__(self, split: Split, normalizer: Normalizer, device: torch.device):
        self.images = torch.from_numpy(split.images).to(device)
        labels, self.pids = split.relabel()
        self.labels = torch.from_numpy(labels).to(device)
        self.camids = split.camids
        self.normalizer = normalizer
        self.pool: torch.Tensor | None = None  # the rows batches draw from (None: all)

    def hold_out(self, persons: int, seed: int) -> np.ndarray:
        """Take `persons` identities (seeded, among those seen by 2+ cameras) out of the
        batches; returns their image rows, for validation."""
        labels = self.labels.cpu().numpy()
        seen = [lab for lab in range(len(self.pids))
                if len(np.unique(self.camids[labels == lab])) > 1]
        if not 2 <= persons < len(seen):
            raise ValueError(f"--val-persons must be within 2..{len(seen) - 1} (persons seen "
                             f"by two or more cameras); got {persons}")
        chosen = np.random.default_rng(seed).choice(seen, persons, replace=False)
        held = np.isin(labels, chosen)
        self.pool = torch.from_numpy(np.flatnonzero(~held))
        return np.flatnonzero(held)

    def batch(self, n: int, rng: torch.Generator, keep=lambda rows: rows
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """n random images (with replacement); `keep` picks this process's rows of the draw."""
        if self.pool is None:
            return self.take(torch.randint(len(self.images), (n,), generator=rng), rng, keep)
        return self.take(self.pool[torch.randint(len(self.pool), (n,), generator=rng)], rng, keep)

    def pk_batch(self, p: int, k: int, rng: torch.Generator, keep=lambda rows: rows
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """p identities x k of their images (with replacement), as metric learning needs."""
        labels = self.labels.cpu()
        chosen = torch.randperm(len(self.pids), generator=rng)[:p]
        index = []
        for label in chosen.tolist():
            pool = torch.nonzero(labels == label).flatten()
            index.append(pool[torch.randint(len(pool), (k,), generator=rng)])
        return self.take(torch.cat(index), rng, keep)

    def take(self, index: torch.Tensor, rng: torch.Generator, keep) -> tuple[torch.Tensor, torch.Tensor]:
        flip = torch.rand(len(index), generator=rng) < 0.5  # drawn for the whole batch
        index, flip = keep(index).to(self.images.device), keep(flip).to(self.images.device)
        x = self.normalizer.encode(self.images[index])
        return torch.where(flip.reshape(-1, 1, 1, 1), x.flip(3), x), self.labels[index]


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
        started = time.monotonic()
        for step in bar:
            warm = min(1.0, (step + 1) / self.opt.warmup) if self.opt.warmup else 1.0
            for g in self.optimizer.param_groups:
                g["lr"] = g["base_lr"] * warm
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
            out_of_time = self.out_of_time(started)
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

    def out_of_time(self, started: float) -> bool:
        """Whether --time-limit has passed; under torchrun, on any rank (all stop together)."""
        if self.opt.time_limit is None:
            return False
        late = time.monotonic() - started >= self.opt.time_limit
        if not self.dist.active:
            return late
        return bool(self.dist.mean(torch.tensor(float(late), device=self.device)) > 0)

    def say(self, line: str) -> None:
        if self.dist.main:
            print(line, flush=True)

    def save(self, step: int) -> None:
        ckpt.save_training_state(self.work_dir, step, {"model": self.model, "ema": self.ema},
                                 self.optimizer, self.identity(),
                                 {"batch": self.rng.get_state(), "torch": torch.get_rng_state()})
        self.export()


# ------------------------------------------------------------------------------- generator

def pca_identity_init(images: torch.Tensor, labels: torch.Tensor, num: int, dim: int,
                      scale: float) -> torch.Tensor:
    """Rows from the PCA of each identity's mean (normalised) image, spread like U[-s, s]."""
    flat = images.float().flatten(1)
    sums = torch.zeros(num, flat.shape[1]).index_add_(0, labels.cpu(), flat.cpu())
    counts = torch.bincount(labels.cpu(), minlength=num).clamp_min(1).unsqueeze(1)
    means = sums / counts
    means = means - means.mean(0)
    _, _, v = torch.linalg.svd(means, full_matrices=False)
    rows = means @ v[:dim].T  # (num, k), k = min(dim, num, pixels)
    rows = rows * (scale / math.sqrt(3.0)) / rows.std().clamp_min(1e-12)
    # Fewer identities than dimensions: the remaining columns start as in the paper.
    rest = torch.empty(num, dim - rows.shape[1]).uniform_(-scale, scale)
    return torch.cat([rows, rest], dim=1)


# Settings a user may change in an exported set (`genreid configure`, `genreid store`) that no
# weights depend on: a later export keeps the set's values rather than the run's.
SETTINGS = ("generator.guidance", "preview.steps", "preview.guided_steps", "img2id.flip",
            "img2id.metric", "storage")


def export_config(out: Path, config: ModelSetConfig, explicit: tuple[str, ...] = ()) -> ModelSetConfig:
    """The config an export writes: the run's, with the settings the set already has, except
    those this run was told explicitly (e.g. --guidance)."""
    try:
        current = ckpt.read_config(out).to_dict() if (Path(out) / "config.json").is_file() else None
    except ckpt.CheckpointError:
        current = None  # an unreadable config is replaced, as a new set's would be
    if current is None:
        return config
    data = config.to_dict()
    for key in SETTINGS:
        if key not in explicit:
            (src, name), (dst, _) = setting_parent(current, key), setting_parent(data, key)
            dst[name] = src[name]
    merged = ModelSetConfig.from_dict(data)
    merged.validate()
    return merged


# How the generator's per-pixel noise error is weighted over noise levels: "eps" the paper's
# plain L1 on the noise; "v" the L1 on v = signal * eps - noise * x0 (the same error / signal).
LOSS_WEIGHTINGS = ("eps", "v")


class GeneratorTrainer(Trainer):
    part = "generator"

    def __init__(self, data: str, out, work_dir, options: TrainOptions,
                 config: ModelSetConfig | None = None, id_lr_scale: float = 1.0,
                 guidance: float | None = None, init_from: str | Path | None = None,
                 null_fraction: float = 0.0, loss_weighting: str = "eps"):
        super().__init__(out, work_dir, options)
        if not 0.0 <= null_fraction < 1.0:
            raise ValueError(f"--null-fraction must be in [0, 1), not {null_fraction}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"--loss-weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, "
                             f"not {loss_weighting!r}")
        self.null_fraction, self.loss_weighting = null_fraction, loss_weighting
        saved, started = self.work_dir / "config.json", self.work_dir / "identities.json"
        resuming = saved.is_file()
        self.dist.barrier()  # every rank has looked before rank 0 writes
        if resuming:  # the architecture is the one training started with
            self.config = ModelSetConfig.load(saved)
        elif init_from is not None:  # a warm start keeps the set's architecture and statistics
            if config is not None:
                raise ValueError("--init-from takes the architecture of its set: drop --config")
            ckpt.verify(init_from)
            self.config = ckpt.read_config(init_from)
        else:
            self.config = config or ModelSetConfig()
        size = tuple(self.config.image_size)
        split = load_split(data, size)
        self.source = str(data)
        if not resuming and init_from is None:
            fit_config(self.config, split)
        self.explicit = ("generator.guidance",) if guidance is not None else ()
        if guidance is not None:  # sampling only: may change when resuming
            self.config.generator.guidance = guidance
            self.config.validate()
        self.normalizer = Normalizer(self.config.mean, self.config.std, self.device)
        self.data = TrainingImages(split, self.normalizer, self.device)
        if started.is_file() and ckpt.read_identities(self.work_dir) != self.data.pids.tolist():
            raise ValueError(f"{data} does not hold the identities the run in {self.work_dir} "
                             "started with: pass the same training split (or another --work-dir)")
        if self.dist.main and (not resuming or guidance is not None):
            self.work_dir.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write(saved, self.config.save)
        if self.dist.main and not started.is_file():
            ckpt.write_json(started, {"pids": self.data.pids.tolist(), "source": self.source})
        self.id_lr_scale = id_lr_scale
        generator = Generator(self.config.generator)
        if init_from is not None and not resuming:
            # Warm start: the set's weights and identity table, a fresh optimiser. The table's
            # rows are persons, so the set must have been trained on this very split.
            if ckpt.read_identities(init_from) != self.data.pids.tolist():
                raise ValueError(f"{init_from} was trained on other identities than {data}: "
                                 "a warm start needs the same training split")
            ckpt.load_weights(init_from, "generator", generator)
            self.say(f"generator: warm start from {init_from}")
        elif self.config.generator.id_init == "pca":
            with torch.no_grad():
                x = self.normalizer.encode(self.data.images)
                generator.identities.weight.copy_(pca_identity_init(
                    x, self.data.labels, self.config.generator.num_identities,
                    self.config.generator.id_dim, self.config.generator.id_init_scale))
        self.setup(generator)
        # A fixed grid (8 identities x 4 noises) to watch identity control emerge.
        g = torch.Generator().manual_seed(1234)
        n_ids = min(8, self.config.generator.num_identities)
        self.grid_ids = torch.randperm(self.config.generator.num_identities, generator=g)[:n_ids]
        self.grid_noise = torch.randn(4, 3, *size, generator=g)

    def param_groups(self):
        table = [self.model.identities.weight]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("identities.")]
        # Each row only learns when its identity is in the batch: give the table a larger step.
        return [{"params": rest}, {"params": table, "lr_scale": self.id_lr_scale}]

    def losses(self):
        n = self.opt.batch_size
        x0, labels = self.data.batch(n, self.rng, self.local)  # (b, 3, H, W): this rank's rows
        identity = self.model.identities(labels)  # (b, D)
        t = self.local(self.rand(n, 1, 1, 1))
        eps = self.local(self.randn(n, *x0.shape[1:])).contiguous(memory_format=torch.channels_last)
        x_t, signal, noise = add_noise(x0, eps, t, self.config.schedule)
        attraction = 0.5 * identity.float().pow(2).mean()  # pulls identities to the origin
        if self.null_fraction:
            # Classifier-free training: some rows see the "no identity" vector (the origin,
            # which guidance extrapolates away from), so the unconditional model is trained.
            keep = self.local(self.rand(n, 1)) >= self.null_fraction
            identity = identity * keep.to(identity.dtype)
        eps_hat = self.net(x_t, noise**2, identity)
        error = (eps_hat.float() - eps).abs()
        denoise = error.mean()
        if self.loss_weighting == "v":
            # |v_hat - v| = |eps_hat - eps| / signal: at high noise an eps error is amplified
            # 1/signal-fold in the predicted image, where the person's colours are decided.
            weighted = (error / signal).mean()
        else:
            weighted = denoise
        return {"loss": weighted + attraction, "l1": denoise}

    @torch.no_grad()
    def on_save(self, step):
        if not self.opt.sample_every or step % self.opt.sample_every:
            return {}
        gen = self.ema.module
        ids, noise = self.grid_ids, self.grid_noise
        identity = gen.identities(ids.to(self.device)).repeat_interleave(len(noise), 0)
        noise = noise.repeat(len(ids), 1, 1, 1).to(self.device)
        with autocast(self.device, self.opt.precision):
            x = generate(gen, identity, noise, self.config.schedule)
        x = self.normalizer.clip(x)
        share = identity_share(x.reshape(len(ids), len(self.grid_noise), *x.shape[1:]))
        from PIL import Image
        (self.work_dir / "samples").mkdir(exist_ok=True)
        Image.fromarray(image_grid(self.normalizer.decode(x), len(ids))).save(
            self.work_dir / "samples" / f"step-{step:08d}.png")
        return {"identity_share": round(share, 4)}

    def export(self):
        w = ckpt.ModelSetWriter(self.out)
        w.config(export_config(self.out, self.config, self.explicit))
        w.identities(self.data.pids.tolist(), self.source)
        w.weights("generator", self.ema.module)
        w.commit()


# ------------------------------------------------------------ networks trained on a set

class ModelSetTrainer(Trainer):
    """Base for the networks trained on top of an exported generator."""

    def __init__(self, checkpoint: str | Path, work_dir, options: TrainOptions):
        super().__init__(checkpoint, work_dir, options)
        ckpt.verify(checkpoint)
        self.config = ckpt.read_config(checkpoint)
        self.pids = ckpt.read_identities(checkpoint)
        self.normalizer = Normalizer(self.config.mean, self.config.std, self.device)
        self.generator = self.frozen(ckpt.load_weights(checkpoint, "generator",
                                                       Generator(self.config.generator)))

    def frozen(self, module: torch.nn.Module) -> torch.nn.Module:
        module = module.to(self.device).to(memory_format=torch.channels_last).eval()
        return module.requires_grad_(False)

    def table(self) -> torch.Tensor:
        return self.generator.identities.weight.detach().float()

    def real_images(self, data: str | None) -> TrainingImages | None:
        if data is None:
            return None
        images = TrainingImages(load_split(data, tuple(self.config.image_size)),
                                self.normalizer, self.device)
        if images.pids.tolist() != self.pids:
            raise ValueError(f"{data} does not hold the identities the generator was trained on "
                             f"(identities.json): pass the generator's training split")
        return images

    def load_prior(self, bank: int) -> None:
        """The frozen prior that generated images need, and optionally their bank."""
        self.prior = self.frozen(ckpt.load_weights(self.out, "prior", IdentityPrior(self.config.prior)))
        if bank:
            self.use_bank(bank)

    def use_bank(self, size: int) -> None:
        """Generate `size` (image, identity, noise) triples once; `generated` then draws from them.

        On the fly (the paper's way, and the default) every generated image costs ten generator
        passes at every step; on a CPU a fixed bank amortises them over many steps.
        """
        # Beside the networks' work folders, so img2id and img2noise share one bank.
        path = self.work_dir.parent / f"bank-{size}-seed{self.opt.seed}.safetensors"
        if not path.is_file() and self.dist.main:  # one rank generates it, the others wait
            rng = torch.Generator().manual_seed(self.opt.seed + 1)
            parts: dict[str, list[torch.Tensor]] = {"images": [], "identities": [], "noises": []}
            for start in tqdm(range(0, size, 64), desc="generating the bank", dynamic_ncols=True):
                n = min(64, size - start)
                with autocast(self.device, self.opt.precision), torch.no_grad():
                    identity = sample_prior(self.prior, torch.randn(n, self.config.prior.id_dim,
                                                                    generator=rng).to(self.device),
                                            self.config.schedule)
                    z = torch.randn(n, 3, *self.config.image_size, generator=rng).to(self.device)
                    x = self.generate_images(identity, z)
                parts["images"].append(x.half().cpu())
                parts["identities"].append(identity.float().cpu())
                parts["noises"].append(z.half().cpu())
            bank = {k: torch.cat(v).contiguous() for k, v in parts.items()}
            ckpt.atomic_write(path, lambda p: save_file(bank, str(p)))
        self.dist.barrier()
        self.dist.check_same(path.is_file(), f"whether the bank {path.name} is there")
        self.bank = {k: v.to(self.device) for k, v in load_file(str(path)).items()}

    @torch.no_grad()
    def prior_identities(self, n: int) -> torch.Tensor:
        """This rank's rows of n new identities drawn from the frozen prior."""
        noise = self.local(self.randn(n, self.config.prior.id_dim))
        return sample_prior(self.prior, noise, self.config.schedule)

    @torch.no_grad()
    def generate_images(self, identity: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        z = z.contiguous(memory_format=torch.channels_last)
        x = self.normalizer.clip(generate(self.generator, identity, z, self.config.schedule))
        return x.contiguous(memory_format=torch.channels_last)

    def generated(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's rows of n images GEN(id, z), id from the prior and z Gaussian (or drawn
        from the bank): (images, ids, z)."""
        if getattr(self, "bank", None) is not None:
            index = self.local(torch.randint(len(self.bank["images"]), (n,), generator=self.rng))
            x, identity, z = (self.bank[k][index.to(self.device)].float()
                              for k in ("images", "identities", "noises"))
            return (x.contiguous(memory_format=torch.channels_last), identity,
                    z.contiguous(memory_format=torch.channels_last))
        identity = self.prior_identities(n)
        z = self.local(self.randn(n, 3, *self.config.image_size))
        z = z.contiguous(memory_format=torch.channels_last)
        return self.generate_images(identity, z), identity.float(), z

    def write(self, part: str) -> None:
        w = ckpt.ModelSetWriter(self.out)
        w.weights(part, self.ema.module)
        w.commit()


class PriorTrainer(ModelSetTrainer):
    part = "prior"

    def __init__(self, checkpoint, work_dir, options):
        super().__init__(checkpoint, work_dir, options)
        self.vectors = self.table()  # only trained identities: the table has no other rows
        prior = IdentityPrior(self.config.prior)
        prior.mean.copy_(self.vectors.mean(0))
        prior.std.copy_(self.vectors.std(0).clamp_min(1e-6))
        self.setup(prior)

    def losses(self):
        n = self.opt.batch_size
        index = self.local(torch.randint(len(self.vectors), (n,), generator=self.rng))
        z0 = self.model.normalize(self.vectors[index.to(self.device)])
        t, eps = self.local(self.rand(n, 1)), self.local(self.randn(n, z0.shape[1]))
        z_t, _, noise = add_noise(z0, eps, t, self.config.schedule)
        loss = F.l1_loss(self.net(z_t, noise**2).float(), z0)
        return {"loss": loss}

    def export(self):
        self.write("prior")


class Img2IDTrainer(ModelSetTrainer):
    """MSE to the identity: on generated images (the paper), optionally mixed with real ones.

    With val_persons, that many training persons' real crops are held out of the batches;
    every save measures retrieval among them (mAP, Market-1501 protocol) and the set gets the
    weights of the best save so far, not the last (early stopping, resumable: best.json)."""

    part = "img2id"

    def __init__(self, checkpoint, work_dir, options, data: str | None = None,
                 real_fraction: float = 0.0, bank: int = 0, val_persons: int = 0,
                 augment: Augment | None = None):
        super().__init__(checkpoint, work_dir, options)
        self.augment = augment
        if not 0.0 <= real_fraction <= 1.0:
            raise ValueError(f"real fraction must be within [0, 1], got {real_fraction}")
        if (real_fraction > 0 or val_persons) and data is None:
            raise ValueError("--real-fraction > 0 and --val-persons need --data (the "
                             "generator's training split)")
        self.real = self.real_images(data) if real_fraction > 0 or val_persons else None
        self.val_rows = self.real.hold_out(val_persons, options.seed + 2) if val_persons else None
        self.best_path = self.work_dir / "best.json"
        # Resumed past its last step, a validated run's set already holds its best save.
        self.export_now, self.pending_best = not (val_persons and self.best_path.is_file()), None
        self.n_real = round(options.batch_size * real_fraction)
        if self.n_real < options.batch_size:  # generated images need the prior
            self.load_prior(bank)
        self.setup(Img2ID(self.config.img2id, tuple(self.config.image_size)))

    def losses(self):
        xs, targets = [], []
        if self.n_real:
            x, labels = self.real.batch(self.n_real, self.rng, self.local)
            xs.append(x)
            targets.append(self.table()[labels])
        if self.opt.batch_size - self.n_real:
            x, identity, _ = self.generated(self.opt.batch_size - self.n_real)
            xs.append(x)
            targets.append(identity)
        x = torch.cat(xs)
        if self.augment is not None:  # real and generated alike: identity survives both
            x = self.augment(x, self.rng, self.opt.batch_size, self.local)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = F.mse_loss(self.net(x).float(), torch.cat(targets))
        return {"loss": loss}

    @torch.no_grad()
    def validation_map(self) -> float:
        """Standard-protocol mAP among the held-out persons' crops, each the query against
        the others, encoded by the EMA weights (with flip averaging if the set uses it)."""
        net, features = self.ema.module, []
        for start in range(0, len(self.val_rows), 256):
            rows = torch.from_numpy(self.val_rows[start:start + 256]).to(self.real.images.device)
            x = self.real.normalizer.encode(self.real.images[rows])
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.opt.precision):
                features.append(net.encode(x, self.config.img2id.flip).cpu().numpy())
        f = scaled(np.concatenate(features), self.config.img2id.metric)
        pids = self.real.labels.cpu().numpy()[self.val_rows]
        cams = self.real.camids[self.val_rows]
        return float(retrieval_summary(euclidean_distances(f, f), pids, pids, cams, cams)
                     ["standard"]["mAP"])

    def on_save(self, step):
        if self.val_rows is None:
            return {}
        score = self.validation_map()
        best = json.loads(self.best_path.read_text()) if self.best_path.is_file() else None
        self.export_now = best is None or score > best["val_map"]
        if self.export_now:
            best = self.pending_best = {"step": step, "val_map": score}
        return {"val_map": round(score, 5), "exported_step": best["step"]}

    def export(self):
        # With validation, the set keeps the best save's weights (written when it was made);
        # best.json follows the weights, so a crash between them leaves it naming older ones.
        if self.val_rows is None or self.export_now:
            self.write("img2id")
        if self.pending_best is not None:
            best, self.pending_best = self.pending_best, None
            ckpt.atomic_write(self.best_path, lambda p: p.write_text(json.dumps(best)))


class Img2NoiseTrainer(ModelSetTrainer):
    """Reconstruction: L1 between an image and GEN(Img2Noise(image), its identity), through the
    sampler (docs/method.md). Optionally, on generated images, whose true noise z is known, also
    L1(Img2Noise(GEN(z, id)), z): one network pass instead of ten, which suits CPUs.
    """

    part = "img2noise"

    def __init__(self, checkpoint, work_dir, options, data: str | None = None,
                 generated_fraction: float = 0.0, bank: int = 0, recon_weight: float = 1.0,
                 noise_weight: float = 0.0):
        super().__init__(checkpoint, work_dir, options)
        if not 0.0 <= generated_fraction <= 1.0:
            raise ValueError(f"generated fraction must be within [0, 1], got {generated_fraction}")
        if recon_weight < 0 or noise_weight < 0 or recon_weight + noise_weight == 0:
            raise ValueError("the reconstruction and noise weights must be >= 0, not both 0")
        if noise_weight and not generated_fraction:
            raise ValueError("the noise loss needs generated images: set --generated-fraction > 0")
        self.recon_weight, self.noise_weight = recon_weight, noise_weight
        self.n_gen = round(options.batch_size * generated_fraction)
        if self.n_gen < options.batch_size and data is None:
            raise ValueError("img2noise trains on real images: pass --data (the generator's "
                             "training split), or --generated-fraction 1")
        self.real = self.real_images(data) if self.n_gen < options.batch_size else None
        if self.n_gen:
            self.load_prior(bank)
        self.setup(Img2Noise(self.config.img2noise))

    def losses(self):
        xs, ids = [], []
        if self.real is not None:
            x, labels = self.real.batch(self.opt.batch_size - self.n_gen, self.rng, self.local)
            xs.append(x)
            ids.append(self.table()[labels])
        if self.n_gen:
            x, identity, z_true = self.generated(self.n_gen)
            xs.append(x)
            ids.append(identity)
        x = torch.cat(xs).contiguous(memory_format=torch.channels_last)
        z = self.net(x)
        out = {}
        if self.recon_weight:
            x_hat = generate(self.generator, torch.cat(ids), z, self.config.schedule)
            out["recon"] = F.l1_loss(x_hat.float(), x)
        if self.noise_weight:
            out["noise"] = F.l1_loss(z[len(z) - self.n_gen:].float(), z_true)
        return {"loss": self.recon_weight * out.get("recon", 0.0)
                + self.noise_weight * out.get("noise", 0.0), **out}

    def export(self):
        self.write("img2noise")


def init_from(student: torch.nn.Module, teacher: torch.nn.Module) -> int:
    """Copy the teacher's tensors into the student wherever names and shapes agree; returns how
    many. With one block per level that is the first block of each level: distillation then
    starts from the teacher's features rather than from random ones."""
    source = teacher.state_dict()
    own = student.state_dict()
    shared = {k for k, v in own.items() if k in source and source[k].shape == v.shape}
    student.load_state_dict({k: source[k] if k in shared else v for k, v in own.items()})
    return len(shared)


class PreviewTrainer(ModelSetTrainer):
    """Distils the generator, with its identity guidance, into the smaller preview network.

    The data are the full generator's own sampling trajectories: for an identity (half table
    rows, half prior samples) and a start noise, every state x_t the sampler visits and the
    guided prediction made there. The preview learns that prediction in one pass (L1), so it
    is trained exactly where it will be used. `batch_size` counts trajectories; each gives one
    example per sampling step.
    """

    part = "preview"

    def __init__(self, checkpoint, work_dir, options, prior_fraction: float = 0.5):
        super().__init__(checkpoint, work_dir, options)
        if not 0.0 <= prior_fraction <= 1.0:
            raise ValueError(f"prior fraction must be within [0, 1], got {prior_fraction}")
        self.n_prior = round(options.batch_size * prior_fraction)
        if self.n_prior:
            self.load_prior(0)
        self.config.preview.distilled_guidance = self.config.generator.guidance
        preview = Generator(self.config.preview_generator())
        init_from(preview, self.generator)
        preview.identities.requires_grad_(False)  # the identity space is the generator's
        self.setup(preview)
        g = torch.Generator().manual_seed(4321)  # a fixed probe: 8 table rows x 4 noises
        n_ids = min(8, self.config.generator.num_identities)
        self.probe_ids = torch.randperm(self.config.generator.num_identities, generator=g)[:n_ids]
        self.probe_noise = torch.randn(4, 3, *self.config.image_size, generator=g)

    def param_groups(self):
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    @torch.no_grad()
    def trajectories(self, identity: torch.Tensor, z: torch.Tensor):
        """(states x_t, noise variances, guided predictions) along the generator's sampling."""
        predict = guided(self.generator, identity)
        seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def record(x, v):
            eps = predict(x, v)
            seen.append((x, v.expand(len(x), 1, 1, 1), eps))
            return eps

        ddim_sample(record, z, self.config.schedule, "eps")
        return (torch.cat(parts) for parts in zip(*seen, strict=True))

    def losses(self):
        n = self.opt.batch_size
        rows = self.local(torch.randint(self.config.generator.num_identities, (n - self.n_prior,),
                                        generator=self.rng))
        identity = [self.table()[rows.to(self.device)]]
        if self.n_prior:
            identity.append(self.prior_identities(self.n_prior).float())
        identity = torch.cat(identity)
        z = self.local(self.randn(n, 3, *self.config.image_size))
        x_t, variance, target = self.trajectories(identity, z.contiguous(memory_format=torch.channels_last))
        steps = len(x_t) // len(z)
        prediction = self.net(x_t.contiguous(memory_format=torch.channels_last), variance,
                              identity.repeat(steps, 1))
        return {"loss": F.l1_loss(prediction.float(), target.float())}

    @torch.no_grad()
    def on_save(self, step):
        """Mean absolute pixel difference (in [0, 1]) between preview and full pictures."""
        identity = self.table()[self.probe_ids.to(self.device)].repeat_interleave(len(self.probe_noise), 0)
        z = self.probe_noise.repeat(len(self.probe_ids), 1, 1, 1).to(self.device)
        z = z.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.opt.precision):
            full = generate(self.generator, identity, z, self.config.schedule)
            fast = generate(self.ema.module, identity, z, self.config.schedule)
        gap = (self.normalizer.to_unit(full) - self.normalizer.to_unit(fast)).abs().mean()
        return {"picture_gap": round(float(gap), 5)}

    def export(self):
        w = ckpt.ModelSetWriter(self.out)
        w.config(export_config(self.out, self.config))
        w.weights("preview", self.ema.module)
        w.commit()


# ------------------------------------------------------------------ discriminative baseline

def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """For each anchor, its farthest positive and nearest negative (Hermans et al., 2017)."""
    d = torch.cdist(features, features)  # (B, B)
    same = labels[:, None] == labels[None, :]
    hardest_positive = (d * same).max(1).values
    hardest_negative = d.masked_fill(same, float("inf")).min(1).values
    return F.relu(hardest_positive - hardest_negative + margin).mean()


class BaselineNet(torch.nn.Module):
    """Encoder -> features; a BatchNorm "neck" -> identity logits, so that classification
    (on normalised features) and the triplet loss (on raw ones) do not fight."""

    def __init__(self, encoder: Img2ID, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.neck = torch.nn.BatchNorm1d(encoder.config.id_dim)
        self.classifier = torch.nn.Linear(encoder.config.id_dim, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x).float()
        return features, self.classifier(self.neck(features))

    @torch.no_grad()
    def neck_encoder(self) -> Img2ID:
        """A copy of the encoder whose output is the neck's at inference (Bag of Tricks'
        retrieval features): BatchNorm in eval mode is affine, so it folds exactly into the
        encoder's last dense layer."""
        encoder = copy.deepcopy(self.encoder).float()
        last, bn = encoder.head[-1], self.neck
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        last.bias.copy_((last.bias - bn.running_mean) * scale + bn.bias)
        last.weight.mul_(scale[:, None])
        return encoder


class BaselineTrainer(Trainer):
    """The obvious alternative to a generative identity: the Img2ID encoder (same size, same
    input) trained on real images with identity classification plus a batch-hard triplet loss.
    Exported as a model set holding only `img2id`, so `genreid eval` ranks by its features.
    """

    part = "baseline"

    def __init__(self, data: str, out, work_dir, options: TrainOptions,
                 config: ModelSetConfig | None = None, instances: int = 4, margin: float = 0.3,
                 augment: Augment | None = None, bnneck: bool = False):
        super().__init__(out, work_dir, options)
        self.augment, self.bnneck = augment, bnneck
        if options.batch_size % instances:
            raise ValueError(f"batch size {options.batch_size} must be a multiple of "
                             f"--instances {instances}")
        self.config = config or ModelSetConfig()
        split = load_split(data, tuple(self.config.image_size))
        self.source = str(data)
        fit_config(self.config, split)
        if bnneck:  # the neck's features are compared by angle (Luo et al., 2019)
            self.config.img2id.metric = "cosine"
        self.normalizer = Normalizer(self.config.mean, self.config.std, self.device)
        self.data = TrainingImages(split, self.normalizer, self.device)
        self.instances, self.margin = instances, margin
        encoder = Img2ID(self.config.img2id, tuple(self.config.image_size))
        self.setup(BaselineNet(encoder, len(self.data.pids)))

    def losses(self):
        p = self.opt.batch_size // self.instances
        # Under torchrun each rank takes whole persons of the batch and mines its triplets there.
        x, labels = self.data.pk_batch(p, self.instances, self.rng, self.local)
        if self.augment is not None:
            x = self.augment(x, self.rng, self.opt.batch_size, self.local)
        features, logits = self.net(x)
        ce = F.cross_entropy(logits, labels, label_smoothing=0.1)
        triplet = batch_hard_triplet(features, labels, self.margin)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": ce + triplet, "ce": ce, "triplet": triplet, "accuracy": accuracy.detach()}

    def export(self):
        w = ckpt.ModelSetWriter(self.out)
        w.config(export_config(self.out, self.config, ("img2id.metric",) if self.bnneck else ()))
        w.identities(self.data.pids.tolist(), self.source)
        net = self.ema.module
        w.weights("img2id", net.neck_encoder() if self.bnneck else net.encoder)
        w.commit()
