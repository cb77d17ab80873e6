"""Sphinx extension: make the built site work offline and load without console errors.

- MathJax: ``django-static-mathjax`` (a ``book`` extra) ships MathJax 3's ES5 build; it is
  copied into ``_static/mathjax`` and ``mathjax_path`` points at it, so maths renders
  without a CDN.
- Script de-duplication: sphinx-thebe registers its inline configuration script twice
  under jupyter-book 1, which redeclares a ``const`` and logs a ``SyntaxError`` on every
  page; identical scripts are kept once.
- Reader fixes (``static/``): the visible sidebar toggles work (the theme binds a hidden
  duplicate), results wrap instead of scrolling sideways, and the site title fits the sidebar.
- Launch buttons: Colab opens only real notebooks, so chapter pages (MyST Markdown) keep
  Binder and the ``.ipynb`` download and lose the Colab link.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx


def _mathjax_dir() -> Path:
    import mathjax  # installed by django-static-mathjax

    root = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (root / "tex-chtml.js").is_file():
        raise RuntimeError(f"MathJax not found at {root}; run `make install` (needs the [book] extra)")
    return root


def _copy(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "_static" / "mathjax"
        if not (target / "tex-chtml.js").is_file():
            shutil.copytree(_mathjax_dir(), target, dirs_exist_ok=True)


def _dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    # In place: the builder keeps appending page-specific scripts to this same list, and an
    # early priority runs before any handler that returns a template (emit_firstresult stops there).
    files = context.get("script_files", [])
    seen, unique = set(), []
    for script in files:
        # The same inline script arrives once with filename None and once with "".
        key = (str(script.filename or ""), repr(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    files[:] = unique


def _drop_colab_for_markdown(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    # Runs after sphinx-book-theme's add_launch_buttons (priority 501).
    if Path(app.env.doc2path(pagename)).suffix == ".ipynb":
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == "launch-buttons":
            group["buttons"] = [b for b in group["buttons"] if b.get("text") != "Colab"]


def _add_static(app: Sphinx, config) -> None:
    config.html_static_path.append(str(STATIC))


STATIC = Path(__file__).parent / "static"


def setup(app: Sphinx) -> dict:
    _mathjax_dir()  # fail early with a clear message
    app.config.mathjax_path = "mathjax/tex-chtml.js"
    app.connect("config-inited", _add_static)
    app.add_css_file("offline_site.css")
    app.add_js_file("offline_site.js")
    app.connect("build-finished", _copy)
    app.connect("html-page-context", _dedupe_scripts, priority=1)
    app.connect("html-page-context", _drop_colab_for_markdown, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
