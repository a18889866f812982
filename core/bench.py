"""Model-level speed measurements for `genreid bench`.

What one picture costs and what the machine can give: the float32 (and bfloat16) matmul peak,
the FLOPs of a whole 10-step sampling, and generation and encoding throughput for a naive
eager float32 run and for the optimised path the API uses (bfloat16 where native,
channels-last, the guidance's two passes batched), and for the explorer's fast preview.
Each rate is the best of repeated timed runs after a warm-up, so one-off costs do not count.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .api import GenReID
from .device import bf16_is_native
from .pipeline import generate


def timed_rate(run: Callable[[], object], items: int, min_seconds: float = 1.0,
               repeats: int = 3) -> float:
    """Items per second: the best of `repeats` timed rounds, each at least `min_seconds` long."""
    run()  # warm-up: allocations, oneDNN kernel choice
    best = 0.0
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            run()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = max(best, n * items / elapsed)
    return best


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, size: int = 2048,
                       device: str = "cpu", min_seconds: float = 1.0) -> float:
    """GFLOP/s of a large square matmul (2 n^3 FLOPs): what the machine's BLAS can reach."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def run():
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
    return timed_rate(run, 2 * size**3, min_seconds) / 1e9


def forward_gflop(net: torch.nn.Module, *inputs: torch.Tensor) -> float:
    """FLOPs of one forward pass (multiply-adds counted as 2), in GFLOP."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(*inputs)
    return counter.get_total_flops() / 1e9


def sampling_gflop(model: GenReID, part: str = "generator") -> float:
    """GFLOP of generating one picture: passes per step x steps x one pass."""
    net = model.networks[part]
    h, w = model.image_size
    one = forward_gflop(net, torch.zeros(1, 3, h, w, device=model.device),
                        torch.full((1, 1, 1, 1), 0.5, device=model.device),
                        torch.zeros(1, model.id_dim, device=model.device))
    passes = 2 if getattr(net, "config", None) is not None and net.config.guidance else 1
    return one * passes * model.config.schedule.steps


def naive_network(net: torch.nn.Module) -> torch.nn.Module:
    """A float32, contiguous-layout copy: the network as a plain eager PyTorch run holds it."""
    return copy.deepcopy(net).float().to(memory_format=torch.contiguous_format)


def generation_rates(model: GenReID, batches=(1, 8, 64), min_seconds: float = 1.0,
                     log: Callable[[str], None] = print) -> dict[str, dict[int, float]]:
    """Images/s of generation per batch size: naive and optimised (both the full sampler), and
    the explorer's fast preview."""
    g = torch.Generator().manual_seed(0)
    full = model.networks["generator"]
    naive = naive_network(full)
    h, w = model.image_size

    @torch.no_grad()
    def plain(identity, noise):
        generate(naive, identity, noise, model.config.schedule)

    paths = {"naive": (plain, "naive float32"),
             "optimized": (model.generate, f"optimised ({model.precision})"),
             "preview": (functools.partial(model.generate, preview=True),
                         f"fast preview ({model.preview_description()})")}
    rates: dict[str, dict[int, float]] = {name: {} for name in paths}
    for b in batches:
        rows = torch.randint(model.num_identities, (b,), generator=g)
        identity = full.identities.weight[rows.to(model.device)].float()
        noise = torch.randn(b, 3, h, w, generator=g).to(model.device)
        for name, (run, label) in paths.items():
            args = (identity, noise) if name == "naive" else (identity.cpu().numpy(), noise.cpu().numpy())
            slow = name == "naive" and b > 8  # tens of seconds a round: one round is enough
            rates[name][b] = timed_rate(functools.partial(run, *args), b, min_seconds,
                                        repeats=1 if slow else 3)
            log(f"  batch {b:>3}: {label} {rates[name][b]:.2f} images/s")
    return rates


