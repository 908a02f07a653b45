"""Ops that move data rather than compute features: flatten, dropout and the joins."""

from __future__ import annotations

import math

from .algebra import full_dim
from .registry import (INT, INT_LIST, OPT_BOOL, OPT_POS_FLOAT, OPT_POS_PAIR, POINTWISE, POS_INT, PROB,
                       Arg, Op, ShapeError, Window, choice, fmt_shape, is_batch, register)


def batched(shape) -> bool:
    """Whether a full shape (``Op.full_shapes``) is a batched tensor's."""
    return bool(shape) and is_batch(shape[0])


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
    macs_rule = "zero"
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

    def layout(self, a, ins, layouts, out):
        lay = layouts[0]
        if lay is None:
            return None
        s = _dim(self.name, a["start_dim"], len(ins[0]), "start_dim")
        e = _dim(self.name, a["end_dim"], len(ins[0]), "end_dim")
        merged = lay[s:e + 1]
        if len(merged) > 1:
            if not set(merged) <= {"H", "W", "L"}:
                return None
            merged = "L"  # spatial positions become token positions
        return lay[:s] + merged + lay[e + 1:]

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.Flatten(a["start_dim"], a["end_dim"])


@register
class Dropout(Op):
    """Randomly zeroes elements with probability ``p`` in training (``torch.nn.Dropout``); identity in eval."""

    name = "dropout"
    category = "regularization"
    macs_rule = "zero"
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
class Concat(Op):
    """Concatenation of tensors along ``dim`` (``torch.cat``); all other dims must agree."""

    name = "concat"
    category = "join"
    macs_rule = "zero"
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

    def window(self, a, ins, layouts):
        # along the channels positions line up; along a map's (or a clip's) spatial axes they shift
        rank = len(ins[0])
        return "undefined" if rank in (3, 4) and a["dim"] not in (1, -rank) else "pointwise"

    def emit(self, graph, a, args, inplace=False, ins=None):
        import torch
        return graph.call_function(torch.cat, (list(args),), {"dim": a["dim"]})

    def label(self, a):
        return "concat"


@register
class Permute(Op):
    """Reorder dimensions (torchvision's ``Permute``); ``dims`` count the batch as 0, which must stay first.

    ``permute([0, 2, 3, 1])`` makes a CxHxW map channels-last (HxWxC), as in ConvNeXt blocks. As a
    function, ``permute(t, dims)`` also reorders a parameter's or buffer's own dims.
    """

    name = "permute"
    category = "reshape"
    macs_rule = "zero"
    torch_class = "Permute"
    returns_view = True
    full_shapes = True
    args = (Arg("dims", INT_LIST, doc="the new order of the dims, batch (0) first"),)

    def infer(self, a, ins):
        x, dims = ins[0], a["dims"]
        if batched(x):
            if sorted(dims) != list(range(len(x))) or dims[0] != 0:
                shape = fmt_shape(tuple(x[1:]))
                raise ShapeError(f"`permute` dims {list(dims)} are not an order of 0..{len(x) - 1} with the batch "
                                 f"dim 0 first, for a {shape} tensor", f"input is {shape}", arg="dims")
        elif sorted(dims) != list(range(len(x))):
            raise ShapeError(f"`permute` dims {list(dims)} are not an order of 0..{len(x) - 1}, for a "
                             f"{fmt_shape(tuple(x))} tensor without the batch dim", "not an order of its dims",
                             arg="dims")
        return tuple(x[d] for d in dims)

    def layout(self, a, ins, layouts, out):
        if not batched(ins[0]) or not layouts[0]:
            return None
        return "".join(layouts[0][d - 1] for d in a["dims"][1:])

    def build(self, a, ins, inplace=False):
        from .modules import Permute
        return Permute(list(a["dims"]))

    def function(self, a):
        import torch
        return torch.permute, (list(a["dims"]),), {}

    def label(self, a):
        return "permute " + ",".join(str(d) for d in a["dims"])


