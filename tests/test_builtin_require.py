"""The `require` built-in, and `let`s that cannot be evaluated (no follow-on "unknown name")."""

from __future__ import annotations

import pytest

import archdsl


def errors(text: str) -> list[str]:
    with pytest.raises(archdsl.SpecError) as err:
        archdsl.load_spec(text)
    return [d.message for d in err.value.diagnostics]


def test_require_true_gives_true():
    spec = archdsl.load_spec("""
model m input 3x32x32 {
    let ok = require(in.height % 16 == 0, "unused")
    conv2d(if ok then 8 else 4, 16, stride = 16)
}""")
    assert spec.output_shape == (8, 2, 2)


def test_require_false_is_a_located_error_with_the_message():
    with pytest.raises(archdsl.SpecError) as err:
        archdsl.load_spec("""
block Patchify(patch: int) {
    let fits = require(in.height % patch == 0, "height", in.height, "is not a multiple of", patch)
    conv2d(8, patch, stride = patch)
}
model m input 3x30x30 { Patchify(16) }""")
    [d] = err.value.diagnostics
    assert d.message == "height 30 is not a multiple of 16"
    assert d.span.line == 3


def test_require_needs_a_bool():
    assert errors('model m input 3x8x8 { let x = require(1, "no") }') == [
        "require: the condition must be `true` or `false`, got the integer 1"]


def test_let_after_an_error_is_not_an_unknown_name():
    # the `let` cannot see the shape (the linear failed); using its name later is not a new error
    assert errors("""
model m input 3x8x8 {
    linear(10)
    let c = in.channels
    conv2d(c, 1)
}""") == ["`linear` applied to a 3x8x8 feature map that was not flattened"]


def test_failing_let_is_reported_once():
    assert errors("""
model m input 3x8x8 {
    let c = 1 // 0
    conv2d(c, 1)
}""") == ["division by zero"]
