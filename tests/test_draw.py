"""`archdsl draw`: DOT structure (clusters, folds, joins, labels), escaping, real renders with `dot`.

Renders need the Graphviz binary, which `setup.sh` installs; without it those tests are
skipped locally but fail in CI (where ``CI`` is set), so they cannot be skipped silently.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
def shared_spec(name: str) -> archdsl.Spec:
    """A spec loaded once for the tests that only read it."""
    return spec(name)


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
    # everything is reachable from the input or from a tensor the model owns (`buffer`, `parameter`,
    # or a collapsed block holding them, such as MViT's LayerNormTensors) ...
    owned = sorted({view.rep[n.id] for n in s.ir.ops()
                    if n.op in ("buffer", "parameter") and view.rep.get(n.id)})
    seen, todo = set(), ["input", *owned]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(succ[n])
    assert seen == set(nodes)
    assert all(succ[n] for n in nodes if n not in view.output_ids)   # ... and leads somewhere
    # one output node per entry of the result, each fed by one edge and leading nowhere
    assert len(view.output_ids) == len(dotmod.output_items(s.ir))
    assert all(not succ[o] and sum(1 for a, b in view.edges if b == o) == 1 for o in view.output_ids)
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

    unet = archdsl.load_spec(TINY_UNET)
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


# ------------------------------------------------------------------ encoder-decoders and multi-output models

TINY_UNET = """
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
}"""


def rank_groups(dot) -> list[set[str]]:
    """The node sets of the `rank=same` subgraphs in the DOT source."""
    return [set(re.findall(r"^\t+(\w+)$", body, re.M))
            for body in re.findall(r"\{\n\t+rank=same\n(.*?)\n\t+\}", dot.source, re.S)]


def drawn_edges(dot) -> set[tuple[str, str]]:
    """(tail, head) of every edge as the data flows: `b -> a [dir=back]` is a -> b."""
    out = set()
    for a, b, attrs in re.findall(r"^\t+(\w+) -> (\w+)(?: \[(.*)\])?$", dot.source, re.M):
        out.add((b, a) if "dir=back" in (attrs or "") else (a, b))
    return out


def ids_by_path(view, prefix: str) -> list[str]:
    """Drawn ids of the items whose scope or node path starts with ``prefix``, in drawing order."""
    g = view.g
    return [it.id for it, _ in view.walk()
            if (it.scope or (g.nodes[it.node].path if it.node is not None else None) or "").startswith(prefix)]


def test_unet_skip_levels_are_ranks_and_the_decoder_flows_up(at_root):
    s = archdsl.load_spec(TINY_UNET)
    dot, view = diagram(s.ir, depth=0)
    plan = view.u_plan
    down = {i: ids_by_path(view, f"downs.{i}")[0] for i in range(2)}
    concats = [f"n{n.id}" for n in s.ir.ops() if n.op == "concat"]
    assert plan is not None and plan.skips == [(down[0], concats[1]), (down[1], concats[0])]
    groups = rank_groups(dot)
    for u, j in plan.skips:                               # each skip edge lies within one rank
        assert (u, j) in view.edges and any({u, j} <= grp for grp in groups)
    bottom, up0 = ids_by_path(view, "bottom")[0], ids_by_path(view, "ups.0")[0]
    assert {bottom, up0} in groups                        # the bottom turns within its rank
    assert len(groups) == 3 and "newrank=true" in dot.source
    decoder = {up0, *concats, *ids_by_path(view, "dec."), ids_by_path(view, "ups.1")[0],
               ids_by_path(view, "head")[0], "output"}
    assert plan.up == decoder
    # every decoder edge is drawn reversed (dir=back), every other edge forward; none is lost
    for a, b in view.edges:
        back = f"\t{b} -> {a} [dir=back" in dot.source
        assert back == (a in decoder and b in decoder), (a, b)
    assert drawn_edges(dot) == set(view.edges)
    # --columns gives the plain (wrapped) layout back
    plain = diagram(s.ir, depth=0, columns=1)[0].source
    assert "rank=same" not in plain and "dir=back" not in plain and "newrank" not in plain


def test_additive_3d_encoder_decoder_is_a_u_too(at_root):
    # no names in common with U-Net, `+` joins instead of concatenations, T x H x W sizes
    s = archdsl.load_spec("""
    model vnet input 2x8x16x16 {
        let e0 = a: conv3d(8, 3, padding = 1)
        let e1 = b: seq { maxpool3d(2); conv3d(16, 3, padding = 1) }(e0)
        let z = c: seq { maxpool3d(2); conv3d(16, 3, padding = 1) }(e1)
        let u1 = d: conv_transpose3d(16, 2, stride = 2)(z)
        let v1 = e: conv3d(8, 3, padding = 1)(e1 + u1)
        let u0 = f: conv_transpose3d(8, 2, stride = 2)(v1)
        let h = g: conv3d(2, 1)(e0 + u0)
        return h
    }""")
    dot, view = diagram(s.ir, depth=0)
    adds = [f"n{n.id}" for n in s.ir.ops() if n.op == "add"]
    a, b = ids_by_path(view, "a")[0], ids_by_path(view, "b")[0]
    assert view.u_plan.skips == [(a, adds[1]), (b, adds[0])]
    assert {ids_by_path(view, "c")[0], ids_by_path(view, "d")[0]} in rank_groups(dot)


def test_unet_default_view_is_a_u():
    s = shared_spec("unet")
    dot, view = diagram(s.ir)
    plan = view.u_plan
    assert plan is not None and len(plan.skips) == 4
    for i, (u, j) in enumerate(plan.skips):               # outermost level first: encoders.0 ... 3
        assert u in ids_by_path(view, f"encoders.{i}.")
        assert s.ir.nodes[view.tensor[j]].op == "concat"
        assert any({u, j} <= grp for grp in rank_groups(dot))
    assert "(cont.)" not in dot.source and "constraint=false" not in dot.source   # no wrapping
    assert drawn_edges(dot) == set(view.edges)
    assert dot.source == diagram(spec("unet").ir)[0].source                          # deterministic


@needs_dot
def test_unet_skips_are_horizontal_in_the_layout():
    import json
    s = shared_spec("unet")
    dot, view = diagram(s.ir)
    out = subprocess.run(["dot", "-Tjson"], input=dot.source.encode(), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    pos = {o["name"]: tuple(map(float, o["pos"].split(","))) for o in json.loads(out.stdout)["objects"]
           if "pos" in o and "nodes" not in o}
    ys = []
    for u, j in view.u_plan.skips:
        (xu, yu), (xj, yj) = pos[u], pos[j]
        assert abs(yu - yj) < 1 and xu < xj          # same height, encoder on the left
        ys.append(yu)
    assert ys == sorted(ys, reverse=True)            # deeper levels lower down (y grows upwards)
    bottom = pos[ids_by_path(view, "bottleneck.")[-1]][1]
    assert bottom < min(ys) and pos["output"][1] > max(ys)   # the U: bottleneck at the bottom


def test_fpn_laterals_are_skip_levels():
    s = shared_spec("resnet50_fpn")
    dot, view = diagram(s.ir)
    plan = view.u_plan
    assert plan is not None and len(plan.skips) == 3
    groups = rank_groups(dot)
    for k, (u, j) in enumerate(plan.skips):               # body.layer1 .. layer3 -> lateral -> +
        assert u == view.rep[s.ir.scopes[f"body.layer{k + 1}"].output]      # (drawn by its folded run)
        assert s.ir.nodes[view.tensor[j]].op == "add"
        lateral = ids_by_path(view, f"fpn.inner_blocks.{k}.")
        assert len(lateral) == 1 and any({u, lateral[0], j} <= grp for grp in groups)
    assert drawn_edges(dot) == set(view.edges)


@pytest.mark.parametrize("name", ["resnet50", "deeplabv3_resnet50", "lraspp_mobilenet_v3_large", "vgg16",
                                  "densenet121", "mobilenet_v3_large_fpn"])
def test_no_u_without_two_nested_skip_levels(name):
    # residual sums and dense concats skip at one size; ASPP's pooled branch and LR-ASPP's one
    # low-level skip are a single level; MobileNetV3's FPN reads two maps of the same size
    dot, view = diagram(shared_spec(name).ir)
    assert view.u_plan is None and "rank=same" not in dot.source and "dir=back" not in dot.source


def _output_labels(dot, view) -> dict[str, str]:
    labels = node_labels(dot)
    return {o: " ".join(labels[o].split()) for o in view.output_ids}


def test_dict_outputs_get_one_node_per_key():
    s = shared_spec("fcn_resnet50_aux")
    dot, view = diagram(s.ir)
    labels = _output_labels(dot, view)
    assert list(labels.values()) == ["output out 21\u00d7520\u00d7520", "output aux 21\u00d7520\u00d7520"]
    feeds = {b: a for a, b in view.edges if b in labels}
    assert feeds["output_0"] != feeds["output_1"]
    assert view.tensor[feeds["output_0"]] == s.ir.outputs["out"]
    assert view.tensor[feeds["output_1"]] == s.ir.outputs["aux"]
    assert "out 21\u00d7520\u00d7520, aux 21\u00d7520\u00d7520" in dot.source      # the title lists both

    s = shared_spec("resnet50_fpn")
    dot, view = diagram(s.ir)
    labels = _output_labels(dot, view)
    shapes = {"0": 56, "1": 28, "2": 14, "3": 7, "pool": 4}
    assert list(labels.values()) == [f"output {k} 256\u00d7{n}\u00d7{n}" for k, n in shapes.items()]
    assert "5 outputs (0, 1, 2, 3, pool)" in dot.source


def test_tuple_outputs_get_one_node_per_position():
    s = shared_spec("googlenet_aux")
    dot, view = diagram(s.ir)
    assert list(_output_labels(dot, view).values()) == [f"output {i} 1000" for i in range(3)]
    sources = [next(a for a, b in view.edges if b == o) for o in view.output_ids]
    assert [view.tensor[a] for a in sources] == list(s.ir.outputs)
    # a model returning one tensor keeps its single node `output`
    _, view = diagram(shared_spec("googlenet").ir)
    assert view.output_ids == ["output"]


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


def test_output_keys_are_escaped(at_root):
    s = archdsl.load_spec("""
    model two input 3x8x8 {
        let a = c: conv2d(4, 1)
        let b = p: maxpool2d(2)(a)
        return {"x": a, "y": b}
    }""")
    s.ir.outputs = {NASTY[2]: s.ir.outputs["x"], NASTY[4]: s.ir.outputs["y"]}
    dot, view = diagram(s.ir)
    syntax = dot_syntax(dot.source)
    assert "evil" not in syntax and "bold" not in syntax and syntax.count("{") == syntax.count("}")
    assert view.output_ids == ["output_0", "output_1"]
    labels = _output_labels(dot, view)
    assert "e&quot;]; evil [shape=star" in labels["output_0"] and "&lt;b&gt;bold&lt;/b&gt;" in labels["output_1"]


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
