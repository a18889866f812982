"""End to end through the command line: train a tiny model set, resume, pack, evaluate,
sample, and use the Python API on the result.

One module-scoped fixture trains all four networks once (a few steps each) on the tiny
Market-1501-style dataset of conftest.py; the tests then read that set. Tests that write
(resume, corruption) work on copies so the shared set stays as trained.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_PIDS, TRAIN_PIDS, make_market_dataset
from PIL import Image
from safetensors.torch import load_file

from core import checkpoint as ckpt
from core.api import GenReID
from core.cli import main
from core.config import (
    GeneratorConfig,
    Img2IDConfig,
    Img2NoiseConfig,
    ModelSetConfig,
    PriorConfig,
    UNetConfig,
)
from core.data import load_split
from core.recognisability import load_diagnosis, recognisability_at

pytestmark = pytest.mark.usefixtures("one_thread")


H, W = 64, 32
ID_DIM = 8
PARTS = ("generator", "prior", "img2id", "img2noise")
NUM_QUERY = len(TEST_PIDS)  # one query image per test identity
NUM_GALLERY = 2 * len(TEST_PIDS) + 1 + 1  # 2 per identity, 1 more of pid 3, 1 distractor (junk dropped)


def tiny_config() -> ModelSetConfig:
    unet = UNetConfig(widths=[8, 16], block_depth=1)
    return ModelSetConfig(
        generator=GeneratorConfig(unet=unet, id_dim=ID_DIM, noise_embedding_dim=8),
        prior=PriorConfig(id_dim=ID_DIM, hidden=32, layers=2, noise_embedding_dim=8),
        img2id=Img2IDConfig(unet=unet, dense=[16], id_dim=ID_DIM),
        img2noise=Img2NoiseConfig(unet=unet),
    )


def cli(*args) -> int:
    return main([str(a) for a in args])


def generator_args(data, out, work, config, steps=4):
    return ["train", "generator", "--data", data, "--out", out, "--config", config,
            "--steps", steps, "--batch-size", 4, "--save-every", 2, "--sample-every", 2,
            "--work-dir", work]


def log_steps(work: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (work / "log.jsonl").read_text().splitlines()]


class Trained:
    """Paths of the module's dataset and trained model set."""

    def __init__(self, root: Path):
        self.root = root
        self.market = make_market_dataset(root / "market")
        self.train = self.market / "bounding_box_train"
        self.config = root / "tiny.json"
        self.set = root / "set"
        self.runs = root / "runs"
        tiny_config().save(self.config)

    def work(self, part: str) -> Path:
        return self.runs / part


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    t = Trained(tmp_path_factory.mktemp("pipeline"))
    assert cli(*generator_args(t.train, t.set, t.work("generator"), t.config)) == 0
    assert cli("train", "prior", "--checkpoint", t.set, "--steps", 4, "--batch-size", 8,
               "--save-every", 2, "--work-dir", t.work("prior")) == 0
    assert cli("train", "img2id", "--checkpoint", t.set, "--data", t.train, "--real-fraction", 0.5,
               "--steps", 2, "--batch-size", 4, "--work-dir", t.work("img2id")) == 0
    assert cli("train", "img2noise", "--checkpoint", t.set, "--data", t.train,
               "--generated-fraction", 0.5, "--steps", 2, "--batch-size", 2,
               "--work-dir", t.work("img2noise")) == 0
    return t


@pytest.fixture(scope="module")
def model(trained) -> GenReID:
    return GenReID.load(trained.set, device="cpu")


@pytest.fixture(scope="module")
def pictures(trained) -> np.ndarray:
    """Three query pictures of the dataset, uint8 (3, 64, 32, 3)."""
    files = sorted((trained.market / "query").glob("*.jpg"))
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


# ------------------------------------------------------------------------- training / folders

def test_model_set_folder_holds_every_file(trained):
    names = {p.name for p in trained.set.iterdir()}
    weights = {part: ckpt.part_files(trained.set, part) for part in PARTS}
    assert all(len(files) == 1 for files in weights.values())
    assert names == {"config.json", "identities.json", "manifest.json",
                     *(files[0] for files in weights.values())}
    manifest = ckpt.verify(trained.set)
    assert set(manifest) == names - {"manifest.json"}
    config = ckpt.read_config(trained.set)
    assert config.generator.num_identities == len(TRAIN_PIDS)
    assert config.generator.unet.widths == [8, 16] and config.img2id.dense == [16]
    # normalisation statistics come from the data, not the defaults
    assert config.mean != [0.5, 0.5, 0.5] and all(0 < m < 1 for m in config.mean)
    assert all(0 < s < 0.5 for s in config.std)
    identities = json.loads((trained.set / "identities.json").read_text())
    assert identities["pids"] == sorted(TRAIN_PIDS)
    for part in PARTS:
        state = load_file(str(trained.set / weights[part][0]))
        assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())


def test_training_logs_and_state(trained):
    work = trained.work("generator")
    assert log_steps(work) == [2, 4]
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["l1"]) for r in records)
    assert all(0.0 <= r["identity_share"] <= 1.0 for r in records)  # --sample-every 2
    assert sorted(p.name for p in (work / "samples").iterdir()) == ["step-00000002.png",
                                                                   "step-00000004.png"]
    # 4 identities x 4 noises at 64x32
    assert Image.open(work / "samples" / "step-00000004.png").size == (4 * W, 4 * H)
    assert json.loads((work / "latest.json").read_text())["step"] == 4
    assert sorted(p.name for p in work.glob("step-*")) == ["step-00000002", "step-00000004"]
    assert (work / "config.json").is_file()
    for part, steps in (("prior", 4), ("img2id", 2), ("img2noise", 2)):
        assert json.loads((trained.work(part) / "latest.json").read_text())["step"] == steps
        assert log_steps(trained.work(part))[-1] == steps


def test_prior_normalisation_comes_from_the_table(model):
    prior, table = model.networks["prior"], model.networks["generator"].identities.weight
    assert torch.allclose(prior.mean, table.mean(0), atol=1e-3)
    assert torch.allclose(prior.std, table.std(0), rtol=1e-2)


