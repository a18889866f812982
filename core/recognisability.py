"""Does a generated picture show the person it was generated for? Judged by an outside encoder.

    genreid diagnose --checkpoint checkpoints/default --encoder checkpoints/baseline --data PACK

Pictures of training persons are generated (several noises each, the set's own sampling
settings) and encoded by a discriminative re-identification encoder trained on real crops
only, one the generator never trained against (by default the shipped baseline). Each picture
then queries all real training crops: the mAP and rank-1 of finding its own person say how
recognisable it is. The same figures for real crops of the same persons (each querying the
others) are the ceiling. A Fréchet distance between the encoder's features of the pictures and
of the real crops says how far the pictures are from real ones, beside the same distance for
as many real crops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import linalg

from .disk_cache import DiskCache, digest, set_fingerprint
from .files import atomic_write
from .gallery_index import scaled
from .metrics import average_precision, euclidean_distances


@dataclass
class RealCrops:
    """The real training crops and their encoder features (computed once per measurement)."""
    images: np.ndarray  # uint8 (N, H, W, 3)
    pids: np.ndarray  # (N,)
    features: np.ndarray  # (N, F), as the encoder's metric compares them


def encode_real(encoder, images: np.ndarray, pids: np.ndarray,
                cache: DiskCache | None = None) -> RealCrops:
    """Encode real crops with `encoder` (a `core.api.GenReID` holding an img2id). `cache` keeps
    the features, named by the encoder's weights, its device and the crops: the next generator
    is judged against the same crops by the same encoder, and encoding all 7,355 CUHK03
    training crops takes about 10 minutes on one CPU thread."""
    pids, cache = np.asarray(pids), cache or DiskCache(None)
    name = (f"real-features-{set_fingerprint(encoder.folder)}-"
            f"{digest(str(encoder.device), encoder.precision, images.tobytes(), pids.tobytes())}.npz")
    found = cache.load(name)
    if found is not None and found.get("features", np.empty(0)).shape[:1] == pids.shape:
        return RealCrops(images, pids, found["features"])
    real = RealCrops(images, pids, features_of(encoder, images))
    cache.save(name, features=real.features)
    return real


def features_of(encoder, images: np.ndarray) -> np.ndarray:
    return scaled(encoder.encode(images), encoder.retrieval_metric)


def identity_retrieval(queries: np.ndarray, query_pids: np.ndarray, real: RealCrops,
                       exclude: np.ndarray | None = None) -> dict:
    """mAP and rank-1 of each query finding its person among the real crops; `exclude[i]` is
    a real crop's index that query i must not find (itself), or -1."""
    d = euclidean_distances(queries, real.features)
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        d[rows, exclude[rows]] = np.inf
    aps, firsts = [], []
    for i in range(len(queries)):
        order = np.argsort(d[i], kind="stable")
        if exclude is not None and exclude[i] >= 0:
            order = order[:-1]  # the excluded crop, ranked last by its infinite distance
        matches = real.pids[order] == query_pids[i]
        aps.append(average_precision(matches))
        firsts.append(bool(matches[0]))
    return {"mAP": float(np.mean(aps)), "rank1": float(np.mean(firsts))}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(sa @ sb)
    root = root.real  # numerical noise can leave a tiny imaginary part
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2.0 * np.trace(root))


def choose_persons(pids: np.ndarray, table_pids: np.ndarray, persons: int, per_person: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(table rows of `persons` training persons with at least `per_person` + 1 real crops,
    `per_person` of each one's real crop indices (persons x per_person)), drawn from the seed."""
    rng = np.random.default_rng(seed)
    counts = {int(p): int(c) for p, c in zip(*np.unique(pids, return_counts=True))}
    eligible = [row for row, p in enumerate(table_pids) if counts.get(int(p), 0) > per_person]
    if len(eligible) < 2:
        raise ValueError(f"need at least 2 training persons with more than {per_person} real "
                         "crops in --data (is it the split the generator was trained on?)")
    rows = np.sort(rng.choice(eligible, min(persons, len(eligible)), replace=False))
    crops = np.stack([rng.choice(np.flatnonzero(pids == table_pids[row]), per_person, replace=False)
                      for row in rows])
    return rows, crops


def real_reference(real: RealCrops, crops: np.ndarray) -> dict:
    """The ceiling: the chosen real crops, each querying all the others; and the Fréchet
    distance of as many real crops as there are generated pictures to the rest."""
    flat = crops.reshape(-1)
    out = identity_retrieval(real.features[flat], real.pids[flat], real, exclude=flat)
    rest = np.setdiff1d(np.arange(len(real.pids)), flat)
    out["frechet"] = frechet_distance(real.features[flat], real.features[rest])
    return out


def generated_recognisability(generator, encoder, real: RealCrops, rows: np.ndarray,
                              crops: np.ndarray, noises: np.ndarray) -> dict:
    """Pictures of table `rows` x `noises` by `generator` (a GenReID at its own settings),
    each querying the real crops through `encoder`; the Fréchet distance is taken to the real
    crops that `real_reference` compares its own sample with."""
    grid = generator.generate_grid(generator.table_identities(rows), noises)
    pictures = grid.reshape(-1, *grid.shape[2:])
    query_pids = np.repeat(generator.pids[rows], len(noises))
    feats = features_of(encoder, pictures)
    out = identity_retrieval(feats, query_pids, real)
    rest = np.setdiff1d(np.arange(len(real.pids)), crops.reshape(-1))
    out["frechet"] = frechet_distance(feats, real.features[rest])
    return out


# A set's own measure, written by `genreid diagnose --save` beside its weights, so that the
# explorer and the model card can say how far its pictures follow their person.
DIAGNOSIS_FILE = "diagnose.json"


def save_diagnosis(folder, report: dict, *, command: str, machine: dict) -> Path:
    path = Path(folder) / DIAGNOSIS_FILE
    text = json.dumps({"command": command, "machine": machine, **report}, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def load_diagnosis(folder) -> dict | None:
    """The set's saved measure, or None where it has none (or an unreadable one)."""
    path = Path(folder) / DIAGNOSIS_FILE
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def recognisability_at(diagnosis: dict | None, guidance: float) -> dict | None:
    """The saved recognisability figures at this guidance weight, with the real crops' beside
    them: {"mAP", "rank1", "frechet", "real_mAP", "real_frechet", "persons", "pictures"} or None."""
    found = (diagnosis or {}).get("recognisability") or {}
    figures = found.get(f"generated_guidance_{guidance:g}")
    real = found.get("real") or {}
    if not isinstance(figures, dict) or "mAP" not in figures:
        return None
    return {"mAP": figures["mAP"], "rank1": figures.get("rank1"), "frechet": figures.get("frechet"),
            "real_mAP": real.get("mAP"), "real_frechet": real.get("frechet"),
            "persons": found.get("persons"), "pictures": found.get("pictures_per_person")}
