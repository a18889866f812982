"""Shared fixtures: a tiny generated dataset in the Market-1501 folder layout, a tiny model set
trained on it through the real CLI, and the explorer app started on a free loopback port."""
from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Iterator[Path]:
    """Commands' on-disk caches (core.disk_cache) go to a temporary folder, never the user's."""
    folder = tmp_path_factory.mktemp("genreid-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENREID_CACHE", str(folder))
        yield folder


IMAGE_HW = (64, 32)  # (height, width): the loader's default size, so nothing is resized
# Distinct (upper body, lower body) colours per person id, so tiny models can tell them apart.
COLOURS = {
    0: ((128, 128, 128), (90, 90, 90)),
    -1: ((20, 20, 20), (240, 240, 240)),
    2: ((220, 30, 30), (30, 30, 120)),
    3: ((30, 200, 40), (200, 200, 60)),
    5: ((30, 60, 220), (40, 40, 40)),
    7: ((240, 220, 40), (120, 60, 20)),
    8: ((200, 40, 200), (20, 140, 140)),
    11: ((40, 220, 220), (220, 120, 30)),
    13: ((250, 140, 180), (60, 110, 30)),
}
TRAIN_PIDS = (2, 5, 7, 11)
TEST_PIDS = (3, 8, 13)  # query/gallery identities, disjoint from train as in Market-1501


def _market_name(pid: int, cam: int, frame: int, box: int = 0) -> str:
    head = "-1" if pid == -1 else f"{pid:04d}"
    return f"{head}_c{cam}s1_{frame:06d}_{box:02d}.jpg"


