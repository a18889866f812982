"""The recognisability measure's parts, on hand-made features (core/recognisability.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.disk_cache import DiskCache
from core.recognisability import (
    RealCrops,
    choose_persons,
    encode_real,
    frechet_distance,
    identity_retrieval,
    real_reference,
)


def crops(features, pids) -> RealCrops:
    features = np.asarray(features, dtype=np.float32)
    return RealCrops(np.zeros((len(features), 4, 2, 3), np.uint8), np.asarray(pids), features)


def test_identity_retrieval_by_hand():
    real = crops([[0.0], [1.0], [10.0], [11.0]], [1, 1, 2, 2])
    # Query at 0.4: ranks 0, 1 (person 1), 10, 11. Person 1: AP 1, rank-1 hit; person 2: the
    # true matches come 3rd and 4th: AP (1/3 + 2/4) / 2.
    out = identity_retrieval(np.array([[0.4], [0.4]]), np.array([1, 2]), real)
    assert out["rank1"] == 0.5
    assert out["mAP"] == pytest.approx((1.0 + (1 / 3 + 2 / 4) / 2) / 2)


def test_identity_retrieval_excludes_the_query_itself():
    real = crops([[0.0], [5.0], [0.1]], [1, 1, 2])
    # Crop 0 querying the real crops: without excluding it, it finds itself first.
    found_self = identity_retrieval(real.features[:1], np.array([1]), real)
    excluded = identity_retrieval(real.features[:1], np.array([1]), real, exclude=np.array([0]))
    assert found_self["rank1"] == 1.0
    # Without itself: 0.1 (person 2) first, then 5.0 (person 1): AP 1/2, no rank-1 hit.
    assert excluded == {"mAP": 0.5, "rank1": 0.0}


def test_frechet_distance_is_zero_for_one_set_and_the_squared_shift_for_a_moved_one():
    a = np.random.default_rng(0).normal(size=(500, 3))
    a -= a.mean(0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + np.array([1.0, 2.0, 0.0])) == pytest.approx(5.0, rel=1e-6)
    # Scaled by 2: the same mean, covariances S and 4S: tr(S + 4S - 2 * 2S) = tr(S).
    assert frechet_distance(a, 2 * a) == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-6)


def test_choose_persons_draws_eligible_persons_and_their_own_crops():
    pids = np.array([5, 5, 5, 7, 7, 9, 9, 9, 9])
    table = np.array([5, 7, 9])
    rows, chosen = choose_persons(pids, table, persons=10, per_person=2, seed=0)
    assert rows.tolist() == [0, 2]  # pid 7 has only 2 crops: not more than per_person
    assert chosen.shape == (2, 2)
    for row, idx in zip(rows, chosen):
        assert (pids[idx] == table[row]).all() and len(set(idx)) == 2
    again = choose_persons(pids, table, persons=10, per_person=2, seed=0)
    assert np.array_equal(again[1], chosen)
    with pytest.raises(ValueError, match="at least 2 training persons"):
        choose_persons(pids, table, persons=10, per_person=4, seed=0)


def test_real_reference_is_perfect_for_separated_persons():
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(10), 6)
    features = pids[:, None] * 10.0 + rng.normal(size=(60, 4))
    real = crops(features, pids)
    rows, chosen = choose_persons(pids, np.arange(10), persons=5, per_person=2, seed=1)
    out = real_reference(real, chosen)
    assert out["mAP"] == 1.0 and out["rank1"] == 1.0 and out["frechet"] > 0


def test_real_crop_features_are_cached_by_encoder_and_crops(tmp_path):
    """diagnose encodes the real training crops once per encoder and split: the next run reads
    them back, and other crops or other encoder weights are encoded again, never served stale."""
    class Encoder:
        def __init__(self, folder, scale):
            self.folder, self.scale, self.calls = folder, scale, 0
            self.device, self.precision, self.retrieval_metric = "cpu", "fp32", "euclidean"

        def encode(self, images):
            self.calls += 1
            return images.reshape(len(images), -1)[:, :4].astype(np.float32) * self.scale

    def write_set(folder, weights_sha):
        folder.mkdir(exist_ok=True)
        (folder / "manifest.json").write_text(json.dumps({"img2id.safetensors": weights_sha}))
        return folder

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 4, 2, 3), dtype=np.uint8)
    pids = np.array([1, 1, 2, 2, 3, 3])
    cache = DiskCache(tmp_path / "cache")
    first = Encoder(write_set(tmp_path / "a", "sha-a"), 1.0)
    made = encode_real(first, images, pids, cache)
    again = encode_real(first, images, pids, cache)
    assert first.calls == 1 and np.array_equal(made.features, again.features)
    encode_real(first, images[::-1].copy(), pids, cache)  # other crops
    assert first.calls == 2
    retrained = Encoder(write_set(tmp_path / "a", "sha-b"), 2.0)  # same folder, new weights
    features = encode_real(retrained, images, pids, cache).features
    assert retrained.calls == 1 and np.allclose(features, 2.0 * made.features)
    unkept = Encoder(tmp_path / "a", 1.0)
    encode_real(unkept, images, pids, DiskCache(None))
    encode_real(unkept, images, pids, DiskCache(None))
    assert unkept.calls == 2  # no cache: always encoded
