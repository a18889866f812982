"""Hostile input: any upload, any parameter, and requests that try to reach the file system.

Every case ends in a correct result or a short gr.Error (the message a user reads), never
another exception; the server keeps serving afterwards.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from explorer import handlers as h
from explorer.latency import PANELS
from explorer.pictures import UPLOAD_MAX_PIXELS


def person(size=(64, 32), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def write(tmp_path: Path, name: str, make) -> str:
    path = tmp_path / name
    data = make()
    if isinstance(data, Image.Image):
        kwargs = {"transparency": 0} if name.startswith("palette-transparent") else {}
        data.save(path, **kwargs)
    else:
        path.write_bytes(data)
    return str(path)


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise on display
    return jpeg_bytes(person((32, 64)), exif=exif)  # stored lying down, shown upright


GOOD = {  # decoded into a correct result
    "grayscale.png": lambda: person().convert("L"),
    "deep16.png": lambda: Image.fromarray(
        np.random.default_rng(1).integers(0, 65535, (64, 32)).astype(np.uint16)),
    "rgba.png": lambda: person().convert("RGBA"),
    "palette.png": lambda: person().convert("P"),
    "palette-transparent.png": lambda: person().convert("P"),
    "cmyk.jpg": lambda: person().convert("CMYK"),
    "bilevel.png": lambda: person().convert("1"),
    "one-pixel.png": lambda: person((1, 1)),
    "wide.png": lambda: person((10, 300)),
    "exif-rotated.jpg": exif_rotated,
    "webp.webp": lambda: person(),
    "gif.gif": lambda: person().convert("P"),
}
BAD = {  # refused with a clear message
    "not-an-image.jpg": lambda: b"this is plain text, not a picture",
    "empty.png": lambda: b"",
    "truncated.jpg": lambda: jpeg_bytes(person((256, 128)))[:600],
    "bomb.png": lambda: png_claiming(30000, 30000),
    "just-over.png": lambda: png_claiming(UPLOAD_MAX_PIXELS // 1000 + 1, 1000),
    "html.png": lambda: b"<html><script>alert(1)</script></html>",
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_unusual_but_valid_uploads_decompose(bare, tmp_path, name):
    strip, _, info, files = h.decompose(bare, write(tmp_path, name, GOOD[name]))
    assert strip.dtype == np.uint8 and strip.ndim == 3
    assert name in info and len(files) == 1


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("panel", ["decompose", "retrieve", "swap"])
def test_broken_uploads_get_a_short_message(bare, tmp_path, name, panel):
    path = write(tmp_path, name, BAD[name])
    with pytest.raises(gr.Error) as e:
        getattr(h, panel)(bare, path)
    message = str(e.value)
    assert name in message and len(message) < 300 and "Traceback" not in message
    assert "/tmp" not in message  # the server's paths stay private
    if name in ("bomb.png", "just-over.png"):
        assert "pixels" in message


def test_exif_rotation_is_applied(bare, tmp_path):
    upright = bare.picture(0, write(tmp_path, "exif-rotated.jpg", exif_rotated))[0]
    assert upright.shape == (*bare.size, 3)


def test_a_missing_upload_file_is_a_message(bare, tmp_path):
    with pytest.raises(gr.Error, match="cannot read"):
        h.decompose(bare, str(tmp_path / "gone.jpg"))


# ----------------------------------------------------------------------------- parameters
anything = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                     st.lists(st.integers(-5, 100), max_size=4))
SLOW = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def survives(call, pictures: int = 1) -> None:
    """A result, or a gr.Error with a short message: nothing else may escape a panel. A result
    must be whole: `pictures` RGB uint8 pictures at least a person's size, descriptions that are
    text and no traceback, downloads that exist, tables with rows."""
    try:
        result = call()
    except gr.Error as e:
        assert len(str(e)) < 300 and "Traceback" not in str(e)
        return
    arrays = [r for r in result if isinstance(r, np.ndarray)]
    assert len(arrays) == pictures, [type(r).__name__ for r in result]
    for a in arrays:
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3, (a.dtype, a.shape)
        assert a.shape[0] >= 64 and a.shape[1] >= 32 and a.std() > 0  # a drawn picture, not blank
    texts = [r for r in result if isinstance(r, str)]
    assert texts and all(t.strip() and "Traceback" not in t for t in texts)
    files = [f for r in result if isinstance(r, list) for f in r]
    assert files and all(Path(f).is_file() and Path(f).stat().st_size > 0 for f in files)
    for table in (r for r in result if isinstance(r, pd.DataFrame)):
        assert len(table) > 0


@SLOW
@given(identities=anything, new=anything, noises=anything, seed=anything)
def test_generate_any_parameters(bare, identities, new, noises, seed):
    survives(lambda: h.generate(bare, identities, new, noises, seed))


@SLOW
@given(coordinates=anything, low=anything, high=anything, steps=anything)
def test_sweep_any_parameters(bare, coordinates, low, high, steps):
    survives(lambda: h.sweep(bare, None, coordinates, low, high, steps))


@SLOW
@given(directions=anything, low=anything, high=anything, steps=anything)
def test_directions_any_parameters(bare, directions, low, high, steps):
    survives(lambda: h.directions(bare, None, directions, low, high, steps))


@SLOW
@given(identity=anything, k=anything)
def test_neighbors_any_parameters(bare, identity, k):
    survives(lambda: h.neighbors(bare, identity, k), pictures=2)  # neighbours, pairs


@SLOW
@given(query=anything, k=anything)
def test_retrieve_any_parameters(bare, query, k):
    survives(lambda: h.retrieve(bare, None, query, k))


@SLOW
@given(method=anything, colour=anything, selected=anything)
def test_projection_any_parameters(bare, method, colour, selected):
    survives(lambda: h.projection(bare, method, colour, selected))


@SLOW
@given(a=anything, b=anything, steps=anything, seed=anything)
def test_interpolate_any_parameters(bare, a, b, steps, seed):
    survives(lambda: h.interpolate(bare, a, b, steps, seed))


@pytest.mark.parametrize("kwargs, message", [
    ({"low": float("nan")}, "finite"),
    ({"low": -1e30}, "within"),
    ({"steps": 10**9}, "steps"),
    ({"coordinates": [10**6]}, "coordinates"),
])
def test_sweep_absurd_values_are_named(bare, kwargs, message):
    with pytest.raises(gr.Error, match=message):
        h.sweep(bare, **kwargs)


def test_identity_row_out_of_range_is_named(bare):
    with pytest.raises(gr.Error, match="row"):
        h.generate(bare, ["row 99999"])
    with pytest.raises(gr.Error, match="k must be within"):
        h.neighbors(bare, None, 10**6)


# ----------------------------------------------------------------------------- exposure
def _call_raw(url: str, endpoint: str, data: list) -> str:
    """POST a request as any HTTP client could, and return the event stream's text."""
    import json
    import urllib.request

    req = urllib.request.Request(f"{url}gradio_api/call/{endpoint}",
                                 data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
    return urllib.request.urlopen(f"{url}gradio_api/call/{endpoint}/{event}", timeout=60).read().decode()


def test_a_request_cannot_name_a_server_file(explorer_model_set, tmp_path):
    from conftest import running_explorer

    secret = tmp_path / "secret.png"
    person().save(secret)
    with running_explorer(explorer_model_set, tmp_path / "cache", data=False) as app:
        assert app.url.startswith("http://127.0.0.1:")  # loopback unless --host says otherwise
        for path in (str(secret), "/etc/hostname", "../../../../etc/hostname"):
            stream = _call_raw(app.url, "decompose",
                               [{"path": path, "meta": {"_type": "gradio.FileData"}}, 0])
            assert "event: error" in stream and "secret" not in stream.split("event: error")[0]
        # ...and the server still serves everyone else
        stream = _call_raw(app.url, "neighbors", [None, 5])
        assert "event: complete" in stream


# ----------------------------------------------------------------------------- load
@pytest.mark.slow  # a served app under one client per panel
def test_load_test_serves_every_panel_without_failure(explorer_model_set, capsys, tmp_path,
                                                      monkeypatch):
    """A short, bounded run of the load test command (the full one is 16 clients x 60 s); one
    client per panel, each starting on a different one, so every panel is called at least once
    however slow the machine (fewer clients than panels left one uncalled on a slow CI runner)."""
    import json

    from core.cli import main

    monkeypatch.setenv("GENREID_EXPLORER_CACHE", str(tmp_path / "cache"))
    assert main(["loadtest", "--checkpoint", str(explorer_model_set.full), "--clients",
                 str(len(PANELS)), "--seconds", "6", "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 0 and report["calls"] >= 6
    assert set(report["panels"]) == set(PANELS)
    assert report["peak_rss_mb"] > 0 and report["p95_s"] >= report["p50_s"] > 0


def test_load_test_counts_a_client_that_cannot_connect_as_failed():
    """Before, a client whose connection failed died silently, and the report said 0 failed."""
    import socket

    from explorer.loadtest import format_report, load_test

    class NoBackground:
        def wait_background(self):
            pass

    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = load_test(f"http://127.0.0.1:{port}/", NoBackground(), clients=2, seconds=1,
                       log=lambda _: None)
    assert report["failed"] == 2 and report["calls"] == 2
    assert all(f.startswith("connect: ") for f in report["failures"])
    assert "2 failed; no call answered" in format_report(report)
