"""Unit tests of the model code: schedule, sampler, networks, configuration, checkpoints.

Every network here is TINY (U-Net widths [8, 16], one block per level) so the whole file
runs in seconds on a busy CPU. Golden numbers are worked out by hand in the comments.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core import checkpoint as ckpt
from core.config import (
    GeneratorConfig,
    Img2IDConfig,
    Img2NoiseConfig,
    ModelSetConfig,
    PriorConfig,
    ScheduleConfig,
    UNetConfig,
)
from core.diagnostics import identity_share
from core.identity_init import pca_identity_init
from core.images import Normalizer, channel_stats, image_grid
from core.layers import ResidualBlock, sinusoidal_embedding
from core.models import Generator, IdentityPrior, Img2ID, Img2Noise
from core.pipeline import generate, sample_prior
from core.sampler import ddim_sample, split_prediction
from core.schedule import add_noise, diffusion_rates, sampling_times

H, W = 64, 32
pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = Path(__file__).resolve().parent.parent / "core" / "configs"


def tiny_unet(widths=(8, 16)) -> UNetConfig:
    return UNetConfig(widths=list(widths), block_depth=1)


def tiny_set_config(num_identities: int = 4, id_dim: int = 8) -> ModelSetConfig:
    return ModelSetConfig(
        generator=GeneratorConfig(unet=tiny_unet(), id_dim=id_dim, num_identities=num_identities,
                                  noise_embedding_dim=8),
        prior=PriorConfig(id_dim=id_dim, hidden=32, layers=2, noise_embedding_dim=8),
        img2id=Img2IDConfig(unet=tiny_unet(), dense=[16], id_dim=id_dim),
        img2noise=Img2NoiseConfig(unet=tiny_unet()),
    )


def tiny_generator(num_identities: int = 4, id_dim: int = 8, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(tiny_set_config(num_identities, id_dim).generator)


def perturb_(module: torch.nn.Module, seed: int = 1, scale: float = 0.2) -> None:
    """Add noise to every parameter (the zero-initialised head included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------------------- schedule

def test_diffusion_rates_end_points_are_the_spec_values():
    s = ScheduleConfig()
    signal, noise = diffusion_rates(torch.tensor([0.0, 1.0], dtype=torch.float64), s)
    assert signal.tolist() == pytest.approx([0.95, 0.02], abs=1e-12)
    assert noise.tolist() == pytest.approx([math.sqrt(1 - 0.95**2), math.sqrt(1 - 0.02**2)], abs=1e-12)


def test_diffusion_rates_midpoint_is_the_mean_angle():
    # angle(0.5) = (acos(0.95) + acos(0.02)) / 2: linear in the angle, not in the signal.
    s = ScheduleConfig()
    signal, _ = diffusion_rates(torch.tensor(0.5, dtype=torch.float64), s)
    expected = math.cos(0.5 * (math.acos(0.95) + math.acos(0.02)))
    assert float(signal) == pytest.approx(expected, abs=1e-12)
    assert float(signal) != pytest.approx(0.5 * (0.95 + 0.02), abs=1e-3)


def test_add_noise_is_the_forward_process_that_split_prediction_inverts():
    cfg = ScheduleConfig()
    x0, eps = torch.randn(3, 3, 4, 2), torch.randn(3, 3, 4, 2)
    t = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1)
    x_t, signal, noise = add_noise(x0, eps, t, cfg)
    assert torch.allclose(signal, torch.cos(torch.acos(torch.tensor(0.95)) + t * (
        torch.acos(torch.tensor(0.02)) - torch.acos(torch.tensor(0.95)))))
    torch.testing.assert_close(x_t, signal * x0 + noise * eps)
    eps_back, x0_back = split_prediction(eps, x_t, signal, noise, "eps")
    torch.testing.assert_close(x0_back, x0, atol=1e-4, rtol=1e-4)


def test_diffusion_rates_unit_norm_and_monotone():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    signal, noise = diffusion_rates(t, ScheduleConfig())
    assert torch.allclose(signal**2 + noise**2, torch.ones_like(t), atol=1e-12)
    assert (signal.diff() < 0).all() and (noise.diff() > 0).all()
    # any shape works
    s2, n2 = diffusion_rates(torch.zeros(2, 1, 3, 1), ScheduleConfig())
    assert s2.shape == n2.shape == (2, 1, 3, 1)


def test_sampling_times_are_one_down_to_one_over_steps():
    times = sampling_times(10)
    expected = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert len(times) == 10
    for got, want in zip(times, expected):
        assert abs(got - want) < 1e-9
    assert sampling_times(1) == [1.0]
    assert sampling_times(4) == [1.0, 0.75, 0.5, 0.25]


@pytest.mark.parametrize("steps", [0, -3])
def test_sampling_times_rejects_fewer_than_one_step(steps):
    with pytest.raises(ValueError, match="steps"):
        sampling_times(steps)


# ------------------------------------------------------------------------------- sampler

def _signal_from_variance(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.sqrt(1.0 - v), torch.sqrt(v)


def test_ddim_perfect_eps_model_recovers_x0():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 3, 8, 4, generator=g, dtype=torch.float64).float()
    x_T = torch.randn(3, 3, 8, 4, generator=g)

    def oracle(x_t, variance):  # the true eps of x_t = signal*x0 + noise*eps, given x0
        signal, noise = _signal_from_variance(variance)
        return (x_t - signal * x0) / noise

    out = ddim_sample(oracle, x_T, ScheduleConfig())
    assert out.shape == x0.shape
    assert torch.allclose(out, x0, atol=1e-5)
    # and with any number of steps
    assert torch.allclose(ddim_sample(oracle, x_T, ScheduleConfig(), steps=3), x0, atol=1e-5)


