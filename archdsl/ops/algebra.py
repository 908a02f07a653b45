"""Tensor algebra: element-wise arithmetic, products, softmax, reductions, fused attention, and the
tensors a module owns directly (``parameter``, ``buffer``).

These ops see *full* shapes (``Op.full_shapes``): a batched tensor as ``(BATCH, *shape)``, a
parameter or buffer as its own shape, and dims count as in torch. They are functions in the
generated ``forward`` (``functional``), written in expressions: ``a + b``, ``x * 0.5``,
``q @ k``, ``softmax(x, -1)``, ``mean(x, [2, 3])``, ``sdpa(q, k, v, bias)``,
``stack([a, b], 1)``, ``index(table, idx)``; the arithmetic operators map to ``add``, ``sub``,
``mul``, ``div``, ``neg`` and ``matmul``.
"""

from __future__ import annotations

import math

from ..memo import by_identity

from .registry import (BATCH, BOOL, FLOAT, GLOBAL, INT, INT64_LIMIT, INT_LIST, NON_NEGATIVE, OPT_FLOAT, OPT_INT,
                       POINTWISE, POS_INT, POSITIVE, PROB, UNDEFINED, Arg, ArgType, ArgTypeError, Op, ShapeError,
                       broadcast, choice, fmt_shape, is_batch, register)


def fmt_full(shape) -> str:
    """A full shape as the user sees it: batch-free for batched tensors, marked when unbatched."""
    if shape and is_batch(shape[0]):
        return fmt_shape(tuple(shape[1:]))
    return fmt_shape(tuple(shape)) + " (no batch dim)"


def full_dim(op: str, dim: int, shape, arg: str = "dim", extra: int = 0) -> int:
    """Normalize a torch dim over a full shape (``extra``: one more position, as for ``stack``);
    the batch dim of a batched tensor cannot be chosen."""
    rank = len(shape) + extra
    d = dim + rank if dim < 0 else dim
    batched = bool(shape) and is_batch(shape[0])
    low = 1 if batched else 0
    if d == 0 and batched:
        raise ShapeError(f"`{op}` {arg} = {dim} is the batch dimension, which cannot be used here",
                         f"{arg} = {dim} is the batch", arg=arg,
                         help="dims count the batch as 0, as torch does: the first dim of each sample is 1")
    if not low <= d < rank:
        where = " (batch included)" if batched else ""
        raise ShapeError(f"`{op}` {arg} = {dim} is out of range for a tensor of {rank - extra} dims{where}",
                         f"{arg} = {dim}", arg=arg)
    return d


def _dims_list(v):
    if isinstance(v, (list, tuple)):
        if not v:
            raise ArgTypeError("an integer or a non-empty list of integers")
        return tuple(INT(x) for x in v)
    return (INT(v),)


DIMS = ArgType("int or [int, ...]", _dims_list)


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArgTypeError("a number")
    return v


#: the number of ``x * 0.5``, ``1 - x``: an int64 or a finite float32 scalar
_SCALAR = Arg("scalar", FLOAT, int_limit=INT64_LIMIT)