def encoding_rates(model: GenReID, batch: int = 64, min_seconds: float = 1.0) -> dict[str, float]:
    """Img2ID images/s: naive float32 eager, and the API's optimised path."""
    h, w = model.image_size
    images = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).numpy()
    naive = naive_network(model.networks["img2id"])
    x = model.normalizer.encode(images).contiguous()

    def plain():
        with torch.no_grad():
            naive(x)
    return {"naive_img_s": timed_rate(plain, batch, min_seconds),
            "optimized_img_s": timed_rate(lambda: model.encode(images), batch, min_seconds),
            "gflop_per_image": forward_gflop(model.networks["img2id"], x[:1])}


def _gflops(value: float | None) -> str:
    return "not native (not measured)" if value is None else f"{value:.1f} GFLOP/s"


def model_benchmark(model: GenReID, batches=(1, 8, 64), min_seconds: float = 1.0,
                    log: Callable[[str], None] = print, matmul_size: int = 2048) -> dict:
    """Everything model-level, as one JSON-ready dict (generation figures at the largest batch)."""
    device = model.device.type
    log("matmul peak ...")
    peak32 = matmul_peak_gflops(torch.float32, matmul_size, device, min_seconds)
    # Only where bfloat16 is native: emulated (AVX2-only CPUs) it is ~10x slower than float32,
    # nothing uses it there, and a 2048^2 matmul in it takes minutes.
    peak16 = (matmul_peak_gflops(torch.bfloat16, matmul_size, device, min_seconds)
              if bf16_is_native(model.device) else None)
    gflop = sampling_gflop(model)
    log(f"  float32 {peak32:.1f} GFLOP/s, bfloat16 {_gflops(peak16)}; "
        f"one picture costs {gflop:.1f} GFLOP")
    log("generation ...")
    rates = generation_rates(model, batches, min_seconds, log)
    peak_opt = peak16 if model.precision == "bf16" and peak16 else peak32
    by_batch = {}
    for b in batches:
        by_batch[str(b)] = {"naive_img_s": rates["naive"][b], "optimized_img_s": rates["optimized"][b],
                            "naive_peak_fraction": rates["naive"][b] * gflop / peak32,
                            "optimized_peak_fraction": rates["optimized"][b] * gflop / peak_opt,
                            "preview_img_s": rates["preview"][b]}
    top = str(max(batches))
    generation = {**by_batch[top], "batch": int(top), "gflop_per_image": gflop,
                  "peak_gflops": peak32, "peak_gflops_bf16": peak16,
                  "precision": model.precision, "steps": model.config.schedule.steps,
                  "guidance": model.config.generator.guidance, "by_batch": by_batch}
    generation["preview"] = model.preview_description()
    generation["preview_gflop_per_image"] = (
        sampling_gflop(model, "preview") if model.has("preview")
        else gflop * model.config.preview.steps / model.config.schedule.steps)
    log("encoding ...")
    encoding = encoding_rates(model, min_seconds=min_seconds)
    log(f"  Img2ID: naive {encoding['naive_img_s']:.1f}, optimised "
        f"{encoding['optimized_img_s']:.1f} images/s")
    return {"machine": machine_description(model.device), "generation": generation,
            "encoding": encoding}


def fast_path_name(row: dict) -> str:
    """How a quality_report row names its path."""
    if row["preview"]:
        return "preview network"
    guided = row.get("guided_steps")
    return f"generator, {row['steps']} steps" + (f", {guided} guided" if guided else "")


