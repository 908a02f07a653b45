"""Shared fixtures: the repository root, every spec in specs/, torchvision (imported safely)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p for p in (ROOT / "specs").glob("*.arch"))
SPEC_NAMES = [p.stem for p in SPECS]


@pytest.fixture(scope="session")
def tv():
    from archdsl.testing import import_torchvision
    return import_torchvision()


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    return ROOT