class _Elementwise(Op):
    """Element-wise arithmetic with torch's broadcasting, over tensors or a tensor and a number
    (``scalar`` in the node's attributes; ``reverse``: the number comes first, as in ``1 - x``)."""

    category = "join"
    macs_rule = "zero"
    arity = None
    functional = True
    full_shapes = True
    min_inputs = 2
    verb: str = ""
    symbol: str = ""

    def tensor_inputs(self):
        return ("a", "b")
    #: how many tensors it joins without a number: (fewest, most)
    tensors: tuple[int, int | None] = (2, 2)

    def infer(self, a, ins):
        if a.get("scalar") is not None:
            bad = _SCALAR.check_numbers(a["scalar"])
            if bad is not None:
                raise ShapeError(f"the number in `{self.name}` must be {bad[1]} (torch takes it as a scalar), got "
                                 f"{bad[0]:g}" if isinstance(bad[0], float) else
                                 f"the number in `{self.name}` must be {bad[1]} (torch takes it as an int64 "
                                 f"scalar), got {bad[0]}", "number out of range")
        lo, hi = self.tensors if a.get("scalar") is None else (1, 1)
        if len(ins) < lo or (hi is not None and len(ins) > hi):
            raise ShapeError(f"`{self.name}` takes {lo if lo == hi else f'{lo} or more'} tensors, got {len(ins)}",
                             "wrong number of tensors")
        if len(ins) == 1:
            return tuple(ins[0])
        try:
            return broadcast(self.name, ins)
        except ShapeError:
            raise ShapeError(f"cannot {self.verb} tensors of shapes " + " and ".join(fmt_full(s) for s in ins),
                             " vs ".join(fmt_full(s) for s in ins),
                             help="shapes broadcast when each trailing dim is equal or 1") from None

    def layout(self, a, ins, layouts, out):
        return next((lay for s, lay in zip(ins, layouts) if tuple(s) == tuple(out)), None)

    def _fn(self):
        import operator
        return getattr(operator, self.name if self.name != "div" else "truediv")

    def emit(self, graph, a, args, inplace=False, ins=None):
        import operator
        fn = self._fn()
        if a.get("scalar") is not None:
            s = a["scalar"]
            return graph.call_function(fn, (s, args[0]) if a.get("reverse") else (args[0], s))
        first = getattr(operator, "i" + fn.__name__) if inplace else fn
        out = graph.call_function(first, (args[0], args[1]))
        for more in args[2:]:
            out = graph.call_function(fn, (out, more))
        return out

    def label(self, a):
        if a.get("scalar") is not None:
            s = f"{a['scalar']:g}"
            return f"{s} {self.symbol}" if a.get("reverse") else f"{self.symbol} {s}"
        return self.symbol


@register
class Add(_Elementwise):
    """Element-wise sum of two or more tensors, with broadcasting (residual joins, ``a + b``), or of a tensor
    and a number (``x + 1``)."""

    name = "add"
    verb = "add"
    symbol = "+"
    tensors = (2, None)


@register
class Sub(_Elementwise):
    """Element-wise difference ``a - b`` with broadcasting; ``x - 1`` and ``1 - x`` with a number."""

    name = "sub"
    verb = "subtract"
    symbol = "-"


@register
class Mul(_Elementwise):
    """Element-wise product with broadcasting (gates: ``x * se(x)``, first the weights, then the input), or a
    tensor scaled by a number (``x * 0.5``)."""

    name = "mul"
    verb = "multiply"
    symbol = "x"
    tensors = (2, None)


@register
class Div(_Elementwise):
    """Element-wise quotient ``a / b`` with broadcasting; ``x / 2`` and ``1 / x`` with a number."""

    name = "div"
    verb = "divide"
    symbol = "/"


@register
class Neg(Op):
    """Element-wise negation, ``-x``."""

    def tensor_inputs(self):
        return ("a",)

    name = "neg"
    category = "join"
    macs_rule = "zero"
    functional = True
    full_shapes = True

    def infer(self, a, ins):
        return tuple(ins[0])

    def function(self, a):
        import operator
        return operator.neg, (), {}

    def label(self, a):
        return "-"


