"""The fast paths: the distilled preview network, bfloat16 inference, and `genreid bench`.

No timing assertions (the benchmark is its own command): these tests check that the fast
paths compute what the naive ones do, within the tolerances the README states, and that the
benchmark runs end to end and reports every figure it promises.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core import bench
from core.api import GenReID
from core.checkpoint import CheckpointError, read_config
from core.cli import main
from core.config import GeneratorConfig, ModelSetConfig, PreviewConfig, UNetConfig
from core.device import resolve_precision
from core.models import Generator
from core.pipeline import generate
from core.sampler import ddim_sample
from core.train import init_from

pytestmark = pytest.mark.usefixtures("one_thread")

# Stated tolerances of the optimised path against naive float32 (README, Performance).
PICTURE_TOLERANCE = 0.02  # mean |pixel difference| per picture, pixels in [0, 1]
IDENTITY_TOLERANCE = 0.02  # |v_bf16 - v_fp32| / |v_fp32|, on average


@pytest.fixture(scope="module")
def models(explorer_model_set):
    return (GenReID.load(explorer_model_set.full, device="cpu", precision="fp32"),
            GenReID.load(explorer_model_set.full, device="cpu", precision="bf16"))


def test_bf16_pictures_match_fp32_within_tolerance(models):
    naive, fast = models
    ids = naive.table_identities(np.arange(naive.num_identities))
    z = naive.noise(len(ids), seed=0)
    a = naive.generate(ids, z).astype(np.float32) / 255
    b = fast.generate(ids, z).astype(np.float32) / 255
    assert np.abs(a - b).mean((1, 2, 3)).max() <= PICTURE_TOLERANCE


def test_bf16_identities_match_fp32_within_tolerance(models):
    naive, fast = models
    pictures = naive.generate(naive.table_identities([0, 1, 2, 3]), naive.noise(4, seed=1))
    a, b = naive.encode(pictures), fast.encode(pictures)
    rel = np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(a, axis=1).mean()
    assert rel <= IDENTITY_TOLERANCE


def test_precision_choice():
    assert resolve_precision(torch.device("cpu"), "fp32") == "fp32"
    assert resolve_precision(torch.device("cpu"), "bf16") == "bf16"
    assert resolve_precision(torch.device("cpu")) in ("fp32", "bf16")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision(torch.device("cpu"), "fp8")


# ----------------------------------------------------------------------------- preview

def test_preview_is_part_of_the_set_and_remembers_its_guidance(explorer_model_set):
    config = read_config(explorer_model_set.full)
    assert config.preview.distilled_guidance == config.generator.guidance == 2.0
    assert config.preview_generator().guidance == 0.0  # distilled: one pass per step
    assert config.preview_generator().unet.widths == [4, 8]


def test_preview_generates_deterministic_pictures_of_the_same_shape(models):
    _, model = models
    assert model.has("preview")
    ids, z = model.table_identities([0, 1]), model.noise(2, seed=3)
    a = model.generate(ids, z, preview=True)
    assert a.shape == model.generate(ids, z).shape and a.dtype == np.uint8
    assert np.array_equal(a, model.generate(ids, z, preview=True))
    grid = model.generate_grid(ids, model.noise(3, seed=4), preview=True)
    assert grid.shape[:2] == (2, 3)


def test_without_a_preview_network_the_preview_is_the_generator_in_fewer_steps(explorer_model_set):
    model = GenReID.load(explorer_model_set.generator_only, device="cpu")
    assert not model.has("preview")
    steps = model.config.preview.steps
    assert 1 <= steps < model.config.schedule.steps and str(steps) in model.preview_description()
    ids, z = model.table_identities([0, 1]), model.noise(2, seed=0)
    assert np.array_equal(model.generate(ids, z, preview=True), model.generate(ids, z, steps=steps))
    assert not np.array_equal(model.generate(ids, z, preview=True), model.generate(ids, z))
    with pytest.raises(CheckpointError, match="genreid train preview"):
        model._net("preview")


def test_preview_starts_from_the_generator_weights_where_shapes_agree():
    config = ModelSetConfig(generator=GeneratorConfig(unet=UNetConfig([8, 16], 2), id_dim=4,
                                                      num_identities=3, noise_embedding_dim=8),
                            preview=PreviewConfig(unet=UNetConfig([8, 16], 1)))
    teacher = Generator(config.generator)
    g = torch.Generator().manual_seed(1)  # its own generator: the global seed stays as it was
    for p in teacher.parameters():
        p.data.normal_(0, 0.1, generator=g)
    student = Generator(config.preview_generator())
    copied = init_from(student, teacher)
    assert torch.equal(student.denoiser.down.levels[0][0].conv1.weight,
                       teacher.denoiser.down.levels[0][0].conv1.weight)
    assert torch.equal(student.denoiser.head.weight, teacher.denoiser.head.weight)
    assert copied == len(student.state_dict())  # every student tensor has a teacher match
    # Same architecture: the copy is the teacher itself.
    twin = Generator(config.generator)
    init_from(twin, teacher)
    x, v, i = torch.randn(2, 3, 16, 8), torch.full((2, 1, 1, 1), 0.3), torch.randn(2, 4)
    teacher.eval(), twin.eval()
    with torch.no_grad():
        assert torch.allclose(twin(x, v, i), teacher(x, v, i))


def test_preview_learns_the_guided_prediction(tmp_path, explorer_model_set):
    """A few distillation steps lower the preview's L1 to the guided teacher."""
    import shutil

    folder = tmp_path / "set"
    shutil.copytree(explorer_model_set.full, folder)
    work = tmp_path / "work"
    assert main(["train", "preview", "--checkpoint", str(folder), "--work-dir", str(work),
                 "--steps", "30", "--batch-size", "4", "--lr", "3e-3", "--save-every", "10",
                 "--device", "cpu", "--ema-decay", "0"]) == 0
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30]
    assert log[-1]["loss"] < log[0]["loss"]
    assert all(0 <= r["picture_gap"] <= 1 for r in log)


