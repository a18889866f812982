"""The explorer in a real browser: Debian's chromium, headless, driven by Playwright. The app runs
on the tiny model set of conftest.py; the test opens the page, walks every panel of PANELS, presses
each panel's main button, waits until the panel has answered (its output picture rendered, its
plots drawn, nothing pending, no error toast), and saves a full-page screenshot per panel to
screenshots/ (git-ignored): 01-generation.png ... 07-decomposition.png. Adding a panel to the walk
is one entry in PANELS.

Playwright drives the system's chromium (`executable_path`), so its own browser download is never
needed. Skipped when playwright (the `test` extra) or chromium is missing; CI installs chromium
with apt where it can.

Chromium is started under CPU affinity $GENREID_BROWSER_CPUS (default "1"; empty: no pinning)
when those CPUs are ours: on the shared development machine core 0 belongs to a training job.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import running_explorer

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the `test` extra is not installed
    sync_playwright = None

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "screenshots"
WINDOW = {"width": 1400, "height": 1000}  # CSS pixels: wide enough for the tab buttons to show
BUSY = ".pending, .generating, .eta-bar"  # Gradio's marks of an event in progress
ANSWER_MS = 60_000  # how long a panel may take to answer on the tiny set
# On a real set the first retrieval encodes the whole gallery (3,813 CUHK03 crops: minutes on a
# slow CPU; the explorer caches it after that).
REAL_ANSWER_MS = 900_000
BLOCK = "xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' block ')][1]"


@dataclass(frozen=True)
class Panel:
    tab: str  # text of the tab button (a part of it)
    button: str  # the panel's main button
    picture: str  # the start of the label of the output picture's block
    plots: int = 0  # plotly plots the panel draws


PANELS = [
    Panel("Generation", "Generate", "Identities × noises"),
    Panel("Sweep", "Sweep", "Sweep"),
    Panel("Directions", "Walk", "Along the principal directions"),
    Panel("Neighbours", "Find neighbours", "The identity (blue)", plots=1),
    Panel("Projection", "Show", "Click map", plots=1),
    Panel("Retrieval", "Retrieve", "Query (blue)"),
    Panel("Decomposition", "Decompose", "Input · noise", plots=1),
]


def screenshot_name(index: int, panel: Panel) -> str:
    return f"{index + 1:02d}-{panel.tab.lower()}.png"


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def pinned_children():
    """Processes started inside run on $GENREID_BROWSER_CPUS (default "1") where those CPUs are
    all ours: affinity is inherited, so this thread is pinned meanwhile and restored after."""
    cpus = os.environ.get("GENREID_BROWSER_CPUS", "1").strip()
    try:
        wanted = {int(c) for c in cpus.split(",")} if cpus else set()
        before = os.sched_getaffinity(0)
    except (ValueError, AttributeError):  # a malformed list, or no affinity on this OS
        wanted, before = set(), set()
    if not wanted or not wanted <= before:
        yield
        return
    os.sched_setaffinity(0, wanted)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# ----------------------------------------------------------------------------- the test
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:::gradio.queueing")  # its own pandas use
@pytest.mark.skipif(sync_playwright is None, reason="playwright not installed (pip install -e '.[test]')")
@pytest.mark.skipif(find_chromium() is None, reason="no chromium binary (chromium / chromium-browser)")
def test_every_panel_renders_in_a_real_browser(request, tmp_path):
    """On the tiny set; GENREID_BROWSER_SET=DIR (and GENREID_BROWSER_DATA=ROOT) walk a real
    model set instead, to look at the screenshots of what users see."""
    real = bool(os.environ.get("GENREID_BROWSER_SET"))
    if real:
        data = os.environ.get("GENREID_BROWSER_DATA")
        model_set = SimpleNamespace(full=Path(os.environ["GENREID_BROWSER_SET"]),
                                    market=Path(data) if data else None)
    else:
        model_set = request.getfixturevalue("explorer_model_set")
    SCREENSHOTS.mkdir(exist_ok=True)
    for old in [*SCREENSHOTS.glob("[0-9][0-9]-*.png"), *SCREENSHOTS.glob("failed-*.png")]:
        old.unlink()
    start = time.perf_counter()
    with running_explorer(model_set, tmp_path / "cache", timeout=300, data=model_set.market is not None,
                          **({"num_prior": 64} if real else {})) as app:
        with pinned_children():
            playwright = sync_playwright().start()
        try:
            browser = playwright.chromium.launch(executable_path=find_chromium(), headless=True,
                                                 args=["--disable-gpu", "--disable-dev-shm-usage"])
            walk(browser.new_page(viewport=WINDOW, device_scale_factor=1), app.url,
                 REAL_ANSWER_MS if real else ANSWER_MS)
        finally:
            playwright.stop()  # closes the browser too
    assert sorted(p.name for p in SCREENSHOTS.glob("[0-9][0-9]-*.png")) == [
        screenshot_name(i, panel) for i, panel in enumerate(PANELS)]
    print(f"browser test: {time.perf_counter() - start:.1f} s with the app's start-up")


def walk(page, url: str, answer_ms: int = ANSWER_MS) -> None:
    """Open the app, let the projection drawn on load finish, then answer every panel in turn,
    a screenshot after each; no uncaught page exception all along."""
    exceptions, console = [], []
    page.on("pageerror", lambda e: exceptions.append(str(e).splitlines()[0] if str(e) else repr(e)))
    page.on("console", lambda m: console.append(m.text[:300]) if m.type == "error" else None)
    page.goto(url)
    for panel in PANELS:  # every tab shows (none hidden in Gradio's overflow menu)
        expect(page.get_by_role("tab", name=panel.tab)).to_be_visible(timeout=ANSWER_MS)
    unwalked = [t for t in page.get_by_role("tab").all_inner_texts() if not any(p.tab in t for p in PANELS)]
    if unwalked:
        print("tabs not in PANELS, not walked:", unwalked)
    # The projection is drawn on page load: let that finish before pressing anything.
    page.get_by_role("tab", name="Projection").click()
    settled(page, next(p for p in PANELS if p.tab == "Projection"), answer_ms)
    for i, panel in enumerate(PANELS):
        panel_start = time.perf_counter()
        try:
            size = press_and_wait(page, panel, answer_ms)
        except (AssertionError, PlaywrightError):
            with contextlib.suppress(PlaywrightError):
                page.screenshot(path=SCREENSHOTS / f"failed-{screenshot_name(i, panel)}", full_page=True)
            raise
        page.screenshot(path=SCREENSHOTS / screenshot_name(i, panel), full_page=True,
                        animations="disabled")
        print(f"{panel.tab}: picture {size} in {time.perf_counter() - panel_start:.1f} s")
    if console:
        print("page console errors:", *console, sep="\n  ")
    assert not exceptions, f"uncaught page exceptions: {exceptions}"


def open_panel(page):
    """The tab panel on show."""
    return page.locator('[role="tabpanel"]:visible')


def press_and_wait(page, panel: Panel, answer_ms: int = ANSWER_MS) -> str:
    """Open the panel's tab, press its main button, check the server took the event, and wait
    until the panel has answered. The output picture's natural size, as "WxH"."""
    page.get_by_role("tab", name=panel.tab).click()
    button = open_panel(page).get_by_role("button", name=panel.button, exact=True)
    with page.expect_response(lambda r: "/gradio_api/queue/join" in r.url, timeout=30_000) as joined:
        button.click()
    assert joined.value.ok, f"{panel.tab}: the server refused {panel.button!r} ({joined.value.status})"
    return settled(page, panel, answer_ms)