def test_ddim_perfect_x0_model_recovers_x0_and_constant_target():
    target = torch.linspace(-2, 2, 2 * 5).reshape(2, 5)
    out = ddim_sample(lambda x, v: target.expand_as(x), torch.randn(2, 5), ScheduleConfig(),
                      predicts="x0")
    assert torch.equal(out, target)


def test_ddim_calls_model_with_the_schedule_variances():
    s = ScheduleConfig()
    seen = []

    def model(x, v):
        seen.append(v.clone())
        assert v.shape == (2, 1, 1, 1)
        return torch.zeros_like(x)

    ddim_sample(model, torch.randn(2, 3, 4, 4), s, steps=5)
    assert len(seen) == 5
    for t, v in zip([1.0, 0.8, 0.6, 0.4, 0.2], seen):
        noise = math.sin(math.acos(0.95) + t * (math.acos(0.02) - math.acos(0.95)))
        assert torch.allclose(v, torch.full_like(v, noise**2), atol=1e-6)


def test_ddim_one_step_golden_value():
    # One step from t=1 with eps_hat = 0: x0_hat = x_T / signal(1) = 1 / 0.02 = 50.
    out = ddim_sample(lambda x, v: torch.zeros_like(x), torch.ones(1, 3, 2, 2), ScheduleConfig(),
                      steps=1)
    assert torch.allclose(out, torch.full((1, 3, 2, 2), 50.0), rtol=1e-5)


def test_ddim_two_steps_golden_value():
    # eps_hat = 0 everywhere: x0_hat(t=1) = x/s(1); x(0.5) = s(0.5) x/s(1); x0_hat = x(0.5)/s(0.5) = x/s(1).
    # With eps_hat = x instead: x0_hat = (1 - n)x/s at each step, x_next = s' x0_hat + n' x.
    s = ScheduleConfig()

    def rates(t):
        a = math.acos(0.95) + t * (math.acos(0.02) - math.acos(0.95))
        return math.cos(a), math.sin(a)

    x = 1.0
    s1, n1 = rates(1.0)
    x0 = (x - n1 * x) / s1
    s_half, n_half = rates(0.5)
    x_half = s_half * x0 + n_half * x
    want = (x_half - n_half * x_half) / s_half
    out = ddim_sample(lambda xt, v: xt.clone(), torch.ones(1, 1), s, steps=2)
    assert float(out) == pytest.approx(want, rel=1e-5)


def test_ddim_is_deterministic_and_calls_back_each_step():
    torch.manual_seed(0)
    gen = tiny_generator()
    perturb_(gen)
    gen.eval()
    ident = gen.identities.weight[:2].detach()
    noise = torch.randn(2, 3, H, W)
    calls = []
    with torch.no_grad():
        a = generate(gen, ident, noise, ScheduleConfig(steps=4),
                     callback=lambda i, x, x0: calls.append((i, x.shape, x0.shape)))
        b = generate(gen, ident, noise, ScheduleConfig(steps=4))
    assert torch.equal(a, b)
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    assert all(c[1] == c[2] == (2, 3, H, W) for c in calls)


def test_split_prediction_inverts_the_forward_process_and_rejects_unknown():
    x0, eps = torch.randn(4), torch.randn(4)
    signal, noise = torch.tensor(0.6), torch.tensor(0.8)
    x_t = signal * x0 + noise * eps
    for predicts, pred in (("eps", eps), ("x0", x0)):
        e, x = split_prediction(pred, x_t, signal, noise, predicts)
        assert torch.allclose(e, eps, atol=1e-5) and torch.allclose(x, x0, atol=1e-5)
    with pytest.raises(ValueError, match="predicts"):
        split_prediction(eps, x_t, signal, noise, "v")


# -------------------------------------------------------------------------- building blocks

def test_sinusoidal_embedding_golden_values():
    # dim 4: frequencies 1 and 1000 (log-spaced from 1 to 1000); angle = 2 pi f v.
    v = torch.tensor([0.0, 0.25])
    e = sinusoidal_embedding(v, 4)
    assert e.shape == (2, 4)
    want = torch.tensor([[0.0, 0.0, 1.0, 1.0],
                         [math.sin(math.pi / 2), math.sin(500 * math.pi),
                          math.cos(math.pi / 2), math.cos(500 * math.pi)]])
    assert torch.allclose(e, want, atol=1e-3)  # float32 angles of 500 pi
    assert sinusoidal_embedding(torch.rand(3, 1, 1, 1), 64).shape == (3, 64)


def test_residual_block_adds_its_shortcut():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6)
    same = ResidualBlock(4, 4)
    assert isinstance(same.shortcut, torch.nn.Identity)
    assert not same.norm.affine  # BatchNorm without learned scale/shift
    wider = ResidualBlock(4, 6)
    with torch.no_grad():
        for block in (same, wider):
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()
        assert torch.equal(same(x), x)  # the residual branch is off: the input passes through
        assert torch.allclose(wider(x), wider.shortcut(x))
        assert wider.shortcut.kernel_size == (1, 1)
        # and the branch is conv2(swish(conv1(norm(x))))
        wider.conv2.weight.normal_()
        wider.eval()
        h = torch.nn.functional.silu(wider.conv1(wider.norm(x)))
        assert torch.allclose(wider(x), wider.conv2(h) + wider.shortcut(x), atol=1e-5)


