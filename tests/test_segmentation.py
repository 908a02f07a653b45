"""Segmentation (specs/lib/segmentation.arch) against torchvision.models.segmentation.

For FCN and DeepLabV3 on the dilated ResNet-50/101, DeepLabV3 and LR-ASPP on the dilated
MobileNetV3-Large, with and without the auxiliary classifier (``*_aux``, torchvision's
``aux_loss=True``; LR-ASPP has none):

* on the meta device (no memory, no arithmetic), at 3x520x520 and at an odd size: the same
  state_dict keys and shapes as torchvision's model, the exact parameter count, every module's
  real output shape equal to the checker's, the result dict's keys and shapes equal to
  torchvision's, and MACs equal to what torch's flop counter measures on torchvision's model;
* the aux layouts (those of torchvision's pretrained weights) against the published
  ``num_params`` and ``_ops`` (at 520x520, within 0.5%, as tests/test_summary.py does);
* real modules at a small odd input: bit-identical initial weights with the same seed, strict
  loading of torchvision's state_dict, and equal eval outputs per dict key.

A known gap: torchvision builds the whole classification network (ResNet's ``fc``,
MobileNetV3's ``classifier``) and drops it in ``IntermediateLayerGetter``; the dropped layers'
random draws come before the backbone's init loop, and a spec cannot build a module only for its
random draws. The initial weights are bit-identical to torchvision's built with those draws left
out (``torchvision_reference(..., drop_classifier_draws=True)``); against plain torchvision they differ
(``test_initial_weights_equal_plain_torchvision``, an expected failure).
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import archdsl
from archdsl.testing import TORCHVISION_LAYOUTS

from .conftest import ROOT
from .helpers import assert_registered_like, module_shapes, perturb_zeros, seeded_pair, torchvision_reference

RESNET = ["fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101"]
MOBILENET = ["deeplabv3_mobilenet_v3_large"]
SEGMENTATION = [n + s for n in RESNET + MOBILENET for s in ("", "_aux")] + ["lraspp_mobilenet_v3_large"]
#: the layouts of torchvision's pretrained weights, whose meta publishes num_params and _ops
PUBLISHED = [n for n in SEGMENTATION if n.endswith("_aux") or n.startswith("lraspp")]
ODD = (3, 67, 71)
#: the odd input of the real forward of the ResNet models (their dilated stages are slow on CPU)
SMALL_ODD = (3, 37, 45)
#: real forwards for these; the other ResNet layouts are these less the auxiliary classifier, or
#: with deeper layer3 (their shapes are checked on meta, their initialization and loading for real)
FORWARD = ["fcn_resnet50_aux", "deeplabv3_resnet50_aux"] + [n for n in SEGMENTATION if "mobilenet" in n]


def _load(name, shape=None):
    return archdsl.load_spec(ROOT / "specs" / f"{name}.arch", input_shape=shape)


def _check_result_type(result, want):
    """torchvision's result type: a dict with its keys, in its order."""
    assert list(want) in (["out"], ["out", "aux"])
    assert isinstance(result, dict) and list(result) == list(want)


def test_variants_and_layouts():
    assert set(SEGMENTATION) <= set(TORCHVISION_LAYOUTS)
    for name in SEGMENTATION:
        assert (ROOT / "specs" / f"{name}.arch").exists()
        spec = _load(name)
        assert spec.input_shape == (3, 520, 520)
        assert list(spec.output_shapes) == (["out", "aux"] if name.endswith("_aux") else ["out"])
        assert all(s == (21, 520, 520) for s in spec.output_shapes.values())


@pytest.mark.parametrize("name", SEGMENTATION)
def test_matches_torchvision_on_meta(name, tv):
    ref = torchvision_reference(name, device="meta").eval()
    spec = _load(name)
    ours = spec.build(device="meta").eval()
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    assert spec.num_params == sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ours.parameters())

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        ref(torch.empty(1, *spec.input_shape, device="meta"))
    assert spec.macs == counter.get_total_flops() // 2

    for shape in (None, ODD):
        spec = _load(name, shape)
        ours = spec.build(device="meta").eval()
        x = torch.empty(2, *spec.input_shape, device="meta")
        got, expected, result = module_shapes(spec, ours, x)
        assert got == expected
        with torch.no_grad():
            want = ref(x)
        _check_result_type(result, want)
        assert {k: tuple(v.shape) for k, v in result.items()} == {k: tuple(v.shape) for k, v in want.items()}
        assert {k: (2, *s) for k, s in spec.output_shapes.items()} == {k: tuple(v.shape) for k, v in want.items()}


