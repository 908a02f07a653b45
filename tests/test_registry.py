"""Tests parametrized over the op registry: every op's shape rule and parameter count
agree with torch itself, and every op is documented and has sample cases here."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import fx, nn

from archdsl.ops import all_ops
from archdsl.ops.registry import ShapeError

# op name -> list of (call arguments as the spec would give them, input shapes)
SAMPLES = {
    "conv2d": [
        ({"out_channels": 8, "kernel_size": 3}, [(4, 9, 11)]),
        ({"out_channels": 6, "kernel_size": [3, 5], "stride": 2, "padding": [1, 2], "bias": False}, [(4, 17, 13)]),
        ({"out_channels": 8, "kernel_size": 3, "dilation": 2, "padding": 2}, [(4, 10, 10)]),
        ({"out_channels": 8, "kernel_size": 3, "groups": 4, "padding": 1}, [(4, 7, 7)]),
        ({"out_channels": 12, "kernel_size": 1, "groups": 2, "stride": 3}, [(6, 8, 5)]),
    ],
    "batchnorm2d": [({}, [(5, 3, 4)]), ({"affine": False, "eps": 1e-3}, [(2, 3, 3)])],
    "local_response_norm": [({"size": 5}, [(8, 4, 4)]), ({"size": 2, "alpha": 1e-3, "beta": 0.5, "k": 2.0}, [(3, 2, 2)])],
    "linear": [({"out_features": 7}, [(12,)]), ({"out_features": 5, "bias": False}, [(3, 9)])],
    "maxpool2d": [
        ({"kernel_size": 3, "stride": 2}, [(3, 13, 12)]),
        ({"kernel_size": 3, "stride": 2, "padding": 1}, [(3, 112, 112)]),
        ({"kernel_size": 3, "stride": 2, "ceil_mode": True}, [(3, 14, 15)]),
        ({"kernel_size": 2, "dilation": 2}, [(2, 9, 9)]),
    ],
    "avgpool2d": [
        ({"kernel_size": 2}, [(3, 9, 8)]),
        ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}, [(3, 10, 7)]),
    ],
    "adaptive_avgpool2d": [({"output_size": 1}, [(4, 7, 9)]), ({"output_size": [3, 2]}, [(4, 7, 9)])],
    "relu": [({}, [(3, 4, 4)]), ({}, [(10,)])],
    "tanh": [({}, [(3, 4, 4)])],
    "flatten": [({}, [(3, 4, 5)]), ({"start_dim": 2}, [(3, 4, 5)]), ({"start_dim": 1, "end_dim": 2}, [(3, 4, 5)])],
    "dropout": [({"p": 0.2}, [(16,)])],
    "add": [({}, [(3, 4, 4), (3, 4, 4)]), ({}, [(8,), (8,), (8,)])],
    "concat": [({}, [(3, 4, 4), (5, 4, 4)]), ({"dim": -1}, [(3, 4, 2), (3, 4, 6), (3, 4, 1)])],
    "mul": [({}, [(3, 4, 4), (3, 4, 4)]), ({}, [(3, 1, 1), (3, 4, 5)]), ({}, [(6,), (2, 6)])],
    "relu6": [({}, [(3, 4, 4)])],
    "leaky_relu": [({}, [(3, 4, 4)]), ({"negative_slope": 0.1}, [(7,)])],
    "silu": [({}, [(3, 4, 4)])],
    "hardswish": [({}, [(3, 4, 4)])],
    "gelu": [({}, [(5, 8)]), ({"approximate": "tanh"}, [(3, 4, 4)])],
    "sigmoid": [({}, [(3, 1, 1)])],
    "hardsigmoid": [({}, [(3, 1, 1)])],
    "conv_transpose2d": [
        ({"out_channels": 4, "kernel_size": 2, "stride": 2}, [(8, 5, 7)]),
        ({"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1, "groups": 2},
         [(4, 5, 6)]),
        ({"out_channels": 3, "kernel_size": [3, 1], "dilation": 2, "bias": False}, [(2, 4, 4)]),
    ],
    "layernorm": [({}, [(5, 8)]), ({"eps": 1e-6}, [(4, 4, 6)]), ({"affine": False}, [(9,)])],
    "layernorm2d": [({}, [(6, 3, 4)]), ({"eps": 1e-6}, [(2, 5, 5)])],
    "permute": [({"dims": [0, 2, 3, 1]}, [(3, 4, 5)]), ({"dims": [0, 2, 1]}, [(6, 7)])],
    "reshape": [({"shape": [3, 1, 1]}, [(3,)]), ({"shape": [-1, 4]}, [(2, 4, 4)])],
    "select": [({"dim": 1, "index": 0}, [(5, 8)]), ({"dim": -1, "index": -1}, [(3, 4, 5)])],
    "narrow": [({"dim": 1, "start": 3, "length": 3}, [(6, 3, 3)]), ({"dim": -1, "start": -2, "length": 2}, [(3, 4, 5)]),
               ({"dim": 2, "start": 1, "length": 2}, [(3, 4, 5)])],
    "interpolate": [({"size": [7, 9]}, [(3, 4, 5)]), ({"size": 8, "mode": "bilinear", "align_corners": False},
                                                       [(2, 5, 5)]),
                    ({"scale_factor": 2.0}, [(3, 4, 5)]), ({"scale_factor": 1.5, "mode": "bilinear"}, [(2, 5, 7)])],
    "stochastic_depth": [({"p": 0.2}, [(3, 4, 4)]), ({"p": 0.5, "mode": "batch"}, [(8,)])],
    "channel_shuffle": [({"groups": 2}, [(6, 3, 3)])],
    "mha": [({"num_heads": 2}, [(5, 8)]), ({"num_heads": 4, "bias": False, "dropout": 0.1}, [(3, 16)])],
    "class_token": [({}, [(4, 6)])],
    "pos_embedding": [({}, [(5, 6)]), ({"std": 1.0}, [(2, 3)])],
    "layer_scale": [({}, [(4, 3, 3)]), ({"value": 0.5}, [(5, 6)])],
    # channels-last HxWxC maps; sizes that are not whole windows (padding) and shifts
    "shifted_window_attention": [
        ({"num_heads": 2, "window_size": 3}, [(5, 7, 8)]),
        ({"num_heads": 2, "window_size": 2, "shift_size": 1}, [(4, 6, 8)]),
        ({"num_heads": 4, "window_size": [3, 2], "shift_size": [1, 1], "qkv_bias": False}, [(7, 5, 8)]),
        ({"num_heads": 2, "window_size": 4, "shift_size": 2, "v2": True}, [(6, 9, 6)]),
    ],
    "patch_merge": [({}, [(4, 6, 3)]), ({}, [(5, 7, 2)])],
    # 1-D ops take CxL sequences, 3-D ops CxDxHxW volumes
    "conv1d": [
        ({"out_channels": 8, "kernel_size": 3}, [(4, 20)]),
        ({"out_channels": 6, "kernel_size": [5], "stride": 2, "padding": 2, "bias": False}, [(4, 17)]),
        ({"out_channels": 8, "kernel_size": 3, "dilation": 2, "padding": 2}, [(4, 10)]),
        ({"out_channels": 8, "kernel_size": 3, "groups": 4, "padding": 1}, [(4, 7)]),
        ({"out_channels": 12, "kernel_size": 1, "groups": 2, "stride": 3}, [(6, 8)]),
    ],
    "conv3d": [
        ({"out_channels": 8, "kernel_size": 3}, [(4, 5, 7, 6)]),
        ({"out_channels": 6, "kernel_size": [3, 5, 1], "stride": [1, 2, 2], "padding": [1, 2, 0], "bias": False},
         [(4, 6, 9, 8)]),
        ({"out_channels": 8, "kernel_size": 3, "dilation": [1, 2, 2], "padding": [1, 2, 2]}, [(4, 4, 6, 6)]),
        ({"out_channels": 8, "kernel_size": 3, "groups": 4, "padding": 1, "stride": 2}, [(4, 5, 5, 5)]),
        ({"out_channels": 6, "kernel_size": 1, "groups": 2}, [(4, 2, 3, 3)]),
    ],
    "conv_transpose1d": [
        ({"out_channels": 4, "kernel_size": 2, "stride": 2}, [(8, 5)]),
        ({"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1, "groups": 2},
         [(4, 6)]),
        ({"out_channels": 3, "kernel_size": 3, "dilation": 2, "bias": False}, [(2, 4)]),
    ],
    "conv_transpose3d": [
        ({"out_channels": 4, "kernel_size": 2, "stride": 2}, [(8, 3, 4, 5)]),
        ({"out_channels": 6, "kernel_size": [3, 3, 1], "stride": [1, 2, 2], "padding": [1, 1, 0],
          "output_padding": [0, 1, 1], "groups": 2}, [(4, 3, 4, 4)]),
        ({"out_channels": 3, "kernel_size": 3, "dilation": 2, "bias": False}, [(2, 2, 3, 3)]),
    ],
    "batchnorm1d": [({}, [(5,)]), ({}, [(5, 7)]), ({"affine": False, "eps": 1e-3, "momentum": 0.2}, [(3, 4)])],
    "batchnorm3d": [({}, [(4, 2, 3, 3)]), ({"affine": False}, [(2, 3, 2, 2)])],
    "groupnorm": [({"num_groups": 2}, [(6, 4, 4)]), ({"num_groups": 3, "eps": 1e-6, "affine": False}, [(6, 10)]),
                  ({"num_groups": 4}, [(8, 2, 3, 3)]), ({"num_groups": 1}, [(5,)]), ({"num_groups": 6}, [(6, 3, 3)])],
    "maxpool1d": [
        ({"kernel_size": 3, "stride": 2}, [(3, 13)]),
        ({"kernel_size": 3, "stride": 2, "padding": 1}, [(3, 20)]),
        ({"kernel_size": 3, "stride": 2, "ceil_mode": True}, [(2, 14)]),
        ({"kernel_size": 2, "dilation": 2}, [(2, 9)]),
    ],
    "maxpool3d": [
        ({"kernel_size": 2}, [(2, 4, 6, 7)]),
        ({"kernel_size": [1, 3, 3], "stride": [1, 2, 2], "padding": [0, 1, 1]}, [(3, 4, 9, 9)]),
        ({"kernel_size": 3, "stride": 2, "ceil_mode": True}, [(2, 6, 7, 8)]),
        ({"kernel_size": 2, "stride": 1, "dilation": 2}, [(1, 5, 5, 5)]),
    ],
    "avgpool1d": [
        ({"kernel_size": 2}, [(3, 9)]),
        ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}, [(3, 10)]),
    ],
    "avgpool3d": [
        ({"kernel_size": 2}, [(3, 4, 5, 6)]),
        ({"kernel_size": [1, 3, 3], "stride": [1, 2, 2], "padding": [0, 1, 1], "ceil_mode": True,
          "count_include_pad": False}, [(2, 3, 7, 6)]),
    ],
    "adaptive_avgpool1d": [({"output_size": 1}, [(4, 9)]), ({"output_size": 4}, [(4, 10)])],
    "adaptive_avgpool3d": [({"output_size": 1}, [(3, 4, 5, 6)]), ({"output_size": [2, 3, 1]}, [(3, 4, 7, 5)])],
    "adaptive_maxpool1d": [({"output_size": 1}, [(4, 9)]), ({"output_size": [3]}, [(4, 10)])],
    "adaptive_maxpool2d": [({"output_size": 1}, [(4, 7, 9)]), ({"output_size": [3, 2]}, [(4, 7, 9)]),
                           ({"output_size": 2}, [(3, 8, 8)])],
    "adaptive_maxpool3d": [({"output_size": 1}, [(3, 4, 5, 6)]), ({"output_size": [2, 3, 1]}, [(3, 4, 7, 5)])],
    "identity": [({}, [(3, 4, 4)]), ({}, [(10,)]), ({}, [(2, 3, 4, 5)])],
}


class U(tuple):
    """A sample input without the batch dim (a parameter or buffer), for ops with full shapes."""


SAMPLES.update({
    "add": [({}, [(3, 4, 4), (3, 4, 4)]), ({}, [(8,), (8,), (8,)]), ({}, [(3, 1, 4), (1, 5, 1)]),
            ({}, [(3, 4, 4), U((4, 4))]), ({"scalar": 1.5}, [(3, 4)])],
    "sub": [({}, [(3, 4, 4), (3, 1, 1)]), ({}, [(5, 6), U((6,))]), ({"scalar": 1.0, "reverse": True}, [(4,)])],
    # (a batched 6 times a batched 2x6 does not broadcast in torch: the batch would meet the 2)
    "mul": [({}, [(3, 4, 4), (3, 4, 4)]), ({}, [(3, 1, 1), (3, 4, 5)]), ({}, [U((6,)), (2, 6)]),
            ({"scalar": 0.5}, [(2, 3)])],
    "div": [({}, [(3, 4, 4), (3, 4, 4)]), ({"scalar": 2.0}, [(5,)]), ({"scalar": 1.0, "reverse": True}, [(5,)])],
    "neg": [({}, [(3, 4)])],
    "matmul": [({}, [(3, 4, 5), (3, 5, 6)]), ({}, [(2, 4, 5), U((5, 3))]), ({}, [(1, 4, 5), (3, 5, 2)])],
    "transpose": [({"dim0": -2, "dim1": -1}, [(3, 4, 5)]), ({"dim0": 1, "dim1": 2}, [(3, 4)])],
    "softmax": [({"dim": 1}, [(3, 4, 4)]), ({"dim": -1}, [(5, 6)])],
    "mean": [({"dim": [2, 3]}, [(3, 4, 5)]), ({"dim": 1, "keepdim": True}, [(3, 4)])],
    "sum": [({"dim": [2, 3]}, [(3, 4, 5)]), ({"dim": -1, "keepdim": True}, [(3, 4)])],
    "amax": [({"dim": 1}, [(3, 4, 5)])],
    "amin": [({"dim": [1, 2], "keepdim": True}, [(3, 4, 5)])],
    "stack": [({}, [(3, 4), (3, 4)]), ({"dim": -1}, [(2, 3), (2, 3), (2, 3)])],
    "index": [({}, [U((49, 2)), U((16, 16))]), ({}, [(10, 3), U((4,))]), ({"dim": 2}, [(3, 6), U((2, 2))])],
    "sdpa": [({}, [(2, 5, 4), (2, 6, 4), (2, 6, 3)]), ({"scale": 0.3}, [(2, 5, 4), (2, 5, 4), (2, 5, 4), U((2, 5, 5))]),
             ({"causal": True}, [(4, 8), (4, 8), (4, 8)])],
    "parameter": [({"shape": [3, 4]}, []), ({"shape": [5], "value": 1.0}, [])],
    "buffer": [({"values": [[0, 1], [2, 3]]}, []), ({"values": [0.5, 1.5], "persistent": False}, [])],
    "exp": [({}, [(3, 4)])],
    "log": [({}, [(3, 4)])],
    "clamp": [({"max": 0.5}, [(3, 4)]), ({"min": -2.0, "max": 2.0}, [(2, 3, 3)])],
    "normalize": [({}, [(3, 4)]), ({"dim": 1}, [(3, 4, 4)])],
    "roll": [({"shifts": [1, -2], "dims": [1, 2]}, [(3, 4, 5)])],
    "pad": [({"pad": [1, 0, 0, 2]}, [(3, 4, 5)]), ({"pad": [2, 2], "value": -1.0}, [(3,)])],
    "merge_batch": [({}, [(4, 3, 5)])],
    "split_batch": [({"n": 2}, [(3, 5)])],
})

#: attributes set by the elaborator rather than written as op arguments (`x * 0.5`: a number operand)
_INTERNAL = ("scalar", "reverse")


def hook(op, shapes):
    """The sample shapes as the op's hooks see them (full shapes for ops with ``full_shapes``)."""
    from archdsl.ops.registry import BATCH
    if not op.full_shapes:
        return list(shapes)
    return [tuple(s) if isinstance(s, U) else (BATCH,) + tuple(s) for s in shapes]


