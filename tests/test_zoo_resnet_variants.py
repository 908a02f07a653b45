"""SE-ResNet-50 and pre-activation ResNet-18, which torchvision does not ship, against plain
PyTorch written from the seed tutorial (/work/shared/seeds/000_*.txt, "3. ResNet 변형들").

The seed gives the SE block's code (`class SEBlock`, reduction 16) and the pre-activation
order (BN -> ReLU -> conv -> BN -> ReLU -> conv -> (+)); the rest is torchvision's ResNet
(stem, stages, initialization). The references below register their modules in the order
the specs create them, so with the same seed the initial weights are bit-identical too.
Compared: parameter count, state_dict keys and shapes, strict loading, eval outputs, the
checker's shape of every module, and the initial weights. Inputs are 3x64x64 to stay fast.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archdsl

from .conftest import ROOT
from .helpers import assert_same_outputs_and_shapes

INPUT = (3, 64, 64)


def _init_resnet_style(model: nn.Module) -> None:
    """torchvision ResNet's init: He normal (fan_out) convolutions, BN weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


# ---- SE-ResNet (the seed's SEBlock, verbatim, in a torchvision-style bottleneck) -------------

class SEBlock(nn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.excitation = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid()
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.squeeze(x).view(b, c)
        y = self.excitation(y).view(b, c, 1, 1)
        return x * y  # Channel recalibration


class SEBottleneck(nn.Module):
    """The seed's Bottleneck (1x1 -> 3x3 -> 1x1, expansion 4) with SE before the addition."""
    expansion = 4

    def __init__(self, in_channels, planes, stride=1, reduction=16):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.se = SEBlock(out, reduction)
        self.downsample = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        identity = x
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.se(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return F.relu(out)


class SEResNet(nn.Module):
    def __init__(self, layers, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c = 64
        for i, n in enumerate(layers):
            blocks = []
            for j in range(n):
                blocks.append(SEBottleneck(c, 64 * 2 ** i, stride=2 if i > 0 and j == 0 else 1))
                c = 64 * 2 ** i * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        _init_resnet_style(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- Pre-activation ResNet ("v2": BN -> ReLU -> conv) --------------------------------------

class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.downsample = None
        if stride != 1 or in_channels != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        # a projection reads the pre-activated input; the identity reads x itself
        shortcut = self.downsample(out) if self.downsample is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, planes, stride=1):
        super().__init__()
        out = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.downsample = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out, 1, stride=stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.downsample(out) if self.downsample is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c = 64
        for i, n in enumerate(layers):
            blocks = []
            for j in range(n):
                blocks.append(block(c, 64 * 2 ** i, stride=2 if i > 0 and j == 0 else 1))
                c = 64 * 2 ** i * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(c)          # the last block's sum is activated here
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        _init_resnet_style(self)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- Comparison -------------------------------------------------------------------------------

CASES = {
    # name: (spec path or text, reference constructor, expected parameter count)
    "se_resnet50": ("specs/se_resnet50.arch", lambda: SEResNet([3, 4, 6, 3]), 28_088_024),
    "preact_resnet18": ("specs/preact_resnet18.arch",
                        lambda: PreActResNet(PreActBlock, [2, 2, 2, 2]), 11_687_720),
    # the bottleneck unit, through an override of the variant file
    "preact_resnet50": ("specs/preact_resnet18.arch",
                        lambda: PreActResNet(PreActBottleneck, [3, 4, 6, 3]), 25_549_352),
}
OVERRIDES = {"preact_resnet50": {"unit": archdsl.Override("PreActBottleneck"), "layers": [3, 4, 6, 3]}}


def _load(name):
    path = CASES[name][0]
    return archdsl.load_spec(ROOT / path, input_shape=INPUT, **OVERRIDES.get(name, {}))


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(name):
    spec = _load(name)
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = CASES[name][1]()

    ref_sd, ours_sd = ref.state_dict(), ours.state_dict()
    assert set(ours_sd) == set(ref_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    n_ref = sum(p.numel() for p in ref.parameters())
    assert spec.num_params == n_ref == sum(p.numel() for p in ours.parameters()) == CASES[name][2]
    # same seed, same construction order, same init scheme: identical initial weights
    assert [k for k, v in ours_sd.items() if not torch.equal(v, ref_sd[k])] == []

    # outputs, with non-trivial batch-norm statistics and affine parameters (the initial
    # ones make every batch norm close to the identity)
    torch.manual_seed(1)
    bns = {n for n, m in ref.named_modules() if isinstance(m, nn.BatchNorm2d)}
    for key, value in ref_sd.items():
        module, _, tensor = key.rpartition(".")
        if module in bns and tensor in ("weight", "running_var"):
            value.copy_(torch.rand_like(value) + 0.5)
        elif module in bns and tensor in ("bias", "running_mean"):
            value.copy_(torch.randn_like(value) * 0.1)
    ref.load_state_dict(ref_sd, strict=True)
    ours.load_state_dict(ref_sd, strict=True)
    ours.eval()
    ref.eval()
    assert spec.output_shape == (1000,)
    assert_same_outputs_and_shapes(spec, ours, ref, torch.randn(2, *INPUT))


def test_se_resnet50_has_one_se_block_per_bottleneck():
    spec = _load("se_resnet50")
    keys = [k for k in spec.build(device="meta").state_dict() if ".se." in k]
    assert keys[:4] == ["layer1.0.se.excitation.0.weight", "layer1.0.se.excitation.0.bias",
                        "layer1.0.se.excitation.2.weight", "layer1.0.se.excitation.2.bias"]
    assert len(keys) == 4 * (3 + 4 + 6 + 3)
