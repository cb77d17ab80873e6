"""Which cells a change reaches: names each cell binds and reads, followed through a lab's plan.

Used by the mutant suite (:mod:`cnncourse.grading.mutants`): a mutant re-runs its solution cell, then only the
steps its names reach. The analysis reads each cell's ``ast``; it never runs code.
"""

from __future__ import annotations

import ast


def _loads(node: ast.AST) -> set[str]:
    """Names ``node`` reads, less the variables of its comprehensions (they live in their own scope)."""
    loads = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    local = {
        n.id
        for c in ast.walk(node)
        if isinstance(c, ast.comprehension)
        for n in ast.walk(c.target)
        if isinstance(n, ast.Name)
    }
    return loads - local


def _stores(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}


def _free(statements: list[ast.stmt], bound: set[str]) -> set[str]:
    """Names that ``statements`` read before binding them themselves, in execution order (``bound`` grows).

    Exact for straight-line assignments and ``for`` loops (what lab cells are made of); everything else
    (a function body, a branch, a ``with``) counts every name it reads as free, which can only re-run more.
    """
    free: set[str] = set()
    for s in statements:
        if isinstance(s, (ast.Assign, ast.AnnAssign)):
            targets = s.targets if isinstance(s, ast.Assign) else [s.target]
            free |= (_loads(s.value) if s.value is not None else set()) - bound
            for t in targets:  # x[i] = ... and x.a = ... read x
                free |= _loads(t) - bound
                bound |= _stores(t)
        elif isinstance(s, ast.AugAssign):  # x += v reads x
            free |= (_loads(s.value) | _stores(s.target) | _loads(s.target)) - bound
            bound |= _stores(s.target)
        elif isinstance(s, ast.For):
            free |= (_loads(s.iter) | _loads(s.target)) - bound
            bound |= _stores(s.target)
            free |= _free(s.body + s.orelse, bound)
        elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            free |= _loads(s) - bound
            bound.add(s.name)
        elif isinstance(s, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in s.names}
        else:
            free |= _loads(s) - bound
            bound |= _stores(s)
    return free


def cell_names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell defines at top level, names it reads from earlier cells) from its ``ast``; empty for bad syntax.

    A name the cell binds before reading it (a loop variable, ``x = ...`` then ``f(x)``) is not read from an
    earlier cell, so a mutation of that name elsewhere does not reach this cell through it.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set()
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            pass  # re-running an import binds the same object: it changes nothing downstream
        else:
            defined |= _stores(node)
    return defined, _free(tree.body, set())


def dependants(steps: list, start: int, question: str) -> list[int]:
    """Positions after ``start`` to re-run: the mutant's question, the later tests that use a name the mutated
    cell defines, and the student cells that those tests need to see the mutation.

    A test that sees the mutation only through a later student cell (a model trained with the mutated
    function, numbers computed from it) is not re-run: it depends on this answer by design, and re-running
    it would mean re-running that cell (the training) for every mutant."""
    info = []
    for kind, item in steps:
        source = item[1] if kind == "student" else item.public + "\n" + item.hidden
        info.append(cell_names(source))
    reach = set(info[start][0])
    affected = []
    for pos in range(start + 1, len(steps)):
        kind, item = steps[pos]
        defined, reads = info[pos]
        if reads & reach or (kind == "test" and item.grade_id == question):
            affected.append(pos)
            if kind == "student":
                reach |= defined
    direct = info[start][0]
    tests = [p for p in affected if steps[p][0] == "test" and (steps[p][1].grade_id == question or info[p][1] & direct)]
    needed = set().union(*(info[p][1] for p in tests)) if tests else set()
    keep = set(tests)
    for pos in reversed(affected):
        if steps[pos][0] == "student" and info[pos][0] & needed and any(t > pos for t in tests):
            keep.add(pos)
            needed |= info[pos][1]
    return sorted(keep)
