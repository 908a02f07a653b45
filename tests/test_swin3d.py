"""Video Swin Transformers (specs/lib/swin3d.arch) against torchvision.models.video.swin3d_t/s/b.

For each variant: the same state_dict keys in torchvision's order with the same shapes, bit-identical initial
weights with the same seed, strict loading, the parameter count of the weights' metadata, `summary`
MACs equal to torchvision's published `_ops` (16-frame 224x224 clips), checker shapes equal to
torch's at the default input (on the meta device: 44-141 GMACs a clip), and eval outputs
**bit-identical** to torchvision's (``torch.equal``: the spec performs torchvision's operations in
its order) with every module's real shape equal to the checker's at a small clip (3x4x64x64), and
for swin3d_t at an odd one (3x5x45x61: padding in the patch embedding, the attention and the patch
merging; windows clipped to the map along T everywhere, along H and W in the later stages, so the
bias is read from the top-left corner of the full window's index).

The attention block alone against torchvision's ShiftedWindowAttention3d on small maps covers what
the networks at these clips do not: windows shifted along T (a 16-frame clip has 8 patch frames, no
more than the window), and window sizes other than torchvision's 8x7x7 (whose index the family
computes once, at the top level).

A spec bakes its input's window geometry (padding, clipped windows, the mask) into the model, as
specs/lib/swin_attention.arch does, so each clip is run by a model built for it (the state_dict
does not depend on the clip).
"""

from __future__ import annotations

import pytest
import torch

import archdsl
from archdsl.testing import torchvision_model

from .conftest import ROOT
from .helpers import assert_meta_shapes, module_shapes, perturb_zeros, seeded_pair

LIB = ROOT / "specs" / "lib" / "swin3d.arch"
VARIANTS = ["swin3d_t", "swin3d_s", "swin3d_b"]
NUM_PARAMS = {"swin3d_t": 28_158_070, "swin3d_s": 49_816_678, "swin3d_b": 88_048_984}
SMALL = (2, (3, 4, 64, 64))
ODD = (1, (3, 5, 45, 61))
WEIGHTS = {"swin3d_t": "Swin3D_T_Weights", "swin3d_s": "Swin3D_S_Weights", "swin3d_b": "Swin3D_B_Weights"}


def _load(name, **kw):
    return archdsl.load_spec(ROOT / "specs" / f"{name}.arch", **kw)


def _assert_identical_outputs_and_shapes(spec, ours, ref, x):
    """Eval outputs bit-identical (``torch.equal``); every module's real output shape is the checker's."""
    shapes, expected, got = module_shapes(spec, ours, x)
    with torch.no_grad():
        want = ref(x)
    assert torch.equal(got, want), (got - want).abs().max()
    assert tuple(got.shape[1:]) == spec.output_shape
    assert shapes == expected


