"""Layers with weights or windows: convolution, normalization, linear, pooling."""

from __future__ import annotations

import math

from .registry import (BOOL, FLOAT, NONNEG_PAIR, OPT_POS_PAIR, POS_INT, POS_PAIR, Arg, Op, ShapeError,
                       channels_first_required, channels_last_required, expect_rank, fmt_shape, register, window_out)

from .registry import GLOBAL, UNDEFINED, Window

SPATIAL = "a CxHxW feature map"


def _hw(a: dict, key: str) -> str:
    kh, kw = a[key]
    return f"{kh}" if kh == kw else f"{kh}x{kw}"


@register
class Conv2d(Op):
    """2-D convolution (``torch.nn.Conv2d``). Input channels are inferred from the input.

    ``groups`` must divide both the input and output channels; ``groups == in.channels``
    gives a depthwise convolution.
    """

    name = "conv2d"
    category = "conv"
    macs_rule = "formula"
    torch_class = "Conv2d"
    param_names = ("weight", "bias")
    args = (
        Arg("out_channels", POS_INT, doc="number of output channels"),
        Arg("kernel_size", POS_PAIR, doc="kernel size, an int or [kh, kw]"),
        Arg("stride", POS_PAIR, 1, "stride"),
        Arg("padding", NONNEG_PAIR, 0, "zero padding added to both sides"),
        Arg("dilation", POS_PAIR, 1, "spacing between kernel elements"),
        Arg("groups", POS_INT, 1, "number of blocked connections from input to output channels"),
        Arg("bias", BOOL, True, "add a learnable bias"),
    )

    def infer(self, a, ins):
        x = ins[0]
        expect_rank(self.name, x, 3, SPATIAL)
        c, h, w = x
        g = a["groups"]
        if c % g:
            raise ShapeError(f"input channels ({c}) of `conv2d` are not divisible by groups ({g})",
                             f"{c} input channels, groups = {g}", arg="groups")
        if a["out_channels"] % g:
            raise ShapeError(f"out_channels ({a['out_channels']}) of `conv2d` is not divisible by groups ({g})",
                             f"{a['out_channels']} output channels, groups = {g}", arg="groups")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel_size"], a["stride"], a["padding"], a["dilation"]
        return (a["out_channels"], window_out(self.name, h, kh, sh, ph, dh, False, "height", x),
                window_out(self.name, w, kw, sw, pw, dw, False, "width", x))

    def check_layout(self, a, ins, layouts):
        channels_first_required(self.name, ins[0], layouts[0])

    def params(self, a, ins):
        kh, kw = a["kernel_size"]
        n = a["out_channels"] * (ins[0][0] // a["groups"]) * kh * kw
        return n + (a["out_channels"] if a["bias"] else 0)

    def macs(self, a, ins, out):
        kh, kw = a["kernel_size"]
        return a["out_channels"] * (ins[0][0] // a["groups"]) * kh * kw * out[1] * out[2]

    def window(self, a, ins, layouts):
        return Window(a["kernel_size"], a["stride"], a["padding"], a["dilation"])

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.Conv2d(ins[0][0], a["out_channels"], a["kernel_size"], a["stride"], a["padding"],
                         a["dilation"], a["groups"], a["bias"])

    def label(self, a):
        s = f"conv {_hw(a, 'kernel_size')}"
        if a["stride"] != (1, 1):
            s += f" /{_hw(a, 'stride')}"
        s += f", {a['out_channels']}"
        if a["groups"] != 1:
            s += f", g{a['groups']}"
        return s


@register
class BatchNorm2d(Op):
    """Batch normalization over the channels of a feature map (``torch.nn.BatchNorm2d``)."""

    name = "batchnorm2d"
    category = "norm"
    macs_rule = "zero"
    torch_class = "BatchNorm2d"
    param_names = ("weight", "bias")
    args = (
        Arg("eps", FLOAT, 1e-5, "added to the variance for numerical stability"),
        Arg("momentum", FLOAT, 0.1, "running statistics momentum"),
        Arg("affine", BOOL, True, "learnable scale and shift"),
    )

    def infer(self, a, ins):
        expect_rank(self.name, ins[0], 3, SPATIAL)
        return ins[0]

    def params(self, a, ins):
        return 2 * ins[0][0] if a["affine"] else 0

    def buffers(self, a, ins):
        return 2 * ins[0][0] + 1

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.BatchNorm2d(ins[0][0], eps=a["eps"], momentum=a["momentum"], affine=a["affine"])

    def label(self, a):
        return "batchnorm"


@register
class ConvTranspose2d(Op):
    """2-D transposed convolution (``torch.nn.ConvTranspose2d``), e.g. U-Net's learned 2x upsampling.

    Output size: ``(in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``.
    """

    name = "conv_transpose2d"
    category = "conv"
    macs_rule = "formula"
    torch_class = "ConvTranspose2d"
    param_names = ("weight", "bias")
    args = (
        Arg("out_channels", POS_INT, doc="number of output channels"),
        Arg("kernel_size", POS_PAIR, doc="kernel size, an int or [kh, kw]"),
        Arg("stride", POS_PAIR, 1, "stride"),
        Arg("padding", NONNEG_PAIR, 0, "removed from both sides of the output"),
        Arg("output_padding", NONNEG_PAIR, 0, "added to one side of the output"),
        Arg("groups", POS_INT, 1, "number of blocked connections from input to output channels"),
        Arg("bias", BOOL, True, "add a learnable bias"),
        Arg("dilation", POS_PAIR, 1, "spacing between kernel elements"),
    )

    def check_layout(self, a, ins, layouts):
        channels_first_required(self.name, ins[0], layouts[0])

    def infer(self, a, ins):
        x = ins[0]
        expect_rank(self.name, x, 3, SPATIAL)
        c = x[0]
        g = a["groups"]
        if c % g or a["out_channels"] % g:
            raise ShapeError(f"channels ({c} in, {a['out_channels']} out) of `conv_transpose2d` are not divisible "
                             f"by groups ({g})", f"groups = {g}", arg="groups")
        out = [a["out_channels"]]
        for i, axis in enumerate(("height", "width")):
            k, s_, p, op, d = (a["kernel_size"][i], a["stride"][i], a["padding"][i], a["output_padding"][i],
                               a["dilation"][i])
            if op >= max(s_, d):
                raise ShapeError(f"`conv_transpose2d` output_padding ({op}) must be smaller than stride or "
                                 f"dilation along {axis}", "output_padding too large", arg="output_padding")
            n = (x[i + 1] - 1) * s_ - 2 * p + d * (k - 1) + op + 1
            if n < 1:
                raise ShapeError(f"`conv_transpose2d` output {axis} would be {n}", f"{axis} becomes {n}",
                                 arg="padding")
            out.append(n)
        return tuple(out)

    def params(self, a, ins):
        kh, kw = a["kernel_size"]
        n = ins[0][0] * (a["out_channels"] // a["groups"]) * kh * kw
        return n + (a["out_channels"] if a["bias"] else 0)

    def macs(self, a, ins, out):
        kh, kw = a["kernel_size"]  # every input pixel scatters a kernel into every output channel of its group
        return ins[0][0] * (a["out_channels"] // a["groups"]) * kh * kw * ins[0][1] * ins[0][2]

    def window(self, a, ins, layouts):
        return UNDEFINED  # a fractional stride: upsampling has no receptive field in the Distill sense

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.ConvTranspose2d(ins[0][0], a["out_channels"], a["kernel_size"], a["stride"], a["padding"],
                                  a["output_padding"], a["groups"], a["bias"], a["dilation"])

    def label(self, a):
        s = f"conv_transpose {_hw(a, 'kernel_size')}"
        if a["stride"] != (1, 1):
            s += f" x{_hw(a, 'stride')}"
        return s + f", {a['out_channels']}"


@register
class LayerNorm(Op):
    """Layer normalization over the last dimension (``torch.nn.LayerNorm``): tokens, or channels-last maps."""

    name = "layernorm"
    category = "norm"
    macs_rule = "zero"
    torch_class = "LayerNorm"
    param_names = ("weight", "bias")
    args = (
        Arg("eps", FLOAT, 1e-5, "added to the variance for numerical stability"),
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
    args = (Arg("eps", FLOAT, 1e-5, "added to the variance for numerical stability"),)

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


class _Pool2d(Op):
    category = "pool"
    macs_rule = "zero"

    def window(self, a, ins, layouts):
        return Window(a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"], a.get("dilation", (1, 1)))

    def _window(self, a, ins):
        expect_rank(self.name, ins[0], 3, SPATIAL)
        c, h, w = ins[0]
        k = a["kernel_size"]
        s = a["stride"] or k
        p = a["padding"]
        d = a.get("dilation", (1, 1))
        for i, axis in enumerate(("height", "width")):
            if p[i] * 2 > k[i]:
                raise ShapeError(f"`{self.name}` padding ({p[i]}) must be at most half the kernel size "
                                 f"({k[i]}) along {axis}", "padding too large", arg="padding")
        return (c, window_out(self.name, h, k[0], s[0], p[0], d[0], a["ceil_mode"], "height", ins[0]),
                window_out(self.name, w, k[1], s[1], p[1], d[1], a["ceil_mode"], "width", ins[0]))

    def label(self, a):
        s = f"{self.name.replace('2d', '')} {_hw(a, 'kernel_size')}"
        stride = a["stride"] or a["kernel_size"]
        if stride != (1, 1):
            s += f" /{stride[0] if stride[0] == stride[1] else f'{stride[0]}x{stride[1]}'}"
        return s


@register
class MaxPool2d(_Pool2d):
    """2-D max pooling (``torch.nn.MaxPool2d``). ``stride`` defaults to ``kernel_size``."""

    name = "maxpool2d"
    torch_class = "MaxPool2d"
    args = (
        Arg("kernel_size", POS_PAIR, doc="window size"),
        Arg("stride", OPT_POS_PAIR, None, "stride (default: kernel_size)"),
        Arg("padding", NONNEG_PAIR, 0, "implicit -inf padding on both sides"),
        Arg("dilation", POS_PAIR, 1, "spacing between window elements"),
        Arg("ceil_mode", BOOL, False, "use ceil instead of floor for the output size"),
    )

    def infer(self, a, ins):
        return self._window(a, ins)

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.MaxPool2d(_unpair(a["kernel_size"]), _unpair(a["stride"] or a["kernel_size"]),
                            _unpair(a["padding"]), _unpair(a["dilation"]), ceil_mode=a["ceil_mode"])


@register
class AvgPool2d(_Pool2d):
    """2-D average pooling (``torch.nn.AvgPool2d``). ``stride`` defaults to ``kernel_size``."""

    name = "avgpool2d"
    torch_class = "AvgPool2d"
    args = (
        Arg("kernel_size", POS_PAIR, doc="window size"),
        Arg("stride", OPT_POS_PAIR, None, "stride (default: kernel_size)"),
        Arg("padding", NONNEG_PAIR, 0, "implicit zero padding on both sides"),
        Arg("ceil_mode", BOOL, False, "use ceil instead of floor for the output size"),
        Arg("count_include_pad", BOOL, True, "include the zero padding in the average"),
    )

    def infer(self, a, ins):
        return self._window(a, ins)

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.AvgPool2d(_unpair(a["kernel_size"]), _unpair(a["stride"] or a["kernel_size"]),
                            _unpair(a["padding"]), ceil_mode=a["ceil_mode"],
                            count_include_pad=a["count_include_pad"])


@register
class AdaptiveAvgPool2d(Op):
    """Adaptive average pooling to a fixed output size (``torch.nn.AdaptiveAvgPool2d``)."""

    name = "adaptive_avgpool2d"
    category = "pool"
    macs_rule = "zero"
    torch_class = "AdaptiveAvgPool2d"
    args = (Arg("output_size", POS_PAIR, doc="output height and width, an int or [h, w]"),)

    def infer(self, a, ins):
        expect_rank(self.name, ins[0], 3, SPATIAL)
        return (ins[0][0],) + a["output_size"]

    def window(self, a, ins, layouts):
        (h, w), (oh, ow) = ins[0][1:], a["output_size"]
        if (oh, ow) == (1, 1) and (h, w) != (1, 1):
            return GLOBAL
        if h % oh or w % ow:
            return UNDEFINED  # torch's windows then differ in size from one output to the next
        return Window((h // oh, w // ow), (h // oh, w // ow), (0, 0))

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.AdaptiveAvgPool2d(_unpair(a["output_size"]))

    def label(self, a):
        return f"adaptive avgpool {_hw(a, 'output_size')}"


def _unpair(p):
    """Give torch the same int-or-tuple form torchvision uses (so module reprs match)."""
    return p[0] if p[0] == p[1] else tuple(p)
