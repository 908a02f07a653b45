"""Element-wise activations: shape-preserving, no parameters, no MACs."""

from __future__ import annotations

from .registry import FLOAT, Arg, Op, choice, register


class _Activation(Op):
    """An activation is ``torch.nn.<torch_class>`` called with the op's arguments (and ``inplace``)."""

    category = "activation"
    macs_rule = "zero"
    can_inplace = True

    def infer(self, a, ins):
        return ins[0]

    def build(self, a, ins, inplace=False):
        from torch import nn
        kwargs = {arg.name: a[arg.name] for arg in self.args}
        if self.can_inplace:
            kwargs["inplace"] = inplace
        return getattr(nn, self.torch_class)(**kwargs)

    def function(self, a):
        """``relu(x)`` in an expression: the activation's torch function (no module)."""
        import torch
        from torch.nn import functional as F
        fn = getattr(torch, self.name) if self.name in ("tanh", "sigmoid") else getattr(F, self.name)
        return fn, (), {arg.name: a[arg.name] for arg in self.args}


@register
class ReLU(_Activation):
    """Rectified linear unit, ``max(x, 0)`` (``torch.nn.ReLU``); runs in place when nothing else reads its input."""

    name = "relu"
    torch_class = "ReLU"


@register
class Tanh(_Activation):
    """Hyperbolic tangent (``torch.nn.Tanh``)."""

    name = "tanh"
    torch_class = "Tanh"
    can_inplace = False


@register
class ReLU6(_Activation):
    """ReLU capped at 6, ``min(max(x, 0), 6)`` (``torch.nn.ReLU6``), as in MobileNet v2."""

    name = "relu6"
    torch_class = "ReLU6"


@register
class LeakyReLU(_Activation):
    """Leaky ReLU, ``x if x > 0 else negative_slope * x`` (``torch.nn.LeakyReLU``), as in YOLO heads."""

    name = "leaky_relu"
    torch_class = "LeakyReLU"
    args = (Arg("negative_slope", FLOAT, 0.01, "slope for negative inputs"),)


    def label(self, a):
        return f"leaky_relu {a['negative_slope']:g}"


@register
class SiLU(_Activation):
    """Sigmoid-weighted linear unit (swish), ``x * sigmoid(x)`` (``torch.nn.SiLU``), as in EfficientNet."""

    name = "silu"
    torch_class = "SiLU"


@register
class Hardswish(_Activation):
    """Hard swish, ``x * relu6(x + 3) / 6`` (``torch.nn.Hardswish``), as in MobileNet v3."""

    name = "hardswish"
    torch_class = "Hardswish"


@register
class GELU(_Activation):
    """Gaussian error linear unit (``torch.nn.GELU``), as in ViT and ConvNeXt; ``approximate = "tanh"`` optional."""

    name = "gelu"
    torch_class = "GELU"
    can_inplace = False
    args = (Arg("approximate", choice("none", "tanh"), "none",
                "the exact erf form, or the tanh approximation"),)


@register
class Sigmoid(_Activation):
    """Logistic sigmoid, ``1 / (1 + exp(-x))`` (``torch.nn.Sigmoid``), e.g. squeeze-excitation gates."""

    name = "sigmoid"
    torch_class = "Sigmoid"
    can_inplace = False


@register
class Hardsigmoid(_Activation):
    """Hard sigmoid, ``relu6(x + 3) / 6`` (``torch.nn.Hardsigmoid``), MobileNet v3's gate."""

    name = "hardsigmoid"
    torch_class = "Hardsigmoid"
    can_inplace = False