def test_preview_of_the_same_network_reproduces_the_unguided_generator(explorer_model_set):
    """The sampler and identity handling are shared: a preview equal to the generator (no
    guidance) gives exactly the generator's pictures."""
    model = GenReID.load(explorer_model_set.full, device="cpu", precision="fp32")
    gen = model.networks["generator"]
    model.config.generator.guidance = 0.0
    model.networks["preview"] = gen
    ids, z = model.table_identities([0, 1]), model.noise(2, seed=5)
    assert np.array_equal(model.generate(ids, z, preview=True), model.generate(ids, z))
    with torch.no_grad():
        x = generate(gen, torch.from_numpy(ids), torch.from_numpy(z), model.config.schedule)
    assert np.array_equal(model.normalizer.decode(x), model.generate(ids, z))


# ----------------------------------------------------------------------------- bench

def test_timed_rate_counts_items_per_second():
    calls = []
    rate = bench.timed_rate(lambda: calls.append(1), items=5, min_seconds=0.01, repeats=2)
    assert rate > 0 and len(calls) >= 3  # warm-up + at least one per round


def test_forward_gflop_of_a_linear_layer():
    layer = torch.nn.Linear(100, 10, bias=False)
    assert bench.forward_gflop(layer, torch.zeros(4, 100)) == pytest.approx(2 * 4 * 100 * 10 / 1e9)


def test_sampling_gflop_counts_steps_and_guidance_passes(models):
    _, model = models
    one = bench.sampling_gflop(model)
    steps = model.config.schedule.steps
    preview = bench.sampling_gflop(model, "preview")
    assert one > 0 and preview > 0
    # the generator is guided (two passes a step), the preview is not
    h, w = model.image_size
    single = bench.forward_gflop(model.networks["generator"], torch.zeros(1, 3, h, w),
                                 torch.full((1, 1, 1, 1), 0.5), torch.zeros(1, model.id_dim))
    assert one == pytest.approx(2 * steps * single)


def test_model_benchmark_reports_every_figure(models):
    _, model = models
    # A small matmul: a 2048^2 one in bfloat16 takes minutes where the CPU emulates it (AVX2).
    result = bench.model_benchmark(model, batches=(1, 2), min_seconds=0.01, log=lambda _: None,
                                   matmul_size=128)
    g = result["generation"]
    for key in ("naive_img_s", "optimized_img_s", "gflop_per_image", "peak_gflops",
                "preview_img_s", "by_batch"):
        assert key in g
    assert g["batch"] == 2 and set(g["by_batch"]) == {"1", "2"}
    assert all(v > 0 for v in (g["naive_img_s"], g["optimized_img_s"], g["peak_gflops"]))
    assert result["encoding"]["optimized_img_s"] > 0
    text = bench.format_bench(result)
    assert "naive fp32" in text and "Img2ID" in text


