"""``python -m cnncourse grade-merge DIR... --out DIR``: join the outputs of ``grade --shard K/N`` into one.

Each shard's folder holds its records (``<student>.json``), ``feedback/`` and a manifest
(:mod:`cnncourse.grading.shard`). The merge checks everything before it writes anything:

- every folder is a finished grading output (its manifest says ``complete``);
- all were graded against the same source lab (by SHA-256) and the same course secret;
- the shards are 1/N to N/N, each exactly once, with the same N;
- no student appears twice, and each is in the shard their name hashes to;
- every student listed has a record for that lab and a feedback page.

It then writes the records, ``feedback/`` and ``gradebook.csv`` (the same bytes a single run
over the whole class writes) into a new folder next to ``--out`` and renames it into place,
so an error or a crash leaves no half-merged folder. The result is an ordinary grading
output (shard 1/1), so ``grade`` can resume into it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from cnncourse.grading.shard import MANIFEST, parse_shard, read_manifest, shard_of, shard_text, write_manifest


class MergeError(ValueError):
    """Shard outputs that cannot be merged: mismatched labs, repeated or missing shards, duplicate students."""


def _short(sha: str) -> str:
    return (sha or "?")[:12]


def _load(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise MergeError(
            f"expected a folder written by `cnncourse grade --shard K/N --out DIR`, got {folder} (not a folder)"
        )
    try:
        manifest = read_manifest(folder)
    except ValueError as exc:
        raise MergeError(str(exc)) from None
    if manifest is None:
        raise MergeError(
            f"expected a grading output with a manifest ({MANIFEST}) in {folder}, found none; "
            "was it graded by `cnncourse grade --shard K/N` of this version?"
        )
    if not manifest.get("complete"):
        raise MergeError(
            f"{folder}: shard {manifest['shard']} did not finish grading; run its `grade` command "
            "again (it resumes) before merging"
        )
    return manifest


def _check_same(manifests: list[tuple[Path, dict[str, Any]]], key: str, what: str) -> None:
    first_dir, first = manifests[0]
    for folder, m in manifests[1:]:
        if m.get(key) != first.get(key):
            raise MergeError(
                f"mismatched {what}: expected {first_dir}'s {key} {first.get(key)!r} in every shard, "
                f"got {m.get(key)!r} in {folder}"
            )


def collect(folders: list[str | os.PathLike]) -> tuple[dict[str, Any], list[tuple[dict[str, Any], Path]]]:
    """Check the shard outputs ``folders`` and return the merged manifest and ``(record, its folder)`` pairs.

    Raises:
        MergeError: naming what was expected and what was found, for any of the refusals in the module docstring.
    """
    if not folders:
        raise MergeError("expected at least one shard output folder, got none")
    manifests = [(Path(f), _load(Path(f))) for f in folders]
    first_dir, first = manifests[0]
    for folder, m in manifests[1:]:
        if m.get("lab_sha256") != first.get("lab_sha256"):
            raise MergeError(
                f"mismatched source labs: {first_dir} was graded against {first.get('lab')} (sha256 "
                f"{_short(first.get('lab_sha256', ''))}), {folder} against {m.get('lab')} (sha256 "
                f"{_short(m.get('lab_sha256', ''))}); expected every shard graded against the same "
                "source lab file"
            )
    _check_same(manifests, "grade_ids", "graded questions")
    _check_same(manifests, "secret_id", "course secrets (--secret)")
    counts = {parse_shard(m["shard"])[1] for _, m in manifests}
    if len(counts) > 1:
        raise MergeError(
            "mismatched shard counts: expected every folder to be one of N shards with the same N, got "
            + ", ".join(f"{f}: {m['shard']}" for f, m in manifests)
        )
    n = counts.pop()
    seen: dict[int, Path] = {}
    for folder, m in manifests:
        k = parse_shard(m["shard"])[0]
        if k in seen:
            raise MergeError(f"shard {k}/{n} given twice: {seen[k]} and {folder}; expected each shard once")
        seen[k] = folder
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in seen]
    if missing:
        raise MergeError(
            f"missing shards: expected {n} shard folders (1/{n} to {n}/{n}), got "
            f"{', '.join(shard_text((k, n)) for k in sorted(seen))}; missing {', '.join(missing)}"
        )
    owner: dict[str, Path] = {}
    pairs: list[tuple[dict[str, Any], Path]] = []
    for folder, m in manifests:
        k = parse_shard(m["shard"])[0]
        for student in m["students"]:
            if student in owner:
                raise MergeError(
                    f"duplicate student {student!r}: graded in {owner[student]} and in {folder}; "
                    "expected each student in exactly one shard"
                )
            owner[student] = folder
            if shard_of(student, n) != k:
                raise MergeError(
                    f"{folder}: student {student!r} belongs to shard {shard_of(student, n)}/{n}, but "
                    f"this folder is shard {k}/{n}; were the shards graded with different N?"
                )
            pairs.append((_record(folder, m, student), folder))
    if len({m.get("limits") and json.dumps(m["limits"], sort_keys=True) for _, m in manifests}) > 1:
        print(
            "warning: the shards were graded under different time limits (each calibrated on its own machine); "
            "pass the same --timeout and --cell-timeout to every shard for equal treatment:\n  "
            + "\n  ".join(f"{f}: {m.get('limits')}" for f, m in manifests),
            file=sys.stderr,
        )
    pairs.sort(key=lambda p: p[0]["student"])
    merged = {k: first.get(k) for k in ("lab", "lab_sha256", "grade_ids", "secret_id", "sandbox", "limits")}
    merged.update(
        shard="1/1",
        students=[r["student"] for r, _ in pairs],
        complete=True,
        sandbox=all(m.get("sandbox") for _, m in manifests),
        submissions_found=max(m.get("submissions_found", 0) for _, m in manifests),
        merged_from=[{"folder": str(f), "shard": m["shard"]} for f, m in manifests],
    )
    return merged, pairs


def _record(folder: Path, manifest: dict[str, Any], student: str) -> dict[str, Any]:
    path = folder / f"{student}.json"
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise MergeError(
            f"{folder}: expected the record {path.name} of student {student!r} listed in its manifest, "
            f"got {type(exc).__name__}: {exc}"
        ) from None
    if (
        not isinstance(record, dict)
        or record.get("student") != student
        or record.get("lab_sha256") != manifest.get("lab_sha256")
    ):
        raise MergeError(
            f"{path}: expected student {student!r}'s record for lab sha256 "
            f"{_short(manifest.get('lab_sha256', ''))}, got one for student "
            f"{record.get('student') if isinstance(record, dict) else None!r}, lab sha256 "
            f"{_short(record.get('lab_sha256', '')) if isinstance(record, dict) else '?'}"
        )
    if not (folder / "feedback" / f"{student}.html").is_file():
        raise MergeError(f"{folder}: expected feedback/{student}.html for student {student!r}, found none")
    return record


def merge(folders: list[str | os.PathLike], out: str | os.PathLike) -> list[dict[str, Any]]:
    """Merge shard outputs ``folders`` into ``out``: records, ``feedback/``, ``gradebook.csv`` and a manifest.

    ``out`` must be new, empty, or an earlier merge's output (which is replaced whole).

    Returns:
        The records, sorted by student.

    Raises:
        MergeError: for shards that cannot be merged, or an ``out`` that holds something else; nothing is written.
    """
    from cnncourse.grading.report import gradebook_csv_for

    out = Path(out)
    merged, pairs = collect(folders)
    sources = {Path(f).resolve() for f in folders}
    if out.resolve() in sources or any(s in out.resolve().parents for s in sources):
        raise MergeError(f"expected --out outside the shard folders, got {out}")
    if out.exists():
        previous = None
        try:
            previous = read_manifest(out) if out.is_dir() else None
        except ValueError:
            pass
        if not out.is_dir() or not (previous and previous.get("merged_from") or not any(out.iterdir())):
            raise MergeError(
                f"expected --out to be a new folder, an empty one or an earlier grade-merge output, "
                f"got {out}, which holds other files"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.merging-"))
    try:
        (tmp / "feedback").mkdir()
        records = [record for record, _ in pairs]
        for record, folder in pairs:  # byte for byte: the merge changes no record or page
            student = record["student"]
            shutil.copyfile(folder / f"{student}.json", tmp / f"{student}.json")
            shutil.copyfile(folder / "feedback" / f"{student}.html", tmp / "feedback" / f"{student}.html")
        (tmp / "gradebook.csv").write_text(gradebook_csv_for(list(merged["grade_ids"]), records), "utf-8")
        write_manifest(tmp, **merged)
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "x")
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old / "x", out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return records


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cmd_merge(args: argparse.Namespace) -> int:
    from cnncourse.grading.report import summary_text

    try:
        records = merge(args.folders, args.out)
    except MergeError as exc:
        print(f"error: {exc}\nnothing was written", file=sys.stderr)
        return 2
    print(summary_text(records))
    print(
        f"\nmerged {len(args.folders)} shards: wrote {Path(args.out) / 'gradebook.csv'}, {len(records)} records "
        f"and feedback/ in {args.out}"
    )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``grade-merge`` subcommand on ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    g = subparsers.add_parser(
        "grade-merge",
        help="merge the outputs of `grade --shard K/N` into one gradebook",
        description="Check that the folders are shards 1/N to N/N of one source lab, each "
        "once, with no student twice; then write their records, feedback/ and "
        "one gradebook.csv into --out, atomically.",
    )
    g.add_argument("folders", nargs="+", help="the --out folders of `grade --shard K/N`, one per shard")
    g.add_argument("--out", required=True, help="folder for the merged records, gradebook.csv and feedback/")
    g.set_defaults(func=_cmd_merge)
    return g
