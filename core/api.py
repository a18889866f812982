"""The Python API for notebooks and the explorer.

    from core.api import GenReID
    model = GenReID.load("checkpoints/default")            # CPU or CUDA, picked automatically
    ids = model.table_identities([0, 1, 2])                # (3, 32) identities of training persons
    new = model.sample_identities(4, seed=0)               # (4, 32) new persons from the prior
    grid = model.generate_grid(ids, model.noise(5, seed=0))  # uint8 (3, 5, 64, 32, 3)
    vectors = model.encode(pictures)                       # (N, 32) identity of any pictures
    parts = model.decompose(pictures)                      # identity, noise, reconstruction, error
    gallery = model.index_gallery(gallery_pictures, pids)  # core.gallery_index.GalleryIndex
    distances, rows = model.retrieve(pictures, gallery, k=5)

Pictures are PIL images or uint8 arrays (H, W, 3) of any size (resized to the model's), or
one uint8 array (N, H, W, 3). Every method works in batches and returns NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import DEFAULT_CHECKPOINT, ModelSetConfig
from .data import prepare_image
from .device import autocast, pick_device, resolve_precision
from .gallery_index import GalleryIndex
from .images import Normalizer
from .parts import load_networks
from .pipeline import generate, sample_prior

# The set-editing tools lived here; `from core.api import configure_set` keeps working.
from .set_tools import configure_set, store_parts

__all__ = ["NOISE_CLIP", "Decomposition", "GenReID", "configure_set", "store_parts"]

NOISE_CLIP = 2.5  # the paper shows the noise clipped to [-2.5, 2.5], rescaled to [0, 1]


@dataclass
class Decomposition:
    identity: np.ndarray  # (N, D) Img2ID(x)
    noise: np.ndarray  # (N, 3, H, W) Img2Noise(x)
    reconstruction: np.ndarray  # uint8 (N, H, W, 3) GEN(noise, identity)
    error: np.ndarray  # (N,) mean absolute error of the reconstruction, in [0, 1] pixels
    image: np.ndarray  # uint8 (N, H, W, 3) the input at the model's size


class GenReID:
    def __init__(self, folder: Path, config: ModelSetConfig, pids: list[int],
                 networks: dict[str, torch.nn.Module], device: torch.device, batch_size: int = 64,
                 precision: str = "auto"):
        self.folder, self.config, self.device = folder, config, device
        self.pids = np.asarray(pids, dtype=np.int64)
        self.networks = networks
        self.batch_size = batch_size
        self.precision = resolve_precision(device, precision)
        self.normalizer = Normalizer(config.mean, config.std, device)

    @classmethod
    def load(cls, folder: str | Path = DEFAULT_CHECKPOINT, device: str = "auto",
             batch_size: int = 64, precision: str = "auto") -> GenReID:
        """Load a model set (manifest checked); parts not trained yet are simply absent.

        precision: "auto" computes in bfloat16 where the hardware does it natively (CUDA, CPUs
        with AVX-512 BF16 / AMX: about 4x faster there, see `genreid bench`), else float32;
        "fp32" or "bf16" force one."""
        folder = Path(folder)
        ckpt.verify(folder)
        config = ckpt.read_config(folder)
        device = pick_device(device)
        networks = {}
        for part, net in load_networks(folder, config).items():
            net = net.to(device).eval()
            networks[part] = net.to(memory_format=torch.channels_last).requires_grad_(False)
        if not networks:
            raise ckpt.CheckpointError(f"{folder} holds no network (no *.safetensors)")
        return cls(folder, config, ckpt.read_identities(folder), networks, device, batch_size,
                   precision)

    # ----------------------------------------------------------------- properties
    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.config.image_size)

    @property
    def id_dim(self) -> int:
        return self.config.generator.id_dim

    @property
    def num_identities(self) -> int:
        return self.config.generator.num_identities

    @property
    def retrieval_metric(self) -> str:
        """How retrievals compare identities: "euclidean" or "cosine" (`img2id.metric`)."""
        return self.config.img2id.metric

    def has(self, part: str) -> bool:
        return part in self.networks

    def _autocast(self):
        return autocast(self.device, self.precision)

    def _net(self, part: str) -> torch.nn.Module:
        if part not in self.networks:
            raise ckpt.CheckpointError(
                f"{self.folder} has no {part}: train it with "
                f"`genreid train {part} --checkpoint {self.folder}`")
        return self.networks[part]

    # ----------------------------------------------------------------- identities
    def table_identities(self, rows) -> np.ndarray:
        """Identity vectors (n, D) of training persons, by table row (0..num_identities-1)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        bad = rows[(rows < 0) | (rows >= self.num_identities)]
        if len(bad):
            raise ValueError(f"identity rows must be within 0..{self.num_identities - 1}; "
                             f"got {bad.tolist()}")
        table = self._net("generator").identities.weight
        return table[torch.as_tensor(rows, device=self.device)].float().cpu().numpy()

    def row_of_pid(self, pid: int) -> int:
        """Table row of a training person id (as in the file names)."""
        hits = np.flatnonzero(self.pids == pid)
        if not len(hits):
            raise ValueError(f"person id {pid} is not one of the {len(self.pids)} training identities")
        return int(hits[0])

    @torch.no_grad()
    def sample_identities(self, n: int, seed: int | None = None) -> np.ndarray:
        """n new identity vectors (n, D) drawn from the identity prior."""
        prior = self._net("prior")
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        noise = torch.randn(n, self.id_dim, generator=g).to(self.device)
        return sample_prior(prior, noise, self.config.schedule).float().cpu().numpy()  # fp32: tiny

    # ----------------------------------------------------------------- generation
    def noise(self, n: int, seed: int | None = None) -> np.ndarray:
        """n start noises (n, 3, H, W), reproducible from the seed."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randn(n, 3, *self.image_size, generator=g).numpy()

    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(n, start + self.batch_size))

    @torch.no_grad()
    def generate(self, identities, noise, steps: int | None = None,
                 preview: bool = False, guided_steps: int | None = None) -> np.ndarray:
        """uint8 images (B, H, W, 3) = GEN(identities (B, D), noise (B, 3, H, W)).

        preview=True takes the fast path (`preview_description()`): the distilled preview
        network if the set has one, else the generator in `config.preview.steps` sampling
        steps; the same picture, approximately, at a fraction of the cost.
        guided_steps k: identity guidance on the first k steps only; 0 or None (default): on
        every step, or for a preview by the generator, as `config.preview.guided_steps` says
        (whose 0 means every step too)."""
        identities = self._as_identities(identities)
        noise = np.asarray(noise, dtype=np.float32)
        h, w = self.image_size
        if noise.ndim != 4 or noise.shape[1:] != (3, h, w) or len(noise) != len(identities):
            raise ValueError(f"noise must have shape ({len(identities)}, 3, {h}, {w}); "
                             f"got {noise.shape}")
        generator = self._net("preview" if preview and self.has("preview") else "generator")
        if preview and steps is None and not self.has("preview"):
            steps = self.config.preview.steps
            if guided_steps is None:
                guided_steps = self.config.preview.guided_steps
        out = []
        for s in self._batches(len(identities)):
            z = torch.from_numpy(noise[s]).to(self.device).contiguous(memory_format=torch.channels_last)
            ident = torch.from_numpy(identities[s]).to(self.device)
            with self._autocast():
                x = generate(generator, ident, z, self.config.schedule, steps,
                             guided_steps=guided_steps)
            out.append(self.normalizer.decode(x))
        return np.concatenate(out) if out else np.zeros((0, h, w, 3), np.uint8)

    def generate_grid(self, identities, noises, steps: int | None = None,
                      preview: bool = False, guided_steps: int | None = None) -> np.ndarray:
        """uint8 (I, N, H, W, 3): every identity with every noise (the noise fixed per column)."""
        identities = self._as_identities(identities)
        noises = np.asarray(noises, dtype=np.float32)
        i, n = len(identities), len(noises)
        images = self.generate(np.repeat(identities, n, 0), np.tile(noises, (i, 1, 1, 1)), steps,
                               preview, guided_steps)
        return images.reshape(i, n, *images.shape[1:])

    def preview_description(self) -> str:
        """What generate(preview=True) uses, in words."""
        if self.has("preview"):
            return "the distilled preview network"
        p = self.config.preview
        guided = (f", identity guidance on the first {p.guided_steps}"
                  if p.guided_steps and self.config.generator.guidance else "")
        return f"the generator in {p.steps} sampling steps{guided}"

    def _as_identities(self, identities) -> np.ndarray:
        x = np.asarray(identities, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.id_dim:
            raise ValueError(f"identities must have shape (n, {self.id_dim}); got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("identities contain NaN or infinite values")
        return x

    # ----------------------------------------------------------------- inversion
    def prepare(self, pictures) -> np.ndarray:
        """uint8 (N, H, W, 3) at the model's size from PIL images or arrays of any size."""
        size = self.image_size
        if isinstance(pictures, np.ndarray) and pictures.ndim == 4:
            if pictures.shape[1:3] == size and pictures.shape[3] == 3 and pictures.dtype == np.uint8:
                return pictures
            pictures = list(pictures)
        if not isinstance(pictures, (list, tuple)):
            pictures = [pictures]
        if not pictures:
            raise ValueError("no pictures given")
        return np.stack([prepare_image(p, size) for p in pictures])

    @torch.no_grad()
    def encode(self, pictures, flip: bool | None = None) -> np.ndarray:
        """Identity vectors (N, D) of pictures; flip=True averages with the mirrored picture
        (default: the set's `img2id.flip`)."""
        flip = self.config.img2id.flip if flip is None else flip
        images = self.prepare(pictures)
        img2id = self._net("img2id")
        out = []
        for s in self._batches(len(images)):
            x = self.normalizer.encode(images[s])
            with self._autocast():
                v = img2id.encode(x, flip)
            out.append(v.cpu().numpy())
        return np.concatenate(out)

    def index_gallery(self, pictures, pids=None, camids=None, names=None, kind: str = "auto",
                      flip: bool | None = None) -> GalleryIndex:
        """A searchable gallery of pictures' identities (`core.gallery_index`: exact up to 100,000
        pictures, FAISS HNSW beyond, or the kind named), compared by the set's metric
        (`img2id.metric`). Labels are optional."""
        return self.index_vectors(self.encode(pictures, flip=flip), pids, camids, names, kind)

    def index_vectors(self, vectors, pids=None, camids=None, names=None, kind: str = "auto",
                      meta: dict | None = None) -> GalleryIndex:
        """`index_gallery` for identities already encoded (N, D), compared by the set's metric."""
        return GalleryIndex.build(vectors, pids, camids, names, kind, meta=meta,
                                  metric=self.retrieval_metric)

    def retrieve(self, pictures, gallery: GalleryIndex, k: int = 10,
                 flip: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, gallery rows), each (N, k), of the k gallery entries nearest to each
        picture's identity."""
        return gallery.search(self.encode(pictures, flip=flip), k)

    @torch.no_grad()
    def decompose(self, pictures, steps: int | None = None) -> Decomposition:
        """Split pictures into identity (Img2ID), noise (Img2Noise) and GEN(noise, identity)."""
        images = self.prepare(pictures)
        img2id, img2noise = self._net("img2id"), self._net("img2noise")
        generator = self._net("generator")
        ids, noises, recons = [], [], []
        for s in self._batches(len(images)):
            x = self.normalizer.encode(images[s])
            with self._autocast():
                ident, z = img2id(x).float(), img2noise(x).float()
                z = z.contiguous(memory_format=torch.channels_last)
                recon = generate(generator, ident, z, self.config.schedule, steps)
            recons.append(self.normalizer.decode(recon))
            ids.append(ident.cpu().numpy())
            noises.append(z.cpu().numpy())
        recon = np.concatenate(recons)
        error = np.abs(recon.astype(np.float32) - images.astype(np.float32)).mean((1, 2, 3)) / 255.0
        return Decomposition(np.concatenate(ids), np.concatenate(noises), recon, error, images)

    @staticmethod
    def noise_picture(noise: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) view of noises (N, 3, H, W): clipped to +-2.5, rescaled to [0, 1]."""
        unit = (np.clip(noise, -NOISE_CLIP, NOISE_CLIP) + NOISE_CLIP) / (2 * NOISE_CLIP)
        return (unit.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
