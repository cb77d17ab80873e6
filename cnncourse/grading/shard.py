"""Shards of a class for grading on many machines: which shard a student is in, and each output's manifest.

A class of hundreds is graded as N independent jobs (a Slurm array, a Kubernetes indexed
job, a CI matrix), job K grading ``--shard K/N``. A student belongs to shard
``1 + (first 8 bytes of SHA-256 of the name) mod N``: the same on every machine and Python
(unlike ``hash()``, which is salted per process), and independent of who else submitted,
so a late submission never moves anyone else to another shard.

Every grading output folder gets a manifest, :data:`MANIFEST`, that says which lab (by
checksum), which shard and which students it holds, and whether the run finished;
``grade-merge`` (:mod:`cnncourse.grading.merge`) reads it to refuse mismatched, repeated,
unfinished or missing shards. It holds JSON but does not end in ``.json``, so it never
clashes with a student's record (``<student>.json``) nor turns up among them in a
``glob("*.json")``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cnncourse.io import atomic_write_text

MANIFEST = "shard.manifest"
MANIFEST_SCHEMA = 1


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``: the K-th of N shards, counted from 1.

    Raises:
        ValueError: for anything but two integers ``K/N`` with ``1 <= K <= N``.
    """
    k_text, sep, n_text = str(text).strip().partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or n < 1 or not 1 <= k <= n:
        hint = ""
        if sep and n >= 1 and k == 0:
            hint = " (shards count from 1: with a 0-based index such as JOB_COMPLETION_INDEX, pass $((INDEX + 1)))"
        raise ValueError(f"expected a shard K/N with whole numbers 1 <= K <= N, such as 2/3, got {text!r}{hint}")
    return k, n


def shard_of(student: str, n: int) -> int:
    """The shard (1 to ``n``) that ``student`` belongs to, from a SHA-256 of the name."""
    if n < 1:
        raise ValueError(f"expected at least 1 shard, got {n}")
    return 1 + int.from_bytes(hashlib.sha256(student.encode("utf-8")).digest()[:8], "big") % n


def shard_text(shard: tuple[int, int]) -> str:
    """``(2, 3)`` -> ``"2/3"``."""
    return f"{shard[0]}/{shard[1]}"


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a grading output folder, or ``None`` when it has none.

    Raises:
        ValueError: for a manifest that is not this schema's JSON object.
    """
    path = Path(folder) / MANIFEST
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
        parse_shard(manifest["shard"])
        ok = manifest.get("schema") == MANIFEST_SCHEMA and isinstance(manifest.get("students"), list)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError(
            f"{path}: expected a grading manifest (schema {MANIFEST_SCHEMA}, with shard and students), "
            "got something else; grade the shard again into an empty folder"
        )
    return manifest


def write_manifest(folder: str | os.PathLike, **fields: Any) -> None:
    """Write ``folder``'s manifest atomically: ``schema`` plus ``fields`` (lab, lab_sha256, shard, students...)."""
    atomic_write_text(
        Path(folder) / MANIFEST, json.dumps({"schema": MANIFEST_SCHEMA, **fields}, indent=1, sort_keys=True) + "\n"
    )