@register
class Reshape(Op):
    """Reshape each sample to ``shape`` (batch excluded; one entry may be -1), like ``x.reshape(n, *shape)``.
    A parameter or buffer (no batch dim) is reshaped to ``shape`` as a whole."""

    name = "reshape"
    category = "reshape"
    macs_rule = "zero"
    torch_class = "Reshape"
    returns_view = True
    full_shapes = True
    args = (Arg("shape", INT_LIST, doc="the new per-sample shape; one entry may be -1"),)

    def infer(self, a, ins):
        x = tuple(ins[0][1:]) if batched(ins[0]) else tuple(ins[0])
        shape, total = list(a["shape"]), math.prod(x)
        if shape.count(-1) > 1 or any(d < -1 or d == 0 for d in shape):
            raise ShapeError(f"`reshape` shape {shape} must have positive sizes and at most one -1",
                             "invalid shape", arg="shape")
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            if total % known:
                raise ShapeError(f"cannot reshape {fmt_shape(x)} ({total} elements) to {shape}",
                                 f"{total} is not divisible by {known}", arg="shape")
            shape[shape.index(-1)] = total // known
        elif known != total:
            raise ShapeError(f"cannot reshape {fmt_shape(x)} ({total} elements) to {fmt_shape(tuple(shape))} "
                             f"({known} elements)", f"{known} != {total} elements", arg="shape")
        return ((ins[0][0],) if batched(ins[0]) else ()) + tuple(shape)

    def layout(self, a, ins, layouts, out):
        return None

    def build(self, a, ins, inplace=False):
        from .modules import Reshape
        return Reshape(list(a["shape"]))

    def emit(self, graph, a, args, inplace=False, ins=None):
        import torch
        from .modules import reshape_samples
        if ins is not None and not batched(ins[0]):
            return graph.call_function(torch.reshape, (args[0], list(a["shape"])))
        return graph.call_function(reshape_samples, (args[0], list(a["shape"])))

    def label(self, a):
        return "reshape " + "x".join(str(d) for d in a["shape"])


@register
class Select(Op):
    """Pick one index along a dim, dropping that dim (``x.select(dim, index)``), e.g. ViT's class token ``x[:, 0]``."""

    name = "select"
    category = "reshape"
    macs_rule = "zero"
    torch_class = "Select"
    returns_view = True
    full_shapes = True
    args = (Arg("dim", INT, doc="the dim to index (batch is 0)"),
            Arg("index", INT, doc="the position along it (negative counts from the end)"))

    def infer(self, a, ins):
        x = tuple(ins[0])
        d = full_dim(self.name, a["dim"], x)
        size = x[d]
        if not -size <= a["index"] < size:
            raise ShapeError(f"`select` index {a['index']} is out of range for size {size}",
                             f"size {size}", arg="index")
        return x[:d] + x[d + 1:]

    def build(self, a, ins, inplace=False):
        from .modules import Select
        return Select(a["dim"], a["index"])

    def function(self, a):
        import torch
        return torch.select, (a["dim"], a["index"]), {}

    def label(self, a):
        return f"select [{a['dim']}] {a['index']}"


