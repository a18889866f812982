"""Trainers of the networks built on an exported generator: the identity prior, the two
inverters (img2id, img2noise) and the distilled preview network.

    genreid train prior     --checkpoint checkpoints/default
    genreid train preview   --checkpoint checkpoints/default
    genreid train img2id    --checkpoint checkpoints/default [--data ... --real-fraction 0.5]
    genreid train img2noise --checkpoint checkpoints/default --data ...
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import bank as banks
from . import checkpoint as ckpt
from .augment import Augment
from .batches import TrainingImages
from .data import load_split
from .device import autocast
from .export_config import export_config
from .gallery_index import scaled
from .images import Normalizer
from .metrics import euclidean_distances, retrieval_summary
from .models import Generator, IdentityPrior, Img2ID, Img2Noise
from .pipeline import generate, guided, sample_prior
from .sampler import ddim_sample
from .schedule import add_noise
from .training import Trainer, TrainOptions


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
        """Generate `size` (image, identity, noise) triples once (core/bank.py); `generated`
        then draws from them."""
        path = banks.bank_path(self.work_dir, size, self.opt.seed)
        if not path.is_file() and self.dist.main:  # one rank generates it, the others wait
            banks.write_bank(path, size, self.opt.seed + 1, self.bank_triples)
        self.dist.barrier()
        self.dist.check_same(path.is_file(), f"whether the bank {path.name} is there")
        self.bank = banks.load_bank(path, self.device)

    def bank_triples(self, n: int, rng: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n (images, identities, noises) for the bank, every draw from `rng`."""
        with autocast(self.device, self.opt.precision), torch.no_grad():
            identity = sample_prior(self.prior, torch.randn(n, self.config.prior.id_dim,
                                                            generator=rng).to(self.device),
                                    self.config.schedule)
            z = torch.randn(n, 3, *self.config.image_size, generator=rng).to(self.device)
            return self.generate_images(identity, z), identity, z

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
            return banks.draw(self.bank, index)
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
                 augment: Augment | None = None, init_from: str | Path | None = None):
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
        self.setup(self.warm_started(Img2ID(self.config.img2id, tuple(self.config.image_size)),
                                     init_from))

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
                 noise_weight: float = 0.0, init_from: str | Path | None = None):
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
        self.setup(self.warm_started(Img2Noise(self.config.img2noise), init_from))

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
            # the generated rows come last; under torchrun this rank holds only its share of them
            out["noise"] = F.l1_loss(z[len(z) - len(z_true):].float(), z_true)
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
