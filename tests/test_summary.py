"""`archdsl summary`: parameters, MACs, memory and receptive fields from the IR, checked against torch.

* over every spec: parameters and buffers equal the built model's, MACs equal what
  ``torch.utils.flop_counter`` measures on the built model (FLOPs / 2), at the spec's input and
  at 3x320x320; leaf rows add up to the totals;
* over every spec with a torchvision counterpart: MACs within 0.5% of the ``_ops`` figure in
  its weights metadata, at that weight's crop size;
* receptive fields: known values (vgg16, resnet50, alexnet, stacked 3x3 convs) and, for a
  few specs, the support of the input gradient of one output position of the built model;
* every op declares how its MACs count and how its output sees its input positions; the
  declarations agree with torch on the registry's sample cases;
* activation memory equals the distinct tensors torch allocates in a forward pass;
* the CLI (`summary`, `summary --json`, `compile`) and the generated table in docs/summary.md.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archdsl
from archdsl.ops import all_ops
from archdsl.ops.registry import (GLOBAL, MACS_FORMULA, MACS_UNKNOWN, MACS_ZERO, POINTWISE, UNDEFINED, ShapeError,
                                  Window)
from archdsl.passes.summary import RF, _union, activation_memory

from .conftest import ROOT, SPEC_NAMES, SPECS
from .test_cli import run
from .test_registry import SAMPLES, _resolve, _run_torch, hook, per_sample, sample_inputs

SPEC_IDS = dict(zip(SPEC_NAMES, SPECS))


def _load(name, **kw):
    return archdsl.load_spec(SPEC_IDS[name], **kw)


def _torch_macs(model, shape) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, *shape, device="meta"))
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def _leaf_rows(s):
    return [r for r in s.rows if not r.expanded]


# ------------------------------------------------------------------ every spec


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_totals_match_built_model(name):
    spec = _load(name)
    s = spec.summary()
    t = s.totals
    model = spec.build(device="meta").eval()
    assert t["params"] == sum(p.numel() for p in model.parameters()) == spec.num_params
    assert t["buffers"] == sum(b.numel() for b in model.buffers())
    assert t["macs_unknown"] == [] and t["macs"] == t["macs_known"] == spec.macs
    assert t["macs"] == _torch_macs(model, spec.input_shape), "MACs differ from torch's flop counter"
    assert t["flops"] == 2 * t["macs"] and t["param_bytes"] == 4 * t["params"]
    # the rows that are not expanded partition the model
    leaves = _leaf_rows(s)
    assert sum(r.params for r in leaves) == t["params"]
    assert sum(r.macs for r in leaves) == t["macs"]
    assert s.rows and all(r.depth >= 1 for r in s.rows)


@pytest.mark.parametrize("name", [n for n in SPEC_NAMES if n != "lenet5"])
def test_costs_at_another_input_size(name):
    """`--input 3x320x320` gives the figures torch measures at that size (clips: 320x320 frames)."""
    declared = _load(name).input_shape
    side = 322 if name == "vit_h_14" else 448 if name == "maxvit_t" else 320  # ViT sides are multiples of the patch (14 here)
    shape = (3, side, side) if len(declared) == 3 else (*declared[:-2], side, side)
    spec = _load(name, input_shape=shape)
    t = spec.summary().totals
    model = spec.build(device="meta").eval()
    assert t["params"] == sum(p.numel() for p in model.parameters())
    assert t["macs"] == _torch_macs(model, shape)


def _torchvision_cases():
    from archdsl.testing import import_torchvision
    tv = import_torchvision()
    # segmentation weights publish MACs at their resize size with the aux head: tests/test_segmentation.py
    known = set(tv.models.list_models()) - set(tv.models.list_models(module=tv.models.segmentation))
    return [n for n in SPEC_NAMES if n in known]


TV_SPECS = _torchvision_cases()


@pytest.mark.parametrize("name", TV_SPECS)
def test_macs_match_torchvision_published(name, tv):
    weights = list(tv.models.get_model_weights(name))[0]
    crop = weights.transforms().crop_size[0]
    # images 3 x crop x crop; clips (video) keep their declared frame count
    spec = _load(name, input_shape=(*_load(name).input_shape[:-2], crop, crop))
    published = weights.meta["_ops"]  # torchvision's "GFLOPS": MACs in units of 1e9, to 3 decimals
    ours = spec.summary().totals["macs"] / 1e9
    # within 0.5%, or equal after rounding to the published 3 decimals (mobilenet_v3_small: 0.0565 -> 0.057)
    assert abs(ours - published) <= 0.005 * published or round(ours, 3) == published, \
        f"{name} at {crop}: ours {ours:.4f} G, torchvision {published}"


def test_summary_is_fast():
    """Summaries never build modules: the largest spec takes well under a second."""
    name = next(n for n in ("vit_h_14", "vit_l_16", "efficientnet_b7", "resnet152") if n in SPEC_IDS)
    spec = _load(name)
    t0 = time.perf_counter()
    spec.summary(depth="all")
    assert time.perf_counter() - t0 < 0.5


# ------------------------------------------------------------------ receptive fields


@pytest.mark.parametrize("name,size,stride,padding", [
    ("vgg16", 212, 32, 90),
    ("resnet50", 427, 32, 213),
    ("alexnet", 195, 32, 66),
    ("resnet18", 435, 32, 217),
])
def test_known_receptive_fields(name, size, stride, padding):
    rf = _load(name).summary().totals["receptive_field"]
    assert (rf["size"], rf["stride"], rf["padding"]) == ([size] * 2, [stride] * 2, [padding] * 2)
    assert rf["then"] == "global"


def test_two_stacked_3x3_convs():
    spec = archdsl.load_spec("model m input 3x16x16 { conv2d(8, 3, padding = 1); relu(); conv2d(8, 3, padding = 1) }")
    rf = spec.summary().totals["receptive_field"]
    assert rf == {"size": [5, 5], "stride": [1, 1], "padding": [2, 2], "at": "2", "then": None, "from": None}


def test_receptive_field_rules():
    spec = archdsl.load_spec("""
