"""The wire between the grader and a student's kernel: plain data by value, everything else by handle.

Both ends speak the same protocol over one Unix socket. A message is a JSON header
followed by raw tensor buffers; nothing is ever unpickled. A value crosses **by value**
when it is plain data: ``None``, ``bool``, ``int``, ``float``, ``str``, an exact
``torch.Tensor`` (a subclass is turned into a plain tensor, or sent by handle), a
``torch.dtype`` or ``torch.Size``, and lists, tuples and dicts of these. Any other object
stays where it lives and crosses as a *handle*; the other end wraps it in a
:class:`Proxy`, whose attribute reads, calls and operators are requests to the owner.

The two ends do not trust each other equally. The kernel end (:mod:`runner`) serves any
request on its objects: they are the student's. The grader end answers only calls on
objects the grader itself passed as arguments (a test's model or lambda handed to a
student function), and reads of a few public attributes of them; it never lets the
kernel reach its modules, and it re-creates every tensor it receives as a plain
``torch.Tensor`` after checking the bytes against the announced dtype and shape.

Reference: the "capabilities by handle, data by value" design of object-capability RPC
systems, e.g. https://capnproto.org/rpc.html
"""

from __future__ import annotations

import collections
import json
import math
import re
import socket
import struct
import time
from typing import Any, Callable

import torch

from cnncourse.grading.proxy import MAX_ITEMS, Proxy, apply_op, plain_tensor, type_name

# A tensor's raw bytes on the wire: sent without a copy (memoryview), received into a bytearray.
Blob = bytes | bytearray | memoryview

__all__ = [
    "Channel",
    "GRADER_ATTRS",
    "PeerGone",
    "PeerTimeout",
    "ProtocolError",
    "Proxy",
    "RemoteError",
    "apply_op",
    "make_exception",
    "plain_tensor",
]

MAX_DEPTH = 64
MAX_BYTES = 1 << 30  # 1 GiB in one message
_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )
}
# What the kernel may do with an object the grader passed to it (a model or a function of the test).
GRADER_ATTRS = frozenset(
    {
        "eval",
        "train",
        "training",
        "forward",
        "to",
        "float",
        "double",
        "parameters",
        "named_parameters",
        "zero_grad",
        "requires_grad_",
    }
)


class ProtocolError(Exception):
    """The other end sent something that is not a valid message."""


class PeerTimeout(Exception):
    """The other end did not answer before the deadline."""


class PeerGone(Exception):
    """The other end closed the connection (the kernel died)."""


class RemoteError(Exception):
    """An exception raised on the other end that has no builtin equivalent here; the message names its type."""


