"""Open the built book in headless Chromium, offline, and check what a reader sees.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). A missing
browser is a failure, not a skip: the offline-maths promise is only checked here.
"""

from __future__ import annotations

import functools
import http.server
import json
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
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(HTML))
    handler.log_message = lambda *a, **k: None
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