def per_sample(op, shape):
    """A hook's output shape without the batch dim (for comparing with torch's ``out.shape[1:]``)."""
    from archdsl.ops.registry import is_batch
    if op.full_shapes:
        return tuple(shape[1:]) if shape and is_batch(shape[0]) else None
    return tuple(shape)


def sample_inputs(op, attrs, shapes, batch=2, device=None, dtype=None):
    """Input tensors for a sample: batched ones with ``batch`` samples; an ``index`` gets valid indices."""
    xs = []
    if op.name == "split_batch":  # the batch holds n items per sample
        batch *= attrs["n"]
    for k, s in enumerate(shapes):
        if op.name == "index" and k == 1:
            full = hook(op, shapes)[0]
            d = attrs["dim"] if attrs["dim"] is not None else (0 if isinstance(shapes[0], U) else 1)
            xs.append(torch.randint(0, full[d], tuple(s), device=device))
        elif isinstance(s, U):
            xs.append(torch.randn(*s, device=device, dtype=dtype))
        else:
            xs.append(torch.randn(batch, *s, device=device, dtype=dtype))
    return xs


CASES = [(name, i) for name in sorted(all_ops()) for i in range(len(SAMPLES.get(name, [None])))]


def test_every_op_has_samples():
    missing = sorted(set(all_ops()) - set(SAMPLES))
    assert missing == [], f"add SAMPLES for new ops: {missing}"


