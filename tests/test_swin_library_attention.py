"""Swin's shifted-window attention written in the language (specs/lib/swin_attention.arch).

* swin_t and swin_v2_t built with ``library_attention = true`` against torchvision's swin_t() /
  swin_v2_t(): the same state_dict keys and shapes, strict load, exact parameter count, eval
  outputs **bit-identical** (``torch.equal``: the spec performs torchvision's operations in
  torchvision's order), and with the same seed the same initial weights.
* The blocks alone against torchvision's ShiftedWindowAttention / ShiftedWindowAttentionV2 and
  against archdsl's own ``shifted_window_attention`` op on small maps, over window, shift and
  size combinations (padding on one or both sides, a window covering the map along one or
  both dims, non-square windows): the same weights give the same outputs, bit for bit.
* The buffers the spec computes statically (the shifted-window mask, v2's relative coordinates)
  equal what torchvision computes.

The model tests use a 3x97x131 input (as test_parity's odd size): its stages exercise padding
on one side, on both sides, a window covering the map along one dim only (the mask then comes
from the shift along the other dim) and along both (no shift at all).
"""

from __future__ import annotations

import math

import pytest
import torch

import archdsl
from archdsl.ops import get_op
from archdsl.testing import import_torchvision, torchvision_model

from .conftest import ROOT

LIB = ROOT / "specs" / "lib" / "swin_attention.arch"
ODD = (3, 97, 131)
SWIN_SPECS = ["swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b"]



def _tv_swin():
    import_torchvision()
    import torchvision.models.swin_transformer as swin
    return swin


def _attention_spec(block: str, shape, *args: str):
    """A model of one library block on an HxWxC input (the library block reads in.shape as H, W, C)."""
    h, w, c = shape
    return archdsl.load_spec(f'use "{LIB}"\nmodel m input {h}x{w}x{c} {{ attn: {block}({", ".join(args)}) }}')


def _op_and_lib_specs(shape, heads, window, shift, v2, attention_dropout=0.0, dropout=0.0):
    """The op and the library block on the same channels-last map (the op checks the layout, so both
    models take C x H x W and permute it)."""
    h, w, c = shape
    args = f"{heads}, {window}, {shift}, attention_dropout = {attention_dropout}, dropout = {dropout}"
    lib = "ShiftedWindowAttentionV2" if v2 else "ShiftedWindowAttention"
    head = f'use "{LIB}"\nmodel m input {c}x{h}x{w} {{ permute([0, 2, 3, 1]); '
    op = archdsl.load_spec(head + f"attn: shifted_window_attention({args}, v2 = {str(v2).lower()}) }}")
    ours = archdsl.load_spec(head + f"attn: {lib}({args}) }}")
    return op, ours


def _shape_hooks(spec, module):
    """Hooks recording every module's real output shape, and the checker's shapes to compare them with
    (layers applied to a parameter or buffer, v2's cpb_mlp, have no batch dim)."""
    expected = {n.path: (tuple(n.shape), n.batched) for n in spec.ir.ops()
                if n.path is not None and not get_op(n.op).direct_param}
    shapes, hooks = {}, []
    for path, m in module.named_modules():
        if path in expected:
            batched = expected[path][1]
            hooks.append(m.register_forward_hook(
                lambda m, i, o, path=path, batched=batched:
                shapes.__setitem__(path, tuple(o.shape[1:] if batched else o.shape))))
    return shapes, {p: s for p, (s, _) in expected.items()}, hooks


# ---------------------------------------------------------------- the default specs are unchanged


@pytest.mark.parametrize("name", SWIN_SPECS)
def test_default_keeps_the_op(name):
    """Without `library_attention` the specs build exactly what they built before: the op."""
    default = archdsl.load_spec(ROOT / "specs" / f"{name}.arch")
    off = archdsl.load_spec(ROOT / "specs" / f"{name}.arch", library_attention=False)
    assert default.ir.to_dict() == off.ir.to_dict()
    ops = [n.op for n in default.ir.ops()]
    assert ops.count("shifted_window_attention") == (12 if name.endswith("_t") else 24)
    assert not {"parameter", "buffer", "matmul", "softmax"} & set(ops)


# ---------------------------------------------------------------- whole networks against torchvision


