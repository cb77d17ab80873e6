"""Layer-by-layer analysis of a model: shapes, parameters, connections, MACs, receptive fields.

``summary`` runs one forward pass with hooks on the leaf modules and records, per call:

* the output shape (per example, batch dimension dropped);
* the trainable parameters of the layer;
* the *connections*, counted the way LeCun et al. (1998) count them: for every output value, one
  connection per input it reads plus one for the bias. For a convolution that is
  ``output elements x (C_in / groups x K_h x K_w + 1)``; for a linear layer ``out x (in + 1)``;
  for a parameter-free pooling layer ``output elements x K_h x K_w``; element-wise layers 0.
  A module can define ``connections(output_shape) -> int`` to say how it counts (see ``models/lenet_layers.py``);
* the multiply-accumulates (MACs) of convolutions and linear layers (weights only, no bias);
* the receptive field of one output unit, in input pixels: its ``size``, the ``jump`` (distance in
  input pixels between neighbouring units) and ``start`` (centre of the first unit; input pixel
  centres are 0, 1, 2, ...). For a layer with kernel K, stride S, padding P, dilation D:
  ``size_out = size_in + (D (K - 1)) jump_in``, ``jump_out = jump_in S``,
  ``start_out = start_in + ((D (K - 1)) / 2 - P) jump_in``.

Receptive fields are exact for chains of modules. For branching models (Inception, residual
blocks) the hooks cannot see ``torch.cat`` or ``+``; a layer whose input came out of such an
operation gets the **largest** receptive field among the recorded outputs with the same spatial
size, i.e. the largest path through the branches. Layers after ``flatten`` (no spatial dims) report
the field that covers all of the last feature map's units; their ``jump`` and ``start`` are ``None``.
Geometry changed by functional calls inside ``forward`` (e.g. ``F.max_pool2d``) is invisible; use
modules for those if the receptive field matters.

Reference: W. Luo et al., "Understanding the effective receptive field in deep CNNs", NeurIPS 2016
(receptive field arithmetic); LeCun et al. 1998, section II.B (connection counts).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence, cast

import torch
import torch.nn as nn

from cnncourse.utils import eval_mode

__all__ = ["LayerRow", "ReceptiveField", "Summary", "count_parameters", "flops", "receptive_field", "summary"]

_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one output unit in input pixels: per axis ``(height, width)``."""

    size: tuple[int, int]
    jump: tuple[int, int] | None
    start: tuple[float, float] | None
    spatial: tuple[int, int] | None  # the feature map's (H, W); None when the output is flat