def test_identity_is_concatenated_at_the_stem_and_after_every_pooling():
    config = GeneratorConfig(unet=UNetConfig(widths=[8, 16, 24], block_depth=1), id_dim=5,
                             num_identities=3, noise_embedding_dim=6)
    down = Generator(config).denoiser.down.eval()
    inputs = {}
    blocks = {"level0": down.levels[0][0], "level1": down.levels[1][0], "middle": down.middle[0]}
    for name, block in blocks.items():
        block.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0]))
    identity = torch.arange(10, dtype=torch.float32).reshape(2, 5)
    variance = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        down(torch.randn(2, 3, 16, 8), variance.reshape(2, 1, 1, 1), identity)
    for name, size in (("level0", (16, 8)), ("level1", (8, 4)), ("middle", (4, 2))):
        got = inputs[name][:, -5:]  # the identity is the last channels
        assert got.shape[2:] == size, name
        assert torch.equal(got, identity.reshape(2, 5, 1, 1).expand(2, 5, *size)), name
    # the noise embedding sits before it at the stem
    emb = sinusoidal_embedding(variance, 6).reshape(2, 6, 1, 1).expand(2, 6, 16, 8)
    assert torch.allclose(inputs["level0"][:, 8:14], emb)


def test_normalizer_golden_values_and_round_trip():
    norm = Normalizer([0.5, 0.25, 0.0], [0.25, 0.5, 1.0])
    pixel = torch.tensor([[[[255, 0, 51]]]], dtype=torch.uint8)  # (1, 1, 1, 3)
    x = norm.encode(pixel)
    assert x.shape == (1, 3, 1, 1)
    # (1 - 0.5) / 0.25 = 2; (0 - 0.25) / 0.5 = -0.5; 0.2 / 1 = 0.2
    assert torch.allclose(x.flatten(), torch.tensor([2.0, -0.5, 0.2]))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 8, 4, 3), generator=g, dtype=torch.uint8)
    encoded = norm.encode(images.numpy())
    assert encoded.is_contiguous(memory_format=torch.channels_last)
    assert (norm.decode(encoded) == images.numpy()).all()
    # out-of-range values are clipped to what a picture can hold
    assert norm.decode(torch.full((1, 3, 1, 1), 100.0)).tolist() == [[[[255, 255, 255]]]]
    assert torch.allclose(norm.to_unit(norm.clip(torch.full((1, 3, 1, 1), -100.0))),
                          torch.zeros(1, 3, 1, 1), atol=1e-6)


def test_channel_stats_and_image_grid():
    images = np.zeros((2, 2, 2, 3), np.uint8)
    images[0, ..., 0] = 255  # red channel: half the pixels 1, half 0
    mean, std = channel_stats(images)
    assert mean == pytest.approx([0.5, 0.0, 0.0]) and std == pytest.approx([0.5, 0.0, 0.0])
    tiles = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1).repeat(3, axis=3)
    tiles = tiles.repeat(2, axis=1).repeat(3, axis=2)  # (6, 2, 3, 3): tile k filled with k
    grid = image_grid(tiles, rows=2)
    assert grid.shape == (2 * 2, 3 * 3, 3)
    assert grid[::2, ::3, 0].tolist() == [[0, 1, 2], [3, 4, 5]]  # row-major


# ------------------------------------------------------------------------ U-Net / generator

def test_generator_output_shape_and_zero_initial_head():
    gen = tiny_generator()
    x = torch.randn(3, 3, H, W)
    out = gen(x, torch.rand(3, 1, 1, 1), gen.identities(torch.tensor([0, 1, 2])))
    assert out.shape == (3, 3, H, W)
    assert torch.count_nonzero(out) == 0  # predicts zero noise before any training
    # so the sampler's first x0_hat is x_T / signal(1) = 50 x_T, kept by every later step
    # (x_next = signal_next * x0_hat), whatever the identity
    with torch.no_grad():
        img = generate(gen.eval(), gen.identities.weight[:2], x[:2], ScheduleConfig())
    assert torch.allclose(img, x[:2] / 0.02, rtol=1e-4, atol=1e-4)


def test_generator_needs_identities():
    with pytest.raises(ValueError, match="num_identities"):
        Generator(GeneratorConfig(unet=tiny_unet(), num_identities=0))


def test_generator_identity_table_init_is_small_uniform():
    gen = tiny_generator(num_identities=50, id_dim=8)
    w = gen.identities.weight
    assert w.shape == (50, 8)
    assert w.abs().max() <= 0.05 and w.abs().max() > 0.02


def test_identity_conditions_the_output():
    gen = tiny_generator()
    perturb_(gen)
    gen.eval()
    x = torch.randn(1, 3, H, W).repeat(2, 1, 1, 1)
    v = torch.full((2, 1, 1, 1), 0.5)
    ident = torch.stack([torch.full((8,), -1.0), torch.full((8,), 1.0)])
    with torch.no_grad():
        out = gen(x, v, ident)
        same = gen(x, v, ident[:1].repeat(2, 1))
    assert (out[0] - out[1]).abs().max() > 1e-3
    assert torch.allclose(same[0], same[1], atol=1e-6)  # the only difference was the identity


def test_noise_variance_conditions_the_output():
    gen = tiny_generator()
    perturb_(gen)
    gen.eval()
    x = torch.randn(1, 3, H, W).repeat(2, 1, 1, 1)
    ident = gen.identities.weight[:1].detach().repeat(2, 1)
    with torch.no_grad():
        out = gen(x, torch.tensor([0.1, 0.9]).reshape(2, 1, 1, 1), ident)
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_eval_mode_is_per_sample_independent():
    gen = tiny_generator()
    perturb_(gen)
    # Let BatchNorm collect some running statistics first, as training would.
    gen.train()
    with torch.no_grad():
        gen(torch.randn(8, 3, H, W), torch.rand(8, 1, 1, 1), gen.identities.weight[[0, 1, 2, 3] * 2])
    gen.eval()
    g = torch.Generator().manual_seed(3)
    x, v = torch.randn(4, 3, H, W, generator=g), torch.rand(4, 1, 1, 1, generator=g)
    ident = gen.identities.weight[[0, 1, 2, 3]].detach()
    with torch.no_grad():
        batch = gen(x, v, ident)
        alone = torch.cat([gen(x[i:i + 1], v[i:i + 1], ident[i:i + 1]) for i in range(4)])
        other = gen(torch.cat([x[:1], 5 * torch.randn(3, 3, H, W)]), v, ident)
    assert torch.allclose(batch, alone, atol=1e-5)
    assert torch.allclose(batch[0], other[0], atol=1e-5)