def quality_report(model: GenReID, side_by_side: str | None = None,
                   log: Callable[[str], None] = print) -> list[dict]:
    """The quality cost of each fast path against the full generator at the schedule's steps:
    the generator in fewer steps (2 .. steps-1 of a few), and the preview network if any."""
    from PIL import Image

    from .diagnostics import fast_path_quality
    from .images import image_grid

    full_steps = model.config.schedule.steps
    shipped = (model.config.preview.steps, model.config.preview.guided_steps or None)
    paths = [(False, s, None) for s in sorted({2, 3, 4, 5, 6, shipped[0]}) if s < full_steps]
    if model.config.generator.guidance:  # guidance on the first steps only
        early = {(3, 1), (3, 2), (4, 2)} | ({shipped} if shipped[1] else set())
        paths += [(False, s, g) for s, g in sorted(early) if g < s < full_steps]
    if model.has("preview"):
        paths.append((True, None, None))
    rows, pictures = [], []
    for preview, steps, guided in paths:
        r = fast_path_quality(model, steps=steps, preview=preview, guided_steps=guided)
        full, fast = r.pop("grids")
        rows.append(r)
        log(f"  {fast_path_name(r)}: picture gap "
            f"{r['picture_gap']:.4f}, identity mAP {r.get('map_fast', float('nan')):.3f} "
            f"(full: {r.get('map_full', float('nan')):.3f})")
        if preview or (steps, guided) == shipped:
            pictures = [full, fast]
    if side_by_side and pictures:
        grids = [image_grid(g[:8].reshape(-1, *g.shape[2:]), min(8, len(g))) for g in pictures]
        gap = np.full((grids[0].shape[0], 8, 3), 255, np.uint8)
        Image.fromarray(np.concatenate([grids[0], gap, grids[1]], 1)).save(side_by_side)
        log(f"  wrote {side_by_side}: full (left) and the explorer's fast preview (right)")
    return rows


def machine_description(device: torch.device) -> dict:
    import os
    import platform

    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["processor"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def format_bench(result: dict) -> str:
    """The benchmark as plain-text tables."""
    lines = []
    if "machine" in result:
        m = result["machine"]
        lines.append(f"machine: {m['processor']}, {m['threads']} threads, torch {m['torch']}, "
                     f"{m['device']}" + (f" ({m['gpu']})" if "gpu" in m else ""))
    if "generation" in result:
        g = result["generation"]
        lines.append(f"matmul peak: float32 {g['peak_gflops']:.1f} GFLOP/s, bfloat16 "
                     f"{_gflops(g['peak_gflops_bf16'])}")
        lines.append(f"one picture ({g['steps']} steps, guidance {g['guidance']:g}): "
                     f"{g['gflop_per_image']:.1f} GFLOP"
                     + f"; fast preview ({g['preview']}) {g['preview_gflop_per_image']:.1f} GFLOP")
        lines.append("")
        lines.append(f"{'batch':>5} | {'naive fp32 img/s':>16} | {'% peak':>6} | "
                     f"{'optimised img/s':>15} | {'% peak':>6} | {'preview img/s':>13}")
        for b, row in g["by_batch"].items():
            lines.append(f"{b:>5} | {row['naive_img_s']:16.2f} | {100 * row['naive_peak_fraction']:5.1f}% | "
                         f"{row['optimized_img_s']:15.2f} | {100 * row['optimized_peak_fraction']:5.1f}% | "
                         f"{row['preview_img_s']:13.2f}")
        lines.append(f"(optimised: {g['precision']}, channels-last, guidance passes batched; "
                     "% peak of the matching precision's matmul peak)")
    if "encoding" in result:
        e = result["encoding"]
        lines.append(f"Img2ID encoding (batch 64): naive {e['naive_img_s']:.1f} img/s, optimised "
                     f"{e['optimized_img_s']:.1f} img/s ({e['gflop_per_image']:.2f} GFLOP each)")
    if "quality" in result:
        lines.append("")
        lines.append(f"{'fast path':<22} | {'picture gap':>11} | {'identity mAP':>12} | {'full mAP':>8}")
        for r in result["quality"]:
            lines.append(f"{fast_path_name(r):<22} | {r['picture_gap']:11.4f} | "
                         f"{r.get('map_fast', float('nan')):12.3f} | {r.get('map_full', float('nan')):8.3f}")
    if "panels" in result:
        lines.append("")
        lines.append(f"{'panel':<11} | {'p50 s':>6} | {'p95 s':>6} | {'calls':>5}")
        for name, p in result["panels"].items():
            lines.append(f"{name:<11} | {p['p50_s']:6.3f} | {p['p95_s']:6.3f} | {p['calls']:>5}")
    return "\n".join(lines)
