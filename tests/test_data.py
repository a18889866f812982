"""Tests for core.data: Market-1501 names, folder listing, image decoding and packs."""
from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.data import (
    DataError,
    Record,
    Split,
    dataset_splits,
    list_records,
    load_image,
    load_split,
    pack_split,
    parse_name,
)

# ---------------------------------------------------------------- parse_name

@pytest.mark.parametrize("name, expected", [
    ("0002_c2s1_000351_01.jpg", (2, 2)),
    ("-1_c1s1_000401_03.jpg", (-1, 1)),
    ("0000_c3s1_107067_00.jpg", (0, 3)),
    ("1501_c6s4_002427_02.JPG", (1501, 6)),
    ("some/dir/0011_c4s3_064169_01.png", (11, 4)),
])
def test_parse_name_real_market_names(name, expected):
    assert parse_name(name) == expected


@pytest.mark.parametrize("name", [
    "foo.jpg", "Thumbs.db", "0002_c2_000351_01.jpg", "0002_c2s1_000351.jpg",
    "a002_c2s1_000351_01.jpg", "-2_c1s1_000401_03.jpg", "0002_c2s1_000351_01", "",
])
def test_parse_name_rejects_bad_names(name):
    with pytest.raises(DataError) as info:
        parse_name(name)
    assert name in str(info.value)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- list_records

def test_list_records_sorted_and_ignores_non_images(market_dir):
    folder = market_dir / "bounding_box_train"
    recs = list_records(folder)
    names = [os.path.basename(r.path) for r in recs]
    assert len(recs) == 16
    assert names == sorted(names)
    assert "Thumbs.db" not in names
    assert {r.pid for r in recs} == {2, 5, 7, 11}
    assert {r.camid for r in recs} == {1, 2}
    assert recs[0] == Record(str(folder / names[0]), 2, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recs[0].pid = 3


def test_list_records_drops_junk_keeps_distractors(market_dir):
    gallery = market_dir / "bounding_box_test"
    pids = [r.pid for r in list_records(gallery)]
    assert -1 not in pids and 0 in pids and len(pids) == 8
    all_pids = [r.pid for r in list_records(gallery, keep_junk=True)]
    assert -1 in all_pids and len(all_pids) == 9


def test_list_records_missing_and_empty_folders(tmp_path, market_dir):
    with pytest.raises(DataError, match="nowhere"):
        list_records(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "Thumbs.db").write_bytes(b"x")
    with pytest.raises(DataError, match="empty"):
        list_records(tmp_path / "empty")
    with pytest.raises(DataError, match="bounding_box_train") as info:
        list_records(market_dir)  # a dataset root, not an image folder
    assert "dataset root" in str(info.value)


def test_list_records_bad_name_raise_or_skip(market_dir):
    folder = market_dir / "query"
    shutil.copy(next(folder.glob("*.jpg")), folder / "holiday_photo.jpg")
    with pytest.raises(DataError, match="holiday_photo.jpg"):
        list_records(folder)
    with pytest.warns(UserWarning, match="holiday_photo.jpg"):
        recs = list_records(folder, on_error="skip")
    assert len(recs) == 3
    with pytest.raises(ValueError, match="skip"):
        list_records(folder, on_error="ignore")


# ---------------------------------------------------------------- load_image

def _truncate_copy(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_truncated_jpeg_raises_even_if_pillow_is_lenient(market_dir, monkeypatch):
    folder = market_dir / "query"
    bad = _truncate_copy(next(folder.glob("*.jpg")), folder / "0099_c1s1_000001_00.jpg")
    with pytest.raises(DataError, match="0099_c1s1_000001_00.jpg"):
        load_image(bad, (64, 32))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some libraries set it
    with pytest.raises(DataError, match="0099_c1s1_000001_00.jpg"):
        load_image(bad, (64, 32))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_truncated_jpeg_in_split_raise_or_skip(market_dir):
    folder = market_dir / "query"
    _truncate_copy(next(folder.glob("*.jpg")), folder / "0099_c1s1_000001_00.jpg")
    with pytest.raises(DataError, match="0099_c1s1_000001_00.jpg"):
        load_split(folder)
    with pytest.warns(UserWarning, match="0099_c1s1_000001_00.jpg"):
        split = load_split(folder, on_error="skip")
    assert len(split) == 3 and 99 not in split.pids
    assert split.images.shape == (3, 64, 32, 3)


def test_not_an_image_raises(tmp_path):
    bad = tmp_path / "0001_c1s1_000001_00.png"
    bad.write_bytes(b"definitely not a png")
    with pytest.raises(DataError, match="0001_c1s1_000001_00.png"):
        load_image(bad, (8, 4))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "P-transparent", "I;16", "CMYK", "1", "LA"])
