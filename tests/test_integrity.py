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


# ---------------------------------------------------------------- the grader's wire (no kernel needed)

@pytest.fixture()
def wire():
    """A grader end and a kernel end of the protocol over a socket pair; the kernel serves ``ns``."""
    import socket
    import threading

    from cnncourse.grading.harness import GraderChannel
    from cnncourse.grading.runner import _KernelChannel, _serve

    a, b = socket.socketpair()
    ns: dict = {}
    threading.Thread(target=_serve, args=(_KernelChannel(b, ns),), daemon=True).start()
    grader = GraderChannel(a)
    grader.deadline = None
    yield grader, ns
    a.close()


class _Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})


def test_plain_data_comes_back_by_value(wire):
    grader, ns = wire
    ns["f"] = lambda x: (x * 2, {"k": [1, 2.5, None, "s"]}, torch.float64, x.shape)
    x = torch.randn(2, 3, dtype=torch.float64)
    out, extra, dtype, shape = grader.request("name", "f")(x)
    assert type(out) is torch.Tensor and torch.equal(out, x * 2)
    assert extra == {"k": [1, 2.5, None, "s"]} and dtype is torch.float64 and shape == torch.Size([2, 3])


def test_a_tensor_subclass_never_reaches_the_checks(wire):
    from cnncourse.grading.checks import CheckFailed, check_close

    grader, ns = wire
    ns["liar"] = lambda: (torch.zeros(3) * 255).as_subclass(_Liar)
    got = grader.request("name", "liar")()
    assert not isinstance(got, torch.Tensor) and got.__class__.__name__ == "_Liar"
    with pytest.raises(CheckFailed, match="expected a torch.Tensor"):
        check_close(got, torch.ones(3))
    # In-process, the same object fools torch.allclose: this is what the proxy protects against.
    assert torch.allclose(ns["liar"](), torch.ones(3))


def test_in_student_kernels_stay_in_the_kernel_and_are_used_through_proxies(wire):
    grader, ns = wire
    ns["net"] = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    net = grader.request("name", "net")
    assert isinstance(net[0], torch.nn.Conv2d) and net[0].kernel_size == (3, 3)
    with torch.no_grad():
        net[0].weight.zero_()           # runs in the kernel, under the test's no_grad
    assert float(ns["net"][0].weight.abs().sum()) == 0
    assert F.conv2d(torch.ones(1, 1, 3, 3), net[0].weight).abs().sum() == 0   # a Parameter proxy works as a tensor
    with pytest.raises(NameError):
        grader.request("name", "undefined_name")


def test_delegation_is_blocked_in_the_kernel_during_a_proxied_call(wire):
    from cnncourse.grading import integrity

    grader, ns = wire
    ns["conv"] = lambda x, w: F.conv2d(x, w)
    conv = grader.request("name", "conv")
    x, w = torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3)
    integrity._remote_forbidden = grader.forbidden
    try:
        with forbid("torch.nn.functional.conv2d"):
            with pytest.raises(DelegationError, match="torch.nn.functional.conv2d was called"):
                conv(x, w)
        assert conv(x, w).shape == (1, 1, 3, 3)
    finally:
        integrity._remote_forbidden = None


def test_the_kernel_cannot_reach_the_graders_modules(wire):
    from cnncourse.grading.rpc import Proxy

    grader, ns = wire
    seen = {}

    def probe(model):
        seen["forward"] = model(torch.ones(1, 2)).shape          # calling a test's object is allowed
        for attr, get in (("__dict__", lambda: model.__dict__), ("_modules", lambda: model._modules),
                          ("_parameters", lambda: model._parameters), ("__globals__", lambda: model.forward.__globals__)):
            try:
                get()
                seen[attr] = "reached"
            except AttributeError:
                seen[attr] = "refused"
        try:
            model.weight = None
            seen["setattr"] = "reached"
        except PermissionError:
            seen["setattr"] = "refused"
        return type(model) is Proxy

    ns["probe"] = probe
    assert grader.request("name", "probe")(torch.nn.Linear(2, 3)) is True
    assert seen.pop("forward") == (1, 3)
    assert set(seen.values()) == {"refused"}, seen


def test_malformed_or_oversized_messages_are_refused(wire):
    from cnncourse.grading.rpc import Channel, ProtocolError

    grader, _ = wire
    with pytest.raises(ProtocolError, match="needs 24 bytes"):
        Channel._tensor({"$t": 0, "dtype": "float64", "shape": [3]}, [bytearray(8)])
    with pytest.raises(ProtocolError, match="unknown dtype"):
        grader.decode({"$dt": "object"}, [])
    with pytest.raises(ProtocolError):
        grader.decode({"$pickle": "gASV"}, [])
    bools = Channel._tensor({"$t": 0, "dtype": "bool", "shape": [2]}, [bytearray(b"\x07\x00")])
    assert bools.tolist() == [True, False]


def test_course_seed_mixes_in_the_secret():
    from cnncourse.grading import checks
    from cnncourse.grading.autograde import kernel_env

    try:
        checks.SECRET = ""
        assert checks.course_seed(123) == 123
        checks.SECRET = "fall-2026"
        first = checks.course_seed(123)
        assert first != 123 and first == checks.course_seed(123) and first != checks.course_seed(124)
        checks.SECRET = "spring-2027"
        assert checks.course_seed(123) != first
    finally:
        checks.SECRET = None
    import os

    os.environ["CNNCOURSE_SECRET"] = "do-not-leak"
    try:
        assert "CNNCOURSE_SECRET" not in kernel_env(), "the student's kernel must not see the secret"
    finally:
        del os.environ["CNNCOURSE_SECRET"]


def test_a_test_that_defines_a_function_leaves_nothing_behind(wire):
    """A test's namespace is a reference cycle once it defines a function; it must not outlive the next run.

    Grading lab04's mutants kept every run's AlexNet until the machine ran out of memory: its test hands
    helper functions to the student's code (the channel kept their handles) and the helpers' globals are
    the namespace; a process with torch loaded rarely runs a full collection on its own.
    """
    import gc
    import weakref

    from cnncourse.grading.harness import run_test

    grader, kernel_ns = wire
    kernel_ns["apply"] = lambda f: f() is not None  # the student's code calls back the test's helper
    test = "class Big:\n    pass\n\nbig = Big()\n\ndef helper():\n    return big\n\nBIGS.append(big)\nassert apply(helper)\n"
    born: list = []
    carry: dict = {}
    gc.disable()  # as in a process whose automatic collections never reach these objects
    try:
        for _ in range(3):
            carry["BIGS"] = []
            report = run_test(grader, "test_leak", test, "", "", carry, "")
            assert report["public"] is None, report
            born.append(weakref.ref(carry["BIGS"][0]))
            carry.pop("BIGS")
    finally:
        gc.enable()
    alive = [ref() is not None for ref in born]
    assert alive == [False, False, True], f"objects of earlier runs still alive: {alive}"
