"""The fuzz harness (archdsl/fuzz.py): a seeded campaign with zero defects, and its classifier.

The campaign runs every case in a worker subprocess under a time limit and a memory cap;
each case must end as ``ok`` (builds on meta, runs, the checked shapes and parameter count)
or ``located`` (a SpecError whose every diagnostic quotes the line it names). A long
campaign: ``python -m archdsl.fuzz --cases 100000 --out fuzz-out`` (docs/cli.md, "Fuzzing").
"""

from __future__ import annotations

import os
import random

import pytest

from archdsl import fuzz
from archdsl.diagnostics import Diagnostic, Source, Span, SpecError

#: cases of the CI campaign (``profile="quick"``): about 75 s with 2 workers on 2 shared cores when no case
#: hangs (each hang costs the 10 s limit plus a worker restart)
CI_CASES = int(os.environ.get("ARCHDSL_FUZZ_CASES", "1000"))
CI_SEED = int(os.environ.get("ARCHDSL_FUZZ_SEED", "2024"))


def test_seeded_campaign_has_no_defects(capsys):
    report = fuzz.run_campaign(CI_CASES, seed=CI_SEED, jobs=2, timeout=10.0, memory_mib=3072, profile="quick",
                               trusted=False)
    with capsys.disabled():
        print("\n" + report.table())
    assert report.cases == CI_CASES
    assert report.counts["ok"] > 0 and report.counts["located"] > 0
    details = "\n\n".join(f"[{r.index}] {r.cls} {r.kind}\n{r.message[-1500:]}\n"
                          f"(python -m archdsl.fuzz --seed {CI_SEED} --show {r.index})"
                          for r in report.defects[:10])
    assert report.defect_count == 0, f"{report.table()}\n\n{details}"


# ------------------------------------------------------------------ generation


def test_cases_are_deterministic_and_cover_the_zoo():
    a = [fuzz.generate_case(7, i).to_json() for i in range(40)]
    b = [fuzz.generate_case(7, i).to_json() for i in range(40)]
    assert a == b
    assert [fuzz.generate_case(8, i).to_json() for i in range(40)] != a
    files = fuzz.zoo_files()
    mutated = {fuzz.generate_case(0, i).kind.rsplit(":", 1)[-1] for i in range(6 * len(files))}
    assert set(files) <= mutated  # every spec and family file is mutated
    kinds = {fuzz.generate_case(0, i).kind.split(":")[0] for i in range(200)}
    assert {"mutate", "generated_ops", "generated_grammar"} <= kinds


def test_case_round_trips_through_json():
    case = fuzz.Case(3, "k", "m.arch", {"m.arch": "model m input 3x8x8 { relu() }\u2028\x85",
                                        "odd/b.arch": b"\x00\xff"}, [("odd/fifo", "fifo")])
    assert fuzz.Case.from_json(case.to_json()) == case


def test_every_mutation_returns_text():
    rng = random.Random(0)
    text = (fuzz.ZOO / "resnet18.arch").read_text() + (fuzz.ZOO / "lib" / "resnet.arch").read_text()
    for name, mutate in fuzz.MUTATIONS.items():
        for _ in range(5):
            assert isinstance(mutate(text, rng), str), name
    assert "model gen" in fuzz.random_ops_spec(rng)
    assert isinstance(fuzz.random_grammar_spec(rng), str)


# ------------------------------------------------------------------ classification


def _span(text, line=1, col=1, name="a.arch"):
    return Span(Source(name, text), line, col, line, col + 1)


def test_located_error_is_located():
    text = "model m input 3x8x8 {\n    conv(3)\n}\n"
    err = SpecError([Diagnostic("unknown op `conv`", _span(text, 2, 5), "here")])
    cls, _ = fuzz.classify_error(err, lambda name: text)
    assert cls == "located"


def test_real_spec_error_is_located(tmp_path):
    import archdsl
    p = tmp_path / "bad.arch"
    p.write_text("# a comment\x85 with a separator\nmodel m input 3x8x8 {\n    conv(3)\n}\n")
    with pytest.raises(SpecError) as e:
        archdsl.load_spec(p)
    assert fuzz.classify_error(e.value, lambda name: p.read_text())[0] == "located"


def test_diagnostic_without_location_is_unlocated():
    err = SpecError([Diagnostic("something is wrong")])
    assert fuzz.classify_error(err)[0] == "unlocated"
    text = "model m input 3x8x8 { relu() }\n"
    err = SpecError([Diagnostic("fine", _span(text)), Diagnostic("lost")])
    assert fuzz.classify_error(err, lambda name: text)[0] == "unlocated"


