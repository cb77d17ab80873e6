"""MNIST and Fashion-MNIST as in-memory tensors, with a fast batch iterator.

The whole dataset lives in one ``uint8`` tensor ``(N, 1, 28, 28)``. Batches are sliced,
converted and normalised as whole tensors, so training never spends its time in
per-image Python or PIL conversions.

Where the data is found: the ``root`` argument, then ``$CNNCOURSE_DATA``, then
``~/.cache/cnncourse``. The files are read from torchvision's raw layout
(``<root>/MNIST/raw/train-images-idx3-ubyte`` ...) and their SHA-256 is checked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

ENV_VAR = "CNNCOURSE_DATA"
CACHE_ROOT = Path("~/.cache/cnncourse").expanduser()


@dataclass(frozen=True)
class _Spec:
    folder: str
    torchvision_class: str
    classes: tuple[str, ...]
    mean: float
    std: float
    sha256: dict[str, str] = field(repr=False)


_SPECS = {
    "mnist": _Spec(
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
    "fashion-mnist": _Spec(
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


def _files(spec: _Spec, split: str) -> list[str]:
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


def _read_idx(path: Path) -> np.ndarray:
    """Parse an uncompressed IDX file (big-endian header, then uint8 data)."""
    raw = path.read_bytes()
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if raw[2] != 0x08 or len(raw) - offset != int(np.prod(dims)):
        raise CorruptDatasetError(f"{path} is not a uint8 IDX file of shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find(spec: _Spec, split: str, roots: Sequence[Path]) -> Path | None:
    for r in roots:
        raw = r / spec.folder / "raw"
        if all((raw / f).is_file() for f in _files(spec, split)):
            return raw
    return None


def _spec(name: str, split: str) -> tuple[str, _Spec]:
    key = name.lower().replace("_", "-")
    if key not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {dataset_names()}")
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    return key, _SPECS[key]


def locate(name: str, split: str = "train", root: str | os.PathLike | None = None) -> Path | None:
    """The folder :func:`load_dataset` reads ``name``/``split`` from, or ``None`` when it is nowhere.

    The same search as the loader (``root``, ``$CNNCOURSE_DATA``, the cache, in that order), so
    a caller reporting where data lives can never disagree with where it is loaded from.

    Returns:
        The ``.../<Folder>/raw`` directory holding both IDX files of the split; checksums are not checked.

    Raises:
        ValueError: unknown name or split.
    """
    _, spec = _spec(name, split)
    return _find(spec, split, candidate_roots(root))


def _download(spec: _Spec, split: str) -> None:
    import torchvision.datasets as tvd

    getattr(tvd, spec.torchvision_class)(root=str(CACHE_ROOT), train=(split == "train"), download=True)


class ImageDataset(Dataset):
    """A labelled image dataset held in memory as tensors.

    Attributes:
        images: ``uint8`` tensor ``(N, C, H, W)``, pixel 0 = background.
        labels: ``int64`` tensor ``(N,)``.
        classes: class names; ``labels`` index into it.
        mean, std: the training-set pixel statistics (on the 0-1 scale) used to normalise.
        name: a short description, e.g. ``"mnist/train"``.
        location: the folder the files were read from (see :func:`locate`), or ``None`` when built in memory.

    ``dataset[i]`` returns ``(image, label)`` with the image as float in [0, 1], so it also
    works with ``torch.utils.data.DataLoader``; for speed use :class:`BatchLoader`.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        mean: float,
        std: float,
        name: str = "dataset",
        location: Path | None = None,
    ) -> None:
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images, self.labels = images, labels.long()
        self.classes, self.mean, self.std, self.name = list(classes), float(mean), float(std), name
        self.location = location

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float().div(255), int(self.labels[i])

    def __repr__(self) -> str:
        return f"ImageDataset({self.name}, images={tuple(self.images.shape)}, classes={len(self.classes)})"

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageDataset:
        """A new dataset with the rows at ``indices`` (a list, index tensor or bool mask)."""
        idx = torch.as_tensor(indices)
        return ImageDataset(
            self.images[idx], self.labels[idx], self.classes, self.mean, self.std, self.name, self.location
        )

    def filter_classes(self, classes: Sequence[int], relabel: bool = True) -> ImageDataset:
        """Keep only the labels in ``classes``; with ``relabel`` they become ``0..k-1`` in the given order."""
        classes = list(classes)
        keep = torch.isin(self.labels, torch.tensor(classes))
        out = self.subset(keep)
        if relabel:
            lookup = torch.full((int(self.labels.max()) + 1,), -1, dtype=torch.long)
            lookup[torch.tensor(classes)] = torch.arange(len(classes))
            out.labels = lookup[out.labels]
            out.classes = [self.classes[c] for c in classes]
        out.name = f"{self.name}[{','.join(map(str, classes))}]"
        return out

    def per_class(self, n: int, seed: int = 0) -> ImageDataset:
        """``n`` randomly chosen images of every class (fewer where a class has fewer)."""
        g = torch.Generator().manual_seed(seed)
        picks = []
        for c in torch.unique(self.labels):
            idx = torch.nonzero(self.labels == c).flatten()
            picks.append(idx[torch.randperm(len(idx), generator=g)[:n]])
        return self.subset(torch.cat(picks).sort().values)

    def take(self, n: int, seed: int = 0) -> ImageDataset:
        """A random subset of ``n`` images, the same for the same seed."""
        g = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=g)[:n].sort().values)


