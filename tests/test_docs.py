"""The documentation stays true: generated pages are current, examples compile, numbers match.

Conventions checked here (see the notes at the top of docs/language.md and docs/models.md):

* A fenced block tagged ``arch`` is a complete spec: it must load with ``archdsl.load_spec``
  as spec text, with the repository root as the working directory (so ``use`` paths in it
  are written relative to the repository root). If it contains a ``# parameters: N``
  comment, the model must have exactly N parameters.
* A fenced block tagged ``arch-fragment`` is part of a spec: it must parse either as a list
  of top-level items or as the body of ``block _Example() { ... }``.
* In docs/models.md, every table row that names a spec file (`` `specs/....arch` ``) and ends
  with a number states that spec's parameter count, optionally under one override given as
  a cell `` `name=expression` ``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import archdsl
from archdsl.diagnostics import SpecError
from archdsl.elaborate.expr import BUILTINS
from archdsl.opdocs import render_ops_markdown
from archdsl.ops import all_ops
from archdsl.ops.init import INIT_FUNCS
from archdsl.syntax.parser import KEYWORDS, parse

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_FILES = sorted(DOCS.glob("*.md"))

_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _blocks(tag: str) -> list:
    """pytest params for every fenced block with ``tag`` in docs/*.md, with readable ids."""
    out = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for m in _FENCE.finditer(text):
            if m.group(1) == tag:
                line = text.count("\n", 0, m.start()) + 1
                out.append(pytest.param(m.group(2), id=f"{path.name}:{line}"))
    return out


ARCH_BLOCKS = _blocks("arch")
FRAGMENT_BLOCKS = _blocks("arch-fragment")


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


# ------------------------------------------------------------------ (a), (b) ops.md


def test_ops_md_is_current():
    path = DOCS / "ops.md"
    assert path.exists(), "docs/ops.md is missing: run `python -m archdsl.opdocs`"
    assert path.read_text(encoding="utf-8") == render_ops_markdown(), \
        "docs/ops.md is out of date: run `python -m archdsl.opdocs`"


def test_ops_md_mentions_every_op_init_function_and_builtin():
    text = (DOCS / "ops.md").read_text(encoding="utf-8")
    missing = [f"op {n}" for n in all_ops() if f"`{n}`" not in text]
    missing += [f"init function {n}" for n in INIT_FUNCS if f"`{n}`" not in text]
    missing += [f"built-in {n}" for n in BUILTINS if f"`{n}`" not in text]
    assert not missing, f"not in docs/ops.md: {', '.join(missing)} (run `python -m archdsl.opdocs`)"


def test_ops_md_documents_every_argument():
    text = (DOCS / "ops.md").read_text(encoding="utf-8")
    for name, op in all_ops().items():
        section = text.split(f"#### `{name}`", 1)[1].split("\n#", 1)[0]
        for arg in op.args:
            assert f"| `{arg.name}` |" in section, f"argument {arg.name} of {name} not documented"


# ------------------------------------------------------------------ (c), (d) examples


def test_docs_have_examples():
    assert len(ARCH_BLOCKS) >= 20 and len(FRAGMENT_BLOCKS) >= 5


@pytest.mark.parametrize("text", ARCH_BLOCKS)
def test_arch_block_loads(text, at_root):
    try:
        spec = archdsl.load_spec(text)
    except SpecError as e:
        pytest.fail(f"example does not load:\n{text}\n{e}")
    stated = re.search(r"#\s*parameters:\s*([\d,]+)", text)
    if stated:
        assert spec.num_params == int(stated.group(1).replace(",", "")), \
            f"{spec.name}: stated {stated.group(1)} parameters, load_spec gives {spec.num_params:,}"


@pytest.mark.parametrize("text", FRAGMENT_BLOCKS)
def test_arch_fragment_parses(text):
    try:
        parse(text, "<fragment>")
        return
    except SpecError as top_level:
        first = top_level
    try:
        parse("block _Example() {\n" + text + "\n}", "<fragment>")
    except SpecError as in_block:
        pytest.fail(f"fragment parses neither as top-level items:\n{first}\n"
                    f"nor as a block body:\n{in_block}")


# ------------------------------------------------------------------ (e) keywords


def test_language_md_mentions_every_keyword():
    text = (DOCS / "language.md").read_text(encoding="utf-8")
    missing = [k for k in KEYWORDS if f"`{k}`" not in text]
    assert not missing, f"keywords not documented in docs/language.md: {', '.join(missing)}"


def test_language_md_mentions_every_parameter_type():
    from archdsl.elaborate.values import TYPE_NAMES
    text = (DOCS / "language.md").read_text(encoding="utf-8")
    assert not [t for t in TYPE_NAMES if f"| `{t}` |" not in text]


# ------------------------------------------------------------------ (f) models.md numbers


def _count_rows():
    rows = []
    text = (DOCS / "models.md").read_text(encoding="utf-8")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        path = next((c[1:-1] for c in cells if re.fullmatch(r"`specs/[\w./-]+\.arch`", c)), None)
        if path is None or not re.fullmatch(r"[\d,]+", cells[-1]):
            continue
        override = next((re.fullmatch(r"`(\w+)=(.+)`", c) for c in cells if re.fullmatch(r"`\w+=.+`", c)), None)
        overrides = {override.group(1): archdsl.Override(override.group(2))} if override else {}
        rows.append(pytest.param(path, overrides, int(cells[-1].replace(",", "")), id=f"models.md:{lineno}"))
    return rows


COUNT_ROWS = _count_rows()


@pytest.mark.parametrize("path,overrides,expected", COUNT_ROWS)
def test_models_md_parameter_counts(path, overrides, expected, at_root):
    spec = archdsl.load_spec(path, **overrides)
    assert spec.num_params == expected, \
        f"{path} {overrides or ''}: docs/models.md says {expected:,}, load_spec gives {spec.num_params:,}"


def test_models_md_lists_every_spec():
    listed = {p.values[0] for p in COUNT_ROWS if not p.values[1]}
    specs = {f"specs/{p.name}" for p in (ROOT / "specs").glob("*.arch")}
    assert specs - listed == set(), f"specs without a row in docs/models.md: {sorted(specs - listed)}"