def test_quoting_another_line_is_misrendered():
    on_disk = "line one\fstill line one\nline two\n"
    # a Source whose lines were counted differently from the file (str.splitlines() breaks at \f)
    carried = "still line one\nline two\n"
    err = SpecError([Diagnostic("bad", _span(carried, 1, 1))])
    cls, msg = fuzz.classify_error(err, lambda name: on_disk)
    assert cls == "misrendered" and "still line one" in msg
    # a line beyond the end of the file
    err = SpecError([Diagnostic("bad", _span(on_disk, 9, 1))])
    assert fuzz.classify_error(err, lambda name: on_disk)[0] == "misrendered"


def test_misrendered_when_render_skips_the_quote(monkeypatch):
    text = "a\nb\n"
    monkeypatch.setattr(Diagnostic, "render", lambda self: f"error: {self.message}\n --> a.arch:2:1\n  |\n")
    err = SpecError([Diagnostic("bad", _span(text, 2, 1))])
    assert fuzz.classify_error(err, lambda name: text)[0] == "misrendered"


def test_other_exceptions_are_tracebacks():
    try:
        {}["overrides"]
    except KeyError as e:
        cls, msg = fuzz.classify_error(e)
    assert cls == "traceback" and "KeyError" in msg
    assert fuzz.classify_error(MemoryError())[0] == "memory"


def test_check_spec_ok_and_torch_failure(monkeypatch):
    import archdsl
    spec = archdsl.load_spec("model m input 3x8x8 {\n    conv2d(4, 3)\n    relu()\n}\n")
    assert fuzz.check_spec(spec)[0] == "ok"
    monkeypatch.setattr(type(spec), "num_params", property(lambda self: 1))
    cls, msg = fuzz.check_spec(spec)
    assert cls == "torch_failure" and "parameters" in msg

    def broken_build(self, device=None, dtype=None):
        raise RuntimeError("Storage size calculation overflowed")
    monkeypatch.setattr(type(spec), "build", broken_build)
    assert fuzz.check_spec(spec)[0] == "torch_failure"


def test_output_structure_matches_output_shapes():
    import torch
    t = torch.empty((1, 3, 4), device="meta")
    assert fuzz.output_structure(t) == (3, 4)
    assert fuzz.output_structure((t, t)) == ((3, 4), (3, 4))
    assert fuzz.output_structure({"a": t}) == {"a": (3, 4)}


def test_pool_classifies_hangs_and_worker_deaths():
    """A case over the time limit is a hang, one over the memory cap a memory blow-up; the pool
    replaces the worker and goes on with the next case."""
    hang = fuzz.Case(0, "hang", "h.arch", {"h.arch": "block R(n: int) {\n    if n > 0 { R(n - 1); R(n - 1) } "
                                                     "else { relu() }\n}\nmodel m input 3x8x8 { R(60) }\n"})
    fine = fuzz.Case(1, "fine", "f.arch", {"f.arch": "model m input 3x8x8 {\n    relu()\n}\n"})
    bad = fuzz.Case(2, "bad", "b.arch", {"b.arch": "model m input 3x8x8 {\n    conv(3)\n}\n"})
    results = fuzz.run_cases([hang, fine, bad], jobs=1, timeout=1.5)
    cls = [r.cls for r in results]
    assert cls[1:] == ["ok", "located"]
    assert cls[0] in ("hang", "located")  # "located" once a block-call budget stops it


def test_nul_quoted_as_replacement_character_is_located():
    on_disk = "model m\x00 input 3x8x8 {}\n"
    err = SpecError([Diagnostic("a binary file", _span(on_disk.replace("\x00", "\ufffd"), 1, 8))])
    assert fuzz.classify_error(err, lambda name: on_disk)[0] == "located"


def test_syntax_error_after_a_long_word_is_fast():
    """Regression (found by the fuzzer): the keyword help for an unexpected `=`/`:`/`(` searched the
    whole text before it with a backtracking regex, quadratic in a long run of word characters."""
    import time

    import archdsl
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as e:
        archdsl.load_spec("# " + "x" * 100_000 + "\nlet = 3\n")
    assert time.perf_counter() - t0 < 5
    assert e.value.diagnostics[0].span.line == 2
    assert "`let` is a keyword" in e.value.diagnostics[0].help