def test_bench_command_json_with_panels(explorer_model_set, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GENREID_EXPLORER_CACHE", str(tmp_path / "cache"))
    assert main(["bench", "--checkpoint", str(explorer_model_set.full), "--json", "--batches", "1",
                 "--min-seconds", "0.01", "--calls", "2", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["panels"]) == {"generate", "sweep", "directions", "neighbors", "projection",
                                     "retrieve", "decompose"}
    for p in result["panels"].values():
        assert 0 < p["p50_s"] <= p["p95_s"] and p["calls"] == 2
    assert result["generation"]["optimized_img_s"] > 0


def test_bench_rejects_bad_batches(capsys):
    assert main(["bench", "--batches", "1,x", "--skip-panels"]) == 2
    assert "--batches" in capsys.readouterr().err


@pytest.mark.slow  # ~2.5 min on a 2-core CPU
def test_quality_report_measures_each_fast_path(models, tmp_path):
    _, model = models
    out = tmp_path / "side.png"
    rows = bench.quality_report(model, str(out), log=lambda _: None)
    steps = [r["steps"] for r in rows if not r["preview"] and not r["guided_steps"]]
    assert steps == sorted(steps) and max(steps) < model.config.schedule.steps
    early = [r for r in rows if r["guided_steps"]]  # guidance on the first steps only
    assert early and all(0 < r["guided_steps"] < r["steps"] for r in early)
    assert "guided" in bench.format_bench({"quality": early})
    assert rows[-1]["preview"]  # the set has a preview network: measured last
    for r in rows:
        assert 0 <= r["picture_gap"] <= 1 and 0 <= r["map_fast"] <= 1 and 0 <= r["map_full"] <= 1
    from PIL import Image
    assert Image.open(out).size[0] > 2 * model.image_size[1]
    assert "picture gap" in bench.format_bench({"quality": rows})


def test_generated_retrieval_map_extremes():
    from core.diagnostics import generated_retrieval_map

    labels = np.array([0, 0, 1, 1])
    apart = np.array([[0.0], [0.1], [5.0], [5.1]])
    assert generated_retrieval_map(apart, labels) == 1.0
    mixed = np.array([[0.0], [5.0], [0.1], [5.1]])  # each picture nearest to the other person
    # by hand: the true match comes 2nd, 3rd, 3rd and 2nd -> APs 1/2, 1/3, 1/3, 1/2
    assert generated_retrieval_map(mixed, labels) == pytest.approx((0.5 + 1 / 3) / 2)


def naive_guided_pictures(model, ids: np.ndarray, z: np.ndarray, steps: int,
                          guided_steps: int | None = None, raw: bool = False) -> np.ndarray:
    """Pictures by the plain definition of identity guidance, none of the fast path's batching or
    sharing: eps + w (eps - eps_null) from two separate passes on each of the first guided_steps
    steps (all when None), the plain prediction after; w = 0 is the plain prediction throughout."""
    gen, w = model.networks["generator"], model.config.generator.guidance
    identity = torch.from_numpy(ids)
    calls = 0

    def predict(x, v):
        nonlocal calls
        calls += 1
        eps = gen(x, v, identity)
        if not w or (guided_steps is not None and calls > guided_steps):
            return eps
        return eps + w * (eps - gen(x, v, torch.zeros_like(identity)))

    with torch.no_grad():
        x = ddim_sample(predict, torch.from_numpy(z), model.config.schedule, "eps", steps)
    return x.numpy() if raw else model.normalizer.decode(x)  # raw: before clipping to pixels


def assert_same_pictures(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding: a batched pass may round differently from two single ones."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_guidance_on_the_first_steps_only(explorer_model_set):
    """The fast guided sampler (one batched pass, shared "no identity" rows) gives the pictures of
    the plain definition of guidance: on every step by default, on the first k with
    guided_steps=k, on none with the guidance weight 0; and guidance changes the pictures."""
    model = GenReID.load(explorer_model_set.full, device="cpu", precision="fp32")
    ids, z = model.table_identities([0, 1]), model.noise(2, seed=3)
    assert model.config.generator.guidance > 0
    every = model.generate(ids, z, steps=3)
    assert_same_pictures(every, naive_guided_pictures(model, ids, z, 3))
    first = model.generate(ids, z, steps=3, guided_steps=1)
    assert_same_pictures(first, naive_guided_pictures(model, ids, z, 3, guided_steps=1))
    # The three references differ, so the comparisons above are three different checks. Only
    # before the pixels clip: the tiny set's untrained generator barely follows identity and its
    # pictures are mostly saturated. (Which steps the fast path guides is counted pass by pass
    # in tests/test_model.py.)
    raw_every = naive_guided_pictures(model, ids, z, 3, raw=True)
    assert not np.array_equal(naive_guided_pictures(model, ids, z, 3, 1, raw=True), raw_every)
    model.config.generator.guidance = 0.0
    unguided = model.generate(ids, z, steps=3)
    assert_same_pictures(unguided, naive_guided_pictures(model, ids, z, 3))
    assert not np.array_equal(naive_guided_pictures(model, ids, z, 3, raw=True), raw_every)
    model.config.generator.guidance = 2.0
    model.config.preview.guided_steps = 1
    del model.networks["preview"]  # the tiny set has one: preview with the generator instead
    assert "guidance on the first 1" in model.preview_description()
    np.testing.assert_array_equal(model.generate(ids, z, preview=True),
                                  model.generate(ids, z, steps=model.config.preview.steps,
                                                 guided_steps=1))