@pytest.fixture(scope="module", params=["swin_t", "swin_v2_t"])
def pair(request):
    """(name, spec, ours, ref, ours' initial state_dict, ref's initial state_dict), built once per model
    with the same seed; ref's weights are then loaded into ours."""
    name = request.param
    spec = archdsl.load_spec(ROOT / "specs" / f"{name}.arch", library_attention=True, input_shape=ODD)
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = torchvision_model(name)
    ours_init = {k: v.clone() for k, v in ours.state_dict().items()}
    ref_init = {k: v.clone() for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    return name, spec, ours, ref, ours_init, ref_init


def test_network_layout_and_parameters(pair):
    name, spec, ours, ref, ours_init, ref_init = pair
    assert [n.op for n in spec.ir.ops()].count("shifted_window_attention") == 0
    assert set(ours_init) == set(ref_init)
    assert {k: v.shape for k, v in ours_init.items()} == {k: v.shape for k, v in ref_init.items()}
    # within each attention module the tensors are listed as torchvision lists them (parameters, then
    # buffers, then submodules in torchvision's __init__ order: v2's cpb_mlp, applied before proj, is
    # registered after it)
    for prefix in sorted({k.split(".attn.")[0] for k in ref_init if ".attn." in k}):
        assert [k for k in ours_init if k.startswith(prefix + ".attn.")] == \
            [k for k in ref_init if k.startswith(prefix + ".attn.")]
    assert [n for n, _ in ours.named_modules() if ".attn." in n] == \
        [n for n, _ in ref.named_modules() if ".attn." in n]
    # the mask is a non-persistent buffer: in the module, not in the state_dict
    assert any(k.endswith("attn.attn_mask") for k, _ in ours.named_buffers())
    n_ref = sum(p.numel() for p in ref.parameters())
    assert spec.num_params == n_ref == sum(p.numel() for p in ours.parameters())


def test_network_outputs_bit_identical(pair):
    _, spec, ours, ref, _, _ = pair
    torch.manual_seed(1)
    x = torch.randn(2, *ODD)
    shapes, expected, hooks = _shape_hooks(spec, ours)
    try:
        with torch.no_grad():
            got, want = ours(x), ref(x)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(got, want)
    assert tuple(got.shape[1:]) == spec.output_shape
    assert shapes == expected


def test_network_initial_weights(pair):
    """With the same seed, the initial weights are torchvision's, tensor by tensor."""
    _, _, _, _, ours_init, ref_init = pair
    assert [k for k in ref_init if not torch.equal(ours_init[k], ref_init[k])] == []


# ---------------------------------------------------------------- the blocks against torchvision's modules

BLOCK_CASES = [  # (H, W, C), heads, window, shift
    ((10, 13, 16), 2, [4, 4], [2, 2]),     # padding on both sides
    ((8, 8, 16), 4, [4, 4], [0, 0]),       # no shift, no padding
    ((3, 20, 8), 2, [4, 6], [2, 3]),       # the window covers the height: shifted along W only
    ((14, 14, 12), 3, [7, 7], [3, 3]),
]


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("shape,heads,window,shift", BLOCK_CASES)
def test_block_matches_torchvision_module(shape, heads, window, shift, v2):
    swin = _tv_swin()
    cls = swin.ShiftedWindowAttentionV2 if v2 else swin.ShiftedWindowAttention
    spec = _attention_spec("ShiftedWindowAttentionV2" if v2 else "ShiftedWindowAttention", shape,
                           str(heads), str(window), str(shift))
    torch.manual_seed(0)
    ours = spec.build().attn
    torch.manual_seed(0)
    ref = cls(shape[2], window, shift, heads)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert set(ours_sd) == set(ref_sd)
    differing = {k for k in ref_sd if not torch.equal(ours_sd[k], ref_sd[k])}
    assert list(ours_sd) == list(ref_sd)
    # v2: torchvision's constructor zeroes the k third of qkv.bias, which init rules (acting on whole
    # tensors) cannot do; every other tensor is torchvision's
    assert differing == ({"qkv.bias"} if v2 else set())
    ours.load_state_dict(ref_sd, strict=True)
    ours.eval()
    ref.eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


def test_v2_ignores_the_key_bias():
    """torchvision's v2 forward uses qkv.bias with its k third zeroed (on a copy), whatever is stored
    (so that third also gets no gradient: training keeps it at zero)."""
    pytest.xfail("archdsl: a Linear's bias cannot be read as a tensor in the spec (or a slice of it masked), "
                 "so the library v2 block uses qkv.bias as stored; it agrees with torchvision only while the "
                 "k third is zero (at init and in torchvision's checkpoints), and training moves it")
    swin = _tv_swin()
    spec = _attention_spec("ShiftedWindowAttentionV2", (8, 8, 16), "2", "[4, 4]", "[2, 2]")
    ours = spec.build().attn
    ref = swin.ShiftedWindowAttentionV2(16, [4, 4], [2, 2], 2)
    with torch.no_grad():
        ref.qkv.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 8, 8, 16)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


# ---------------------------------------------------------------- the blocks against archdsl's op