@dataclass
class LayerRow:
    """One row of a ``Summary``: one call of a leaf module."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    connections: int
    macs: int
    rf_size: int | tuple[int, int]
    rf_jump: int | tuple[int, int] | None
    rf_start: float | tuple[float, float] | None


@dataclass
class Summary:
    """Per-layer table returned by ``summary``; prints aligned, converts with ``to_dicts``."""

    rows: list[LayerRow]
    input_size: tuple[int, ...]
    total_params: int
    trainable_params: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_connections(self) -> int:
        return sum(r.connections for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    def to_dicts(self) -> list[dict[str, Any]]:
        """Rows as a list of plain dicts (keys as in ``LayerRow``)."""
        return [asdict(r) for r in self.rows]

    def __getitem__(self, name: str) -> LayerRow:
        """The first row whose layer name is ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no layer named {name!r}; layers: {', '.join(r.name for r in self.rows)}")

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        header = ("layer", "type", "output", "params", "connections", "RF size", "jump", "start")
        body = [
            (r.name, r.type, "x".join(str(s) for s in r.output_shape), f"{r.params:,}", f"{r.connections:,}",
             _fmt(r.rf_size), _fmt(r.rf_jump), _fmt(r.rf_start))
            for r in self.rows
        ]  # fmt: skip
        widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
        right = {3, 4, 5, 6, 7}

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(line(header))
        lines = [line(header), rule, *(line(b) for b in body), rule]
        lines.append(
            f"input {'x'.join(map(str, self.input_size))}: {self.trainable_params:,} trainable params "
            f"({self.total_params:,} total), {self.total_connections:,} connections, {self.total_macs:,} MACs"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (shared tensors counted once); buffers are never counted.

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.parameters
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops(model: nn.Module, input_size: Sequence[int]) -> int:
    """Floating-point operations of one forward pass of one example: ``2 x MACs``.

    Counts the multiply-accumulates of convolutions and linear layers only (a multiply and an add
    each); biases, pooling, normalisation and activations are ignored. Note that several papers and
    torchvision's model tables call one multiply-add "one FLOP": compare those with ``flops(...) // 2``.

    Args:
        model: any module.
        input_size: ``(C, H, W)`` of one example (or ``(N, C, H, W)``; the count is per example).

    Reference: K. He et al., "Deep residual learning", CVPR 2016, Table 1 (multiply-add counts).
    """
    return 2 * summary(model, input_size).total_macs


def receptive_field(model: nn.Module, input_size: Sequence[int]) -> ReceptiveField:
    """Receptive field of one unit of the model's last spatial layer (see module docstring).

    Args:
        model: any module.
        input_size: ``(C, H, W)`` or ``(N, C, H, W)``.

    Returns:
        The ``ReceptiveField`` of the last row of ``summary`` whose output still has spatial dims.

    Reference: W. Luo et al., NeurIPS 2016.
    """
    rows = [r for r in summary(model, input_size).rows if len(r.output_shape) == 3]
    if not rows:
        raise ValueError("the model has no layer with a (C, H, W) output")
    r = rows[-1]
    return ReceptiveField(_pair(r.rf_size), _pair(r.rf_jump), _pair(r.rf_start), _pair(r.output_shape[1:]))


def summary(model: nn.Module, input_size: Sequence[int], *, show_elementwise: bool = True) -> Summary:
    """Run one forward pass of zeros with hooks and tabulate every leaf module call.

    Leaf modules are modules without children, plus any module that defines a ``connections``
    method (treated as one layer). The model is run in eval mode under ``torch.no_grad`` and its
    mode is restored; all hooks are removed, even on error.

    Args:
        model: the model.
        input_size: ``(C, H, W)`` of one example, or ``(N, C, H, W)``.
        show_elementwise: if False, drop rows of shape-preserving layers with no parameters and no
            connections (activations, dropout).

    Returns:
        A ``Summary``; ``str(summary)`` is an aligned table, ``summary.to_dicts()`` a list of dicts.

    Raises:
        ValueError: if ``input_size`` is not 3 or 4 positive ints.

    Reference: LeCun et al. 1998, section II.B (per-layer parameter and connection counts).
    """
    size = tuple(int(s) for s in input_size)
    if len(size) not in (3, 4) or any(s <= 0 for s in size):
        raise ValueError(f"input_size must be (C, H, W) or (N, C, H, W) of positive ints, got {tuple(input_size)}")
    x_shape = size if len(size) == 4 else (1, *size)
    try:
        ref = next(model.parameters())
        device, dtype = ref.device, ref.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    x = torch.zeros(x_shape, device=device, dtype=dtype)

    fields: dict[int, ReceptiveField] = {id(x): ReceptiveField((1, 1), (1, 1), (0.0, 0.0), (x_shape[2], x_shape[3]))}
    keep: list[torch.Tensor] = [x]  # holds outputs alive so their id() stays unique during the pass
    recorded: list[ReceptiveField] = []
    rows: list[LayerRow] = []
    leaves = _leaf_modules(model)

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            inp = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            rf_in = _lookup(inp, fields, recorded)
            rf_out = _propagate(module, rf_in, output)
            fields[id(output)] = rf_out
            keep.append(output)
            recorded.append(rf_out)
            out_shape = tuple(output.shape[1:])
            rows.append(LayerRow(
                name=name, type=type(module).__name__, output_shape=out_shape,
                params=count_parameters(module), connections=_connections(module, inp, out_shape),
                macs=_macs(module, out_shape), rf_size=_unpair(rf_out.size),
                rf_jump=_unpair(rf_out.jump), rf_start=_unpair(rf_out.start),
            ))  # fmt: skip
            if show_elementwise is False and inp is not None and rows[-1].params == 0 and rows[-1].connections == 0:
                if tuple(inp.shape[1:]) == out_shape:
                    rows.pop()

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return Summary(rows, size, count_parameters(model, trainable_only=False), count_parameters(model))


def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, m: nn.Module) -> None:
        children = list(m.named_children())
        if not children or callable(getattr(m, "connections", None)):
            out.append((prefix or type(m).__name__, m))
            return
        for n, c in children:
            walk(f"{prefix}.{n}" if prefix else n, c)

    walk("", model)
    return out


