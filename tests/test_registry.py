"""Tests parametrized over the op registry: every op's shape rule and parameter count
agree with torch itself, and every op is documented and has sample cases here."""

from __future__ import annotations

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
                                                       [(2, 5, 5)])],
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
}

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
    attrs, problems = op.resolve_args([], kwargs)
    assert problems == []
    return attrs


def _run_torch(op, attrs, shapes):
    """Run the op the way the backend does: an fx graph calling its module, function or parameter."""
    xs = [torch.randn(2, *s) for s in shapes]
    g, holder = fx.Graph(), nn.Module()
    args = [g.placeholder(f"x{i}") for i in range(len(xs))]
    if op.functional:
        out = op.emit(g, attrs, args)
    elif op.direct_param:
        holder.register_parameter("p", nn.Parameter(op.make_param(attrs, shapes)))
        out = op.emit(g, attrs, args + [g.get_attr("p")])
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
    want_shape = op.infer(attrs, shapes)
    module, out = _run_torch(op, attrs, shapes)
    assert tuple(out.shape[1:]) == want_shape
    assert op.params(attrs, shapes) == sum(p.numel() for p in module.parameters())
    assert op.buffers(attrs, shapes) == sum(b.numel() for b in module.buffers())
    assert op.macs(attrs, shapes, want_shape) >= 0


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
])
def test_shape_rule_rejects(name, kwargs, shape, needle):
    op = all_ops()[name]
    with pytest.raises(ShapeError, match=needle):
        attrs = _resolve(op, kwargs)
        op.check_layout(attrs, [shape], _layouts([shape]))
        op.infer(attrs, [shape])
    # torch accepts some inputs we reject on purpose: Linear/LayerNorm act on a map's width, attention
    # runs on a 4-d tensor, and permute may move the batch dim
    if (name, shape) not in {("linear", (3, 4, 4)), ("layernorm", (3, 4, 4)), ("mha", (3, 4, 4)),
                             ("permute", (3, 4))}:
        with pytest.raises(Exception):  # torch agrees that this input is invalid
            _run_torch(op, _resolve(op, kwargs), [shape])


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
