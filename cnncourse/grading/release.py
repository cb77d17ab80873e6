"""Release student versions of nbgrader-format source labs.

A source lab holds solutions and hidden tests between markers::

    ### BEGIN SOLUTION            ### BEGIN HIDDEN TESTS
    ...                           ...
    ### END SOLUTION              ### END HIDDEN TESTS

The student version replaces each solution region with a stub that raises
``NotImplementedError``, drops hidden tests, and clears every output. An unbalanced or
nested marker is refused with the cell number, so a typo can never leak a solution.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from cnncourse.io import atomic_write_bytes

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_MARKERS = {BEGIN_SOLUTION: END_SOLUTION, BEGIN_HIDDEN: END_HIDDEN}
_ALL = set(_MARKERS) | set(_MARKERS.values())
_TEXT_STUB = "YOUR ANSWER HERE"


class MarkerError(ValueError):
    """A source notebook with unbalanced, nested or misplaced solution/hidden-test markers."""


@dataclass(frozen=True)
class Region:
    """A marked region: the marker pair's kind and its inclusive line span within one cell."""

    kind: str
    start: int
    end: int
    indent: str


def find_regions(source: str, cell_index: int, path: str | os.PathLike = "<notebook>") -> list[Region]:
    """Locate the marked regions of one cell's source.

    Raises:
        MarkerError: naming the notebook, the cell number and the line, for a BEGIN
            without END, an END without BEGIN, or a region opened inside another.

    Reference: nbgrader's marker syntax, https://nbgrader.readthedocs.io/en/stable/user_guide/creating_and_grading_assignments.html
    """
    regions, open_kind, open_line, indent = [], None, 0, ""
    for i, line in enumerate(source.splitlines()):
        marker = line.strip()
        if marker not in _ALL:
            if any(m in line for m in _ALL):
                raise MarkerError(
                    f"{path}: cell {cell_index}, line {i + 1}: a marker must stand alone on its "
                    f"line, got {line.strip()!r}"
                )
            continue
        if marker in _MARKERS:
            if open_kind is not None:
                raise MarkerError(
                    f"{path}: cell {cell_index}, line {i + 1}: {marker!r} inside an open "
                    f"{open_kind!r} (opened on line {open_line + 1})"
                )
            open_kind, open_line, indent = marker, i, line[: len(line) - len(line.lstrip())]
        else:
            if open_kind is None or _MARKERS[open_kind] != marker:
                expected = _MARKERS[open_kind] if open_kind else "a BEGIN marker first"
                raise MarkerError(
                    f"{path}: cell {cell_index}, line {i + 1}: unbalanced {marker!r}; expected {expected!r}"
                )
            regions.append(Region(open_kind, open_line, i, indent))
            open_kind = None
    if open_kind is not None:
        raise MarkerError(
            f"{path}: cell {cell_index}, line {open_line + 1}: {open_kind!r} is never closed "
            f"(expected {_MARKERS[open_kind]!r})"
        )
    return regions


def _strip_cell(source: str, cell_type: str, regions: list[Region]) -> str:
    lines = source.splitlines()
    out: list[str] = []
    pos = 0
    for r in regions:
        out.extend(lines[pos : r.start])
        if r.kind == BEGIN_SOLUTION:
            if cell_type == "code":
                out.append(f"{r.indent}# YOUR CODE HERE")
                out.append(f"{r.indent}raise NotImplementedError()")
            else:
                out.append(_TEXT_STUB)
        pos = r.end + 1
    out.extend(lines[pos:])
    return "\n".join(out)


def student_version(nb: nbformat.NotebookNode, path: str | os.PathLike = "<notebook>") -> nbformat.NotebookNode:
    """Return the student version of a source notebook (the input is not modified).

    Raises:
        MarkerError: for any unbalanced marker, naming the cell.

    Reference: nbgrader's ``ClearSolutions``, ``ClearHiddenTests`` and ``ClearOutput`` preprocessors.
    """
    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells):
        regions = find_regions(cell.source, index, path)
        if regions:
            cell.source = _strip_cell(cell.source, cell.cell_type, regions)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    add_install_cell(nb)
    add_questions_metadata(nb)
    if path != "<notebook>":
        add_selfcheck_cell(nb, Path(path).name)
    nb.metadata.setdefault("cnncourse", {})["cells_sha256"] = cells_sha256(nb)
    return nb


