"""`archdsl draw`: DOT structure (clusters, folds, joins, labels), escaping, real renders with `dot`.

Renders need the Graphviz binary, which `setup.sh` installs; without it those tests are
skipped locally but fail in CI (where ``CI`` is set), so they cannot be skipped silently.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

import archdsl
from archdsl.backends import dot as dotmod
from archdsl.backends.dot import CATEGORY_COLORS, DrawError, build_view, diagram, has_dot
from archdsl.cli import main
from archdsl.ops import all_ops

from .conftest import ROOT, SPEC_NAMES

needs_dot = pytest.mark.skipif(not has_dot() and not os.environ.get("CI"),
                               reason="Graphviz `dot` is not installed (setup.sh installs it)")

#: the deep specs whose default view must stay small, fast and not too elongated
DEEP = [n for n in ("resnet152", "densenet201", "efficientnet_b7") if n in SPEC_NAMES]


def spec(name: str, **kw) -> archdsl.Spec:
    return archdsl.load_spec(ROOT / "specs" / f"{name}.arch", **kw)


def svg_size(svg: str) -> tuple[float, float]:
    m = re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', svg)
    assert m, svg[:300]
    return float(m.group(1)), float(m.group(2))


def node_labels(dot) -> dict[str, str]:
    """graphviz node id -> label text (HTML tags stripped), from the DOT source."""
    out = {}
    for m in re.finditer(r"^\t+(\w+) \[label=<(.*?)>\s*(?:\w+=|\])", dot.source, re.M):
        out[m.group(1)] = re.sub(r"<[^>]*>", " ", m.group(2))
    return out


def cluster_labels(dot) -> list[str]:
    return [re.sub(r"<[^>]*>", " ", m)
            for m in re.findall(r"subgraph cluster_\w+ \{\n\t+[^\n]*?label=<(.*?)> labeljust", dot.source)]


def dot_syntax(src: str) -> str:
    """DOT source with every quoted string and HTML string removed: what is left is syntax."""
    out, i = [], 0
    while i < len(src):
        c = src[i]
        if c == '"':
            i += 1
            while src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            out.append('""')
        elif c == "<":
            depth = 0
            while True:
                depth += {"<": 1, ">": -1}.get(src[i], 0)
                i += 1
                if depth == 0:
                    break
            out.append("<>")
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


# ------------------------------------------------------------------ colours


def test_every_registry_category_has_a_colour():
    missing = sorted({op.category for op in all_ops().values()} - set(CATEGORY_COLORS))
    assert not missing, f"add a colour for {missing} to CATEGORY_COLORS in archdsl/backends/dot.py"
    assert dotmod.color_for("no-such-category") == dotmod.FALLBACK_COLOR


# ------------------------------------------------------------------ structure


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_default_view_is_small_and_a_connected_dag(name):
    s = spec(name)
    dot, view = diagram(s.ir)
    nodes = view.drawn_nodes()
    assert len(nodes) < 150
    assert len(set(nodes)) == len(nodes)
    succ = {n: [] for n in nodes}
    for a, b in view.edges:
        assert a != b and a in succ and b in succ
        succ[a].append(b)
    # everything is reachable from the input or from a tensor the model owns (`buffer`, `parameter`) ...
    owned = [n for n in nodes if n.startswith("n") and n[1:].isdigit() and
             s.ir.nodes[int(n[1:])].op in ("buffer", "parameter")]
    seen, todo = set(), ["input", *owned]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(succ[n])
    assert seen == set(nodes)
    assert all(succ[n] for n in nodes if n != "output")   # ... and leads somewhere
    assert "digraph" in dot.source


def test_full_depth_without_folding_draws_every_op():
    s = spec("resnet50")
    dot, view = diagram(s.ir, depth=99, fold=False)
    assert len(view.drawn_nodes()) == len(s.ir.nodes) + 1        # + the output marker
    labels = node_labels(dot)
    joins = [k for k, v in labels.items() if v.strip() == "+"]
    assert len(joins) == 16                                      # one residual sum per Bottleneck
    conv1 = next(n for n in s.ir.ops() if n.path == "layer1.0.conv1")
    text = all_ops()["conv2d"].label(conv1.attrs)               # e.g. "conv 1x1, 64"
    assert "64" in text
    assert any("layer1.0.conv1" in v and text in v and "64\u00d756\u00d756" in v and "4.1k params" in v
               for v in labels.values())
    clusters = cluster_labels(dot)
    assert any(c.startswith(" layer3.5 ") and "Bottleneck" in c for c in clusters)
    assert any(c.startswith(" layer1.0.downsample ") for c in clusters)


def test_depth_collapses_blocks_with_their_totals():
    s = spec("resnet50")
    dot, view = diagram(s.ir, depth=0)
    labels = node_labels(dot)
    assert len(view.drawn_nodes()) == 13
    layer3 = next(v for v in labels.values() if "layer3" in v)
    assert "seq of 6 Bottleneck" in layer3 and "1024\u00d714\u00d714" in layer3
    total = sum(n.params for n in s.ir.ops() if n.scope.startswith("layer3"))
    assert dotmod.fmt_num(total) + " params" in layer3 and "MACs" in layer3


def test_resnet152_folds_its_repeated_bottlenecks():
    s = spec("resnet152")
    dot, view = diagram(s.ir, depth=1)
    labels = node_labels(dot)
    assert any("layer3.1 \u2013 layer3.35" in v and "Bottleneck \u00d7 35" in v for v in labels.values())
    assert any(v.split()[0] == "layer3.0" and "Bottleneck" in v and "\u00d7" not in v.split("Bottleneck")[1][:3]
               for v in labels.values())
    # open, the run is one cluster: the first instance, marked x 35
    dot, view = diagram(s.ir, depth=3)
    assert any("layer3.1 \u2013 layer3.35" in c and "\u00d7 35" in c for c in cluster_labels(dot))
    assert sum(1 for v in node_labels(dot).values() if "layer3.1.conv2" in v) == 1
    assert not any("layer3.7." in v for v in node_labels(dot).values())
    # --no-fold draws all 36
    dot, view = diagram(s.ir, depth=1, fold=False)
    assert sum(1 for v in node_labels(dot).values() if v.split()[0].startswith("layer3.")) == 36


def test_expand_opens_chosen_blocks_and_rejects_unknown_paths():
    s = spec("resnet50")
    dot, _ = diagram(s.ir, depth=1, expand=["layer3.0"])
    labels = " ".join(node_labels(dot).values())
    assert "layer3.0.conv2" in labels and "layer2.0.conv2" not in labels
    dot, _ = diagram(s.ir, depth=0, expand=["layer4.*"])
    labels = " ".join(node_labels(dot).values())
    assert "layer4.1.conv1" in labels and "layer1.0" not in labels
    with pytest.raises(DrawError, match="matches no module"):
        diagram(s.ir, expand=["layer9"])
    with pytest.raises(DrawError):
        diagram(s.ir, rankdir="RL")


def test_joins_gates_long_skips_and_containers(at_root):
    dense = archdsl.load_spec("""
    block DenseLayer(growth: int) { norm: batchnorm2d(); relu: relu(); conv: conv2d(growth, 3, padding = 1) }
    model dense input 16x8x8 {
        for i in range(3) { concat(dim = 1) { pass; "layer{i + 1}": DenseLayer(12) } }
    }""")
    dot, view = diagram(dense.ir, depth=0)
    labels = node_labels(dot)
    concats = [v for v in labels.values() if "concat" in v]
    assert len(concats) == 3 and "52\u00d78\u00d78" in concats[-1]
    assert sum(1 for v in labels.values() if "DenseLayer" in v) == 3      # shapes differ: not folded
    assert ("input", next(k for k, v in labels.items() if "concat" in v and "28" in v)) in view.edges

    se = archdsl.load_spec("""
    model se input 32x8x8 {
        conv2d(32, 3, padding = 1)
        se: gate { adaptive_avgpool2d(1); conv2d(8, 1); relu(); conv2d(32, 1); sigmoid() }
    }""")
    dot, view = diagram(se.ir)
    mul = [k for k, n in ((f"n{n.id}", n) for n in se.ir.ops()) if n.op == "mul"]
    assert len(mul) == 1 and sum(1 for a, b in view.edges if b == mul[0]) == 2

    unet = archdsl.load_spec("""
    model tiny_unet input 1x32x32 {
        for i, f in enumerate([8, 16]) {
            "downs.{i}": seq { conv2d(f, 3, padding = 1); relu() }
            tap "skip{i}"
            "pools.{i}": maxpool2d(2)
        }
        bottom: conv2d(32, 3, padding = 1)
        for i, f in enumerate([16, 8]) {
            "ups.{i}": conv_transpose2d(f, 2, stride = 2)
            concat(dim = 1) { from "skip{1 - i}"; pass }
            "dec.{i}": seq { conv2d(f, 3, padding = 1); relu() }
        }
        head: conv2d(2, 1)
    }""")
    dot, view = diagram(unet.ir, depth=0)
    clusters = " ".join(cluster_labels(diagram(unet.ir, depth=1)[0]))
    assert "downs.0" in clusters and not re.search(r"\bdowns\b(?!\.)", clusters)   # containers are not boxes
    down0 = next(it.id for it, _ in view.walk() if it.scope == "downs.0")
    concat_ids = [f"n{n.id}" for n in unet.ir.ops() if n.op == "concat"]
    assert (down0, concat_ids[-1]) in view.edges        # the long skip reaches the last concat


def test_wrapping_cuts_long_chains_into_columns():
    s = spec("resnet152")
    one = diagram(s.ir, columns=1)[0].source
    auto = diagram(s.ir)[0].source
    assert "constraint=false" not in one
    assert "constraint=false" in auto and "(cont.)" not in auto     # ResNet: one column per stage
    assert "(cont.)" in diagram(spec("vgg16").ir, depth=9, columns=3)[0].source


# ------------------------------------------------------------------ escaping

NASTY = ['a"b', 'x\\', 'e"]; evil [shape=star', "{brace}", "<b>bold</b>", "new\nline", "amp & semi;", "\\N\\G"]


def _nastify(s):
    g = s.ir
    for i, n in enumerate(g.ops()):
        if n.name is not None:
            n.name = NASTY[i % len(NASTY)]
    for i, sc in enumerate(g.scopes.values()):
        if sc.block:
            sc.block = NASTY[i % len(NASTY)]
    g.name = 'model"; node [shape=star]; x="'
    return s


def test_labels_are_escaped_in_the_dot_source():
    s = _nastify(spec("resnet18"))
    src = s.to_dot(depth=1, expand=["layer2.0"]).source
    syntax = dot_syntax(src)          # outside strings: only archdsl's own ids and attributes
    assert "star" not in syntax and "evil" not in syntax and "bold" not in syntax and "brace" not in syntax
    assert syntax.count("{") == syntax.count("}")
    assert "&lt;b&gt;bold&lt;/b&gt;" in src and "e&quot;]; evil [shape=star" in src
    assert "new\nline" not in src


@needs_dot
def test_escaped_labels_render_and_inject_nothing():
    s = _nastify(spec("resnet18"))
    dot, view = diagram(s.ir, depth=2, expand=["layer2.0"])
    out = subprocess.run(["dot", "-Tjson"], input=dot.source.encode(), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    import json
    layout = json.loads(out.stdout)
    assert layout["name"] == 'model"; node [shape=star]; x="'
    nodes = [o for o in layout["objects"] if "nodes" not in o]      # clusters list their nodes
    assert sorted(o["name"] for o in nodes) == sorted(view.drawn_nodes())
    assert all(o.get("shape") in ("box", "circle", "ellipse") for o in nodes)
    assert not any(k in o for o in layout["objects"] for k in ("evil", "x"))
    svg = dot.pipe(format="svg").decode()
    assert "e&quot;]; evil [shape=star" in svg and "&lt;b&gt;bold&lt;/b&gt;" in svg
    assert ">layer1.0.\\N\\G<" in svg and ">x\\<" in svg and "{brace}" in svg   # no \N, \G expansion


# ------------------------------------------------------------------ rendering


@needs_dot
@pytest.mark.parametrize("name", SPEC_NAMES)
def test_default_view_renders_to_svg(name):
    svg = spec(name).to_dot().pipe(format="svg").decode()
    w, h = svg_size(svg)
    assert max(w, h) / min(w, h) <= 12


@needs_dot
@pytest.mark.parametrize("name", DEEP)
def test_deep_specs_lay_out_fast_and_not_too_elongated(name):
    src = spec(name).to_dot().source
    t0 = time.perf_counter()
    out = subprocess.run(["dot", "-Tsvg"], input=src.encode(), capture_output=True, timeout=60)
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr.decode()
    w, h = svg_size(out.stdout.decode())
    assert elapsed < 10, f"{name}: dot took {elapsed:.1f} s"
    assert max(w, h) / min(w, h) <= 12, f"{name}: {w:.0f} x {h:.0f} pt"


def test_the_deep_specs_are_checked():
    # densenet201 and efficientnet_b7 join DEEP as soon as their specs exist
    assert "resnet152" in DEEP


@needs_dot
@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF")])
def test_draw_writes_each_format(tmp_path, fmt, magic):
    path = spec("resnet50").draw(tmp_path / f"r.{fmt}", dpi=40 if fmt == "png" else None)
    data = open(path, "rb").read()
    assert data.startswith(magic)
    assert sorted(os.listdir(tmp_path)) == [f"r.{fmt}"]        # no temporary file left behind


def test_rankdir_lr_wraps_into_rows():
    src = spec("resnet152").to_dot(rankdir="LR").source
    assert "rankdir=LR" in src and "constraint=false" in src


# ------------------------------------------------------------------ command line


def _run(args, capsys):
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


@needs_dot
def test_cli_default_is_an_svg_named_after_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = ROOT / "specs" / "resnet18.arch"
    before = path.read_bytes()
    rc, out, err = _run(["draw", str(path)], capsys)
    assert rc == 0, err
    assert (tmp_path / "resnet18.svg").read_bytes().startswith(b"<?xml")
    assert "resnet18.svg" in out and "nodes" in out
    assert path.read_bytes() == before
    rc, out, err = _run(["draw", str(path), "--format", "png", "--dpi", "30", "--depth", "1", "--no-fold",
                         "--rankdir", "LR", "--set", "num_classes=10", "--input", "3x64x64"], capsys)
    assert rc == 0, err
    assert (tmp_path / "resnet18.png").read_bytes().startswith(b"\x89PNG")


def test_cli_dot_needs_no_graphviz_binary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out_file = tmp_path / "r.dot"
    rc, out, err = _run(["draw", str(ROOT / "specs" / "resnet50.arch"), "-o", str(out_file)], capsys)
    assert rc == 0, err
    assert out_file.read_text().startswith("digraph resnet50 {")
    rc, out, err = _run(["draw", str(ROOT / "specs" / "lenet5.arch"), "-o", "-"], capsys)
    assert rc == 0 and out.startswith("digraph lenet5 {")
    rc, out, err = _run(["draw", str(ROOT / "specs" / "lenet5.arch"), "-o", str(tmp_path / "x.png")], capsys)
    assert rc == 2 and "apt-get install graphviz" in err and "--format dot" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--expand", "layer9"], "matches no module"),
    (["--depth", "-1"], "invalid --depth"),
    (["--columns", "0"], "invalid --columns"),
    (["-o", "x.jpg"], "cannot tell the format"),
    (["-o", "-", "--format", "svg"], "only for --format dot"),
    (["-o", "/no/such/dir/x.svg"], "no such directory"),
])
def test_cli_usage_errors(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(["draw", str(ROOT / "specs" / "resnet50.arch"), *args], capsys)
    assert rc == 2 and message in err
    assert os.listdir(tmp_path) == []


def test_spec_errors_exit_1(tmp_path, capsys):
    bad = tmp_path / "bad.arch"
    bad.write_text("model m input 3x8x8 { conv2d(4, 9) }\n")
    rc, out, err = _run(["draw", str(bad), "--format", "dot"], capsys)
    assert rc == 1 and "error" in err
    assert os.listdir(tmp_path) == ["bad.arch"]


def test_auto_depth_is_the_deepest_that_fits():
    s = spec("resnet50")
    view = build_view(s.ir, max_nodes=40)
    assert view.depth == 1 and len(view.drawn_nodes()) <= 40
    assert len(build_view(s.ir, depth=view.depth + 1).drawn_nodes()) > 40


# ------------------------------------------------------------------ gallery


def test_gallery_has_a_current_png_of_every_family():
    import importlib.util
    loader = importlib.util.spec_from_file_location("gallery", ROOT / "docs" / "gallery.py")
    gallery = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(gallery)
    page = (ROOT / "docs" / "gallery.md").read_text(encoding="utf-8")
    present = [name for name, *_ in gallery.FAMILIES if name in SPEC_NAMES]
    assert {"lenet5", "alexnet", "vgg16", "resnet50"} <= set(present)
    pngs = {p.stem for p in (ROOT / "docs" / "gallery").glob("*.png")}
    assert pngs == set(present), "run `python docs/gallery.py` to regenerate docs/gallery"
    for name in present:
        assert f"![{name}](gallery/{name}.png)" in page
        png = ROOT / "docs" / "gallery" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size <= gallery.MAX_BYTES
