"""Sphinx extension: make the built site work offline and load without console errors.

- MathJax: ``django-static-mathjax`` (a ``book`` extra) ships MathJax 3's ES5 build; it is
  copied into ``_static/mathjax`` and ``mathjax_path`` points at it, so maths renders
  without a CDN.
- Script de-duplication: sphinx-thebe registers its inline configuration script twice
  under jupyter-book 1, which redeclares a ``const`` and logs a ``SyntaxError`` on every
  page; identical scripts are kept once.
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


def setup(app: Sphinx) -> dict:
    _mathjax_dir()  # fail early with a clear message
    app.config.mathjax_path = "mathjax/tex-chtml.js"
    app.connect("build-finished", _copy)
    app.connect("html-page-context", _dedupe_scripts, priority=1)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