@pytest.mark.parametrize("name", sorted(all_ops()))
def test_op_declares_everything(name):
    op = all_ops()[name]
    assert op.doc(), "every op needs a docstring"
    assert op.category in {"conv", "norm", "linear", "pool", "activation", "reshape", "regularization", "join",
                           "attention", "embedding"}
    for arg in op.args:
        assert arg.doc or arg.name in ("dim",), f"argument {arg.name} lacks a doc"
    if name in SAMPLES:
        assert isinstance(op.label(_resolve(op, SAMPLES[name][0][0])), str)
    if op.torch_class:  # the class the docs name exists, in torch.nn or in archdsl's own modules
        import archdsl.ops.modules
        assert hasattr(nn, op.torch_class) or hasattr(archdsl.ops.modules, op.torch_class)


def _resolve(op, kwargs):
    internal = {k: kwargs[k] for k in _INTERNAL if k in kwargs}
    attrs, problems = op.resolve_args([], {k: v for k, v in kwargs.items() if k not in internal})
    assert problems == []
    if "scalar" in internal:
        attrs.update({"reverse": False, **internal})
    return attrs


def _run_torch(op, attrs, shapes):
    """Run the op the way the backend does: an fx graph calling its module, function or parameter."""
    xs = sample_inputs(op, attrs, shapes)
    g, holder = fx.Graph(), nn.Module()
    args = [g.placeholder(f"x{i}") for i in range(len(xs))]
    if op.functional:
        out = op.emit(g, dict(attrs), args, ins=hook(op, shapes))
    elif op.direct_param:
        value = op.make_param(attrs, hook(op, shapes))
        if op.direct_buffer:
            holder.register_buffer("p", value)
        else:
            holder.register_parameter("p", nn.Parameter(value))
        out = op.emit(g, attrs, args + [g.get_attr("p")], ins=hook(op, shapes))
    else:
        holder.add_module("m", op.build(attrs, shapes))
        out = op.call(g, "m", args, attrs)
    g.output(out)
    module = fx.GraphModule(holder, g).eval()
    with torch.no_grad():
        return module, module(*[x.clone() for x in xs])


