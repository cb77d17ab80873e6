"""Open the built book in headless Chromium, offline, and check what a reader sees.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). A missing
browser is a failure, not a skip: the offline-maths promise is only checked here.
"""

from __future__ import annotations

import ast
import base64
import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def server():
    assert (HTML / "index.html").is_file(), "no built book: run `make book` first"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, ("Chromium not found: install Debian's `chromium` and `chromium-driver` "
                                 "(`apt-get install chromium chromium-driver`; .ci/run does this)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chrome')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _pages() -> list[str]:
    return sorted(str(p.relative_to(HTML)) for p in (HTML / "book").rglob("*.html"))


def _requests(drv) -> list[str]:
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _wait_for_mathjax(drv) -> None:
    drv.set_script_timeout(30)
    drv.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const start = Date.now();
        (function poll() {
          const mj = window.MathJax;
          if (mj && mj.startup && mj.startup.promise) { mj.startup.promise.then(() => done(true)); }
          else if (Date.now() - start > 20000) { done(false); }
          else { setTimeout(poll, 100); }
        })();""")


def test_pages_render_offline(server, browser):
    pages = _pages()
    assert pages, "no pages under _build/html/book"
    math_pages = 0
    browser.get_log("performance")  # drop the start-up new-tab page's internal requests
    for page in pages:
        browser.get(f"{server}/{page}")
        has_math = browser.execute_script("return document.querySelectorAll('.math').length") > 0
        if has_math:
            _wait_for_mathjax(browser)
            math_pages += 1
            typeset = browser.execute_script("return document.querySelectorAll('mjx-container').length")
            assert typeset > 0, f"{page}: maths present but MathJax typeset nothing"
            text = browser.execute_script("return document.body.innerText")
            assert "\\(" not in text and "\\[" not in text, f"{page}: raw TeX delimiters visible"
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
            ".map(i => i.src)")
        assert not broken, f"{page}: images failed to load: {broken}"
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"{page}: JavaScript console errors: {errors}"
        foreign = [u for u in _requests(browser)
                   if not (u.startswith(server) or u.startswith(("data:", "blob:", "about:", "chrome:", "chrome-untrusted:")))]
        assert not foreign, f"{page}: requests to other hosts: {foreign}"
    assert math_pages > 0, "no page with maths was checked; the MathJax check would be vacuous"


# ---- What a reader sees: figures, rendering, prose, overflow, phone navigation, screenshots ----

BOOK = ROOT / "book"
SHOTS = ROOT / "_build" / "screenshots"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))
# Page text a reader must never meet: unfilled templates, missing numbers, build machines' paths.
BAD_TEXT = re.compile(r"\bundefined\b|\bNaN\b|epoch never|(?<![\w.])/(?:root|home|tmp)/|(?<=\s)\u2013(?=[a-z])")
# A Markdown table's separator row (|---|, which smart quotes turn into |—|) left in running text.
TABLE_ROW = re.compile(r"\|\s*:?(?:-{3,}|[—–]+)\s*:?\|")
# Provenance a visible cell must not print: it belongs in the chapter's collapsed note.
PROVENANCE_TEXT = re.compile(r"^(?:command|date|last update|started):|written by `|\bmachine:", re.I | re.M)
# An output block that states a verdict or holds a table must be readable without scrolling.
VERDICT = re.compile(r"verdict|support|contradict|confirm|\|\s*-{3,}|[-=─—]{8,}", re.I)


class _FigureCalls(ast.NodeVisitor):
    """Counts what a code cell draws: each ``plt.show()``, or one figure for a cell that makes one."""

    def __init__(self) -> None:
        self.shows = self.figures = 0

    def visit_FunctionDef(self, node) -> None:  # a definition draws nothing until it is called
        pass

    visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "show" and isinstance(f.value, ast.Name) and f.value.id == "plt":
            self.shows += 1
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if any(isinstance(n, ast.Name) and n.id.startswith("fig") for t in node.targets for n in ast.walk(t)):
            self.figures += 1
        self.generic_visit(node)


def figures_drawn(source: str) -> int:
    calls = _FigureCalls()
    calls.visit(ast.parse(source))
    return max(calls.shows, 1 if calls.figures else 0)


def figure_cells(md: Path) -> dict[int, int]:
    """Cell index -> number of figures that code cell draws, read from the chapter's source."""
    import jupytext

    counts = {}
    for index, cell in enumerate(jupytext.read(md).cells):
        tags = cell.metadata.get("tags", [])
        if cell.cell_type != "code" or {"remove-cell", "remove-output"} & set(tags):
            continue
        if n := figures_drawn(cell.source):
            counts[index] = n
    return counts


def test_figure_count_reads_the_source():
    """The counter finds plotting cells (plt.show, figures made at top level), not definitions."""
    assert figures_drawn("fig, ax = plt.subplots()\nax.plot([1])") == 1
    assert figures_drawn("def f():\n    fig = plt.figure()\n    return fig") == 0
    assert figures_drawn("x = 1\nprint(x)") == 0
    assert figures_drawn("fig = f()\nplt.show()\nfig = g()\nplt.show()") == 2
    assert sum(sum(figure_cells(md).values()) for md in CHAPTERS) >= 20, "the chapters' plotting cells were not found"


@pytest.mark.parametrize("md", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_figure_cell_has_a_caption_and_alt_text(md):
    import jupytext

    cells = jupytext.read(md).cells
    for index in figure_cells(md):
        options = cells[index].metadata.get("mystnb", {})
        assert options.get("figure", {}).get("caption") and options.get("figure", {}).get("name"), \
            f"{md.name}: plotting cell {index} needs mystnb.figure caption and name (a numbered caption)"
        assert options.get("image", {}).get("alt"), f"{md.name}: plotting cell {index} needs mystnb.image alt text"


def _visible_code_cells(md: Path):
    import jupytext

    for index, cell in enumerate(jupytext.read(md).cells):
        hidden = {"remove-cell", "remove-input", "hide-input"} & set(cell.metadata.get("tags", []))
        if cell.cell_type == "code" and not hidden:
            yield index, cell


def _is_glue(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "glue")


def bookkeeping_glue(source: str) -> int:
    """``glue(...)`` calls in a cell's closing run of glue calls and asserts: bookkeeping a hidden cell can do."""
    body = ast.parse(source).body
    n = len(body)
    while n and (_is_glue(body[n - 1]) or isinstance(body[n - 1], ast.Assert)):
        n -= 1
    return sum(map(_is_glue, body[n:]))


def test_bookkeeping_glue_counter():
    assert bookkeeping_glue("x = f()\nprint(x)\nglue('x', x, display=False)\nassert x") == 1
    assert bookkeeping_glue("glue('x', 1, display=False)\nprint(2)") == 0  # glue before the lesson's output stays
    assert bookkeeping_glue("if a:\n    glue('x', 1, display=False)") == 0


@pytest.mark.parametrize("md", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_visible_cells_do_no_bookkeeping(md):
    """A visible code cell does not end in glue(...) calls, nor print the command or date of a recorded run."""
    for index, cell in _visible_code_cells(md):
        assert not bookkeeping_glue(cell.source), \
            f"{md.name}: visible cell {index} ends with glue(...) calls: move them into a remove-cell cell below it"
        for literal in (n.value for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Constant)):
            assert not (isinstance(literal, str) and PROVENANCE_TEXT.search(literal)), \
                f"{md.name}: visible cell {index} prints provenance ({literal!r}): put it in the collapsed note"


def _reader_report(drv) -> dict:
    return drv.execute_script("""
        const main = document.querySelector('main') || document.body;
        const imgs = Array.from(main.querySelectorAll('.cell_output img'));
        const paragraphs = Array.from(main.querySelectorAll('p')).map(p => p.innerText);
        const over = el => el.scrollWidth > el.clientWidth + 1;
        const outputs = Array.from(main.querySelectorAll('.cell_output > .output, .cell_output > table'))
          .filter(el => over(el) || Array.from(el.querySelectorAll('pre, table')).some(over))
          .map(el => el.innerText.slice(0, 2000));
        // Any code cell or output block that scrolls sideways hides the end of its lines.
        const scrolling = Array.from(main.querySelectorAll('div.highlight pre, .cell_output pre, .cell_output table'))
          .filter(over).map(el => (el.closest('div.highlight') ? 'code: ' : 'output: ') + el.innerText.slice(0, 100));
        return {
          scrolling: scrolling,
          images: imgs.map(i => ({alt: (i.getAttribute('alt') || '').trim(), html: !!i.closest('.text_html'), w: i.getBoundingClientRect().width,
                                  h: i.getBoundingClientRect().height, loaded: i.complete && i.naturalWidth > 0,
                                  figure: !!i.closest('figure') && !!i.closest('figure').querySelector('figcaption')})),
          paragraphs: paragraphs,
          text: document.body.innerText,
          overflowing: outputs,
        };""")


def test_chapters_as_a_reader_sees_them(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems, summary = [], {}
    for md in CHAPTERS:
        page = f"{server}/book/{md.stem}.html"
        browser.set_window_size(1400, 1000)
        browser.get(page)
        if browser.execute_script("return document.querySelectorAll('.math').length") > 0:
            _wait_for_mathjax(browser)
        seen = _reader_report(browser)
        title_lines = browser.execute_script("""
            const t = document.querySelector('.navbar-brand .title');
            return t ? Math.round(t.getBoundingClientRect().height / parseFloat(getComputedStyle(t).lineHeight)) : 0;""")
        if not 1 <= title_lines <= 2:
            problems.append(f"{md.stem}: the site title takes {title_lines} lines in the sidebar (at most 2)")
        want = sum(figure_cells(md).values())
        imgs = seen["images"]
        summary[md.stem] = (want, len(imgs), len(seen["overflowing"]), len(seen["scrolling"]))
        if len(imgs) < want:
            problems.append(f"{md.stem}: {len(imgs)} images shown, its source has {want} figure-producing cells")
        for i in imgs:
            # Sphinx falls back to the file name, which describes nothing. An HTML output's own <img>
            # (an animation's frame) gets its alt from plotting.animation_html(alt=...).
            if not i["alt"] or re.search(r"\.(png|jpe?g|svg|gif)$", i["alt"]):
                problems.append(f"{md.stem}: an image without alt text (alt={i['alt']!r})")
            if not (i["w"] > 0 and i["h"] > 0 and i["loaded"]):
                problems.append(f"{md.stem}: an image of zero size or not loaded")
            if not i["figure"]:
                problems.append(f"{md.stem}: an image without a figure caption")
        problems += [f"{md.stem}: a Markdown table printed as text: {p[:80]!r}" for p in seen["paragraphs"]
                     if TABLE_ROW.search(p)]
        problems += [f"{md.stem}: page text has {m.group(0)!r}: ...{seen['text'][max(0, m.start() - 60):m.end() + 40]!r}"
                     for m in BAD_TEXT.finditer(seen["text"])]
        problems += [f"{md.stem}: provenance printed on the page instead of the collapsed note: "
                     f"...{seen['text'][max(0, m.start() - 40):m.end() + 60]!r}"
                     for m in PROVENANCE_TEXT.finditer(seen["text"])]
        problems += [f"{md.stem}: a verdict or table scrolls sideways at 1400 px: {t[:100]!r}"
                     for t in seen["overflowing"] if VERDICT.search(t)]
        problems += [f"{md.stem}: scrolls sideways at 1400 px: {t!r}" for t in seen["scrolling"]]
        _full_page_screenshot(browser, SHOTS / f"{md.stem}-1400.png")
        browser.set_window_size(390, 844)
        browser.get(page)
        _full_page_screenshot(browser, SHOTS / f"{md.stem}-390.png")
    (SHOTS / "summary.json").write_text(json.dumps(
        {k: {"figure_cells": w, "images": n, "overflowing_outputs": o, "scrolling_blocks": s}
         for k, (w, n, o, s) in summary.items()}, indent=1))
    assert not problems, "\n".join(problems)


def _full_page_screenshot(drv, path: Path) -> None:
    width = drv.execute_script("return window.innerWidth")
    height = min(drv.execute_script("return document.documentElement.scrollHeight"), 16000)
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    try:
        path.write_bytes(base64.b64decode(drv.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]))
    finally:
        drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _visible(drv, css: str) -> bool:
    return drv.execute_script("""
        return Array.from(document.querySelectorAll(arguments[0])).some(el => {
          const r = el.getBoundingClientRect(), s = getComputedStyle(el);
          return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'
                 && r.right > 0 && r.left < window.innerWidth;
        });""", css)


def _tap_visible(drv, css: str) -> None:
    from selenium.webdriver.common.by import By

    buttons = [b for b in drv.find_elements(By.CSS_SELECTOR, css) if b.is_displayed()]
    assert buttons, f"no visible {css} button"
    buttons[0].click()


def test_phone_navigation_opens(server, browser):
    """At 390x844 the ☰ button shows the chapter list and "On this page" the page's sections."""
    import time

    browser.set_window_size(390, 844)
    browser.get(f"{server}/book/04_lenet.html")
    assert not _visible(browser, "dialog[open] nav.bd-docs-nav a"), "the chapter list is open before any tap"
    _tap_visible(browser, ".primary-toggle")
    time.sleep(0.5)
    assert _visible(browser, "dialog[open] nav.bd-docs-nav a"), "tapping ☰ on a phone does not show the chapter list"
    links = browser.execute_script("return Array.from(document.querySelectorAll('dialog[open] nav.bd-docs-nav a'))"
                                   ".map(a => a.innerText)")
    assert any("LeNet" in t for t in links) and len(links) >= 9, links
    _full_page_screenshot(browser, SHOTS / "phone-nav-chapters.png")
    browser.execute_script("document.querySelector('dialog[open]').close()")
    _tap_visible(browser, ".secondary-toggle")
    time.sleep(0.5)
    assert _visible(browser, "dialog[open] nav.page-toc a"), \
        "tapping 'On this page' on a phone does not show the page's contents"
    _full_page_screenshot(browser, SHOTS / "phone-nav-contents.png")


def test_desktop_menu_button_collapses_the_sidebar(server, browser):
    browser.set_window_size(1400, 1000)
    browser.get(f"{server}/book/04_lenet.html")
    assert _visible(browser, "#pst-primary-sidebar nav.bd-docs-nav a")
    _tap_visible(browser, ".primary-toggle")
    __import__("time").sleep(0.5)
    assert not _visible(browser, "#pst-primary-sidebar nav.bd-docs-nav a"), "the desktop ☰ button does nothing"


def test_no_placeholder_launch_buttons(server, browser):
    browser.set_window_size(1400, 1000)
    for page, colab in (("book/04_lenet.html", False), ("book/labs/lab03_lenet.html", True)):
        browser.get(f"{server}/{page}")
        hrefs = browser.execute_script("return Array.from(document.querySelectorAll('a')).map(a => a.href)")
        assert not [h for h in hrefs if "example.edu" in h or "/hub/user-redirect" in h], f"{page}: placeholder hub"
        to_colab = [h for h in hrefs if "colab.research.google.com" in h]
        assert bool(to_colab) == colab, f"{page}: Colab links {to_colab}"
        assert all(h.endswith(".ipynb") for h in to_colab), to_colab


def test_markdown_tables_render_as_tables(server, browser):
    browser.get(f"{server}/book/09_transfer.html")
    assert browser.execute_script("return document.querySelectorAll('.cell_output table').length") > 0, \
        "the transfer chapter's results table is not an HTML table"


def test_pages_workflow_builds_with_make_book_and_deploys_the_html():
    import yaml

    workflows = list((ROOT / ".github" / "workflows").glob("*.yml"))
    assert workflows, "no GitHub workflow"
    steps = [s for w in workflows for job in yaml.safe_load(w.read_text())["jobs"].values() for s in job.get("steps", [])]
    assert any(s.get("run", "").strip() == "make book" for s in steps), "the workflow must run the README's `make book`"
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-pages-artifact")]
    assert uploads and uploads[0]["with"]["path"] == "_build/html", "the workflow must deploy _build/html"
    assert any(str(s.get("uses", "")).startswith("actions/deploy-pages") for s in steps)


def test_makefile_never_sets_mplbackend_and_can_publish():
    makefile = (ROOT / "Makefile").read_text()
    assert not re.search(r"^\s*(export\s+)?MPLBACKEND\s*[:?]?=", makefile, re.M), "kernels would draw no figures"
    assert re.search(r"^publish:.*\n(\t.*\n)*\t.*ghp-import .*_build/html", makefile, re.M)
    import subprocess

    for target in ("publish", "book", "test"):  # the whole Makefile parses, and publish runs ghp-import
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert dry.returncode == 0 and "warning" not in dry.stderr, f"`make -n {target}`: {dry.stderr}"
    assert "ghp-import -n -p -f _build/html" in subprocess.run(["make", "-n", "publish"], cwd=ROOT, capture_output=True,
                                                               text=True).stdout


def _chapter_functions(md: Path, *names: str) -> dict:
    """The named top-level functions of a chapter's code cells, defined in a fresh namespace."""
    import jupytext

    namespace: dict = {}
    for cell in jupytext.read(md).cells:
        if cell.cell_type == "code":
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.FunctionDef) and node.name in names:
                    exec(compile(ast.Module([node], []), str(md), "exec"), namespace)
    assert set(names) <= set(namespace), f"{md.name}: expected functions {names}"
    return namespace


def test_glued_sentences_have_a_wording_for_every_outcome():
    f = _chapter_functions(BOOK / "05_alexnet.md", "speedup_sentence", "lowest_threshold_sentence")
    sentences = [f["speedup_sentence"](15.0, relu, tanh, 12) for relu in (None, 3) for tanh in (None, 6)]
    sentences += [f["lowest_threshold_sentence"](None, None), f["lowest_threshold_sentence"](25.0, 0.8)]
    for s in sentences:
        assert not re.search(r"\bNone\b|never|undefined|nan", s), s
    assert "not within the run's 12 epochs" in sentences[0] and "ratio tanh / ReLU of 2.0" in sentences[3]
    assert "25%" in sentences[-1] and "0.8" in sentences[-1]


@pytest.mark.book
def test_general_index_is_not_empty():
    """The sidebar-less genindex page lists the glossary's terms (each glossary entry is an index entry)."""
    page = (HTML / "genindex.html").read_text()
    entries = re.findall(r'<a href="[^"]*#(?:term-|index-)[^"]*"', page)
    assert len(entries) >= 15, f"the general index has {len(entries)} entries"