@register
class Matmul(Op):
    """Matrix product ``a @ b`` (``torch.matmul``) of tensors of rank >= 2: ``(..., n, k) @ (..., k, m)`` gives
    ``(..., n, m)``, the leading dims broadcast. MACs: ``n * k * m`` per matrix (batch 1)."""

    name = "matmul"
    category = "linear"
    macs_rule = "formula"
    arity = 2
    functional = True
    full_shapes = True

    def infer(self, a, ins):
        x, y = ins
        for s, which in ((x, "left"), (y, "right")):
            if len(s) < 2 or any(is_batch(d) for d in s[-2:]):
                raise ShapeError(f"`@` needs matrices: the {which} operand is {fmt_full(s)}",
                                 f"{which} operand is {fmt_full(s)}",
                                 help="each operand needs two dims of its own (rows x columns)")
        if x[-1] != y[-2]:
            raise ShapeError(f"`@` inner dims differ: {fmt_full(x)} @ {fmt_full(y)} ({x[-1]} vs {y[-2]})",
                             f"{x[-1]} columns vs {y[-2]} rows",
                             help="the left operand's last dim must equal the right's second to last; "
                                  "`transpose(k, -2, -1)` swaps a tensor's last two dims")
        lead = broadcast(self.name, [x[:-2], y[:-2]]) if (x[:-2] or y[:-2]) else ()
        return tuple(lead) + (x[-2], y[-1])

    def macs(self, a, ins, out):
        return math.prod(out) * ins[0][-1]

    def window(self, a, ins, layouts):
        return GLOBAL

    def function(self, a):
        import operator
        return operator.matmul, (), {}

    def label(self, a):
        return "@"


@register
class Transpose(Op):
    """Swap two dims (``torch.transpose``), e.g. ``transpose(k, -2, -1)`` for ``q @ k^T``; dims count as in
    torch (the batch, dim 0 of a batched tensor, stays)."""

    name = "transpose"
    category = "reshape"
    macs_rule = "zero"
    functional = True
    full_shapes = True
    returns_view = True
    args = (Arg("dim0", INT, doc="one dim"), Arg("dim1", INT, doc="the other dim"))

    def infer(self, a, ins):
        x = list(ins[0])
        d0, d1 = full_dim(self.name, a["dim0"], x, "dim0"), full_dim(self.name, a["dim1"], x, "dim1")
        x[d0], x[d1] = x[d1], x[d0]
        return tuple(x)

    def layout(self, a, ins, layouts, out):
        lay = layouts[0]
        if lay is None or not is_batch(ins[0][0]):
            return None
        lay = list(lay)
        d0, d1 = full_dim(self.name, a["dim0"], ins[0]) - 1, full_dim(self.name, a["dim1"], ins[0]) - 1
        lay[d0], lay[d1] = lay[d1], lay[d0]
        return "".join(lay)

    def function(self, a):
        import torch
        return torch.transpose, (a["dim0"], a["dim1"]), {}

    def label(self, a):
        return f"transpose {a['dim0']},{a['dim1']}"


@register
class Softmax(Op):
    """Softmax over ``dim`` (``torch.softmax``): attention weights, selective-kernel weights over branches."""

    name = "softmax"
    category = "activation"
    macs_rule = "zero"
    functional = True
    full_shapes = True
    args = (Arg("dim", INT, doc="the dim the weights sum to 1 over (torch's numbering)"),)

    def infer(self, a, ins):
        full_dim(self.name, a["dim"], ins[0])
        return tuple(ins[0])

    def function(self, a):
        import torch
        return torch.softmax, (a["dim"],), {}

    def label(self, a):
        return f"softmax [{a['dim']}]"


class _Reduction(Op):
    """A reduction over ``dim`` (an int or a list), with ``keepdim``; never over the batch."""

    category = "pool"
    macs_rule = "zero"
    functional = True
    full_shapes = True
    args = (Arg("dim", DIMS, doc="the dim or dims to reduce (torch's numbering)"),
            Arg("keepdim", BOOL, False, "keep the reduced dims with size 1"))

    def _dims(self, a, shape):
        dims = [full_dim(self.name, d, shape) for d in a["dim"]]
        if len(set(dims)) != len(dims):
            raise ShapeError(f"`{self.name}` reduces dim {dims} twice", "a dim given twice", arg="dim")
        return set(dims)

    def infer(self, a, ins):
        x = ins[0]
        dims = self._dims(a, x)
        if a["keepdim"]:
            return tuple(1 if i in dims else d for i, d in enumerate(x))
        return tuple(d for i, d in enumerate(x) if i not in dims)

    def window(self, a, ins, layouts):
        return GLOBAL

    def function(self, a):
        import torch
        return getattr(torch, self.name), (list(a["dim"]),), {"keepdim": a["keepdim"]}

    def label(self, a):
        return f"{self.name} [{','.join(str(d) for d in a['dim'])}]"