def _layouts(shapes):
    return ["CHW" if len(s) == 3 else None for s in shapes]


@pytest.mark.parametrize("name,i", CASES)
def test_shape_rule_and_params_match_torch(name, i):
    op = all_ops()[name]
    kwargs, shapes = SAMPLES[name][i]
    attrs = _resolve(op, kwargs)
    ins = hook(op, shapes)
    want_shape = op.infer(attrs, ins)
    module, out = _run_torch(op, attrs, shapes)
    if per_sample(op, want_shape) is not None:
        assert tuple(out.shape[1:]) == per_sample(op, want_shape)
    else:  # no batch dim: the whole shape
        assert tuple(out.shape) == tuple(want_shape)
    assert op.params(attrs, ins) == sum(p.numel() for p in module.parameters())
    assert op.buffers(attrs, ins) == sum(b.numel() for b in module.buffers())
    assert op.macs(attrs, ins, want_shape) >= 0


def test_conv_macs_formula():
    op = all_ops()["conv2d"]
    attrs = _resolve(op, {"out_channels": 8, "kernel_size": 3, "groups": 2, "padding": 1})
    out = op.infer(attrs, [(4, 5, 5)])
    assert op.macs(attrs, [(4, 5, 5)], out) == 8 * 2 * 9 * 25


