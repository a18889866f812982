"""The explorer in a real browser: Debian's chromium, headless, driven through the Chrome DevTools
Protocol (CDP) over its websocket. The app runs on the tiny model set of conftest.py; the test
opens the page, walks every tab, presses each panel's main button, waits until the panel's output
picture has rendered (an <img> with naturalWidth > 0) with no error toast, and saves a full-page
screenshot per tab to screenshots/ (git-ignored): 01-generation.png ... 06-decomposition.png.

Skipped when no chromium is installed (CI installs it with apt where it can). Only the standard
library talks to the browser: CDP needs a websocket client, and the few lines of RFC 6455 a
client needs are below, so no package is added for it.

Chromium is started under `taskset -c $GENREID_BROWSER_CPUS` (default "1"; empty: no pinning) when
taskset exists and those CPUs are ours: on the shared development machine core 0 belongs to a
training job. Where util-linux's setpriv exists, chromium also gets a parent-death signal, so a
killed test run leaves no browser behind.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import running_explorer

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # its own pandas use
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "screenshots"
WINDOW = (1400, 1000)  # CSS pixels: wide enough for the six tab buttons to show without a menu

# (screenshot, tab text, main button text, label of the output picture's block (its start),
#  plotly plots the panel draws)
TABS = [
    ("01-generation", "Generation", "Generate", "Identities × noises", 0),
    ("02-sweep", "Sweep", "Sweep", "Sweep", 0),
    ("03-neighbours", "Neighbours", "Find neighbours", "The identity (blue)", 1),
    ("04-projection", "Projection", "Show", "Click map", 1),
    ("05-retrieval", "Retrieval", "Retrieve", "Query (blue)", 0),
    ("06-decomposition", "Decomposition", "Decompose", "Input · noise", 1),
]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def pinned(cmd: list[str]) -> list[str]:
    """cmd under `taskset -c CPUS` where taskset exists and CPUS are all available to us, and
    under `setpriv --pdeathsig TERM` where setpriv exists (both exec, so the pid is chromium's)."""
    setpriv = shutil.which("setpriv")
    if setpriv:
        cmd = [setpriv, "--pdeathsig", "TERM", *cmd]
    cpus = os.environ.get("GENREID_BROWSER_CPUS", "1").strip()
    taskset = shutil.which("taskset")
    try:
        wanted = {int(c) for c in cpus.split(",")} if cpus else set()
        ours = os.sched_getaffinity(0)
    except (ValueError, AttributeError):
        return cmd
    return [taskset, "-c", cpus, *cmd] if taskset and wanted and wanted <= ours else cmd


# ----------------------------------------------------------------------------- websocket (RFC 6455)
class WebSocket:
    """A minimal blocking websocket client: text messages, unfragmented sends, masked as a client
    must; answers pings, fails on close."""

    def __init__(self, url: str, timeout: float = 30.0):
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv_some()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"websocket handshake refused: {head.decode(errors='replace')}")

    def _recv_some(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("websocket closed by the browser")
        return chunk

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        elif n < 1 << 16:
            header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")
                  ).to_bytes(n, "big") if n else b""
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def _frame(self):
        """(fin, opcode, payload) of the first whole frame in the buffer (consumed), else None:
        a timeout never leaves half a frame read."""
        buf = self.buf
        if len(buf) < 2:
            return None
        n, at = buf[1] & 0x7F, 2
        if n >= 126:
            width = 2 if n == 126 else 8
            if len(buf) < at + width:
                return None
            n, at = int.from_bytes(buf[at:at + width], "big"), at + width
        mask = None
        if buf[1] & 0x80:
            if len(buf) < at + 4:
                return None
            mask, at = buf[at:at + 4], at + 4
        if len(buf) < at + n:
            return None
        payload, self.buf = buf[at:at + n], buf[at + n:]
        if mask:
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        return bool(buf[0] & 0x80), buf[0] & 0x0F, payload

    def recv(self, timeout: float) -> str:
        """The next text message (continuation frames joined); socket.timeout after timeout."""
        self.sock.settimeout(max(timeout, 0.01))
        parts: list[bytes] = []
        while True:
            frame = self._frame()
            if frame is None:
                self.buf += self._recv_some()
                continue
            fin, opcode, payload = frame
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
            elif opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode()

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


