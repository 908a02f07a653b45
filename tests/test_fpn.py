"""Detection backbones (specs/lib/fpn.arch) against torchvision.models.detection.backbone_utils.

``resnet50_fpn`` is ``resnet_fpn_backbone(backbone_name="resnet50", weights=None,
trainable_layers=5)`` and ``mobilenet_v3_large_fpn`` is ``mobilenet_backbone(backbone_name=
"mobilenet_v3_large", fpn=True, weights=None, trainable_layers=6)``, both with torchvision's default
``norm_layer``, FrozenBatchNorm2d (four buffers, no parameters), written in the spec from
``buffer`` and tensor algebra.

* on the meta device at 3x224x224: the same state_dict keys and shapes, the exact parameter count,
  MACs equal to what torch's flop counter measures on torchvision's module, and the result dict's
  keys (in order) and shapes;
* real modules at 3x67x71: bit-identical initial weights with the
  same seed, strict loading of torchvision's state_dict, equal eval outputs for every key, and every
  module's real output shape equal to the checker's.

As in tests/test_segmentation.py, torchvision builds the whole classification network (ResNet's
``fc``, MobileNetV3's ``classifier``) and drops it; its random draws shift the later weights (the
FPN's, and ResNet's whole init loop), and a spec cannot build a module only for its random draws.
The initial weights are compared with torchvision built with those draws left out; against plain
torchvision they differ (``test_initial_weights_equal_plain_torchvision``, an expected failure).
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import archdsl
from archdsl.testing import TORCHVISION_LAYOUTS

from .conftest import ROOT
from .helpers import assert_same_init, load_reference, module_shapes, seeded_pair, torchvision_reference

KEYS = {"resnet50_fpn": ["0", "1", "2", "3", "pool"], "mobilenet_v3_large_fpn": ["0", "1", "pool"]}
NAMES = list(KEYS)
ODD = (3, 67, 71)


def _load(name, shape=None):
    return archdsl.load_spec(ROOT / "specs" / f"{name}.arch", input_shape=shape)


def test_variants_and_layouts():
    for name, keys in KEYS.items():
        assert name in TORCHVISION_LAYOUTS
        spec = _load(name)
        assert spec.input_shape == (3, 224, 224)
        assert list(spec.output_shapes) == keys
        assert all(s[0] == 256 for s in spec.output_shapes.values())
    assert list(_load("resnet50_fpn").output_shapes.values()) == [
        (256, 56, 56), (256, 28, 28), (256, 14, 14), (256, 7, 7), (256, 4, 4)]
    assert list(_load("mobilenet_v3_large_fpn").output_shapes.values()) == [(256, 7, 7), (256, 7, 7), (256, 4, 4)]


@pytest.mark.parametrize("name", NAMES)
def test_matches_torchvision_on_meta(name, tv):
    ref = torchvision_reference(name, device="meta").eval()
    spec = _load(name)
    ours = spec.build(device="meta").eval()
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    assert not any(k.endswith("num_batches_tracked") for k in ours_sd)        # FrozenBatchNorm2d
    assert spec.num_params == sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ours.parameters())

    x = torch.empty(1, *spec.input_shape, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        want = ref(x)
    assert spec.macs == counter.get_total_flops() // 2
    got, expected, result = module_shapes(spec, ours, x)
    assert got == expected
    assert isinstance(result, dict) and list(result) == list(want) == KEYS[name]
    assert {k: (1, *s) for k, s in spec.output_shapes.items()} == {k: tuple(v.shape) for k, v in want.items()}


def _perturb(ref) -> None:
    """Random frozen statistics and affine terms, and random biases, so that equal outputs test them."""
    torch.manual_seed(2)
    with torch.no_grad():
        for k, v in ref.state_dict().items():
            if k.endswith("running_var"):
                v.uniform_(0.5, 1.5)
            elif k.endswith(("running_mean", "bias")) or (k.endswith("weight") and v.dim() == 1):
                v.add_(torch.randn_like(v) * 0.05)


@pytest.mark.parametrize("name", NAMES)
def test_matches_torchvision(name, tv):
    spec = _load(name, ODD)
    ours, ref = seeded_pair(spec, lambda: torchvision_reference(name, drop_classifier_draws=True))
    assert_same_init(ours, ref)

    load_reference(ours, ref, _perturb)
    torch.manual_seed(1)
    x = torch.randn(2, *ODD)
    got, expected, result = module_shapes(spec, ours, x)
    assert got == expected
    with torch.no_grad():
        want = ref(x)
    assert isinstance(result, dict) and list(result) == list(want) == KEYS[name]
    assert {k: (2, *s) for k, s in spec.output_shapes.items()} == {k: tuple(v.shape) for k, v in want.items()}
    for key in want:
        # Frozen norms do not normalize, so ResNet-50's maps reach the hundreds: compare at the maps'
        # scale (FrozenBatchNorm2d's rsqrt is exp(-log(v) / 2) in the spec: equal to float32 rounding)
        scale = want[key].abs().max()
        torch.testing.assert_close(result[key] / scale, want[key] / scale, rtol=1.3e-6, atol=1e-5)


@pytest.mark.xfail(strict=True, reason="torchvision draws random numbers for the classifier it drops (ResNet's fc, "
                                       "MobileNetV3's classifier) before the FPN's init; a spec cannot build a "
                                       "module only for its random draws")
def test_initial_weights_equal_plain_torchvision(tv):
    ours, ref = seeded_pair(_load("mobilenet_v3_large_fpn", ODD),
                            lambda: torchvision_reference("mobilenet_v3_large_fpn"))
    ref_sd = ref.state_dict()
    assert [k for k, v in ours.state_dict().items() if not torch.equal(v, ref_sd[k])] == []


def test_frozen_batchnorm_and_trunk_norm(tv, at_root):
    """FrozenBatchNorm2d matches torchvision's (buffers only), and ResNetTrunk's `norm` is torchvision's
    `norm_layer` (BasicBlock too); the default stays batchnorm2d."""
    from torchvision.ops.misc import FrozenBatchNorm2d
    spec = archdsl.load_spec('use "specs/lib/fpn.arch"\nmodel m input 8x5x7 { bn: FrozenBatchNorm2d(eps = 1e-3) }')
    ours = spec.build().eval()
    assert spec.num_params == 0 and sum(p.numel() for p in ours.parameters()) == 0
    ref = torch.nn.Sequential()
    ref.add_module("bn", FrozenBatchNorm2d(8, eps=1e-3))
    _perturb(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 8, 5, 7)
    torch.testing.assert_close(ours(x), ref(x), rtol=1.3e-6, atol=1e-6)

    spec = archdsl.load_spec('use "specs/lib/fpn.arch"\nmodel m input 3x64x64 { inline ResNetTrunk(BasicBlock, '
                             '[1, 1, 1, 1], norm = FrozenBatchNorm2d) }')
    resnet = tv.models.resnet.ResNet(tv.models.resnet.BasicBlock, [1, 1, 1, 1], norm_layer=FrozenBatchNorm2d)
    ref = torch.nn.Sequential(OrderedDict(list(resnet.named_children())[:-2]))
    _perturb(ref)
    ours = spec.build().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref.eval()(x), rtol=1.3e-6, atol=1e-5)
    spec = archdsl.load_spec('use "specs/lib/resnet.arch"\nmodel m input 3x64x64 { inline ResNetTrunk(BasicBlock, [1, 1, 1, 1]) }')
    assert {n.op for n in spec.ir.ops()} >= {"batchnorm2d"}
