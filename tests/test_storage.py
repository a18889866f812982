"""Weight storage of a model set: float16 (the default) or int8 per part (`genreid store`)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core import checkpoint as ckpt
from core import cli
from core.api import GenReID, store_parts
from core.config import ModelSetConfig
from core.models import Generator, Img2ID

pytestmark = pytest.mark.usefixtures("one_thread")


def _stored_file(folder, part):
    state = {}
    for name in ckpt.part_files(folder, part):
        state.update(load_file(str(folder / name)))
    return state


def _net(config):
    torch.manual_seed(0)
    net = Img2ID(config.img2id, tuple(config.image_size))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the zero-initialised head, channels of unlike scales
        for p in net.parameters():
            scale = torch.rand(p.shape[0], generator=g).reshape(-1, *[1] * (p.dim() - 1)) * 0.5
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net


def _write(folder, config, net):
    w = ckpt.ModelSetWriter(folder)
    w.config(config)
    w.identities([1, 2], "test")
    w.weights("img2id", net)
    w.commit()


def test_int8_storage_rounds_each_output_channel_to_its_own_scale(tmp_path):
    from conftest import tiny_model_config

    config = tiny_model_config()
    config.storage = {"img2id": "int8"}
    net = _net(config)
    _write(tmp_path, config, net)
    stored = _stored_file(tmp_path, "img2id")
    loaded = ckpt.load_weights(tmp_path, "img2id", Img2ID(config.img2id, tuple(config.image_size)))
    matrices = 0
    for k, original in net.state_dict().items():
        back = loaded.state_dict()[k]
        assert back.dtype == original.dtype, k
        if not original.is_floating_point():
            assert torch.equal(back, original), k
        elif original.dim() >= 2:
            matrices += 1
            assert stored[k].dtype == torch.int8 and stored[k + ckpt.SCALE].dtype == torch.float32
            rows = original.reshape(len(original), -1)
            step = rows.abs().amax(1) / 127  # one rounding step per output channel
            err = (back - original).reshape(len(original), -1).abs().amax(1)
            assert torch.all(err <= step / 2 * 1.001 + 1e-12), k
            assert stored[k].abs().amax() == 127  # the largest weight uses the whole range
        else:  # biases and normalisation parameters stay float16
            assert stored[k].dtype == torch.float16
            assert torch.equal(back, original.half().float()), k
    assert matrices >= 4


def test_int8_takes_about_half_the_bytes_and_the_writer_keeps_the_sets_storage(tmp_path):
    from conftest import tiny_model_config

    config = tiny_model_config()
    net = _net(config)
    _write(tmp_path / "half", config, net)
    config.storage = {"img2id": "int8"}
    _write(tmp_path / "int8", config, net)
    size = {k: sum((tmp_path / k / n).stat().st_size for n in ckpt.part_files(tmp_path / k, "img2id"))
            for k in ("half", "int8")}
    assert 0.45 < size["int8"] / size["half"] < 0.6
    # A later export that does not pass the config (as the inverters' training saves do)
    # reads the set's storage from its config.json.
    w = ckpt.ModelSetWriter(tmp_path / "int8")
    w.weights("img2id", net)
    w.commit()
    assert any(v.dtype == torch.int8 for v in _stored_file(tmp_path / "int8", "img2id").values())
    assert ckpt.verify(tmp_path / "int8")


@pytest.mark.parametrize("storage, message", [
    ({"img2id": "int4"}, "int4"), ({"decoder": "int8"}, "decoder"), (["img2id"], "object")])
def test_a_bad_storage_in_the_config_is_named(storage, message):
    data = ModelSetConfig().to_dict()
    data["storage"] = storage
    with pytest.raises(ValueError, match=message):
        ModelSetConfig.from_dict(data).validate()


def test_genreid_store_rewrites_parts_in_place_and_back(explorer_model_set, tmp_path, capsys):
    folder = tmp_path / "set"
    shutil.copytree(explorer_model_set.full, folder)
    pictures = (np.random.default_rng(0).random((6, 64, 32, 3)) * 255).astype(np.uint8)
    before = GenReID.load(folder, device="cpu", precision="fp32").encode(pictures)
    assert cli.main(["store", "--checkpoint", str(folder), "--parts", "img2id,img2noise",
                     "--as", "int8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["bytes"]) == {"img2id", "img2noise"}
    assert json.loads((folder / "config.json").read_text())["storage"] == \
        {"img2id": "int8", "img2noise": "int8"}
    ckpt.verify(folder)
    model = GenReID.load(folder, device="cpu", precision="fp32")
    after = model.encode(pictures)
    # the identities move by a small fraction of their spread
    assert np.abs(after - before).max() < 0.05 * before.std() + 1e-6
    assert model.decompose(pictures[:2]).error.shape == (2,)
    # the generator, not named, is untouched
    gen = ckpt.part_files(explorer_model_set.full, "generator")
    assert ckpt.part_files(folder, "generator") == gen
    # storing again is a no-op on the bytes: int8 values re-round to themselves
    names = ckpt.part_files(folder, "img2id")
    assert store_parts(folder, {"img2id": "int8"})
    assert ckpt.part_files(folder, "img2id") == names


def test_genreid_store_names_a_part_the_set_lacks(explorer_model_set, tmp_path, capsys):
    folder = tmp_path / "set"
    shutil.copytree(explorer_model_set.generator_only, folder)
    before = sorted(p.name for p in folder.iterdir())
    assert cli.main(["store", "--checkpoint", str(folder), "--parts", "img2id",
                     "--as", "int8"]) == 2
    assert "has no img2id" in capsys.readouterr().err
    assert cli.main(["store", "--checkpoint", str(folder), "--parts", "img2id,",
                     "--as", "int8"]) == 2
    assert "unknown part(s) ''" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_genreid_configure_changes_settings_and_refuses_what_would_break(explorer_model_set,
                                                                       tmp_path, capsys):
    folder = tmp_path / "set"
    shutil.copytree(explorer_model_set.full, folder)
    assert cli.main(["configure", "--checkpoint", str(folder), "img2id.flip=true",
                     "img2id.metric=cosine", "generator.guidance=1"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "img2id.flip": True, "img2id.metric": "cosine", "generator.guidance": 1.0}
    ckpt.verify(folder)  # the manifest holds the new config.json
    config = ckpt.read_config(folder)
    assert config.img2id.flip and config.img2id.metric == "cosine"
    assert config.generator.guidance == 1.0
    before = (folder / "config.json").read_text()
    for setting, message in [("img2id.flip=yes", "takes a bool"),
                             ("img2id.metric=manhattan", "img2id.metric must be"),
                             ("img2id.dense=[4]", "no longer load"),
                             ("img2id.colour=1", "not a setting"),
                             ("img2id.unet=1", "not a setting"),
                             ("storage.img2id=int8", "genreid store")]:
        assert cli.main(["configure", "--checkpoint", str(folder), setting]) == 2, setting
        assert message in capsys.readouterr().err, setting
        assert (folder / "config.json").read_text() == before, setting
    ckpt.verify(folder)


def _stored_kinds(folder, part):
    return {v.dtype for v in _stored_file(folder, part).values()}


def test_a_resumed_export_keeps_the_settings_and_storage_given_to_the_set(market_dir, tmp_path):
    """`genreid configure` / `store` on an exported set survive the next export of the same
    training run, except a setting that run is given explicitly (--guidance, --bnneck)."""
    from conftest import tiny_model_config

    tiny_model_config(guidance=2.0).save(tmp_path / "tiny.json")
    data = str(market_dir / "bounding_box_train")
    common = ["--batch-size", "4", "--device", "cpu", "--save-every", "2"]
    out, runs = tmp_path / "set", tmp_path / "runs"

    def generator(steps, *extra):
        assert cli.main(["train", "generator", "--data", data, "--out", str(out), "--config",
                         str(tmp_path / "tiny.json"), "--work-dir", str(runs / "generator"),
                         "--steps", str(steps), *extra] + common) == 0

    generator(2)
    assert cli.main(["configure", "--checkpoint", str(out), "generator.guidance=1.5",
                     "preview.steps=2", "img2id.flip=true"]) == 0
    assert cli.main(["store", "--checkpoint", str(out), "--parts", "generator", "--as", "int8"]) == 0
    generator(4)  # resumes and exports
    config = ckpt.read_config(out)
    assert (config.generator.guidance, config.preview.steps, config.img2id.flip) == (1.5, 2, True)
    assert config.storage == {"generator": "int8"} and torch.int8 in _stored_kinds(out, "generator")
    generator(6, "--guidance", "0.5")
    assert ckpt.read_config(out).generator.guidance == 0.5
    assert ckpt.read_config(out).preview.steps == 2

    base = tmp_path / "baseline"

    def baseline(steps, *extra):
        assert cli.main(["train", "baseline", "--data", data, "--out", str(base), "--config",
                         str(tmp_path / "tiny.json"), "--work-dir", str(runs / "baseline"),
                         "--steps", str(steps), "--instances", "2", *extra] + common) == 0

    baseline(2)
    assert cli.main(["configure", "--checkpoint", str(base), "img2id.flip=true",
                     "img2id.metric=cosine"]) == 0
    assert cli.main(["store", "--checkpoint", str(base), "--parts", "img2id", "--as", "int8"]) == 0
    baseline(4)
    config = ckpt.read_config(base)
    assert (config.img2id.flip, config.img2id.metric, config.storage) == \
        (True, "cosine", {"img2id": "int8"})
    assert torch.int8 in _stored_kinds(base, "img2id")
    assert cli.main(["configure", "--checkpoint", str(base), "img2id.metric=euclidean"]) == 0
    baseline(6, "--bnneck")  # the neck's features are compared by angle, whatever the set said
    assert ckpt.read_config(base).img2id.metric == "cosine"
    assert ckpt.read_config(base).img2id.flip


def _changed_generator_set(source, folder, config=None, seed=7):
    """A copy of `source` whose generator has other weights (as after more training), or, with
    `config`, another architecture."""
    shutil.copytree(source, folder)
    config = config or ckpt.read_config(folder)
    torch.manual_seed(seed)
    net = Generator(config.generator)
    w = ckpt.ModelSetWriter(folder)
    w.config(config)
    w.weights("generator", net)
    w.commit()
    return net


def test_genreid_replace_takes_a_part_from_another_set_and_names_what_is_stale(
        explorer_model_set, tmp_path, capsys):
    folder = tmp_path / "set"
    shutil.copytree(explorer_model_set.full, folder)
    net = _changed_generator_set(explorer_model_set.generator_only, tmp_path / "more")
    config_before = (folder / "config.json").read_text()
    img2id_before = ckpt.part_files(folder, "img2id")
    assert cli.main(["replace", "--checkpoint", str(folder), "--from", str(tmp_path / "more"),
                     "--parts", "generator"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["replaced"] == ["generator"]
    assert report["trained_on_the_old"] == ["preview", "prior", "img2id", "img2noise"]
    assert "train them again" in err
    ckpt.verify(folder)
    config = ckpt.read_config(folder)
    loaded = ckpt.load_weights(folder, "generator", Generator(config.generator))
    for (name, a), b in zip(loaded.state_dict().items(), net.state_dict().values()):
        expected = b.half().to(b.dtype) if b.is_floating_point() else b  # stored as float16
        assert torch.equal(a, expected), name
    assert (folder / "config.json").read_text() == config_before
    assert ckpt.part_files(folder, "img2id") == img2id_before
    model = GenReID.load(folder, device="cpu", precision="fp32")
    assert model.generate(model.table_identities([0]), model.noise(1, seed=0)).shape[0] == 1


def test_genreid_replace_from_several_sets_takes_the_mean_of_their_weights(
        explorer_model_set, tmp_path, capsys):
    folder = tmp_path / "set"
    shutil.copytree(explorer_model_set.full, folder)
    snapshots = [tmp_path / f"snap{i}" for i in range(3)]
    nets = [_changed_generator_set(explorer_model_set.generator_only, s, seed=i)
            for i, s in enumerate(snapshots)]
    assert cli.main(["replace", "--checkpoint", str(folder), "--from", *map(str, snapshots),
                     "--parts", "generator"]) == 0
    assert json.loads(capsys.readouterr().out)["from"] == list(map(str, snapshots))
    config = ckpt.read_config(folder)
    loaded = ckpt.load_weights(folder, "generator", Generator(config.generator)).state_dict()
    checked = 0
    for name, a in loaded.items():
        stored = [n.state_dict()[name] for n in nets]  # each snapshot was stored in float16
        if not a.is_floating_point():
            assert torch.equal(a, stored[-1]), name
            continue
        mean = torch.stack([s.half().float() for s in stored]).mean(0)
        assert torch.equal(a, mean.half().float()), name
        checked += int(not torch.equal(stored[0], stored[1]))
    assert checked > 10  # the snapshots differ, so the mean is none of them
    # one source of other persons among several refuses the whole change
    others = tmp_path / "others"
    _changed_generator_set(explorer_model_set.generator_only, others)
    w = ckpt.ModelSetWriter(others)
    w.identities(list(reversed(ckpt.read_identities(others))), "shuffled")
    w.commit()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert cli.main(["replace", "--checkpoint", str(folder), "--from", str(snapshots[0]),
                     str(others), "--parts", "generator"]) == 2
    assert "different persons" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_genreid_replace_refuses_other_persons_architectures_and_missing_parts(
        explorer_model_set, tmp_path, capsys):
    folder = tmp_path / "set"
    shutil.copytree(explorer_model_set.full, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    config = ckpt.read_config(folder)
    wider = ModelSetConfig.from_dict(config.to_dict())
    wider.generator.id_dim += 4
    _changed_generator_set(explorer_model_set.generator_only, tmp_path / "wider", wider)
    others = tmp_path / "others"
    _changed_generator_set(explorer_model_set.generator_only, others)
    w = ckpt.ModelSetWriter(others)
    w.identities(list(reversed(ckpt.read_identities(others))), "shuffled")
    w.commit()
    for source, parts, message in [
            (tmp_path / "wider", "generator", "does not fit"),
            (others, "generator", "different persons"),
            (explorer_model_set.generator_only, "img2id", "has no img2id"),
            (explorer_model_set.full, "generator,", "unknown part(s) ''"),
            (tmp_path / "nowhere", "generator", "nowhere")]:
        assert cli.main(["replace", "--checkpoint", str(folder), "--from", str(source),
                         "--parts", parts]) == 2, message
        assert message in capsys.readouterr().err, message
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, message


def test_a_killed_bank_goes_on_where_it_stopped_and_ends_as_an_uninterrupted_one(
        tmp_path, monkeypatch):
    from core import bank as banks
    monkeypatch.setattr(banks, "CHUNK", 2)
    monkeypatch.setattr(banks, "SAVE_EVERY", 4)
    calls = []

    def make(n, rng, fail_at=None):
        calls.append(n)
        if len(calls) == fail_at:
            raise KeyboardInterrupt
        # Channels-last, as the sampler returns them: safetensors refuses to save such tensors
        # as they are, which once stopped every bank larger than SAVE_EVERY at its first save.
        z = torch.randn(n, 3, 4, 2, generator=rng).contiguous(memory_format=torch.channels_last)
        return z.clamp(-1, 1), torch.randn(n, 5, generator=rng), z

    straight = tmp_path / "bank-10-seed1.safetensors"
    banks.write_bank(straight, 10, seed=1, make=make)
    killed = tmp_path / "killed" / straight.name
    killed.parent.mkdir()
    calls.clear()
    with pytest.raises(KeyboardInterrupt):  # in the fourth chunk, after the save at 4 pictures
        banks.write_bank(killed, 10, seed=1, make=lambda n, rng: make(n, rng, fail_at=4))
    assert not killed.exists() and list(killed.parent.glob("*.safetensors")) == []
    calls.clear()
    banks.write_bank(killed, 10, seed=1, make=make)
    assert calls == [2, 2, 2]  # pictures 4-9 only
    a, b = load_file(str(straight)), load_file(str(killed))
    assert a.keys() == b.keys() == set(banks.KEYS)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert list(killed.parent.iterdir()) == [killed]  # the partial file is gone
