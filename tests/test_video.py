"""Video models (specs/lib/video_resnet.arch, specs/lib/s3d.arch) against torchvision.models.video.

For r3d_18, mc3_18, r2plus1d_18 and s3d: the same state_dict keys in the same order, bit-identical
initial weights with the same seed, strict loading, exact parameter counts, `summary` MACs equal to
torchvision's published `_ops`, checker shapes equal to torch's at the default input (on the meta
device: the video nets cost 18-43 GMACs a clip there), and equal eval outputs with every module's real
shape equal to the checker's at small and odd inputs (S3D's fixed 2x7x7 average pool needs T >= 13 and
H, W >= 209, so its odd input is the smallest it takes).
"""

from __future__ import annotations

import pytest
import torch

import archdsl
from archdsl.testing import torchvision_model

from .conftest import ROOT
from .helpers import assert_meta_shapes, assert_same_init, assert_same_outputs_and_shapes, load_reference, seeded_pair

#: model -> inputs (batch, shape) for the real forward comparisons
CASES = {
    "r3d_18": [(2, (3, 8, 56, 56)), (1, (3, 7, 45, 61))],
    "mc3_18": [(2, (3, 8, 56, 56)), (1, (3, 7, 45, 61))],
    "r2plus1d_18": [(2, (3, 8, 56, 56)), (1, (3, 7, 45, 61))],
    "s3d": [(1, (3, 13, 209, 215))],
}
WEIGHTS = {"r3d_18": "R3D_18_Weights", "mc3_18": "MC3_18_Weights", "r2plus1d_18": "R2Plus1D_18_Weights",
           "s3d": "S3D_Weights"}


def _load(name, **kw):
    return archdsl.load_spec(ROOT / "specs" / f"{name}.arch", **kw)


@pytest.mark.parametrize("name", list(CASES))
def test_video_parity_with_torchvision(name, tv):
    spec = _load(name)
    ours, ref = seeded_pair(spec, lambda: torchvision_model(name))
    assert_same_init(ours, ref)                          # same seed, same weights
    assert spec.num_params == sum(p.numel() for p in ref.parameters())
    assert spec.num_params == getattr(tv.models.video, WEIGHTS[name]).DEFAULT.meta["num_params"]

    load_reference(ours, ref)
    torch.manual_seed(1)
    for batch, shape in CASES[name]:
        small = _load(name, input_shape=shape)
        assert_same_outputs_and_shapes(small, ours, ref, torch.randn(batch, *shape))


@pytest.mark.parametrize("name", list(CASES))
def test_video_shapes_at_the_default_input(name, tv):
    spec = _load(name)
    assert spec.input_shape == ((3, 16, 224, 224) if name == "s3d" else (3, 16, 112, 112))
    assert_meta_shapes(spec)
    with torch.device("meta"):
        ref = torchvision_model(name).eval()
        assert tuple(ref(torch.empty(1, *spec.input_shape)).shape[1:]) == spec.output_shape == (400,)


@pytest.mark.parametrize("name", list(CASES))
def test_video_macs_match_torchvision_published(name, tv):
    weights = getattr(tv.models.video, WEIGHTS[name]).DEFAULT
    crop = weights.transforms().crop_size
    spec = _load(name, input_shape=(3, 16, *crop))
    published = weights.meta["_ops"]  # GMACs at 3x16 x crop, to 3 decimals
    ours = spec.summary().totals["macs"] / 1e9
    assert abs(ours - published) <= 0.005 * published or round(ours, 3) == published, \
        f"{name}: ours {ours:.4f} G, torchvision {published}"


def test_video_resnet_bottleneck_unit_matches_torchvision(tv, at_root):
    """The family's Bottleneck (no torchvision builder uses it) against VideoResNet(Bottleneck, ...)."""
    video = tv.models.video.resnet
    text = ('use "specs/lib/video_resnet.arch"\n'
            "model r3d_bottleneck input 3x4x32x32 = VideoResNet(Bottleneck, "
            "[Conv3DSimple, Conv2Plus1D, Conv3DNoTemporal, Conv3DSimple], [1, 1, 1, 1], BasicStem, num_classes = 10)\n")
    spec = archdsl.load_spec(text)
    ours, ref = seeded_pair(spec, lambda: video.VideoResNet(
        video.Bottleneck, [video.Conv3DSimple, video.Conv2Plus1D, video.Conv3DNoTemporal, video.Conv3DSimple],
        [1, 1, 1, 1], video.BasicStem, num_classes=10))
    assert_same_init(ours, ref)
    assert spec.num_params == sum(p.numel() for p in ref.parameters())
    load_reference(ours, ref)
    assert_same_outputs_and_shapes(spec, ours, ref, torch.randn(2, *spec.input_shape))