@pytest.mark.parametrize("name,kwargs,shape,needle", [
    ("conv2d", {"out_channels": 8, "kernel_size": 7}, (3, 5, 5), "larger than its padded input"),
    ("conv2d", {"out_channels": 8, "kernel_size": 3, "groups": 2}, (3, 9, 9), "not divisible by groups"),
    ("conv2d", {"out_channels": 9, "kernel_size": 3, "groups": 2}, (4, 9, 9), "not divisible by groups"),
    ("conv2d", {"out_channels": 8, "kernel_size": 3}, (48,), "expects a CxHxW"),
    ("linear", {"out_features": 8}, (3, 4, 4), "not flattened"),
    ("layernorm", {}, (3, 4, 4), "last axis, which here is the width"),
    ("mha", {"num_heads": 3}, (5, 8), "not divisible by num_heads"),
    ("mha", {"num_heads": 2}, (3, 4, 4), "acts on the last axis"),
    ("mha", {"num_heads": 2}, (8,), "expects a token sequence"),
    ("conv_transpose2d", {"out_channels": 4, "kernel_size": 2, "stride": 2, "output_padding": 2}, (3, 4, 4),
     "must be smaller than stride"),
    ("permute", {"dims": [1, 0, 2]}, (3, 4), "batch dim 0 first"),
    ("reshape", {"shape": [5, -1]}, (3, 4), "cannot reshape"),
    ("select", {"dim": 1, "index": 5}, (3, 4), "out of range"),
    ("narrow", {"dim": 1, "start": 2, "length": 4}, (5, 4, 4), "out of range"),
    ("interpolate", {"size": 4}, (12,), "expects a CxHxW"),
    ("layernorm2d", {}, (5, 8), "expects a CxHxW"),
    ("maxpool2d", {"kernel_size": 2, "padding": 2}, (3, 8, 8), "at most half"),
    ("avgpool2d", {"kernel_size": 3}, (3, 2, 2), "larger than its padded input"),
    ("batchnorm2d", {}, (16,), "expects a CxHxW"),
    ("shifted_window_attention", {"num_heads": 3, "window_size": 2}, (5, 4, 4), "acts on the last axis"),
    ("shifted_window_attention", {"num_heads": 2, "window_size": 2}, (8,), "expects an HxWxC"),
    ("patch_merge", {}, (8,), "expects an HxWxC"),
    ("conv1d", {"out_channels": 8, "kernel_size": 7}, (3, 5), "larger than its padded input"),
    ("conv1d", {"out_channels": 8, "kernel_size": 3, "groups": 2}, (3, 9), "not divisible by groups"),
    ("conv1d", {"out_channels": 8, "kernel_size": 3}, (3, 4, 4), "expects a CxL sequence"),
    ("conv3d", {"out_channels": 8, "kernel_size": 3}, (3, 2, 8, 8), r"larger than its padded input .* along depth"),
    ("conv3d", {"out_channels": 9, "kernel_size": 3, "groups": 2}, (4, 3, 3, 3), "not divisible by groups"),
    ("conv3d", {"out_channels": 8, "kernel_size": 3}, (3, 8, 8), "expects a CxDxHxW"),
    ("conv_transpose1d", {"out_channels": 4, "kernel_size": 2, "stride": 2, "output_padding": 2}, (3, 4),
     "must be smaller than stride"),
    ("conv_transpose3d", {"out_channels": 4, "kernel_size": 2, "groups": 2}, (3, 2, 2, 2), "not divisible by groups"),
    ("conv_transpose3d", {"out_channels": 4, "kernel_size": 2}, (3, 4, 4), "expects a CxDxHxW"),
    ("batchnorm1d", {}, (3, 4, 4), "expects a C vector or a CxL sequence"),
    ("batchnorm3d", {}, (3, 4, 4), "expects a CxDxHxW"),
    ("maxpool1d", {"kernel_size": 2, "padding": 2}, (3, 8), "at most half"),
    ("maxpool3d", {"kernel_size": 3}, (2, 2, 8, 8), "larger than its padded input"),
    ("maxpool3d", {"kernel_size": [1, 2, 2], "padding": [1, 0, 0]}, (2, 4, 8, 8), "at most half"),
    ("avgpool1d", {"kernel_size": 3}, (3, 2), "larger than its padded input"),
    ("avgpool3d", {"kernel_size": 2}, (3, 8), "expects a CxDxHxW"),
    ("adaptive_avgpool1d", {"output_size": 2}, (3, 4, 4), "expects a CxL"),
    ("adaptive_maxpool2d", {"output_size": 2}, (8,), "expects a CxHxW"),
    ("adaptive_maxpool3d", {"output_size": 2}, (5, 8), "expects a CxDxHxW"),
    ("groupnorm", {"num_groups": 4}, (6, 4, 4), "not divisible by num_groups"),
    ("softmax", {"dim": 3}, (3, 4), "out of range"),
    ("mean", {"dim": [0]}, (3, 4), "is the batch dimension"),
    ("stack", {"dim": 4}, (3, 4), "out of range"),
    ("transpose", {"dim0": 0, "dim1": 1}, (3, 4), "is the batch dimension"),
    ("roll", {"shifts": [1], "dims": [5]}, (3, 4), "out of range"),
    ("pad", {"pad": [1, 1, 1, 1, 1, 1]}, (3, 4), "pads 3 dims of a tensor with 2"),
    ("split_batch", {"n": 2}, U((3, 4)), "needs a batched tensor"),
    ("normalize", {"dim": 3}, (3, 4), "out of range"),
])
def test_shape_rule_rejects(name, kwargs, shape, needle):
    op = all_ops()[name]
    with pytest.raises(ShapeError, match=needle):
        attrs = _resolve(op, kwargs)
        op.check_layout(attrs, hook(op, [shape]), _layouts([shape]))
        op.infer(attrs, hook(op, [shape]))
    # torch accepts some inputs we reject on purpose: Linear/LayerNorm act on a map's width, attention
    # runs on a 4-d tensor, and permute may move the batch dim
    # (transpose and mean may also use the batch dim in torch; split_batch of an unbatched tensor,
    # pad of the batch dim run there too)
    if (name, shape) not in {("linear", (3, 4, 4)), ("layernorm", (3, 4, 4)), ("mha", (3, 4, 4)),
                             ("permute", (3, 4)), ("mean", (3, 4)), ("transpose", (3, 4)),
                             ("split_batch", (3, 4)), ("pad", (3, 4))}:
        with pytest.raises(Exception):  # torch agrees that this input is invalid
            _run_torch(op, _resolve(op, kwargs), [shape])


