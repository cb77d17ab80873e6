"""Sphinx extension: serve MathJax 3 from the built site instead of a CDN.

The book must render its maths offline. ``django-static-mathjax`` (a ``book`` extra)
ships MathJax 3's ES5 build; this copies it into ``_static/mathjax`` and points
``mathjax_path`` at it, so no page asks a remote host for JavaScript or fonts.
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


def setup(app: Sphinx) -> dict:
    _mathjax_dir()  # fail early with a clear message
    app.config.mathjax_path = "mathjax/tex-chtml.js"
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
