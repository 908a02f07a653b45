"""Tensors as values (issue 10): named tensors, explicit inputs, blocks with several tensor inputs
and results, models with several outputs, `output(path)`, `inline`, tensor algebra, `parameter`
and `buffer`; each checked statically, built, and run against the computation written in torch."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import archdsl
from archdsl.diagnostics import SpecError


def build(text: str, **overrides):
    spec = archdsl.load_spec(text, **overrides)
    torch.manual_seed(0)
    return spec, spec.build().eval()


def errors(text: str) -> list:
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(text)
    return e.value.diagnostics


def one_error(text: str, needle: str, line: int | None = None):
    diags = errors(text)
    rendered = "\n".join(d.render() for d in diags)
    assert any(needle in d.message for d in diags), rendered
    d = next(d for d in diags if needle in d.message)
    assert d.span is not None, "every diagnostic here is located"
    if line is not None:
        assert d.span.line == line, rendered
    return d


# ------------------------------------------------------------------ named tensors and explicit inputs


def test_let_names_a_tensor_without_moving_the_flow():
    spec, m = build("""
model m input 4x6x6 {
    a: conv2d(4, 3, padding = 1)
    let x = in                      # the output of `a`
    let b = left: conv2d(4, 1)      # reads x: the flow stays at x
    let c = right: conv2d(4, 1)     # reads x too: a second branch
    from b - c * 0.5 + x / 2
}""")
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        h = m.a(x)
        want = m.left(h) - m.right(h) * 0.5 + h / 2
        assert torch.equal(m(x), want)
    assert spec.output_shape == (4, 6, 6)
    assert [n for n, _ in m.named_children()] == ["a", "left", "right"]  # functions take no module slots


def test_explicit_inputs_and_unnamed_children_numbered_in_order():
    spec, m = build("""
model m input 3x8x8 {
    stem: conv2d(8, 3, padding = 1)
    let s = in
    relu()                              # child 1
    let t = conv2d(8, 1)(s)             # child 2, reads s
    proj: conv2d(8, 1)(t)               # reads t, becomes the current tensor
    seq { relu(); conv2d(8, 1) }(s + in)  # child 4, reads s + proj
}""")
    assert [n for n, _ in m.named_children()] == ["stem", "1", "2", "proj", "4"]
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        s = m.stem(x)
        t = getattr(m, "2")(s)
        p = m.proj(t)
        assert torch.equal(m(x), getattr(m, "4")(s + p))


def test_functions_of_tensors_match_torch():
    spec, m = build("""
model m input 6x4x5 {
    let x = in
    let w = softmax(x, 1)
    let p = mean(x, [2, 3], keepdim = true)
    let q = amax(x, -1) - amin(x, -1) + sum(x, 3)
    from stack([relu(x * w + p), gelu(x), sigmoid(-x)], 1)   # 3x6x4x5
    let y = in
    let left = narrow(permute(select(y, 1, 0), [0, 2, 3, 1]), 1, 0, 3)      # 3x5x6
    let right = transpose(narrow(permute(select(y, 1, 2), [0, 2, 3, 1]), 1, 0, 3), -2, -1)   # 3x6x5
    return [reshape(left @ right, [-1]), q]
}""")
    x = torch.randn(2, 6, 4, 5)
    w = torch.softmax(x, 1)
    p = x.mean((2, 3), keepdim=True)
    q = x.amax(-1) - x.amin(-1) + x.sum(3)
    y = torch.stack([torch.relu(x * w + p), torch.nn.functional.gelu(x), torch.sigmoid(-x)], 1)
    z = y[:, 0].permute(0, 2, 3, 1).narrow(1, 0, 3) @ y[:, 2].permute(0, 2, 3, 1).narrow(1, 0, 3).transpose(-2, -1)
    with torch.no_grad():
        out = m(x)
    torch.testing.assert_close(out[0], z.reshape(2, -1))
    torch.testing.assert_close(out[1], q)
    assert spec.output_shapes == ((75,), (6, 4))


def test_assignment_accumulates_across_a_loop():
    spec, m = build("""
model m input 4x5x5 {
    let feats = []
    for i in range(3) {
        let f = "convs.{i}": conv2d(4, 3, padding = 1 + i, dilation = 1 + i)
        feats = feats + [f]
    }
    from sum(feats)
}""")
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        want = m.convs[0](x) + m.convs[1](x) + m.convs[2](x)
        torch.testing.assert_close(m(x), want)
    assert isinstance(m.convs, nn.ModuleList)


# ------------------------------------------------------------------ blocks with inputs and results


FUSE = """
block Fuse(c: int)(hi, lo) {
    let up = "fuse.0": seq { conv2d(c, 1, bias = false); interpolate(8) }(lo)
    let down = "fuse.1": conv2d(2 * c, 3, stride = 2, padding = 1, bias = false)(hi)
    return [relu(hi + up), relu(lo + down)]
}
"""


def test_block_with_two_inputs_and_two_results():
    spec, m = build(FUSE + """
