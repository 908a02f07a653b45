"""Data-flow constructs beyond chains: `pass` (dense connectivity), `gate`, `tap`/`from`,
parameters living directly on a module, attention, and init rules run at construction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import archdsl
from archdsl import SpecError


def _run(spec, x):
    model = spec.build().eval()
    with torch.no_grad():
        return model, model(x)


def test_dense_concat_with_pass_matches_running_cat():
    spec = archdsl.load_spec("""
block Layer(g: int) { norm: batchnorm2d(); relu: relu(); conv: conv2d(g, 3, padding = 1, bias = false) }
model dense input 4x6x6 {
    for i in range(3) { concat(dim = 1) { pass; "l{i}": Layer(5) } }
}""")
    assert spec.output_shape == (19, 6, 6)
    x = torch.randn(2, 4, 6, 6)
    model, got = _run(spec, x)
    feats = [x]
    for i in range(3):
        feats.append(getattr(model, f"l{i}")(torch.cat(feats, 1)))
    torch.testing.assert_close(got, torch.cat(feats, 1), rtol=0, atol=0)


def test_gate_multiplies_input_by_weights():
    spec = archdsl.load_spec("""
model g input 8x5x5 {
    se: gate { pool: adaptive_avgpool2d(1); fc: conv2d(8, 1); act: sigmoid() }
}""")
    assert spec.output_shape == (8, 5, 5)
    x = torch.randn(2, 8, 5, 5)
    model, got = _run(spec, x)
    w = torch.sigmoid(model.se.fc(x.mean((2, 3), keepdim=True)))
    torch.testing.assert_close(got, w * x)
    assert [n.op for n in spec.ir.ops()][-1] == "mul"


def test_gate_shape_error_is_located():
    with pytest.raises(SpecError) as e:
        archdsl.load_spec("model g input 8x5x5 {\n  gate { adaptive_avgpool2d(1); conv2d(4, 1) }\n}")
    text = e.value.render()
    assert "gate weights of shape 4x1x1 cannot scale the input 8x5x5" in text and ":2:3" in text


def test_tap_and_from_make_long_skips():
    spec = archdsl.load_spec("""
model u input 2x8x8 {
    enc: conv2d(4, 3, padding = 1)
    tap skip
    down: maxpool2d(2)
    up: conv_transpose2d(4, 2, stride = 2)
    concat(dim = 1) { from skip; pass }
    head: conv2d(1, 1)
}""")
    assert spec.output_shape == (1, 8, 8)
    x = torch.randn(1, 2, 8, 8)
    model, got = _run(spec, x)
    s = model.enc(x)
    torch.testing.assert_close(got, model.head(torch.cat([s, model.up(model.down(s))], 1)))


@pytest.mark.parametrize("text,needle", [
    ("model m input 2x8x8 { conv2d(4, 1); tap a; from b }", "no tap or tensor named `b`"),
    ("model m input 2x8x8 { s: seq { conv2d(4, 1); tap a }; from a }", "which is another module"),
    ("model m input 2x8x8 { x: pass }", "`pass` makes no module and cannot be named"),
    ("model m input 2x8x8 { tap \"a.b\" }", "invalid tap name"),
])
def test_tap_errors(text, needle):
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(text)
    assert needle in e.value.render()


def test_direct_parameters_live_on_the_enclosing_module():
    spec = archdsl.load_spec("""
block Tok() {
    proj: conv2d(6, 4, stride = 4)
    flatten(2)
    permute([0, 2, 1])
    class_token: class_token()
    pos_embedding: pos_embedding()
}
model v input 3x8x8 {
    tok: Tok()
    ls: layer_scale(0.5)
    attn: mha(2)
    select(1, 0)
}""")
    assert spec.output_shape == (6,)
    model = spec.build()
    keys = set(model.state_dict())
    assert {"tok.class_token", "tok.pos_embedding", "ls", "attn.in_proj_weight", "attn.out_proj.weight"} <= keys
    assert model.tok.pos_embedding.shape == (1, 5, 6) and model.ls.shape == (6,)
    assert spec.num_params == sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        t = model.tok.proj(x).flatten(2).permute(0, 2, 1)
        t = torch.cat([model.tok.class_token.expand(2, -1, -1), t], 1) + model.tok.pos_embedding
        t = model.ls * t
        t = model.attn(t, t, t, need_weights=False)[0]
        torch.testing.assert_close(model.eval()(x), t[:, 0])


def test_layout_checks():
    with pytest.raises(SpecError, match="acts on the last axis, which here is the width"):
        archdsl.load_spec("model m input 3x8x8 { layernorm() }")
    with pytest.raises(SpecError, match="laid out HxWxC"):
        archdsl.load_spec("model m input 3x8x8 { permute([0, 2, 3, 1]); conv2d(4, 1) }")
    spec = archdsl.load_spec("model m input 3x8x8 { permute([0, 2, 3, 1]); layernorm(); linear(5); "
                             "permute([0, 3, 1, 2]); conv2d(4, 1) }")
    assert spec.output_shape == (4, 8, 8)
    # `in.channels` / `in.height` / `in.width` follow the layout
    spec = archdsl.load_spec("model m input 3x8x16 { permute([0, 2, 3, 1]); "
                             "linear(in.channels * 100 + in.height * 10 + in.width // 8) }")
    assert spec.output_shape == (8, 16, 382)
    with pytest.raises(SpecError, match="`layer_scale` scales the channels of a CxHxW map"):
        archdsl.load_spec("model m input 3x8x8 { permute([0, 2, 3, 1]); layer_scale() }")


def test_block_init_rules_run_when_the_block_is_built():
    """Like a torchvision constructor: a block's rules run right after its modules are made,
    before later siblings draw from the random generator."""
    spec = archdsl.load_spec("""
block MLP() { init linear.bias = normal(std = 1e-6); a: linear(4); b: linear(4) }
model m input [4] { m1: MLP(); m2: MLP() }""")
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = nn.Module()
    for name in ("m1", "m2"):
        blk = nn.Sequential()
        blk.add_module("a", nn.Linear(4, 4))
        blk.add_module("b", nn.Linear(4, 4))
        for m in blk:
            nn.init.normal_(m.bias, std=1e-6)
        ref.add_module(name, blk)
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