@register
class Mean(_Reduction):
    """Mean over dims (``torch.mean``), e.g. token pooling ``mean(x, 1)`` or ``mean(x, [2, 3])``."""

    name = "mean"


@register
class Sum(_Reduction):
    """Sum over dims (``torch.sum``); ``sum(x, 1)``. (``sum`` of a list of tensors is their element-wise sum.)"""

    name = "sum"


@register
class Amax(_Reduction):
    """Maximum over dims (``torch.amax``)."""

    name = "amax"


@register
class Amin(_Reduction):
    """Minimum over dims (``torch.amin``)."""

    name = "amin"


@register
class Stack(Op):
    """Stack tensors of one shape along a new dim (``torch.stack``): ``stack([a, b], 1)``."""

    name = "stack"
    category = "join"
    macs_rule = "zero"
    arity = None
    functional = True
    full_shapes = True
    args = (Arg("dim", INT, 1, "where the new dim goes (torch's numbering)"),)

    def infer(self, a, ins):
        first = tuple(ins[0])
        for other in ins[1:]:
            if tuple(other) != first:
                raise ShapeError(f"cannot stack tensors of shapes {fmt_full(first)} and {fmt_full(other)}",
                                 f"{fmt_full(first)} vs {fmt_full(other)}")
        d = full_dim(self.name, a["dim"], first, extra=1)
        return first[:d] + (len(ins),) + first[d:]

    def emit(self, graph, a, args, inplace=False, ins=None):
        import torch
        return graph.call_function(torch.stack, (list(args),), {"dim": a["dim"]})

    def label(self, a):
        return f"stack [{a['dim']}]"


@register
class Index(Op):
    """Gather positions of ``dim`` by an integer tensor (a `buffer`): ``index(table, idx)`` is ``table[idx]``
    along ``dim`` (default: the first dim that is not the batch), the dim replaced by ``idx``'s shape, as
    relative-position bias tables are read (``table[relative_position_index]``)."""

    name = "index"
    category = "reshape"
    macs_rule = "zero"
    arity = 2
    functional = True
    full_shapes = True
    args = (Arg("dim", OPT_INT, None, "the dim to gather (torch's numbering; default the first non-batch dim)"),)

    def tensor_inputs(self):
        return ("x", "idx")

    def _dim(self, a, x):
        if a["dim"] is None:
            return 1 if x and is_batch(x[0]) else 0
        return full_dim(self.name, a["dim"], x)

    def infer(self, a, ins):
        x, idx = ins
        if idx and is_batch(idx[0]):
            raise ShapeError("`index` takes its indices from a `buffer` (an integer tensor without the batch dim)",
                             "batched indices")
        d = self._dim(a, x)
        return tuple(x[:d]) + tuple(idx) + tuple(x[d + 1:])

    def check_inputs(self, a, nodes):
        x, idx = nodes
        if idx.dtype not in ("int64", "int32"):
            raise ShapeError("`index` needs integer indices, from a `buffer` of int64 values",
                             "not an integer tensor")
        if idx.op == "buffer":
            shape = ((BATCH,) + tuple(x.shape)) if x.batched else tuple(x.shape)
            size = shape[self._dim(a, shape)]
            low, high = _extent(idx.attrs["values"])
            if low < 0 or high >= size:
                values = list(_flat(idx.attrs["values"]))
                bad = [v for v in values if not 0 <= v < size]
                raise ShapeError(f"`index`: index {bad[0]} is out of range for a dim of size {size}",
                                 f"indices reach {max(values) if bad[0] >= 0 else min(values)}, the dim has {size}",
                                 help="indices count from 0 (torch's index_select takes no negative ones)"
                                 if bad[0] < 0 else None)
        return x.dtype

    def emit(self, graph, a, args, inplace=False, ins=None):
        # static shapes: index_select over the flattened indices, then the indices' shape (traceable by fx)
        import torch
        out = self.infer(a, ins)
        target = [-1] + list(out[1:]) if out and is_batch(out[0]) else list(out)
        flat = graph.call_function(torch.reshape, (args[1], [-1]))
        picked = graph.call_function(torch.index_select, (args[0], self._dim(a, ins[0]), flat))
        return graph.call_function(torch.reshape, (picked, target))

    def label(self, a):
        return "index" if a["dim"] is None else f"index [{a['dim']}]"

    def window(self, a, ins, layouts):
        return UNDEFINED


