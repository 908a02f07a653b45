"""Layers with weights or windows: convolution, normalization, linear, pooling; and ``identity``.

Convolution, transposed convolution, batch normalization and pooling are rank-generic: one base
class per family (``_ConvNd``, ``_ConvTransposeNd``, ``_BatchNormNd``, ``_MaxPoolNd``,
``_AvgPoolNd``, ``_AdaptivePoolNd``) holds the argument schema, shape rule, costs and torch
factory for ``rank`` spatial axes; each registered op (``conv1d``, ``conv2d``, ``conv3d``, ...)
only sets its ``name``, ``rank``, ``torch_class`` and docstring. Rank 1 takes CxL sequences,
rank 2 CxHxW feature maps, rank 3 CxDxHxW volumes.
"""

from __future__ import annotations

import math
from typing import ClassVar

from .registry import (ABOVE_ZERO, BOOL, FLOAT, GLOBAL, MAX_ELEMENTS, NON_NEGATIVE, POS_INT, UNDEFINED, UNIT, Arg,
                       Op, Shape, ShapeError, Window,
                       channels_first_required, channels_last_required, expect_rank, fmt_shape, nonneg_ints,
                       opt_pos_ints, pos_ints, register, window_out)

#: per rank: what the input is (for messages), the names of its spatial axes, and their letters (for docs)
_MAPS = {1: "a CxL sequence", 2: "a CxHxW feature map", 3: "a CxDxHxW volume"}
_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
_LETTERS = {2: "hw", 3: "dhw"}

SPATIAL = _MAPS[2]


def _per_axis(rank: int, what: str, prefix: str = "") -> str:
    """An argument doc naming the per-axis list form: ``"kernel size, an int or [kh, kw]"`` (2-D)."""
    if rank == 1:
        return what
    return f"{what}, an int or [{', '.join(prefix + c for c in _LETTERS[rank])}]"


def _axes_phrase(rank: int) -> str:
    """``"height and width"``, ``"depth, height and width"``, ``"length"``."""
    *rest, last = _AXES[rank]
    return f"{', '.join(rest)} and {last}" if rest else last


def _size(v: tuple[int, ...]) -> str:
    """``3`` for (3, 3), ``3x5`` for (3, 5): the short form used in labels."""
    return str(v[0]) if all(x == v[0] for x in v) else "x".join(str(x) for x in v)


def _unpack(p: tuple[int, ...]):
    """Give torch the same int-or-tuple form torchvision uses (so module reprs match)."""
    return p[0] if all(x == p[0] for x in p) else tuple(p)


class _Spatial(Op):
    """Base of the ops acting on the ``rank`` spatial axes of a channels-first input.

    A subclass that sets ``rank`` gets its argument schema from :meth:`schema` for that rank.
    """

    rank: ClassVar[int]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "rank" in cls.__dict__:
            cls.args = cls.schema(cls.rank)

    @classmethod
    def schema(cls, rank: int) -> tuple[Arg, ...]:
        """The argument schema of the family's op for ``rank`` spatial axes."""
        return ()

    @property
    def axes(self) -> tuple[str, ...]:
        return _AXES[self.rank]

    def expect_map(self, x: Shape) -> None:
        expect_rank(self.name, x, self.rank + 1, _MAPS[self.rank])

    def short_name(self) -> str:
        """The label's op name: 2-D ops drop the suffix (``conv``, ``maxpool``), others keep it (``conv3d``)."""
        return self.name.removesuffix("2d")


# ------------------------------------------------------------------ convolution


