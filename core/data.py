"""Reading person re-id images laid out like Market-1501, and packing them into one file.

A dataset root holds ``bounding_box_train/``, ``query/`` and ``bounding_box_test/`` (the
gallery). Image names look like ``0002_c2s1_000351_01.jpg``: person id, camera, sequence,
frame, box index. Person id ``-1`` marks junk boxes, ``0000`` distractors.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .files import atomic_write

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
PACK_FORMAT = "core.data.pack/2"  # bump when the .npz layout changes
# A pack stores its images as tiles of a few large JPEG sheets rather than one JPEG each: the
# ~600 bytes of tables every small JPEG carries were a third of a 64x32 pack. Tiles sit on
# 8-pixel cells, so each one's JPEG blocks hold its own pixels only (the same pixels as a JPEG
# of that image alone). 32 x 32 tiles per sheet keeps a sheet's decode buffer small.
PACK_SHEET = 32
_ON_ERROR = ("raise", "skip")
# pid (-1 or digits) _c camera s sequence _ frame _ box . extension
_NAME_RE = re.compile(r"^(-1|\d+)_c(\d+)s\d+_\d+_\d+\.[A-Za-z]+$")


class DataError(ValueError):
    """Bad input data; the message names the offending folder or file."""


@dataclass(frozen=True)
class Record:
    path: str
    pid: int
    camid: int


def _check_on_error(on_error: str) -> None:
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")


def parse_name(name: str) -> tuple[int, int]:
    """Return (pid, camid) parsed from a Market-1501 style file name (a path is fine)."""
    m = _NAME_RE.match(os.path.basename(str(name)))
    if m is None:
        raise DataError(f"{name}: file name is not in the Market-1501 form "
                        "PPPP_cCsS_FFFFFF_NN.jpg (e.g. 0002_c2s1_000351_01.jpg)")
    return int(m.group(1)), int(m.group(2))


def list_records(folder, *, keep_junk: bool = False, on_error: str = "raise") -> list[Record]:
    """Image records of one folder, sorted by file name; junk (pid -1) dropped unless keep_junk."""
    _check_on_error(on_error)
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: image folder does not exist")
    # Sorted by name so that labels and pack contents never depend on listing order.
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTS))
    if not names:
        hint = ""
        if os.path.isdir(os.path.join(folder, SPLIT_DIRS["train"])):
            hint = (" (it looks like a dataset root: pass one of its subfolders "
                    f"{', '.join(SPLIT_DIRS.values())})")
        raise DataError(f"{folder}: no images ({'/'.join(IMAGE_EXTS)}) in this folder{hint}")
    records = []
    for name in names:
        try:
            pid, camid = parse_name(os.path.join(folder, name))
        except DataError:
            if on_error == "raise":
                raise
            warnings.warn(f"skipping {os.path.join(folder, name)}: name does not parse", stacklevel=2)
            continue
        if pid == -1 and not keep_junk:
            continue
        records.append(Record(os.path.join(folder, name), pid, camid))
    if not records:
        raise DataError(f"{folder}: no usable images (all junk or unparseable names)")
    return records


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit data: convert("RGB") would clip everything above 255 to white; scale instead.
        arr = np.asarray(img, dtype=np.float64) / (1.0 if img.mode == "F" else 257.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids Pillow's palette-transparency warning
    return img if img.mode == "RGB" else img.convert("RGB")


def prepare_image(img: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An in-memory picture (PIL image or uint8 array) as uint8 RGB (H, W, 3) at size=(H, W)."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img.astype(np.uint8) if img.dtype != np.uint16 else img)
    img = _to_rgb(ImageOps.exif_transpose(img))
    h, w = size
    if img.size != (w, h):
        img = img.resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8).copy()


def _decode(source, size: tuple[int, int], label: str, max_pixels: int | None = None) -> np.ndarray:
    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut-off file must fail, not be grey-padded
    try:
        with Image.open(source) as img:  # reads the header only
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:  # before decoding a single pixel
                raise DataError(f"{label}: {w}x{h} pixels is over the limit of "
                                f"{max_pixels / 1e6:g} megapixels")
            img.load()
            return prepare_image(img, size)
    except Image.DecompressionBombError as e:
        raise DataError(f"{label}: too many pixels to decode safely ({e})") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{label}: cannot read image ({e})") from e
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated


def _check_size(size) -> tuple[int, int]:
    if len(size) != 2 or min(int(s) for s in size) <= 0:
        raise ValueError(f"size must be positive (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def load_image(path, size: tuple[int, int], max_pixels: int | None = None) -> np.ndarray:
    """Read any image as uint8 RGB (H, W, 3), EXIF-rotated and bicubic-resized to size=(H, W);
    pictures over max_pixels are refused from their header, before decoding."""
    return _decode(os.fspath(path), _check_size(size), os.fspath(path), max_pixels)


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, H, W, 3) RGB
    pids: np.ndarray  # int64 (N,)
    camids: np.ndarray  # int64 (N,)
    names: list[str]  # file names, same order as images

    def __len__(self) -> int:
        return len(self.names)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the images."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def relabel(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels 0..K-1 per image, sorted unique pids): an identity's label is its pid rank."""
        uniq, labels = np.unique(self.pids, return_inverse=True)
        return labels.reshape(-1).astype(np.int64), uniq.astype(np.int64)


