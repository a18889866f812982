"""Tests of the explorer: each panel's handler on a TINY model set made by the real training
code, the start without a dataset and with missing networks, and an end-to-end run that
starts the app on a free loopback port and drives every endpoint through gradio_client."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import TRAIN_PIDS, running_explorer
from PIL import Image

from core.metrics import euclidean_distances, query_average_precision
from explorer import handlers as h
from explorer import pictures, projections, render
from explorer.state import ExplorerState, load_state

pytestmark = [pytest.mark.filterwarnings("ignore:::gradio.queueing"),  # its own pandas use
              pytest.mark.usefixtures("one_thread")]
ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ("generate", "sweep", "directions", "neighbors", "projection", "retrieve", "decompose")


# ----------------------------------------------------------------------------- fixtures
# explorer_model_set (session): in conftest.py, shared with test_browser.py.


@pytest.fixture(scope="module")
def with_data(explorer_model_set) -> ExplorerState:
    return load_state(explorer_model_set.full, explorer_model_set.market, "cpu",
                      cache_dir=explorer_model_set.cache, background=False, num_prior=12)


def files_by_name(files) -> dict[str, Path]:
    """A result's downloads (one zip) unpacked beside it: member name -> path."""
    assert len(files) == 1 and files[0].endswith(".zip")
    folder = Path(files[0]).with_suffix("")
    with zipfile.ZipFile(files[0]) as z:
        z.extractall(folder)
        names = z.namelist()
    paths = {n: folder / n for n in names}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    return paths


# ----------------------------------------------------------------------------- state
def test_state_caches_the_identity_space(bare):
    n = len(TRAIN_PIDS)
    assert bare.table.shape == (n, bare.dim) and bare.train_keys == [f"pid {p}" for p in TRAIN_PIDS]
    assert bare.prior.shape == (12, bare.dim) and bare.prior_keys[0] == "prior 0"
    brute = np.sqrt(((bare.table[:, None] - bare.table[None]) ** 2).sum(-1))
    np.testing.assert_allclose(bare.distances, brute, atol=1e-6)
    assert len(bare.pair_distances) == n * (n - 1) // 2
    i, j, d = bare.closest
    assert d == pytest.approx(bare.pair_distances.min()) and d == pytest.approx(brute[i, j])
    i, j, d = bare.farthest
    assert d == pytest.approx(bare.pair_distances.max()) and d == pytest.approx(brute[i, j])


def test_identity_keys_resolve(bare):
    pid = TRAIN_PIDS[1]
    for text in (f"pid {pid}", str(pid), f" PID #{pid} ", "row 1"):
        key, vector = bare.resolve(text)
        assert key == f"pid {pid}"
        np.testing.assert_array_equal(vector, bare.table[1])
    key, vector = bare.resolve("prior 3")
    assert key == "prior 3" and np.array_equal(vector, bare.prior[3])
    for bad in ("nobody", "pid 9999", "row 99", "prior 12"):
        with pytest.raises(ValueError):
            bare.resolve(bad)


def test_every_handler_keeps_the_signature_gradio_reads(bare):
    """Bound to the state, each panel's handler has its inputs' defaults and resolvable type
    hints (Gradio finds gr.SelectData and gr.Progress parameters from them, and silently
    ignores hints it cannot resolve)."""
    import inspect
    import typing

    for name in ("generate", "sweep", "directions", "neighbors", "projection", "select_on_map",
                 "select_identity", "selected_portrait", "retrieve", "decompose", "swap",
                 "interpolate"):
        bound = h.bind(getattr(h, name), bare)
        hints = typing.get_type_hints(bound)
        assert "state" not in inspect.signature(bound).parameters, name
        if name == "select_on_map":
            assert hints["evt"] is gr.SelectData
        elif name not in ("select_identity", "selected_portrait"):
            assert isinstance(inspect.signature(bound).parameters["progress"].default, gr.Progress)
    assert typing.get_type_hints(h.select_from_plot)["evt"] is gr.EventData


