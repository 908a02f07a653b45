"""MobileNet v1 (specs/mobilenet_v1.arch) against a plain-PyTorch reference.

torchvision has no MobileNet v1, so the reference is written here: the seed tutorial's
`DepthwiseSeparableConv` (/work/shared/seeds/003_*.txt, copied as it is) stacked in the
standard layout of the paper's Table 1 (a 3x3 stride-2 stem to 32 channels, 13 depthwise
separable blocks, global average pooling, a classifier), with module names in the style of
the seed's and torchvision's MobileNet v2 (`features.*`, `classifier.*`) and torchvision's
MobileNet v2 weight initialization. 4,231,976 parameters at width 1.0 with 1000 classes.

Checked: exact parameter count, state_dict keys (same order) and shapes, bit-identical
initial weights with the same seed, strict load, equal eval outputs, and every module's
real output shape equal to the checker's, at the default input, at an odd size and at a
smaller width multiplier. (MobileNet v2 and v3 are checked against torchvision by
tests/test_parity.py.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import archdsl

from .conftest import ROOT
from .helpers import assert_same_outputs_and_shapes

SPEC = ROOT / "specs" / "mobilenet_v1.arch"
NUM_PARAMS = 4_231_976


# ---- the reference, in plain PyTorch ---------------------------------------------------

class DepthwiseSeparableConv(nn.Module):
    """Depthwise Separable Convolution (the seed tutorial's block, unchanged)."""

    def __init__(self, in_channels, out_channels, stride=1):
        super(DepthwiseSeparableConv, self).__init__()
        # Depthwise: each input channel on its own
        self.depthwise = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size=3,
                      stride=stride, padding=1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU6(inplace=True)
        )
        # Pointwise: 1x1 conv mixing the channels
        self.pointwise = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True)
        )

    def forward(self, x):
        x = self.depthwise(x)
        x = self.pointwise(x)
        return x


def _make_divisible(v, divisor=8, min_value=None):
    """torchvision.models._utils._make_divisible."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class MobileNetV1(nn.Module):
    # (output channels, stride) of the 13 depthwise separable blocks (paper, Table 1)
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]

    def __init__(self, num_classes=1000, width_mult=1.0, dropout=0.2, rounding=None):
        super().__init__()
        width = rounding or (lambda c: _make_divisible(c * width_mult, 8))
        input_channel = width(32)
        features = [nn.Sequential(
            nn.Conv2d(3, input_channel, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(input_channel),
            nn.ReLU6(inplace=True),
        )]
        for c, s in self.cfg:
            features.append(DepthwiseSeparableConv(input_channel, width(c), s))
            input_channel = width(c)
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(input_channel, num_classes),
        )
        # torchvision's MobileNet v2 initialization
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = x.flatten(1)
        return self.classifier(x)


# ---- helpers ----------------------------------------------------------------------------

def n_params(module):
    return sum(p.numel() for p in module.parameters())


# ---- tests ------------------------------------------------------------------------------

def test_reference_parameter_count():
    assert n_params(MobileNetV1()) == NUM_PARAMS


def test_mobilenet_v1_matches_reference():
    spec = archdsl.load_spec(SPEC)
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = MobileNetV1()

    assert spec.num_params == NUM_PARAMS
    assert n_params(ours) == NUM_PARAMS

    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert {k: tuple(v.shape) for k, v in ours_sd.items()} == {k: tuple(v.shape) for k, v in ref_sd.items()}
    # same seed, same initial weights, bit for bit
    assert [k for k, v in ours_sd.items() if not torch.equal(v, ref_sd[k])] == []

    ours.load_state_dict(ref_sd, strict=True)
    ours.eval()
    ref.eval()
    torch.manual_seed(1)
    assert_same_outputs_and_shapes(spec, ours, ref, torch.randn(1, *spec.input_shape))


def test_mobilenet_v1_odd_input():
    spec = archdsl.load_spec(SPEC, input_shape=(3, 97, 131))
    ref = MobileNetV1().eval()
    # trained-looking batch-norm statistics, so that the comparison is not trivial
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = spec.build().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert_same_outputs_and_shapes(spec, ours, ref, torch.randn(2, *spec.input_shape))


@pytest.mark.parametrize("width_mult", [0.25, 0.5, 0.75])
def test_mobilenet_v1_width_multiplier(width_mult):
    spec = archdsl.load_spec(SPEC, width_mult=width_mult, num_classes=10, input_shape=(3, 64, 64))
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = MobileNetV1(num_classes=10, width_mult=width_mult)
    assert spec.num_params == n_params(ref) == n_params(ours)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert [k for k, v in ours_sd.items() if not torch.equal(v, ref_sd[k])] == []
    # for the paper's multipliers, make_divisible(c * alpha, 8) is the paper's int(c * alpha)
    paper = MobileNetV1(num_classes=10, rounding=lambda c: int(c * width_mult))
    assert {k: v.shape for k, v in paper.state_dict().items()} == {k: v.shape for k, v in ref_sd.items()}
    ours.eval()
    ref.eval()
    assert_same_outputs_and_shapes(spec, ours, ref, torch.randn(2, *spec.input_shape))
