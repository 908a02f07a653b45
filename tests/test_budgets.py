"""Budgets (archdsl.limits) and the untrusted mode: every budget is a located error that
names it and says how to raise it, the load stops at the first budget that runs out, and
``trusted=False`` confines ``use`` and caps what ``build()`` may allocate."""

from __future__ import annotations

import os

import pytest

import archdsl
from archdsl import Limits, SpecError
from archdsl.cli import main
from archdsl.limits import TRUSTED, UNTRUSTED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RECURSIVE = """block B(n: int) {
  if n > 0 { B(n - 1) B(n - 1) } else { relu() }
}
model m input [8] { B(12) }
"""


@pytest.mark.parametrize("name,limit,text,line", [
    ("nodes", 50, "model m input [8] {\n  for i in range(100) { relu() }\n}", 2),
    ("calls", 1000, RECURSIVE, 2),
    ("steps", 10_000, "model m input [8] {\n  for i in range(100) { for j in range(1000) { let x = i } }\n  relu()\n}", 2),
    ("items", 1000, "let big = [[0] * 100 for i in range(100)]\nmodel m input [8] { relu() }", 1),
])
def test_a_spent_budget_is_one_located_error_naming_it(name, limit, text, line):
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(text, limits={name: limit})
    diags = e.value.diagnostics
    assert len(diags) == 1, e.value.render()  # the load stops at once: no cascade
    d = diags[0]
    assert f"`{name}` budget" in d.message and f"{limit:,}" in d.message
    assert d.span is not None and d.span.line == line
    assert f"--limit {name}=" in d.help and f'limits={{"{name}"' in d.help
    archdsl.load_spec(text, limits={name: limit * 1000})  # raising it is enough


@pytest.mark.parametrize("name,limit,text,needle", [
    ("list_len", 100, "model m input [8] {\n  for i in range(200) { relu() }\n}", "range of 200 items"),
    ("list_len", 100, "let x = [1] * 101\nmodel m input [8] { relu() }", "`list_len` budget"),
    ("block_depth", 5, RECURSIVE.replace("B(n - 1) B(n - 1)", "B(n - 1)"), "nested more than 5 deep"),
    ("tree_depth", 20, "let x = " + "[" * 30 + "1" + "]" * 30 + "\nmodel m input [8] { relu() }",
     "`tree_depth` budget"),
    ("literal_digits", 5, "let x = 1234567\nmodel m input [8] { relu() }", "`literal_digits` budget"),
])
def test_the_other_budgets_are_located_errors(name, limit, text, needle):
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(text, limits={name: limit})
    d = next((d for d in e.value.diagnostics if needle in d.message), None)
    assert d is not None and d.span is not None, e.value.render()
    archdsl.load_spec(text)


def test_file_bytes_budget_on_use(tmp_path):
    (tmp_path / "lib.arch").write_text("".join(f"let x{i} = 1\n" for i in range(200)))
    (tmp_path / "main.arch").write_text('use "lib.arch"\nmodel m input [8] { relu() }\n')
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(str(tmp_path / "main.arch"), limits={"file_bytes": 1000})
    [d] = e.value.diagnostics
    assert "`file_bytes` budget" in d.message and d.span.line == 1
    archdsl.load_spec(str(tmp_path / "main.arch"))


def test_budgets_are_far_above_the_zoo():
    """The largest zoo model (efficientnet_v2_l) loads under a fortieth of each trusted budget."""
    small = {k: getattr(TRUSTED, k) // 40 for k in ("nodes", "calls", "steps", "items")}
    spec = archdsl.load_spec(os.path.join(ROOT, "specs", "efficientnet_v2_l.arch"), limits=small)
    assert spec.num_params == 118_515_272


def test_untrusted_budgets_are_tighter():
    for k in ("nodes", "calls", "steps", "items", "list_len", "block_depth", "tree_depth", "file_bytes"):
        assert getattr(UNTRUSTED, k) < getattr(TRUSTED, k), k
    assert UNTRUSTED.build_bytes > 0 and TRUSTED.build_bytes == 0


def test_too_many_errors_stop_at_a_hundred():
    text = "model m input [8] {\n" + "".join(f"  nosuch{i}()\n" for i in range(300)) + "}\n"
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(text)
    diags = e.value.diagnostics
    assert len(diags) == 101
    assert "too many errors" in diags[-1].message and diags[-1].span is not None


def test_limits_reject_unknown_or_negative_values():
    with pytest.raises(ValueError, match="unknown limit `node`"):
        Limits().replace(node=3)
    with pytest.raises(ValueError, match="non-negative"):
        Limits().replace(nodes=-1)
    with pytest.raises(TypeError):
        archdsl.load_spec("model m input [8] { relu() }", limits=5)


# ------------------------------------------------------------------ untrusted mode
def _tree(tmp_path):
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "sub").mkdir()
    (tmp_path / "secret.arch").write_text("let a = 1\nlet b = 2\nthe secret line\n")
    (tmp_path / "svc" / "sub" / "lib.arch").write_text("block B() { relu() }\n")
    os.symlink(tmp_path / "secret.arch", tmp_path / "svc" / "link.arch")
    return tmp_path / "svc"


