"""The gallery index: exact and FAISS paths, recall of the approximate one, saved indices,
`genreid index`, `genreid eval --index` and `genreid bench --gallery-sizes`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core import cli
from core.api import GenReID
from core.gallery_index import GalleryIndex, GalleryIndexError, pick_kind, recall_at
from core.metrics import ranking_summary, retrieval_summary
from core.saved_gallery import load_gallery_index


def gaussian(n: int, seed: int = 0, dim: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_exact_paths_rank_identically():
    gallery, queries = gaussian(500), gaussian(20, seed=1)
    exact = GalleryIndex.build(gallery, kind="exact")
    flat = GalleryIndex.build(gallery, kind="flat")
    d_exact, rows_exact = exact.search(queries, None)
    d_flat, rows_flat = flat.search(queries, None)
    np.testing.assert_array_equal(rows_exact, rows_flat)
    np.testing.assert_allclose(d_exact, d_flat, rtol=1e-4, atol=1e-4)
    # the top k of the exact index is the head of its whole ranking
    _, top = exact.search(queries, 7)
    np.testing.assert_array_equal(top, rows_exact[:, :7])
    brute = np.linalg.norm(queries[:, None] - gallery[None], axis=2)
    np.testing.assert_array_equal(rows_exact[:, 0], brute.argmin(1))


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw"])
def test_cosine_metric_ranks_by_angle(tmp_path, kind):
    gallery, queries = gaussian(400), gaussian(10, seed=1)
    index = GalleryIndex.build(gallery, kind=kind, metric="cosine")
    _, rows = index.search(queries, 5)
    cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        gallery / np.linalg.norm(gallery, axis=1, keepdims=True)).T
    truth = np.argsort(-cos, axis=1)[:, :5]
    agree = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows, truth)])
    assert agree == 1.0 if index.exact else agree > 0.9
    # Lengths do not matter under cosine; they do under Euclidean.
    np.testing.assert_array_equal(index.search(3.0 * queries, 5)[1], rows)
    scaled = GalleryIndex.build(gallery * np.linspace(0.5, 2.0, 400)[:, None].astype(np.float32),
                                kind="exact", metric="cosine")
    if index.exact:
        np.testing.assert_array_equal(scaled.search(queries, 5)[1], rows)
    euclid = GalleryIndex.build(gallery, kind="exact").search(queries, 5)[1]
    assert not np.array_equal(euclid, truth)
    # Saved and loaded, an index keeps its metric.
    loaded = GalleryIndex.load(index.save(tmp_path / "g"))
    assert loaded.metric == "cosine" and loaded.describe()["metric"] == "cosine"
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], rows)
    with pytest.raises(GalleryIndexError, match="metric"):
        GalleryIndex.build(gallery, metric="manhattan")


def test_approximate_index_states_its_recall():
    gallery = gaussian(5000)
    index = GalleryIndex.build(gallery, kind="hnsw")
    assert not index.exact
    assert 0.9 <= index.recall_at_10 <= 1.0
    assert index.describe()["recall_at_10"] == round(index.recall_at_10, 4)
    queries = gaussian(50, seed=3)
    assert recall_at(index, queries) >= 0.9
    with pytest.raises(GalleryIndexError, match="top k"):
        index.search(queries, None)


def test_kind_is_picked_by_size_or_flag():
    assert pick_kind("auto", 1000) == "exact"
    assert pick_kind("auto", 2_000_000) == "hnsw"
    assert pick_kind("flat", 10) == "flat"
    with pytest.raises(GalleryIndexError, match="one of"):
        pick_kind("annoy", 10)


def test_bad_input_is_refused_clearly():
    with pytest.raises(GalleryIndexError, match="shape"):
        GalleryIndex.build(np.zeros((0, 32)))
    with pytest.raises(GalleryIndexError, match="NaN"):
        GalleryIndex.build(np.full((3, 4), np.nan))
    with pytest.raises(GalleryIndexError, match="names"):
        GalleryIndex.build(gaussian(3), names=["a"])
    index = GalleryIndex.build(gaussian(10))
    with pytest.raises(GalleryIndexError, match=r"\(Q, 32\)"):
        index.search(np.zeros((1, 8)), 3)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_saved_index_answers_as_the_built_one(tmp_path, kind):
    gallery = gaussian(800)
    index = GalleryIndex.build(gallery, np.arange(800) % 50, np.arange(800) % 2,
                               [f"{i:04d}_c1s1_000001_00.jpg" for i in range(800)], kind,
                               meta={"source": "/somewhere"})
    index.save(tmp_path / "gallery")
    index.save(tmp_path / "gallery")  # replacing an index leaves no temporary folder behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"]
    again = GalleryIndex.load(tmp_path / "gallery")
    queries = gaussian(10, seed=5)
    for a, b in zip(index.search(queries, 5), again.search(queries, 5)):
        np.testing.assert_array_equal(a, b)
    assert again.names == index.names and again.meta["source"] == "/somewhere"
    np.testing.assert_array_equal(again.pids, index.pids)
    assert again.recall_at_10 == index.recall_at_10


def test_loading_something_else_says_what_is_wrong(tmp_path):
    with pytest.raises(GalleryIndexError, match="not a gallery index"):
        GalleryIndex.load(tmp_path)


def test_truncated_rankings_can_only_lower_the_metrics():
    rng = np.random.default_rng(0)
    d = rng.random((30, 200))
    q_pids, g_pids = rng.integers(0, 10, 30), rng.integers(0, 10, 200)
    q_cams, g_cams = rng.integers(0, 2, 30), rng.integers(0, 2, 200)
    full = retrieval_summary(d, q_pids, g_pids, q_cams, g_cams)
    order = np.argsort(d, axis=1, kind="stable")
    assert ranking_summary(order, q_pids, g_pids, q_cams, g_cams) == full
    top = ranking_summary(order[:, :20], q_pids, g_pids, q_cams, g_cams)
    for protocol in ("standard", "paper"):
        assert top[protocol]["mAP"] < full[protocol]["mAP"]
        assert top[protocol]["rank1"] == full[protocol]["rank1"]  # the head is the same
        assert top[protocol]["rank20"] <= full[protocol]["rank20"]
    # with nothing left out, the top 20 decide rank-20 entirely
    assert top["paper"]["rank20"] == full["paper"]["rank20"]


def test_eval_index_kinds(explorer_model_set, capsys):
    args = ["eval", "--data", str(explorer_model_set.market), "--checkpoint",
            str(explorer_model_set.full), "--json", "--device", "cpu", "--precision", "fp32"]
    results = {}
    for kind in ("exact", "flat", "hnsw"):
        assert cli.main(args + ["--index", kind]) == 0
        results[kind] = json.loads(capsys.readouterr().out)
    assert results["exact"]["index"]["kind"] == "exact"
    assert results["flat"]["standard"] == results["exact"]["standard"]
    assert results["flat"]["paper"] == results["exact"]["paper"]
    assert results["hnsw"]["index"]["kind"] == "hnsw"
    assert results["exact"]["index"]["metric"] == "euclidean"
    assert cli.main(args + ["--metric", "cosine"]) == 0
    cosine = json.loads(capsys.readouterr().out)
    assert cosine["index"]["metric"] == "cosine" and 0.0 <= cosine["standard"]["mAP"] <= 1.0
    assert cli.main(args + ["--metric", "cosine", "--rerank"]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] == "cosine"


def test_genreid_index_writes_an_index_the_set_can_load(explorer_model_set, tmp_path, capsys):
    out = tmp_path / "gallery"
    assert cli.main(["index", "--checkpoint", str(explorer_model_set.full), "--data",
                     str(explorer_model_set.market), "--out", str(out), "--device", "cpu"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["kind"] == "exact" and said["size"] == 8  # the fixture gallery, junk dropped
    model = GenReID.load(explorer_model_set.full, device="cpu")
    index = load_gallery_index(out, model)
    assert index.names[0].endswith(".jpg") and set(index.pids.tolist()) == {0, 3, 8, 13}
    # Its vectors are the model's features of those pictures.
    from core.data import load_split
    split = load_split(explorer_model_set.market / "bounding_box_test", model.image_size)
    assert index.names == list(split.names)
    np.testing.assert_allclose(index.vectors, model.encode(split.images), atol=1e-5)
    # An index made by another encoder, or with another flip setting, is refused.
    model.config.img2id.flip = True
    with pytest.raises(ValueError, match="flip"):
        load_gallery_index(out, model)
    model.config.img2id.flip = False
    model.config.img2id.metric = "cosine"
    with pytest.raises(ValueError, match="metric"):
        load_gallery_index(out, model)
    model.config.img2id.metric = "euclidean"
    meta = json.loads((out / "meta.json").read_text())
    meta["encoder"]["img2id"] = {"img2id-0000.safetensors": "feed"}
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another Img2ID"):
        load_gallery_index(out, model)


def test_api_retrieves_through_an_index(explorer_model_set):
    from core.data import load_split
    model = GenReID.load(explorer_model_set.full, device="cpu")
    split = load_split(explorer_model_set.market / "bounding_box_test", model.image_size)
    gallery = model.index_gallery(split.images, split.pids, split.camids, split.names)
    distances, rows = model.retrieve(split.images[:2], gallery, k=3)
    assert rows.shape == (2, 3) and (rows[:, 0] == [0, 1]).all()  # each picture finds itself
    assert np.allclose(distances[:, 0], 0.0, atol=1e-3)


def test_bench_gallery_sizes_json(explorer_model_set, capsys):
    assert cli.main(["bench", "--checkpoint", str(explorer_model_set.full), "--device", "cpu",
                     "--gallery-sizes", "300,2000", "--gallery-index", "hnsw",
                     "--gallery-queries", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["gallery"]
    assert [r["size"] for r in rows] == [300, 2000]
    for r in rows:
        assert {"size", "index", "build_s", "memory_mb", "p50_ms", "p95_ms", "recall_at_10"} <= set(r)
        assert r["index"] == "hnsw" and 0.5 <= r["recall_at_10"] <= 1.0 and r["p95_ms"] >= r["p50_ms"]
