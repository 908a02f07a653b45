"""Element-wise activations: shape-preserving, no parameters, no MACs."""

from __future__ import annotations

from .registry import Op, register


class _Activation(Op):
    category = "activation"
    can_inplace = True

    def infer(self, a, ins):
        return ins[0]


@register
class ReLU(_Activation):
    """Rectified linear unit, ``max(x, 0)`` (``torch.nn.ReLU``); runs in place when nothing else reads its input."""

    name = "relu"
    torch_class = "ReLU"

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.ReLU(inplace=inplace)


@register
class Tanh(_Activation):
    """Hyperbolic tangent (``torch.nn.Tanh``)."""

    name = "tanh"
    torch_class = "Tanh"
    can_inplace = False

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.Tanh()