def test_umap_is_never_imported_at_start(explorer_model_set):
    """`import umap` alone costs ~20 s here: building the app must not import it (checked in a
    fresh interpreter, since other tests in this process may have imported it)."""
    code = ("import sys; from explorer.app import build_app; from explorer.state import load_state; "
            f"s = load_state({str(explorer_model_set.full)!r}, None, 'cpu', cache_dir=False, "
            "background=False, num_prior=4); build_app(s); assert 'umap' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# ----------------------------------------------------------------------------- 1. generation
def test_generate_rows_are_identities_columns_are_noises(bare):
    picture, info, files = h.generate(bare, ["pid 2", "row 3"], 1, 3, 7, 5)
    again, _, _ = h.generate(bare, ["pid 2", "row 3"], 1, 3, 7, 5)
    np.testing.assert_array_equal(picture, again)  # seeded: reproducible
    other, _, _ = h.generate(bare, ["pid 2", "row 3"], 1, 3, 8, 5)
    assert not np.array_equal(picture, other)  # another noise seed, other pictures
    f = files_by_name(files)
    assert set(f) == {"generation.png", "identities.csv", "identities.npy", "noises.npy"}
    vectors, noises = np.load(f["identities.npy"]), np.load(f["noises.npy"])
    np.testing.assert_array_equal(noises, bare.model.noise(3, seed=7))
    np.testing.assert_array_equal(vectors[0], bare.table[0])
    np.testing.assert_array_equal(vectors[2], bare.model.sample_identities(1, seed=5)[0])
    # The picture is the model's grid (the same noise down each column), labelled, enlarged 3x:
    # by default the fast preview's, on request the full generator's.
    labels = ["pid 2", "pid 11", "new 0\n(prior seed 5)"]
    captions = [["noise 1", "noise 2", "noise 3"], [None] * 3, [None] * 3]
    expected = render.compose(bare.model.generate_grid(vectors, noises, preview=True),
                              row_labels=labels, captions=captions)
    np.testing.assert_array_equal(picture, expected)
    assert np.array_equal(np.asarray(Image.open(f["generation.png"])), picture)
    assert "3 identities × 3 noises" in info and "Fast preview" in info
    full, info, _ = h.generate(bare, ["pid 2", "row 3"], 1, 3, 7, 5, False)
    np.testing.assert_array_equal(full, render.compose(bare.model.generate_grid(vectors, noises),
                                                       row_labels=labels, captions=captions))
    assert "Full generator" in info


def test_generate_defaults_and_errors(bare):
    picture, _, files = h.generate(bare)
    vectors = np.load(files_by_name(files)["identities.npy"])
    assert len(vectors) == len(h.default_identities(bare)) + 1
    assert 0 <= h.new_noise_seed() < 1_000_000
    with pytest.raises(gr.Error, match="unknown identity"):
        h.generate(bare, ["nobody"])
    with pytest.raises(gr.Error, match="noises must be within"):
        h.generate(bare, noises=0)
    with pytest.raises(gr.Error, match="at least one identity"):
        h.generate(bare, [], 0)


# ----------------------------------------------------------------------------- 2. sweep
def test_sweep_rows_are_coordinates_and_ranking(bare):
    picture, table, info, files = h.sweep(bare, "pid 5", [3, "z1"], -0.3, 0.3, 4, 0,
                                          units=h.SWEEP_ABSOLUTE)
    assert list(table["coordinate"]) in (["z3", "z1"], ["z1", "z3"]) and len(table) == 2
    changes = list(table["change end to end"])
    assert changes == sorted(changes, reverse=True)
    vectors = np.load(files_by_name(files)["vectors.npy"])
    assert vectors.shape == (8, bare.dim)
    np.testing.assert_allclose(vectors[:4, 3], [-0.3, -0.1, 0.1, 0.3], atol=1e-6)
    np.testing.assert_allclose(vectors[4:, 1], [-0.3, -0.1, 0.1, 0.3], atol=1e-6)
    untouched = np.delete(vectors[:4], 3, axis=1)
    np.testing.assert_array_equal(untouched, np.repeat(np.delete(bare.table[1], 3)[None], 4, 0))
    _, table_all, _, _ = h.sweep(bare, "pid 5", [3], rank_all=True, steps=3, units="absolute")
    assert len(table_all) == bare.dim and list(table_all["rank"]) == list(range(1, bare.dim + 1))
    _, _, _, files = h.sweep(bare, "pid 5", [0], -0.1, 0.1, 3, relative=True, units="absolute")
    rel = np.load(files_by_name(files)["vectors.npy"])
    np.testing.assert_allclose(rel[:, 0], bare.table[1, 0] + np.array([-0.1, 0, 0.1]), atol=1e-6)


def test_sweep_default_range_comes_from_the_training_identities(bare):
    picture, table, info, files = h.sweep(bare)
    assert len(table) == len(h.SWEEP_COORDINATES) and "-3 to +3 standard deviations" in info
    c = h.SWEEP_COORDINATES[0]
    mean, sd = bare.table[:, c].mean(), bare.table[:, c].std()
    vectors = np.load(files_by_name(files)["vectors.npy"])
    np.testing.assert_allclose(vectors[:, c], mean + sd * np.linspace(-3, 3, 7), rtol=1e-5, atol=1e-7)
    assert f"sd {sd:.3f}" in info  # the derived range is shown
    assert table["from"][0] == pytest.approx(mean - 3 * sd, rel=1e-3)
    assert table["to"][0] == pytest.approx(mean + 3 * sd, rel=1e-3)
    # Around the identity's own value, in standard deviations.
    _, _, _, files = h.sweep(bare, "pid 5", [2], -1, 1, 3, relative=True)
    rel = np.load(files_by_name(files)["vectors.npy"])
    np.testing.assert_allclose(rel[:, 2], bare.table[1, 2] + bare.table[:, 2].std() * np.array([-1, 0, 1]),
                               rtol=1e-5, atol=1e-7)
    # Ranking every coordinate: each over its own derived range.
    _, ranked, _, _ = h.sweep(bare, "pid 5", [0], steps=2, rank_all=True)
    by = ranked.set_index("coordinate")
    for k in range(bare.dim):
        lo, hi = by.loc[f"z{k}", "from"], by.loc[f"z{k}", "to"]
        sd_k = bare.table[:, k].std()
        assert lo == pytest.approx(bare.table[:, k].mean() - 3 * sd_k, rel=1e-3, abs=1e-6)
        assert hi == pytest.approx(bare.table[:, k].mean() + 3 * sd_k, rel=1e-3, abs=1e-6)
    with pytest.raises(gr.Error, match="standard deviations"):
        h.sweep(bare, units="furlongs")


def test_sweep_default_and_errors(bare):
    picture, table, info, files = h.sweep(bare, units=h.SWEEP_ABSOLUTE, low=-0.3, high=0.3)
    assert len(table) == len(h.SWEEP_COORDINATES) and "-0.30 to +0.30 (absolute values" in info
    with pytest.raises(gr.Error, match="coordinates are 0"):
        h.sweep(bare, coordinates=[bare.dim])
    with pytest.raises(gr.Error, match="range is empty"):
        h.sweep(bare, low=0.2, high=0.2)


# ----------------------------------------------------------------------------- directions
def test_directions_walk_the_principal_directions(bare):
    picture, table, info, files = h.directions(bare)  # the default view
    space = bare.space
    assert list(table["direction"]) == [f"PC{k + 1}" for k in range(space.num_directions)]
    # The shares are of the training identities' variance, and the variances add up to it.
    np.testing.assert_allclose(table["share of variance"].sum(), 1.0, atol=1e-3)
    np.testing.assert_allclose(space.variances.sum(), bare.table.var(0).sum(), rtol=1e-5)
    f = files_by_name(files)
    assert {"directions.png", "directions.csv", "all-directions.npy", "vectors.npy",
            "direction-PC1.npy", "direction-PC2.npy"} <= set(f)
    pc1 = np.load(f["direction-PC1.npy"])
    np.testing.assert_allclose(np.linalg.norm(pc1), 1.0, rtol=1e-5)
    vectors = np.load(f["vectors.npy"]).reshape(2, 5, bare.dim)  # default: PC1, PC2 x 5 steps
    sd1 = np.sqrt(space.variances[0])
    np.testing.assert_allclose(vectors[0] - bare.table[0], np.linspace(-3, 3, 5)[:, None] * sd1 * pc1[None],
                               atol=1e-6)
    assert f"{space.explained[0]:.1%}" in info


def test_walking_zero_standard_deviations_draws_the_identity_itself(bare):
    _, _, _, files = h.directions(bare, "pid 5", "2", -1, 1, 3, 4, False)
    walked = np.load(files_by_name(files)["vectors.npy"])
    np.testing.assert_array_equal(walked[1], bare.table[1])
    picture, _, _, _ = h.directions(bare, "pid 5", "2", -1, 1, 3, 4, False)
    same = bare.generate(bare.table[1:2], bare.noise(1, 4), preview=False)[0]
    three = bare.generate(walked, np.repeat(bare.noise(1, 4), 3, 0), preview=False)
    np.testing.assert_array_equal(three[1], same)
    with pytest.raises(gr.Error, match="numbered 1.."):
        h.directions(bare, directions="0")
    with pytest.raises(gr.Error, match="numbered 1.."):
        h.directions(bare, directions=[bare.space.num_directions + 1])
    with pytest.raises(gr.Error, match="range is empty"):
        h.directions(bare, low=1, high=1)


# ----------------------------------------------------------------------------- 3. neighbours
def test_neighbors_are_the_nearest_identities(bare):
    picture, table, pairs, stats, histogram, files = h.neighbors(bare, "pid 2", 5)
    assert len(table) == len(TRAIN_PIDS) - 1  # k is capped at the other identities
    d = euclidean_distances(bare.table[:1], bare.table)[0]
    order = np.argsort(d)[1:]
    assert list(table["identity"]) == [bare.train_keys[i] for i in order]
    np.testing.assert_allclose(table["distance"], d[order], atol=1e-4)
    assert pairs is not None and histogram is not None
    p = bare.pair_distances
    assert f"min {p.min():.3f}" in stats and f"max {p.max():.3f}" in stats
    f = files_by_name(files)
    np.testing.assert_allclose(np.load(f["pairwise_distances.npy"]), bare.distances, atol=1e-6)
    # Portraits are generated once by the fast preview with the fixed noise, then memoised
    # (generated in a batch: bf16 kernels may differ by a level or two from a batch of one).
    portrait = bare.portrait_ready("pid 2")
    expected = bare.model.generate(bare.table[:1], bare.portrait_noise, preview=True)[0]
    assert np.abs(portrait.astype(int) - expected).max() <= 3
    assert bare.portrait_ready("pid 2") is portrait
    # A prior sample's neighbours are all the training identities.
    _, table, *_ = h.neighbors(bare, "prior 0", 2)
    assert len(table) == 2


def test_real_portraits_with_data(with_data):
    assert with_data.real_portraits
    portrait = with_data.portraits(["pid 2"])[0]
    first = sorted((with_data.data / "bounding_box_train").glob("0002_*.jpg"))[0]
    np.testing.assert_array_equal(portrait, np.asarray(Image.open(first).convert("RGB")))


def test_generated_rows_start_with_the_real_person(with_data, bare):
    picture, info, files = h.generate(with_data, ["pid 2", "prior 0"], 0, 2)
    plain, plain_info, plain_files = h.generate(bare, ["pid 2", "prior 0"], 0, 2)
    assert picture.shape[1] > plain.shape[1]  # one more column: the real pictures
    assert "real" in info and "No real pictures" in plain_info
    f = files_by_name(files)
    assert "real-pid-2.png" in f and not any("prior" in n for n in f if n.startswith("real"))
    np.testing.assert_array_equal(np.asarray(Image.open(f["real-pid-2.png"])),
                                  with_data.real.picture(2))
    assert not any(n.startswith("real") for n in files_by_name(plain_files))
    # The sweep shows the real person too; a prior sample has none.
    _, _, sweep_info, sweep_files = h.sweep(with_data, "pid 2", [0], steps=2)
    assert "real-pid-2.png" in files_by_name(sweep_files) and "real" in sweep_info
    _, _, _, prior_files = h.sweep(with_data, "prior 0", [0], steps=2)
    assert not any(n.startswith("real") for n in files_by_name(prior_files))


def test_real_portraits_come_from_the_sets_training_split(explorer_model_set, tmp_path):
    state = load_state(explorer_model_set.full, None, "cpu", cache_dir=False, background=False,
                       num_prior=2)
    assert state.real_portraits and "bounding_box_train" in state.real.where
    first = sorted((explorer_model_set.market / "bounding_box_train").glob("0002_*.jpg"))[0]
    np.testing.assert_array_equal(state.real_picture("pid 2"), np.asarray(Image.open(first).convert("RGB")))
    assert state.real_picture("prior 0") is None
    # A split that is gone, or that holds other persons, gives none (and no error).
    from explorer.real_pictures import RealPortraits
    fake = tmp_path / "set"
    fake.mkdir()
    (fake / "identities.json").write_text('{"pids": [1, 2], "source": "gone/train.npz"}')
    assert not RealPortraits([1, 2], (64, 32), set_folder=fake)
    (fake / "identities.json").write_text(
        '{"pids": [1, 2], "source": "%s"}' % (explorer_model_set.market / "bounding_box_train"))
    assert not RealPortraits([1, 2], (64, 32), set_folder=fake)


def test_generation_says_how_far_the_generator_follows_identity(bare, monkeypatch):
    _, info, _ = h.generate(bare)
    assert "has not been measured" in info and "genreid diagnose" in info
    g = bare.model.config.generator.guidance
    measured = {"recognisability": {"real": {"mAP": 0.9, "rank1": 0.95, "frechet": 1.0},
                                    f"generated_guidance_{g:g}": {"mAP": 0.05, "rank1": 0.04,
                                                                  "frechet": 14.0}}}
    monkeypatch.setattr(bare, "diagnosis", measured)
    _, info, _ = h.generate(bare)
    assert "follows identity only weakly" in info and "mAP 0.05" in info and "0.90" in info
    measured["recognisability"][f"generated_guidance_{g:g}"]["mAP"] = 0.6
    _, info, _ = h.generate(bare)
    assert "draws recognisable people" in info and "mAP 0.60" in info


# ----------------------------------------------------------------------------- 4. projection
def test_projection_is_cached_and_clicks_select(bare):
    fig, picture, info, files = h.projection(bare)
    assert "PCA" in info and len(bare.projections.computed) == 1
    keys = [c[0] for trace in fig.data for c in trace.customdata]
    assert sorted(keys) == sorted(bare.train_keys + bare.prior_keys)
    h.projection(bare, "PCA", "identity norm")
    h.projection(bare, "pca", "z3", "pid 5")
    assert len(bare.projections.computed) == 1  # colours and selections reuse the projection
    # A click on the rendered map selects the nearest point.
    points, coords, *_ = h._map(bare, "PCA", "source", None)
    xy = render.map_positions(coords)[2]
    evt = gr.SelectData(None, {"index": [float(xy[0]) + 2, float(xy[1]) - 1], "value": None})
    assert h.select_on_map(bare, "PCA", "source", evt) == points.keys[2]
    far = gr.SelectData(None, {"index": [-500, -500], "value": None})
    assert not isinstance(h.select_on_map(bare, "PCA", "source", far), str)
    # Selecting an identity makes it the current one in the other panels.
    portrait, info, picture, sweep_id, dir_id, nb_id, ip_id, gen_ids = h.select_identity(
        bare, "prior 2", ["pid 2", "prior 2", "pid 5"])
    assert sweep_id == dir_id == nb_id == ip_id == "prior 2"
    assert gen_ids == ["prior 2", "pid 2", "pid 5"]
    assert portrait.shape == (64 * 4, 32 * 4, 3)
    with pytest.raises(gr.Error):
        h.projection(bare, "tSNE")
    evt = SimpleNamespace(_data={"key": "pid 7"})
    assert h.select_from_plot(evt) == "pid 7"


def test_umap_is_lazy_and_computed_once(bare, monkeypatch):
    calls = []

    def fake_umap(x, seed=0, report=None):
        calls.append(len(x))
        return np.stack([x[:, 0], x[:, 1]], 1)

    monkeypatch.setattr(projections, "umap_embedding", fake_umap)
    fig, picture, info, files = h.projection(bare, "UMAP", "source")
    h.projection(bare, "UMAP", "identity norm")
    assert calls == [len(bare.train_keys) + len(bare.prior_keys)] and "UMAP" in info


# ----------------------------------------------------------------------------- 5. retrieval
def test_retrieve_without_data_uses_a_generated_gallery(bare):
    picture, table, info, files = h.retrieve(bare, None, 1, 4)
    query, gallery = bare.pictures()
    assert gallery.generated and len(gallery) == 6 and len(query) == 3
    assert "generated" in info and "Average precision" in info
    assert list(table["rank"]) == [1, 2, 3, 4]
    right = [g == query.labels[1] for g in gallery.labels[table["gallery index"]]]
    assert list(table["right person"]) == ["yes" if r else "no" for r in right]
    f = files_by_name(files)
    q = np.load(f["query_identity.npy"])
    np.testing.assert_allclose(q, bare.model.encode(query.images[1:2])[0], atol=1e-6)


def test_retrieve_ranks_by_the_sets_metric(explorer_model_set, tmp_path):
    """A set with img2id.metric "cosine" ranks the explorer's gallery by angle, and says so."""
    from core import checkpoint as ckpt

    folder = tmp_path / "set"
    shutil.copytree(explorer_model_set.full, folder)
    config = ckpt.read_config(folder)
    config.img2id.metric = "cosine"
    writer = ckpt.ModelSetWriter(folder)
    writer.config(config)
    writer.commit()
    state = load_state(folder, explorer_model_set.market, "cpu", cache_dir=tmp_path / "cache",
                       background=False, num_prior=12)
    _, table, info, _ = h.retrieve(state, None, 0, 8)
    query, _ = state.pictures()
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    cos = (unit(state.model.encode(query.images[:1])) @ unit(state.gallery_features()).T)[0]
    assert list(table["gallery index"]) == list(np.argsort(-cos, kind="stable"))
    assert "cosine" in info


def test_retrieve_with_data_reports_average_precision(with_data, tmp_path):
    picture, table, info, files = h.retrieve(with_data)
    query, gallery = with_data.pictures()
    assert not gallery.generated and len(gallery) == 8  # the junk box is dropped
    features = with_data.gallery_features()
    q = with_data.model.encode(query.images[:1])
    d = euclidean_distances(q, features)[0]
    order = np.argsort(d, kind="stable")
    assert list(table["gallery index"]) == list(order)
    assert "standard protocol" in info and "paper" in info
    # An upload named like Market-1501 carries its label; any other name does not.
    src = sorted((with_data.data / "query").glob("*.jpg"))[1]
    named = tmp_path / src.name
    shutil.copy(src, named)
    _, table, info, _ = h.retrieve(with_data, str(named), k=3)
    assert set(table["right person"]) <= {"yes", "no"} and "Average precision" in info
    anonymous = tmp_path / "person.png"
    Image.open(src).save(anonymous)
    _, table, info, _ = h.retrieve(with_data, str(anonymous), k=3)
    assert set(table["right person"]) == {"?"} and "unknown" in info
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    with pytest.raises(gr.Error, match="cannot read image"):
        h.retrieve(with_data, str(broken))
    with pytest.raises(gr.Error, match="query picture index"):
        h.retrieve(with_data, None, 99)


def test_retrieval_average_precision_is_the_one_genreid_eval_averages(with_data, tmp_path):
    """The AP the retrieval panel shows for a query is core.metrics' for that query's ranking,
    and the one `genreid eval` averages into its mAP (same protocol, same features)."""
    from core.evaluate import evaluate

    model = with_data.model
    features = tmp_path / "features.npz"
    result = evaluate(model, str(with_data.data), batch_size=model.batch_size,
                      features_out=str(features))
    z = np.load(features)
    order = np.argsort(euclidean_distances(z["query_features"], z["gallery_features"]), axis=1,
                       kind="stable")
    query, gallery = with_data.pictures()
    for protocol, remove in (("standard", True), ("paper", False)):
        aps = [query_average_precision(order[i], z["query_pids"][i], z["query_camids"][i],
                                       z["gallery_pids"], z["gallery_camids"], remove)
               for i in range(len(order))]
        assert np.mean([a for a in aps if a is not None]) == result[protocol]["mAP"]
        for i, expected in enumerate(aps):
            _, table, info, _ = h.retrieve(with_data, None, i, len(gallery))  # the whole ranking
            ranked = table["gallery index"].to_numpy()
            np.testing.assert_array_equal(ranked, order[i])  # the ranking `genreid eval` made
            shown_ap = query_average_precision(ranked, query.labels[i], query.camids[i],
                                               gallery.labels, gallery.camids, remove)
            assert shown_ap == expected
            text = f"{expected:.3f}" if expected is not None else "undefined"
            assert (f"**Average precision {text}**" if remove else
                    f"; {text} with nothing left out") in info


# ----------------------------------------------------------------------------- 6. decomposition
def test_decompose_splits_and_regenerates(with_data):
    strip, figure, info, files = h.decompose(with_data)
    query, _ = with_data.pictures()
    parts = with_data.model.decompose(query.images[:1])
    f = files_by_name(files)
    np.testing.assert_allclose(np.load(f["identity.npy"]), parts.identity[0], atol=1e-6)
    np.testing.assert_allclose(np.load(f["noise.npy"]), parts.noise[0], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(Image.open(f["regenerated.png"])),
                                  parts.reconstruction[0])
    np.testing.assert_array_equal(np.asarray(Image.open(f["noise.png"])),
                                  with_data.model.noise_picture(parts.noise)[0])
    assert f"reconstruction error {parts.error[0]:.4f}" in info
    assert {"identity.csv", "decomposition.png"} <= set(f)


def test_swap_and_interpolate(with_data):
    picture, info, files = h.swap(with_data)
    query, _ = with_data.pictures()
    parts = with_data.model.decompose(query.images[:2])
    f = files_by_name(files)
    expected = with_data.model.generate(parts.identity[1:2], parts.noise[0:1])[0]
    np.testing.assert_array_equal(np.asarray(Image.open(f["a_pose_b_person.png"])), expected)
    picture, info, files = h.interpolate(with_data, "pid 2", "prior 1", 3, 4)
    vectors = np.load(files_by_name(files)["vectors.npy"])
    np.testing.assert_allclose(vectors[0], with_data.table[0], atol=1e-6)
    np.testing.assert_allclose(vectors[-1], with_data.prior[1], atol=1e-6)
    np.testing.assert_allclose(vectors[1], (vectors[0] + vectors[2]) / 2, atol=1e-6)
    # pid 2 is a training person: its real picture stands before the path (a prior sample has
    # none), so the strip is 3 generated + 1 real pictures wide, and the zip holds it.
    real = files_by_name(files)["real-pid-2.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(real)), with_data.real_picture("pid 2"))
    plain, _, _ = h.interpolate(with_data, "prior 0", "prior 1", 3, 4)
    assert picture.shape[1] > plain.shape[1] and "real" in info


# ----------------------------------------------------------------------------- missing networks
def test_generator_only_set_starts_and_explains_missing_parts(explorer_model_set):
    st = load_state(explorer_model_set.generator_only, None, "cpu", cache_dir=False,
                    background=False)
    assert not st.has("prior") and len(st.prior) == 0 and h.default_new_identities(st) == 0
    h.generate(st)
    h.sweep(st, steps=2)
    h.neighbors(st)
    h.projection(st)
    h.interpolate(st, steps=2)
    for call in (h.retrieve, h.decompose, h.swap):
        with pytest.raises(gr.Error, match="genreid train img2id"):
            call(st)
    with pytest.raises(gr.Error, match="prior"):
        h.generate(st, new_identities=1)


# ----------------------------------------------------------------------------- end to end
def test_app_end_to_end_through_gradio_client(explorer_model_set, tmp_path):
    from gradio_client import Client, handle_file

    with running_explorer(explorer_model_set, tmp_path / "cache") as app:
        assert app.startup_s < 60
        client = Client(app.url, verbose=False)
        named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert {f"/{e}" for e in ENDPOINTS} | {"/swap", "/interpolate"} <= set(named)
        for endpoint in ENDPOINTS + ("swap", "interpolate"):
            result = client.predict(api_name=f"/{endpoint}")  # defaults: the panel's default view
            assert isinstance(result, tuple) and len(result) >= 3, endpoint
            first = result[0]
            if endpoint != "projection":
                picture = np.asarray(Image.open(first))
                assert Image.open(first).format == "PNG" and picture.shape[0] >= 64 * 3, endpoint
        # decompose takes an upload
        upload = sorted((explorer_model_set.market / "query").glob("*.jpg"))[0]
        strip, figure, info, files = client.predict(handle_file(str(upload)), api_name="/decompose")
        assert upload.name in info and "identity.npy" in files_by_name(files)
        # the other panels with arguments
        _, table, *_ = client.predict(identity="pid 5", k=2, api_name="/neighbors")
        assert len(table["data"]) == 2
        with pytest.raises(Exception, match="unknown identity"):  # a readable gr.Error
            client.predict(identity="nobody", api_name="/sweep")


def test_script_entry_point_reports_a_missing_model_set(tmp_path):
    result = subprocess.run([sys.executable, "explorer/app.py", "--checkpoint", str(tmp_path / "none")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr


# ----------------------------------------------------------------------------- saved gallery index
@pytest.fixture(scope="module")
def saved_gallery(explorer_model_set, tmp_path_factory) -> Path:
    from core import cli
    out = tmp_path_factory.mktemp("gallery-index") / "gallery"
    assert cli.main(["index", "--checkpoint", str(explorer_model_set.full), "--data",
                     str(explorer_model_set.market), "--out", str(out), "--device", "cpu"]) == 0
    return out


def test_retrieval_from_a_saved_index_matches_encoding_the_gallery(explorer_model_set, with_data,
                                                                   saved_gallery):
    indexed = load_state(explorer_model_set.full, explorer_model_set.market, "cpu",
                         cache_dir=explorer_model_set.cache, background=False, num_prior=12,
                         gallery=saved_gallery)
    _, gallery = indexed.pictures()
    assert isinstance(gallery.images, pictures.IndexedPictures)  # read from files when shown
    for query in (0, 2):
        _, table, info, _ = h.retrieve(indexed, None, query, 5)
        _, expected, expected_info, _ = h.retrieve(with_data, None, query, 5)
        assert table.equals(expected) and info == expected_info
    np.testing.assert_array_equal(gallery.images[3], with_data.pictures()[1].images[3])


def test_saved_index_without_data_shows_the_real_gallery(explorer_model_set, saved_gallery):
    state = load_state(explorer_model_set.full, None, "cpu", cache_dir=explorer_model_set.cache,
                       background=False, num_prior=12, gallery=saved_gallery,
                       generated_identities=2, generated_per_identity=1)
    query, gallery = state.pictures()
    assert not gallery.generated and len(gallery) == 8 and len(query) == 2
    _, table, info, _ = h.retrieve(state, None, 0, 3)
    assert set(table["right person"]) == {"?"} and "unknown" in info  # a generated person
    state.gallery_features()  # the index's vectors: nothing to encode
    assert any(k.startswith("gallery ") for k in state.points().keys)


def test_a_stale_saved_index_is_refused_or_ignored(explorer_model_set, saved_gallery, tmp_path):
    import json
    stale = tmp_path / "set"
    shutil.copytree(explorer_model_set.full, stale)
    shutil.copytree(saved_gallery, stale / "gallery")
    meta = json.loads((stale / "gallery" / "meta.json").read_text())
    meta["encoder"]["image_size"] = [128, 64]
    (stale / "gallery" / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="another Img2ID"):
        state = load_state(stale, explorer_model_set.market, "cpu", background=False, cache_dir=False)
    assert state.saved_gallery is None  # "auto": encodes the gallery as without an index
    with pytest.raises(ValueError, match="another Img2ID"):
        load_state(stale, explorer_model_set.market, "cpu", background=False, cache_dir=False,
                   gallery=stale / "gallery")


# ----------------------------------------------------------------------------- ZeroGPU
@pytest.fixture
def zero_gpu(monkeypatch):
    """ZeroGPU hardware as the explorer sees it: SPACES_ZERO_GPU set and a `spaces` package
    (tests/zerogpu_stand_in) that runs each decorated call in a forked process."""
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "zerogpu_stand_in"))
    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    import spaces
    spaces.calls.clear()
    yield spaces
    sys.modules.pop("spaces", None)


def test_zero_gpu_requests_run_in_the_forked_worker(explorer_model_set, zero_gpu, bare):

    from explorer import zerogpu
    assert zerogpu.available()
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # OpenMP's threads, used before the fork, are not in the worker
    try:
        _zero_gpu_requests(explorer_model_set, zero_gpu, bare)
    finally:
        torch.set_num_threads(before)


def _zero_gpu_requests(explorer_model_set, zero_gpu, bare):
    import os
    state = load_state(explorer_model_set.full, None, "auto", cache_dir=explorer_model_set.cache,
                       background=False, num_prior=12, generated_identities=3,
                       generated_per_identity=2, set_portraits=False)  # as `bare`
    assert state.remote is not None and state.model.device.type == "cpu"
    picture, _, _ = h.generate(state, progress=None)
    assert [name for name, _ in zero_gpu.calls] == ["_call", "_call"]  # prior sample, grid
    assert all(pid != os.getpid() for _, pid in zero_gpu.calls)
    np.testing.assert_array_equal(picture, h.generate(bare, progress=None)[0])  # same pictures
    first = len(zero_gpu.calls)
    query = state.pictures()[0].images[0]
    path = Path(state.output_dir("upload")) / "q.png"
    Image.fromarray(query).save(path)
    h.decompose(state, upload=str(path))
    h.retrieve(state, upload=str(path))
    assert len(zero_gpu.calls) == first + 2  # one GPU call per request's network call
    # Background work (here the generated gallery's pictures and features) stays on the CPU.
    state.pictures_task.wait()
    state.features_task.wait()
    assert len(zero_gpu.calls) == first + 2


def test_off_zero_gpu_nothing_is_routed(explorer_model_set, monkeypatch):
    from explorer import zerogpu
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zerogpu.available()
    state = load_state(explorer_model_set.full, None, "cpu", cache_dir=explorer_model_set.cache,
                       background=False, num_prior=12)
    assert state.remote is None
    with pytest.raises(ValueError, match="not a GPU method"):
        zerogpu._call("networks")