def test_generator_resume_continues_instead_of_restarting(trained, tmp_path, capsys):
    # Work on copies: the shared set must stay as trained.
    out, work = tmp_path / "set", tmp_path / "work"
    shutil.copytree(trained.set, out)
    shutil.copytree(trained.work("generator"), work)
    before = ckpt.sha256(out / ckpt.part_files(out, "generator")[0])

    # The same --steps again: nothing more to do.
    assert cli(*generator_args(trained.train, out, work, trained.config, steps=4)) == 0
    assert "already trained for 4 steps" in capsys.readouterr().out
    assert log_steps(work) == [2, 4]
    assert ckpt.sha256(out / ckpt.part_files(out, "generator")[0]) == before
    ckpt.verify(out)

    # More steps: resumes at 4, logs only 6.
    assert cli(*generator_args(trained.train, out, work, trained.config, steps=6)) == 0
    assert "resuming generator from step 4" in capsys.readouterr().out
    assert log_steps(work) == [2, 4, 6]
    assert json.loads((work / "latest.json").read_text())["step"] == 6
    assert sorted(p.name for p in work.glob("step-*")) == ["step-00000004", "step-00000006"]
    assert ckpt.sha256(out / ckpt.part_files(out, "generator")[0]) != before
    ckpt.verify(out)  # the manifest was refreshed with the new generator
    GenReID.load(out, device="cpu")  # the other parts still fit

    # A run of 6 straight steps reaches the very same state: resuming restored the weights,
    # the EMA, the Adam moments and the random streams (batches, flips, times, noise).
    straight = tmp_path / "straight-work"
    assert cli(*generator_args(trained.train, tmp_path / "straight", straight, trained.config,
                               steps=6)) == 0
    atol = 1e-4 if torch.cuda.is_available() else 0.0  # CPU kernels are deterministic
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(work / "step-00000006" / f"{name}.safetensors"))
        b = load_file(str(straight / "step-00000006" / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=atol), (name, k)


def test_time_limit_saves_where_it_stops_and_the_same_command_goes_on(trained, tmp_path, capsys):
    """--time-limit 0: one step, saved (off the --save-every grid) and exported; the same
    command without the limit resumes there and ends in the state of an uninterrupted run."""
    out, work = tmp_path / "set", tmp_path / "work"
    args = generator_args(trained.train, out, work, trained.config, steps=4)
    assert cli(*args, "--time-limit", 0) == 0
    assert "--time-limit of 0 s reached at step 1; saved" in capsys.readouterr().out
    assert log_steps(work) == [1]
    assert json.loads((work / "latest.json").read_text())["step"] == 1
    ckpt.verify(out)
    GenReID.load(out, device="cpu")  # the exported set is complete
    assert cli(*args) == 0
    assert "resuming generator from step 1" in capsys.readouterr().out
    assert log_steps(work) == [1, 2, 4]
    straight = tmp_path / "straight-work"
    assert cli(*generator_args(trained.train, tmp_path / "straight", straight, trained.config,
                               steps=4)) == 0
    atol = 1e-4 if torch.cuda.is_available() else 0.0
    for name in ("model", "ema", "optimizer"):
        a = load_file(str(work / "step-00000004" / f"{name}.safetensors"))
        b = load_file(str(straight / "step-00000004" / f"{name}.safetensors"))
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=atol), (name, k)


def test_keep_every_keeps_verified_copies_that_average_into_the_set(trained, tmp_path, capsys):
    out, work = tmp_path / "set", tmp_path / "work"
    args = generator_args(trained.train, out, work, trained.config, steps=4)
    assert cli(*args, "--keep-every", 3) == 2  # not a step at which the run saves
    assert "must be a multiple of --save-every 2" in capsys.readouterr().err
    assert not work.exists()
    assert cli(*args, "--keep-every", 2) == 0
    kept = sorted((work / "kept").iterdir())
    assert [k.name for k in kept] == ["set-00000002", "set-00000004"]  # nothing half-copied
    for k in kept:
        ckpt.verify(k)
    assert ckpt.read_manifest(kept[-1]) == ckpt.read_manifest(out)  # the last is the export
    assert ckpt.read_manifest(kept[0]) != ckpt.read_manifest(out)
    # The kept copies are what `replace --from` averages.
    mean = tmp_path / "mean"
    shutil.copytree(out, mean)
    assert cli("replace", "--checkpoint", mean, "--from", *kept, "--parts", "generator") == 0
    ckpt.verify(mean)
    assert ckpt.part_files(mean, "generator") not in (ckpt.part_files(k, "generator") for k in kept)


def test_decay_ends_the_run_at_an_annealed_rate(trained, tmp_path, capsys):
    out, work = tmp_path / "set", tmp_path / "work"
    args = generator_args(trained.train, out, work, trained.config, steps=4)
    assert cli(*args, "--decay", 5) == 2
    assert "--decay 5 must be between 0 and --steps 4" in capsys.readouterr().err
    assert cli(*args, "--lr", "1e-3", "--decay", 4) == 0
    state = json.loads((work / "step-00000004" / "state.json").read_text())
    # The last of 4 steps ran at 0.5 * (1 + cos(3/4 pi)) of --lr, for both parameter groups.
    rates = [g["lr"] / g["base_lr"] for g in state["optimizer"]["param_groups"]]
    assert rates == pytest.approx([0.5 * (1 + math.cos(0.75 * math.pi))] * 2)


def test_decay_seconds_anneals_towards_the_time_limit(trained, tmp_path, capsys):
    out, work = tmp_path / "set", tmp_path / "work"
    args = generator_args(trained.train, out, work, trained.config, steps=100_000)
    assert cli(*args, "--decay-seconds", 2) == 2
    assert "--decay-seconds 2 needs --time-limit" in capsys.readouterr().err
    assert cli(*args, "--decay-seconds", 2, "--time-limit", 2, "--decay", 5) == 2
    assert "choose one" in capsys.readouterr().err
    assert cli(*args, "--lr", "1e-3", "--decay-seconds", 4, "--time-limit", 4) == 0
    saved = sorted(work.glob("step-*"))[-1]
    state = json.loads((saved / "state.json").read_text())
    # The last step ran within one step's time of the limit: the rate is near 0, not --lr.
    rates = [g["lr"] / g["base_lr"] for g in state["optimizer"]["param_groups"]]
    assert rates[0] == rates[1] and 0.0 <= rates[0] < 0.5