model m input 4x8x8 {
    stem: conv2d(4, 1)
    let hi = in
    lo: conv2d(8, 3, stride = 2, padding = 1)
    let a, b = s1: Fuse(4)(hi, in)
    let c, d = s2: Fuse(4)(a, b)
    return {"hi": c, "lo": d}
}""")
    assert spec.output_shapes == {"hi": (4, 8, 8), "lo": (8, 4, 4)}
    x = torch.randn(2, 4, 8, 8)

    def fuse(f, hi, lo):
        return torch.relu(hi + f.fuse[0](lo)), torch.relu(lo + f.fuse[1](hi))

    with torch.no_grad():
        hi = m.stem(x)
        lo = m.lo(hi)
        a, b = fuse(m.s1, hi, lo)
        c, d = fuse(m.s2, a, b)
        out = m(x)
    assert isinstance(out, dict) and list(out) == ["hi", "lo"]
    assert torch.equal(out["hi"], c) and torch.equal(out["lo"], d)


def test_model_returning_a_tuple_and_a_block_taking_a_list():
    spec, m = build("""
block SumAll(n: int)(xs) {
    let ok = require(len(xs) == n, "expected", n, "tensors")
    return sum(xs)
}
model m input 3x4x4 {
    let a = p: conv2d(3, 1)
    let b = q: conv2d(3, 1)
    let s = total: SumAll(2)([a, b])
    return [s, a]
}""")
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        out = m(x)
        assert isinstance(out, tuple) and len(out) == 2
        torch.testing.assert_close(out[0], m.p(x) + m.q(x))
        torch.testing.assert_close(out[1], m.p(x))
    assert spec.output_shapes == ((3, 4, 4), (3, 4, 4))


def test_output_reaches_into_submodules_and_keeps_state_dict():
    text = """
model m input 3x16x16 {
    features: seq {
        conv2d(8, 3, padding = 1)
        relu()
        seq { conv2d(8, 3, stride = 2, padding = 1); relu() }
        conv2d(16, 1)
    }
    return {"early": output("features.1"), "mid": output("features.2.0"), "out": in}
}"""
    spec, m = build(text)
    plain = archdsl.load_spec(text.replace('return {"early": output("features.1"), "mid": '
                                           'output("features.2.0"), "out": in}', "")).build()
    assert list(m.state_dict()) == list(plain.state_dict())
    x = torch.randn(1, 3, 16, 16)
    f = m.features
    with torch.no_grad():
        h1 = f[1](f[0](x)) if isinstance(f, nn.Sequential) else None
        out = m(x)
        early = torch.relu(getattr(f, "0")(x))
        mid = getattr(getattr(f, "2"), "0")(early)
        final = getattr(f, "3")(torch.relu(mid))
    assert h1 is None  # the sequence now returns inner values too, so it is generated code, not nn.Sequential
    assert torch.equal(out["early"], early) and torch.equal(out["mid"], mid) and torch.equal(out["out"], final)
    assert spec.output_shapes == {"early": (8, 16, 16), "mid": (8, 8, 8), "out": (16, 8, 8)}


def test_plain_chains_stay_sequential():
    m = archdsl.load_spec("specs/resnet18.arch").build(device="meta")
    assert isinstance(m.layer1, nn.Sequential) and isinstance(m.layer1[0].downsample if
                                                              hasattr(m.layer1[0], "downsample") else
                                                              nn.Sequential(), nn.Sequential)


def test_inline_puts_a_blocks_children_in_the_caller():
    spec, m = build("""
block Trunk(c: int) {
    init conv2d.weight = zeros()
    conv1: conv2d(c, 3, padding = 1)
    relu()
    return in
}
model m input 3x8x8 {
    inline Trunk(4)
    head: conv2d(2, 1)
    relu()
}""")
    assert [n for n, _ in m.named_children()] == ["conv1", "1", "head", "3"]
    assert torch.count_nonzero(m.conv1.weight) == 0 and torch.count_nonzero(m.head.weight) == 0


def test_residual_if_and_residual_with_pass_body():
    spec, m = build("""
model m(on: bool = false) input 4x6x6 {
    residual if on { a: conv2d(4, 1) }
    residual { pass } shortcut { b: conv2d(4, 1) }
}""")
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        h = m.a(x)
        torch.testing.assert_close(m(x), h + m.b(h))
    spec, m = build("""