def _write_person(path: Path, pid: int, rng: np.random.Generator) -> None:
    h, w = IMAGE_HW
    upper, lower = COLOURS[pid]
    img = np.empty((h, w, 3), dtype=np.float64)
    img[: h // 2] = upper
    img[h // 2:] = lower
    img += rng.normal(0.0, 12.0, size=img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=95)


def make_market_dataset(root: Path) -> Path:
    """Build a tiny deterministic Market-1501 style dataset under root; return root.

    train: pids 2, 5, 7, 11 x cameras 1, 2 x 2 images (16 images) plus a Thumbs.db;
    query: pids 3, 8, 13, one image each on camera 1;
    gallery: those pids x 2 images on camera 2, one more of pid 3 on camera 1,
    one distractor (0000) and one junk box (-1) -> 9 files, 8 once junk is dropped.
    """
    root = Path(root)
    rng = np.random.default_rng(1501)
    train, query, gallery = (root / d for d in ("bounding_box_train", "query", "bounding_box_test"))
    for d in (train, query, gallery):
        d.mkdir(parents=True, exist_ok=True)
    frame = 100
    for pid in TRAIN_PIDS:
        for cam in (1, 2):
            for box in range(2):
                frame += 25
                _write_person(train / _market_name(pid, cam, frame, box), pid, rng)
    (train / "Thumbs.db").write_bytes(b"\x00" * 64)  # real Market-1501 folders ship one
    for pid in TEST_PIDS:
        frame += 25
        _write_person(query / _market_name(pid, 1, frame), pid, rng)
        for box in range(2):
            frame += 25
            _write_person(gallery / _market_name(pid, 2, frame, box), pid, rng)
    _write_person(gallery / _market_name(TEST_PIDS[0], 1, frame + 25), TEST_PIDS[0], rng)
    _write_person(gallery / _market_name(0, 2, frame + 50), 0, rng)
    _write_person(gallery / _market_name(-1, 1, frame + 75, 3), -1, rng)
    return root



@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module, the previous count restored after it: the test networks
    are tiny, and on a CPU shared with another job the OpenMP workers of a second thread
    spin-wait and make each forward pass ~100x slower. Use: pytestmark = usefixtures."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

@pytest.fixture
def market_dir(tmp_path: Path) -> Path:
    """A fresh tiny Market-1501 style dataset root (see make_market_dataset)."""
    return make_market_dataset(tmp_path / "market")


# ----------------------------------------------------------------------------- explorer
EXPLORER_ID_DIM = 8


def tiny_model_config(dim: int = EXPLORER_ID_DIM, guidance: float = 0.0):
    """A model-set configuration small enough to train in a test (two-level U-Nets)."""
    from core.config import (
        GeneratorConfig,
        Img2IDConfig,
        Img2NoiseConfig,
        ModelSetConfig,
        PreviewConfig,
        PriorConfig,
        UNetConfig,
    )

    unet = UNetConfig(widths=[8, 16], block_depth=1)
    return ModelSetConfig(generator=GeneratorConfig(unet=unet, id_dim=dim, noise_embedding_dim=8,
                                                    guidance=guidance),
                          preview=PreviewConfig(unet=UNetConfig(widths=[4, 8], block_depth=1)),
                          prior=PriorConfig(id_dim=dim, hidden=32, layers=2, noise_embedding_dim=8),
                          img2id=Img2IDConfig(unet=unet, dense=[16], id_dim=dim),
                          img2noise=Img2NoiseConfig(unet=unet))


@pytest.fixture(scope="session")
def explorer_model_set(tmp_path_factory) -> SimpleNamespace:
    """A tiny model set trained (2 steps per network, the preview included) on the fixture
    dataset by `genreid train`; also a copy holding only the generator, as a set whose other
    networks are not trained yet."""
    from core import cli

    root = tmp_path_factory.mktemp("explorer")
    market = make_market_dataset(root / "market")
    tiny_model_config(EXPLORER_ID_DIM, guidance=2.0).save(root / "tiny.json")
    full, runs = root / "set", root / "runs"
    common = ["--steps", "2", "--batch-size", "4", "--device", "cpu", "--save-every", "2"]
    train = str(market / "bounding_box_train")
    assert cli.main(["train", "generator", "--data", train, "--out", str(full), "--config",
                     str(root / "tiny.json"), "--work-dir", str(runs / "generator")] + common) == 0
    generator_only = root / "generator-only"
    shutil.copytree(full, generator_only)
    assert cli.main(["train", "prior", "--checkpoint", str(full), "--work-dir",
                     str(runs / "prior")] + common) == 0
    assert cli.main(["train", "img2id", "--checkpoint", str(full), "--work-dir",
                     str(runs / "img2id")] + common) == 0
    assert cli.main(["train", "preview", "--checkpoint", str(full), "--work-dir",
                     str(runs / "preview")] + common) == 0
    assert cli.main(["train", "img2noise", "--checkpoint", str(full), "--data", train,
                     "--work-dir", str(runs / "img2noise")] + common) == 0
    return SimpleNamespace(full=full, generator_only=generator_only, market=market,
                           cache=root / "cache")


@pytest.fixture(scope="module")
def bare(explorer_model_set):
    """An ExplorerState over the tiny set with no dataset: galleries generated from prior samples."""
    from explorer.state import load_state

    return load_state(explorer_model_set.full, None, "cpu", cache_dir=explorer_model_set.cache,
                      background=False, num_prior=12, generated_identities=3,
                      generated_per_identity=2, set_portraits=False)


@contextlib.contextmanager
def running_explorer(model_set: SimpleNamespace, cache_dir: Path, *, data: bool = True,
                     timeout: float = 60.0, **state_options) -> Iterator[SimpleNamespace]:
    """The explorer app over model_set (with its dataset unless data=False) on a free loopback
    port, answering; yields .demo, .url (with a trailing slash) and .startup_s (seconds from the
    call until the server answered). Closed on exit."""
    from explorer.latency import running_app

    state_options.setdefault("num_prior", 12)
    start = time.perf_counter()
    with running_app(model_set.full, model_set.market if data else None, "cpu", timeout,
                     cache_dir=cache_dir, **state_options) as (url, demo):
        yield SimpleNamespace(demo=demo, url=url, startup_s=time.perf_counter() - start)