def _collect(items, size, on_error, where: str) -> Split:
    """items: (name, pid, camid, source, label) tuples; decode each, skipping failures if asked."""
    items = list(items)
    images = np.empty((len(items), size[0], size[1], 3), dtype=np.uint8)
    kept = []
    for name, pid, camid, source, label in items:
        try:
            images[len(kept)] = _decode(source, size, label)
        except DataError as e:
            if on_error == "raise":
                raise
            warnings.warn(f"skipping unreadable image: {e}", stacklevel=3)
            continue
        kept.append((name, pid, camid))
    if not kept:
        raise DataError(f"{where}: no readable images")
    return Split(images=images[:len(kept)],
                 pids=np.array([k[1] for k in kept], dtype=np.int64),
                 camids=np.array([k[2] for k in kept], dtype=np.int64),
                 names=[k[0] for k in kept])


def _load_pack(path: str, size: tuple[int, int], on_error: str) -> Split:
    try:
        with np.load(path, allow_pickle=False) as z:
            fmt = str(z["format"]) if "format" in z.files else None
            if fmt != PACK_FORMAT:
                raise DataError(f"{path}: not a pack of format {PACK_FORMAT} (found {fmt}); "
                                "re-create it with pack_split (genreid pack)")
            d = {k: z[k] for k in ("sheets", "offsets", "pids", "camids", "names", "size")}
    except DataError:
        raise
    except Exception as e:  # zip/npy errors come in many types; all mean "unreadable pack"
        raise DataError(f"{path}: cannot read pack file ({e})") from e
    stored = tuple(int(s) for s in d["size"])
    if stored != size:
        raise DataError(f"{path}: pack holds images of size {stored} (height, width) but size "
                        f"{size} was requested; pass size={stored} or re-pack with "
                        f"pack_split(folder, {path!r}, size={size})")
    off, n = d["offsets"], len(d["names"])
    per_sheet = PACK_SHEET * PACK_SHEET
    if (len(off) != -(-n // per_sheet) + 1 or len(d["pids"]) != n or len(d["camids"]) != n
            or off[0] != 0 or off[-1] != len(d["sheets"]) or np.any(np.diff(off) <= 0)):
        raise DataError(f"{path}: corrupt pack (inconsistent arrays)")
    cell = _cell(size)
    images = np.empty((n, *size, 3), dtype=np.uint8)
    kept = np.ones(n, dtype=bool)
    for s_i in range(len(off) - 1):
        first, count = s_i * per_sheet, min(per_sheet, n - s_i * per_sheet)
        rows = -(-count // PACK_SHEET)
        try:
            blob = io.BytesIO(d["sheets"][off[s_i]:off[s_i + 1]].tobytes())
            sheet = _decode(blob, (rows * cell[0], PACK_SHEET * cell[1]), f"{path}[sheet {s_i}]")
        except DataError as e:
            if on_error == "raise":
                raise
            warnings.warn(f"skipping {count} images of an unreadable pack sheet: {e}", stacklevel=2)
            kept[first:first + count] = False
            continue
        for j in range(count):
            r, c = divmod(j, PACK_SHEET)
            images[first + j] = sheet[r * cell[0]:r * cell[0] + size[0],
                                      c * cell[1]:c * cell[1] + size[1]]
    if not kept.any():
        raise DataError(f"{path}: no readable images")
    return Split(images=images[kept], pids=d["pids"][kept].astype(np.int64),
                 camids=d["camids"][kept].astype(np.int64),
                 names=[str(nm) for nm, k in zip(d["names"], kept) if k])


def _cell(size: tuple[int, int]) -> tuple[int, int]:
    """A tile's cell in a pack sheet: the image size rounded up to JPEG's 8-pixel blocks."""
    return -(-size[0] // 8) * 8, -(-size[1] // 8) * 8


def load_split(source, size: tuple[int, int] = (64, 32), *, on_error: str = "raise") -> Split:
    """Load an image folder (junk dropped) or a pack_split .npz file as a Split at size=(H, W)."""
    _check_on_error(on_error)
    size, source = _check_size(size), os.fspath(source)
    if os.path.isfile(source):
        return _load_pack(source, size, on_error)
    if source.lower().endswith(".npz"):
        raise DataError(f"{source}: pack file does not exist")
    records = list_records(source, on_error=on_error)
    items = ((os.path.basename(r.path), r.pid, r.camid, r.path, r.path) for r in records)
    return _collect(items, size, on_error, source)


def pack_split(folder, out_path, size: tuple[int, int] = (64, 32), quality: int = 95, *,
               on_error: str = "raise") -> int:
    """Resize a folder's images, tile them into JPEG sheets in one .npz at out_path; return
    the count."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    split = load_split(folder, size, on_error=on_error)
    cell, per_sheet, blobs = _cell(split.size), PACK_SHEET * PACK_SHEET, []
    for first in range(0, len(split), per_sheet):
        tiles = split.images[first:first + per_sheet]
        rows = -(-len(tiles) // PACK_SHEET)
        sheet = np.zeros((rows * cell[0], PACK_SHEET * cell[1], 3), dtype=np.uint8)
        pad = ((0, cell[0] - split.size[0]), (0, cell[1] - split.size[1]), (0, 0))
        for j, img in enumerate(tiles):
            r, c = divmod(j, PACK_SHEET)
            sheet[r * cell[0]:(r + 1) * cell[0], c * cell[1]:(c + 1) * cell[1]] = \
                np.pad(img, pad, mode="edge")
        buf = io.BytesIO()
        # 4:4:4 chroma: at 64x32 the default 4:2:0 subsampling visibly smears clothing colour;
        # optimised Huffman tables are lossless and ~15% smaller.
        Image.fromarray(sheet).save(buf, "JPEG", quality=int(quality), subsampling=0,
                                    optimize=True)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object, so np.savez does not append ".npz"
            # compressed: the JPEG sheets barely shrink, but the names (UTF-32) shrink ~20x
            np.savez_compressed(f, format=np.array(PACK_FORMAT), sheets=np.concatenate(blobs),
                                offsets=offsets, pids=split.pids, camids=split.camids,
                                names=np.array(split.names, dtype=str),
                                size=np.array(split.size, dtype=np.int64))

    atomic_write(out_path, write)
    return len(split)


def dataset_splits(root, required=("query", "gallery")) -> dict[str, str]:
    """Paths of a dataset root's train/query/gallery folders that exist; `required` must exist."""
    unknown = [r for r in required if r not in SPLIT_DIRS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; valid: {list(SPLIT_DIRS)}")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"{root}: dataset root does not exist")
    paths = {k: os.path.join(root, d) for k, d in SPLIT_DIRS.items()
             if os.path.isdir(os.path.join(root, d))}
    missing = [SPLIT_DIRS[r] for r in required if r not in paths]
    if missing:
        hint = ""
        with os.scandir(root) as it:  # closed explicitly: any() stops early
            holds_images = any(e.name.lower().endswith(IMAGE_EXTS) for e in it)
        if holds_images:
            hint = " (it holds images itself: pass the folder that contains these subfolders)"
        raise DataError(f"{root}: dataset root is missing {', '.join(missing)}{hint}")
    return paths
