"""Proxies: local stand-ins for objects that live in the other process of a :class:`~cnncourse.grading.rpc.Channel`.

A :class:`Proxy` turns every use of a remote object (attribute, call, operator, ``len``,
``repr``, ``isinstance``) into a request on its channel; it holds no state of the object
itself. The wire format and the rules for what crosses by value are in :mod:`rpc`.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:  # the channel imports this module; a proxy only calls it
    from cnncourse.grading.rpc import Channel

MAX_ITEMS = 1_000_000  # items in one message, or yielded by one remote iteration
# Operators a proxy forwards; names of functions in ``operator``.
BINARY = (
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "mod",
    "pow",
    "matmul",
    "and_",
    "or_",
    "xor",
    "lt",
    "le",
    "gt",
    "ge",
    "eq",
    "ne",
    "contains",
    "getitem",
)


def type_name(obj: Any) -> str:
    """``module.QualName`` of ``obj``'s class, as the wire names it."""
    cls = type(obj)
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls.__name__)}"


class Proxy:
    """A stand-in for an object that lives on the other end of a :class:`Channel`.

    Reading an attribute, calling, indexing, iterating, comparing or printing it sends a
    request; the result comes back by value when it is plain data, else as another proxy.
    Passed to a ``torch`` function, it is first fetched by value (so a student's
    ``nn.Parameter`` works as a tensor in the test's arithmetic).
    """

    __slots__ = ("_cg_channel", "_cg_id", "_cg_type")

    def __init__(self, channel: Channel, handle: int, type_name: str) -> None:
        object.__setattr__(self, "_cg_channel", channel)
        object.__setattr__(self, "_cg_id", handle)
        object.__setattr__(self, "_cg_type", type_name)

    def _cg(self, op: str, *args: Any) -> Any:
        return self._cg_channel.request(op, self, *args)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_cg_"):
            raise AttributeError(name)
        return self._cg("getattr", name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._cg("setattr", name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._cg("call", list(args), kwargs)

    def __iter__(self):
        return iter(self._cg("iter"))

    def __next__(self) -> Any:
        item = self._cg("next")
        if type(item) is not list or len(item) > 1:
            raise TypeError(f"next() of a {self._cg_type} returned malformed data")
        if not item:
            raise StopIteration
        return item[0]

    def __len__(self) -> int:
        n = self._cg("len")
        if type(n) is not int:
            raise TypeError(f"len() of a {self._cg_type} returned {type(n).__name__}")
        return n

    def __bool__(self) -> bool:
        return self._cg("bool") is True

    def __repr__(self) -> str:
        text = self._cg("repr")
        return text if type(text) is str else f"<{self._cg_type}>"

    def __str__(self) -> str:
        text = self._cg("str")
        return text if type(text) is str else f"<{self._cg_type}>"

    def __format__(self, spec: str) -> str:
        text = self._cg("format", spec)
        return text if type(text) is str else f"<{self._cg_type}>"

    def __setitem__(self, key: Any, value: Any) -> None:
        self._cg("setitem", key, value)

    def __hash__(self) -> int:
        return hash((id(self._cg_channel), self._cg_id))

    def __contains__(self, item: Any) -> bool:
        return self._cg("op", "contains", item, False) is True

    def __neg__(self) -> Any:
        return self._cg("op", "neg", None, False)

    def __abs__(self) -> Any:
        return self._cg("op", "abs", None, False)

    @property  # type: ignore[misc]  # a read-only __class__: the remote object's class, asked by isinstance()
    def __class__(self):  # noqa: D105  (isinstance(proxy, nn.Conv2d) and x.__class__.__name__ ask this)
        cls = self._cg_channel.local_class(self._cg_type)
        return cls if cls is not None else _stub_class(self._cg_type)

    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return func(*_materialise(args), **_materialise(kwargs or {}))

    def _cg_value(self) -> Any:
        return self._cg("value")


_STUBS: dict[str, type] = {}


def _stub_class(type_name: str) -> type:
    """A local class named like the remote object's class (for messages), deriving only from :class:`Proxy`."""
    cls = _STUBS.get(type_name)
    if cls is None:
        name = type_name.rpartition(".")[2]
        if not name.isidentifier() or len(_STUBS) > 1000:
            return Proxy
        cls = _STUBS[type_name] = type(name, (Proxy,), {"__slots__": (), "__module__": "student"})
    return cls


def _binary(name: str, reflected: bool = False) -> Callable[[Proxy, Any], Any]:
    def method(self: Proxy, other: Any) -> Any:
        return self._cg("op", name, other, reflected)

    return method


for _name in BINARY:
    if _name != "contains":
        dunder = _name.rstrip("_")
        setattr(Proxy, f"__{dunder}__", _binary(_name))
        if _name not in ("lt", "le", "gt", "ge", "eq", "ne", "getitem"):
            setattr(Proxy, f"__r{dunder}__", _binary(_name, reflected=True))


def _materialise(value: Any) -> Any:
    if type(value) is Proxy:
        got = value._cg_value()
        if type(got) is Proxy:
            raise TypeError(f"a {value._cg_type} cannot be used as a tensor")
        return got
    if type(value) in (list, tuple):
        return type(value)(_materialise(v) for v in value)
    if type(value) is dict:
        return {k: _materialise(v) for k, v in value.items()}
    return value


def plain_tensor(t: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous, CPU, exact ``torch.Tensor`` copy of ``t`` (any subclass)."""
    t = torch.Tensor._make_subclass(torch.Tensor, t.detach()) if type(t) is not torch.Tensor else t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    return t.cpu().contiguous()


def apply_op(op: str, target: Any, args: list) -> Any:
    """Do one request on a local object; shared by both ends (the grader end restricts ``op`` first)."""
    if op == "getattr":
        return getattr(target, args[0])
    if op == "setattr":
        setattr(target, args[0], args[1])
        return None
    if op == "call":
        if type(args[0]) is not list or type(args[1]) is not dict:
            raise TypeError("malformed call")
        return target(*args[0], **args[1])
    if op == "iter":
        items = []
        for item in target:
            items.append(item)
            if len(items) > MAX_ITEMS:
                raise ValueError("too many items to iterate")
        return items
    if op == "next":
        try:
            return [next(target)]
        except StopIteration:
            return []
    if op == "len":
        return len(target)
    if op == "bool":
        return bool(target)
    if op == "repr":
        return repr(target)
    if op == "str":
        return str(target)
    if op == "format":
        return format(target, args[0])
    if op == "setitem":
        target[args[0]] = args[1]
        return None
    if op == "value":
        return target
    if op == "op":
        name, other, reflected = args
        if name == "neg":
            return -target
        if name == "abs":
            return abs(target)
        if name not in BINARY:
            raise ValueError(f"unknown operator {name!r}")
        fn = getattr(operator, name)
        if name == "contains":
            return fn(target, other)
        return fn(other, target) if reflected else fn(target, other)
    raise ValueError(f"unknown request {op!r}")
