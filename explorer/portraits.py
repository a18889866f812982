"""A portrait for every identity the panels name: the real training picture where one is known,
the gallery picture itself for a gallery key, else the identity generated with one fixed
noise (memoised, kept on disk, and filled for every identity in the background)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.api import GenReID

from .cache import DiskCache
from .messages import require
from .pictures import QueryAndGallery
from .real_pictures import RealPortraits
from .tasks import CHUNK, ModelThread, Report, Task

PORTRAIT_SEED = 1501  # the fixed noise of generated portraits


class Portraits:
    """resolve(key) -> (canonical key, identity vector); fill_keys(): the keys the background
    Task draws at start (generated ones only)."""

    def __init__(self, model: GenReID, runner: ModelThread, cache: DiskCache, real: RealPortraits,
                 pictures: QueryAndGallery, resolve: Callable[[str], tuple[str, np.ndarray]],
                 fill_keys: Callable[[], list[str]]):
        self.model, self.runner, self.cache, self.real = model, runner, cache, real
        self.pictures, self.resolve, self.fill_keys = pictures, resolve, fill_keys
        self.noise = model.noise(1, seed=PORTRAIT_SEED)
        self._portraits: dict[str, np.ndarray] = {}
        self._thumbs: dict[str, str] = {}
        cached = cache.load(f"portraits-{PORTRAIT_SEED}.npz")
        if cached is not None and "keys" in cached:
            for k, img in zip(cached["keys"].tolist(), cached["images"], strict=True):
                self._portraits[str(k)] = img
        self.task = Task("portraits", self._fill)

    def ready(self, key: str) -> np.ndarray | None:
        """The portrait of a canonical key if it costs no generation, else None."""
        if key.startswith("pid ") and self.real:
            return self.real.picture(int(key[4:]))
        if key in self._portraits:
            return self._portraits[key]
        if key.startswith("gallery "):
            return self.pictures.gallery_picture(int(key[8:]))
        return None

    def get(self, keys: list[str], report: Report | None = None) -> list[np.ndarray]:
        """Portraits of canonical keys: the real training picture with --data, else generated
        with one fixed noise; generated ones are memoised (and kept on disk)."""
        out: dict[str, np.ndarray] = {}
        todo = []
        for k in keys:
            if k.startswith("gallery "):  # a gallery picture is its own portrait
                out[k] = self.pictures.pictures(report)[1].images[int(k[8:])]
                continue
            img = self.ready(k)
            if img is None:
                todo.append(k)
            else:
                out[k] = img
        todo = list(dict.fromkeys(todo))
        if todo:
            require(self.model, "generator")
            vectors = np.stack([self.resolve(k)[1] for k in todo])
            # The fast preview: a thumbnail-sized portrait of every identity at first start costs
            # a third of the full sampler's CPU, and looks the same at that size.
            images = self.runner.generate(vectors, np.repeat(self.noise, len(todo), 0), report,
                                          "portraits", preview=True)
            for k, img in zip(todo, images, strict=True):
                self._portraits[k] = out[k] = img
        return [out[k] for k in keys]

    def thumbnail(self, key: str) -> str:
        """Inline JPEG of a key's portrait if it is ready, else ''."""
        from .render import thumbnail_uri

        if key not in self._thumbs:
            img = self.ready(key)
            if img is None:
                return ""
            self._thumbs[key] = thumbnail_uri(img)
        return self._thumbs[key]

    def _save(self) -> None:
        generated = sorted(k for k in list(self._portraits)
                           if not (k.startswith("pid ") and self.real))
        if generated:
            self.cache.save(f"portraits-{PORTRAIT_SEED}.npz", keys=np.array(generated),
                            images=np.stack([self._portraits[k] for k in generated]))

    def _fill(self, report: Report) -> int:
        keys = [k for k in self.fill_keys() if k not in self._portraits]
        for n, start in enumerate(range(0, len(keys), CHUNK)):
            report(start / max(len(keys), 1), f"portraits {start}/{len(keys)}")
            self.get(keys[start:start + CHUNK])
            if n % 16 == 15:  # kept on disk as it goes: a restart picks up from here
                self._save()
        if keys:
            self._save()
        return len(keys)