def cells_sha256(nb: nbformat.NotebookNode) -> str:
    """Checksum of a notebook's cells (types and sources, not outputs), recorded by the release.

    A released notebook whose cells no longer match its recorded checksum was edited by someone:
    :func:`release` refuses to overwrite it and ``make clean`` to delete it.
    """
    digest = hashlib.sha256()
    for cell in nb.cells:
        digest.update(f"{cell.get('cell_type')}\0{cell.get('source', '')}\0".encode())
    return digest.hexdigest()


def edited_since_release(path: str | os.PathLike) -> bool:
    """Whether the notebook at ``path`` holds work that a new release would lose.

    True when its cells differ from the checksum its release recorded, and for an unreadable notebook
    or one without a recorded checksum (an older release, or not a release): those are kept, to be safe.
    """
    try:
        nb = nbformat.read(path, as_version=4)
        recorded = nb.metadata.get("cnncourse", {}).get("cells_sha256")
        return not (isinstance(recorded, str) and recorded == cells_sha256(nb))
    except Exception:  # noqa: BLE001  (nbformat raises many types for bad input; unreadable means keep it)
        return True


def edited_notebooks(folder: str | os.PathLike) -> list[Path]:
    """The notebooks in ``folder`` edited since their release (see :func:`edited_since_release`)."""
    return [p for p in sorted(Path(folder).glob("*.ipynb")) if edited_since_release(p)]


class ReleaseConflictError(FileExistsError):
    """A release would overwrite notebooks that were edited since their own release (a student's answers)."""


def add_install_cell(nb: nbformat.NotebookNode, requirement: str | None = None) -> nbformat.NotebookNode:
    """Insert, after the title cell, a code cell that installs the course package where it is missing.

    A notebook that does not open with a Markdown title (``# ...``) is returned unchanged.

    On the course's own machine the cell does nothing; in Colab (or any fresh kernel) it runs
    ``pip install`` of ``requirement``, by default the tagged release of this package's version
    from the repository: the one place that names where a released lab installs from.
    """
    if not (nb.cells and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")):
        return nb
    source = install_cell_source(requirement)
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["install"]})
    if nb.nbformat_minor >= 5:
        cell.id = "install-cnncourse"  # stable, so re-released labs do not differ
    else:
        cell.pop("id", None)  # cell ids exist from nbformat 4.5 on
    nb.cells.insert(1, cell)
    return nb


def install_cell_source(requirement: str | None = None) -> str:
    """The source of the install cell that :func:`add_install_cell` puts into every released lab.

    The grader's integrity scan recognises this exact text as the course's own cell, so a submission
    that keeps it is not flagged for importing ``subprocess``.
    """
    from cnncourse import __version__

    requirement = requirement or f"cnncourse @ git+https://github.com/cnncourse/cnncourse@v{__version__}"
    return (
        "# Colab or a fresh machine: install the course package if this kernel cannot import it.\n"
        "import importlib.util, subprocess, sys\n"
        "\n"
        'if importlib.util.find_spec("cnncourse") is None:\n'
        f'    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", {requirement!r}])'
    )


SELFCHECK_TAG = "selfcheck"


def selfcheck_cell_source(filename: str) -> str:
    """The source of the self-check cell that :func:`add_selfcheck_cell` appends to the released lab ``filename``.

    The kernel's working directory is the notebook's folder, so the cell names its own file.
    """
    return (
        "# Self-check before you submit: SAVE this notebook first (File > Save Notebook, or Ctrl+S / Cmd+S).\n"
        "# It runs the saved file from the top in a fresh kernel with the public tests, as the grader will,\n"
        '# and prints your points per question. Questions marked "hidden" are graded only by tests you\n'
        "# cannot see, and the grader's hidden tests can still take points from a question that passes here.\n"
        "from cnncourse.grading.selfcheck import self_check\n"
        "\n"
        f"result = self_check({filename!r})"
    )


def is_selfcheck_cell(cell: dict) -> bool:
    """Whether ``cell`` is a released lab's own self-check cell, kept verbatim (the grader skips it)."""
    source = cell.get("source", "") if isinstance(cell, dict) else ""
    match = re.search(r"self_check\((['\"])(.+?)\1\)\s*$", source) if isinstance(source, str) else None
    return match is not None and source.strip() == selfcheck_cell_source(match.group(2)).strip()