def test_any_mode_loads_as_rgb_uint8(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 14, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((rng.integers(0, 65536, (30, 14))).astype(np.uint16))
    elif mode == "P-transparent":
        img = rgb.convert("P")
        img.info["transparency"] = 0
    else:
        img = rgb.convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path, transparency=0) if mode == "P-transparent" else img.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warnings either
        arr = load_image(path, (24, 12))
    assert arr.shape == (24, 12, 3) and arr.dtype == np.uint8


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    data = np.full((10, 6), 65535, dtype=np.uint16)
    data[5:] = 32896
    Image.fromarray(data).save(tmp_path / "deep.png")
    arr = load_image(tmp_path / "deep.png", (10, 6))
    assert np.all(arr[:5] == 255) and np.all(arr[5:] == 128)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    arr = load_image(tmp_path / "rot.jpg", (40, 20)).astype(int)
    assert arr.shape == (40, 20, 3)
    assert arr[:15, :, 0].mean() > 200 and arr[:15, :, 2].mean() < 50   # top is red
    assert arr[25:, :, 2].mean() > 200 and arr[25:, :, 0].mean() < 50   # bottom is blue


def test_load_image_resizes_to_height_width(market_dir):
    path = next((market_dir / "query").glob("*.jpg"))
    assert load_image(path, (128, 48)).shape == (128, 48, 3)


# ---------------------------------------------------------------- load_split / Split

def test_load_split_folder(market_dir):
    split = load_split(market_dir / "bounding_box_train")
    assert isinstance(split, Split)
    assert len(split) == 16 and split.size == (64, 32)
    assert split.images.shape == (16, 64, 32, 3) and split.images.dtype == np.uint8
    assert split.pids.dtype == np.int64 and split.camids.dtype == np.int64
    assert split.names == sorted(split.names) and "Thumbs.db" not in split.names
    assert [parse_name(n) for n in split.names] == list(zip(split.pids, split.camids))
    assert list(split.pids) == [2] * 4 + [5] * 4 + [7] * 4 + [11] * 4

    gallery = load_split(market_dir / "bounding_box_test", size=(32, 16))
    assert gallery.images.shape == (8, 32, 16, 3)
    assert 0 in gallery.pids and -1 not in gallery.pids
    query = load_split(str(market_dir / "query"))
    assert list(query.pids) == [3, 8, 13] and list(query.camids) == [1, 1, 1]


def test_identity_colours_survive_loading(market_dir):
    split = load_split(market_dir / "bounding_box_train")
    upper = split.images[:, :32].reshape(16, -1, 3).mean(axis=1)
    red = upper[split.pids == 2]
    assert np.all(red[:, 0] > 180) and np.all(red[:, 1] < 70)


def test_relabel_orders_by_pid():
    split = Split(images=np.zeros((5, 2, 1, 3), np.uint8), pids=np.array([11, 2, 7, 2, 5]),
                  camids=np.ones(5, np.int64), names=list("abcde"))
    labels, pids = split.relabel()
    assert list(labels) == [3, 0, 2, 0, 1] and list(pids) == [2, 5, 7, 11]
    assert labels.dtype == np.int64


def test_relabel_on_train_split(market_dir):
    labels, pids = load_split(market_dir / "bounding_box_train").relabel()
    assert list(pids) == [2, 5, 7, 11]
    assert list(labels) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4


def test_load_split_bad_arguments(market_dir, tmp_path):
    with pytest.raises(ValueError, match="raise"):
        load_split(market_dir / "query", on_error="warn")
    with pytest.raises(DataError, match="missing.npz"):
        load_split(tmp_path / "missing.npz")


# ---------------------------------------------------------------- packs

def test_pack_round_trip(market_dir, tmp_path):
    folder = market_dir / "bounding_box_test"
    out = tmp_path / "packs" / "gallery.npz"  # parent does not exist yet
    assert pack_split(folder, out) == 8
    assert sorted(os.listdir(out.parent)) == ["gallery.npz"]  # no temporary left behind
    with np.load(out, allow_pickle=False) as z:  # plain arrays only
        assert z["sheets"].dtype == np.uint8 and z["offsets"].dtype == np.int64
    direct, packed = load_split(folder), load_split(out)
    assert packed.names == direct.names
    assert np.array_equal(packed.pids, direct.pids) and np.array_equal(packed.camids, direct.camids)
    assert packed.images.shape == direct.images.shape and packed.images.dtype == np.uint8
    diff = np.abs(packed.images.astype(int) - direct.images.astype(int)).mean()
    assert diff < 3, diff
    assert load_split(str(out), size=(64, 32)).names == direct.names


