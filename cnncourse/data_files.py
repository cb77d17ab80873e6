"""Where MNIST and Fashion-MNIST live on disk, and whether the files are intact.

The folders searched, in order: the ``root`` argument, then ``$CNNCOURSE_DATA``, then
``~/.cache/cnncourse`` (where torchvision downloads them when nothing is found). The files are read
from torchvision's raw layout (``<root>/MNIST/raw/train-images-idx3-ubyte`` ...), and each one's
SHA-256 is checked against the published value before it is parsed.

:mod:`cnncourse.data` builds the in-memory datasets on top of this module and re-exports its public
names (``locate``, ``sha256_of``, the two errors ...), so ``cnncourse.data`` stays the one import.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

ENV_VAR = "CNNCOURSE_DATA"
CACHE_ROOT = Path("~/.cache/cnncourse").expanduser()


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset's torchvision folder and class, class names, pixel statistics and file checksums."""

    folder: str
    torchvision_class: str
    classes: tuple[str, ...]
    mean: float
    std: float
    sha256: dict[str, str] = field(repr=False)


_SPECS = {
    "mnist": DatasetSpec(
        folder="MNIST",
        torchvision_class="MNIST",
        classes=tuple(f"{d} - {w}" for d, w in enumerate("zero one two three four five six seven eight nine".split())),
        mean=0.1307,
        std=0.3081,
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": DatasetSpec(
        folder="FashionMNIST",
        torchvision_class="FashionMNIST",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        mean=0.2860,
        std=0.3530,
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
}
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
# SHA-256 of 47 MB takes ~0.1 s; remember verified files so notebooks reloading data stay fast.
_VERIFIED: dict[tuple[str, int, float], str] = {}


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a dataset is in none of the places the library looks and cannot be downloaded."""


class CorruptDatasetError(ValueError):
    """Raised when a dataset file's SHA-256 differs from the published one."""


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_SPECS)


def candidate_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for data, in order: ``root``, ``$CNNCOURSE_DATA``, the cache.

    Reference: the course's data policy (README, "Where the data comes from").
    """
    roots = []
    if root is not None:
        roots.append(Path(root).expanduser())
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots.append(CACHE_ROOT)
    return roots


def _files(spec: DatasetSpec, split: str) -> list[str]:
    prefix = _SPLIT_PREFIX[split]
    return [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, expected: str) -> None:
    """Check ``path`` against its published SHA-256.

    Raises:
        CorruptDatasetError: naming the file, the expected and the actual checksum.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if _VERIFIED.get(key) == expected:
        return
    actual = sha256_of(path)
    if actual != expected:
        raise CorruptDatasetError(
            f"{path} is corrupt or truncated: expected SHA-256 {expected}, got {actual} "
            f"({stat.st_size} bytes). Delete it and download it again, or point {ENV_VAR} at a good copy."
        )
    _VERIFIED[key] = expected


def read_idx(path: Path) -> np.ndarray:
    """Parse an uncompressed IDX file (big-endian header, then uint8 data).

    Raises:
        CorruptDatasetError: the header is not a uint8 IDX header, or the data's size disagrees with it.

    Reference: the IDX format, described on Y. LeCun's MNIST page (yann.lecun.com/exdb/mnist).
    """
    raw = path.read_bytes()
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if raw[2] != 0x08 or len(raw) - offset != int(np.prod(dims)):
        raise CorruptDatasetError(f"{path} is not a uint8 IDX file of shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find(spec: DatasetSpec, split: str, roots: Sequence[Path]) -> Path | None:
    for r in roots:
        raw = r / spec.folder / "raw"
        if all((raw / f).is_file() for f in _files(spec, split)):
            return raw
    return None


def _spec(name: str, split: str) -> tuple[str, DatasetSpec]:
    key = name.lower().replace("_", "-")
    if key not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {dataset_names()}")
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    return key, _SPECS[key]


def locate(name: str, split: str = "train", root: str | os.PathLike | None = None) -> Path | None:
    """The folder :func:`cnncourse.data.load_dataset` reads ``name``/``split`` from, or ``None`` when it is nowhere.

    The same search as the loader (``root``, ``$CNNCOURSE_DATA``, the cache, in that order), so
    a caller reporting where data lives can never disagree with where it is loaded from.

    Returns:
        The ``.../<Folder>/raw`` directory holding both IDX files of the split; checksums are not checked.

    Raises:
        ValueError: unknown name or split.
    """
    _, spec = _spec(name, split)
    return _find(spec, split, candidate_roots(root))


def _download(spec: DatasetSpec, split: str) -> None:
    import torchvision.datasets as tvd

    getattr(tvd, spec.torchvision_class)(root=str(CACHE_ROOT), train=(split == "train"), download=True)


def find_split(
    name: str, split: str = "train", root: str | os.PathLike | None = None, download: bool | None = None
) -> tuple[str, DatasetSpec, Path, Path]:
    """Find (or download) the two IDX files of ``name``/``split`` and check their SHA-256.

    Args: as :func:`cnncourse.data.load_dataset`, which reads the files this returns.

    Returns:
        The dataset's canonical name, its spec, and the verified images and labels files.

    Raises:
        ValueError: unknown name or split.
        DatasetNotFoundError: the files are nowhere and could not be downloaded; the message lists
            every folder searched and the two fixes.
        CorruptDatasetError: a file's SHA-256 differs from the published one.
    """
    key, spec = _spec(name, split)
    roots = candidate_roots(root)
    raw = _find(spec, split, roots)
    if raw is None and download is not False:
        try:
            _download(spec, split)
        except Exception as exc:  # offline, or a proxy refused: report with the paths below
            reason = f"download failed: {type(exc).__name__}: {exc}"
        else:
            reason = "download finished but the files are still missing"
        raw = _find(spec, split, roots)
    else:
        reason = "download disabled (download=False)"
    if raw is None:
        looked = "\n".join(f"  - {r / spec.folder / 'raw'}" for r in roots)
        raise DatasetNotFoundError(
            f"dataset {key!r} ({split}) not found. Looked for {', '.join(_files(spec, split))} in:\n{looked}\n"
            f"({reason}). Fix it in one of two ways:\n"
            f"  1. set {ENV_VAR} to a folder containing {spec.folder}/raw/ (e.g. export {ENV_VAR}=../shared/data), or\n"
            f"  2. go online and call load_dataset({key!r}, {split!r}) again: it downloads into {CACHE_ROOT}."
        )
    img_file, lbl_file = (raw / f for f in _files(spec, split))
    for f in (img_file, lbl_file):
        verify_file(f, spec.sha256[f.name])
    return key, spec, img_file, lbl_file