def test_matmul_and_sdpa_shape_errors():
    from archdsl.ops.registry import BATCH
    with pytest.raises(ShapeError, match="inner dims differ"):
        all_ops()["matmul"].infer({}, [(BATCH, 3, 4), (BATCH, 5, 6)])
    with pytest.raises(ShapeError, match="cannot broadcast"):
        all_ops()["matmul"].infer({}, [(BATCH, 2, 3, 4), (BATCH, 3, 4, 6)])
    sdpa = all_ops()["sdpa"]
    attrs = _resolve(sdpa, {})
    with pytest.raises(ShapeError, match="q and k dims differ"):
        sdpa.infer(attrs, [(BATCH, 5, 4), (BATCH, 5, 3), (BATCH, 5, 3)])
    with pytest.raises(ShapeError, match="different token counts"):
        sdpa.infer(attrs, [(BATCH, 5, 4), (BATCH, 6, 4), (BATCH, 5, 4)])
    with pytest.raises(ShapeError, match="does not broadcast to the scores"):
        sdpa.infer(attrs, [(BATCH, 5, 4), (BATCH, 6, 4), (BATCH, 6, 4), (5, 5)])


def test_join_shape_errors():
    with pytest.raises(ShapeError, match="cannot add"):
        all_ops()["add"].infer({}, [(3, 4, 4), (4, 4, 4)])
    concat = all_ops()["concat"]
    with pytest.raises(ShapeError, match="cannot concatenate"):
        concat.infer({"dim": 1}, [(3, 4, 4), (3, 5, 4)])
    with pytest.raises(ShapeError, match="out of range"):
        concat.infer({"dim": 0}, [(3, 4, 4), (3, 4, 4)])