def _flat(v):
    if isinstance(v, (list, tuple)):
        for x in v:
            yield from _flat(x)
    else:
        yield v


@by_identity
def _extent(v) -> tuple:
    """The smallest and largest number of a (nested) list of numbers."""
    values = list(_flat(v))
    return min(values), max(values)


@by_identity
def _leaf_types(v) -> frozenset:
    """The types of the numbers in a (nested) list."""
    return frozenset(type(x) for x in _flat(v))


@register
class SDPA(Op):
    """Fused scaled dot-product attention (``torch.nn.functional.scaled_dot_product_attention``):
    ``softmax(q @ k^T * scale + bias) @ v`` for ``q (..., L, E)``, ``k (..., S, E)``, ``v (..., S, Ev)`` and an
    optional additive ``bias`` broadcastable to ``(..., L, S)`` (relative-position bias, masks); ``scale``
    defaults to ``E ** -0.5``. The leading dims are heads, windows, ... (batch 1 for MACs: ``L*S*(E+Ev)``)."""

    name = "sdpa"
    category = "attention"
    macs_rule = "formula"
    arity = None
    min_inputs = 3

    def tensor_inputs(self):
        return ("q", "k", "v", "[bias]")
    functional = True
    full_shapes = True
    args = (Arg("scale", OPT_FLOAT, None, "multiplies q @ k^T (default: 1 / sqrt(E))"),
            Arg("dropout", PROB, 0.0, "dropout on the attention weights, in training"),
            Arg("causal", BOOL, False, "mask out positions after each query"))

    def infer(self, a, ins):
        if len(ins) not in (3, 4):
            raise ShapeError(f"`sdpa` takes q, k, v and an optional bias, got {len(ins)} tensors", "3 or 4 tensors")
        q, k, v = (tuple(s) for s in ins[:3])
        for s, which in ((q, "q"), (k, "k"), (v, "v")):
            if len(s) < 2 or any(is_batch(d) for d in s[-2:]):
                raise ShapeError(f"`sdpa` {which} must be (..., tokens, dim), got {fmt_full(s)}",
                                 f"{which} is {fmt_full(s)}")
        if q[-1] != k[-1]:
            raise ShapeError(f"`sdpa` q and k dims differ: {fmt_full(q)} vs {fmt_full(k)}",
                             f"{q[-1]} vs {k[-1]}")
        if k[-2] != v[-2]:
            raise ShapeError(f"`sdpa` k and v have different token counts: {fmt_full(k)} vs {fmt_full(v)}",
                             f"{k[-2]} vs {v[-2]}")
        if not (q[:-2] == k[:-2] == v[:-2]):
            raise ShapeError(f"`sdpa` q, k and v must have the same leading dims: {fmt_full(q)}, {fmt_full(k)}, "
                             f"{fmt_full(v)}", "leading dims differ")
        if len(ins) == 4:
            scores = q[:-1] + (k[-2],)
            bias = tuple(ins[3])
            try:
                out = broadcast(self.name, [scores, bias])
            except ShapeError:
                out = None
            if out != scores:
                raise ShapeError(f"`sdpa` bias {fmt_full(bias)} does not broadcast to the scores "
                                 f"{fmt_full(scores)}", f"bias is {fmt_full(bias)}")
        return q[:-1] + (v[-1],)

    def macs(self, a, ins, out):
        q, k, v = ins[:3]
        return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])

    def window(self, a, ins, layouts):
        return GLOBAL

    def emit(self, graph, a, args, inplace=False, ins=None):
        from torch.nn import functional as F
        kwargs = {"attn_mask": args[3] if len(args) == 4 else None, "is_causal": a["causal"], "scale": a["scale"]}
        if a["dropout"] > 0:
            from .modules import attention_dropout_p
            kwargs["dropout_p"] = graph.call_function(attention_dropout_p,
                                                      (a["dropout"], graph.get_attr("training")))
        return graph.call_function(F.scaled_dot_product_attention, tuple(args[:3]), kwargs)

    def label(self, a):
        return "sdpa" + (f" scale {a['scale']:g}" if a["scale"] is not None else "")


