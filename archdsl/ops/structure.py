"""Ops that move data rather than compute features: flatten, dropout and the joins."""

from __future__ import annotations

import math

from .registry import INT, PROB, Arg, Op, ShapeError, fmt_shape, register


def _dim(op: str, dim: int, rank: int, arg: str = "dim") -> int:
    """Map a torch dim (counting the batch dimension) onto our batch-free shape index."""
    full = rank + 1
    d = dim + full if dim < 0 else dim
    if not 1 <= d < full:
        raise ShapeError(f"`{op}` {arg} = {dim} is out of range for a tensor of {full} dims "
                         f"(batch included); the batch dimension 0 cannot be used", f"{arg} = {dim}", arg=arg)
    return d - 1


@register
class Flatten(Op):
    """Flatten dims ``start_dim..end_dim`` into one (``torch.nn.Flatten``); dims count the batch as dim 0."""

    name = "flatten"
    category = "reshape"
    torch_class = "Flatten"
    returns_view = True
    args = (Arg("start_dim", INT, 1, "first dim to flatten (batch is 0)"),
            Arg("end_dim", INT, -1, "last dim to flatten"))

    def infer(self, a, ins):
        x = ins[0]
        s = _dim(self.name, a["start_dim"], len(x), "start_dim")
        e = _dim(self.name, a["end_dim"], len(x), "end_dim")
        if e < s:
            raise ShapeError("`flatten` end_dim comes before start_dim", "empty range", arg="end_dim")
        return x[:s] + (math.prod(x[s:e + 1]),) + x[e + 1:]

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.Flatten(a["start_dim"], a["end_dim"])


@register
class Dropout(Op):
    """Randomly zeroes elements with probability ``p`` in training (``torch.nn.Dropout``); identity in eval."""

    name = "dropout"
    category = "regularization"
    torch_class = "Dropout"
    returns_view = True  # in eval mode it returns its input itself
    args = (Arg("p", PROB, 0.5, "probability of an element being zeroed"),)

    def infer(self, a, ins):
        return ins[0]

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.Dropout(p=a["p"])

    def label(self, a):
        return f"dropout {a['p']:g}"


@register
class Add(Op):
    """Element-wise sum of two or more tensors of the same shape (residual joins)."""

    name = "add"
    category = "join"
    arity = None
    functional = True

    def infer(self, a, ins):
        first = ins[0]
        for other in ins[1:]:
            if other != first:
                raise ShapeError(f"cannot add tensors of shapes {fmt_shape(first)} and {fmt_shape(other)}",
                                 f"{fmt_shape(first)} vs {fmt_shape(other)}")
        return first

    def emit(self, graph, a, args, inplace=False):
        import operator
        fn = operator.iadd if inplace else operator.add
        out = graph.call_function(fn, (args[0], args[1]))
        for more in args[2:]:
            out = graph.call_function(operator.add, (out, more))
        return out

    def label(self, a):
        return "+"


@register
class Concat(Op):
    """Concatenation of tensors along ``dim`` (``torch.cat``); all other dims must agree."""

    name = "concat"
    category = "join"
    arity = None
    functional = True
    args = (Arg("dim", INT, 1, "dim to concatenate along (batch is 0)"),)

    def infer(self, a, ins):
        d = _dim(self.name, a["dim"], len(ins[0]))
        first = ins[0]
        for other in ins[1:]:
            if len(other) != len(first) or other[:d] + other[d + 1:] != first[:d] + first[d + 1:]:
                raise ShapeError(f"cannot concatenate shapes {fmt_shape(first)} and {fmt_shape(other)} "
                                 f"along dim {a['dim']}", f"{fmt_shape(first)} vs {fmt_shape(other)}")
        return first[:d] + (sum(x[d] for x in ins),) + first[d + 1:]

    def emit(self, graph, a, args, inplace=False):
        import torch
        return graph.call_function(torch.cat, (list(args),), {"dim": a["dim"]})

    def label(self, a):
        return "concat"
