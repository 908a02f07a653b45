"""MViT v1 / v2 (specs/lib/mvit.arch, specs/mvit_v1_b.arch, specs/mvit_v2_s.arch) against
torchvision.models.video.mvit.

At the default 3x16x224x224 clip (~65-70 GMACs, so on the meta device only): the same state_dict keys in
the same order with the same shapes as torchvision's model, the published parameter counts, the same module
tree (names, order, classes) but for the differences specs/lib/mvit.arch lists, and every module's real
output shape (torch's meta kernels) equal to the checker's. With the same seed, bit-identical
initial weights at the default size. Real eval outputs (and every module's shape) against
torchvision's MViT built directly with the builder's block config at a small clip (MViT fixes its
token grid when built: v1's position embeddings, v2's relative position tables), non-square for v1;
v1's bit-identical.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch

import archdsl

from .conftest import ROOT
from .helpers import assert_meta_shapes, assert_same_init, assert_same_outputs_and_shapes, load_reference, seeded_pair

WEIGHTS = {"mvit_v1_b": "MViT_V1_B_Weights", "mvit_v2_s": "MViT_V2_S_Weights"}
#: model -> (batch, clip) for the real forward comparison; v2's relative position tables need a
#: square token map that the strides divide
SMALL = {"mvit_v1_b": (2, (3, 6, 48, 72)), "mvit_v2_s": (2, (3, 4, 64, 64))}


def _load(name, **kw):
    return archdsl.load_spec(ROOT / "specs" / f"{name}.arch", **kw)


def _reference(tv, name, clip=None):
    """torchvision's MViT with the builder's arguments (block config, flags), at ``clip`` (C, T, H, W)."""
    mvit = tv.models.video.mvit
    with mock.patch.object(mvit, "_mvit", lambda **kw: kw):
        kw = getattr(mvit, name)()
    kw.pop("weights")
    kw.pop("progress")
    if clip is not None:
        kw.update(temporal_size=clip[1], spatial_size=(clip[2], clip[3]))
    return mvit.MViT(**{"rel_pos_embed": False, "proj_after_attn": False, **kw})


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_mvit_at_the_default_input_on_meta(name, tv):
    spec = _load(name)
    assert spec.input_shape == (3, 16, 224, 224)
    assert spec.num_params == getattr(tv.models.video, WEIGHTS[name]).DEFAULT.meta["num_params"]
    ours = spec.build(device="meta").eval()
    with torch.device("meta"):
        ref = getattr(tv.models.video, name)().eval()
        ref_out = tuple(ref(torch.empty(1, *spec.input_shape)).shape[1:])
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in ref.state_dict().items()]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert spec.num_params == sum(p.numel() for p in ref.parameters())
    # the module trees differ only where specs/lib/mvit.arch says: torchvision applies `stochastic_depth`
    # twice (here a second, parameterless `stochastic_depth_mlp`), and its MLP class (a subclass of
    # nn.Sequential, no tensors of its own) is a plain nn.Sequential here; otherwise the same modules, in
    # the same order, of the same classes
    ours_tree = [(n, type(m).__name__) for n, m in ours.named_modules()]
    ref_tree = [(n, type(m).__name__) for n, m in ref.named_modules()]
    extra = [f"blocks.{i}.stochastic_depth_mlp" for i in range(16)]
    assert [n for n, _ in ours_tree if n not in extra] == [n for n, _ in ref_tree]
    assert [(n, c) for n, c in ours_tree if n in extra] == [(n, "StochasticDepth") for n in extra]
    ref_classes = dict(ref_tree)
    assert sorted((n, c, ref_classes[n]) for n, c in ours_tree if n not in extra and c != ref_classes[n]) == \
        sorted((f"blocks.{i}.mlp", "Sequential", "MLP") for i in range(16))
    # every module holding tensors of its own is of torchvision's class (nn.Linear, nn.LayerNorm, ...)
    ref_modules = dict(ref.named_modules())
    held = [(n, type(m).__name__, type(ref_modules[n]).__name__) for n, m in ours.named_modules()
            if list(m.parameters(recurse=False)) or list(ref_modules.get(n, m).parameters(recurse=False))]
    assert {c for _, c, _ in held} >= {"Linear", "LayerNorm", "Conv3d", "PositionalEncoding"}
    assert [(n, c) for n, c, rc in held if c != rc] == []
    assert [n for n, _ in ours.named_buffers()] == ([] if name == "mvit_v1_b" else
        [f"blocks.{i}.attn.dist_{a}" for i in range(16) for a in "thw"])   # non-persistent
    out = assert_meta_shapes(spec, ours)
    assert tuple(out.shape[1:]) == ref_out == spec.output_shape == (400,)


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_mvit_initial_weights_match_torchvision(name, tv):
    """torchvision's creation order and init loop, draw for draw, at the default clip."""
    ours, ref = seeded_pair(_load(name), lambda: getattr(tv.models.video, name)())
    assert_same_init(ours, ref)


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_mvit_outputs_match_torchvision_at_a_small_clip(name, tv):
    batch, clip = SMALL[name]
    spec = _load(name, input_shape=clip)
    ours, ref = seeded_pair(spec, lambda: _reference(tv, name, clip))
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert spec.num_params == sum(p.numel() for p in ref.parameters())
    load_reference(ours, ref)
    torch.manual_seed(1)
    x = torch.randn(batch, *clip)
    assert_same_outputs_and_shapes(spec, ours, ref, x)
    if name == "mvit_v1_b":
        # the same torch ops in the same order: bit-identical (v2's relative positions use matmuls where
        # torchvision uses einsum, which sums in another order)
        with torch.no_grad():
            assert torch.equal(ours(x), ref(x))


@pytest.mark.parametrize("clip", [(3, 4, 32, 48), (3, 4, 56, 56)])
def test_mvit_v2_refuses_clips_its_relative_position_tables_do_not_fit(clip):
    """torchvision interpolates v2's tables there (non-square, or strides that do not divide the map)."""
    with pytest.raises(archdsl.SpecError, match="do not fit the relative position tables"):
        _load("mvit_v2_s", input_shape=clip)


def test_mvit_refuses_clips_the_patch_stride_does_not_divide():
    with pytest.raises(archdsl.SpecError, match="torchvision plans for"):
        _load("mvit_v1_b", input_shape=(3, 5, 32, 48))