@pytest.mark.parametrize("name", PUBLISHED)
def test_costs_match_torchvision_published(name, tv):
    weights = tv.models.get_model_weights(TORCHVISION_LAYOUTS[name][0]).DEFAULT
    size = weights.transforms().resize_size[0]
    spec = _load(name, (3, size, size))
    assert spec.num_params == weights.meta["num_params"]
    ours, published = spec.summary().totals["macs"] / 1e9, weights.meta["_ops"]
    assert abs(ours - published) <= 0.005 * published, f"{name} at {size}: ours {ours:.4f} G, torchvision {published}"


@pytest.mark.parametrize("name", SEGMENTATION)
def test_matches_torchvision(name, tv):
    shape = SMALL_ODD if "resnet" in name else ODD
    spec = _load(name, shape)
    ours, ref = seeded_pair(spec, lambda: torchvision_reference(name, drop_classifier_draws=True))
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    if name.endswith("_aux"):
        # torchvision builds the auxiliary classifier (drawing its random numbers) before the classifier,
        # then registers it after; modules are built in their registration order here, so the seeded
        # weights keep torchvision's draws and `aux_classifier` comes before `classifier`
        assert [k for k in ours_sd if not k.startswith(("classifier.", "aux_classifier."))] == \
            [k for k in ref_sd if not k.startswith(("classifier.", "aux_classifier."))]
        assert set(ours_sd) == set(ref_sd)
    else:
        assert_registered_like(ours, ref)
    assert [k for k, v in ours_sd.items() if not torch.equal(v, ref_sd[k])] == []

    perturb_zeros(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    if name not in FORWARD:
        return
    ours.eval()
    ref.eval()
    torch.manual_seed(1)
    x = torch.randn(2, *shape)
    got, expected, result = module_shapes(spec, ours, x)
    assert got == expected
    with torch.no_grad():
        want = ref(x)
    _check_result_type(result, want)
    for key in want:
        torch.testing.assert_close(result[key], want[key], rtol=1.3e-6, atol=1e-5)


@pytest.mark.xfail(strict=True, reason="torchvision draws random numbers for the classifier it drops (ResNet's fc, "
                                       "MobileNetV3's classifier) before the backbone's init loop; a spec cannot "
                                       "build a module only for its random draws")
def test_initial_weights_equal_plain_torchvision(tv):
    ours, ref = seeded_pair(_load("lraspp_mobilenet_v3_large", ODD),
                            lambda: torchvision_reference("lraspp_mobilenet_v3_large"))
    ref_sd = ref.state_dict()
    assert [k for k, v in ours.state_dict().items() if not torch.equal(v, ref_sd[k])] == []


def test_dilated_backbones_are_the_family_files(tv, at_root):
    """The backbones are the classification families' trunks with torchvision's dilation options:
    ResNet's `replace_stride_with_dilation` and MobileNetV3's `dilated`, defaults unchanged."""
    for flags in ([False, False, True], [True, True, True]):  # [False, True, True]: the segmentation specs
        text = ('use "specs/lib/resnet.arch"\nmodel m input 3x64x64 { inline ResNetTrunk(Bottleneck, [1, 2, 2, 1], '
                f'replace_stride_with_dilation = [{", ".join(str(f).lower() for f in flags)}]) }}')
        spec = archdsl.load_spec(text)
        ref = tv.models.resnet.ResNet(tv.models.resnet.Bottleneck, [1, 2, 2, 1], replace_stride_with_dilation=flags)
        ref = torch.nn.Sequential(OrderedDict(list(ref.named_children())[:-2])).eval()
        ours = spec.build().eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1.3e-6, atol=1e-5)
        assert spec.output_shape == tuple(ref(x).shape[1:])
    with pytest.raises(archdsl.SpecError, match="dilation"):
        archdsl.load_spec('use "specs/lib/resnet.arch"\nmodel m input 3x64x64 { inline ResNetTrunk(BasicBlock, [1, 1, 1, 2], '
                   'replace_stride_with_dilation = [false, false, true]) }')
    spec = archdsl.load_spec('use "specs/lib/mobilenet_v3.arch"\n'
                      'model m input 3x64x64 { inline MobileNetV3Features(mobilenet_v3_small_config, dilated = true) }')
    ref = tv.models.mobilenet_v3_small(dilated=True).features.eval()
    ours = spec.build().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1.3e-6, atol=1e-5)