class _Pointwise(Op):
    """An element-wise function of one tensor (``torch.<name>``), shape-preserving."""

    category = "activation"
    macs_rule = "zero"
    functional = True
    full_shapes = True
    torch_fn: str = ""

    def infer(self, a, ins):
        return tuple(ins[0])

    def function(self, a):
        import torch
        return getattr(torch, self.torch_fn or self.name), (), {arg.name: a[arg.name] for arg in self.args}


@register
class Exp(_Pointwise):
    """Element-wise exponential (``torch.exp``), e.g. Swin v2's ``logit_scale.exp()``; ``exp(3)`` of a number
    is the built-in."""

    name = "exp"


@register
class Log(_Pointwise):
    """Element-wise natural logarithm (``torch.log``); ``log`` of a number is the built-in."""

    name = "log"


@register
class Clamp(_Pointwise):
    """Limit values to ``[min, max]`` (``torch.clamp``); either bound may be none."""

    name = "clamp"
    args = (Arg("min", OPT_FLOAT, None, "lower bound (none: no bound)"),
            Arg("max", OPT_FLOAT, None, "upper bound (none: no bound)"))

    def label(self, a):
        return f"clamp [{a['min']}, {a['max']}]"


@register
class Normalize(Op):
    """Scale vectors along ``dim`` to unit ``p``-norm (``torch.nn.functional.normalize``), as cosine attention does."""

    name = "normalize"
    category = "norm"
    macs_rule = "zero"
    functional = True
    full_shapes = True
    args = (Arg("dim", INT, -1, "the dim whose vectors are normalized (torch's numbering)"),
            Arg("p", FLOAT, 2.0, "the norm's exponent (inf: the max norm)", nonfinite=True),
            Arg("eps", FLOAT, 1e-12, "lower bound of the divisor", range=NON_NEGATIVE))

    def infer(self, a, ins):
        full_dim(self.name, a["dim"], ins[0])
        return tuple(ins[0])

    def function(self, a):
        from torch.nn import functional as F
        return F.normalize, (), {"p": a["p"], "dim": a["dim"], "eps": a["eps"]}

    def label(self, a):
        return f"normalize [{a['dim']}]"


@register
class Roll(Op):
    """Shift elements cyclically along dims (``torch.roll``), e.g. Swin's shifted windows:
    ``roll(x, [-3, -3], [1, 2])``."""

    name = "roll"
    category = "reshape"
    macs_rule = "zero"
    functional = True
    full_shapes = True
    args = (Arg("shifts", INT_LIST, doc="the shift along each of `dims`"),
            Arg("dims", INT_LIST, doc="the dims to roll (torch's numbering)"))

    def infer(self, a, ins):
        if len(a["shifts"]) != len(a["dims"]):
            raise ShapeError(f"`roll` gives {len(a['shifts'])} shifts for {len(a['dims'])} dims",
                             "one shift per dim", arg="shifts")
        for d in a["dims"]:
            full_dim(self.name, d, ins[0], "dims")
        return tuple(ins[0])

    def window(self, a, ins, layouts):
        return UNDEFINED if any(s for s in a["shifts"]) else POINTWISE

    def function(self, a):
        import torch
        return torch.roll, (list(a["shifts"]), list(a["dims"])), {}

    def label(self, a):
        return "roll " + ",".join(str(s) for s in a["shifts"])