def test_resume_keeps_the_started_architecture(trained, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(trained.work("generator"), work)
    other = tiny_config()
    other.generator.unet.widths = [8, 24]
    other.save(tmp_path / "other.json")
    assert cli(*generator_args(trained.train, tmp_path / "set", work, tmp_path / "other.json",
                               steps=4)) == 0
    assert ckpt.read_config(tmp_path / "set").generator.unet.widths == [8, 16]


def test_pack_then_train_from_the_pack(trained, tmp_path, capsys):
    pack = tmp_path / "train.npz"
    assert cli("pack", "--data", trained.train, "--out", pack) == 0
    assert "packed 16 images" in capsys.readouterr().out
    out = tmp_path / "set"
    assert cli("train", "generator", "--data", pack, "--out", out, "--config", trained.config,
               "--steps", 2, "--batch-size", 4, "--save-every", 2,
               "--work-dir", tmp_path / "work") == 0
    ckpt.verify(out)
    identities = json.loads((out / "identities.json").read_text())
    assert identities["pids"] == sorted(TRAIN_PIDS)
    assert identities["source"] == str(pack)
    assert GenReID.load(out, device="cpu").num_identities == len(TRAIN_PIDS)
    # the pack's images are JPEG re-encoded: statistics close to the folder's
    np.testing.assert_allclose(ckpt.read_config(out).mean, ckpt.read_config(trained.set).mean,
                               atol=0.01)


# ---------------------------------------------------------------------------------- API

def test_load_and_properties(model):
    assert all(model.has(p) for p in PARTS)
    assert model.image_size == (H, W)
    assert model.id_dim == ID_DIM
    assert model.num_identities == len(TRAIN_PIDS)
    assert model.pids.tolist() == sorted(TRAIN_PIDS)
    assert model.row_of_pid(7) == sorted(TRAIN_PIDS).index(7)
    with pytest.raises(ValueError, match="person id 3"):
        model.row_of_pid(3)
    assert not any(p.requires_grad for net in model.networks.values() for p in net.parameters())
    assert not any(net.training for net in model.networks.values())


def test_table_identities(model):
    ids = model.table_identities([0, 3, 1])
    assert ids.shape == (3, ID_DIM) and ids.dtype == np.float32
    table = model.networks["generator"].identities.weight.numpy()
    np.testing.assert_array_equal(ids, table[[0, 3, 1]])


def test_generate_is_deterministic_with_right_shapes(model):
    ids = model.table_identities([0, 1, 2])
    noise = model.noise(3, seed=7)
    assert noise.shape == (3, 3, H, W)
    np.testing.assert_array_equal(noise, model.noise(3, seed=7))
    assert not np.array_equal(noise, model.noise(3, seed=8))
    a = model.generate(ids, noise)
    b = model.generate(ids, noise)
    assert a.shape == (3, H, W, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])  # different noises, different pictures
    # the number of sampler steps is passed through: one network call per step
    calls = []
    hook = model.networks["generator"].register_forward_hook(lambda *args: calls.append(1))
    try:
        c = model.generate(ids, noise, steps=3)
        model.generate(ids, noise)
    finally:
        hook.remove()
    assert c.shape == a.shape and len(calls) == 3 + model.config.schedule.steps


def test_generate_does_not_depend_on_the_batch(model):
    ids, noise = model.table_identities([0, 1, 2, 3]), model.noise(4, seed=1)
    together = model.generate(ids, noise).astype(int)
    model.batch_size = 1
    try:
        alone = model.generate(ids, noise).astype(int)
    finally:
        model.batch_size = 64
    assert np.abs(together - alone).max() <= 1  # float rounding at most


def test_generate_grid_pairs_every_identity_with_every_noise(model):
    ids = model.table_identities([0, 1, 2])
    noises = model.noise(2, seed=3)
    grid = model.generate_grid(ids, noises)
    assert grid.shape == (3, 2, H, W, 3) and grid.dtype == np.uint8
    for i in range(3):
        for n in range(2):
            single = model.generate(ids[i:i + 1], noises[n:n + 1])[0]
            assert np.abs(grid[i, n].astype(int) - single.astype(int)).max() <= 1, (i, n)


def test_sample_identities_reproducible(model):
    a = model.sample_identities(5, seed=0)
    assert a.shape == (5, ID_DIM) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, model.sample_identities(5, seed=0))
    assert not np.allclose(a, model.sample_identities(5, seed=1))
    assert len(np.unique(a.round(6), axis=0)) == 5
    # sampled identities can be generated from
    assert model.generate(a[:2], model.noise(2, seed=0)).shape == (2, H, W, 3)


def test_encode_shapes_and_picture_kinds(model, pictures):
    v = model.encode(pictures)
    assert v.shape == (3, ID_DIM) and v.dtype == np.float32 and np.isfinite(v).all()
    np.testing.assert_allclose(model.encode(pictures), v, atol=1e-6)
    # a list of PIL images of the model's size is the same as the array
    pil = [Image.fromarray(p) for p in pictures]
    np.testing.assert_allclose(model.encode(pil), v, atol=1e-5)
    # other sizes and grayscale are resized / converted
    big = pil[0].resize((2 * W, 2 * H))
    gray = pil[1].convert("L").resize((20, 50))
    w = model.encode([big, gray, pictures[2]])
    assert w.shape == (3, ID_DIM) and np.isfinite(w).all()
    np.testing.assert_allclose(w[2], v[2], atol=1e-5)
    assert model.encode(pil[0]).shape == (1, ID_DIM)  # one picture alone
    flip = model.encode(pictures, flip=True)
    mirrored = model.encode(pictures[:, :, ::-1].copy())
    np.testing.assert_allclose(flip, 0.5 * (v + mirrored), atol=1e-5)
    model.config.img2id.flip = True  # the set's own choice, when the call makes none
    try:
        np.testing.assert_array_equal(model.encode(pictures), flip)
        np.testing.assert_allclose(model.encode(pictures, flip=False), v, atol=1e-5)
    finally:
        model.config.img2id.flip = False
    with pytest.raises(ValueError):
        model.encode([])