model m input 3x64x48 {
    a: conv2d(8, [3, 5], stride = 2, padding = [1, 2])
    b: conv2d(8, 3, dilation = 2, padding = 2)
    c: maxpool2d(3, stride = 2, padding = 1)
    residual { d: conv2d(8, 7, padding = 3) }
    e: adaptive_avgpool2d([4, 3])
}""")
    rows = {r.path: r.receptive_field for r in spec.summary(depth="all").rows if r.path}
    assert rows["a"] == RF((3, 5), (2, 2), (1, 2))
    assert rows["b"] == RF((3 + 4 * 2, 5 + 4 * 2), (2, 2), (1 + 2 * 2, 2 + 2 * 2))
    c = RF((11 + 2 * 2, 13 + 2 * 2), (4, 4), (5 + 2, 6 + 2))
    assert rows["c"] == c
    d = RF((c.size[0] + 6 * 4, c.size[1] + 6 * 4), (4, 4), (c.padding[0] + 12, c.padding[1] + 12))
    assert rows["d"] == d
    # the map is 16x12 -> 4x3: windows of 4x4, stride 4
    assert rows["e"] == RF((d.size[0] + 3 * 4, d.size[1] + 3 * 4), (16, 16), d.padding)
    # a residual sum: the union of the two paths (here the conv path contains the identity)
    join = [r for r in spec.summary(depth="all").rows if r.kind == "join"][0]
    assert join.receptive_field == d


def _gradient_support(spec, position):
    """The input positions (per spatial axis: first, last) that output ``position`` of ``spec``'s model
    depends on, from the gradient of the built model in float64 with positive weights."""
    torch.manual_seed(0)
    model = spec.build().double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.5)
    x = (torch.rand(1, *spec.input_shape, dtype=torch.float64) + 0.5).requires_grad_(True)
    model(x)[(0, slice(None), *position)].sum().backward()
    support = x.grad[0].abs().sum(0).nonzero()
    return [(support[:, a].min().item(), support[:, a].max().item()) for a in range(support.shape[1])]


@pytest.mark.parametrize("text,position", [
    # a clip: frames, height and width tracked separately (r3d's 3x7x7 stem, (2+1)-D factorized convs)
    # (average pools: the gradient of a max pool reaches only the maximum of each window)
    ("""model clip input 2x21x40x44 {
        conv3d(4, [3, 7, 7], stride = [1, 2, 2], padding = [1, 3, 3])
        avgpool3d(3, stride = 2, padding = 1)
        residual { conv3d(4, [1, 3, 3], padding = [0, 1, 1]); conv3d(4, [3, 1, 1], padding = [1, 0, 0]) }
        avgpool3d([2, 1, 1])
        conv3d(4, 3, dilation = [1, 2, 2], padding = [1, 2, 2])
    }""", (2, 5, 5)),
    # a sequence: one axis
    ("""model signal input 3x100 {
        conv1d(4, 5, stride = 2, padding = 2)
        avgpool1d(3, stride = 2)
        residual { conv1d(4, 3, dilation = 3, padding = 3) }
    }""", (9,)),
])
def test_receptive_field_of_clips_and_sequences_matches_the_gradient(text, position):
    """Position i of the output sees [i S - P, i S - P + r - 1] on every axis: exactly the inputs its
    gradient reaches (the position is chosen so that the field lies inside the input)."""
    spec = archdsl.load_spec(text)
    rf = spec.summary().totals["receptive_field"]
    assert len(rf["size"]) == len(spec.input_shape) - 1 and rf["then"] is None
    want = [(i * s - p, i * s - p + r - 1) for i, r, s, p in zip(position, rf["size"], rf["stride"], rf["padding"])]
    assert all(lo >= 0 and hi < n for (lo, hi), n in zip(want, spec.input_shape[1:]))
    assert _gradient_support(spec, position) == want


def test_a_window_over_other_axes_than_the_input_has_no_field():
    # a 2-D window on a clip folded into images: the field is not defined in the clip's axes
    spec = archdsl.load_spec("model m input 3x4x16x16 { reshape([12, 16, 16]); conv2d(4, 3) }")
    assert spec.summary().totals["receptive_field"]["then"] == "undefined"


def test_union_of_unaligned_paths():
    # one path sees [-1, 1] around each position, the other [0, 4]: the merge sees [-1, 4]
    a, b = RF((3, 3), (2, 2), (1, 1)), RF((5, 5), (2, 2), (0, 0))
    assert _union([a, b]) == _union([b, a]) == RF((6, 6), (2, 2), (1, 1))
    assert _union([a, GLOBAL]) == GLOBAL and _union([a, UNDEFINED]) == UNDEFINED
    assert _union([UNDEFINED, GLOBAL]) == GLOBAL


def _hook_output(model, path):
    store = {}
    model.get_submodule(path).register_forward_hook(lambda m, i, o: store.__setitem__("out", o))
    return store


@pytest.mark.parametrize("name,shape", [
    ("lenet5", (1, 32, 32)),
    ("vgg11", (3, 160, 160)),
    ("alexnet", (3, 256, 256)),
    ("resnet18", (3, 480, 480)),
])
def test_receptive_field_matches_input_gradient(name, shape):
    """Reference: which input pixels the centre output position of the built model depends on.

    All weights positive, max pooling replaced by average pooling (so every input of a window
    gets a gradient): the support of the gradient is the receptive field clipped to the image.
    """
    spec = _load(name, input_shape=shape)
    rf = spec.summary().totals["receptive_field"]
    model = spec.build().eval()
    for path, m in list(model.named_modules()):
        if isinstance(m, nn.MaxPool2d):
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode))
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
    store = _hook_output(model, rf["at"])
    x = torch.ones(1, *shape, requires_grad=True)
    model(x)
    feat = store["out"]
    i, j = feat.shape[2] // 2, feat.shape[3] // 2
    feat[0, :, i, j].sum().backward()
    support = x.grad[0].abs().sum(0).nonzero()
    for axis, pos in enumerate((i, j)):
        start = pos * rf["stride"][axis] - rf["padding"][axis]
        want = (start, start + rf["size"][axis] - 1)
        assert 0 <= want[0] and want[1] < shape[axis + 1], "choose an input large enough not to clip the field"
        got = (support[:, axis].min().item(), support[:, axis].max().item())
        assert got == want, f"axis {axis}: gradient support {got}, summary says {want}"


# ------------------------------------------------------------------ the registry's declarations


@pytest.mark.parametrize("name", sorted(all_ops()))
def test_op_declares_macs_rule(name):
    op = all_ops()[name]
    assert op.macs_rule in (MACS_FORMULA, MACS_ZERO, MACS_UNKNOWN), \
        f"op {name}: set macs_rule to 'formula', 'zero' or 'unknown'"
    for kwargs, shapes in SAMPLES.get(name, []):
        attrs = _resolve(op, kwargs)
        ins = hook(op, shapes)
        out = op.infer(attrs, ins)
        if op.macs_rule == MACS_ZERO:
            assert op.macs(attrs, ins, out) == 0
        kind = op.window(attrs, ins, [None] * len(shapes))
        assert isinstance(kind, Window) or kind in (POINTWISE, GLOBAL, UNDEFINED)


MACS_CASES = [(n, i) for n in sorted(SAMPLES) if n in all_ops() for i in range(len(SAMPLES[n]))]


@pytest.mark.parametrize("name,i", MACS_CASES)
def test_op_macs_match_flop_counter(name, i):
    """On the registry's samples (every rank): an op's MACs are what torch's flop counter measures
    (FLOPs / 2) at batch 1; ops that count 0 by convention do nothing the counter counts. On the meta
    device, as for whole models (on the CPU, attention takes a fused path the counter does not see)."""
    op = all_ops()[name]
    kwargs, shapes = SAMPLES[name][i]
    attrs = _resolve(op, kwargs)
    module = _run_torch(op, attrs, shapes)[0].to("meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*sample_inputs(op, attrs, shapes, batch=1, device="meta"))
    ins = hook(op, shapes)
    assert counter.get_total_flops() == 2 * op.macs(attrs, ins, op.infer(dict(attrs), ins))


#: ops whose input gradient reaches the maximum of each window only, not the whole window
MAX_OPS = {f"{kind}{d}d" for kind in ("maxpool", "adaptive_maxpool") for d in (1, 2, 3)} | {"amax", "amin"}
#: ops declared GLOBAL because an output element sees whole rows or columns of a map (a product), not a
#: window: the check is that it is not local, i.e. the support spans a whole axis
PRODUCT_OPS = {"matmul", "sdpa"}

WINDOW_CASES = [(n, i) for n in sorted(SAMPLES) if n in all_ops() for i, (_, shapes) in enumerate(SAMPLES[n])
                if shapes and type(shapes[0]) is tuple and len(shapes[0]) in (3, 4)
                and all(type(s) is tuple and len(s) == len(shapes[0]) for s in shapes)]


@pytest.mark.parametrize("name,i", WINDOW_CASES)
def test_op_window_matches_torch(name, i):
    """For CxHxW and CxDxHxW samples: the input positions an output position depends on, as torch
    computes them."""
    op = all_ops()[name]
    kwargs, shapes = SAMPLES[name][i]
    attrs = _resolve(op, kwargs)
    ins = hook(op, shapes)
    out = per_sample(op, op.infer(dict(attrs), ins))
    rank = len(shapes[0])
    layouts = ["CHW" if rank == 3 else None] * len(shapes)
    try:
        op.check_layout(attrs, ins, layouts)
    except ShapeError:
        return  # the op acts on the last axis: these samples are channels-last, not CxHxW maps
    kind = op.window(attrs, ins, layouts)
    if kind == UNDEFINED or len(out) != rank or (kind == POINTWISE and all(s[1:] != out[1:] for s in shapes)):
        return  # no position mapping to check (resampling, or the axes were permuted)
    module, _ = _run_torch(op, attrs, shapes)
    for p in module.parameters():
        with torch.no_grad():
            p.fill_(1.0)
    xs = [torch.rand(1, *s, dtype=torch.float64) + 0.5 for s in shapes]
    for x in xs:
        x.requires_grad_(True)
    module = module.double()
    y = module(*xs)
    centre = [n // 2 for n in out[1:]]
    (y[(0, slice(None), *centre)] * (torch.rand(out[0], dtype=torch.float64) + 0.5)).sum().backward()
    for x, shape in zip(xs, shapes):
        support = x.grad[0].abs().sum(0).nonzero()
        if kind == GLOBAL:
            if name in PRODUCT_OPS:  # whole rows or columns of the last two axes
                rows, cols = set(support[:, -2].tolist()), set(support[:, -1].tolist())
                assert len(rows) == shape[-2] or len(cols) == shape[-1]
            elif name not in MAX_OPS:  # a global max reaches one position per channel
                assert len(support) == math.prod(shape[1:])
            continue
        if shape[1:] != out[1:]:  # a broadcast input (e.g. a Cx1x1 gate)
            continue
        if kind == POINTWISE:
            want = [(o, o) for o in centre]
        else:
            assert len(kind.kernel) == rank - 1  # a window over every spatial axis
            want = []
            for axis, o in enumerate(centre):
                lo = o * kind.stride[axis] - kind.padding[axis]
                hi = lo + kind.dilation[axis] * (kind.kernel[axis] - 1)
                want.append((max(lo, 0), min(hi, shape[axis + 1] - 1)))
        got = [(support[:, a].min().item(), support[:, a].max().item()) for a in range(rank - 1)]
        if name in MAX_OPS:  # the gradient reaches the maximum only: inside the window
            assert all(w[0] <= g[0] and g[1] <= w[1] for g, w in zip(got, want))
        else:
            assert got == want


# ------------------------------------------------------------------ memory


class _Storages(torch.utils._python_dispatch.TorchDispatchMode):
    """Record every floating-point tensor an op returns (kept alive, so storages stay distinct)."""

    def __init__(self):
        super().__init__()
        self.outs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.outs.append(t)
        return out


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg11_bn", "resnet18", "resnet50"])
def test_activation_memory_matches_torch(name):
    spec = _load(name, input_shape=None if name == "lenet5" else (3, 64, 64))
    model = spec.build().eval()
    x = torch.randn(1, *spec.input_shape)
    owned = {p.untyped_storage().data_ptr() for p in list(model.parameters()) + list(model.buffers())}
    owned.add(x.untyped_storage().data_ptr())
    mode = _Storages()
    with torch.no_grad(), mode:
        model(x)
    seen = {}
    for t in mode.outs:
        s = t.untyped_storage()
        if s.data_ptr() not in owned:
            seen[s.data_ptr()] = s.nbytes()
    assert spec.summary().totals["activation_bytes"] == sum(seen.values())


def test_peak_activation_memory():
    spec = archdsl.load_spec("""