OP_CASES = [  # (H, W, C), heads, window, shift
    ((12, 10, 16), 2, [4, 4], [2, 2]),     # padding on the right
    ((8, 8, 16), 4, [4, 4], [0, 0]),
    ((7, 9, 12), 3, [7, 7], [3, 3]),       # the window covers the height only
    ((5, 13, 8), 2, [4, 4], [2, 2]),       # padding on both sides
    ((14, 14, 8), 2, [7, 7], [3, 3]),
    ((9, 6, 8), 1, [3, 5], [1, 2]),        # non-square window, one head
    ((16, 16, 24), 3, [8, 8], [4, 4]),
    ((3, 20, 8), 2, [4, 6], [2, 3]),
    ((6, 5, 8), 2, [7, 7], [3, 3]),        # the window covers the map: no shift, no mask
]


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("shape,heads,window,shift", OP_CASES)
def test_block_matches_the_op(shape, heads, window, shift, v2):
    op, lib = _op_and_lib_specs(shape, heads, window, shift, v2)
    assert lib.num_params == op.num_params
    assert lib.output_shape == op.output_shape
    torch.manual_seed(0)
    a = op.build()
    b = lib.build()
    sd = a.state_dict()
    if v2:  # the op's constructor zeroed the k bias, as torchvision's does
        c = shape[2]
        assert not sd["attn.qkv.bias"][c:2 * c].any()
    b.load_state_dict(sd, strict=True)
    a.eval()
    b.eval()
    x = torch.randn(3, shape[2], shape[0], shape[1])
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    shifted = [s if w < -(-n // w) * w else 0 for s, w, n in zip(shift, window, shape)]
    assert (any(shifted)) == any(k.endswith("attn_mask") for k, _ in b.named_buffers())


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_block_matches_the_op_in_training(v2):
    """Both dropouts, in training: the same random numbers are drawn in the same order."""
    op, lib = _op_and_lib_specs((10, 12, 16), 2, [4, 4], [2, 2], v2, attention_dropout=0.3, dropout=0.2)
    a = op.build()
    b = lib.build()
    b.load_state_dict(a.state_dict(), strict=True)
    a.train()
    b.train()
    x = torch.randn(2, 16, 10, 12)
    torch.manual_seed(5)
    ya = a(x)
    torch.manual_seed(5)
    yb = b(x)
    assert torch.equal(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    ga = {k: p.grad for k, p in a.named_parameters()}
    gb = {k: p.grad for k, p in b.named_parameters()}
    if v2:
        # torchvision's (and the op's) v2 zeroes the k third of qkv.bias on a copy in forward, so that
        # third gets no gradient; here it does (test_v2_ignores_the_key_bias)
        k_bias = slice(16, 32)
        assert not ga["attn.qkv.bias"][k_bias].any()
        assert gb["attn.qkv.bias"][k_bias].abs().sum() > 0
        ga["attn.qkv.bias"][k_bias] = gb["attn.qkv.bias"][k_bias]
    assert set(ga) == set(gb)
    for k, g in ga.items():
        torch.testing.assert_close(gb[k], g)


# ---------------------------------------------------------------- the buffers computed in the spec


def _tv_mask(pad_h, pad_w, window, shift):
    """torchvision's shifted-window mask (from shifted_window_attention), num_windows x N x N."""
    attn_mask = torch.zeros((pad_h, pad_w))
    h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    count = 0
    for h in h_slices:
        for w in w_slices:
            attn_mask[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    num_windows = (pad_h // window[0]) * (pad_w // window[1])
    attn_mask = attn_mask.view(pad_h // window[0], window[0], pad_w // window[1], window[1])
    attn_mask = attn_mask.permute(0, 2, 1, 3).reshape(num_windows, window[0] * window[1])
    attn_mask = attn_mask.unsqueeze(1) - attn_mask.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)


@pytest.mark.parametrize("shape,window,shift,used", [
    ((12, 10, 8), [4, 4], [2, 2], [2, 2]),
    ((14, 21, 8), [7, 7], [3, 3], [3, 3]),
    ((3, 20, 8), [4, 6], [2, 3], [0, 3]),   # torchvision zeroes the shift along H (window >= padded H)
    ((20, 3, 8), [6, 4], [3, 2], [3, 0]),
    ((9, 6, 8), [3, 5], [1, 2], [1, 2]),
])
def test_attention_mask_is_torchvisions(shape, window, shift, used):
    spec = _attention_spec("ShiftedWindowAttention", shape, "2", str(window), str(shift))
    attn = spec.build().attn
    ph, pw = (-(-shape[0] // window[0]) * window[0], -(-shape[1] // window[1]) * window[1])
    want = _tv_mask(ph, pw, window, used).unsqueeze(1)
    assert attn.attn_mask.dtype == torch.float32
    assert torch.equal(attn.attn_mask, want)
    assert "attn_mask" not in attn.state_dict()


@pytest.mark.parametrize("window", [[2, 2], [3, 5], [7, 7], [8, 8], [12, 12], [13, 9]])
def test_relative_coords_table_is_torchvisions(window):
    swin = _tv_swin()
    spec = _attention_spec("ShiftedWindowAttentionV2", (window[0], window[1], 8), "2", str(window), "[0, 0]")
    ours = spec.build().attn
    ref = swin.ShiftedWindowAttentionV2(8, window, [0, 0], 2)
    assert ours.relative_coords_table.dtype == torch.float32
    assert torch.equal(ours.relative_coords_table, ref.relative_coords_table)
    assert torch.equal(ours.relative_position_index, ref.relative_position_index)
    assert torch.equal(ours.logit_scale, ref.logit_scale)
    assert math.isclose(ours.logit_scale[0, 0, 0].item(), math.log(10), rel_tol=1e-7)