def settled(page, panel: Panel, answer_ms: int = ANSWER_MS) -> str:
    """Wait until the open tab shows its picture (or an error toast) and has nothing pending,
    then check: no error toast, the picture labelled panel.picture rendered (at least of a
    person's size), panel.plots plots drawn. The picture's natural size, as "WxH"."""
    view = open_panel(page)
    label = view.get_by_test_id("block-label").filter(has_text=re.compile(r"^\s*" + re.escape(panel.picture)))
    picture = label.locator(BLOCK).locator("img[src]")
    errors = page.locator(".toast-body[class*=error]:visible")
    expect(picture.or_(errors).first).to_be_visible(timeout=answer_ms)
    expect(view.locator(BUSY)).to_have_count(0, timeout=answer_ms)
    assert errors.count() == 0, f"{panel.tab}: error toast(s) {errors.all_inner_texts()}"
    expect(picture).to_have_js_property("complete", True)
    expect(picture).not_to_have_js_property("naturalWidth", 0)
    if panel.plots:
        drawn = view.locator(".js-plotly-plot:visible").filter(has=page.locator(".main-svg"))
        expect(drawn.nth(panel.plots - 1)).to_be_visible(timeout=answer_ms)
    width, height = picture.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width >= 32 and height >= 64, f"{panel.tab}: picture of {width}x{height} pixels"
    return f"{width}x{height}"
