"""The generator's trainer: the identity-conditioned diffusion U-Net and its identity table,
trained on a split, exported as a new model set.

    genreid train generator --data packs/cuhk03_train_64x32.npz --out checkpoints/default
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import checkpoint as ckpt
from .batches import TrainingImages
from .config import ModelSetConfig
from .data import load_split
from .device import autocast
from .diagnostics import identity_share
from .export_config import export_config
from .identity_init import pca_identity_init
from .images import Normalizer, image_grid
from .models import Generator
from .pipeline import generate
from .schedule import add_noise
from .training import Trainer, TrainOptions, fit_config

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
        # A run killed before its first save has a config but no state: it warm-starts again.
        begun, resuming = saved.is_file(), self.resuming
        self.dist.barrier()  # every rank has looked before rank 0 writes
        if begun:  # the architecture is the one training started with
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
        if not begun and init_from is None:
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
        if self.dist.main and (not begun or guidance is not None):
            self.work_dir.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write(saved, self.config.save)
        if self.dist.main and not started.is_file():
            ckpt.write_json(started, {"pids": self.data.pids.tolist(), "source": self.source})
        self.id_lr_scale = id_lr_scale
        generator = Generator(self.config.generator)
        if init_from is not None and not resuming and \
                ckpt.read_identities(init_from) != self.data.pids.tolist():
            # The warm start carries the identity table, whose rows are persons.
            raise ValueError(f"{init_from} was trained on other identities than {data}: "
                             "a warm start needs the same training split")
        if init_from is not None:  # the set's weights and table, or nothing when resuming
            self.warm_started(generator, init_from)
        elif not resuming and self.config.generator.id_init == "pca":
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
