"""Golden tests of the diagnostics: every broken spec in tests/bad_specs/ and its exact message.

Each case is ``tests/bad_specs/NAME.arch`` (loaded from the repository root, so locations
read ``tests/bad_specs/NAME.arch:L:C``) with the expected ``SpecError.render()`` text in
``tests/bad_specs/NAME.expected`` (exactly, with no newline added at the end). Files under ``tests/bad_specs/lib/`` are helpers that
cases import; they are not cases themselves.

To regenerate the expected files after an intended change of wording, run

    ARCHDSL_UPDATE_GOLDEN=1 python -m pytest -q tests/test_diagnostics.py

and review the diff as a user would read the messages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import archdsl
from archdsl import SpecError
from archdsl.syntax.parser import lark_parser

ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = ROOT / "tests" / "bad_specs"
CASES = sorted(CASES_DIR.glob("*.arch"))  # not recursive: lib/ holds helpers only
UPDATE = os.environ.get("ARCHDSL_UPDATE_GOLDEN") == "1"

LOCATION = re.compile(r"^tests/bad_specs/(lib/)?[A-Za-z0-9_]+\.arch:\d+:\d+$")
SOURCE_ECHO = re.compile(r"^\s*\d+ \| .*$", re.M)   # "12 |     conv2d(...)": the user's own text
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _terminal_names() -> set[str]:
    return {t.name for t in lark_parser().terminals} | {"$END"}


def _leaked_terminals(text: str) -> list[str]:
    """Internal Lark terminal names in rendered diagnostics (the echoed source lines excluded)."""
    text = SOURCE_ECHO.sub("", text)
    names = _terminal_names()
    leaks = re.findall(r"__[A-Z]+(?:_\d+)?|\$END", text)
    # A terminal name on its own in a code span (`RBRACE`) is a leak; inside an example
    # (`model NAME input ...`) it is a placeholder.
    leaks += [s.strip("`") for s in CODE_SPAN.findall(text) if s.strip("`") in names]
    words = re.findall(r"\b[A-Z][A-Z_]*[A-Z]\b", CODE_SPAN.sub("", text))
    leaks += [w for w in words if w in names]
    return leaks


def _load_error(path: Path, monkeypatch) -> SpecError:
    monkeypatch.chdir(ROOT)
    rel = path.relative_to(ROOT).as_posix()
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(rel)
    return info.value


def test_there_are_cases():
    assert len(CASES) >= 30
    orphans = sorted(p.name for p in CASES_DIR.glob("*.expected") if not p.with_suffix(".arch").exists())
    assert not orphans, f"expected files without a case: {orphans}"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_diagnostic_text(path, monkeypatch):
    err = _load_error(path, monkeypatch)
    rendered = err.render()
    golden = path.with_suffix(".expected")
    if UPDATE:
        golden.write_text(rendered, encoding="utf-8")
    else:
        assert golden.exists(), f"{golden.name} missing: run with ARCHDSL_UPDATE_GOLDEN=1 to create it"
        assert rendered == golden.read_text(encoding="utf-8")

    assert "Traceback" not in rendered
    assert not _leaked_terminals(rendered), f"internal terminal names in:\n{rendered}"
    assert err.diagnostics
    for d in err.diagnostics:
        if d.span is not None:
            assert LOCATION.match(d.span.location), d.span.location
            assert f"--> {d.span.location}\n" in d.render() + "\n"
    assert err.diagnostics == sorted(err.diagnostics, key=lambda d: d.sort_key())


def test_several_independent_errors_reported_together(monkeypatch):
    err = _load_error(CASES_DIR / "several_errors.arch", monkeypatch)
    assert len(err.diagnostics) == 3
    lines = [d.span.line for d in err.diagnostics]
    assert lines == sorted(lines) and len(set(lines)) == 3
    assert [d.message for d in err.diagnostics] == [
        "unknown op or block `conv`",
        "`conv2d` has no argument `strides`",
        "unknown name `num_clases`",
    ]
    assert err.render().endswith("\n\n3 errors found")


def test_leak_check_catches_terminal_names():
    assert _leaked_terminals("error: syntax error\n  = help: expected RBRACE or __ANON_0")
    assert _leaked_terminals("expected `LPAR`")
    assert not _leaked_terminals("help: add `model NAME input CxHxW { ... }`\n3 |     NAME = 1")
