"""The discriminative baseline: the Img2ID encoder trained on real crops with identity
classification plus a batch-hard triplet loss, the obvious alternative to a generative identity.

    genreid train baseline --data packs/cuhk03_train_64x32.npz --out checkpoints/baseline
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .augment import Augment
from .batches import TrainingImages
from .config import ModelSetConfig
from .data import load_split
from .export_config import export_config
from .images import Normalizer
from .models import Img2ID
from .training import Trainer, TrainOptions, fit_config


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