def test_decompose(model, pictures):
    d = model.decompose(pictures)
    assert d.identity.shape == (3, ID_DIM)
    assert d.noise.shape == (3, 3, H, W)
    assert d.reconstruction.shape == (3, H, W, 3) and d.reconstruction.dtype == np.uint8
    assert d.error.shape == (3,) and ((d.error >= 0) & (d.error <= 1)).all()
    np.testing.assert_array_equal(d.image, pictures)
    expected = np.abs(d.reconstruction.astype(float) - pictures.astype(float)).mean((1, 2, 3)) / 255
    np.testing.assert_allclose(d.error, expected, atol=1e-6)
    # the parts agree with the other methods
    np.testing.assert_allclose(d.identity, model.encode(pictures), atol=1e-5)
    regenerated = model.generate(d.identity, d.noise).astype(int)
    assert np.abs(regenerated - d.reconstruction.astype(int)).max() <= 1


def test_noise_picture_golden_values(model):
    noise = np.array([0.0, -2.5, 2.5, -10.0, 10.0, 1.25], dtype=np.float32)
    pic = GenReID.noise_picture(np.broadcast_to(noise.reshape(1, 1, 1, 6), (2, 3, 1, 6)).copy())
    assert pic.shape == (2, 1, 6, 3) and pic.dtype == np.uint8
    # (n + 2.5) / 5 * 255, clipped: 127.5 -> 128 (round half to even), 0, 255, 0, 255, 191.25 -> 191
    assert pic[0, 0, :, 0].tolist() == [128, 0, 255, 0, 255, 191]
    real = GenReID.noise_picture(model.noise(2, seed=0))
    assert real.shape == (2, H, W, 3) and real.dtype == np.uint8
    assert real.min() == 0 and real.max() == 255  # Gaussian tails reach the clip at 2.5


def test_bad_inputs_raise_value_error(model):
    noise = model.noise(1, seed=0)
    with pytest.raises(ValueError, match="identities must have shape"):
        model.generate(np.zeros((1, ID_DIM + 1)), noise)
    with pytest.raises(ValueError, match="identities must have shape"):
        model.generate(np.zeros(ID_DIM), noise)
    with pytest.raises(ValueError, match="NaN"):
        model.generate(np.full((1, ID_DIM), np.nan), noise)
    with pytest.raises(ValueError, match="NaN"):
        model.generate_grid(np.full((1, ID_DIM), np.inf), noise)
    with pytest.raises(ValueError, match="noise must have shape"):
        model.generate(np.zeros((1, ID_DIM)), np.zeros((1, 3, H, W + 1)))
    with pytest.raises(ValueError, match="noise must have shape"):
        model.generate(np.zeros((2, ID_DIM)), noise)
    for rows in ([len(TRAIN_PIDS)], [-1], [0, 99]):
        with pytest.raises(ValueError, match="identity rows"):
            model.table_identities(rows)


# ------------------------------------------------------------------------- eval / sample

def test_eval_json_and_features(trained, tmp_path, capsys):
    features = tmp_path / "f.npz"
    assert cli("eval", "--data", trained.market, "--checkpoint", trained.set, "--json",
               "--features", features, "--device", "cpu") == 0
    out = capsys.readouterr().out.strip()
    result = json.loads(out)  # one JSON object and nothing else
    assert set(result) == {"standard", "paper", "num_query", "num_gallery", "precision", "index"}
    assert result["precision"] in ("bf16", "fp32")
    assert result["index"]["kind"] == "exact" and result["index"]["ranked"] == result["num_gallery"]
    for protocol in ("standard", "paper"):
        metrics = result[protocol]
        assert set(metrics) == {"mAP", "rank1", "rank5", "rank10", "rank20"}
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in metrics.values())
        assert metrics["rank1"] <= metrics["rank5"] <= metrics["rank10"] <= metrics["rank20"]
    # 8 gallery images, 3 of them true matches at most: rank 20 always finds one
    assert result["standard"]["rank20"] == result["paper"]["rank20"] == 1.0
    assert result["num_query"] == NUM_QUERY
    assert result["num_gallery"] == NUM_GALLERY
    with np.load(features) as z:
        assert set(z.files) == {"query_features", "gallery_features", "query_pids",
                                "gallery_pids", "query_camids", "gallery_camids"}
        assert z["query_features"].shape == (NUM_QUERY, ID_DIM)
        assert z["gallery_features"].shape == (NUM_GALLERY, ID_DIM)
        assert len(z["query_pids"]) == len(z["query_camids"]) == NUM_QUERY
        assert len(z["gallery_pids"]) == len(z["gallery_camids"]) == NUM_GALLERY
        assert sorted(z["query_pids"].tolist()) == sorted(TEST_PIDS)
        assert -1 not in z["gallery_pids"].tolist() and 0 in z["gallery_pids"].tolist()
        # the features are Img2ID's, so metrics can be recomputed from them
        from core.metrics import euclidean_distances, retrieval_summary
        again = retrieval_summary(euclidean_distances(z["query_features"], z["gallery_features"]),
                                  z["query_pids"], z["gallery_pids"], z["query_camids"],
                                  z["gallery_camids"])
    for protocol in ("standard", "paper"):
        assert again[protocol] == pytest.approx(result[protocol])


def test_eval_rerank(trained, capsys):
    """--rerank ranks the whole gallery by k-reciprocal distances (fewer pictures than k1 here);
    it refuses an approximate index."""
    assert cli("eval", "--data", trained.market, "--checkpoint", trained.set, "--json",
               "--rerank", "--device", "cpu") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rerank"] == {"method": "k-reciprocal", "k1": 20, "k2": 6, "lambda": 0.3}
    assert 0.0 < result["standard"]["mAP"] <= 1.0 and result["standard"]["rank20"] == 1.0
    assert cli("eval", "--data", trained.market, "--checkpoint", trained.set, "--rerank",
               "--index", "hnsw", "--device", "cpu") == 2
    assert "cannot use the 'hnsw' index" in capsys.readouterr().err


