"""Pictures for the explorer: enlarged, labelled grids and strips, frames, a clickable scatter.

Everything takes and returns uint8 RGB arrays (H, W, 3); nothing here knows about Gradio.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SCALE = 3  # nearest-neighbour up-scaling of the 64x32 pictures
GREEN = (34, 160, 60)  # right person
RED = (214, 48, 48)  # wrong person
BLUE = (40, 90, 220)  # the query / the selected identity
GREY = (150, 150, 150)  # label unknown
REAL = (230, 159, 0)  # a real picture, beside generated ones
EDGE = (215, 215, 215)  # a neutral edge, so pale pictures (error maps) stay apart from the page
BACKGROUND = (255, 255, 255)
TEXT = (40, 40, 40)
FRAME = 4  # frame width in pixels (after up-scaling)
PAD = 8

# Categorical colours (Okabe-Ito, colour-blind safe) for sources and cameras.
PALETTE = [(0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
           (213, 94, 0), (240, 228, 66), (0, 0, 0)]


@lru_cache(maxsize=4)
def font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def upscale(image: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Nearest-neighbour enlargement of a uint8 (H, W, 3) picture."""
    return np.repeat(np.repeat(np.asarray(image, dtype=np.uint8), scale, 0), scale, 1)


def _text_size(draw: ImageDraw.ImageDraw, text: str, fnt) -> tuple[int, int]:
    if not text:
        return 0, 0
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=fnt, spacing=2)
    return right - left, bottom - top


