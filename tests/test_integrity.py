import pytest
import torch
import torch.nn.functional as F

from cnncourse.grading import DelegationError, forbid


def test_forbid_blocks_and_restores():
    original = F.conv2d
    x, w = torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3)
    with forbid("torch.nn.functional.conv2d"):
        with pytest.raises(DelegationError, match="torch.nn.functional.conv2d was called"):
            F.conv2d(x, w)
        with pytest.raises(DelegationError):
            torch.nn.Conv2d(1, 1, 3)(x)  # nn.Conv2d goes through F.conv2d too
    assert F.conv2d is original
    F.conv2d(x, w)


def test_forbid_restores_after_an_exception():
    original = torch.max_pool2d
    with pytest.raises(RuntimeError):
        with forbid("torch.max_pool2d"):
            raise RuntimeError("student code crashed")
    assert torch.max_pool2d is original


def test_forbid_rejects_unknown_names():
    with pytest.raises(ValueError, match="has no attribute 'conv9d'"):
        with forbid("torch.nn.functional.conv9d"):
            pass
    with pytest.raises(ValueError, match="no importable module"):
        with forbid("nosuchpackage.thing"):
            pass


def test_forbid_catches_aliases_and_captured_names():
    import __main__

    x, w = torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3)
    __main__.captured_conv = F.conv2d  # as `from torch.nn.functional import conv2d` would bind it
    try:
        with forbid("torch.nn.functional.conv2d"):
            with pytest.raises(DelegationError):
                torch.conv2d(x, w)  # the same object as F.conv2d
            with pytest.raises(DelegationError):
                __main__.captured_conv(x, w)
        assert __main__.captured_conv is torch.conv2d is F.conv2d
        __main__.captured_conv(x, w)
    finally:
        del __main__.captured_conv


def test_forbid_reports_the_first_name_of_an_aliased_function():
    with forbid("torch.nn.functional.conv2d", "torch.conv2d"):
        with pytest.raises(DelegationError, match=r"^torch.nn.functional.conv2d was called"):
            torch.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 2, 2))
    assert torch.conv2d is F.conv2d