@register
class Pad(Op):
    """Pad the last dims with a constant (``torch.nn.functional.pad``): ``pad`` lists (before, after) pairs from
    the last dim backwards, as torch does: ``pad(x, [0, 0, 0, 1, 0, 1])`` pads an HxWxC map's W and H by one."""

    name = "pad"
    category = "reshape"
    macs_rule = "zero"
    functional = True
    full_shapes = True
    args = (Arg("pad", INT_LIST, doc="(before, after) pairs, last dim first"),
            Arg("value", FLOAT, 0.0, "the fill value (-inf for a mask)", nonfinite=True))

    def infer(self, a, ins):
        x, pads = list(ins[0]), a["pad"]
        if len(pads) % 2 or any(p < 0 for p in pads):
            raise ShapeError("`pad` takes non-negative (before, after) pairs", "invalid padding", arg="pad")
        k = len(pads) // 2
        low = 1 if x and is_batch(x[0]) else 0
        if k > len(x) - low:
            raise ShapeError(f"`pad` pads {k} dims of a tensor with {len(x) - low}", "too many pairs", arg="pad")
        for i in range(k):
            d = len(x) - 1 - i
            x[d] = x[d] + pads[2 * i] + pads[2 * i + 1]
        return tuple(x)

    def window(self, a, ins, layouts):
        return UNDEFINED if any(a["pad"]) else POINTWISE

    def function(self, a):
        from torch.nn import functional as F
        return F.pad, (list(a["pad"]),), {"value": a["value"]}

    def label(self, a):
        return "pad " + ",".join(str(p) for p in a["pad"])


@register
class MergeBatch(Op):
    """Move the first dim of each sample into the batch: ``(B, n, ...)`` becomes ``(B*n, ...)``
    (``x.flatten(0, 1)``), so a layer that takes one item at a time (a conv per window, attention per
    patch) runs on all ``n`` items of every sample. The checker keeps ``n``; ``split_batch(x, n)``
    gives the items back, and a model's results must have them back."""

    name = "merge_batch"
    category = "reshape"
    macs_rule = "zero"
    functional = True
    full_shapes = True
    returns_view = True

    def infer(self, a, ins):
        x = tuple(ins[0])
        if not (x and is_batch(x[0])) or len(x) < 2:
            raise ShapeError("`merge_batch` needs a batched tensor with a dim to merge into the batch",
                             f"input is {fmt_full(x)}")
        return (x[0],) + x[2:]

    def batch_fold(self, a, ins, fold):
        return fold * ins[0][1]

    def function(self, a):
        import torch
        return torch.flatten, (0, 1), {}


@register
class SplitBatch(Op):
    """Give each sample its ``n`` items back: ``(B*n, ...)`` becomes ``(B, n, ...)`` (``x.unflatten(0, (-1, n))``),
    the inverse of `merge_batch`."""

    name = "split_batch"
    category = "reshape"
    macs_rule = "zero"
    functional = True
    full_shapes = True
    returns_view = True
    args = (Arg("n", POS_INT, doc="items per sample to take out of the batch"),)

    def infer(self, a, ins):
        x = tuple(ins[0])
        if not (x and is_batch(x[0])):
            raise ShapeError("`split_batch` needs a batched tensor", f"input is {fmt_full(x)}")
        return (x[0], a["n"]) + x[1:]

    def batch_fold(self, a, ins, fold):
        if fold % a["n"]:
            raise ShapeError(f"`split_batch({a['n']})`: the batch holds {fold} item{'s' if fold != 1 else ''} per "
                             f"sample, not a multiple of {a['n']}", f"{fold} per sample", arg="n",
                             help="`merge_batch` puts items into the batch; split by the number it merged")
        return fold // a["n"]

    def function(self, a):
        import torch
        return torch.unflatten, (0, (-1, a["n"])), {}

    def label(self, a):
        return f"split_batch {a['n']}"


# ------------------------------------------------------------------ tensors a module owns


def _shape_list(v):
    if not isinstance(v, (list, tuple)):
        v = (v,)
    return tuple(INT(x) for x in v)