@pytest.fixture(scope="module", params=VARIANTS)
def pair(request):
    """(name, spec at the small clip, ours, ref, ours' initial state_dict, ref's initial state_dict), built with
    the same seed; ref's weights (zeros perturbed) are then loaded into ours."""
    name = request.param
    spec = _load(name, input_shape=SMALL[1])
    ours, ref = seeded_pair(spec, lambda: torchvision_model(name))
    ours_init, ref_init = ours.state_dict(), ref.state_dict()
    ours_init = {k: v.clone() for k, v in ours_init.items()}
    ref_init = {k: v.clone() for k, v in ref_init.items()}
    perturb_zeros(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    return name, spec, ours, ref, ours_init, ref_init


def test_layout_init_and_parameters(pair, tv):
    name, spec, ours, ref, ours_init, ref_init = pair
    assert list(ours_init) == list(ref_init)            # torchvision's order (`register` in PatchMerging3d)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert {k: v.shape for k, v in ours_init.items()} == {k: v.shape for k, v in ref_init.items()}
    assert {k: v.dtype for k, v in ours_init.items()} == {k: v.dtype for k, v in ref_init.items()}
    # same seed, same weights (the relative_position_index buffers included)
    assert [k for k in ref_init if not torch.equal(ours_init[k], ref_init[k])] == []
    n_ref = sum(p.numel() for p in ref.parameters())
    assert spec.num_params == n_ref == NUM_PARAMS[name]
    assert n_ref == getattr(tv.models.video, WEIGHTS[name]).DEFAULT.meta["num_params"]
    # the stochastic-depth rates of the blocks are torchvision's (one module applied twice there)
    ref_p = [m.p for p, m in ref.named_modules() if p.endswith(".stochastic_depth")]
    ours_p = [m.p for p, m in ours.named_modules() if p.endswith(".stochastic_depth")]
    ours_p2 = [m.p for p, m in ours.named_modules() if p.endswith(".stochastic_depth2")]
    assert ours_p == ours_p2 == ref_p and ref_p[-1] == pytest.approx(0.1)
    # the mask regions are a non-persistent buffer: in the module, not in the state_dict
    assert any(k.endswith("attn.attn_mask_regions") for k, _ in ours.named_buffers())


def test_module_tree_is_torchvisions(pair):
    """named_modules() is torchvision's, in its order, but for the parameter-free modules the language
    adds: each block's second stochastic depth (torchvision applies one module twice) and the merge's
    `gather`."""
    _, _, ours, ref, _, _ = pair
    extra = [n for n, _ in ours.named_modules() if n.endswith((".stochastic_depth2", ".gather"))]
    assert [n for n, _ in ours.named_modules() if n not in set(extra)] == [n for n, _ in ref.named_modules()]
    assert all(not list(ours.get_submodule(n).parameters()) for n in extra)


def test_outputs_at_a_small_clip(pair):
    _, spec, ours, ref, _, _ = pair
    torch.manual_seed(1)
    x = torch.randn(SMALL[0], *SMALL[1])
    _assert_identical_outputs_and_shapes(spec, ours, ref, x)


@pytest.mark.parametrize("pair", ["swin3d_t"], indirect=True)
def test_outputs_at_an_odd_clip(pair):
    """swin3d_t at 3x5x45x61, with its own model (the geometry differs) holding torchvision's weights."""
    name, _, _, ref, _, _ = pair
    spec = _load(name, input_shape=ODD[1])
    ours = spec.build()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    torch.manual_seed(1)
    x = torch.randn(ODD[0], *ODD[1])
    _assert_identical_outputs_and_shapes(spec, ours, ref, x)


@pytest.mark.parametrize("name", VARIANTS)
def test_default_input_shapes_and_macs(name, tv):
    spec = _load(name)
    assert spec.input_shape == (3, 16, 224, 224) and spec.output_shape == (400,)
    assert_meta_shapes(spec)
    with torch.device("meta"):
        ref = torchvision_model(name).eval()
        assert tuple(ref(torch.empty(1, *spec.input_shape)).shape[1:]) == spec.output_shape
    # torchvision publishes the MACs of a 16-frame clip at the weights' crop
    weights = getattr(tv.models.video, WEIGHTS[name]).DEFAULT
    assert tuple(weights.transforms().crop_size) == spec.input_shape[2:]
    published = weights.meta["_ops"]
    ours = spec.summary().totals["macs"] / 1e9
    assert abs(ours - published) <= 0.005 * published or round(ours, 3) == published, \
        f"{name}: ours {ours:.4f} G, torchvision {published}"


# ---------------------------------------------------------------- the attention block alone

BLOCK_CASES = [  # (T, H, W, C), heads, window, shift
    ((9, 8, 8, 16), 2, [8, 7, 7], [4, 3, 3]),     # torchvision's window, shifted along T too; padding
    ((6, 10, 13, 8), 2, [4, 4, 4], [2, 2, 2]),    # another window: padding along every dim, all shifted
    ((3, 9, 9, 8), 2, [4, 3, 3], [2, 1, 1]),      # clipped along T (no shift there), shifted along H, W
    ((2, 3, 3, 8), 1, [2, 3, 3], [1, 1, 1]),      # the window is the whole map: no shift, no mask
    ((5, 7, 6, 12), 3, [2, 3, 5], [0, 0, 0]),     # no shift; padding; a non-cubic window
    ((4, 5, 9, 8), 2, [8, 7, 7], [4, 3, 3]),      # torchvision's window clipped along T and H only
]


@pytest.mark.parametrize("shape,heads,window,shift", BLOCK_CASES)
def test_attention_block_matches_torchvision(shape, heads, window, shift, tv):
    """ShiftedWindowAttention3d against torchvision's on a T x H x W x C map (the model takes C x T x H x W
    and makes it channels-last first): the same state_dict with the same seed, the same outputs bit for bit."""
    import torchvision.models.video.swin_transformer as swin3d
    t, h, w, c = shape
    spec = archdsl.load_spec(f'use "{LIB}"\nmodel m input {c}x{t}x{h}x{w} {{ permute([0, 2, 3, 4, 1]); '
                             f'attn: ShiftedWindowAttention3d({heads}, {window}, {shift}) }}')
    ours, ref = seeded_pair(spec, lambda: swin3d.ShiftedWindowAttention3d(c, list(window), list(shift), heads))
    ours_sd, ref_sd = ours.attn.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert [k for k in ref_sd if not torch.equal(ours_sd[k], ref_sd[k])] == []
    perturb_zeros(ref)
    ours.attn.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    torch.manual_seed(1)
    x = torch.randn(2, c, t, h, w)
    with torch.no_grad():
        got, want = ours(x), ref(x.permute(0, 2, 3, 4, 1))
    assert tuple(got.shape[1:]) == spec.output_shape == (t, h, w, c)
    assert torch.equal(got, want)