def test_eval_readable_table(trained, capsys):
    assert cli("eval", "--data", trained.market, "--checkpoint", trained.set, "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert f"queries {NUM_QUERY}, gallery {NUM_GALLERY}" in out
    lines = out.strip().splitlines()
    assert lines[-2].startswith("standard") and lines[-1].startswith("paper")
    assert lines[-1].count("%") == 5
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


@pytest.mark.parametrize("scale", [2, 1])
def test_sample_writes_a_grid_of_the_right_size(trained, tmp_path, capsys, scale):
    out = tmp_path / "grid.png"
    assert cli("sample", "--checkpoint", trained.set, "--out", out, "--rows", 2, "--noises", 3,
               "--scale", scale, "--device", "cpu") == 0
    picture = Image.open(out)
    assert picture.size == (3 * W * scale, 2 * H * scale)  # (width, height)
    assert picture.mode == "RGB"
    assert "2 identities x 3 noises" in capsys.readouterr().out


def test_sample_with_ids_and_prior(trained, tmp_path):
    out = tmp_path / "grid.png"
    assert cli("sample", "--checkpoint", trained.set, "--out", out, "--ids", "3,1", "--prior", 2,
               "--noises", 2, "--scale", 1, "--device", "cpu") == 0
    assert Image.open(out).size == (2 * W, 4 * H)  # 2 table rows + 2 prior identities
    # the first row is table row 3 over noises of seed 0
    model = GenReID.load(trained.set, device="cpu")
    expected = model.generate_grid(model.table_identities([3]), model.noise(2, seed=0))[0]
    row = np.asarray(Image.open(out))[:H]
    assert np.abs(row.astype(int) - np.concatenate(list(expected), axis=1).astype(int)).max() <= 1


def test_decompose_measures_the_reconstruction_and_draws_it(trained, tmp_path, capsys):
    # Compared with the API in the command's precision: on a bfloat16 CPU (AMX) the default
    # "auto" would differ from the command's fp32 by more than rounding.
    model = GenReID.load(trained.set, device="cpu", precision="fp32")
    capsys.readouterr()
    out = tmp_path / "decomposition.png"
    gallery = trained.market / "bounding_box_test"
    assert cli("decompose", "--checkpoint", trained.set, "--data", gallery, "--count", 5,
               "--show", 3, "--out", out, "--scale", 1, "--precision", "fp32",
               "--device", "cpu") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pictures"] == 5 and report["precision"] == "fp32"
    # The figure: the pictures, their noise, their regeneration, one column each.
    figure = np.asarray(Image.open(out))
    assert figure.shape == (3 * H, 3 * W, 3)
    # The printed error is the API's over the same random draw of seed 0.
    split = load_split(gallery, model.image_size)
    pick = np.random.default_rng(0).choice(len(split), 5, replace=False)
    parts = model.decompose(split.images[pick])
    assert abs(report["reconstruction_error"] - float(parts.error.mean())) < 1e-4
    assert np.array_equal(figure[:H], np.concatenate(list(parts.image[:3]), axis=1))
    assert np.abs(figure[2 * H:].astype(int)
                  - np.concatenate(list(parts.reconstruction[:3]), axis=1).astype(int)).max() <= 1
    # More pictures than the folder holds is a clean error, and nothing is written.
    assert cli("decompose", "--checkpoint", trained.set, "--data", gallery, "--count", 10**6,
               "--out", tmp_path / "none.png", "--device", "cpu") == 2
    assert "holds only" in capsys.readouterr().err
    assert not (tmp_path / "none.png").exists()


# -------------------------------------------------------------------------------- errors

def test_eval_without_query_folder_is_a_clean_error(trained, tmp_path, capsys):
    root = tmp_path / "noquery"
    shutil.copytree(trained.market, root)
    shutil.rmtree(root / "query")
    assert cli("eval", "--data", root, "--checkpoint", trained.set, "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "query" in err and str(root) in err
    assert "Traceback" not in err


def test_train_prior_without_checkpoint_is_a_clean_error(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert cli("train", "prior", "--checkpoint", missing, "--steps", 1,
               "--work-dir", tmp_path / "work") == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "work").exists()


def test_sample_with_bad_rows_is_a_clean_error(trained, tmp_path, capsys):
    assert cli("sample", "--checkpoint", trained.set, "--out", tmp_path / "g.png",
               "--ids", "0,99", "--device", "cpu") == 2
    assert "identity rows" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_corrupted_weights_make_load_fail(trained, tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(trained.set, folder)
    path = folder / ckpt.part_files(folder, "img2id")[0]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=path.name):
        GenReID.load(folder, device="cpu")


def test_missing_part_is_absent_then_named(trained, tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(trained.set, folder)
    (folder / ckpt.part_files(folder, "img2noise")[0]).unlink()
    ckpt.ModelSetWriter(folder).commit()
    partial = GenReID.load(folder, device="cpu")
    assert partial.has("img2id") and not partial.has("img2noise")
    with pytest.raises(ckpt.CheckpointError, match="img2noise"):
        partial.decompose(np.zeros((1, H, W, 3), np.uint8))


def test_img2id_with_a_generated_bank_is_cached_and_resumable(trained, tmp_path):
    work = tmp_path / "work"
    args = ["train", "img2id", "--checkpoint", str(trained.set), "--work-dir", str(work),
            "--batch-size", "4", "--save-every", "2", "--bank", "6"]
    assert cli(*args, "--steps", "2") == 0
    banks = list(tmp_path.glob("bank-6-*.safetensors"))  # shared by the networks of a set
    assert len(banks) == 1
    bank = load_file(str(banks[0]))
    assert bank["images"].shape == (6, 3, 64, 32) and bank["identities"].shape[0] == 6
    before = banks[0].stat().st_mtime_ns
    assert cli(*args, "--steps", "4") == 0  # resumes, re-using the bank rather than regenerating
    assert banks[0].stat().st_mtime_ns == before
    assert json.loads((work / "latest.json").read_text())["step"] == 4
    # Augmented (shifts, erasing) on the same bank.
    assert cli(*args[:5], str(tmp_path / "work-aug"), *args[6:], "--steps", "2", "--augment") == 0
    assert json.loads((tmp_path / "work-aug" / "latest.json").read_text())["step"] == 2


def test_img2id_early_stopping_on_held_out_persons(trained, tmp_path):
    """--val-persons 2: two of the four training persons leave the real batches; each save
    logs their retrieval mAP and the set holds the weights of the best save."""
    from core.models import Img2ID

    out, work = tmp_path / "set", tmp_path / "work"
    shutil.copytree(trained.set, out)
    args = ["train", "img2id", "--checkpoint", out, "--data", trained.train, "--work-dir", work,
            "--real-fraction", 0.5, "--batch-size", 4, "--save-every", 2, "--steps", 4,
            "--lr", 3e-3, "--val-persons", 2]
    assert cli(*args) == 0
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    scores = [r["val_map"] for r in records]
    assert [r["step"] for r in records] == [2, 4] and all(0.0 < v <= 1.0 for v in scores)
    best = json.loads((work / "best.json").read_text())
    assert best["step"] == [2, 4][int(np.argmax(scores))]
    assert records[-1]["exported_step"] == best["step"]
    config = ckpt.read_config(out)
    exported = ckpt.load_weights(out, "img2id", Img2ID(config.img2id, tuple(config.image_size)))
    ema = load_file(str(work / f"step-{best['step']:08d}" / "ema.safetensors"))
    for k, v in exported.state_dict().items():
        assert torch.equal(v.float(), ema[f"module.{k}"].half().float()), k
    # Too many held-out persons, or none to hold out without --data: a message, exit 2.
    assert cli(*args[:-1], 4) == 2
    assert cli("train", "img2id", "--checkpoint", out, "--work-dir", tmp_path / "w2",
               "--val-persons", 2, "--steps", 2) == 2


def test_held_out_persons_never_reach_the_batches(trained):
    from core.batches import TrainingImages
    from core.data import load_split
    from core.images import Normalizer

    split = load_split(trained.train)
    images = TrainingImages(split, Normalizer([0.5] * 3, [0.25] * 3, torch.device("cpu")),
                            torch.device("cpu"))
    held = images.hold_out(2, seed=0)
    held_labels = set(images.labels[held].tolist())
    assert len(held_labels) == 2 and len(held) == 8  # 2 persons x 2 cameras x 2 crops
    rng = torch.Generator().manual_seed(0)
    drawn = torch.cat([images.batch(16, rng)[1] for _ in range(20)])
    assert not held_labels & set(drawn.tolist())
    assert len(set(drawn.tolist())) == 2


def test_img2noise_noise_regression_on_generated_images(trained, tmp_path):
    work = tmp_path / "img2noise"
    args = ["train", "img2noise", "--checkpoint", str(trained.set), "--work-dir", str(work),
            "--batch-size", "4", "--steps", "2", "--save-every", "2", "--generated-fraction", "1",
            "--bank", "4"]
    assert cli(*args, "--recon-weight", "0", "--noise-weight", "1") == 0
    record = json.loads((work / "log.jsonl").read_text().splitlines()[-1])
    assert "noise" in record and "recon" not in record
    # The noise loss needs generated images, and some loss must be on.
    assert cli(*args[:-4], "--noise-weight", "1", "--data", str(trained.train)) == 2
    assert cli(*args, "--recon-weight", "0") == 2


def test_inverters_warm_start_from_another_sets_weights(trained, tmp_path, capsys):
    from core.models import Img2ID, Img2Noise

    config = ckpt.read_config(trained.set)
    nets = {"img2noise": lambda: Img2Noise(config.img2noise),
            "img2id": lambda: Img2ID(config.img2id, tuple(config.image_size))}
    extra = {"img2noise": ["--generated-fraction", 1, "--bank", 4, "--recon-weight", 0,
                           "--noise-weight", 1], "img2id": []}

    def trained_weights(folder, part):
        net = ckpt.load_weights(folder, part, nets[part]())
        return {k: v.detach().clone() for k, v in net.named_parameters()}

    for part in nets:
        shipped = trained_weights(trained.set, part)
        # At learning rate 0 the exported network is exactly where training began.
        for init, same in ((["--init-from", trained.set], True), ([], False)):
            out = tmp_path / f"{part}-{same}"
            shutil.copytree(trained.set, out)
            assert cli("train", part, "--checkpoint", out, "--work-dir", tmp_path / f"w-{part}-{same}",
                       "--steps", 1, "--batch-size", 4, "--lr", 0, *extra[part], *init) == 0
            got = trained_weights(out, part)
            assert all(torch.equal(got[k], shipped[k]) for k in shipped) == same, (part, same)
    # A set without the part is a message naming it, not a stack trace.
    bare = tmp_path / "bare"
    shutil.copytree(trained.set, bare)
    (bare / ckpt.part_files(bare, "img2noise")[0]).unlink()
    ckpt.ModelSetWriter(bare).commit()
    assert cli("train", "img2noise", "--checkpoint", tmp_path / "img2noise-True", "--steps", 1,
               "--work-dir", tmp_path / "w-bare", *extra["img2noise"], "--init-from", bare) == 2
    assert "has no img2noise" in capsys.readouterr().err


def test_inverter_resume_does_not_reload_the_warm_start(trained, tmp_path, capsys):
    out, work = tmp_path / "set", tmp_path / "work"
    shutil.copytree(trained.set, out)
    args = ["train", "img2id", "--checkpoint", out, "--work-dir", work, "--init-from",
            trained.set, "--batch-size", 4, "--lr", 0, "--save-every", 1]
    assert cli(*args, "--steps", 1) == 0
    assert "img2id: warm start from" in capsys.readouterr().out
    assert cli(*args, "--steps", 2) == 0
    said = capsys.readouterr().out
    assert "resuming img2id from step 1" in said and "is not loaded" in said
    assert "warm start" not in said


def test_generator_guidance_option_is_stored_in_the_set(trained, tmp_path):
    out, work = tmp_path / "set", tmp_path / "work"
    shutil.copytree(trained.set, out)
    shutil.copytree(trained.work("generator"), work)
    # Same steps: nothing trains, the set is re-exported with the new sampling weight.
    assert cli(*generator_args(trained.train, out, work, trained.config, steps=4),
               "--guidance", "2.5") == 0
    assert GenReID.load(out).config.generator.guidance == 2.5


def test_baseline_trains_and_evaluates_like_a_model_set(trained, tmp_path, capsys):
    out = tmp_path / "baseline"
    assert cli("train", "baseline", "--data", trained.train, "--out", out, "--config", trained.config,
               "--steps", 3, "--batch-size", 8, "--instances", 2, "--save-every", 3,
               "--work-dir", tmp_path / "work") == 0
    record = json.loads((tmp_path / "work" / "log.jsonl").read_text().splitlines()[-1])
    assert {"ce", "triplet", "accuracy"} <= set(record)
    model = GenReID.load(out)
    assert model.has("img2id") and not model.has("generator")
    capsys.readouterr()
    assert cli("eval", "--data", trained.market, "--checkpoint", out, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["standard"]["mAP"] <= 1.0
    # --augment trains on shifted, partly erased pictures: other weights from the same seed.
    assert cli("train", "baseline", "--data", trained.train, "--out", tmp_path / "augmented",
               "--config", trained.config, "--steps", 3, "--batch-size", 8, "--instances", 2,
               "--save-every", 3, "--work-dir", tmp_path / "work-aug", "--augment") == 0
    plain = load_file(str(tmp_path / "work" / "step-00000003" / "ema.safetensors"))
    augmented = load_file(str(tmp_path / "work-aug" / "step-00000003" / "ema.safetensors"))
    assert any(not torch.equal(plain[k], augmented[k]) for k in plain)
    # --bnneck: the same run re-exported (nothing left to train) with the neck folded into the
    # encoder, compared by cosine: the set's features are the trained neck's outputs.
    from core.baseline import BaselineNet
    from core.config import ModelSetConfig
    from core.models import Img2ID
    assert cli("train", "baseline", "--data", trained.train, "--out", out, "--config", trained.config,
               "--steps", 3, "--batch-size", 8, "--instances", 2, "--save-every", 3,
               "--work-dir", tmp_path / "work", "--bnneck") == 0
    necked = GenReID.load(out, device="cpu", precision="fp32")
    assert necked.retrieval_metric == "cosine"
    config = ModelSetConfig.load(trained.config)
    net = BaselineNet(Img2ID(config.img2id, tuple(config.image_size)), 4)
    net.load_state_dict({k[len("module."):]: v for k, v in load_file(
        str(tmp_path / "work" / "step-00000003" / "ema.safetensors")).items()
        if k.startswith("module.")})
    pictures = np.random.default_rng(0).integers(0, 256, (3, 64, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = net.eval().neck(net.encoder(necked.normalizer.encode(torch.from_numpy(pictures))))
    np.testing.assert_allclose(necked.encode(pictures, flip=False), expected.numpy(), atol=2e-2)
    # A batch that does not split into identities of --instances images is refused clearly.
    assert cli("train", "baseline", "--data", trained.train, "--out", out, "--batch-size", 7,
               "--instances", 2, "--work-dir", tmp_path / "work2") == 2


def test_neck_folds_exactly_into_the_encoder():
    from core.baseline import BaselineNet
    from core.config import ModelSetConfig
    from core.models import Img2ID

    config = ModelSetConfig()
    net = BaselineNet(Img2ID(config.img2id, (64, 32)), 10)
    with torch.no_grad():  # a neck far from the identity
        net.neck.running_mean.uniform_(-1, 1)
        net.neck.running_var.uniform_(0.1, 4)
        net.neck.weight.uniform_(0.5, 2)
        net.neck.bias.uniform_(-1, 1)
        x = torch.randn(4, 3, 64, 32)
        raw = net.eval().encoder(x)
        expected = net.neck(raw)
        folded = net.neck_encoder()(x)
    assert (raw - expected).abs().max() > 0.1
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-5)


def test_batch_hard_triplet_by_hand():
    import torch

    from core.baseline import batch_hard_triplet

    f = torch.tensor([[0.0], [1.0], [3.0], [3.5]])  # labels 0, 0, 1, 1
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: hardest positive 1.0, nearest negative 3.0 -> relu(1 - 3 + 0.5) = 0
    # anchor 1: positive 1.0, negative 2.0 -> relu(1 - 2 + 0.5) = 0
    # anchor 2: positive 0.5, negative 2.0 -> 0;  anchor 3: positive 0.5, negative 2.5 -> 0
    assert batch_hard_triplet(f, labels, 0.5).item() == 0.0
    # margin 1.5: anchor 0: 1 - 3 + 1.5 < 0 -> 0; anchor 1: 1 - 2 + 1.5 = 0.5;
    # anchor 2: 0.5 - 2 + 1.5 = 0; anchor 3: 0.5 - 2.5 + 1.5 < 0 -> 0; mean 0.125
    assert abs(batch_hard_triplet(f, labels, 1.5).item() - 0.125) < 1e-6


def test_diagnose_reports_identity_shares(trained, capsys):
    capsys.readouterr()
    assert cli("diagnose", "--checkpoint", trained.set, "--data", trained.train, "--guidance", "0,2",
               "--identities", 3, "--noises", 2, "--per-identity", 4, "--no-recognisability") == 0
    out = json.loads(capsys.readouterr().out)
    assert "recognisability" not in out
    shares = out["identity_share"]
    assert set(shares) == {"real", "generated_guidance_0", "generated_guidance_2"}
    assert all(0.0 <= v <= 1.0 for v in shares.values())
    # The fixture's identities are flat colours: identity explains most of the real variance.
    assert shares["real"] > 0.5
    assert cli("diagnose", "--checkpoint", trained.set, "--guidance", "x") == 2


def test_diagnose_recognisability_judges_pictures_by_an_outside_encoder(trained, capsys,
                                                                        private_cache, monkeypatch):
    # The set's own img2id stands in for an encoder trained on real crops.
    capsys.readouterr()
    assert cli("diagnose", "--checkpoint", trained.set, "--data", trained.train, "--guidance", "0,2",
               "--identities", 2, "--noises", 2, "--per-identity", 4, "--encoder", trained.set,
               "--persons", 3, "--pictures", 2) == 0
    rec = json.loads(capsys.readouterr().out)["recognisability"]
    assert len(list((private_cache / "diagnose").glob("real-features-*.npz"))) == 1
    assert rec["persons"] == 3 and rec["pictures_per_person"] == 2 and rec["real_crops"] == 16
    assert rec["encoder"] == str(trained.set)  # outside the working folder: as given
    for key in ("real", "generated_guidance_0", "generated_guidance_2"):
        assert 0.0 <= rec[key]["mAP"] <= 1.0 and 0.0 <= rec[key]["rank1"] <= 1.0
        assert rec[key]["frechet"] >= -1e-6
    # Without --data, the split the set names in identities.json is used; here it is gone.
    elsewhere = trained.root / "moved-set"
    shutil.copytree(trained.set, elsewhere, dirs_exist_ok=True)
    identities = json.loads((elsewhere / "identities.json").read_text())
    assert identities["source"] == str(trained.train)
    (elsewhere / "identities.json").write_text(json.dumps({**identities, "source": "gone/x.npz"}))
    (elsewhere / "manifest.json").write_text(json.dumps(
        {**json.loads((elsewhere / "manifest.json").read_text()),
         "identities.json": ckpt.sha256(elsewhere / "identities.json")}))
    capsys.readouterr()
    assert cli("diagnose", "--checkpoint", elsewhere, "--encoder", trained.set) == 2
    assert "--data" in capsys.readouterr().err
    # --save keeps the measure in the set, where the explorer reads it; the set still loads.
    assert load_diagnosis(elsewhere) is None
    monkeypatch.chdir(trained.root)  # the saved report names the encoder as typed from here
    assert cli("diagnose", "--checkpoint", elsewhere, "--data", trained.train, "--guidance", "2",
               "--identities", 2, "--noises", 2, "--per-identity", 4, "--encoder", trained.set,
               "--persons", 3, "--pictures", 2, "--save") == 0
    printed = json.loads(capsys.readouterr().out)
    saved = load_diagnosis(elsewhere)
    assert saved["recognisability"] == printed["recognisability"]
    assert saved["recognisability"]["encoder"] == "set"
    assert saved["command"].startswith("genreid diagnose --checkpoint")
    at2 = recognisability_at(saved, 2.0)
    assert at2["mAP"] == printed["recognisability"]["generated_guidance_2"]["mAP"]
    assert at2["real_mAP"] == printed["recognisability"]["real"]["mAP"]
    assert recognisability_at(saved, 0.0) is None  # not measured at that weight
    assert GenReID.load(elsewhere).has("generator")



def generator_weights(folder: Path) -> dict[str, torch.Tensor]:
    weights = {}
    for name in ckpt.part_files(folder, "generator"):
        weights.update(load_file(str(folder / name)))
    return weights


def test_generator_warm_start_begins_from_the_set(trained, tmp_path):
    out, work = tmp_path / "set", tmp_path / "work"
    # Learning rate 0: the warm-started run must export exactly the source set's generator.
    assert cli("train", "generator", "--data", trained.train, "--out", out, "--work-dir", work,
               "--init-from", trained.set, "--steps", 2, "--batch-size", 4, "--lr", 0,
               "--save-every", 2, "--null-fraction", 0.5, "--loss-weighting", "v") == 0
    source, warm = generator_weights(trained.set), generator_weights(out)
    assert source.keys() == warm.keys()
    # (BatchNorm's running statistics follow the batches even at rate 0; the weights may not.)
    learned = [k for k in source if not k.split(".")[-1].startswith(("running_", "num_batches"))]
    assert "identities.weight" in learned
    for k in learned:
        torch.testing.assert_close(warm[k], source[k])
    assert ckpt.read_config(out).generator == ckpt.read_config(trained.set).generator
    # With a learning rate it moves away from the set.
    assert cli("train", "generator", "--data", trained.train, "--out", tmp_path / "moved",
               "--work-dir", tmp_path / "work-moved", "--init-from", trained.set, "--steps", 2,
               "--batch-size", 4, "--lr", 1e-2, "--save-every", 2) == 0
    moved = generator_weights(tmp_path / "moved")
    assert any(not torch.equal(moved[k], source[k]) for k in learned)


def test_generator_killed_before_its_first_save_warm_starts_again(trained, tmp_path, capsys):
    out, work = tmp_path / "set", tmp_path / "work"
    args = ["train", "generator", "--data", trained.train, "--out", out, "--work-dir", work,
            "--init-from", trained.set, "--batch-size", 4, "--lr", 0, "--save-every", 2]
    assert cli(*args, "--steps", 2) == 0
    # Killed before the first save: config.json is written, no training state is.
    for state in work.glob("step-*"):
        shutil.rmtree(state)
    (work / "latest.json").unlink()
    shutil.rmtree(out)
    assert cli(*args, "--steps", 2) == 0
    source, warm = generator_weights(trained.set), generator_weights(out)
    learned = [k for k in source if not k.split(".")[-1].startswith(("running_", "num_batches"))]
    for k in learned:
        torch.testing.assert_close(warm[k], source[k])
    # With a saved state the run goes on from it and says the set is not loaded.
    capsys.readouterr()
    assert cli(*args, "--steps", 4) == 0
    said = capsys.readouterr().out
    assert "resuming generator from step 2" in said and "is not loaded" in said
    assert "warm start" not in said


def test_generator_warm_start_refuses_bad_input(trained, tmp_path, capsys):
    common = ["--steps", 2, "--batch-size", 4, "--save-every", 2]
    other = make_market_dataset(tmp_path / "other")
    for pid_file in list((other / "bounding_box_train").glob("0002_*")):
        pid_file.unlink()  # one person fewer: not the split the set was trained on
    cases = [
        (["--data", other / "bounding_box_train", "--init-from", trained.set], "other identities"),
        (["--data", trained.train, "--init-from", tmp_path / "nowhere"], "does not exist"),
        (["--data", trained.train, "--init-from", trained.set, "--config", trained.config],
         "drop --config"),
        (["--data", trained.train, "--null-fraction", 1], "--null-fraction"),
    ]
    for i, (args, message) in enumerate(cases):
        capsys.readouterr()
        assert cli("train", "generator", "--out", tmp_path / f"o{i}", "--work-dir",
                   tmp_path / f"w{i}", *args, *common) == 2
        assert message in capsys.readouterr().err