# ----------------------------------------------------------------------------- CDP
class DevTools:
    """One page target driven over CDP: call(method, **params), evaluate(js), wait_for(js)."""

    def __init__(self, ws_url: str):
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.problems: list[str] = []  # uncaught page exceptions and console errors, for reports

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        self.next_id += 1
        msg_id = self.next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer to {method} in {timeout:.0f} s")
            try:
                message = json.loads(self.ws.recv(remaining))
            except TimeoutError:  # socket.timeout
                continue
            if message.get("id") == msg_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.problems.append(f"page exception: {text.splitlines()[0] if text else details}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.problems.append(f"console error: {args[:300]}")

    def evaluate(self, expression: str, timeout: float = 30.0):
        result = self.call("Runtime.evaluate", timeout, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"JS error: {details.get('exception', {}).get('description', details)}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, what: str, interval: float = 0.25):
        """Poll a JS expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {value!r})")

    def screenshot(self, path: Path) -> None:
        """The whole page (beyond the window) as PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        width, height = max(int(size["width"]), WINDOW[0]), min(int(size["height"]), 8000)
        shot = self.call("Page.captureScreenshot", 60, format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.ws.close()


def start_chromium(binary: str, profile: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """Headless chromium with remote debugging on a port it picks (0: always free), read back
    from DevToolsActivePort in its profile."""
    cmd = pinned([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
                  f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={profile}",
                  "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                  "about:blank"])
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            port = int(active.read_text().split()[0])
            return proc, port
        except (OSError, ValueError, IndexError):
            time.sleep(0.1)
    stop(proc)
    tail = log.read_text(errors="replace")[-2000:]
    raise AssertionError(f"chromium did not open its debugging port (exit {proc.returncode}): {tail}")


def page_websocket(port: int) -> str:
    base = f"http://127.0.0.1:{port}/json"
    deadline = time.monotonic() + 30
    while True:
        try:
            targets = json.loads(urllib.request.urlopen(f"{base}/list", timeout=5).read())
            pages = [t for t in targets if t.get("type") == "page" and "webSocketDebuggerUrl" in t]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("chromium exposes no page target")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ----------------------------------------------------------------------------- page helpers (JS)
HELPERS = r"""
window.__gt = {
  BUSY: '.pending, .generating, .eta-bar',
  shown(el) {
    return !!el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  },
  tab(text) {
    return [...document.querySelectorAll('button[role="tab"]')].find(b => b.textContent.includes(text));
  },
  panel() {
    return [...document.querySelectorAll('[role="tabpanel"]')].find(p => this.shown(p)) || null;
  },
  button(text) {
    const p = this.panel();
    return p && [...p.querySelectorAll('button')].find(b => b.textContent.trim() === text && this.shown(b));
  },
  block(label) {  // the component block whose label starts with `label`, in the open tab
    const p = this.panel();
    if (!p) return null;
    const lab = [...p.querySelectorAll('[data-testid="block-label"], label, .label')]
      .find(l => l.textContent.trim().startsWith(label) && this.shown(l));
    return lab ? lab.closest('.block') : null;
  },
  image(label) { const b = this.block(label); return b ? b.querySelector('img') : null; },
  rendered(label) {
    const img = this.image(label);
    return !!img && img.complete && img.naturalWidth > 0 && img.naturalHeight > 0;
  },
  plots() {  // plotly plots drawn in the open tab (an svg with a size)
    const p = this.panel();
    return p ? [...p.querySelectorAll('.js-plotly-plot .main-svg')]
      .filter(svg => this.shown(svg) && svg.getBoundingClientRect().width > 0).length : 0;
  },
  pending() {
    const p = this.panel();
    return !!p && [...p.querySelectorAll(this.BUSY)].some(e => this.shown(e));
  },
  errors() {
    return [...document.querySelectorAll('.toast-body')]
      .filter(t => t.className.includes('error') && this.shown(t)).map(t => t.innerText.trim());
  },
  watch() {  // from now on, record whether the open tab goes busy or any picture changes
    const p = this.panel(), busy = this.BUSY;
    const seen = window.__seen = {busy: false, changed: false};
    const has = (n, sel, tag) => n.nodeType === 1
      && ((tag && n.tagName === tag) || n.matches(sel) || !!n.querySelector(sel));
    if (this.__obs) this.__obs.disconnect();
    this.__obs = new MutationObserver(muts => {
      for (const m of muts) {
        const t = m.target;
        if (m.type === 'attributes' && m.attributeName === 'src' && t.tagName === 'IMG') seen.changed = true;
        if (t.nodeType === 1 && t.matches(busy)) seen.busy = true;
        for (const n of m.addedNodes || []) {
          if (has(n, 'img', 'IMG')) seen.changed = true;
          if (has(n, busy)) seen.busy = true;
        }
      }
    });
    this.__obs.observe(p, {subtree: true, childList: true, attributes: true,
                           attributeFilter: ['class', 'src']});
    return true;
  },
};
true
"""


def js(call: str) -> str:
    return f"window.__gt.{call}"


# ----------------------------------------------------------------------------- the test
@pytest.mark.skipif(find_chromium() is None, reason="no chromium binary (chromium / chromium-browser)")
def test_every_tab_renders_in_a_real_browser(explorer_model_set, tmp_path):
    """On the tiny set; GENREID_BROWSER_SET=DIR (and GENREID_BROWSER_DATA=ROOT) walk a real
    model set instead, to look at the screenshots of what users see."""
    real = bool(os.environ.get("GENREID_BROWSER_SET"))
    if real:
        data = os.environ.get("GENREID_BROWSER_DATA")
        explorer_model_set = SimpleNamespace(full=Path(os.environ["GENREID_BROWSER_SET"]),
                                             market=Path(data) if data else None)
    binary = find_chromium()
    SCREENSHOTS.mkdir(exist_ok=True)
    for old in [*SCREENSHOTS.glob("0[1-6]-*.png"), *SCREENSHOTS.glob("failed-*.png")]:
        old.unlink()
    start = time.perf_counter()
    with running_explorer(explorer_model_set, tmp_path / "cache", timeout=300,
                          data=explorer_model_set.market is not None,
                          **({"num_prior": 64} if real else {})) as app:
        proc, port = start_chromium(binary, tmp_path / "profile", tmp_path / "chromium.log")
        page = None
        try:
            page = DevTools(page_websocket(port))
            page.call("Runtime.enable")
            page.call("Page.enable")
            page.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                      deviceScaleFactor=1, mobile=False)
            page.call("Page.navigate", url=app.url)
            page.wait_for("document.readyState === 'complete' && "
                          "document.querySelectorAll('button[role=\"tab\"]').length >= 6",
                          60, "the app's six tabs")
            page.evaluate(HELPERS)
            # The projection is drawn on page load: let that finish before pressing anything.
            page.evaluate(js("tab('Projection').click()"))
            page.wait_for(js("rendered('Click map') && !__gt.pending()"), 60,
                          "the projection drawn on load")
            for shot, tab, button, label, plots in TABS:
                tab_start = time.perf_counter()
                try:
                    size = press_and_wait(page, tab, button, label, plots)
                except (AssertionError, TimeoutError, RuntimeError):
                    with contextlib.suppress(Exception):
                        page.screenshot(SCREENSHOTS / f"failed-{shot}.png")
                    raise
                page.evaluate("window.scrollTo(0, 0)")
                time.sleep(0.3)  # let the last layout settle before the screenshot
                page.screenshot(SCREENSHOTS / f"{shot}.png")
                print(f"{tab}: picture {size} in {time.perf_counter() - tab_start:.1f} s")
            if page.problems:
                print("page console:", *page.problems, sep="\n  ")
            assert not [p for p in page.problems if "page exception" in p], page.problems
        finally:
            if page is not None:
                page.close()
            stop(proc)
    assert sorted(p.name for p in SCREENSHOTS.glob("0[1-6]-*.png")) == [f"{s}.png" for s, *_ in TABS]
    print(f"browser test: {time.perf_counter() - start:.1f} s with the app's start-up")


def press_and_wait(page: DevTools, tab: str, button: str, label: str, plots: int) -> str:
    """Open the tab, press its main button, and wait until the panel has answered: the output
    picture rendered, the expected plots drawn, nothing pending, no error toast. The picture's
    natural size."""
    assert page.evaluate("!!" + js(f"tab({tab!r})")), f"no tab {tab!r}"
    page.evaluate(js(f"tab({tab!r}).click()"))
    page.wait_for("!!" + js(f"button({button!r})"), 20, f"the {button!r} button of {tab}")
    page.evaluate(js("watch()"))
    page.evaluate(js(f"button({button!r}).click()"))
    # The click took (the panel went busy or a picture changed; a MutationObserver saw it) ...
    page.wait_for("window.__seen.busy || window.__seen.changed", 30,
                  f"{tab}: any response to {button!r}")
    # ... and the panel settled, or an error toast came up.
    done = (js(f"rendered({label!r})") + f" && __gt.plots() >= {plots} && !__gt.pending()")
    page.wait_for(f"({done}) || {js('errors().length')} > 0", 60,
                  f"{tab}: the output picture {label!r} and {plots} plot(s)")
    errors = page.evaluate(js("errors()"))
    assert not errors, f"{tab}: error toast(s) {errors}"
    size = page.evaluate(js(f"image({label!r}).naturalWidth") + " + 'x' + "
                         + js(f"image({label!r}).naturalHeight"))
    width, height = (int(v) for v in size.split("x"))
    assert width >= 32 and height >= 64, f"{tab}: picture of {size} pixels"
    return size