def test_argument_type_errors():
    op = all_ops()["conv2d"]
    _, problems = op.resolve_args([64, 3], {"bias": 1, "stride": "2", "nope": 1})
    text = " | ".join(p for _, p in problems)
    assert "`bias` of `conv2d` must be `true` or `false`" in text
    assert "`stride` of `conv2d` must be an integer or a list of 2 integers" in text
    assert ("nope", "unknown") in problems
    _, problems = op.resolve_args([], {})
    assert any("missing its required argument `out_channels`" in p for _, p in problems)
    _, problems = all_ops()["relu"].resolve_args([1], {})
    assert any("at most 0 positional" in p for _, p in problems)


def test_init_rules_by_kind_reach_inner_linears():
    """`init linear.*` reaches the linears inside an op's module (Swin attention's qkv and proj), as
    torchvision's `isinstance(m, nn.Linear)` loops do; the attention's own table is left alone."""
    import archdsl
    spec = archdsl.load_spec("""
model m input 4x8x8 {
    init linear.weight = zeros()
    permute([0, 2, 3, 1])
    attn: shifted_window_attention(2, window_size = 4)
    fc: linear(4)
}""")
    model = spec.build()
    for name in ("attn.qkv.weight", "attn.proj.weight", "fc.weight"):
        assert model.get_parameter(name).abs().sum() == 0, name
    assert model.get_parameter("attn.relative_position_bias_table").abs().sum() > 0


def test_window_lengths_match_torch_pooling_including_ceil_mode():
    """Output lengths of max/avg pooling, or a refusal, exactly where torch gives them or refuses: with
    ceil_mode a window may hang over the end of a map smaller than the kernel (3x3 on 2x2 gives 1x1)."""
    from archdsl.ops.registry import window_out
    mismatches = []
    for kind, n, k, s, d in itertools.product(("max", "avg"), range(1, 9), range(1, 7), range(1, 5), (1, 2)):
        if kind == "avg" and d == 2:
            continue
        for p, ceil in itertools.product(range(k // 2 + 1), (False, True)):
            try:
                ours = window_out("pool", n, k, s, p, d, ceil, "length")
            except ShapeError:
                ours = None
            module = (torch.nn.MaxPool1d(k, s, p, d, ceil_mode=ceil) if kind == "max"
                      else torch.nn.AvgPool1d(k, s, p, ceil_mode=ceil))
            try:
                theirs = module(torch.rand(1, 2, n)).shape[-1]
            except RuntimeError:
                theirs = None
            if ours != theirs:
                mismatches.append((kind, n, k, s, p, d, ceil, ours, theirs))
    assert mismatches == []
