"""Inputs that used to escape as tracebacks, hangs or broken modules (issue 11): each is now a located
diagnostic, or a spec that builds and runs."""

from __future__ import annotations

import keyword
import os
import warnings

import pytest
import torch
from torch import fx, nn

import archdsl
from archdsl.diagnostics import SpecError
from archdsl.ir import RESERVED_NAMES


def located_error(text: str, needle: str, line: int | None = None):
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(text)
    d = next((d for d in e.value.diagnostics if needle in d.message), None)
    assert d is not None, e.value.render()
    assert d.span is not None
    if line is not None:
        assert d.span.line == line
    return d


@pytest.mark.parametrize("text,needle", [
    ("let x = " + "9" * 5000 + "\nmodel m input [3] { relu() }", "integer literal of 5000 digits is too long"),
    ("model m input [3] { for i in range(10 ** 19) { relu() } }", "range of 10000000000000000000 items"),
    ("model m input [3] { for i in range(2 ** 64, 0, -1) { relu() } }", "items is too long"),
    ("model m input [3] { let a = 10 ** 200 * 10 ** 200\nlinear(3) }", "integer too large"),
    ("model m input [3] { linear(int(float(2 ** 250) * 2 ** 250 * 2 ** 250 * 2 ** 250 * 2 ** 250)) }",
     "cannot convert inf to an integer"),
    ("model m input [3] { linear(int(float(2 ** 250) ** 10)) }", "arithmetic overflow"),
    ("model m input [3] { linear(round(float(10) / 1e-320 / 1e-320)) }", "cannot round inf"),
    ("model m input [3] { linear(make_divisible(exp(700) * exp(700))) }", "cannot make_divisible inf"),
    ("model m input [3] { let d = {\"a\": 1}\nlinear(d[[{\"b\": 2}]]) }", "a dict is indexed by a string or number"),
    ("model m input [3] { let s = \"ab\" * 3 }", "expected a number"),
])
def test_evaluator_limits_are_located_errors(text, needle):
    located_error(text, needle)


@pytest.mark.parametrize("target,needle", [
    ("/dev/urandom", "not a regular file"),
    ("/dev/zero", "not a regular file"),
    (".", "not a regular file"),
    ("a\x00b", "the path contains a NUL character"),
])
def test_use_reads_only_regular_text_files(target, needle):
    located_error(f'use "{target}"\nmodel m input [3] {{ relu() }}', needle, line=1)


def test_use_refuses_binary_and_huge_files(tmp_path):
    (tmp_path / "bin.arch").write_bytes(b"model m input [3] { relu() }\x00\x01")
    (tmp_path / "latin1.arch").write_bytes("# caf\xe9\n".encode("latin-1"))
    from archdsl.elaborate.loader import MAX_SPEC_BYTES
    with open(tmp_path / "huge.arch", "wb") as f:
        f.truncate(MAX_SPEC_BYTES + 1)
    for name, needle in (("bin.arch", "a binary file"), ("latin1.arch", "not UTF-8 text"),
                         ("huge.arch", "larger than")):
        main = tmp_path / f"main_{name}"
        main.write_text(f'use "{name}"\nmodel m input [3] {{ relu() }}\n')
        with pytest.raises(SpecError) as e:
            archdsl.load_spec(main)
        assert needle in e.value.diagnostics[0].message and e.value.diagnostics[0].span.line == 1


