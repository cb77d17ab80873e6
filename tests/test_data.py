import shutil

import numpy as np
import pytest
import torch
import torchvision

from cnncourse import data, data_files
from cnncourse.data import (BatchLoader, CorruptDatasetError, DatasetNotFoundError, load_dataset, pad_to,
                            random_crop_flip, shift_images)


def test_mnist_matches_torchvision(data_root, mnist_train):
    ref = torchvision.datasets.MNIST(root=str(data_root), train=True, download=False)
    assert mnist_train.images.shape == (60000, 1, 28, 28) and mnist_train.images.dtype == torch.uint8
    assert mnist_train.labels.dtype == torch.int64
    assert torch.equal(mnist_train.images[:, 0], ref.data)
    assert torch.equal(mnist_train.labels, ref.targets)
    assert mnist_train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


@pytest.mark.parametrize("name,split,n,first", [
    ("mnist", "test", 10000, [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
    ("fashion-mnist", "train", 60000, [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]),
    ("fashion-mnist", "test", 10000, [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]),
])
def test_other_splits(data_root, name, split, n, first):
    ds = load_dataset(name, split, root=data_root)
    assert len(ds) == n and ds.labels[:10].tolist() == first
    assert len(ds.classes) == 10


def test_mean_std_match_card(mnist_train):
    x = mnist_train.images.double() / 255
    assert round(x.mean().item(), 4) == mnist_train.mean == 0.1307
    assert round(x.std().item(), 4) == mnist_train.std == 0.3081


def test_dataset_protocol(mnist_train):
    img, label = mnist_train[0]
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert label == 5
    loader = torch.utils.data.DataLoader(mnist_train.take(64), batch_size=32)
    x, y = next(iter(loader))
    assert x.shape == (32, 1, 28, 28) and y.shape == (32,)


def test_subsets(mnist_train):
    low = mnist_train.filter_classes([0, 1, 2, 3, 4])
    assert set(low.labels.unique().tolist()) == {0, 1, 2, 3, 4}
    high = mnist_train.filter_classes([5, 6, 7, 8, 9])
    assert set(high.labels.unique().tolist()) == {0, 1, 2, 3, 4}
    assert high.classes[0] == "5 - five" and len(low) + len(high) == len(mnist_train)
    few = mnist_train.per_class(10, seed=1)
    assert len(few) == 100 and torch.bincount(few.labels).tolist() == [10] * 10
    assert torch.equal(few.images, mnist_train.per_class(10, seed=1).images)
    assert not torch.equal(few.images, mnist_train.per_class(10, seed=2).images)


def test_missing_data_error_names_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCOURSE_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(data_files, "CACHE_ROOT", tmp_path / "cache")
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", "test", root=tmp_path / "arg", download=False)
    msg = str(err.value)
    assert "'fashion-mnist'" in msg
    for where in ("arg", "env", "cache"):
        assert str(tmp_path / where / "FashionMNIST" / "raw") in msg
    assert "CNNCOURSE_DATA" in msg and "go online" in msg


def test_offline_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNCOURSE_DATA", raising=False)
    monkeypatch.setattr(data_files, "CACHE_ROOT", tmp_path / "cache")

    def offline(spec, split):
        raise OSError("network is unreachable")
    monkeypatch.setattr(data_files, "_download", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed: OSError: network is unreachable"):
        load_dataset("mnist", "train", root=tmp_path / "nothing")


def test_root_precedence(tmp_path, monkeypatch, data_root):
    # A root argument wins over $CNNCOURSE_DATA, which wins over the cache.
    monkeypatch.setenv("CNNCOURSE_DATA", str(data_root))
    assert data.candidate_roots(tmp_path)[:2] == [tmp_path, data_root]
    assert data.candidate_roots(None)[0] == data_root


def _copy_split(data_root, tmp_path, name="MNIST"):
    dst = tmp_path / name / "raw"
    dst.mkdir(parents=True)
    for f in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(data_root / name / "raw" / f, dst / f)
    return dst


def test_truncated_file_is_refused_with_checksums(tmp_path, data_root):
    raw = _copy_split(data_root, tmp_path)
    target = raw / "t10k-labels-idx1-ubyte"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(CorruptDatasetError) as err:
        load_dataset("mnist", "test", root=tmp_path)
    msg = str(err.value)
    assert str(target) in msg
    assert "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2" in msg  # expected
    assert data.sha256_of(target) in msg  # actual


def test_flipped_byte_is_refused(tmp_path, data_root):
    raw = _copy_split(data_root, tmp_path)
    target = raw / "t10k-images-idx3-ubyte"
    blob = bytearray(target.read_bytes())
    blob[5000] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(CorruptDatasetError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", "test", root=tmp_path)


def test_bad_names():
    with pytest.raises(ValueError, match="expected one of"):
        load_dataset("kmnist", "train")
    with pytest.raises(ValueError, match="expected 'train' or 'test'"):
        load_dataset("mnist", "validation")


def test_batch_loader_normalises_and_covers_everything(mnist_train):
    small = mnist_train.take(1000)
    loader = BatchLoader(small, batch_size=128, shuffle=True, seed=3)
    xs, ys = zip(*loader)
    assert len(loader) == 8 and xs[-1].shape == (1000 - 7 * 128, 1, 28, 28)
    x = torch.cat(xs)
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1
    assert sorted(torch.cat(ys).tolist()) == sorted(small.labels.tolist())
    # Same seed, same order; the order changes between epochs.
    again = BatchLoader(small, batch_size=128, shuffle=True, seed=3)
    first = next(iter(again))[1]
    assert torch.equal(first, ys[0])
    assert not torch.equal(next(iter(again))[1], first)


def test_transforms():
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).view(2, 1, 28, 28)
    padded = pad_to(32)(x)
    assert padded.shape == (2, 1, 32, 32) and torch.equal(padded[..., 2:30, 2:30], x)
    shifted = shift_images(x, 3, -2)
    assert torch.equal(shifted[..., 0:26, 3:], x[..., 2:, :25]) and shifted[..., :, :3].abs().sum() == 0
    assert torch.equal(shift_images(x, 0, 0), x)
    aug = random_crop_flip(pad=2, generator=torch.Generator().manual_seed(0))(x)
    assert aug.shape == x.shape
    with pytest.raises(ValueError, match="cannot pad"):
        pad_to(20)(x)


def test_crop_flip_is_a_crop_of_the_padded_image():
    x = torch.randn(16, 2, 9, 9)
    out = random_crop_flip(pad=2, flip=False, generator=torch.Generator().manual_seed(1))(x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        windows = [padded[i, :, a:a + 9, b:b + 9] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_idx_parser_rejects_garbage(tmp_path):
    f = tmp_path / "bad"
    f.write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(5))
    with pytest.raises(CorruptDatasetError, match="not a uint8 IDX file"):
        data_files.read_idx(f)
    good = tmp_path / "good"
    good.write_bytes(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
    assert np.array_equal(data_files.read_idx(good), [1, 2, 3])
