"""The Python API: load_spec, overrides, Spec properties, build options, checkpoints."""

from __future__ import annotations

import hashlib
import re
import subprocess

import pytest
import torch

import archdsl
from archdsl import SpecError

from .conftest import ROOT

RESNET18 = ROOT / "specs" / "resnet18.arch"

TINY = """
block Unit(c: int) {
    residual {
        a: conv2d(c, 3, padding = 1)
        relu()
    }
    relu()
}
model tiny(width: int = 8, classes: int = 3) input 3x16x16 {
    stem: conv2d(width, 3, padding = 1)
    body: for i in range(2) { Unit(width) }
    pool: adaptive_avgpool2d(1)
    flatten()
    head: linear(classes)
}
"""


def test_load_spec_from_text_and_properties():
    spec = archdsl.load_spec(TINY)
    assert spec.name == "tiny"
    assert spec.input_shape == (3, 16, 16)
    assert spec.output_shape == (3,)
    assert spec.num_params == (3 * 8 * 9 + 8) + 2 * (8 * 8 * 9 + 8) + (8 * 3 + 3)
    assert [s for s in spec.ir.scopes] == ["", "body", "body.0", "body.1"]
    model = spec.build()
    assert [k for k in model.state_dict()] == [
        "stem.weight", "stem.bias", "body.0.a.weight", "body.0.a.bias", "body.1.a.weight", "body.1.a.bias",
        "head.weight", "head.bias"]
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)


def test_overrides_and_input_shape():
    spec = archdsl.load_spec(RESNET18, num_classes=10, input_shape=(3, 64, 48))
    assert spec.output_shape == (10,)
    assert spec.input_shape == (3, 64, 48)
    assert spec.ir.params["num_classes"] == 10
    spec = archdsl.load_spec(RESNET18, layers=[1, 1, 1, 1])
    assert len(spec.build().layer1) == 1
    spec = archdsl.load_spec(RESNET18, num_classes=archdsl.Override("5 * 2"))
    assert spec.output_shape == (10,)


def test_override_errors_are_diagnostics():
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(RESNET18, num_clases=10)
    assert "did you mean `num_classes`" in e.value.render()
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(RESNET18, num_classes="ten")
    assert "must be int" in e.value.render()
    assert e.value.diagnostics


def test_spec_error_carries_located_diagnostics():
    with pytest.raises(SpecError) as e:
        archdsl.load_spec("model m input 3x8x8 {\n  linear(3)\n  conv(4, 3)\n  relu(x = 1)\n}\n")
    d = e.value.diagnostics
    assert len(d) == 3
    assert "not flattened" in d[0].message and d[0].span.line == 2
    assert d[1].span.line == 3 and "did you mean `conv2d`" in d[1].render()
    assert d[2].span.line == 4 and "no argument `x`" in d[2].message


def test_build_on_meta_and_dtype():
    spec = archdsl.load_spec(ROOT / "specs" / "resnet152.arch")
    model = spec.build(device="meta")
    assert next(model.parameters()).device.type == "meta"
    small = archdsl.load_spec(RESNET18).build(dtype=torch.float64)
    assert next(small.parameters()).dtype == torch.float64
    assert small.eval()(torch.randn(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_checkpoint_round_trip(tmp_path):
    spec = archdsl.load_spec(RESNET18, num_classes=7, input_shape=(3, 64, 64))
    model = spec.build().eval()
    path = tmp_path / "r18.pt"
    spec.save_checkpoint(path, model)
    # loading accepts only tensors and plain data
    data = torch.load(path, weights_only=True)
    assert data["overrides"] == {"num_classes": "7"}
    assert set(data["sources"]) == {"resnet18.arch", "lib/resnet.arch"}
    again = archdsl.load_checkpoint(path).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["r18.pt"]  # no temporary files left behind


def test_checkpoint_rejects_other_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not an archdsl checkpoint"):
        archdsl.load_checkpoint(path)


def test_models_work_with_torch_tooling():
    model = archdsl.load_spec(RESNET18, layers=[1, 1, 1, 1]).build().eval()
    x = torch.randn(1, 3, 32, 32)
    want = model(x)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), want)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), want)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), want)


