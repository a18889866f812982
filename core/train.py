"""Training of the networks of a model set, one loop for all; this module only says where each
piece lives, and keeps the names `core.train` has always offered.

    genreid train generator --data packs/cuhk03_train_64x32.npz --out checkpoints/default
    genreid train prior     --checkpoint checkpoints/default
    genreid train img2id    --checkpoint checkpoints/default [--data ... --real-fraction 0.5]
    genreid train img2noise --checkpoint checkpoints/default --data ...

core/training.py          the loop (`Trainer`): EMA, mixed precision, saves, resume; options
core/batches.py           batches from a split: random, P persons x K, held-out persons
core/identity_init.py     the PCA start of the identity table
core/export_config.py     which settings an export keeps from the set it overwrites
core/bank.py              the bank of generated pictures (img2id, img2noise on CPUs)
core/generator_trainer.py the generator and its identity table
core/trainers.py          prior, img2id, img2noise and preview, trained on an exported set
core/baseline.py          the discriminative baseline (classification + batch-hard triplet)
"""

from __future__ import annotations

from .baseline import BaselineNet, BaselineTrainer, batch_hard_triplet
from .batches import TrainingImages
from .export_config import SETTINGS, export_config
from .generator_trainer import LOSS_WEIGHTINGS, GeneratorTrainer
from .identity_init import pca_identity_init
from .trainers import (
    Img2IDTrainer,
    Img2NoiseTrainer,
    ModelSetTrainer,
    PreviewTrainer,
    PriorTrainer,
    init_from,
)
from .training import Trainer, TrainOptions, ema_with_warmup, fit_config

__all__ = [
    "LOSS_WEIGHTINGS", "SETTINGS", "BaselineNet", "BaselineTrainer", "GeneratorTrainer",
    "Img2IDTrainer", "Img2NoiseTrainer", "ModelSetTrainer", "PreviewTrainer", "PriorTrainer",
    "Trainer", "TrainOptions", "TrainingImages", "batch_hard_triplet", "ema_with_warmup",
    "export_config", "fit_config", "init_from", "pca_identity_init",
]