@pytest.mark.parametrize("target,why", [
    ("/etc/passwd", "absolute path"),
    ("../secret.arch", "outside the spec's directory"),
    ("link.arch", "outside the spec's directory"),          # a symbolic link out of the tree
    ("sub/../../secret.arch", "outside the spec's directory"),
])
def test_untrusted_use_stays_inside_the_spec_directory(tmp_path, target, why):
    svc = _tree(tmp_path)
    main_file = svc / "main.arch"
    main_file.write_text(f'use "{target}"\nmodel m input [8] {{ relu() }}\n')
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(str(main_file), trusted=False)
    text = e.value.render()
    assert why in text and "secret line" not in text and "root:" not in text
    assert all(d.span is not None and d.span.line == 1 for d in e.value.diagnostics)
    if not target.startswith("/"):  # a trusted load reads it (and quotes its third line: the user's own file)
        with pytest.raises(SpecError, match="secret line"):
            archdsl.load_spec(str(main_file))


def test_untrusted_use_inside_the_tree_and_the_zoo(tmp_path):
    svc = _tree(tmp_path)
    (svc / "main.arch").write_text('use "sub/lib.arch"\nmodel m input [8] { B() }\n')
    assert archdsl.load_spec(str(svc / "main.arch"), trusted=False).output_shape == (8,)
    text = 'use "lib/resnet.arch"\nmodel m input 3x64x64 = ResNet(BasicBlock, [1, 1, 1, 1])\n'
    spec = archdsl.load_spec(text, trusted=False)  # spec text from a service imports from the zoo
    assert spec.num_params == archdsl.load_spec(text.replace("lib/", os.path.join(ROOT, "specs", "lib", ""))).num_params > 0
    with pytest.raises(SpecError, match="cannot import"):
        archdsl.load_spec('use "/etc/hostname"\nmodel m input [8] { relu() }', trusted=False)


def test_untrusted_build_refuses_a_model_over_its_memory_ceiling():
    text = "model m input [1000] { linear(1000) linear(1000) }"
    spec = archdsl.load_spec(text, trusted=False, limits={"build_bytes": 4_000_000})
    with pytest.raises(SpecError) as e:
        spec.build()
    [d] = e.value.diagnostics
    assert "`build_bytes` budget" in d.message and d.span is not None and d.span.line == 1
    assert spec.build(device="meta") is not None  # meta allocates nothing
    assert archdsl.load_spec(text, trusted=False).build() is not None  # 8 GiB default
    assert archdsl.load_spec(text).build() is not None


def test_untrusted_default_ceiling_refuses_a_trillion_parameters():
    text = "model m input [1000000] { linear(1000000) }"
    spec = archdsl.load_spec(text, trusted=False)
    assert spec.num_params == 1_000_001_000_000
    with pytest.raises(SpecError, match="build_bytes"):
        spec.build()


def test_cli_untrusted_and_limit(tmp_path, capsys):
    svc = _tree(tmp_path)
    (svc / "main.arch").write_text('use "../secret.arch"\nmodel m input [8] { relu() }\n')
    assert main(["check", "--untrusted", str(svc / "main.arch")]) == 1
    err = capsys.readouterr().err
    assert "outside the spec's directory" in err and "secret" not in err.split("cannot import")[1].split("\n")[0][20:]
    (svc / "loop.arch").write_text("model m input [8] {\n  for i in range(100) { relu() }\n}\n")
    assert main(["check", "--limit", "nodes=10", str(svc / "loop.arch")]) == 1
    assert "`nodes` budget" in capsys.readouterr().err
    assert main(["check", "--limit", "nodes=1000", str(svc / "loop.arch")]) == 0
    capsys.readouterr()
    assert main(["check", "--limit", "node=10", str(svc / "loop.arch")]) == 2
    assert "unknown limit `node`" in capsys.readouterr().err
    assert main(["check", "--limit", "nodes=ten", str(svc / "loop.arch")]) == 2