@pytest.mark.parametrize("sep", ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_the_quoted_line_is_the_line_named(sep):
    text = f"model m input [3] {{\n    # a comment{sep}with a line separator Python would split at\n    conv(3)\n}}\n"
    d = located_error(text, "unknown op or block `conv`", line=3)
    assert "conv(3)" in d.render().splitlines()[3]


def test_reserved_names_cover_every_attribute_of_the_built_module_classes():
    for obj in (fx.GraphModule(nn.Module(), fx.Graph()), nn.Sequential(), nn.ModuleList(), nn.ModuleDict(),
                nn.Module()):
        missing = set(dir(obj)) - RESERVED_NAMES
        assert not missing, f"add to archdsl.ir.RESERVED_NAMES: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES | set(keyword.kwlist) | {"self"}))
def test_a_label_that_would_clash_is_a_located_error(name):
    located_error(f'model m input [3] {{\n    "{name}": linear(3)\n}}', "a module cannot be named", line=2)


@pytest.mark.parametrize("name", ["torch", "operator", "fx", "getattr", "print", "match", "case", "x",
                                  "x1", "input", "type_", "Block"])
def test_other_labels_build_and_run(name):
    text = (f'model m input [3] {{ "{name}": linear(3); relu(); residual {{ "{name}2": linear(3) }}\n'
            f'let p = "{name}3": parameter([3])\nfrom in * p }}')
    model = archdsl.load_spec(text).build().eval()
    x = torch.randn(2, 3)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = model(x)
        assert torch.equal(torch.jit.script(model)(x), y)
        assert torch.equal(fx.symbolic_trace(model)(x), y)
    assert f"{name}.weight" in model.state_dict() and f"{name}3" in model.state_dict()


def test_use_with_a_dangling_symlink_or_fifo(tmp_path):
    fifo = tmp_path / "pipe.arch"
    os.mkfifo(fifo)
    main = tmp_path / "main.arch"
    main.write_text('use "pipe.arch"\nmodel m input [3] { relu() }\n')
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(main)   # a FIFO would block a reader forever
    assert "not a regular file" in e.value.diagnostics[0].message


def test_an_empty_labelled_for_in_a_graph_module_builds():
    spec = archdsl.load_spec("model m input [3] {\n    residual { linear(3) }\n    layers: for i in range(0) { relu() }\n"
                             "    linear(2)\n}")
    model = spec.build()
    assert model(torch.zeros(1, 3)).shape == (1, 2)
    assert isinstance(model.layers, nn.Module) and len(list(model.layers.children())) == 0


@pytest.mark.parametrize("text,needle,line", [
    ("let x = " + " + ".join(["1"] * 5000) + "\nmodel m input [3] { relu() }", "nests more than 200 levels", 1),
    ("model m input [3] {\n  let y = 2\n  let x = " + " * ".join(["y"] * 3000) + "\n  relu() }",
     "nests more than 200 levels", 3),
    ("model m input [3] {\n" + "seq { " * 300 + "relu()" + " }" * 300 + "\n}", "nests more than 200 levels", 2),
    ("model m input [2 ** 64] { relu() }", "the input shape must be a list of positive integers", 1),
    ("model m input 3x8x8 {\n  conv2d(2 ** 40, 3)\n}", "is too large", 2),
    ("model m input [1024] {\n  linear(2 ** 30)\n}", "would hold", 2),
    ("model m input [3] {\n  init linear.weight = normal(std = -1.0)\n  linear(3)\n}", "must be a finite number >= 0", 2),
    ("model m input [3] {\n  init linear.weight = normal(std = 1e400)\n  linear(3)\n}", "must be a finite number", 2),
    ("model m input [3] {\n  init linear.weight = uniform(1.0, 0.0)\n  linear(3)\n}", "needs a <= b", 2),
])
def test_budgets_and_ranges_are_located_errors(text, needle, line):
    located_error(text, needle, line)


def test_suggestions_ignore_case():
    d = located_error("model m input [3] { ReLU() }", "unknown op or block `ReLU`")
    assert d.help == "did you mean `relu`?"


def test_a_file_without_a_model_points_at_its_first_line():
    d = located_error("# nothing here\nlet x = 3\n", "defines no model", line=1)
    assert "# nothing here" in d.render()


@pytest.mark.parametrize("text,word,fix", [
    ("letx = 3\nmodel m input [3] { relu() }", "letx", "let x"),
    ("modelm input [3] { relu() }", "modelm", "model m"),
])
def test_a_keyword_glued_to_a_name_is_not_read_as_two_words(text, word, fix):
    d = located_error(text, f"unexpected `{word}`", line=1)
    assert d.help == f"did you mean `{fix}`?"