def test_generator_channels_last_matches_contiguous():
    gen = tiny_generator()
    perturb_(gen)
    gen.eval()
    x, v = torch.randn(2, 3, H, W), torch.rand(2, 1, 1, 1)
    ident = gen.identities.weight[:2].detach()
    with torch.no_grad():
        ref = gen(x, v, ident)
        gen_cl = gen.to(memory_format=torch.channels_last)
        out = gen_cl(x.contiguous(memory_format=torch.channels_last), v, ident)
    assert out.shape == (2, 3, H, W)
    assert torch.allclose(ref, out, rtol=1e-4, atol=1e-4)  # only the summation order differs


def test_128x64_with_one_more_level_builds_and_runs():
    unet = UNetConfig(widths=[8, 16, 32, 64], block_depth=1)
    config = tiny_set_config()
    config.image_size = [128, 64]
    config.generator.unet = unet
    config.img2id.unet = unet
    config.img2noise.unet = unet
    config.validate()
    gen = Generator(config.generator).eval()
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        assert gen(x, torch.rand(2, 1, 1, 1), gen.identities.weight[:2]).shape == (2, 3, 128, 64)
        assert Img2ID(config.img2id, (128, 64)).eval()(x).shape == (2, 8)
        assert Img2Noise(config.img2noise).eval()(x).shape == (2, 3, 128, 64)
    # four levels means three poolings: 128x64 -> 16x8 bottleneck
    assert len(gen.denoiser.down.levels) == 3


def test_generator_has_the_spec_structure():
    # identity concatenated at the stem and after each pooling; noise embedding at the stem
    config = GeneratorConfig(unet=UNetConfig(widths=[8, 16, 24], block_depth=2), id_dim=5,
                             num_identities=3, noise_embedding_dim=6)
    down = Generator(config).denoiser.down
    assert down.levels[0][0].conv1.in_channels == 8 + 6 + 5
    assert down.levels[1][0].conv1.in_channels == 8 + 5
    assert down.middle[0].conv1.in_channels == 16 + 5
    assert len(down.levels[0]) == 2 and len(down.middle) == 2
    assert down.skip_channels == [8, 8, 16, 16]


# ---------------------------------------------------------------- inverters and prior

def test_img2id_output_shape():
    config = tiny_set_config(id_dim=8)
    net = Img2ID(config.img2id, (H, W)).eval()
    with torch.no_grad():
        out = net(torch.randn(3, 3, H, W).contiguous(memory_format=torch.channels_last))
    assert out.shape == (3, 8)


def test_img2id_channels_last_gives_the_same_features():
    torch.manual_seed(0)
    net = Img2ID(tiny_set_config().img2id, (H, W)).eval()
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        a = net(x)
        b = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, b, atol=1e-5)


def test_img2noise_output_shape_equals_input():
    net = Img2Noise(tiny_set_config().img2noise).eval()
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape
    assert out.abs().sum() > 0  # not zero-initialised like the generator's head


def test_identity_prior_output_shape_and_normalisation():
    prior = IdentityPrior(PriorConfig(id_dim=8, hidden=32, layers=3, noise_embedding_dim=8)).eval()
    z = torch.randn(5, 8)
    with torch.no_grad():
        assert prior(z, torch.rand(5, 1)).shape == (5, 8)
    prior.mean.fill_(2.0)
    prior.std.fill_(4.0)
    assert torch.allclose(prior.normalize(torch.full((1, 8), 10.0)), torch.full((1, 8), 2.0))
    assert torch.allclose(prior.denormalize(prior.normalize(z)), z, atol=1e-6)
    with torch.no_grad():
        sampled = sample_prior(prior, torch.randn(6, 8), ScheduleConfig())
    assert sampled.shape == (6, 8) and torch.isfinite(sampled).all()
    # the normalisation statistics travel with the weights
    assert {"mean", "std"} <= set(prior.state_dict())


def test_sample_prior_denormalises_the_sampler_output():
    prior = IdentityPrior(PriorConfig(id_dim=4, hidden=32, layers=2, noise_embedding_dim=8))
    with torch.no_grad():
        for p in prior.out.parameters():
            p.zero_()  # predicts x0 = 0 in the normalised space
        prior.mean.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0]))
        prior.std.fill_(3.0)
        out = sample_prior(prior.eval(), torch.randn(3, 4), ScheduleConfig())
    assert torch.allclose(out, prior.mean.expand(3, 4))


# ------------------------------------------------------------------------- configuration

def test_config_round_trip_through_dict_and_file(tmp_path):
    config = tiny_set_config()
    config.mean = [0.1, 0.2, 0.3]
    config.schedule.steps = 7
    again = ModelSetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert isinstance(again.generator.unet, UNetConfig)
    config.save(tmp_path / "c.json")
    assert ModelSetConfig.load(tmp_path / "c.json") == config
    assert ModelSetConfig.from_dict({}) == ModelSetConfig()  # missing keys take the defaults


def test_config_defaults_are_the_spec_values():
    c = ModelSetConfig()
    assert c.image_size == [64, 32]
    assert c.generator.unet.widths == [48, 96, 192, 384] and c.generator.unet.block_depth == 2
    assert c.generator.id_dim == c.prior.id_dim == c.img2id.id_dim == 32
    assert c.generator.noise_embedding_dim == 64 and c.prior.noise_embedding_dim == 32
    assert (c.prior.hidden, c.prior.layers) == (512, 3)
    assert c.img2id.dense == [512, 128]
    assert (c.schedule.max_signal, c.schedule.min_signal, c.schedule.steps) == (0.95, 0.02, 10)


