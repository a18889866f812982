"""The identity space in 2-D for the projection panel: which points it shows (training
identities, prior samples, the encoded gallery), their PCA (core.identity_space) or UMAP
coordinates (fitted once, in the background, and kept on disk), and the values they are
coloured by."""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.identity_space import IdentitySpace

from .cache import DiskCache, default_cache_root, digest
from .messages import shown
from .pictures import QueryAndGallery
from .tasks import NotReady, Report, Task, quiet

SOURCE_TRAIN, SOURCE_PRIOR, SOURCE_GALLERY = "training identity", "prior sample", "gallery (encoded)"


@dataclass
class Points:
    """The points of the identity-space projection."""

    keys: list[str]
    sources: list[str]
    vectors: np.ndarray  # (N, D)
    cameras: list[str]


def umap_embedding(x: np.ndarray, seed: int = 0, report: Report = quiet) -> np.ndarray:
    """2-D UMAP of x. Imports umap-learn here, never at start-up (the import alone takes ~20 s)."""
    report(0.05, "UMAP: importing umap-learn (about 20 s the first time)")
    if "NUMBA_CACHE_DIR" not in os.environ:  # numba needs a writable cache (read-only installs)
        os.environ["NUMBA_CACHE_DIR"] = str(default_cache_root() / "numba")
    import umap  # noqa: PLC0415 (deliberately lazy)

    report(0.5, f"UMAP: fitting {len(x)} points (about 20-40 s the first time)")
    n = len(x)
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 points; the identity space has {n}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), min_dist=0.1,
                            random_state=seed, init="spectral" if n > 16 else "random")
        return np.asarray(reducer.fit_transform(np.asarray(x, dtype=np.float32)), dtype=np.float64)


class Projections:
    """train: (keys, vectors) of the training identities, prior: (keys, vectors) of the prior
    samples; camera(pid): the camera of a training person's real picture, or None when no real
    picture is known; the encoded gallery joins (at most gallery_limit of it, a fixed sample)
    once `pictures` has encoded a real gallery."""

    def __init__(self, space: IdentitySpace, cache: DiskCache, pictures: QueryAndGallery,
                 train: tuple[list[str], np.ndarray], prior: tuple[list[str], np.ndarray],
                 pids: np.ndarray, camera: Callable[[int], object] | None, gallery_limit: int):
        self.space, self.cache, self.pictures = space, cache, pictures
        self.train, self.prior, self.pids, self.camera = train, prior, pids, camera
        self.gallery_limit = gallery_limit
        self.computed: dict[tuple, tuple[np.ndarray, str]] = {}
        self._umap_tasks: dict[str, Task] = {}

    def points(self) -> Points:
        """Training identities, prior samples and (with a real gallery, once encoded) the gallery."""
        (train_keys, table), (prior_keys, prior) = self.train, self.prior
        keys = list(train_keys) + list(prior_keys)
        sources = [SOURCE_TRAIN] * len(train_keys) + [SOURCE_PRIOR] * len(prior_keys)
        vectors = [table, prior]
        if self.camera is not None:
            cameras = [f"camera {self.camera(p)}" for p in self.pids]
        else:
            cameras = ["unknown"] * len(train_keys)
        cameras += ["unknown"] * len(prior_keys)
        features_task = self.pictures.features_task
        if self.pictures.real_gallery and features_task.ready:
            features = features_task.value
            _, gallery = self.pictures.pictures_task.value
            n = len(features)
            take = np.arange(n)
            if n > self.gallery_limit:
                take = np.sort(np.random.default_rng(0).choice(n, self.gallery_limit, replace=False))
            keys += [f"gallery {j}" for j in take]
            sources += [SOURCE_GALLERY] * len(take)
            vectors.append(features[take])
            cameras += [f"camera {gallery.camids[j]}" for j in take]
        return Points(keys, sources, np.concatenate(vectors).astype(np.float64), cameras)

    def projection(self, method: str, points: Points, report: Report | None = None,
                   compute: bool = True) -> tuple[np.ndarray, str]:
        """(2-D coordinates of points, a note), computed once per method and point set;
        with compute=False, only what is already computed (else NotReady)."""
        method = method.lower()
        key = (method, len(points.keys), points.keys[-1] if points.keys else "")
        if key in self.computed:
            return self.computed[key]
        if not compute and method != "pca":
            raise NotReady(f"the {method.upper()} projection of these points is not computed yet: "
                           "press Show")
        if method == "pca":
            coords = self.space.coordinates(points.vectors, 2)
            ratio = np.pad(self.space.explained[:2], (0, 2))
            note = (f"PCA of the training identities: the two axes explain {ratio[0]:.0%} and "
                    f"{ratio[1]:.0%} of their variance")
        elif method == "umap":
            coords = self._umap(points, report)
            note = "UMAP of the identity space (15 neighbours, min_dist 0.1, seed 0)"
        else:
            raise ValueError(f"projection method must be 'PCA' or 'UMAP', not {shown(method)}")
        self.computed[key] = (np.asarray(coords, np.float64), note)
        return self.computed[key]

    def _umap(self, points: Points, report: Report | None) -> np.ndarray:
        """UMAP coordinates from the disk cache, else fitted once in a background Task."""
        name = f"umap-{digest(points.vectors.astype(np.float32).tobytes())}.npz"
        cached = self.cache.load(name)
        if cached is not None and cached["coords"].shape == (len(points.keys), 2):
            return cached["coords"]
        task = self._umap_tasks.get(name)
        if task is None:
            vectors = points.vectors

            def fit(rep: Report) -> np.ndarray:
                out = umap_embedding(vectors, report=rep)
                self.cache.save(name, coords=out)
                return out
            task = self._umap_tasks.setdefault(name, Task("UMAP", fit))
        return task.wait(report)

    def colour_values(self, points: Points, by: str) -> tuple[str, list | np.ndarray]:
        """('categorical', labels) or ('continuous', values) of the points for a colour choice."""
        if by == "source":
            return "categorical", points.sources
        if by == "camera":
            return "categorical", points.cameras
        if by == "identity norm":
            return "continuous", np.linalg.norm(points.vectors, axis=1)
        if by == "nearest-identity distance":
            # The first points are the training identities: none is its own nearest.
            return "continuous", self.space.distance_to_nearest(points.vectors, len(self.train[0]))
        m = re.fullmatch(r"z(\d+)", by)
        if m and int(m.group(1)) < self.space.dim:
            return "continuous", points.vectors[:, int(m.group(1))]
        raise ValueError(f"cannot colour by {shown(by)}")

    def colour_choices(self) -> list[str]:
        return (["source", "camera", "identity norm", "nearest-identity distance"]
                + [f"z{i}" for i in range(self.space.dim)])
