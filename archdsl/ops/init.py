"""Weight-initialization functions usable in `init` rules, each defined once.

``init conv2d.weight = kaiming_normal(mode = "fan_out", nonlinearity = "relu")`` calls
``torch.nn.init.kaiming_normal_`` on the ``weight`` of every ``conv2d`` module in scope.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

from .registry import ArgType, ArgTypeError, Arg, _float, choice


def _finite(v):
    v = _float(v)
    if not math.isfinite(v):
        raise ArgTypeError("a finite number")
    return v


def _scale(v):
    v = _finite(v)
    if v < 0:
        raise ArgTypeError("a finite number >= 0")
    return v


FLOAT = ArgType("float (finite)", _finite)
SCALE = ArgType("float >= 0 (finite)", _scale)


NONLINEARITY = choice("relu", "leaky_relu", "linear", "tanh", "sigmoid", "selu", "conv2d")
FAN_MODE = choice("fan_in", "fan_out")


@dataclass(frozen=True)
class InitFn:
    """An initialization function: its schema and the ``torch.nn.init`` function it calls."""

    name: str
    torch_fn: str
    args: tuple[Arg, ...]
    doc: str

    def resolve_args(self, positional, keyword):
        from .registry import Op
        shim = type("InitSchema", (Op,), {"name": self.name, "args": self.args})()
        args, problems = shim.resolve_args(positional, keyword)
        if not problems and "a" in args and "b" in args and args["a"] > args["b"]:
            problems.append(("b", f"`{self.name}` needs a <= b, got a = {args['a']:g} and b = {args['b']:g}"))
        return args, problems

    def apply(self, tensor, args: dict) -> None:
        import torch
        fn = getattr(torch.nn.init, self.torch_fn)
        fn(tensor, **args)


INIT_FUNCS: dict[str, InitFn] = {f.name: f for f in [
    InitFn("kaiming_normal", "kaiming_normal_",
           (Arg("a", FLOAT, 0.0), Arg("mode", FAN_MODE, "fan_in"), Arg("nonlinearity", NONLINEARITY, "leaky_relu")),
           "He normal initialization"),
    InitFn("kaiming_uniform", "kaiming_uniform_",
           (Arg("a", FLOAT, 0.0), Arg("mode", FAN_MODE, "fan_in"), Arg("nonlinearity", NONLINEARITY, "leaky_relu")),
           "He uniform initialization"),
    InitFn("xavier_uniform", "xavier_uniform_", (Arg("gain", SCALE, 1.0),), "Glorot uniform initialization"),
    InitFn("xavier_normal", "xavier_normal_", (Arg("gain", SCALE, 1.0),), "Glorot normal initialization"),
    InitFn("normal", "normal_", (Arg("mean", FLOAT, 0.0), Arg("std", SCALE, 1.0)), "normal distribution"),
    InitFn("uniform", "uniform_", (Arg("a", FLOAT, 0.0), Arg("b", FLOAT, 1.0)), "uniform distribution on [a, b)"),
    InitFn("trunc_normal", "trunc_normal_",
           (Arg("mean", FLOAT, 0.0), Arg("std", SCALE, 1.0), Arg("a", FLOAT, -2.0), Arg("b", FLOAT, 2.0)),
           "normal distribution truncated to [a, b]"),
    InitFn("constant", "constant_", (Arg("val", FLOAT),), "a constant value"),
    InitFn("zeros", "zeros_", (), "all zeros"),
    InitFn("ones", "ones_", (), "all ones"),
]}