class _ConvNd(_Spatial):
    """Convolution over ``rank`` spatial axes (``conv1d``, ``conv2d``, ``conv3d``)."""

    category = "conv"
    macs_rule = "formula"
    param_names = ("weight", "bias")

    @classmethod
    def schema(cls, rank):
        return (
            Arg("out_channels", POS_INT, doc="number of output channels"),
            Arg("kernel_size", pos_ints(rank), doc=_per_axis(rank, "kernel size", "k")),
            Arg("stride", pos_ints(rank), 1, "stride"),
            Arg("padding", nonneg_ints(rank), 0, "zero padding added to both sides"),
            Arg("dilation", pos_ints(rank), 1, "spacing between kernel elements"),
            Arg("groups", POS_INT, 1, "number of blocked connections from input to output channels"),
            Arg("bias", BOOL, True, "add a learnable bias"),
        )

    def check_layout(self, a, ins, layouts):
        if self.rank == 2:  # 1-D and 3-D inputs are checked for their rank only
            channels_first_required(self.name, ins[0], layouts[0])

    def infer(self, a, ins):
        x = ins[0]
        self.expect_map(x)
        c, g = x[0], a["groups"]
        if c % g:
            raise ShapeError(f"input channels ({c}) of `{self.name}` are not divisible by groups ({g})",
                             f"{c} input channels, groups = {g}", arg="groups")
        if a["out_channels"] % g:
            raise ShapeError(f"out_channels ({a['out_channels']}) of `{self.name}` is not divisible by groups ({g})",
                             f"{a['out_channels']} output channels, groups = {g}", arg="groups")
        return (a["out_channels"],) + tuple(
            window_out(self.name, n, k, s, p, d, False, axis, x)
            for n, k, s, p, d, axis in zip(x[1:], a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                                           self.axes))

    def params(self, a, ins):
        n = a["out_channels"] * (ins[0][0] // a["groups"]) * math.prod(a["kernel_size"])
        return n + (a["out_channels"] if a["bias"] else 0)

    def macs(self, a, ins, out):
        return a["out_channels"] * (ins[0][0] // a["groups"]) * math.prod(a["kernel_size"]) * math.prod(out[1:])

    def window(self, a, ins, layouts):
        return Window(a["kernel_size"], a["stride"], a["padding"], a["dilation"])

    def build(self, a, ins, inplace=False):
        from torch import nn
        return getattr(nn, self.torch_class)(ins[0][0], a["out_channels"], a["kernel_size"], a["stride"],
                                             a["padding"], a["dilation"], a["groups"], a["bias"])

    def label(self, a):
        s = f"{self.short_name()} {_size(a['kernel_size'])}"
        if any(x != 1 for x in a["stride"]):
            s += f" /{_size(a['stride'])}"
        s += f", {a['out_channels']}"
        if a["groups"] != 1:
            s += f", g{a['groups']}"
        return s


@register
class Conv1d(_ConvNd):
    """1-D convolution over a CxL sequence (``torch.nn.Conv1d``). Input channels are inferred from the input.

    ``groups`` must divide both the input and output channels; ``groups == in.channels``
    gives a depthwise convolution.
    """

    name = "conv1d"
    rank = 1
    torch_class = "Conv1d"


@register
class Conv2d(_ConvNd):
    """2-D convolution (``torch.nn.Conv2d``). Input channels are inferred from the input.

    ``groups`` must divide both the input and output channels; ``groups == in.channels``
    gives a depthwise convolution.
    """

    name = "conv2d"
    rank = 2
    torch_class = "Conv2d"


@register
class Conv3d(_ConvNd):
    """3-D convolution over a CxDxHxW volume (``torch.nn.Conv3d``). Input channels are inferred from the input.

    ``groups`` must divide both the input and output channels; ``groups == in.channels``
    gives a depthwise convolution.
    """

    name = "conv3d"
    rank = 3
    torch_class = "Conv3d"


class _ConvTransposeNd(_ConvNd):
    """Transposed convolution over ``rank`` spatial axes (``conv_transpose1d``, ``2d``, ``3d``)."""

    @classmethod
    def schema(cls, rank):
        return (
            Arg("out_channels", POS_INT, doc="number of output channels"),
            Arg("kernel_size", pos_ints(rank), doc=_per_axis(rank, "kernel size", "k")),
            Arg("stride", pos_ints(rank), 1, "stride"),
            Arg("padding", nonneg_ints(rank), 0, "removed from both sides of the output"),
            Arg("output_padding", nonneg_ints(rank), 0, "added to one side of the output"),
            Arg("groups", POS_INT, 1, "number of blocked connections from input to output channels"),
            Arg("bias", BOOL, True, "add a learnable bias"),
            Arg("dilation", pos_ints(rank), 1, "spacing between kernel elements"),
        )

    def infer(self, a, ins):
        x = ins[0]
        self.expect_map(x)
        c = x[0]
        g = a["groups"]
        if c % g or a["out_channels"] % g:
            raise ShapeError(f"channels ({c} in, {a['out_channels']} out) of `{self.name}` are not divisible "
                             f"by groups ({g})", f"groups = {g}", arg="groups")
        out = [a["out_channels"]]
        for i, axis in enumerate(self.axes):
            k, s_, p, op, d = (a["kernel_size"][i], a["stride"][i], a["padding"][i], a["output_padding"][i],
                               a["dilation"][i])
            if op >= max(s_, d):
                raise ShapeError(f"`{self.name}` output_padding ({op}) must be smaller than stride or "
                                 f"dilation along {axis}", "output_padding too large", arg="output_padding")
            n = (x[i + 1] - 1) * s_ - 2 * p + d * (k - 1) + op + 1
            if n < 1:
                raise ShapeError(f"`{self.name}` output {axis} would be {n}", f"{axis} becomes {n}",
                                 arg="padding")
            out.append(n)
        return tuple(out)

    def params(self, a, ins):
        n = ins[0][0] * (a["out_channels"] // a["groups"]) * math.prod(a["kernel_size"])
        return n + (a["out_channels"] if a["bias"] else 0)

    def macs(self, a, ins, out):
        # every input position scatters a kernel into every output channel of its group
        return ins[0][0] * (a["out_channels"] // a["groups"]) * math.prod(a["kernel_size"]) * math.prod(ins[0][1:])

    def window(self, a, ins, layouts):
        return UNDEFINED  # a fractional stride: upsampling has no receptive field in the Distill sense

    def build(self, a, ins, inplace=False):
        from torch import nn
        return getattr(nn, self.torch_class)(ins[0][0], a["out_channels"], a["kernel_size"], a["stride"],
                                             a["padding"], a["output_padding"], a["groups"], a["bias"],
                                             a["dilation"])

    def label(self, a):
        s = f"{self.short_name()} {_size(a['kernel_size'])}"
        if any(x != 1 for x in a["stride"]):
            s += f" x{_size(a['stride'])}"
        return s + f", {a['out_channels']}"


@register
class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution over a CxL sequence (``torch.nn.ConvTranspose1d``), e.g. learned upsampling.

    Output length: ``(in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``.
    """

    name = "conv_transpose1d"
    rank = 1
    torch_class = "ConvTranspose1d"


@register
class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution (``torch.nn.ConvTranspose2d``), e.g. U-Net's learned 2x upsampling.

    Output size: ``(in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``.
    """

    name = "conv_transpose2d"
    rank = 2
    torch_class = "ConvTranspose2d"


@register
class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution over a CxDxHxW volume (``torch.nn.ConvTranspose3d``), e.g. 3-D U-Net upsampling.

    Output size, per axis: ``(in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``.
    """

    name = "conv_transpose3d"
    rank = 3
    torch_class = "ConvTranspose3d"


# ------------------------------------------------------------------ normalization


class _BatchNormNd(_Spatial):
    """Batch normalization over the channels of a ``rank``-D input (``batchnorm1d``, ``2d``, ``3d``)."""

    category = "norm"
    macs_rule = "zero"
    param_names = ("weight", "bias")

    @classmethod
    def schema(cls, rank):
        return (
            Arg("eps", FLOAT, 1e-5, "added to the variance for numerical stability (torch: > 0 in training)",
                range=ABOVE_ZERO),
            Arg("momentum", FLOAT, 0.1, "running statistics momentum", range=UNIT),
            Arg("affine", BOOL, True, "learnable scale and shift"),
        )

    def infer(self, a, ins):
        x = ins[0]
        if self.rank == 1 and len(x) == 1:  # torch.nn.BatchNorm1d takes a batch of vectors, or of sequences
            return x
        expect_rank(self.name, x, self.rank + 1, "a C vector or a CxL sequence" if self.rank == 1 else _MAPS[self.rank])
        return x

    def params(self, a, ins):
        return 2 * ins[0][0] if a["affine"] else 0

    def buffers(self, a, ins):
        return 2 * ins[0][0] + 1

    def build(self, a, ins, inplace=False):
        from torch import nn
        return getattr(nn, self.torch_class)(ins[0][0], eps=a["eps"], momentum=a["momentum"], affine=a["affine"])

    def label(self, a):
        return self.short_name()


@register
class BatchNorm1d(_BatchNormNd):
    """Batch normalization over the channels of a C vector or a CxL sequence (``torch.nn.BatchNorm1d``)."""

    name = "batchnorm1d"
    rank = 1
    torch_class = "BatchNorm1d"


@register
class BatchNorm2d(_BatchNormNd):
    """Batch normalization over the channels of a feature map (``torch.nn.BatchNorm2d``)."""

    name = "batchnorm2d"
    rank = 2
    torch_class = "BatchNorm2d"


@register
class BatchNorm3d(_BatchNormNd):
    """Batch normalization over the channels of a CxDxHxW volume (``torch.nn.BatchNorm3d``)."""

    name = "batchnorm3d"
    rank = 3
    torch_class = "BatchNorm3d"


@register
class GroupNorm(Op):
    """Group normalization (``torch.nn.GroupNorm``): the channels of a ``(C, *)`` input (a CxHxW map,
    a CxL sequence, a CxDxHxW volume) are split into ``num_groups`` groups, each normalized over its
    channels and all positions; ``num_groups`` must divide the channels.

    Its statistics span every position, so the summary reports its receptive field as global.
    """

    name = "groupnorm"
    category = "norm"
    macs_rule = "zero"
    torch_class = "GroupNorm"
    param_names = ("weight", "bias")
    args = (
        Arg("num_groups", POS_INT, doc="number of groups the channels are split into"),
        Arg("eps", FLOAT, 1e-5, "added to the variance for numerical stability", range=NON_NEGATIVE),
        Arg("affine", BOOL, True, "learnable per-channel scale and shift"),
    )

    def check_layout(self, a, ins, layouts):
        x, lay = ins[0], layouts[0]
        channels_first_required(self.name, x, lay)
        if lay is not None and lay[0] != "C":
            raise ShapeError(f"`groupnorm` splits the first axis into groups of channels, but this {fmt_shape(x)} "
                             f"tensor is laid out {'x'.join(lay)}", f"input is {'x'.join(lay)}",
                             help="`permute` the channels first, or use `layernorm()` on channels-last tokens")

    def infer(self, a, ins):
        x = ins[0]
        if not x:
            raise ShapeError("`groupnorm` expects a (C, *) input, got a scalar", "input is a scalar")
        c, g = x[0], a["num_groups"]
        if c % g:
            raise ShapeError(f"channels ({c}) of `groupnorm` are not divisible by num_groups ({g})",
                             f"{c} channels, num_groups = {g}", arg="num_groups")
        return x

    def params(self, a, ins):
        return 2 * ins[0][0] if a["affine"] else 0

    def window(self, a, ins, layouts):
        return GLOBAL  # each group's mean and variance are taken over every position

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.GroupNorm(a["num_groups"], ins[0][0], eps=a["eps"], affine=a["affine"])

    def label(self, a):
        return f"groupnorm {a['num_groups']}"


@register
class LayerNorm(Op):
    """Layer normalization over the last dimension (``torch.nn.LayerNorm``): tokens, or channels-last maps."""

    name = "layernorm"
    category = "norm"
    macs_rule = "zero"
    torch_class = "LayerNorm"
    param_names = ("weight", "bias")
    args = (
        Arg("eps", FLOAT, 1e-5, "added to the variance for numerical stability", range=NON_NEGATIVE),
        Arg("affine", BOOL, True, "learnable per-element scale and shift"),
    )

    def check_layout(self, a, ins, layouts):
        channels_last_required(self.name, ins[0], layouts[0],
                               "use `layernorm2d()` to normalize the channels of a CxHxW map")

    def infer(self, a, ins):
        if not ins[0]:
            raise ShapeError("`layernorm` needs at least one dimension", "input is a scalar")
        return ins[0]

    def params(self, a, ins):
        return 2 * ins[0][-1] if a["affine"] else 0

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.LayerNorm(ins[0][-1], eps=a["eps"], elementwise_affine=a["affine"])

    def label(self, a):
        return "layernorm"


@register
class LayerNorm2d(Op):
    """Layer normalization over the channels of a CxHxW map at each position (torchvision's ``LayerNorm2d``)."""

    name = "layernorm2d"
    category = "norm"
    macs_rule = "zero"
    torch_class = "LayerNorm2d"
    param_names = ("weight", "bias")
    args = (Arg("eps", FLOAT, 1e-5, "added to the variance for numerical stability", range=NON_NEGATIVE),)

    def check_layout(self, a, ins, layouts):
        channels_first_required(self.name, ins[0], layouts[0])

    def infer(self, a, ins):
        expect_rank(self.name, ins[0], 3, SPATIAL)
        return ins[0]

    def params(self, a, ins):
        return 2 * ins[0][0]

    def build(self, a, ins, inplace=False):
        from .modules import LayerNorm2d
        return LayerNorm2d(ins[0][0], eps=a["eps"])

    def label(self, a):
        return "layernorm2d"


@register
class LocalResponseNorm(Op):
    """Local response normalization across channels (``torch.nn.LocalResponseNorm``), as in AlexNet."""

    name = "local_response_norm"
    category = "norm"
    macs_rule = "zero"
    torch_class = "LocalResponseNorm"
    args = (
        Arg("size", POS_INT, doc="number of neighbouring channels"),
        Arg("alpha", FLOAT, 1e-4, "multiplicative factor"),
        Arg("beta", FLOAT, 0.75, "exponent"),
        Arg("k", FLOAT, 1.0, "additive factor"),
    )

    def infer(self, a, ins):
        expect_rank(self.name, ins[0], 3, SPATIAL)
        c, h, w = ins[0]
        if (c + a["size"] - 1) * h * w > MAX_ELEMENTS:  # torch pads the channels by size - 1 first
            raise ShapeError(f"`local_response_norm` size {a['size']} pads the {c} channels to a tensor too large "
                             f"for torch (at most 2**40 elements a sample)", "size too large", arg="size")
        return ins[0]

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.LocalResponseNorm(a["size"], a["alpha"], a["beta"], a["k"])

    def label(self, a):
        return f"LRN {a['size']}"


@register
class Linear(Op):
    """Fully connected layer (``torch.nn.Linear``) on a flattened vector or on each token of a sequence.

    Applying it to a CxHxW feature map is an error: flatten first.
    """

    name = "linear"
    category = "linear"
    macs_rule = "formula"
    torch_class = "Linear"
    param_names = ("weight", "bias")
    args = (
        Arg("out_features", POS_INT, doc="size of each output vector"),
        Arg("bias", BOOL, True, "add a learnable bias"),
    )

    def infer(self, a, ins):
        x = ins[0]
        if not x:
            raise ShapeError("`linear` expects a vector or a token sequence, got a scalar", "input is a scalar")
        return x[:-1] + (a["out_features"],)

    def check_layout(self, a, ins, layouts):
        x = ins[0]
        if layouts[0] == "CHW":
            raise ShapeError(f"`linear` applied to a {fmt_shape(x)} feature map that was not flattened",
                             f"input is {fmt_shape(x)}", help="add `flatten()` before it")
        channels_last_required(self.name, x, layouts[0], "flatten first, or `permute` the channels last")

    def params(self, a, ins):
        return ins[0][-1] * a["out_features"] + (a["out_features"] if a["bias"] else 0)

    def macs(self, a, ins, out):
        return math.prod(ins[0][:-1]) * ins[0][-1] * a["out_features"]

    def window(self, a, ins, layouts):
        # on a flat vector every output sees every position; on tokens or channels-last maps, one position
        return GLOBAL if len(ins[0]) == 1 else super().window(a, ins, layouts)

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.Linear(ins[0][-1], a["out_features"], bias=a["bias"])

    def label(self, a):
        return f"linear {a['out_features']}"


# ------------------------------------------------------------------ pooling


class _PoolNd(_Spatial):
    """Max or average pooling over ``rank`` spatial axes; ``stride`` defaults to ``kernel_size``."""

    category = "pool"
    macs_rule = "zero"

    def infer(self, a, ins):
        x = ins[0]
        self.expect_map(x)
        k, p = a["kernel_size"], a["padding"]
        s = a["stride"] or k
        d = a.get("dilation", (1,) * self.rank)
        for i, axis in enumerate(self.axes):
            if p[i] * 2 > k[i]:
                raise ShapeError(f"`{self.name}` padding ({p[i]}) must be at most half the kernel size "
                                 f"({k[i]}) along {axis}", "padding too large", arg="padding")
        return (x[0],) + tuple(window_out(self.name, n, k[i], s[i], p[i], d[i], a["ceil_mode"], axis, x)
                               for i, (n, axis) in enumerate(zip(x[1:], self.axes)))

    def window(self, a, ins, layouts):
        return Window(a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"], a.get("dilation"))

    def label(self, a):
        s = f"{self.short_name()} {_size(a['kernel_size'])}"
        stride = a["stride"] or a["kernel_size"]
        if any(x != 1 for x in stride):
            s += f" /{_size(stride)}"
        return s


class _MaxPoolNd(_PoolNd):
    """Max pooling over ``rank`` spatial axes (``maxpool1d``, ``2d``, ``3d``)."""

    @classmethod
    def schema(cls, rank):
        return (
            Arg("kernel_size", pos_ints(rank), doc="window size"),
            Arg("stride", opt_pos_ints(rank), None, "stride (default: kernel_size)"),
            Arg("padding", nonneg_ints(rank), 0, "implicit -inf padding on both sides"),
            Arg("dilation", pos_ints(rank), 1, "spacing between window elements"),
            Arg("ceil_mode", BOOL, False, "use ceil instead of floor for the output size"),
        )

    def build(self, a, ins, inplace=False):
        from torch import nn
        return getattr(nn, self.torch_class)(_unpack(a["kernel_size"]), _unpack(a["stride"] or a["kernel_size"]),
                                             _unpack(a["padding"]), _unpack(a["dilation"]), ceil_mode=a["ceil_mode"])


class _AvgPoolNd(_PoolNd):
    """Average pooling over ``rank`` spatial axes (``avgpool1d``, ``2d``, ``3d``)."""

    @classmethod
    def schema(cls, rank):
        return (
            Arg("kernel_size", pos_ints(rank), doc="window size"),
            Arg("stride", opt_pos_ints(rank), None, "stride (default: kernel_size)"),
            Arg("padding", nonneg_ints(rank), 0, "implicit zero padding on both sides"),
            Arg("ceil_mode", BOOL, False, "use ceil instead of floor for the output size"),
            Arg("count_include_pad", BOOL, True, "include the zero padding in the average"),
        )

    def build(self, a, ins, inplace=False):
        from torch import nn
        return getattr(nn, self.torch_class)(_unpack(a["kernel_size"]), _unpack(a["stride"] or a["kernel_size"]),
                                             _unpack(a["padding"]), ceil_mode=a["ceil_mode"],
                                             count_include_pad=a["count_include_pad"])


@register
class MaxPool1d(_MaxPoolNd):
    """1-D max pooling over a CxL sequence (``torch.nn.MaxPool1d``). ``stride`` defaults to ``kernel_size``."""

    name = "maxpool1d"
    rank = 1
    torch_class = "MaxPool1d"


@register
class MaxPool2d(_MaxPoolNd):
    """2-D max pooling (``torch.nn.MaxPool2d``). ``stride`` defaults to ``kernel_size``."""

    name = "maxpool2d"
    rank = 2
    torch_class = "MaxPool2d"


@register
class MaxPool3d(_MaxPoolNd):
    """3-D max pooling over a CxDxHxW volume (``torch.nn.MaxPool3d``). ``stride`` defaults to ``kernel_size``."""

    name = "maxpool3d"
    rank = 3
    torch_class = "MaxPool3d"


@register
class AvgPool1d(_AvgPoolNd):
    """1-D average pooling over a CxL sequence (``torch.nn.AvgPool1d``). ``stride`` defaults to ``kernel_size``."""

    name = "avgpool1d"
    rank = 1
    torch_class = "AvgPool1d"


@register
class AvgPool2d(_AvgPoolNd):
    """2-D average pooling (``torch.nn.AvgPool2d``). ``stride`` defaults to ``kernel_size``."""

    name = "avgpool2d"
    rank = 2
    torch_class = "AvgPool2d"


@register
class AvgPool3d(_AvgPoolNd):
    """3-D average pooling over a CxDxHxW volume (``torch.nn.AvgPool3d``). ``stride`` defaults to ``kernel_size``."""

    name = "avgpool3d"
    rank = 3
    torch_class = "AvgPool3d"


class _AdaptivePoolNd(_Spatial):
    """Adaptive average or max pooling of ``rank`` spatial axes to a fixed output size."""

    category = "pool"
    macs_rule = "zero"

    @classmethod
    def schema(cls, rank):
        return (Arg("output_size", pos_ints(rank), doc=_per_axis(rank, f"output {_axes_phrase(rank)}")),)

    def infer(self, a, ins):
        self.expect_map(ins[0])
        return (ins[0][0],) + a["output_size"]

    def window(self, a, ins, layouts):
        size, out = ins[0][1:], a["output_size"]
        if all(o == 1 for o in out) and any(n != 1 for n in size):
            return GLOBAL
        if any(n % o for n, o in zip(size, out)):
            return UNDEFINED  # torch's windows then differ in size from one output to the next
        k = tuple(n // o for n, o in zip(size, out))
        return Window(k, k, (0, 0))

    def build(self, a, ins, inplace=False):
        from torch import nn
        return getattr(nn, self.torch_class)(_unpack(a["output_size"]))

    def label(self, a):
        return f"{self.short_name().replace('_', ' ')} {_size(a['output_size'])}"


@register
class AdaptiveAvgPool1d(_AdaptivePoolNd):
    """Adaptive average pooling of a CxL sequence to a fixed length (``torch.nn.AdaptiveAvgPool1d``)."""

    name = "adaptive_avgpool1d"
    rank = 1
    torch_class = "AdaptiveAvgPool1d"


@register
class AdaptiveAvgPool2d(_AdaptivePoolNd):
    """Adaptive average pooling to a fixed output size (``torch.nn.AdaptiveAvgPool2d``)."""

    name = "adaptive_avgpool2d"
    rank = 2
    torch_class = "AdaptiveAvgPool2d"


@register
class AdaptiveAvgPool3d(_AdaptivePoolNd):
    """Adaptive average pooling of a CxDxHxW volume to a fixed output size (``torch.nn.AdaptiveAvgPool3d``)."""

    name = "adaptive_avgpool3d"
    rank = 3
    torch_class = "AdaptiveAvgPool3d"


@register
class AdaptiveMaxPool1d(_AdaptivePoolNd):
    """Adaptive max pooling of a CxL sequence to a fixed length (``torch.nn.AdaptiveMaxPool1d``)."""

    name = "adaptive_maxpool1d"
    rank = 1
    torch_class = "AdaptiveMaxPool1d"


@register
class AdaptiveMaxPool2d(_AdaptivePoolNd):
    """Adaptive max pooling to a fixed output size (``torch.nn.AdaptiveMaxPool2d``)."""

    name = "adaptive_maxpool2d"
    rank = 2
    torch_class = "AdaptiveMaxPool2d"


@register
class AdaptiveMaxPool3d(_AdaptivePoolNd):
    """Adaptive max pooling of a CxDxHxW volume to a fixed output size (``torch.nn.AdaptiveMaxPool3d``)."""

    name = "adaptive_maxpool3d"
    rank = 3
    torch_class = "AdaptiveMaxPool3d"


# ------------------------------------------------------------------ placeholder


@register
class Identity(Op):
    """The input itself (``torch.nn.Identity``): a placeholder module that holds a slot in a sequence,
    like ``nn.Identity()`` in an ``nn.Sequential`` (or a classifier head that was removed), so the
    module paths of the layers after it stay as in the reference model.
    """

    name = "identity"
    category = "reshape"
    macs_rule = "zero"
    torch_class = "Identity"
    returns_view = True  # the output is the input tensor itself

    def infer(self, a, ins):
        return ins[0]

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.Identity()