class Channel:
    """One end of the connection: encodes and decodes values and answers the other end's requests.

    Args:
        sock: a connected stream socket.
        trusted: ``True`` on the grader's end (decode strictly, answer few requests).
        deadline: ``time.monotonic()`` value after which a wait raises :class:`PeerTimeout`.
    """

    def __init__(self, sock: socket.socket, trusted: bool, deadline: float | None = None) -> None:
        self.sock, self.trusted, self.deadline = sock, trusted, deadline
        self.objects: dict[int, Any] = {}  # handles we gave out: id -> object
        self.forbidden: list[str] = []  # grader end: names a test forbids during remote calls
        self.class_lookup: Callable[[str], Any] | None = None

    # ------------------------------------------------------------------ framing
    def _send(self, header: Any, blobs: list[Any]) -> None:
        head = json.dumps(header, allow_nan=True).encode()
        small = [struct.pack("!II", len(head), len(blobs)), head]
        for b in blobs:
            size = memoryview(b).nbytes
            if size > 1 << 16:
                self.sock.sendall(b"".join(small) + struct.pack("!Q", size))
                self.sock.sendall(b)
                small = []
            else:
                small += [struct.pack("!Q", size), bytes(b)]
        if small:
            self.sock.sendall(b"".join(small))

    def _recv_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise PeerTimeout("no answer before the deadline")
                self.sock.settimeout(left)
            try:
                k = self.sock.recv_into(view[got:], min(n - got, 1 << 24))
            except socket.timeout:
                raise PeerTimeout("no answer before the deadline") from None
            except OSError as exc:
                raise PeerGone(str(exc)) from None
            if not k:
                raise PeerGone("the other end closed the connection")
            got += k
        return buf

    def _recv(self) -> tuple[Any, list[Blob]]:
        n_head, n_blobs = struct.unpack("!II", self._recv_exact(8))
        if n_head > 64 << 20 or n_blobs > MAX_ITEMS:
            raise ProtocolError("message header too large")
        try:
            header = json.loads(bytes(self._recv_exact(n_head)))
        except ValueError:
            raise ProtocolError("unreadable message header") from None
        blobs: list[Blob] = []
        total = 0
        for _ in range(n_blobs):
            (size,) = struct.unpack("!Q", self._recv_exact(8))
            total += size
            if total > MAX_BYTES:
                raise ProtocolError(f"message larger than {MAX_BYTES >> 20} MiB")
            blobs.append(self._recv_exact(size))
        return header, blobs

    # ------------------------------------------------------------------ values
    def encode(self, value: Any, blobs: list[Blob], force: bool = False, depth: int = 0) -> Any:
        """Plain data as tagged JSON (tensors appended to ``blobs``); other objects as handles."""
        if depth > MAX_DEPTH:
            raise ValueError("value nested too deeply to send")
        t = type(value)
        if value is None or t in (bool, int, str):
            return value
        if t is float:
            return value if math.isfinite(value) else {"$f": repr(value)}
        if t is Proxy and value._cg_channel is self:
            return {"$r": value._cg_id}
        if isinstance(value, torch.Tensor) and (t is torch.Tensor or force):
            plain = plain_tensor(value)
            name = str(plain.dtype).removeprefix("torch.")
            if name not in _DTYPES:
                raise TypeError(f"cannot send a tensor of dtype {plain.dtype}")
            blobs.append(plain.reshape(-1).view(torch.uint8).numpy().data if plain.numel() else b"")
            return {"$t": len(blobs) - 1, "dtype": name, "shape": list(plain.shape)}
        if t is torch.dtype:
            return {"$dt": str(value).removeprefix("torch.")}
        if t is torch.Size:
            return {"$s": list(value)}
        if t is torch.device:
            return {"$dev": str(value)}
        if t is list or (not self.trusted and isinstance(value, list)):
            return [self.encode(v, blobs, force, depth + 1) for v in value]
        if t is tuple or (not self.trusted and isinstance(value, tuple) and not hasattr(value, "_fields")):
            return {"$u": [self.encode(v, blobs, force, depth + 1) for v in value]}
        if t is dict or t is collections.OrderedDict or (not self.trusted and isinstance(value, dict)):
            return {
                "$d": [
                    [self.encode(k, blobs, force, depth + 1), self.encode(v, blobs, force, depth + 1)]
                    for k, v in value.items()
                ]
            }
        self.objects[id(value)] = value
        return {"$h": id(value), "type": type_name(value)}

    def decode(self, node: Any, blobs: list[Blob], depth: int = 0) -> Any:
        """Rebuild a value from :meth:`encode`'s form; every tensor is a fresh plain ``torch.Tensor``."""
        if depth > MAX_DEPTH:
            raise ProtocolError("value nested too deeply")
        t = type(node)
        if node is None or t in (bool, int, float, str):
            return node
        if t is list:
            return [self.decode(v, blobs, depth + 1) for v in node]
        if t is not dict or len(node) == 0:
            raise ProtocolError(f"unexpected {t.__name__} in a message")
        if "$u" in node:
            return tuple(self.decode(v, blobs, depth + 1) for v in self._list(node["$u"]))
        if "$d" in node:
            out = {}
            for pair in self._list(node["$d"]):
                if type(pair) is not list or len(pair) != 2:
                    raise ProtocolError("malformed dict entry")
                key = self.decode(pair[0], blobs, depth + 1)
                try:
                    out[key] = self.decode(pair[1], blobs, depth + 1)
                except TypeError:
                    raise ProtocolError("unhashable dict key") from None
            return out
        if "$t" in node:
            return self._tensor(node, blobs)
        if "$f" in node:
            if node["$f"] not in ("nan", "inf", "-inf"):
                raise ProtocolError("malformed float")
            return float(node["$f"])
        if "$dt" in node:
            if node["$dt"] not in _DTYPES:
                raise ProtocolError(f"unknown dtype {node['$dt']!r}")
            return _DTYPES[node["$dt"]]
        if "$dev" in node:
            dev = node["$dev"]
            if type(dev) is not str or not re.fullmatch(r"(cpu|meta|cuda|mps)(:\d{1,3})?", dev):
                raise ProtocolError("malformed device")
            return torch.device(dev)
        if "$s" in node:
            dims = self._list(node["$s"])
            if not all(type(d) is int for d in dims):
                raise ProtocolError("malformed size")
            return torch.Size(dims)
        if "$h" in node:
            if type(node["$h"]) is not int or type(node.get("type")) is not str:
                raise ProtocolError("malformed handle")
            return Proxy(self, node["$h"], node["type"][:200])
        if "$r" in node:
            if node["$r"] not in self.objects:
                raise ProtocolError("reference to an unknown object")
            return self.objects[node["$r"]]
        raise ProtocolError("unknown tag in a message")

    @staticmethod
    def _list(value: Any) -> list:
        if type(value) is not list:
            raise ProtocolError("expected a list in a message")
        return value

    @staticmethod
    def _tensor(node: dict, blobs: list[Blob]) -> torch.Tensor:
        index, dtype, shape = node.get("$t"), node.get("dtype"), node.get("shape")
        if (
            type(index) is not int
            or not 0 <= index < len(blobs)
            or dtype not in _DTYPES
            or type(shape) is not list
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise ProtocolError("malformed tensor")
        dt = _DTYPES[dtype]
        numel = math.prod(shape)
        size = numel * torch.empty((), dtype=dt).element_size()
        data = blobs[index]
        if len(data) != size:
            raise ProtocolError(f"tensor of {dtype} {tuple(shape)} needs {size} bytes, got {len(data)}")
        if numel == 0:
            out = torch.empty(shape, dtype=dt)
        else:
            raw = torch.frombuffer(data, dtype=torch.uint8)
            out = (raw != 0) if dt is torch.bool else raw.view(dt)
            out = out.reshape(shape)
        assert type(out) is torch.Tensor
        return out

    # ------------------------------------------------------------------ requests
    def request(self, op: str, target: Any, *args: Any) -> Any:
        """Ask the other end to do ``op`` on ``target`` (a proxy, or a name); wait for the result.

        While waiting, answer the other end's own requests (calls back into objects we passed).
        """
        blobs: list[Blob] = []
        body = {
            "op": op,
            "target": self.encode(target, blobs),
            "args": [self.encode(a, blobs) for a in args],
            "forbid": list(self.forbidden),
            "grad": torch.is_grad_enabled(),
        }
        self._send({"kind": "req", "body": body}, blobs)
        return self.wait()

    def wait(self) -> Any:
        while True:
            header, blobs = self._recv()
            if type(header) is not dict:
                raise ProtocolError("malformed message")
            kind = header.get("kind")
            if kind == "res":
                return self._result(header, blobs)
            if kind == "req":
                self.answer(header.get("body"), blobs)
            elif kind == "done" and not self.trusted:
                return None
            else:
                raise ProtocolError(f"unexpected message kind {kind!r}")

    def _result(self, header: dict, blobs: list[Blob]) -> Any:
        if "error" in header:
            err = header["error"]
            if type(err) is not list or len(err) != 2 or not all(type(e) is str for e in err):
                raise ProtocolError("malformed error")
            raise make_exception(err[0][:100], err[1][:2000])
        return self.decode(header.get("value"), blobs)

    def answer(self, body: Any, blobs: list[Blob]) -> None:
        """Serve one request from the other end and send the reply (a value or an error)."""
        out: list[Blob] = []
        # The trusted end lets KeyboardInterrupt/SystemExit through; the student's end answers them too
        # (sys.exit in student code must not kill the agent).
        catch: type[BaseException] = Exception if self.trusted else BaseException
        try:
            if type(body) is not dict:
                raise ProtocolError("malformed request")
            op, target = body.get("op"), self.decode(body.get("target"), blobs)
            args = [self.decode(a, blobs) for a in self._list(body.get("args"))]
            with torch.set_grad_enabled(body.get("grad") is not False):
                result = self.perform(op, target, args, body.get("forbid") or [])
            reply = {"kind": "res", "value": self.encode(result, out, force=op == "value")}
        except catch as exc:
            out = []
            reply = {"kind": "res", "error": [type(exc).__name__, str(exc)[:2000]]}
        self._send(reply, out)

    def perform(self, op: Any, target: Any, args: list, forbid: list) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def local_class(self, type_name: str) -> Any:
        return self.class_lookup(type_name) if self.class_lookup else None


def make_exception(type_name: str, message: str) -> Exception:
    """A local exception for one raised on the other end: the builtin type of that name, else :class:`RemoteError`."""
    import builtins

    from cnncourse.grading.integrity import DelegationError

    if type_name == "DelegationError":
        return DelegationError(message)
    cls = getattr(builtins, type_name, None)
    stops = (StopIteration, StopAsyncIteration)
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, stops):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001
            pass
    return RemoteError(f"{type_name}: {message}")
