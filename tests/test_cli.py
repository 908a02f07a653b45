"""The command line: output, exit codes (0 ok, 1 spec errors, 2 usage errors), no tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from .conftest import ROOT


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "archdsl", *args], cwd=cwd, capture_output=True, text=True)


def test_check_prints_layer_table():
    r = run("check", "specs/resnet18.arch")
    assert r.returncode == 0, r.stderr
    assert "resnet18: input 3x224x224 -> output 1000" in r.stdout
    assert "layer1.0.conv1" in r.stdout and "conv 3, 64" in r.stdout
    assert "params: 11,689,512" in r.stdout


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_check_emit_ir(fmt):
    r = run("check", "specs/lenet5.arch", "--emit-ir", fmt)
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(r.stdout) if fmt == "yaml" else json.loads(r.stdout)
    assert data["model"] == "lenet5" and data["num_params"] == 61706
    assert [n["path"] for n in data["nodes"]][:2] == [None, "conv1"]


def test_compile_prints_summary_and_saves(tmp_path):
    out = tmp_path / "lenet.pt"
    r = run("compile", "specs/lenet5.arch", "--set", "num_classes=4", "--input", "1x36x36", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "lenet5" in r.stdout and "params  " in r.stdout
    assert re.search(r"^input +1x36x36$", r.stdout, re.M)
    assert out.exists()


def test_compile_on_meta():
    r = run("compile", "specs/resnet50.arch", "--device", "meta")
    assert r.returncode == 0, r.stderr
    assert "25,557,032" in r.stdout


def test_spec_error_exit_1_without_traceback(tmp_path):
    bad = tmp_path / "bad.arch"
    bad.write_text("model m input 3x8x8 {\n    conv2d(4, 9)\n}\n")
    r = run("check", str(bad))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "is larger than its" in r.stderr and "bad.arch:2:" in r.stderr


@pytest.mark.parametrize("args", [
    ["check", "specs/nope.arch"],
    ["compile", "specs/lenet5.arch", "--input", "1xAx3"],
    ["compile", "specs/lenet5.arch", "--set", "num_classes"],
    ["compile", "specs/lenet5.arch", "--dtype", "int3"],
    ["frobnicate"],
    [],
])
def test_usage_errors_exit_2(args):
    r = run(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_unknown_set_is_spec_error():
    r = run("check", "specs/lenet5.arch", "--set", "num_clases=3")
    assert r.returncode == 1
    assert "did you mean `num_classes`" in r.stderr


@pytest.mark.parametrize("cmd", [[], ["check"], ["compile"], ["summary"]])
def test_help(cmd):
    r = run(*cmd, "--help")
    assert r.returncode == 0
    assert "usage: archdsl" in r.stdout
