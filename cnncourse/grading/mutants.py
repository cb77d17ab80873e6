"""Mutant suites: plausible wrong answers that a lab's hidden tests must reject.

Each source lab ``labs/<stem>.ipynb`` may have ``tests/labs/<stem>.toml``, a list of
``[[mutant]]`` tables. A mutant replaces one ``### BEGIN SOLUTION`` ... ``### END SOLUTION``
region of a solution cell with a snippet a student could plausibly write, and names the
graded question whose test must fail::

    [[mutant]]
    name = "off_by_one_window"            # unique in the file
    solution = "conv_forward_naive"       # grade_id of the solution cell
    region = 0                            # optional: which region of that cell (default 0)
    question = "test_conv_forward_naive"  # grade_id of the graded test cell that must fail
    kind = "off-by-one"                   # one of KINDS
    why = "the window stops one pixel short"
    code = '''...'''                      # re-indented to the region's indentation

:func:`run_suite` drives the grader's own code (:func:`~cnncourse.grading.autograde.load_lab`,
:func:`~cnncourse.grading.autograde.plan`, ``_Kernel`` and :func:`~cnncourse.grading.harness.run_test`,
scored by the grader's ``_score_report``). The reference must score full marks; a mutant is
*killed* when its question scores 0 under every course secret tried (the hidden tests draw
their inputs from ``test_seed(grade_id, secret)``) and every other question re-run scores as
with the reference.

Speed: one kernel per lab. It runs the reference plan once (every test under every secret; a test
that neither called ``course_seed`` nor drew from the grader's seeded generator has the same inputs
under every secret, so it runs once and its score stands for all).
Then, per mutant, only the mutated solution cell is executed again, followed by its question,
the later tests that use a name the mutated cell defines, and the later student cells that those
tests need (names followed through the cells' ``ast`` by :mod:`cnncourse.grading.dataflow`); a test
that uses none of them sees the reference's objects, or sees the mutation only through a student cell
computed from it (a trained model: it depends on this answer by design), so it is not re-run. Mutants of the same cell
share one restore, which re-runs the reference cell and the cells the mutants re-ran; the
most expensive group goes last and is never restored. A mutant that kills the kernel
restarts it (and replays the reference) without affecting the others.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from cnncourse.grading.dataflow import dependants
from cnncourse.grading.release import BEGIN_SOLUTION, find_regions

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

KINDS = (
    "off-by-one",
    "wrong-axis",
    "transposed-weight",
    "missing-bias",
    "missing-scaling",
    "missing-normalisation",
    "in-place",
    "misplaced-activation",
    "misplaced-stride",
    "partial-check",
    "hard-coded",
    "delegates-to-library",
    "other",
)
REQUIRED = ("name", "solution", "question", "kind", "why", "code")
OPTIONAL = ("region",)
# The no-secret seed (what a course without --secret uses) and five course secrets.
FIRST_RUN_LIMIT = 3600.0  # wall seconds for one student cell of the reference's first run
SECRETS = ("", "mutant-a", "mutant-b", "mutant-c", "mutant-d", "mutant-e")


# Ways a test could read its seed or the secret without calling course_seed or drawing from the generator.
_SEED_READERS = re.compile(r"\b(initial_seed|test_seed|get_rng_state|SECRET|CNNCOURSE_SECRET)\b")


class MutantFileError(ValueError):
    """A mutant file that cannot be used: bad TOML, a missing key, an unknown grade_id, a region out of range."""


@dataclass(frozen=True)
class Mutant:
    """One wrong answer: ``code`` replaces region ``region`` of solution cell ``solution``."""

    name: str
    solution: str
    question: str
    kind: str
    why: str
    code: str
    region: int = 0


@dataclass
class MutantResult:
    """What happened to one mutant: ``status`` is killed, survived, collateral or error."""

    mutant: Mutant
    status: str
    survived_secrets: list[str] = field(default_factory=list)
    changed: dict[str, list[float]] = field(default_factory=dict)
    detail: str = ""
    seconds: float = 0.0

    def describe(self) -> str:
        m = self.mutant
        if self.status == "survived":
            shown = ", ".join(repr(s) for s in self.survived_secrets)
            return f"{m.name} ({m.kind}, {m.question}): passes with secret(s) {shown}"
        if self.status == "collateral":
            return f"{m.name} ({m.kind}): changes the score of other questions {self.changed}: {self.detail}"
        return f"{m.name} ({m.kind}, {m.question}): {self.status} {self.detail}".rstrip()


@dataclass
class SuiteResult:
    """The reference's scores per question and secret, and every mutant's result."""

    lab: str
    points: dict[str, float]
    reference: dict[str, list[float]]
    results: list[MutantResult]
    seconds: float

    @property
    def reference_ok(self) -> bool:
        return all(all(s == self.points[q] for s in scores) for q, scores in self.reference.items())

    @property
    def survivors(self) -> list[MutantResult]:
        return [r for r in self.results if r.status != "killed"]


def mutant_file(lab_path: str | os.PathLike, tests_dir: str | os.PathLike | None = None) -> Path:
    """``tests/labs/<stem>.toml`` of a source lab (next to the course's ``tests`` folder by default)."""
    lab_path = Path(lab_path)
    base = Path(tests_dir) if tests_dir else lab_path.resolve().parent.parent / "tests" / "labs"
    return base / f"{lab_path.stem}.toml"


def _cells(nb: nbformat.NotebookNode) -> dict[str, tuple[int, Any]]:
    out = {}
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and isinstance(meta, dict) and meta.get("grade_id"):
            out[meta["grade_id"]] = (index, meta)
    return out


def load_mutants(path: str | os.PathLike, lab_path: str | os.PathLike) -> list[Mutant]:
    """Read and validate a mutant file against its source lab.

    Raises:
        MutantFileError: naming the file, the mutant and what was expected and got.
    """
    path, lab_path = Path(path), Path(lab_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MutantFileError(f"{path}: not a readable TOML file: {exc}") from None
    extra = set(data) - {"mutant"}
    if extra or not isinstance(data.get("mutant"), list):
        raise MutantFileError(f"{path}: expected only [[mutant]] tables, got keys {sorted(data)}")
    nb = nbformat.read(lab_path, as_version=4)
    cells = _cells(nb)
    solutions = sorted(g for g, (_, m) in cells.items() if m.get("solution") and not m.get("grade"))
    questions = sorted(g for g, (_, m) in cells.items() if m.get("grade"))
    mutants, seen = [], set()
    for number, table in enumerate(data["mutant"], 1):
        label = f"{path}: mutant {number} ({table.get('name', 'unnamed')!r})"
        missing = [k for k in REQUIRED if k not in table]
        if missing:
            raise MutantFileError(f"{label}: missing key(s) {', '.join(missing)}; expected {', '.join(REQUIRED)}")
        unknown = sorted(set(table) - set(REQUIRED) - set(OPTIONAL))
        if unknown:
            raise MutantFileError(
                f"{label}: unknown key(s) {', '.join(unknown)}; expected {', '.join(REQUIRED + OPTIONAL)}"
            )
        bad = [k for k in REQUIRED if not isinstance(table[k], str) or not table[k].strip()]
        if bad:
            raise MutantFileError(f"{label}: key(s) {', '.join(bad)} must be non-empty strings")
        if table["name"] in seen:
            raise MutantFileError(f"{label}: the name {table['name']!r} is used twice; names must be unique")
        seen.add(table["name"])
        if table["kind"] not in KINDS:
            raise MutantFileError(f"{label}: kind {table['kind']!r} is not one of {', '.join(KINDS)}")
        if table["solution"] not in solutions:
            raise MutantFileError(
                f"{label}: solution {table['solution']!r} is not a solution cell of {lab_path}; "
                f"expected one of {', '.join(solutions)}"
            )
        if table["question"] not in questions:
            raise MutantFileError(
                f"{label}: question {table['question']!r} is not a graded test cell of {lab_path};"
                f" expected one of {', '.join(questions)}"
            )
        region = table.get("region", 0)
        index = cells[table["solution"]][0]
        n_regions = sum(r.kind == BEGIN_SOLUTION for r in find_regions(nb.cells[index].source, index, lab_path))
        if type(region) is not int or not 0 <= region < n_regions:
            raise MutantFileError(
                f"{label}: region {region!r} out of range; cell {table['solution']!r} has "
                f"{n_regions} solution region(s), numbered from 0"
            )
        mutants.append(
            Mutant(
                table["name"], table["solution"], table["question"], table["kind"], table["why"], table["code"], region
            )
        )
    return mutants


def mutated_source(source: str, region: int, code: str) -> str:
    """``source`` with solution region ``region`` (its markers included) replaced by ``code``, re-indented."""
    regions = [r for r in find_regions(source, 0) if r.kind == BEGIN_SOLUTION]
    r = regions[region]
    lines = source.splitlines()
    import textwrap

    body = [(r.indent + line) if line.strip() else "" for line in textwrap.dedent(code).strip("\n").splitlines()]
    return "\n".join(lines[: r.start] + body + lines[r.end + 1 :])


def apply_mutant(nb: nbformat.NotebookNode, mutant: Mutant) -> nbformat.NotebookNode:
    """A copy of the source notebook ``nb`` with ``mutant`` applied to its solution cell."""
    out = copy.deepcopy(nb)
    index = _cells(out)[mutant.solution][0]
    out.cells[index].source = mutated_source(out.cells[index].source, mutant.region, mutant.code)
    return out


class _Session:
    """One kernel running a lab's plan through the grader's code; re-runs steps on demand."""

    def __init__(self, lab: Any, steps: list, secrets: tuple[str, ...]) -> None:
        self.lab, self.steps, self.secrets = lab, steps, secrets
        self.kernel: Any = None  # an autograde._Kernel once started
        self.channel: Any = None  # its harness.GraderChannel
        self.carry: dict[str, Any] = {}
        self.cost: dict[int, float] = {}
        self.detail: dict[str, str] = {}  # the last failure of each question, for the report

    def start(self) -> dict[str, list[float]]:
        """(Re)start the kernel and run the reference plan; return each question's points per secret."""
        from cnncourse.grading.autograde import Limits, _Kernel
        from cnncourse.grading.harness import warm_up

        self.close()
        warm_up(self.lab.imports)
        self.workdir = tempfile.mkdtemp(prefix="cnncourse-mutants-")
        self.kernel = _Kernel(Limits(sandbox=False), self.workdir, time.monotonic() + 600, None)
        self.channel = self.kernel.connect(600)  # generous: a busy machine starts kernels slowly
        self.carry = {}
        return self.run_steps(range(len(self.steps)), {})

    def run_steps(self, positions: Any, sources: dict[int, str], limit: float = 600) -> dict[str, list[float]]:
        import torch

        from cnncourse.grading import checks
        from cnncourse.grading.autograde import _score_report
        from cnncourse.grading.harness import run_test, test_seed

        scores: dict[str, list[float]] = {}
        for pos in positions:
            kind, item = self.steps[pos]
            t0 = time.monotonic()
            if kind == "student":
                # A re-run may take 4 times the reference's own time; the reference's first run has no
                # measure yet, and training cells take minutes on a busy machine (lab03: over 240 s at load 10).
                known = self.cost.get(pos)
                self.kernel.run(sources.get(pos, item[1]), FIRST_RUN_LIMIT if known is None else max(60.0, 4 * known))
            else:
                blind = False
                for number, secret in enumerate(self.secrets):
                    if number and blind:  # the same inputs under every secret: the same score
                        scores[item.grade_id].append(scores[item.grade_id][0])
                        continue
                    torch.manual_seed(test_seed(item.grade_id, secret))  # what run_test seeds the test with
                    seeded, uses = torch.get_rng_state(), checks._SECRET_USES
                    self.channel.deadline = time.monotonic() + limit
                    report = run_test(
                        self.channel, item.grade_id, item.public, item.hidden, self.lab.imports, self.carry, secret
                    )
                    scored = _score_report(item, report)
                    scores.setdefault(item.grade_id, []).append(scored["points"])
                    if not scored["passed"]:
                        self.detail[item.grade_id] = f"secret {secret!r}: {scored['detail']}"
                    # The secret reaches a test only through course_seed and the grader's seeded generator: a
                    # test that called neither (and never reads the seed) sees the same inputs under every secret.
                    blind = (
                        checks._SECRET_USES == uses
                        and torch.equal(torch.get_rng_state(), seeded)
                        and not _SEED_READERS.search(item.public + item.hidden)
                    )
            self.cost.setdefault(pos, time.monotonic() - t0)
        return scores

    def close(self) -> None:
        if self.channel is not None:
            self.channel.sock.close()
        if self.kernel is not None:
            self.kernel.kill()
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.kernel = self.channel = None


def run_suite(
    lab_path: str | os.PathLike,
    mutants: list[Mutant] | None = None,
    secrets: tuple[str, ...] = SECRETS,
    progress: Any = None,
) -> SuiteResult:
    """Grade the reference and every mutant of a source lab through the grader's plan and test code.

    ``progress``, if given, is called with each :class:`MutantResult` as soon as it is known.
    """
    from cnncourse.grading.autograde import load_lab, plan, read_submission

    t0 = time.monotonic()
    lab_path = Path(lab_path)
    lab = load_lab(lab_path)
    nb = read_submission(lab_path.read_bytes())
    if mutants is None:
        mutants = load_mutants(mutant_file(lab_path), lab_path)
    steps, _ = plan(lab, nb)
    cells = _cells(nb)
    position = {item[0]: pos for pos, (kind, item) in enumerate(steps) if kind == "student"}
    points = {t.grade_id: t.points for t in lab.tests}
    session = _Session(lab, steps, secrets)
    results: list[MutantResult] = []
    import torch

    # The tests' own tensor work here is tiny; with several threads on a busy machine each small op
    # waits for descheduled threads (measured: torch.conv2d on a 2x3x7x6 input, 9 ms instead of 0.05).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = session.start()
        groups: dict[str, list[Mutant]] = {}
        for m in mutants:
            groups.setdefault(m.solution, []).append(m)
        plans = {g: [position[cells[g][0]]] for g in groups}
        for g, ms in groups.items():
            for m in ms:
                plans[g] = sorted(set(plans[g]) | set(dependants(steps, plans[g][0], m.question)))
        order = sorted(groups, key=lambda g: sum(session.cost.get(p, 0) for p in plans[g]))
        for gi, g in enumerate(order):
            start = plans[g][0]
            for m in groups[g]:
                ts = time.monotonic()
                todo = [start] + dependants(steps, start, m.question)
                source = mutated_source(steps[start][1][1], m.region, m.code)
                try:
                    got = session.run_steps(todo, {start: source}, limit=600)
                except Exception as exc:  # noqa: BLE001  (a hang or a crash: restart from the reference)
                    results.append(MutantResult(m, "error", detail=f"{type(exc).__name__}: {str(exc)[:200]}"))
                    if progress:
                        progress(results[-1])
                    session.start()
                    continue
                survived = [s for s, p in zip(secrets, got.get(m.question, [])) if p > 0]
                changed = {q: v for q, v in got.items() if q != m.question and v != reference[q]}
                status = "survived" if survived else "collateral" if changed else "killed"
                detail = "; ".join(f"{q}: {session.detail.get(q, '')[:300]}" for q in changed)
                results.append(MutantResult(m, status, survived, changed, detail, time.monotonic() - ts))
                if progress:
                    progress(results[-1])
            if gi < len(order) - 1:  # restore the reference state that this group's mutants changed
                students = [p for p in plans[g] if steps[p][0] == "student"]
                session.run_steps(students, {})
    finally:
        session.close()
        torch.set_num_threads(threads)
    return SuiteResult(lab.name, points, reference, results, time.monotonic() - t0)


def run_suites(
    labs: list[Path], jobs: int = 2, progress: Any = None, tests_dir: str | os.PathLike | None = None
) -> dict[str, SuiteResult | Exception]:
    """:func:`run_suite` for each lab, ``jobs`` labs at a time, keyed by the lab's file stem.

    Each lab runs in a worker process of its own (its kernel has one thread); the labs with the most mutants
    start first, so that no long lab starts last while the other worker idles. A lab whose suite raises maps to
    that exception. ``progress``, if given, is called with ``(lab stem, MutantResult)``; with ``jobs > 1`` it
    must be a module-level function (it is sent to the workers). ``tests_dir`` is the folder of the mutant
    files (see :func:`mutant_file`).
    """
    import contextlib
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    def hook(lab: Path) -> Any:
        return partial(progress, lab.stem) if progress else None

    out: dict[str, SuiteResult | Exception] = {}
    found: dict[Path, list[Mutant]] = {}
    for lab in labs:
        try:
            found[lab] = load_mutants(mutant_file(lab, tests_dir), lab)
        except (OSError, MutantFileError) as exc:
            out[lab.stem] = exc
    order = sorted(found, key=lambda lab: -len(found[lab]))
    with ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else contextlib.nullcontext() as pool:
        futures = {lab: pool.submit(run_suite, lab, found[lab], progress=hook(lab)) for lab in order} if pool else {}
        for lab in order:
            try:
                out[lab.stem] = futures[lab].result() if pool else run_suite(lab, found[lab], progress=hook(lab))
            except Exception as exc:  # noqa: BLE001  (the caller reports it with the lab's name)
                out[lab.stem] = exc
    return out
