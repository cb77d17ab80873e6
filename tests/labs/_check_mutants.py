"""DEV TOOL, not a test (pytest does not collect it): check a lab's mutants against its hidden tests, fast.

    PYTHONPATH=$PWD python tests/labs/_check_mutants.py labs/lab08_recurrent.ipynb [--only NAME] [--secrets a,b]
    PYTHONPATH=$PWD python tests/labs/_check_mutants.py labs/lab08_recurrent.ipynb --write-submissions DIR

It runs the source lab once in one kernel (no sandbox), through the grader's own trusted-test harness
(``cnncourse.grading.harness.run_test``, the test code runs here and reaches the kernel through proxies).
Then, for every ``[[mutant]]`` of ``tests/labs/<lab_stem>.toml``: it runs the mutated solution cell in
that kernel, runs every graded test under each secret, and restores the reference cell. A mutant is
*killed* when its question fails under every secret; every other question's result is reported when
it changes. ``--write-submissions`` writes one notebook per mutant instead, for the real grader:
``python -m cnncourse grade LAB DIR --out OUT --secret S``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
import tomllib

from cnncourse.grading.autograde import Limits, _Kernel, load_lab
from cnncourse.grading.harness import run_test, warm_up
from cnncourse.grading.release import BEGIN_SOLUTION, find_regions

SECRETS = ("", "alpha", "bravo", "charlie", "delta", "echo")


def apply_mutant(source: str, region: int, code: str) -> str:
    regions = [r for r in find_regions(source, 0) if r.kind == BEGIN_SOLUTION]
    r = regions[region]
    lines = source.splitlines()
    body = textwrap.indent(textwrap.dedent(code).strip("\n"), r.indent).splitlines()
    return "\n".join(lines[: r.start + 1] + body + lines[r.end:])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lab")
    ap.add_argument("--only", default="")
    ap.add_argument("--secrets", default=",".join(SECRETS))
    ap.add_argument("--write-submissions", default="")
    args = ap.parse_args()
    lab_path = Path(args.lab)
    nb = nbformat.read(lab_path, as_version=4)
    mutants = tomllib.loads((Path(__file__).parent / f"{lab_path.stem}.toml").read_text())["mutant"]
    names = [m["name"] for m in mutants]
    assert len(names) == len(set(names)), "duplicate mutant names"
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): i for i, c in enumerate(nb.cells)}
    for m in mutants:
        assert m["solution"] in by_id and m["question"] in by_id, m["name"]
    if args.write_submissions:
        out = Path(args.write_submissions)
        out.mkdir(parents=True, exist_ok=True)
        for m in mutants:
            sub = nbformat.read(lab_path, as_version=4)
            cell = sub.cells[by_id[m["solution"]]]
            cell.source = apply_mutant(cell.source, m.get("region", 0), m["code"])
            nbformat.write(sub, out / f"{m['name']}.ipynb")
        print(f"wrote {len(mutants)} submissions to {out}")
        return 0
    if args.only:
        mutants = [m for m in mutants if m["name"] in args.only.split(",")]
    secrets = args.secrets.split(",")
    lab = load_lab(lab_path)
    tests = {t.grade_id: t for t in lab.tests}
    warm_up(lab.imports)
    workdir = tempfile.mkdtemp(prefix="mutants-")
    kernel = _Kernel(Limits(sandbox=False, memory_mb=None), workdir, time.monotonic() + 3600, None)
    channel = kernel.connect(120)
    carry: dict = {}
    t0 = time.perf_counter()

    snapshot: dict = {}

    def grade(gid: str, secret: str) -> tuple[bool, str]:
        t = tests[gid]
        channel.deadline = time.monotonic() + 600
        # each test sees the names earlier tests defined in the reference run, not those of later re-runs
        # (names that are plain data were also copied into the kernel; that part cannot be undone here)
        rep = run_test(channel, gid, t.public, t.hidden, lab.imports, carry if not snapshot else dict(snapshot), secret)
        bad = next((rep[part] for part in ("public", "hidden") if isinstance(rep[part], dict)), None)
        return bad is None, "" if bad is None else f"{bad['type']}: {bad['message'][:160]}"

    try:
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in tests:
                for s in secrets:
                    ok, why = grade(gid, s)
                    if not ok:
                        print(f"REFERENCE FAILS {gid} secret={s!r}: {why}")
                        return 1
            else:
                reply = kernel.run(cell.source, 1200)
                if reply.get("status") == "error":
                    print(f"reference cell {i} raised {reply.get('ename')}: {reply.get('evalue')}")
                    return 1
        print(f"reference passes every test under {len(secrets)} secrets ({time.perf_counter() - t0:.0f} s)")
        snapshot.update(carry)
        killed, report = 0, []
        for m in mutants:
            cell = nb.cells[by_id[m["solution"]]]
            reply = kernel.run(apply_mutant(cell.source, m.get("region", 0), m["code"]), 600)
            err = f" (cell raised {reply.get('ename')})" if reply.get("status") == "error" else ""
            survived = []
            why = ""
            for s in secrets:
                ok, w = grade(m["question"], s)
                if ok:
                    survived.append(s)
                else:
                    why = why or w
            others = [g for g in tests if g != m["question"] and not grade(g, secrets[0])[0]]
            kernel.run(cell.source, 600)  # restore the reference
            dead = not survived
            killed += dead
            line = (f"{'KILLED ' if dead else 'SURVIVES'} {m['question']:<26} {m['name']:<34}"
                    f"{'' if dead else ' under secrets ' + repr(survived)}{err}"
                    f"{' | also fails: ' + ','.join(others) if others else ''}")
            print(line, "|", why[:110], flush=True)
            report.append(line)
        print(f"{killed}/{len(mutants)} mutants killed under {len(secrets)} secrets "
              f"({time.perf_counter() - t0:.0f} s)")
        return 0 if killed == len(mutants) else 1
    finally:
        channel.sock.close()
        kernel.kill()


if __name__ == "__main__":
    sys.exit(main())
