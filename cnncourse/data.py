"""MNIST and Fashion-MNIST as in-memory tensors, with a fast batch iterator.

The whole dataset lives in one ``uint8`` tensor ``(N, 1, 28, 28)``. Batches are sliced,
converted and normalised as whole tensors, so training never spends its time in
per-image Python or PIL conversions.

Where the data is found: the ``root`` argument, then ``$CNNCOURSE_DATA``, then
``~/.cache/cnncourse``. The files are read from torchvision's raw layout
(``<root>/MNIST/raw/train-images-idx3-ubyte`` ...) and their SHA-256 is checked: that half,
the files on disk, is :mod:`cnncourse.data_files`, whose public names are re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cnncourse.data_files import (
    CACHE_ROOT,
    ENV_VAR,
    CorruptDatasetError,
    DatasetNotFoundError,
    candidate_roots,
    dataset_names,
    find_split,
    locate,
    read_idx,
    sha256_of,
    verify_file,
)

__all__ = [
    "CACHE_ROOT",
    "ENV_VAR",
    "BatchLoader",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "ImageDataset",
    "Transform",
    "add_noise",
    "as_sequences",
    "candidate_roots",
    "dataset_names",
    "load_dataset",
    "locate",
    "noisy_pairs",
    "pad_to",
    "permute_pixels",
    "random_crop_flip",
    "sha256_of",
    "shift_images",
    "verify_file",
]


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
    key, spec, img_file, lbl_file = find_split(name, split, root, download)
    images = torch.from_numpy(read_idx(img_file).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(lbl_file).astype(np.int64))
    return ImageDataset(images, labels, spec.classes, spec.mean, spec.std, f"{key}/{split}", location=img_file.parent)


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