def test_spec_text_never_reaches_eval_or_exec():
    out = subprocess.run(["git", "grep", "-n", "-E", r"\b(eval|exec)\(", "--", "archdsl/*.py"],
                         cwd=ROOT, capture_output=True, text=True).stdout
    assert out == ""


def test_compile_does_not_modify_specs(tmp_path):
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ROOT / "specs").rglob("*.arch")}
    from archdsl.cli import main
    assert main(["compile", str(RESNET18), "-o", str(tmp_path / "m.pt")]) == 0
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ROOT / "specs").rglob("*.arch")}
    assert before == after


def test_emit_ir_contains_spans_and_paths():
    spec = archdsl.load_spec(TINY)
    data = spec.ir.to_dict()
    conv = next(n for n in data["nodes"] if n["path"] == "body.0.a")
    assert conv["shape"] == [8, 16, 16]
    assert re.match(r"<string>:\d+:\d+", conv["span"])
    assert any(n["op"] == "add" and n["scope"] == "body.0" for n in data["nodes"])


def test_pathologically_deep_nesting_is_a_diagnostic_not_a_crash():
    text = "model m input 3x8x8 { conv2d(" + "1 + " * 3000 + "4, 1) }"
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(text)
    d = info.value.diagnostics[0]
    assert "nests more than 200 levels deep" in d.message and d.span is not None and d.span.line == 1


def test_bounded_recursion_is_allowed():
    text = """
    block Tower(n: int) {
        residual { conv2d(in.channels, 1) }
        if n > 1 { Tower(n - 1) }
    }
    model m input 3x8x8 { Tower(40) }
    """
    spec = archdsl.load_spec(text)
    assert spec.num_params == 40 * (3 * 3 + 3)
    assert spec.build()(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 8, 8)


def test_dotted_labels_make_containers_with_exact_state_dict_names():
    # The hand-written equivalent: ModuleLists `downs`/`pools` and a dict-like `head`,
    # wired in forward in interleaved order.
    spec = archdsl.load_spec("""
    model unet_like input 3x16x16 {
        for i, c in enumerate([8, 16]) {
            "downs.{i}": conv2d(c, 3, padding = 1)
            "pools.{i}": maxpool2d(2)
        }
        "head.fc": conv2d(4, 1)
        "head.act": relu()
    }
    """)
    model = spec.build()
    assert isinstance(model.downs, torch.nn.ModuleList) and len(model.downs) == 2
    assert isinstance(model.head, torch.nn.ModuleDict) and list(model.head) == ["fc", "act"]
    assert [n for n, _ in model.named_children()] == ["downs", "pools", "head"]
    assert list(model.state_dict()) == ["downs.0.weight", "downs.0.bias", "downs.1.weight", "downs.1.bias",
                                        "head.fc.weight", "head.fc.bias"]
    x = torch.randn(2, 3, 16, 16)
    ref = model.head.act(model.head.fc(model.pools[1](model.downs[1](model.pools[0](model.downs[0](x))))))
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    assert [n.path for n in spec.ir.ops()] == ["downs.0", "pools.0", "downs.1", "pools.1", "head.fc", "head.act"]


def test_init_rule_in_block_may_name_a_module_only_some_instances_have():
    spec = archdsl.load_spec("""
    block Unit(out: int, stride: int = 1) {
        init "downsample.0".weight = zeros()
        residual {
            conv2d(out, 3, stride = stride, padding = 1)
        } shortcut if stride != 1 or in.channels != out {
            downsample: seq { conv2d(out, 1, stride = stride) }
        }
    }
    model m input 4x8x8 { Unit(4); Unit(8, stride = 2) }
    """)
    model = spec.build()
    assert not hasattr(model[0], "downsample")
    assert torch.count_nonzero(model[1].downsample[0].weight) == 0