model m(on: bool = true) input 4x6x6 {
    residual if on { a: conv2d(4, 1) }
}""")
    with torch.no_grad():
        torch.testing.assert_close(m(x), x + m.a(x))


# ------------------------------------------------------------------ tensors a module owns


def test_parameter_buffer_and_index():
    spec, m = build("""
block Bias(window: int, heads: int) {
    let n = window * window
    let table = relative_position_bias_table: parameter([(2 * window - 1) ** 2, heads])
    let idx = relative_position_index: buffer([[(i // window - j // window + window - 1) * (2 * window - 1)
                                                + (i % window - j % window + window - 1)
                                                for j in range(n)] for i in range(n)])
    let scratch = scratch: buffer([1.0, 2.0], persistent = false)
    init "relative_position_bias_table" = trunc_normal(std = 0.02)
    return permute(index(table, idx), [2, 0, 1]) * sum(scratch, 0)
}
model m input 3x4x4 {
    flatten(2)
    permute([0, 2, 1])               # 16 tokens x 3
    let x = stack([in, in], 1)       # 2 heads x 16 tokens x 3
    let b = bias: Bias(4, 2)         # 2 x 16 x 16, no batch dim: broadcast over the batch
    from sdpa(x, x, x, b)
}""")
    bias = m.bias
    assert set(m.state_dict()) == {"bias.relative_position_bias_table", "bias.relative_position_index"}
    assert bias.relative_position_index.dtype == torch.int64
    assert bias.relative_position_bias_table.shape == (49, 2)
    assert 0 < bias.relative_position_bias_table.std() < 0.03   # trunc_normal(std = 0.02), not zeros
    coords = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + 3
    want_index = rel[:, :, 0] * 7 + rel[:, :, 1]
    assert torch.equal(bias.relative_position_index, want_index)
    x = torch.randn(2, 3, 4, 4)
    t = x.flatten(2).transpose(1, 2)
    t = torch.stack([t, t], 1)
    table = bias.relative_position_bias_table.detach()
    b = table[want_index.reshape(-1)].reshape(16, 16, 2).permute(2, 0, 1) * 3.0
    with torch.no_grad():
        torch.testing.assert_close(m(x), torch.nn.functional.scaled_dot_product_attention(t, t, t, b))
    assert spec.num_params == 49 * 2
    assert spec.ir.num_buffers == 256 + 2


def test_a_layer_on_a_parameter_takes_its_first_dim_as_the_batch():
    spec, m = build("""
model m input 2x3x3 {
    let table = table: parameter([5, 2])
    let mlp = cpb: seq { linear(8); relu(); linear(3, bias = false) }(table)     # 5 x 3, as Swin v2's cpb_mlp
    return [in, mlp]
}""")
    with torch.no_grad():
        torch.testing.assert_close(m(torch.zeros(1, 2, 3, 3))[1], m.cpb(m.table))
    assert spec.output_shapes == ((2, 3, 3), (5, 3))
    assert spec.macs == 5 * (2 * 8 + 8 * 3)


def test_merge_and_split_batch_run_a_layer_per_window():
    spec, m = build("""
model m input 4x8x8 {
    permute([0, 2, 3, 1])                        # 8 x 8 x C
    reshape([2, 4, 2, 4, 4])
    permute([0, 1, 3, 2, 4, 5])
    reshape([4, 4, 4, 4])                        # 4 windows x 4 x 4 x C
    let w = in
    from permute(merge_batch(w), [0, 3, 1, 2])   # (batch * 4) x C x 4 x 4
    conv: conv2d(4, 3, padding = 1)
    let y = in
    from split_batch(y, 4)                       # 4 windows x C x 4 x 4
}""")
    x = torch.randn(2, 4, 8, 8)
    w = x.permute(0, 2, 3, 1).reshape(2, 2, 4, 2, 4, 4).permute(0, 1, 3, 2, 4, 5).reshape(2, 4, 4, 4, 4)
    with torch.no_grad():
        want = m.conv(w.flatten(0, 1).permute(0, 3, 1, 2)).unflatten(0, (-1, 4))
        torch.testing.assert_close(m(x), want)
    assert spec.output_shape == (4, 4, 4, 4)
    assert spec.macs == 4 * (4 * 4 * 9 * 16)   # batch 1: every window counts
    one_error("""model m input 4x8x8 {
    reshape([4, 4, 4, 4])
    let w = in
    from merge_batch(w)
}""", "still has 4 items per sample merged into the batch")
    one_error("""model m input 4x8x8 {
    let w = in
    from split_batch(merge_batch(w), 3)
}""", "not a multiple of 3")


def test_generated_code_works_with_fx_jit_and_export():
    spec, m = build(FUSE + """
model m input 4x8x8 {
    stem: conv2d(4, 1)
    let hi = in
    lo: conv2d(8, 3, stride = 2, padding = 1)
    let a, b = s1: Fuse(4)(hi, in)
    let t = relative: parameter([8, 1, 1], value = 0.5)
    return {"hi": a * mean(a, [2, 3], keepdim = true), "lo": b + t}
}""")
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = m(x)
        for other in (torch.fx.symbolic_trace(m), torch.jit.script(m), torch.export.export(m, (x,)).module()):
            out = other(x)
            assert all(torch.equal(out[k], ref[k]) for k in ref)


def test_ir_carries_outputs_and_unbatched_tensors():
    spec = archdsl.load_spec("""
model m input 3x4x4 {
    let p = w: parameter([3, 1, 1])
    return {"a": in * p, "b": in}
}""")
    d = spec.ir.to_dict()
    assert set(d["outputs"]) == {"a", "b"}
    w = next(n for n in d["nodes"] if n["path"] == "w")
    assert w["batched"] is False and w["shape"] == [3, 1, 1]


# ------------------------------------------------------------------ diagnostics


@pytest.mark.parametrize("body,needle,line", [
    ("let x = in\nfrom x @ reshape(x, [3, 2, 8])", "inner dims differ", 3),
    ("from softmax(in, 4)", "out of range", 2),
    ("from softmax(in, 0)", "is the batch dimension", 2),
    ("from mean(in, [0, 1])", "is the batch dimension", 2),
    ("conv2d(in, 3)", "op arguments are numbers", 2),
    ("let a = in\nfrom a + reshape(a, [3, 16])", "cannot add tensors of shapes 3x4x4 and 3x16", 3),
    ("let k = in\nfrom sdpa(in, reshape(k, [3, 2, 8]), in)", "q and k dims differ", 3),
    ("let x = conv2d(8, 1)", "tensor `x` is never used", 2),
    ("from y", "no tap or tensor named `y`", 2),
    ("y = in", "`y` is not defined, so it cannot be assigned", 2),
    ("from 3", "continues from a tensor", 2),
    ("seq { return in }", "`return` must be directly in a block or model body", 2),
    ("return {\"a\": in, \"a\": in}", "given twice", 2),
    ("return 3", "a tensor, a list or a dict of tensors", 2),
    ("let p = w: parameter([4])\nfrom linear(2)(p)", "got a scalar", 3),
    ("let i = idx: buffer([0, 5])\nfrom index(in, i)", "out of range for a dim of size 3", 3),
    ("let i = idx: buffer([0, 1])\nfrom in + i", "takes floating-point tensors", 3),
    ("let f = relu\nlet y = 1 @ 2", "`@` multiplies tensors", 3),
    ("t: softmax(1)", "makes no module, so it cannot be named", 2),
])
def test_tensor_diagnostics(body, needle, line):
    one_error(f"model m input 3x4x4 {{\n{body}\n}}", needle, line)


def test_a_tensor_used_before_its_let_says_where_it_is_bound():
    d = one_error("model m input 3x4x4 {\nfrom y + in\nlet y = conv2d(3, 1)\n}", "unknown name `y`", 2)
    assert any("`y` is bound later, at <string>:3:1" in n for n in d.notes)


def test_block_input_diagnostics():
    one_error(FUSE + "model m input 4x8x8 { Fuse(4)(in) }", "takes 2 tensors (hi, lo), got 1")
    one_error(FUSE + "model m input 4x8x8 { Fuse(4)(in, 3) }", "input 2 of block `Fuse` must be a tensor")
    one_error(FUSE + "model m input 4x8x8 { Fuse(4) }", "give them as `Fuse(...)(a, b)`")
    one_error(FUSE + "model m input 4x8x8 { let a = in\nlo: conv2d(8, 3, stride = 2, padding = 1)\n"
                     "Fuse(4)(a, in) }", "cannot flow on as one tensor")
    one_error("block B(c: int) { conv2d(c, 1) }\nmodel m input 3x4x4 { B(in) }",
              "must be int, got a tensor")


def test_several_tensor_errors_in_one_run():
    diags = errors("""model m input 3x4x4 {
    let x = in
    let a = x @ reshape(x, [3, 2, 8])
    let b = softmax(x, 7)
    let c = conv2d(x, 1)
}""")
    lines = [d.span.line for d in diags]
    assert len(diags) >= 3 and lines == sorted(lines)