@register
class Narrow(Op):
    """Keep ``length`` positions of a dim from ``start`` on (``torch.narrow``, a view), e.g. ShuffleNet v2's
    channel split ``x.chunk(2, dim=1)``: ``narrow(1, 0, c // 2)`` and ``narrow(1, c // 2, c // 2)``."""

    name = "narrow"
    category = "reshape"
    macs_rule = "zero"
    torch_class = "Narrow"
    returns_view = True
    full_shapes = True
    args = (Arg("dim", INT, doc="the dim to narrow (batch is 0)"),
            Arg("start", INT, doc="the first position kept (negative counts from the end)"),
            Arg("length", POS_INT, doc="how many positions are kept"))

    def _span(self, a, x) -> tuple[int, int]:
        """The narrowed dim's index in the full shape ``x``, and the start made non-negative."""
        d = full_dim(self.name, a["dim"], x)
        size = x[d]
        if not -size <= a["start"] < size:
            raise ShapeError(f"`narrow` start {a['start']} is out of range for size {size}",
                             f"size {size}", arg="start")
        start = a["start"] + size if a["start"] < 0 else a["start"]
        if start + a["length"] > size:
            raise ShapeError(f"`narrow` start {a['start']} + length {a['length']} is out of range for size {size}",
                             f"size {size}", arg="length")
        return d, start

    def infer(self, a, ins):
        x = tuple(ins[0])
        d, _ = self._span(a, x)
        return x[:d] + (a["length"],) + x[d + 1:]

    def window(self, a, ins, layouts):
        # cropping a map's height or width shifts positions by `start`: a 1x1 window with negative padding
        x = tuple(ins[0])
        d, start = self._span(a, x)
        per_sample = x[1:] if batched(x) else x
        lay = layouts[0] if layouts[0] is not None or len(per_sample) != 3 else "CHW"
        axis = lay[d - 1] if lay is not None and batched(x) else None
        if axis == "H":
            return Window((1, 1), (1, 1), (-start, 0))
        if axis == "W":
            return Window((1, 1), (1, 1), (0, -start))
        return POINTWISE

    def build(self, a, ins, inplace=False):
        from .modules import Narrow
        return Narrow(a["dim"], a["start"], a["length"])

    def function(self, a):
        import torch
        return torch.narrow, (a["dim"], a["start"], a["length"]), {}

    def label(self, a):
        return f"narrow [{a['dim']}] {a['start']}:+{a['length']}"