@pytest.mark.parametrize("data, name", [
    ({"bogus": 1}, "bogus"),
    ({"generator": {"unet": {"widthz": [8, 16]}}}, "widthz"),
    ({"prior": {"id_dim": 8, "hiden": 3}}, "hiden"),
])
def test_config_unknown_key_is_named(data, name):
    with pytest.raises(ValueError, match=name):
        ModelSetConfig.from_dict(data)


def test_config_load_names_unknown_key_and_unreadable_file(tmp_path):
    path = tmp_path / "c.json"
    d = tiny_set_config().to_dict()
    d["img2id"]["extra_layer"] = 3
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="extra_layer"):
        ModelSetConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        ModelSetConfig.load(path)
    with pytest.raises(ValueError, match="cannot read"):
        ModelSetConfig.load(tmp_path / "missing.json")


def test_config_validate_rejects_indivisible_image_size():
    config = tiny_set_config()
    config.validate()  # 64x32 with 2 levels is fine
    config.image_size = [65, 32]  # 65 is not divisible by 2^1
    with pytest.raises(ValueError, match="divisible"):
        config.validate()
    config = ModelSetConfig()  # 4 levels: needs multiples of 8
    config.image_size = [60, 32]
    with pytest.raises(ValueError, match="divisible"):
        config.validate()
    config.image_size = [64, 36]
    with pytest.raises(ValueError, match="divisible"):
        config.validate()
    config.image_size = [72, 40]
    config.validate()


def test_config_validate_checks_every_unet():
    config = tiny_set_config()
    config.img2noise.unet = UNetConfig(widths=[8, 16, 32, 64, 128, 256, 512], block_depth=1)
    with pytest.raises(ValueError, match="img2noise"):  # 32 is not divisible by 2^6
        config.validate()


def test_config_validate_rejects_mismatched_identity_dims():
    config = tiny_set_config(id_dim=8)
    config.prior.id_dim = 16
    with pytest.raises(ValueError, match="identity dimensions"):
        config.validate()
    config = tiny_set_config(id_dim=8)
    config.img2id.id_dim = 7
    with pytest.raises(ValueError, match="identity dimensions"):
        config.validate()


def test_config_validate_rejects_bad_levels_and_init():
    config = tiny_set_config()
    config.generator.unet = UNetConfig(widths=[8], block_depth=1)
    with pytest.raises(ValueError, match="2 levels"):
        config.validate()
    config = tiny_set_config()
    config.generator.id_init = "gaussian"
    with pytest.raises(ValueError, match="id_init"):
        config.validate()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = ModelSetConfig.load(path)
    assert config.image_size == ([128, 64] if "128x64" in path.name else [64, 32])
    assert config.generator.id_dim == config.prior.id_dim == config.img2id.id_dim


def test_there_are_shipped_configs():
    names = {p.name for p in CONFIGS.glob("*.json")}
    assert "spec-64x32.json" in names
    assert ModelSetConfig.load(CONFIGS / "spec-64x32.json") == ModelSetConfig()


# ---------------------------------------------------------------------- identity share

def test_identity_share_extremes():
    g = torch.Generator().manual_seed(0)
    per_id = torch.randn(3, 1, 3, 8, 4, generator=g)
    assert identity_share(per_id.expand(3, 5, 3, 8, 4)) == pytest.approx(1.0)
    per_noise = torch.randn(1, 5, 3, 8, 4, generator=g)
    assert identity_share(per_noise.expand(3, 5, 3, 8, 4)) == pytest.approx(0.0, abs=1e-7)


def test_identity_share_golden_value():
    # I=2 identities x N=2 noises, 1 pixel: [[0, 2], [4, 6]].
    # between = var([1, 5]) = 4; within = mean(var([0,2]), var([4,6])) = 1 -> 4 / 5.
    x = torch.tensor([[0.0, 2.0], [4.0, 6.0]]).reshape(2, 2, 1)
    assert identity_share(x) == pytest.approx(0.8)
    assert identity_share(torch.zeros(2, 3, 4)) == 0.0  # constant images: no NaN


# ---------------------------------------------------------------------- PCA identity init

def test_pca_identity_init_shape_and_spread():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(40, 3, 8, 4, generator=g)
    labels = torch.arange(40) % 10
    rows = pca_identity_init(images, labels, num=10, dim=4, scale=0.05)
    assert rows.shape == (10, 4)
    assert torch.isfinite(rows).all()
    # spread like U[-s, s]: std s / sqrt(3)
    assert float(rows.std()) == pytest.approx(0.05 / math.sqrt(3), rel=1e-4)
    # principal components: uncorrelated columns, decreasing variance
    var = rows.var(0)
    assert (var.diff() <= 1e-9).all()
    cov = torch.cov(rows.T)
    assert torch.allclose(cov - torch.diag(torch.diag(cov)), torch.zeros(4, 4), atol=1e-7)


def test_pca_identity_init_fewer_identities_than_dims():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(6, 3, 8, 4, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    rows = pca_identity_init(images, labels, num=3, dim=8, scale=0.05)
    assert rows.shape == (3, 8)
    assert torch.isfinite(rows).all()
    assert rows[:, 3:].abs().max() <= 0.05  # the remaining columns: U[-0.05, 0.05]


def test_pca_identity_init_same_mean_image_same_pca_row():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 3, 8, 4, generator=g)
    images = torch.stack([a, a, b, b, a])  # identities 0 and 2 share their mean image
    labels = torch.tensor([0, 0, 1, 1, 2])
    rows = pca_identity_init(images, labels, num=3, dim=2, scale=0.05)
    assert torch.allclose(rows[0], rows[2], atol=1e-6)
    assert not torch.allclose(rows[0], rows[1], atol=1e-3)


# ----------------------------------------------------------------------------- checkpoints