SHAPE = ArgType("[int, ...]", _shape_list, POSITIVE)


@register
class Parameter(Op):
    """A learned tensor of any shape, registered on the enclosing module under its label (``nn.Parameter``):
    ``let table = relative_position_bias_table: parameter([169, 6])``. It starts filled with ``value``; an
    `init` rule by its path sets another init (``init "relative_position_bias_table" = trunc_normal(std =
    0.02)``). It has no batch dim; tensor algebra broadcasts it over the batch."""

    name = "parameter"
    category = "embedding"
    macs_rule = "zero"
    arity = 0
    direct_param = True
    full_shapes = True
    args = (Arg("shape", SHAPE, doc="its whole shape (no batch dim)"),
            Arg("value", FLOAT, 0.0, "the value it starts with (before init rules)"))

    def infer(self, a, ins):
        return a["shape"]

    def params(self, a, ins):
        return math.prod(a["shape"])

    def make_param(self, a, ins):
        import torch
        return torch.full(a["shape"], a["value"])

    def emit(self, graph, a, args, inplace=False, ins=None):
        return args[-1]

    def label(self, a):
        return "parameter " + fmt_shape(a["shape"])


def _nested_values_of(v):
    if isinstance(v, (list, tuple)):
        if not v:
            raise ArgTypeError("a non-empty (nested) list of numbers")
        return tuple(_nested_values_of(x) for x in v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArgTypeError("a (nested) list of numbers")
    return v


#: a (nested) list of numbers, converted once per value object (the same table is often given to many blocks)
_nested_values = by_identity(_nested_values_of)


VALUES = ArgType("number or nested list of numbers", _nested_values)


@by_identity
def values_shape(v) -> tuple[int, ...]:
    """The shape of a rectangular nested list (ShapeError if ragged)."""
    return _values_shape(v)


def _values_shape(v) -> tuple[int, ...]:
    if not isinstance(v, tuple):
        return ()
    inner = {_values_shape(x) for x in v}
    if len(inner) != 1:
        raise ShapeError("`buffer` values are not rectangular: rows of different lengths", "ragged list",
                         arg="values")
    return (len(v),) + inner.pop()


@register
class Buffer(Op):
    """A constant tensor registered on the enclosing module under its label (``register_buffer``), from a
    (nested) list: ``relative_position_index: buffer([[...], ...])``. Integer values give an int64 tensor
    (indices, for `index`), others float32; ``persistent = false`` keeps it out of the ``state_dict``."""

    name = "buffer"
    category = "embedding"
    macs_rule = "zero"
    arity = 0
    direct_param = True
    direct_buffer = True
    full_shapes = True
    args = (Arg("values", VALUES, doc="the values, a (nested) list whose nesting gives the shape",
                nonfinite=True, int_limit=INT64_LIMIT),
            Arg("dtype", choice("auto", "int64", "float32", "bool"), "auto",
                "its dtype (auto: int64 when every value is an integer)"),
            Arg("persistent", BOOL, True, "saved in the state_dict"))

    def dtype(self, a) -> str:
        if a["dtype"] != "auto":
            return a["dtype"]
        return "int64" if _leaf_types(a["values"]) <= {int} else "float32"

    def infer(self, a, ins):
        if self.dtype(a) == "int64" and float in _leaf_types(a["values"]):
            raise ShapeError("an int64 `buffer` takes integer values, got a float", "a float value", arg="values",
                             help='leave `dtype` out (floats give float32) or write the values as integers')
        return values_shape(a["values"])

    def buffers(self, a, ins):
        return math.prod(values_shape(a["values"]))

    def check_inputs(self, a, nodes):
        d = self.dtype(a)
        return None if d == "float32" else d

    def make_param(self, a, ins):
        import torch
        return torch.tensor(a["values"], dtype=getattr(torch, self.dtype(a)))

    def emit(self, graph, a, args, inplace=False, ins=None):
        return args[-1]

    def label(self, a):
        return f"buffer {fmt_shape(values_shape(a['values']))} {self.dtype(a)}"