@register
class PatchMerge(Op):
    """Swin's 2x2 patch gather on an HxWxC (channels-last) map: pad H and W to even sizes (zeros at the bottom
    and right), then concatenate ``x[0::2, 0::2]``, ``x[1::2, 0::2]``, ``x[0::2, 1::2]``, ``x[1::2, 1::2]`` on the
    channels, giving ceil(H/2) x ceil(W/2) x 4C (torchvision's ``_patch_merging_pad``, the parameter-free part
    of ``PatchMerging``; its ``norm`` and ``reduction`` are ordinary `layernorm` and `linear` children)."""

    name = "patch_merge"
    category = "reshape"
    macs_rule = "zero"
    torch_class = "PatchMergePad"
    args = ()

    def check_layout(self, a, ins, layouts):
        if len(ins[0]) == 3 and layouts[0] is not None and layouts[0] != "HWC":
            raise ShapeError(f"`patch_merge` expects an HxWxC (channels-last) map, but this {fmt_shape(ins[0])} "
                             f"tensor is laid out {'x'.join(layouts[0])}", f"input is {'x'.join(layouts[0])}",
                             help="make the map channels-last with `permute([0, 2, 3, 1])`")

    def infer(self, a, ins):
        if len(ins[0]) != 3:
            raise ShapeError(f"`patch_merge` expects an HxWxC (channels-last) map, got {fmt_shape(ins[0])}",
                             f"input is {fmt_shape(ins[0])}")
        h, w, c = ins[0]
        return (-(-h // 2), -(-w // 2), 4 * c)

    def window(self, a, ins, layouts):
        return Window((2, 2), (2, 2), (0, 0))  # the odd row / column of padding is at the bottom / right

    def build(self, a, ins, inplace=False):
        from .modules import PatchMergePad
        return PatchMergePad()

    def label(self, a):
        return "patch merge 2x2"


@register
class Interpolate(Op):
    """Resize a CxHxW map (``F.interpolate``) to ``size``, or by ``scale_factor`` as ``nn.Upsample(scale_factor=s)``
    does (output size ``floor(H * s)``); U-Net's resize when a skip's size differs, HRNet's upsampling."""

    name = "interpolate"
    category = "reshape"
    macs_rule = "zero"
    torch_class = "Interpolate"
    args = (Arg("size", OPT_POS_PAIR, None, "output height and width (or give scale_factor)"),
            Arg("mode", choice("nearest", "bilinear", "bicubic", "area", "nearest-exact"), "nearest",
                "interpolation algorithm"),
            Arg("align_corners", OPT_BOOL, None, "for bilinear/bicubic: align the corner pixels"),
            Arg("scale_factor", OPT_POS_FLOAT, None, "multiplies the height and width (instead of size)"))

    def infer(self, a, ins):
        if len(ins[0]) != 3:
            raise ShapeError(f"`interpolate` expects a CxHxW feature map, got {fmt_shape(ins[0])}",
                             f"input is {fmt_shape(ins[0])}")
        if a["align_corners"] is not None and a["mode"] not in ("bilinear", "bicubic"):
            raise ShapeError(f"`align_corners` only applies to bilinear and bicubic modes, not {a['mode']!r}",
                             "remove it", arg="align_corners")
        if (a["size"] is None) == (a["scale_factor"] is None):
            raise ShapeError("`interpolate` takes either `size` or `scale_factor`", "give one of them",
                             arg="size" if a["size"] is not None else None)
        if a["size"] is not None:
            return (ins[0][0],) + a["size"]
        out = tuple(math.floor(d * a["scale_factor"]) for d in ins[0][1:])
        if min(out) < 1:
            raise ShapeError(f"`interpolate` by {a['scale_factor']:g} makes a {fmt_shape(ins[0])} map empty",
                             "output size 0", arg="scale_factor")
        return (ins[0][0],) + out

    def window(self, a, ins, layouts):
        return "undefined"  # resampling: no receptive field in the Distill sense

    def build(self, a, ins, inplace=False):
        from .modules import Interpolate
        size = list(a["size"]) if a["size"] is not None else None
        return Interpolate(size, a["mode"], a["align_corners"], a["scale_factor"])

    def label(self, a):
        if a["size"] is None:
            return f"resize x{a['scale_factor']:g} {a['mode']}"
        return f"resize {a['size'][0]}x{a['size'][1]} {a['mode']}"


@register
class StochasticDepth(Op):
    """Drop the residual branch per sample (``"row"``) or per batch with probability ``p`` in training;
    identity in eval (torchvision's ``StochasticDepth``)."""

    name = "stochastic_depth"
    category = "regularization"
    macs_rule = "zero"
    torch_class = "StochasticDepth"
    args = (Arg("p", PROB, doc="probability of dropping"),
            Arg("mode", choice("row", "batch"), "row", "drop per sample or for the whole batch"))

    def infer(self, a, ins):
        return ins[0]

    def build(self, a, ins, inplace=False):
        from .modules import StochasticDepth
        return StochasticDepth(a["p"], a["mode"])

    def label(self, a):
        return f"stochastic depth {a['p']:.3g}"


@register
class ChannelShuffle(Op):
    """Interleave the channels of ``groups`` groups (ShuffleNet's channel shuffle)."""

    name = "channel_shuffle"
    category = "reshape"
    macs_rule = "zero"
    torch_class = "ChannelShuffle"
    returns_view = True  # with one group (or one channel per group) it returns its input itself
    args = (Arg("groups", POS_INT, doc="number of channel groups"),)

    def infer(self, a, ins):
        if len(ins[0]) != 3:
            raise ShapeError(f"`channel_shuffle` expects a CxHxW feature map, got {fmt_shape(ins[0])}",
                             f"input is {fmt_shape(ins[0])}")
        if ins[0][0] % a["groups"]:
            raise ShapeError(f"{ins[0][0]} channels cannot be split into {a['groups']} groups",
                             f"groups = {a['groups']}", arg="groups")
        return ins[0]

    def build(self, a, ins, inplace=False):
        from .modules import ChannelShuffle
        return ChannelShuffle(a["groups"])

    def label(self, a):
        return f"channel shuffle g{a['groups']}"
