"""Defects found by porting real models by hand (issue 11): diagnostics after an earlier error,
help texts that suggest a fix that works, checkpoints that refuse what they cannot load, output
file modes, and the docs of the ops that own a tensor directly. Golden texts of some of these
are in tests/bad_specs/ (shortcut_body_after_error, mha_rank3_tokens, residual_global_pool_mismatch,
tap_keyword_name, string_plus_int, several_models)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import torch
from torch import nn

import archdsl
from archdsl import SpecError
from archdsl.backends.checkpoint import FORMAT, CheckpointError

ROOT = Path(__file__).resolve().parent.parent
RESNET18 = str(ROOT / "specs" / "resnet18.arch")


def _error(text: str, **kw) -> SpecError:
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(text, **kw)
    return info.value


def _messages(err: SpecError) -> list[str]:
    return [d.message for d in err.diagnostics]


# ------------------------------------------------------------------ 1. shortcut bodies after an error

@pytest.mark.parametrize("shortcut", [
    "shortcut { nosuchop(8) }",
    "shortcut if true { nosuchop(8) }",
    "shortcut if in.channels != 8 { nosuchop(8) }",   # the condition reads the failed tensor
    "shortcut if stride != 1 { nosuchop(8) }",
])
def test_shortcut_body_is_checked_after_an_earlier_error(shortcut):
    err = _error(f"""
model m input 8x8x8 {{
    let stride = 2
    conv2d(8, 3, stride = 0)
    residual {{
        relu()
    }} {shortcut}
}}
""")
    assert "unknown op or block `nosuchop`" in _messages(err)
    assert len(err.diagnostics) == 2


def test_shortcut_body_errors_reported_like_residual_body_errors():
    err = _error("""
model m input 8x8x8 {
    conv2d(8, 3, stride = 0)
    residual { nosuchop_a() } shortcut { nosuchop_b() }
}
""")
    assert {"unknown op or block `nosuchop_a`", "unknown op or block `nosuchop_b`"} <= set(_messages(err))


def test_shortcut_if_false_still_skips_its_body():
    spec = archdsl.load_spec("""
