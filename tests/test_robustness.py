"""Mutated specs never crash: archdsl either reports a SpecError or builds a model that runs.

Seeded random edits (deleted characters, inserted tokens, changed numbers) of every spec in
``specs/``. For each mutant, ``load_spec`` must raise ``SpecError`` (whose text renders) or
return a spec whose model builds on the meta device and whose real output shape equals the
checker's -- never another exception, and never a failure later inside torch.
"""

from __future__ import annotations

import random
import re

import pytest

import archdsl
from archdsl import SpecError
from archdsl.fuzz import check_spec

from .conftest import ROOT

TOKENS = ["(", ")", "{", "}", ",", "=", ":", "0", "-1", "1.5", '"x"', "in", "in.channels", "residual", "concat",
          "for", "if", "else", "let", "true", "[", "]", "*", "/", "//", "%", "x", "seq", "shortcut", "init", ".",
          "3x0x0", "\n", "none", "1e309", "10**10", "2**64"]
NUMBERS = ["0", "1", "7", "-3", "1000", "2.5", "true"]
SPECS = ROOT / "specs"
FILES = sorted(SPECS.rglob("*.arch"))
MUTANTS_PER_SEED = 25


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        i, roll = rng.randrange(len(text) + 1), rng.random()
        if roll < 0.3:
            text = text[:i] + text[i + rng.randint(1, 5):]
        elif roll < 0.7:
            text = text[:i] + " " + rng.choice(TOKENS) + " " + text[i:]
        else:
            numbers = list(re.finditer(r"\b\d+\b", text))
            if numbers:
                m = rng.choice(numbers)
                text = text[:m.start()] + rng.choice(NUMBERS) + text[m.end():]
    return text


@pytest.mark.parametrize("seed", range(8))
def test_mutated_specs_fail_cleanly_or_work(seed, tmp_path):
    rng = random.Random(seed)
    # mirror specs/ so relative imports of mutated and unmutated files resolve
    for f in FILES:
        dst = tmp_path / f.relative_to(SPECS)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(f.read_text())
    for _ in range(MUTANTS_PER_SEED):
        f = rng.choice(FILES)
        target = tmp_path / f.relative_to(SPECS)
        mutant = mutate(f.read_text(), rng)
        target.write_text(mutant)
        main = target if target.parent == tmp_path else tmp_path / "resnet18.arch"
        try:
            spec = archdsl.load_spec(main)
        except SpecError as e:
            assert e.diagnostics and e.render()
        else:  # builds on meta and runs with the checked shapes (eval mode: batch 1; dict and tuple results)
            assert check_spec(spec)[0] == "ok", mutant
        finally:
            target.write_text(f.read_text())