def compose(cells: Sequence[Sequence[np.ndarray | None]], *,
            captions: Sequence[Sequence[str | None]] | None = None,
            row_labels: Sequence[str] | None = None,
            frames: Sequence[Sequence[tuple[int, int, int] | None]] | None = None,
            scale: int = SCALE, font_size: int = 14) -> np.ndarray:
    """One picture from a grid of pictures: a caption above each cell (may hold newlines),
    a label left of each row, an optional coloured frame around each cell. Cells may be None
    (left blank). All pictures must share one size."""
    rows = [list(r) for r in cells]
    if not rows or not any(c is not None for r in rows for c in r):
        raise ValueError("nothing to draw")
    first = next(c for r in rows for c in r if c is not None)
    h, w = first.shape[0] * scale, first.shape[1] * scale
    ncols = max(len(r) for r in rows)
    fnt = font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    cap_h = 0
    if captions is not None:
        cap_h = max((_text_size(probe, c or "", fnt)[1] for r in captions for c in r), default=0)
        cap_h = cap_h + 6 if cap_h else 0
    label_w = 0
    if row_labels is not None:
        label_w = max((_text_size(probe, t or "", fnt)[0] for t in row_labels), default=0)
        label_w = label_w + PAD if label_w else 0
    cell_w, cell_h = w + 2 * FRAME, h + 2 * FRAME + cap_h
    width = PAD + label_w + ncols * (cell_w + PAD)
    height = PAD + len(rows) * (cell_h + PAD)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        y0 = PAD + i * (cell_h + PAD)
        if row_labels is not None and i < len(row_labels) and row_labels[i]:
            tw, th = _text_size(draw, row_labels[i], fnt)
            draw.multiline_text((PAD, y0 + cap_h + FRAME + (h - th) // 2), row_labels[i],
                                fill=TEXT, font=fnt, spacing=2)
        for j, cell in enumerate(row):
            x0 = PAD + label_w + j * (cell_w + PAD)
            caption = captions[i][j] if captions is not None and j < len(captions[i]) else None
            if caption:
                tw, _ = _text_size(draw, caption, fnt)
                draw.multiline_text((x0 + max(0, (cell_w - tw) // 2), y0), caption, fill=TEXT,
                                    font=fnt, spacing=2, align="center")
            if cell is None:
                continue
            frame = frames[i][j] if frames is not None and j < len(frames[i]) else None
            if frame is not None:
                draw.rectangle([x0, y0 + cap_h, x0 + cell_w - 1, y0 + cap_h + h + 2 * FRAME - 1],
                               fill=tuple(frame))
            canvas.paste(Image.fromarray(upscale(cell, scale)), (x0 + FRAME, y0 + cap_h + FRAME))
    return np.asarray(canvas)


def strip(pictures: Sequence[np.ndarray], captions: Sequence[str | None] | None = None,
          frames: Sequence[tuple[int, int, int] | None] | None = None, **kw) -> np.ndarray:
    """One row of pictures with captions above and optional frames."""
    return compose([list(pictures)], captions=[list(captions)] if captions is not None else None,
                   frames=[list(frames)] if frames is not None else None, **kw)


def error_map(image: np.ndarray, reconstruction: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """|reconstruction - image| averaged over channels, times gain, as a grey picture."""
    diff = np.abs(reconstruction.astype(np.float32) - image.astype(np.float32)).mean(-1)
    grey = np.clip(diff * gain, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, -1)


def save_png(image: np.ndarray, path) -> str:
    # Fastest zlib level: 15 ms instead of 27 for a 12-picture grid, files about 10% larger.
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format="PNG", compress_level=1)
    return str(path)


def thumbnail_uri(image: np.ndarray) -> str:
    """A small inline JPEG (data: URI) of a picture, for hover tooltips."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------- clickable scatter
MAP_SIZE = (720, 540)  # width, height of the rendered projection
MAP_MARGIN = 24


def map_positions(coords: np.ndarray, size: tuple[int, int] = MAP_SIZE) -> np.ndarray:
    """Pixel positions (N, 2) of 2-D points on the rendered map (y up)."""
    coords = np.asarray(coords, dtype=np.float64)
    w, h = size
    lo, hi = coords.min(0), coords.max(0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    unit = (coords - lo) / span
    x = MAP_MARGIN + unit[:, 0] * (w - 2 * MAP_MARGIN)
    y = h - MAP_MARGIN - unit[:, 1] * (h - 2 * MAP_MARGIN)
    return np.stack([x, y], 1)


def nearest_point(positions: np.ndarray, xy: Sequence[float], radius: float = 14.0) -> int | None:
    """Index of the point nearest to pixel xy, or None if none lies within radius."""
    if not len(positions):
        return None
    d = np.hypot(positions[:, 0] - float(xy[0]), positions[:, 1] - float(xy[1]))
    i = int(np.argmin(d))
    return i if d[i] <= radius else None


def scatter_map(coords: np.ndarray, colours: np.ndarray, markers: Sequence[str],
                selected: int | None = None, size: tuple[int, int] = MAP_SIZE,
                legend: Sequence[tuple[str, tuple[int, int, int]]] = ()) -> np.ndarray:
    """Render 2-D points as a picture: colours (N, 3) uint8, markers 'o' (disc), 's' (square),
    'x' (cross); the selected point gets a blue ring; legend entries (text, colour) top left."""
    pos = map_positions(coords, size)
    canvas = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([MAP_MARGIN // 2, MAP_MARGIN // 2, size[0] - MAP_MARGIN // 2,
                    size[1] - MAP_MARGIN // 2], outline=(220, 220, 220))
    r = 4
    # Draw the biggest group first so that the smaller ones stay visible on top.
    order = np.argsort([{"x": 0, "o": 1, "s": 2}.get(m, 1) for m in markers], kind="stable")
    for i in order:
        (x, y), c, m = pos[i], tuple(int(v) for v in colours[i]), markers[i]
        if m == "s":
            draw.rectangle([x - r, y - r, x + r, y + r], fill=c, outline=(255, 255, 255))
        elif m == "x":
            draw.line([x - r, y - r, x + r, y + r], fill=c, width=2)
            draw.line([x - r, y + r, x + r, y - r], fill=c, width=2)
        else:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=c, outline=(255, 255, 255))
    if selected is not None and 0 <= selected < len(pos):
        x, y = pos[selected]
        draw.ellipse([x - 10, y - 10, x + 10, y + 10], outline=BLUE, width=3)
    fnt = font(12)
    for i, (text, colour) in enumerate(legend):
        y = MAP_MARGIN // 2 + 6 + 16 * i
        draw.rectangle([MAP_MARGIN // 2 + 6, y + 2, MAP_MARGIN // 2 + 16, y + 12],
                       fill=tuple(int(v) for v in colour))
        draw.text((MAP_MARGIN // 2 + 22, y), text, fill=TEXT, font=fnt)
    return np.asarray(canvas)


def continuous_colours(values: np.ndarray) -> np.ndarray:
    """uint8 (N, 3) colours of a continuous variable (viridis-like ramp, min..max)."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.nanmin(v), np.nanmax(v)
    t = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    stops = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
                     dtype=np.float64)
    pos = np.clip(t, 0, 1) * (len(stops) - 1)
    k = np.minimum(pos.astype(int), len(stops) - 2)
    frac = (pos - k)[:, None]
    return (stops[k] * (1 - frac) + stops[k + 1] * frac).round().astype(np.uint8)
