"""Model configuration as data.

Every network is rebuilt from these dataclasses alone; a checkpoint folder stores them as
`config.json` beside the weights, so loading needs no flags. The defaults are the values of
the paper and its reference implementation at 64x32 (docs/method.md).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The shipped model set the app and the commands start on.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "default"
# Compute precisions a command accepts; core.device resolves "auto" for the hardware.
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class ScheduleConfig:
    max_signal: float = 0.95  # signal rate at t = 0
    min_signal: float = 0.02  # signal rate at t = 1
    steps: int = 10  # deterministic sampling steps


@dataclass
class UNetConfig:
    widths: list[int] = field(default_factory=lambda: [48, 96, 192, 384])
    block_depth: int = 2


@dataclass
class GeneratorConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    id_dim: int = 32
    num_identities: int = 0  # set from the training split
    noise_embedding_dim: int = 64
    # How the identity table starts: "uniform" is the paper's Keras default
    # (U[-0.05, 0.05]); "pca" starts each row from the PCA of its identity's mean
    # image, scaled to the same spread, so conditioning is informative from step 0.
    id_init: str = "uniform"
    id_init_scale: float = 0.05
    # Identity guidance at sampling: eps = eps(id) + w * (eps(id) - eps(0)), the origin (where
    # the attraction term pulls the table) standing for "no identity". 0 = the paper's sampler.
    # Deterministic either way; w > 0 costs a second network pass per step.
    guidance: float = 0.0


@dataclass
class PreviewConfig:
    """The fast path for interactive previews: the same identities and noises, fewer FLOPs.

    A model set previews with its distilled preview network when it has one (trained by
    `genreid train preview`: the full generator's guided prediction eps(id) + w (eps(id) -
    eps(0)) learned by a one-block-per-level U-Net, one pass per step), and otherwise with the
    full generator sampled in `steps` instead of the schedule's steps.
    """

    steps: int = 4  # sampling steps of a preview drawn by the full generator
    # Identity guidance on only the first `guided_steps` preview steps (0: on every step, what
    # guided_steps=0 means everywhere, core/pipeline.py): the early, high-noise steps lay out
    # the person; the later ones then cost one pass instead of two.
    guided_steps: int = 0
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(block_depth=1))
    # The full generator's guidance the preview network was distilled with (set by training).
    distilled_guidance: float = 0.0


@dataclass
class PriorConfig:
    id_dim: int = 32
    hidden: int = 512
    layers: int = 3
    noise_embedding_dim: int = 32


METRICS = ("euclidean", "cosine")  # retrieval distances (core.gallery_index)
STORAGES = ("float16", "int8")  # how a part's weights are stored (core.checkpoint)
PARTS = ("generator", "preview", "prior", "img2id", "img2noise")


@dataclass
class Img2IDConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    dense: list[int] = field(default_factory=lambda: [512, 128])
    id_dim: int = 32
    # 0: flatten the bottleneck into the dense layers; N > 0: first a 1x1 conv to N channels,
    # which keeps the spatial layout (upper vs lower body) at a fraction of the weights.
    head_channels: int = 64
    # At inference, average the identity of each picture and of its mirror image (test-time
    # flip; twice the encoding cost). `encode(..., flip=...)` and `--flip/--no-flip` override.
    flip: bool = False
    # How retrieval compares identities: "euclidean" (the paper) or "cosine" (Euclidean between
    # unit vectors: the same ranking). Retrieval only; generation keeps the vectors as they are.
    metric: str = "euclidean"


@dataclass
class Img2NoiseConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)


@dataclass
class ModelSetConfig:
    """Everything needed to rebuild a model set (generator, prior and inverters)."""

    image_size: list[int] = field(default_factory=lambda: [64, 32])  # height, width
    # Per-channel statistics of the training images in [0, 1]; set from the data.
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    img2id: Img2IDConfig = field(default_factory=Img2IDConfig)
    img2noise: Img2NoiseConfig = field(default_factory=Img2NoiseConfig)
    # How each part's weights are written, by part name: "float16" (the default for a part not
    # named) or "int8" (half the bytes; see core.checkpoint). Loading reads either.
    storage: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        h, w = self.image_size
        levels = len(self.generator.unet.widths) - 1
        for name, unet in (("generator", self.generator.unet), ("preview", self.preview.unet),
                           ("img2id", self.img2id.unet), ("img2noise", self.img2noise.unet)):
            n = len(unet.widths) - 1
            if h % 2**n or w % 2**n:
                raise ValueError(
                    f"image size {h}x{w} must be divisible by 2^{n} for the {name} U-Net "
                    f"with {n + 1} levels")
        if levels < 1 or self.generator.unet.block_depth < 1:
            raise ValueError("the U-Net needs at least 2 levels and 1 block per level")
        ids = (self.generator.id_dim, self.prior.id_dim, self.img2id.id_dim)
        if len(set(ids)) != 1:
            raise ValueError(f"identity dimensions disagree (generator, prior, img2id): {ids}")
        if not 0.0 <= self.generator.guidance <= 20.0:
            raise ValueError(f"generator.guidance must be within [0, 20], not {self.generator.guidance}")
        if not 1 <= self.preview.steps <= 1000:
            raise ValueError(f"preview.steps must be within 1..1000, not {self.preview.steps}")
        if not 0 <= self.preview.guided_steps <= self.preview.steps:
            raise ValueError(f"preview.guided_steps must be within 0..preview.steps, not "
                             f"{self.preview.guided_steps}")
        if self.img2id.metric not in METRICS:
            raise ValueError(f"img2id.metric must be one of {', '.join(METRICS)}, "
                             f"not {self.img2id.metric!r}")
        if not isinstance(self.storage, dict):
            raise ValueError("storage must be an object mapping part names to storages")
        for part, kind in self.storage.items():
            if part not in PARTS or kind not in STORAGES:
                raise ValueError(f"storage: {part!r}: {kind!r} is not a part and a storage; "
                                 f"parts: {', '.join(PARTS)}; storages: {', '.join(STORAGES)}")
        if self.generator.id_init not in ("uniform", "pca"):
            raise ValueError(f"generator.id_init must be 'uniform' or 'pca', "
                             f"not {self.generator.id_init!r}")

    def preview_generator(self) -> GeneratorConfig:
        """The preview network's configuration: the generator's, with the preview's U-Net and
        no guidance of its own (it was distilled into the weights)."""
        return dataclasses.replace(self.generator, unet=self.preview.unet, guidance=0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSetConfig:
        return _build(cls, data, "config")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelSetConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read configuration {path}: {e}") from None
        config = cls.from_dict(data)
        config.validate()
        return config


def setting_parent(data: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
    """For a dotted key ("img2id.flip") of a config dict: the section holding it, and its name."""
    *sections, name = key.split(".")
    for section in sections:
        if not isinstance(data.get(section), dict):
            raise ValueError(f"{key}: config.json has no section {section!r}")
        data = data[section]
    return data, name


def _build(cls, data: Any, where: str):
    """Build a (nested) dataclass from a dict, naming any unknown key."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory() if fields[name].default_factory is not \
            dataclasses.MISSING else fields[name].default
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)