def _lookup(
    inp: torch.Tensor | None, fields: dict[int, ReceptiveField], recorded: list[ReceptiveField]
) -> ReceptiveField:
    if inp is not None and id(inp) in fields:
        return fields[id(inp)]
    if not recorded:
        return next(iter(fields.values()))
    if inp is not None and inp.dim() == 4:
        # Output of an unhooked op (cat, +, F.relu): take the largest path with the same spatial size.
        same = [r for r in recorded if r.spatial == tuple(inp.shape[2:])]
        if same:
            return max(same, key=lambda r: r.size[0] * r.size[1])
        return recorded[-1]
    if inp is not None and inp.dim() <= 2:
        last = next((r for r in reversed(recorded) if r.spatial is not None), recorded[-1])
        return _flatten(last)
    return recorded[-1]


def _flatten(rf: ReceptiveField) -> ReceptiveField:
    if rf.spatial is None or rf.jump is None:
        return rf
    size = tuple(s + (n - 1) * j for s, n, j in zip(rf.size, rf.spatial, rf.jump))
    return ReceptiveField(size, None, None, None)  # type: ignore[arg-type]


def _propagate(module: nn.Module, rf: ReceptiveField, output: torch.Tensor) -> ReceptiveField:
    if output.dim() != 4:
        return _flatten(rf)
    spatial = (output.shape[2], output.shape[3])
    if rf.spatial is None or rf.jump is None or rf.start is None:
        return ReceptiveField(rf.size, None, None, None)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        # Exact when the input size is a multiple of the output size; otherwise windows overlap.
        k = tuple(-(-i // o) for i, o in zip(rf.spatial, spatial))
        s = tuple(max(i // o, 1) for i, o in zip(rf.spatial, spatial))
        p, d = (0, 0), (1, 1)
    elif hasattr(module, "kernel_size") and hasattr(module, "stride"):
        k, s = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        pad = getattr(module, "padding", 0)
        p = (0, 0) if isinstance(pad, str) else _pair(pad)
        if pad == "same":
            p = tuple((kk - 1) // 2 for kk in k)
        d = _pair(getattr(module, "dilation", 1))
    else:
        return ReceptiveField(rf.size, rf.jump, rf.start, spatial)
    eff = tuple(dd * (kk - 1) + 1 for dd, kk in zip(d, k))
    size = tuple(r + (e - 1) * j for r, e, j in zip(rf.size, eff, rf.jump))
    jump = tuple(j * ss for j, ss in zip(rf.jump, s))
    start = tuple(st + ((e - 1) / 2 - pp) * j for st, e, pp, j in zip(rf.start, eff, p, rf.jump))
    return ReceptiveField(size, jump, start, spatial)  # type: ignore[arg-type]


def _is_conv(module: nn.Module) -> bool:
    # nn.Conv2d, or a drop-in with the same attributes (e.g. cnncourse.layers.Conv2d).
    weight = getattr(module, "weight", None)
    return isinstance(module, nn.Conv2d) or (
        isinstance(weight, torch.Tensor) and weight.dim() == 4 and hasattr(module, "kernel_size")
    )


def _weight(module: nn.Module) -> torch.Tensor:
    return cast(torch.Tensor, module.weight)


def _connections(module: nn.Module, inp: torch.Tensor | None, out_shape: tuple[int, ...]) -> int:
    custom = getattr(module, "connections", None)
    if callable(custom):
        return int(custom(out_shape))
    n_out = math.prod(out_shape)
    if _is_conv(module):
        return n_out * (_weight(module)[0].numel() + (getattr(module, "bias", None) is not None))
    if isinstance(module, nn.Linear):
        return n_out * (module.in_features + (module.bias is not None))
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and inp is not None:
        return math.prod(inp.shape[1:])
    if hasattr(module, "kernel_size") and count_parameters(module, trainable_only=False) == 0:
        k = _pair(module.kernel_size)  # parameter-free pooling: each output reads one window
        return n_out * k[0] * k[1]
    if isinstance(module, _NORMS):
        return n_out
    return 0


def _macs(module: nn.Module, out_shape: tuple[int, ...]) -> int:
    custom = getattr(module, "macs", None)
    if callable(custom):  # a layer that knows its own cost (e.g. a partially connected convolution)
        return int(custom(out_shape))
    n_out = math.prod(out_shape)
    if _is_conv(module):
        return n_out * _weight(module)[0].numel()
    if isinstance(module, nn.Linear):
        return n_out * module.in_features
    return 0


def _pair(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (tuple, list)):
        return tuple(v) if len(v) == 2 else (v[0], v[0])
    return (v, v)


def _unpair(v: Any) -> Any:
    if v is None:
        return None
    a, b = v
    return a if a == b else (a, b)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple):
        return "x".join(_fmt(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