def load_dataset(
    name: str, split: str = "train", root: str | os.PathLike | None = None, download: bool | None = None
) -> ImageDataset:
    """Load MNIST or Fashion-MNIST into memory.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: a folder holding ``MNIST/raw`` or ``FashionMNIST/raw``; searched first.
        download: ``None`` (the default) or ``True`` download into ``~/.cache/cnncourse``
            through torchvision when the files are found nowhere; ``False`` never downloads.

    Returns:
        An :class:`ImageDataset` with images ``(N, 1, 28, 28)`` uint8 and labels ``(N,)`` int64.

    Raises:
        ValueError: unknown name or split.
        DatasetNotFoundError: the files are nowhere and could not be downloaded; the
            message lists every folder searched and the two fixes.
        CorruptDatasetError: a file's SHA-256 differs from the published one.

    Reference: LeCun et al., "Gradient-based learning applied to document recognition"
    (1998) for MNIST; Xiao et al., arXiv:1708.07747 (2017) for Fashion-MNIST.
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
    images = torch.from_numpy(_read_idx(img_file).copy()).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(lbl_file).astype(np.int64))
    return ImageDataset(images, labels, spec.classes, spec.mean, spec.std, f"{key}/{split}", location=raw)


Transform = Callable[[torch.Tensor], torch.Tensor]


def pad_to(size: int) -> Transform:
    """A transform that zero-pads a normalised batch ``(N, C, H, W)`` to ``size`` x ``size``.

    Padding happens after normalisation, so the border takes the value 0 (the mean), not black.
    """

    def pad(x: torch.Tensor) -> torch.Tensor:
        dh, dw = size - x.shape[-2], size - x.shape[-1]
        if dh < 0 or dw < 0:
            raise ValueError(f"cannot pad {tuple(x.shape[-2:])} images to {size}x{size}")
        return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))

    return pad


def shift_images(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate a batch ``(N, C, H, W)`` by ``dx`` pixels right and ``dy`` down, filling with zeros."""
    out = torch.zeros_like(images)
    h, w = images.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = images[..., ys, xs]
    return out


def random_crop_flip(pad: int = 2, flip: bool = True, generator: torch.Generator | None = None) -> Transform:
    """Batch augmentation: random translations of up to ``pad`` pixels and optional horizontal flips.

    Equivalent to AlexNet's random crops of a padded image, done for a whole batch with one
    gather instead of per-image Python. Reference: Krizhevsky et al., NeurIPS 2012, section 4.1.
    """

    def augment(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (oy[:, None] + torch.arange(h)[None]).to(x.device)  # (N, H)
        cols = (ox[:, None] + torch.arange(w)[None]).to(x.device)  # (N, W)
        out = padded[
            torch.arange(n, device=x.device)[:, None, None, None],
            torch.arange(x.shape[1], device=x.device)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
        if flip:
            mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            out[mask] = out[mask].flip(-1)
        return out

    return augment


def as_sequences(images: torch.Tensor) -> torch.Tensor:
    """Read images ``(N, C, H, W)`` row by row: a sequence ``(N, T=H, I=C*W)``, one row per time step."""
    if images.dim() != 4:
        raise ValueError(f"as_sequences expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    return images.permute(0, 2, 1, 3).flatten(2)


def permute_pixels(seed: int = 0, size: tuple[int, int] = (28, 28)) -> Transform:
    """A transform that shuffles the pixels of every image with one fixed permutation (permuted MNIST).

    The same ``seed`` always gives the same permutation, so training and evaluation agree. Read
    row by row afterwards, each step holds 28 pixels scattered over the whole image.

    Reference: Q. V. Le, N. Jaitly, G. E. Hinton, arXiv:1504.00941 (2015), section 4.
    """
    perm = torch.randperm(size[0] * size[1], generator=torch.Generator().manual_seed(seed))

    def permute(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != tuple(size):
            raise ValueError(f"permute_pixels expected images of size {size}, got {tuple(x.shape[-2:])}")
        return x.flatten(-2)[..., perm.to(x.device)].reshape(x.shape)

    return permute


def add_noise(std: float, generator: torch.Generator | None = None) -> Transform:
    """A transform adding Gaussian noise ``std * eps``, ``eps ~ N(0, 1)``, to a (normalised) batch."""
    if std < 0:
        raise ValueError(f"noise std must be non-negative, got {std}")

    def noisy(x: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(x.shape, generator=generator).to(x.device)
        return x + std * eps

    return noisy


def noisy_pairs(
    data: ImageDataset, std: float, seed: int = 0, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole dataset as ``(noisy, clean)`` float tensors ``(N, C, H, W)``, the noise fixed by ``seed``.

    ``clean`` is normalised like :class:`BatchLoader` batches (unless ``normalize=False``: [0, 1]);
    ``noisy = clean + std * eps``. Use it to score denoising on the same corrupted test set every time.
    """
    clean = data.images.float().div(255)
    if normalize:
        clean = (clean - data.mean) / data.std
    return add_noise(std, torch.Generator().manual_seed(seed))(clean), clean


class BatchLoader:
    """Iterate over an :class:`ImageDataset` in batches, without per-item Python.

    Each batch ``(x, y)`` has ``x`` float32 ``(B, C, H, W)`` normalised with the dataset's
    mean and std (when ``normalize``), then passed through ``transform``; ``y`` is int64 ``(B,)``.
    Shuffling uses its own seeded generator, so epoch ``k`` of seed ``s`` is always the same order.
    """

    def __init__(
        self,
        data: ImageDataset,
        batch_size: int = 128,
        shuffle: bool = False,
        seed: int = 0,
        normalize: bool = True,
        transform: Transform | None = None,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.normalize, self.transform, self.device, self.drop_last = normalize, transform, device, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        # Move the uint8 tensor once: 47 MB for MNIST, a quarter of its float32 size.
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx].float().div_(255)
            if self.normalize:
                x = x.sub_(self.data.mean).div_(self.data.std)
            if self.transform is not None:
                x = self.transform(x)
            yield x, self.labels[idx]