model m input 8x8x8 {
    residual { relu() } shortcut if false { nosuchop() }
}
""")
    assert spec.output_shape == (8, 8, 8)


# ------------------------------------------------------------------ 2a. mha on a rank-3 tensor

def test_mha_on_windows_of_tokens_suggests_merge_batch_and_it_works():
    err = _error("model m input [2048] {\n    reshape([4, 16, 32])\n    mha(4)\n}\n")
    help_ = err.diagnostics[0].help
    assert "flatten(2)" not in help_
    assert "`merge_batch()`" in help_ and "`split_batch(4)`" in help_
    fixed = archdsl.load_spec("model m input [2048] {\n    reshape([4, 16, 32])\n    merge_batch()\n"
                              "    mha(4)\n    split_batch(4)\n}\n")
    assert fixed.output_shape == (4, 16, 32)


def test_mha_on_a_feature_map_suggests_flatten_and_permute_and_it_works():
    err = _error("model m input 32x4x4 {\n    mha(4)\n}\n")
    help_ = err.diagnostics[0].help
    assert "`flatten(2)`" in help_ and "`permute([0, 2, 1])`" in help_
    fixed = archdsl.load_spec("model m input 32x4x4 {\n    flatten(2)\n    permute([0, 2, 1])\n    mha(4)\n}\n")
    assert fixed.output_shape == (16, 32)


# ------------------------------------------------------------------ 2b. residual help that checks

@pytest.mark.parametrize("input_shape, body", [
    ("128x6x6", "conv2d(256, 1); adaptive_avgpool2d(1)"),        # pooled to 1x1: no stride helps
    ("32x6x6", "adaptive_avgpool2d(4)"),                          # 6 -> 4: no stride gives it
    ("32x7x7", "conv2d(64, 4, stride = 2)"),                      # 7 -> 2: no 1x1 stride gives it
    ("32x6x6", "conv2d(32, 3, padding = 2)"),                     # the branch grows the map
    ("32x8x8", "conv2d(64, 3, stride = 2, padding = 1)"),         # the classic downsampling block
    ("16x8x8", "conv2d(32, 3, padding = 1)"),                     # channels only
])
def test_residual_mismatch_help_gives_a_shortcut_that_checks(input_shape, body):
    spec = f"model m input {input_shape} {{\n    residual {{ {body} }} SHORTCUT\n}}\n"
    err = _error(spec.replace("SHORTCUT", ""))
    help_ = err.diagnostics[0].help
    m = re.search(r"`(shortcut \{.*?\})`", help_)
    assert m, help_
    fixed = archdsl.load_spec(spec.replace("SHORTCUT", m.group(1)))
    assert fixed.output_shape is not None


def test_residual_pooled_to_one_pixel_does_not_suggest_a_stride():
    err = _error("model m input 128x6x6 {\n    residual { conv2d(256, 1); adaptive_avgpool2d(1) }\n}\n")
    help_ = err.diagnostics[0].help
    assert "stride" not in help_
    assert "6x6" in help_ and "1x1" in help_ and "adaptive_avgpool2d" in help_


def test_residual_that_grows_the_map_does_not_suggest_a_stride():
    err = _error("model m input 32x6x6 {\n    residual { conv2d(32, 3, padding = 2) }\n}\n")
    assert "stride =" not in err.diagnostics[0].help
    assert "grows the map from 6x6 to 8x8" in err.diagnostics[0].help


# ------------------------------------------------------------------ 2c. a keyword as a tap name

def test_keyword_as_tap_name_help_is_about_the_tap():
    err = _error("model m input 8x8x8 {\n    tap shortcut\n    relu()\n}\n")
    d = err.diagnostics[0]
    assert d.message == "`shortcut` is a keyword and cannot be used as a name"
    assert "tap" in d.help and "module" not in d.help and "label" not in d.help
    for fix in re.findall(r"`tap ([^`]+)` and `from ([^`]+)`|`tap (\"[^`]+\")`", d.help):
        name = next(x for x in fix if x)
        archdsl.load_spec(f"model m input 8x8x8 {{\n    tap {name}\n    relu()\n    from {name}\n}}\n")


def test_keyword_as_label_keeps_the_label_help():
    err = _error("model m input 8x8x8 {\n    shortcut: relu()\n}\n")
    assert "keyword" in err.render()


# ------------------------------------------------------------------ 2d. a string plus an integer

@pytest.mark.parametrize("expr, fix", [('"stage" + s', '"stage" + str(s)'), ('s + "x"', 'str(s) + "x"')])
def test_string_plus_int_names_the_integer_and_suggests_str(expr, fix):
    err = _error(f"model m input 8x8x8 {{\n    let s = 3\n    let n = {expr}\n    relu()\n}}\n")
    d = err.diagnostics[0]
    assert d.message == "a string and an integer cannot be added"
    assert "expected a number" not in err.render()
    assert d.label == "this is the integer 3"
    assert f"`{fix}`" in d.help
    col = d.span.column
    assert d.span.source.line(d.span.line)[col - 1] == "s"  # the caret is on the integer
    # the suggested fix works, and so does the template
    archdsl.load_spec(f"model m input 8x8x8 {{\n    let s = 3\n    let n = {fix}\n    \"{{n}}\": relu()\n}}\n")
    archdsl.load_spec('model m input 8x8x8 {\n    let s = 3\n    "stage{s}": relu()\n}\n')


def test_string_plus_string_and_number_plus_number_still_work():
    spec = archdsl.load_spec('model m input 8x8x8 {\n    let a = "x" + "y"\n    let b = 1 + 2\n'
                             '    let c = 1 + 2.5\n    "{a}{b}": relu()\n}\n')
    assert [n.path for n in spec.ir.ops()] == ["xy3"]


def test_string_plus_float_suggests_str_only():
    err = _error('model m input 8x8x8 {\n    let n = "p" + 0.5\n    relu()\n}\n')
    d = err.diagnostics[0]
    assert d.message == "a string and a float cannot be added"
    assert "`\"p\" + str(0.5)`" in d.help and "template" not in d.help


# ------------------------------------------------------------------ 3. checkpoints that fit their spec

def test_save_checkpoint_refuses_a_module_with_a_replaced_head(tmp_path):
    spec = archdsl.load_spec(RESNET18)
    model = spec.build()
    model.fc = nn.Linear(512, 10)
    path = tmp_path / "r18.pt"
    with pytest.raises(CheckpointError) as info:
        spec.save_checkpoint(path, model)
    text = str(info.value)
    assert "does not match spec `resnet18`" in text
    assert "fc.weight: 10x512 here, 1000x512 in the spec" in text
    assert "fc.bias: 10 here, 1000 in the spec" in text
    assert "num_classes=10" in text
    assert isinstance(info.value, ValueError)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_save_checkpoint_refuses_missing_and_extra_keys(tmp_path):
    spec = archdsl.load_spec(RESNET18)
    model = spec.build()
    model.extra = nn.Linear(2, 2)
    del model.fc
    with pytest.raises(CheckpointError) as info:
        spec.save_checkpoint(tmp_path / "x.pt", model)
    text = str(info.value)
    assert "fc.weight: missing here" in text and "extra.weight: 2x2 here, not in the spec" in text


def test_the_suggested_fix_saves_and_loads(tmp_path):
    spec = archdsl.load_spec(RESNET18, num_classes=10)
    model = spec.build()
    path = tmp_path / "r18.pt"
    spec.save_checkpoint(path, model)
    again = archdsl.load_checkpoint(path)
    assert again.fc.out_features == 10


def test_load_checkpoint_reports_weights_that_do_not_fit_the_spec(tmp_path):
    spec = archdsl.load_spec(RESNET18, num_classes=7, input_shape=(3, 64, 64))
    path = tmp_path / "r18.pt"
    spec.save_checkpoint(path, spec.build())
    data = torch.load(path, weights_only=True)
    data["overrides"] = {}  # the spec now builds 1000 classes; the weights have 7
    torch.save(data, path)
    with pytest.raises(CheckpointError) as info:
        archdsl.load_checkpoint(path)
    text = str(info.value)
    assert "do not fit the model its spec `resnet18` builds" in text
    assert "fc.weight: 7x512 saved, 1000x512 in the spec" in text
    assert "num_classes=7" in text
    assert "size mismatch" not in text


# ------------------------------------------------------------------ 4. output modes follow the umask

@pytest.fixture
def umask():
    old = os.umask(0o022)

    def set_(mask):
        os.umask(mask)
    yield set_
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o027, 0o002, 0o077])
def test_atomic_outputs_get_the_umask_mode(mask, umask, tmp_path):
    from archdsl.atomicio import atomic_write, current_umask, default_mode
    umask(mask)
    assert current_umask() == mask and default_mode() == 0o666 & ~mask
    want = 0o666 & ~mask
    atomic_write(tmp_path / "plain.bin", lambda f: f.write(b"x"))
    assert _mode(tmp_path / "plain.bin") == want
    spec = archdsl.load_spec(RESNET18, layers=[1, 1, 1, 1])
    spec.save_checkpoint(tmp_path / "ck.pt", spec.build(device="meta").to_empty(device="cpu"))
    assert _mode(tmp_path / "ck.pt") == want
    spec.draw(tmp_path / "r.gv", format="dot")
    assert _mode(tmp_path / "r.gv") == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt", "plain.bin", "r.gv"]  # no temp files


def test_compile_output_gets_the_umask_mode(umask, tmp_path, capsys):
    from archdsl.cli import main
    umask(0o027)
    out = tmp_path / "lenet.pt"
    assert main(["compile", str(ROOT / "specs" / "lenet5.arch"), "-o", str(out)]) == 0
    assert _mode(out) == 0o640
    assert archdsl.load_checkpoint(out) is not None


def test_atomic_write_failure_leaves_nothing(tmp_path):
    from archdsl.atomicio import atomic_write

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.bin", boom)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 5. files that are not checkpoints

def test_plain_state_dict_is_named_as_such(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(archdsl.load_spec(RESNET18).build().state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        archdsl.load_checkpoint(path)
    text = str(info.value)
    assert "is a plain state_dict" in text and "not an archdsl checkpoint" in text
    assert "load_state_dict" in text


def test_training_checkpoint_points_at_its_state_dict_entry(tmp_path):
    path = tmp_path / "train.pt"
    torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match=r"not an archdsl checkpoint.*`state_dict` entry"):
        archdsl.load_checkpoint(path)


@pytest.mark.parametrize("key", ["overrides", "sources", "state_dict", "input_shape", "model", "main"])
def test_checkpoint_missing_a_key_says_which(key, tmp_path):
    spec = archdsl.load_spec(RESNET18, layers=[1, 1, 1, 1])
    path = tmp_path / "x.pt"
    spec.save_checkpoint(path, spec.build())
    data = torch.load(path, weights_only=True)
    del data[key]
    torch.save(data, path)
    with pytest.raises(CheckpointError) as info:
        archdsl.load_checkpoint(path)
    assert f"lacks `{key}`" in str(info.value)
    assert not isinstance(info.value, KeyError)


def test_damaged_entries_and_unreadable_files(tmp_path):
    spec = archdsl.load_spec(RESNET18, layers=[1, 1, 1, 1])
    path = tmp_path / "x.pt"
    spec.save_checkpoint(path, spec.build())
    data = torch.load(path, weights_only=True)
    torch.save({**data, "overrides": ["num_classes"]}, path)
    with pytest.raises(CheckpointError, match="damaged archdsl checkpoint: `overrides`"):
        archdsl.load_checkpoint(path)
    torch.save({**data, "version": 99}, path)
    with pytest.raises(CheckpointError, match="unsupported checkpoint version 99"):
        archdsl.load_checkpoint(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not an archdsl checkpoint"):
        archdsl.load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="holds list"):
        archdsl.load_checkpoint(path)


def test_version_1_checkpoint_as_earlier_archdsl_wrote_it_still_loads(tmp_path):
    """The payload exactly as archdsl 0.1's save_checkpoint wrote it (the format has not changed)."""
    spec = archdsl.load_spec(RESNET18, num_classes=5)
    model = spec.build().eval()
    path = tmp_path / "old.pt"
    torch.save({"format": FORMAT, "version": 1, "model": spec.name, "main": spec.main,
                "sources": dict(spec.sources), "overrides": dict(spec.overrides), "input_shape": None,
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)
    again = archdsl.load_checkpoint(path).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


# ------------------------------------------------------------------ 6. ops that own a tensor directly

def test_direct_parameter_ops_are_documented_as_having_parameters():
    text = (ROOT / "docs" / "ops.md").read_text(encoding="utf-8")
    for name in ("class_token", "pos_embedding", "layer_scale", "parameter"):
        assert re.search(rf"^\| \[`{name}`\]\(#{name}\) \| \w+ \| \d \| yes \|", text, re.M), name
        section = text.split(f"#### `{name}`", 1)[1].split("\n#", 1)[0]
        assert "| Has parameters | yes |" in section
        assert "named by the label" in section
    buffer = text.split("#### `buffer`", 1)[1].split("\n#", 1)[0]
    assert "| Has parameters | no |" in buffer


def test_direct_parameter_tensor_is_named_by_its_label():
    spec = archdsl.load_spec("""
block B() {
    gamma: layer_scale(1e-6)
}
model m input 3x32x32 {
    conv2d(16, 8, stride = 8)
    flatten(2)
    permute([0, 2, 1])
    cls: class_token()
    pos: pos_embedding()
    blk: B()
}
""")
    keys = set(spec.build().state_dict())
    assert {"cls", "pos", "blk.gamma"} <= keys
    assert not keys & {"class_token", "pos_embedding", "blk.layer_scale"}
    doc = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    assert "under the op's name" not in doc
    assert "`cls: class_token()` gives the\n`state_dict` key `cls`" in doc


# ------------------------------------------------------------------ 7. file-level diagnostics with a location

TWO_MODELS = "model small input 3x8x8 {\n    relu()\n}\n\nmodel large input 3x8x8 {\n    relu()\n}\n"


def test_several_models_points_at_the_second_declaration():
    err = _error(TWO_MODELS)
    d = err.diagnostics[0]
    assert "defines several models (small, large); choose one with --model" in d.message
    assert d.span is not None and (d.span.line, d.span.column) == (5, 1)
    assert d.span.source.line(d.span.line)[d.span.column - 1:d.span.end_column - 1] == "model large"
    assert "--model small" in d.help


@pytest.mark.parametrize("name, help_", [("larg", "did you mean `large`?"), ("tiny", "models: small, large")])
def test_no_such_model_points_at_the_first_declaration(name, help_):
    err = _error(TWO_MODELS, model=name)
    d = err.diagnostics[0]
    assert d.message == f"<string> has no model `{name}`"
    assert d.span is not None and (d.span.line, d.span.column) == (1, 1)
    assert d.help == help_
    assert "-->" in err.render()


def test_unlabelled_owned_tensors_take_the_op_name_and_never_a_position_number():
    text = """model m input 3x32x32 {
  conv2d(8, 4, stride = 4)
  flatten(2)
  permute([0, 2, 1])
  class_token()
  layernorm()
  layer_scale()
}"""
    spec = archdsl.load_spec(text)
    model = spec.build()
    assert list(model.state_dict()) == ["class_token", "layer_scale", "0.weight", "0.bias", "3.weight", "3.bias"]
    assert tuple(model(torch.randn(1, 3, 32, 32)).shape[1:]) == spec.output_shape == (65, 8)
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(text.replace("  layer_scale()", "  layer_scale()\n  layer_scale()"))
    [d] = e.value.diagnostics
    assert "already taken" in d.message and d.span.line == 8 and "label it" in d.help


@pytest.mark.parametrize("kwargs,needle,column", [
    ({"foo": 1}, "has no parameter `foo` to set", 1),
    ({"n": archdsl.Override("1 +")}, "cannot parse the value of `n`", 9),
    ({"n": archdsl.Override("nosuch")}, "unknown name `nosuch`", 9),
    ({"input_shape": (0,)}, "invalid input shape", 27),
    ({"input_shape": (2 ** 40,)}, "invalid input shape", 27),
])
def test_errors_in_overrides_point_at_what_they_override(kwargs, needle, column):
    with pytest.raises(SpecError) as e:
        archdsl.load_spec("model m(n: int = 3) input [8] { linear(n) }", **kwargs)
    [d] = e.value.diagnostics
    assert needle in d.message and d.span is not None and (d.span.line, d.span.column) == (1, column)


@pytest.mark.parametrize("data,line,column", [
    (b"model m input [3] {\n  relu()\x00\n}\n", 2, 9),
    (b"model m input [3] {\n  relu() \xff\xfe\n}\n", 2, 10),
])
def test_an_unreadable_main_file_points_at_the_offending_byte(tmp_path, data, line, column):
    path = tmp_path / "bad.arch"
    path.write_bytes(data)
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(str(path))
    [d] = e.value.diagnostics
    assert d.span is not None and (d.span.line, d.span.column) == (line, column)
    assert "relu()" in d.render()


def test_a_long_line_is_quoted_as_a_window_around_the_caret():
    from archdsl.diagnostics import MAX_QUOTED
    line = "  " + "relu() " * 100 + "nosuch() " + "relu() " * 100
    with pytest.raises(SpecError) as e:
        archdsl.load_spec("model m input [3] {\n" + line + "\n}")
    rendered = e.value.render().split("\n")
    quoted = next(r for r in rendered if r.startswith("2 | "))[4:]
    caret = next(r for r in rendered if "^" in r)
    assert quoted.startswith("…") and quoted.endswith("…") and quoted.strip("…") in line
    assert len(quoted.strip("…")) == MAX_QUOTED
    start = caret.index("^") - 4
    assert quoted[start:start + 6] == "nosuch" and caret.count("^") == 6


def test_a_main_file_over_the_size_budget_points_at_its_first_line(tmp_path):
    path = tmp_path / "big.arch"
    path.write_text("model m input [3] { relu() }\n" + "# padding\n" * 30000)
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(str(path))
    [d] = e.value.diagnostics
    assert "`file_bytes` budget" in d.message and (d.span.line, d.span.column) == (1, 1)
    assert "model m input [3]" in d.render()
    assert archdsl.load_spec(str(path), limits={"file_bytes": 1 << 20}).output_shape == (3,)


@pytest.mark.parametrize("ret,kind", [('return {"out": in}', dict), ("return [in]", tuple), ("return in", torch.Tensor)])
def test_a_one_entry_result_keeps_its_structure(ret, kind):
    spec = archdsl.load_spec("model m input 3x8x8 { conv2d(4, 1); %s }" % ret)
    y = spec.build()(torch.randn(1, 3, 8, 8))
    assert isinstance(y, kind)


def test_a_too_long_literal_inside_a_label_template_is_located_at_the_template():
    """Found by the fuzzer (seed 2024, case 690): a 151-digit number in `"denseblock{i + 1...}"` raised
    lark's VisitError (a traceback) from the template's expression parser."""
    text = 'model m input 3x8x8 {\n    for i in range(2) {\n        "b{i + ' + "1" * 151 + '}": conv2d(4, 1)\n    }\n}'
    for trusted in (True, False):
        with pytest.raises(SpecError) as e:
            archdsl.load_spec(text, trusted=trusted)
        d = e.value.diagnostics[0]
        assert "integer literal of 151 digits is too long" in d.message
        assert (d.span.line, d.span.column) == (3, 12)     # the template's expression