def _trained_pair(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def test_training_state_round_trip_restores_weights_and_adam_exactly(tmp_path):
    model, opt = _trained_pair(0)
    rng = torch.Generator().manual_seed(5).get_state()
    ckpt.save_training_state(tmp_path, 3, {"model": model}, opt, {"part": "test"},
                             {"batch": rng, "torch": torch.get_rng_state()})
    fresh, fresh_opt = _trained_pair(1)  # different weights and Adam moments
    meta, rng_back = ckpt.load_training_state(tmp_path, {"model": fresh}, fresh_opt)
    assert meta["step"] == 3 and meta["part"] == "test"
    assert torch.equal(rng_back["batch"], rng)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    s1, s2 = opt.state_dict(), fresh_opt.state_dict()
    assert s1["state"].keys() == s2["state"].keys()
    for i in s1["state"]:
        for name in s1["state"][i]:
            assert torch.equal(torch.as_tensor(s1["state"][i][name]),
                               torch.as_tensor(s2["state"][i][name])), (i, name)
    assert s2["param_groups"][0]["lr"] == 1e-2
    # and training goes on identically from both
    x = torch.randn(8, 4)
    for m, o in ((model, opt), (fresh, fresh_opt)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_training_state_keeps_the_last_two_and_points_at_latest(tmp_path):
    model, opt = _trained_pair()
    rng = {"batch": torch.Generator().get_state()}
    for step in (10, 20, 30):
        with torch.no_grad():
            model[0].weight.fill_(float(step))
        ckpt.save_training_state(tmp_path, step, {"model": model}, opt, {}, rng)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000020", "step-00000030"]
    assert json.loads((tmp_path / "latest.json").read_text()) == {"dir": "step-00000030", "step": 30}
    assert not list(tmp_path.glob(".*"))  # no temporary or stepped-aside folder left
    fresh, fresh_opt = _trained_pair(1)
    meta, _ = ckpt.load_training_state(tmp_path, {"model": fresh}, fresh_opt)
    assert meta["step"] == 30
    assert torch.all(fresh[0].weight == 30.0)


def test_a_folder_write_killed_midway_leaves_the_previous_folder_whole(tmp_path):
    """atomic_write(folder=True), as training states and gallery indexes are written: a kill
    while filling leaves the old folder as it was; the next write clears the leftover."""
    from core.files import atomic_write

    target = tmp_path / "state"
    atomic_write(target, lambda tmp: (tmp / "a.txt").write_text("old"), folder=True)

    def killed(tmp):
        (tmp / "a.txt").write_text("half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, killed, folder=True)
    assert [p.name for p in target.iterdir()] == ["a.txt"] and (target / "a.txt").read_text() == "old"
    atomic_write(target, lambda tmp: (tmp / "b.txt").write_text("new"), folder=True)
    assert [p.name for p in target.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["state"]


def test_load_training_state_without_state_returns_none(tmp_path):
    model, opt = _trained_pair()
    assert ckpt.load_training_state(tmp_path, {"model": model}, opt) is None


def _write_set(folder: Path, config: ModelSetConfig | None = None) -> ModelSetConfig:
    config = config or tiny_set_config()
    torch.manual_seed(0)
    w = ckpt.ModelSetWriter(folder)
    w.config(config)
    w.identities([2, 5, 7, 11], "test")
    gen = Generator(config.generator)
    perturb_(gen)
    w.weights("generator", gen)
    w.weights("prior", IdentityPrior(config.prior))
    w.commit()
    return config


def test_model_set_writer_manifest_and_verify(tmp_path):
    _write_set(tmp_path)
    manifest = ckpt.verify(tmp_path)
    (gen,), (prior,) = ckpt.part_files(tmp_path, "generator"), ckpt.part_files(tmp_path, "prior")
    assert re.fullmatch(r"generator-[0-9a-f]{8}\.safetensors", gen)
    assert set(manifest) == {"config.json", "identities.json", gen, prior}
    assert manifest[gen] == ckpt.sha256(tmp_path / gen)
    assert ckpt.read_identities(tmp_path) == [2, 5, 7, 11]
    assert ckpt.read_config(tmp_path) == tiny_set_config()
    assert ckpt.has_part(tmp_path, "prior") and not ckpt.has_part(tmp_path, "img2id")
    assert not list(tmp_path.glob(".*.tmp"))


def test_model_set_weights_are_float16_and_load_back_as_float32(tmp_path):
    config = _write_set(tmp_path)
    state = load_file(str(tmp_path / ckpt.part_files(tmp_path, "generator")[0]))
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert state["denoiser.down.levels.0.0.norm.num_batches_tracked"].dtype == torch.int64
    torch.manual_seed(0)
    original = Generator(config.generator)
    perturb_(original)
    loaded = ckpt.load_weights(tmp_path, "generator", Generator(config.generator))
    for (k, a), b in zip(original.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype, k
        if a.is_floating_point():
            assert torch.equal(b, a.half().float()), k  # exactly the half-precision values


def test_unknown_part_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown part"):
        ckpt.ModelSetWriter(tmp_path).weights("decoder", torch.nn.Linear(2, 2))


def test_verify_detects_a_modified_byte(tmp_path):
    _write_set(tmp_path)
    path = tmp_path / ckpt.part_files(tmp_path, "generator")[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="SHA-256") as info:
        ckpt.verify(tmp_path)
    assert path.name in str(info.value)


def test_verify_detects_a_missing_file_and_missing_manifest(tmp_path):
    _write_set(tmp_path)
    (prior,) = ckpt.part_files(tmp_path, "prior")
    (tmp_path / prior).unlink()
    with pytest.raises(ckpt.CheckpointError, match=prior):
        ckpt.verify(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="manifest"):
        ckpt.verify(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.verify(tmp_path / "nowhere")


def test_load_weights_wrong_architecture_or_missing_part(tmp_path):
    config = _write_set(tmp_path)
    other = GeneratorConfig(unet=UNetConfig(widths=[8, 24], block_depth=1), id_dim=8,
                            num_identities=4, noise_embedding_dim=8)
    with pytest.raises(ckpt.CheckpointError, match="architecture"):
        ckpt.load_weights(tmp_path, "generator", Generator(other))
    with pytest.raises(ckpt.CheckpointError, match="architecture"):
        ckpt.load_weights(tmp_path, "prior", Generator(config.generator))
    with pytest.raises(ckpt.CheckpointError, match="img2id"):
        ckpt.load_weights(tmp_path, "img2id", Img2ID(config.img2id, (H, W)))


def test_load_weights_unreadable_file(tmp_path):
    config = _write_set(tmp_path)
    (tmp_path / ckpt.part_files(tmp_path, "generator")[0]).write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match="cannot read"):
        ckpt.load_weights(tmp_path, "generator", Generator(config.generator))


def test_large_parts_are_sharded_and_load_back(tmp_path, monkeypatch):
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    monkeypatch.setattr(ckpt, "SHARD_BYTES", (64 * 64 + 64) * 2)  # one half-precision layer per shard
    writer = ckpt.ModelSetWriter(tmp_path)
    writer.weights("img2id", net)
    writer.commit()
    names = ckpt.part_files(tmp_path, "img2id")
    assert len(names) == 3 and re.fullmatch(r"img2id-[0-9a-f]{8}-00001-of-00003\.safetensors", names[0])
    assert set(names) <= set(ckpt.verify(tmp_path))
    copy = ckpt.load_weights(tmp_path, "img2id", torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 8)))
    for a, b in zip(net.state_dict().values(), copy.state_dict().values()):
        torch.testing.assert_close(a.half().float(), b)
    # Re-written small: the shards are replaced by one file, nothing stale is left.
    monkeypatch.setattr(ckpt, "SHARD_BYTES", 1 << 30)
    writer.weights("img2id", net)
    writer.commit()
    (single,) = ckpt.part_files(tmp_path, "img2id")
    assert single.startswith("img2id-") and single.count("-") == 1
    assert sorted(p.name for p in tmp_path.glob("img2id*")) == [single]
    assert not set(names) & set(ckpt.verify(tmp_path))


def test_a_set_written_before_tags_still_loads(tmp_path):
    """checkpoints/default was written as generator-00001-of-00003.safetensors etc."""
    config = _write_set(tmp_path)
    (old,) = ckpt.part_files(tmp_path, "generator")
    (tmp_path / old).rename(tmp_path / "generator.safetensors")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["generator.safetensors"] = manifest.pop(old)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert ckpt.part_files(tmp_path, "generator") == ["generator.safetensors"]
    ckpt.load_weights(tmp_path, "generator", Generator(config.generator))
    # re-exported, the part moves to the tagged layout and the old file goes
    w = ckpt.ModelSetWriter(tmp_path)
    w.weights("generator", Generator(config.generator))
    w.commit()
    assert not (tmp_path / "generator.safetensors").exists() and ckpt.verify(tmp_path)


@pytest.mark.parametrize("kill_at", ["weights", "manifest"])
def test_a_write_killed_at_any_moment_leaves_a_whole_set(tmp_path, monkeypatch, kill_at):
    """Kill the re-export of a part just before its last file lands or just before the manifest:
    the set still verifies and loads the weights it had (the new ones are not half there)."""
    config = _write_set(tmp_path)
    before = ckpt.load_weights(tmp_path, "generator", Generator(config.generator)).state_dict()
    new = Generator(config.generator)
    perturb_(new, seed=7)
    real = ckpt.atomic_write

    def dies(path, write):
        if (kill_at == "manifest") == (Path(path).name == "manifest.json"):
            raise KeyboardInterrupt  # the process is killed here
        return real(path, write)
    monkeypatch.setattr(ckpt, "atomic_write", dies)
    with pytest.raises(KeyboardInterrupt):
        w = ckpt.ModelSetWriter(tmp_path)
        w.weights("generator", new)
        w.commit()
    ckpt.verify(tmp_path)
    after = ckpt.load_weights(tmp_path, "generator", Generator(config.generator)).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ema_warm_up_follows_the_live_weights_early():
    from torch.optim.swa_utils import AveragedModel

    from core.training import ema_with_warmup

    net = torch.nn.Linear(2, 2)
    ema = AveragedModel(net, avg_fn=ema_with_warmup(0.999), use_buffers=True)
    for step in range(100):
        with torch.no_grad():
            net.weight.fill_(float(step + 1))
        ema.update_parameters(net)
    # With a fixed 0.999 the average would still be near the first values (about 5);
    # with the warm-up it has followed the live weights (100) to within a few steps.
    assert 85.0 < ema.module.weight.mean().item() < 100.0
    # The decay never exceeds the asked one: late steps move the average by at least 0.1%.
    f = ema_with_warmup(0.999)
    assert torch.allclose(f(torch.zeros(1), torch.ones(1), torch.tensor(10**6)), torch.tensor([0.001]))


def test_learning_rate_warms_up_holds_then_anneals_to_zero():
    from core.training import TrainOptions, lr_factor

    opt = TrainOptions(steps=100, warmup=10, decay=40)
    f = [lr_factor(step, opt) for step in range(100)]
    assert f[0] == 0.1 and f[9] == 1.0  # linear warm-up
    assert f[10:60] == [1.0] * 50  # constant until the last 40 steps
    assert all(a > b for a, b in zip(f[60:], f[61:]))  # then strictly down ...
    assert f[79] > 0.5 > f[81] and 0 < f[99] < 0.002  # ... along a half cosine, to near 0
    assert [lr_factor(s, TrainOptions(steps=100, warmup=10)) for s in range(10, 100)] == [1.0] * 90
    # Over the last 40 of 100 seconds instead: constant until second 60, half at 80, 0 at 100.
    timed = TrainOptions(steps=10**6, warmup=10, decay_seconds=40, time_limit=100)
    assert [lr_factor(50, timed, t) for t in (0, 59.9, 80, 100, 120)] == pytest.approx(
        [1.0, 1.0, 0.5, 0.0, 0.0])


def test_identity_guidance_extrapolates_away_from_the_null_identity():
    from core.pipeline import guided

    gen = tiny_generator(seed=3)
    with torch.no_grad():
        for p in gen.denoiser.head.parameters():  # leave the zero init so the output depends on input
            p.normal_(0, 0.1)
    gen.eval()
    x, v = torch.randn(3, 3, 64, 32), torch.full((3, 1, 1, 1), 0.5)
    ident = gen.identities(torch.tensor([0, 1, 2])).detach()
    with torch.no_grad():
        plain = gen(x, v, ident)
        null = gen(x, v, torch.zeros_like(ident))
        assert torch.equal(guided(gen, ident)(x, v), plain)  # w = 0: the paper's sampler
        gen.config.guidance = 2.0
        torch.testing.assert_close(guided(gen, ident)(x, v), plain + 2.0 * (plain - null),
                                   atol=1e-5, rtol=1e-5)
    cfg = ModelSetConfig()
    cfg.generator.guidance = -1.0
    with pytest.raises(ValueError, match="guidance"):
        cfg.validate()


def test_guidance_predicts_the_null_identity_once_per_distinct_input():
    """A grid's first step: 3 identities share each of 2 noises, so the "no identity"
    prediction needs 2 rows, not 6; the guided prediction is the same as without sharing."""
    from core.pipeline import guided

    gen = tiny_generator(seed=4)
    with torch.no_grad():
        for p in gen.denoiser.head.parameters():
            p.normal_(0, 0.1)
    gen.eval()
    gen.config.guidance = 2.0
    noise = torch.randn(2, 3, 64, 32)
    x, v = noise.repeat(3, 1, 1, 1), torch.full((6, 1, 1, 1), 0.5)
    ident = gen.identities(torch.tensor([0, 0, 1, 1, 2, 2])).detach()
    rows = []
    hook = gen.register_forward_hook(lambda m, args, out: rows.append(len(args[0])))
    with torch.no_grad():
        shared = guided(gen, ident)(x, v)
        plain, null = gen(x, v, ident), gen(x, v, torch.zeros_like(ident))
        distinct = guided(gen, ident)(x + 1e-3 * torch.randn_like(x), v)
    hook.remove()
    assert rows[0] == 6 + 2 and rows[-1] == 6 + 6  # jittered inputs share nothing
    assert distinct.shape == shared.shape
    torch.testing.assert_close(shared, plain + 2.0 * (plain - null), atol=1e-5, rtol=1e-5)


def test_guided_steps_zero_means_every_step_as_in_the_config():
    """One meaning of guided_steps, in the config (preview.guided_steps), the API and the
    pipeline: k >= 1 guides the first k sampling steps only; 0 (the config's default, which
    the shipped sets hold) and None guide every step."""
    from core.config import PreviewConfig
    from core.pipeline import guided

    gen = tiny_generator(seed=3)
    perturb_(gen)
    gen.eval()
    gen.config.guidance = 2.0
    ident = gen.identities(torch.tensor([0, 1])).detach()
    z = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    rows: list[int] = []
    hook = gen.register_forward_hook(lambda m, args, out: rows.append(len(args[0])))

    def sample(**kwargs) -> torch.Tensor:
        rows.clear()
        with torch.no_grad():
            return generate(gen, ident, z, ScheduleConfig(), steps=3, **kwargs)
    every = sample()
    assert rows == [4, 4, 4]  # each step: 2 conditional + 2 "no identity" rows
    assert torch.equal(sample(guided_steps=0), every) and rows == [4, 4, 4]
    assert torch.equal(sample(guided_steps=3), every)
    first = sample(guided_steps=1)
    assert rows == [4, 2, 2] and not torch.equal(first, every)
    hook.remove()
    assert PreviewConfig().guided_steps == 0
    with pytest.raises(ValueError, match="guided_steps"):
        guided(gen, ident, -1)


@pytest.mark.parametrize("kill_at", ["manifest", "move"])
def test_a_changed_config_is_committed_with_the_manifest(tmp_path, monkeypatch, kill_at):
    """A re-export that changes config.json, killed before the manifest (the old set stays) or
    after it, before the new config is moved into place (verify rolls it forward)."""
    config = _write_set(tmp_path)
    changed = tiny_set_config()
    changed.generator.guidance = 2.5
    real_write, real_replace = ckpt.atomic_write, ckpt.os.replace

    def write(path, fn):
        if kill_at == "manifest" and Path(path).name == "manifest.json":
            raise KeyboardInterrupt
        return real_write(path, fn)

    def replace(src, dst):
        if kill_at == "move" and str(src).endswith(ckpt.STAGED):
            raise KeyboardInterrupt
        return real_replace(src, dst)
    monkeypatch.setattr(ckpt, "atomic_write", write)
    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        w = ckpt.ModelSetWriter(tmp_path)
        w.config(changed)
        w.commit()
    monkeypatch.undo()
    ckpt.verify(tmp_path)
    assert ckpt.read_config(tmp_path) == (config if kill_at == "manifest" else changed)
    # and a later export goes through normally
    w = ckpt.ModelSetWriter(tmp_path)
    w.config(changed)
    w.commit()
    assert ckpt.read_config(tmp_path) == changed and ckpt.verify(tmp_path)


def test_config_validate_names_the_retrieval_metrics():
    config = tiny_set_config()
    config.img2id.metric = "cosine"
    config.validate()
    config.img2id.metric = "angle"
    with pytest.raises(ValueError, match="img2id.metric must be one of euclidean, cosine"):
        config.validate()