def test_pack_tiles_hold_the_pixels_of_each_image_alone(market_dir, tmp_path, monkeypatch):
    """Sheets of 2 x 2 tiles: 8 gallery images span two sheets; each tile decodes to exactly
    the pixels of that image's own JPEG (its blocks never mix with a neighbour's)."""
    import io

    import core.data as data
    monkeypatch.setattr(data, "PACK_SHEET", 2)
    folder, out = market_dir / "bounding_box_test", tmp_path / "g.npz"
    assert pack_split(folder, out, quality=90) == 8
    with np.load(out, allow_pickle=False) as z:
        assert len(z["offsets"]) == 3  # two sheets
    direct, packed = load_split(folder), load_split(out)
    for img, got in zip(direct.images, packed.images, strict=True):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90, subsampling=0)
        assert np.array_equal(np.asarray(Image.open(buf)), got)
    # a size off the 8-pixel grid still round-trips (its tiles are padded to 32 x 24 cells)
    pack_split(folder, tmp_path / "odd.npz", size=(30, 20))
    odd, plain = load_split(tmp_path / "odd.npz", size=(30, 20)), load_split(folder, (30, 20))
    assert odd.images.shape == plain.images.shape
    assert np.abs(odd.images.astype(int) - plain.images.astype(int)).mean() < 3


def test_pack_unreadable_sheet(market_dir, tmp_path, monkeypatch):
    import core.data as data
    monkeypatch.setattr(data, "PACK_SHEET", 2)
    out = tmp_path / "g.npz"
    pack_split(market_dir / "bounding_box_test", out)
    with np.load(out, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    sheets, off = arrays["sheets"].copy(), arrays["offsets"]
    sheets[off[0] + 200:off[1]] = 0  # the first sheet's scan data wiped
    arrays["sheets"] = sheets
    np.savez(out, **arrays)
    with pytest.raises(DataError, match=r"g.npz\[sheet 0\]"):
        load_split(out)
    with pytest.warns(UserWarning, match="4 images"):
        kept = load_split(out, on_error="skip")
    assert kept.names == load_split(market_dir / "bounding_box_test").names[4:]


def test_pack_overwrite_is_atomic_replace(market_dir, tmp_path):
    out = tmp_path / "q.npz"
    out.write_bytes(b"old")
    assert pack_split(market_dir / "query", out, size=(32, 16), quality=80) == 3
    assert load_split(out, size=(32, 16)).size == (32, 16)


def test_pack_size_mismatch(market_dir, tmp_path):
    out = tmp_path / "q.npz"
    pack_split(market_dir / "query", out, size=(32, 16))
    with pytest.raises(DataError) as info:
        load_split(out, size=(64, 32))
    msg = str(info.value)
    assert "(32, 16)" in msg and "(64, 32)" in msg and "pack_split" in msg and "q.npz" in msg


def test_pack_wrong_or_missing_format(tmp_path):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, format=np.array("something-else/9"), jpeg=np.zeros(1, np.uint8))
    with pytest.raises(DataError, match="wrong.npz"):
        load_split(wrong)
    missing = tmp_path / "missing_format.npz"
    np.savez(missing, jpeg=np.zeros(1, np.uint8))
    with pytest.raises(DataError, match="missing_format.npz"):
        load_split(missing)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="garbage.npz"):
        load_split(garbage)


def test_pack_skip_unreadable(market_dir, tmp_path):
    folder = market_dir / "query"
    _truncate_copy(next(folder.glob("*.jpg")), folder / "0099_c1s1_000001_00.jpg")
    with pytest.raises(DataError, match="0099"):
        pack_split(folder, tmp_path / "q.npz")
    assert not (tmp_path / "q.npz").exists()
    with pytest.warns(UserWarning, match="0099"):
        assert pack_split(folder, tmp_path / "q.npz", on_error="skip") == 3


# ---------------------------------------------------------------- dataset_splits

def test_dataset_splits(market_dir):
    paths = dataset_splits(market_dir, required=("train", "query", "gallery"))
    assert paths == {"train": str(market_dir / "bounding_box_train"),
                     "query": str(market_dir / "query"),
                     "gallery": str(market_dir / "bounding_box_test")}


def test_dataset_splits_missing(market_dir, tmp_path):
    shutil.rmtree(market_dir / "query")
    with pytest.raises(DataError) as info:
        dataset_splits(market_dir)
    assert "query" in str(info.value) and str(market_dir) in str(info.value)
    assert "bounding_box_test" not in str(info.value)
    assert set(dataset_splits(market_dir, required=("train", "gallery"))) == {"train", "gallery"}
    with pytest.raises(DataError, match="bounding_box_test"):
        dataset_splits(market_dir / "bounding_box_train", required=("gallery",))
    with pytest.raises(DataError, match="nope"):
        dataset_splits(tmp_path / "nope")
    with pytest.raises(ValueError, match="valid"):
        dataset_splits(market_dir, required=("val",))