model m input 1x10x10 {
    a: conv2d(4, 1)
    relu()
    residual { b: conv2d(1, 1); c: conv2d(4, 1) }
    flatten()
}""")
    # elements: input 100; a 400 (relu in place); b 100; c 400 (the sum adds into it; flatten is a view)
    # live: input + a = 500, a + b = 500 (input freed), a + b + c = 900, then a and c until the sum
    total, peak = activation_memory(spec.ir, 1)
    assert (total, peak) == (900, 900)
    total, peak = activation_memory(archdsl.load_spec("model m input 1x10x10 { conv2d(4, 1); conv2d(1, 1); "
                                                      "conv2d(2, 1) }").ir, 2)
    assert (total, peak) == (2 * 700, 2 * 500)


# ------------------------------------------------------------------ API, CLI, docs


def test_depths():
    spec = _load("resnet50")
    blocks = spec.summary()
    assert [r.path for r in blocks.rows][:6] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer1.0"]
    assert blocks.rows[5].kind == "block" and blocks.rows[5].op == "Bottleneck" and not blocks.rows[5].expanded
    one = spec.summary(depth=1)
    assert [r.path for r in one.rows] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                          "layer4", "avgpool", "9", "fc"]
    assert all(r.depth == 1 for r in one.rows)
    everything = spec.summary(depth="all")
    assert sum(1 for r in everything.rows if r.kind == "op") == sum(1 for n in spec.ir.ops() if n.path)
    assert any(r.kind == "join" and r.name == "layer1.0 (add)" for r in everything.rows)
    for bad in (0, -1, "deep", True):
        with pytest.raises(ValueError):
            spec.summary(depth=bad)


def test_json_document_is_documented_and_stable():
    d = _load("resnet18").summary(depth=2).to_dict()
    assert set(d) == {"format", "version", "model", "input_shape", "output_shape", "dtype", "depth", "rows",
                      "totals"}
    assert d["format"] == "archdsl-summary" and d["version"] == 1
    assert set(d["rows"][0]) == {"path", "scope", "depth", "kind", "op", "label", "output_shape", "params",
                                 "macs", "macs_unknown", "receptive_field", "expanded"}
    assert set(d["totals"]) == {"params", "buffers", "macs", "macs_known", "macs_unknown", "gmacs", "flops",
                                "param_bytes", "activation_bytes", "peak_activation_bytes", "receptive_field"}
    doc = (ROOT / "docs" / "summary.md").read_text(encoding="utf-8")
    for key in list(d["rows"][0]) + list(d["totals"]) + list(d["totals"]["receptive_field"]):
        assert f"`{key}`" in doc, f"docs/summary.md does not document `{key}`"
    json.dumps(d)


def test_unknown_macs_are_reported(monkeypatch):
    spec = _load("lenet5")
    monkeypatch.setattr(type(all_ops()["tanh"]), "macs_rule", MACS_UNKNOWN)
    s = spec.summary(depth=1)
    assert s.totals["macs"] is None and s.totals["flops"] is None
    assert s.totals["macs_known"] == spec.macs and len(s.totals["macs_unknown"]) == 4
    tanh = [r for r in s.rows if r.op == "tanh"]
    assert all(r.macs is None and r.macs_unknown == 1 for r in tanh)
    assert "unknown: 4 ops without a MACs formula" in s.to_text()


def test_cli_summary():
    r = run("summary", "specs/resnet50.arch")
    assert r.returncode == 0, r.stderr
    assert "layer1.0" in r.stdout and "Bottleneck" in r.stdout
    assert "4,089,184,256 = 4.089 GMACs" in r.stdout and "GFLOPS" in r.stdout
    assert "427, effective stride 32, effective padding 213" in r.stdout
    r = run("summary", "specs/vgg16.arch", "--json", "--depth", "1", "--set", "num_classes=10", "--dtype", "float16")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["depth"] == 1 and d["dtype"] == "float16" and d["output_shape"] == [10]
    assert d["totals"]["param_bytes"] == 2 * d["totals"]["params"]
    assert d["totals"]["receptive_field"]["size"] == [212, 212]
    for args in (["--depth", "0"], ["--depth", "x"], ["--dtype", "int8"]):
        r = run("summary", "specs/lenet5.arch", *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr


def test_cli_compile_prints_totals():
    r = run("compile", "specs/alexnet.arch", "--device", "meta")
    assert r.returncode == 0, r.stderr
    for needle in ("61,100,840 trainable", "buffers", "0.714 GMACs", "FLOPs", "activations",
                   "receptive field  195"):
        assert needle in r.stdout


def test_summary_md_table_is_current():
    from archdsl.summarydocs import render_table
    doc = (ROOT / "docs" / "summary.md").read_text(encoding="utf-8")
    assert render_table() in doc, "the table in docs/summary.md is out of date: run `python -m archdsl.summarydocs`"