def add_selfcheck_cell(nb: nbformat.NotebookNode, filename: str) -> nbformat.NotebookNode:
    """Append the self-check cell (see :func:`selfcheck_cell_source`) to a lab that opens with a title and has tests."""
    titled = nb.cells and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    if not (titled and nb.metadata.get("cnncourse", {}).get("questions")):
        return nb
    text = nbformat.v4.new_markdown_cell(
        "## Before you submit\n\n"
        "Save the notebook (**File > Save Notebook**, or Ctrl+S / Cmd+S), then run the cell below. It runs your "
        "saved notebook from the top in a fresh kernel with the public tests, the way the grader will, and prints "
        "a table of your points per question. The same check from a terminal: "
        f"`python -m cnncourse check {filename}`."
    )
    cell = nbformat.v4.new_code_cell(selfcheck_cell_source(filename), metadata={"tags": [SELFCHECK_TAG]})
    if nb.nbformat_minor >= 5:
        text.id, cell.id = "selfcheck-text", "selfcheck-cnncourse"  # stable, so re-released labs do not differ
    else:
        text.pop("id", None)
        cell.pop("id", None)
    nb.cells.extend([text, cell])
    return nb


def cell_sha256(source: str) -> str:
    """Checksum of a released test cell's source, for the self-check's "this test cell was changed" warning."""
    return hashlib.sha256(source.strip().encode()).hexdigest()


def add_questions_metadata(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Record the graded questions in the notebook's metadata: ``cnncourse.questions`` and ``cnncourse.grade_ids``.

    Each question is ``{"grade_id", "points", "sha256"}`` of a released test cell, so the self-check
    (:mod:`cnncourse.grading.selfcheck`) knows every question and its points even when a student deleted
    or edited a test cell. Nothing about the hidden tests is recorded.
    """
    questions, ids = [], []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not isinstance(meta, dict) or not meta.get("grade_id"):
            continue
        ids.append(meta["grade_id"])
        if meta.get("grade") and cell.cell_type == "code":
            questions.append(
                {"grade_id": meta["grade_id"], "points": meta.get("points", 0), "sha256": cell_sha256(cell.source)}
            )
    if questions:
        nb.metadata["cnncourse"] = {"questions": questions, "grade_ids": ids}
    return nb


def release(sources: list[str | os.PathLike], out: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write the student version of each source notebook (or of every ``*.ipynb`` in a folder) into ``out``.

    Every notebook is checked before any file is written, so a bad marker in one lab leaves
    ``out`` untouched. Each file keeps its name and is written atomically. A notebook already in
    ``out`` is replaced only when it is unchanged since its own release (or identical to the new
    one), unless ``force``: one with edited cells may hold a student's answers.

    Returns:
        The paths written.

    Raises:
        MarkerError: for an unbalanced marker in a source lab.
        FileNotFoundError: for a source that is neither a notebook nor a folder.
        ReleaseConflictError: naming the edited notebooks in ``out``, before any file is written.

    Reference: ``nbgrader generate_assignment``.
    """
    paths: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            paths.extend(sorted(p for p in src.glob("*.ipynb") if not p.name.startswith(".")))
        elif src.suffix == ".ipynb" and src.is_file():
            paths.append(src)
        else:
            raise FileNotFoundError(f"expected a notebook (.ipynb) or a folder of them, got {src}")
    released = [(p, student_version(nbformat.read(p, as_version=4), p)) for p in paths]
    kept = [
        Path(out) / p.name
        for p, nb in released
        if not force
        and (Path(out) / p.name).is_file()
        and edited_since_release(Path(out) / p.name)
        and (Path(out) / p.name).read_bytes() != nbformat.writes(nb).encode() + b"\n"
    ]
    if kept:
        raise ReleaseConflictError(
            f"expected {out} to hold no edited notebooks, got {len(kept)} changed since their release "
            f"(a student's answers?): {', '.join(str(k) for k in kept)}. Move them elsewhere (a student works "
            f"in 'make lab's folder), or release with --force to overwrite them; nothing was written"
        )
    written = []
    for p, nb in released:
        target = Path(out) / p.name
        atomic_write_bytes(target, nbformat.writes(nb).encode() + b"\n")
        written.append(target)
    return written


SOLUTION_PATTERN = re.compile(r"### (BEGIN|END) (SOLUTION|HIDDEN TESTS)")
