"""U-Net and the YOLOv1-style detector against the seed tutorial's reference code.

Neither model is in torchvision, so the references are the seed's classes (tutorial 003,
"Object Detection" and "Image Segmentation: U-Net"), written out here in plain PyTorch.
The YOLO backbone is torchvision's resnet18 without avgpool and fc, as the seed's
`SimpleYOLO(backbone, ...)` is used with it. Checked: parameter counts, state_dict keys and
shapes, bit-identical initial weights with the same seed, strict loading of the reference's
weights, equal eval outputs, and output shapes (every module's, against the checker's).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archdsl

from .conftest import ROOT
from .helpers import assert_same_outputs_and_shapes

UNET = ROOT / "specs" / "unet.arch"
YOLO = ROOT / "specs" / "yolo_v1.arch"


# ---- the seed's reference code -------------------------------------------------------------

class DoubleConv(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.double_conv(x)


class UNet(nn.Module):
    def __init__(self, in_channels=1, num_classes=2, features=(64, 128, 256, 512)):
        super().__init__()
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.pool = nn.MaxPool2d(2, 2)
        for feature in features:
            self.encoders.append(DoubleConv(in_channels, feature))
            in_channels = feature
        self.bottleneck = DoubleConv(features[-1], features[-1] * 2)
        for feature in reversed(features):
            self.decoders.append(nn.ConvTranspose2d(feature * 2, feature, kernel_size=2, stride=2))
            self.decoders.append(DoubleConv(feature * 2, feature))
        self.final_conv = nn.Conv2d(features[0], num_classes, kernel_size=1)

    def forward(self, x):
        skip_connections = []
        for encoder in self.encoders:
            x = encoder(x)
            skip_connections.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        skip_connections = skip_connections[::-1]
        for i in range(0, len(self.decoders), 2):
            x = self.decoders[i](x)
            skip = skip_connections[i // 2]
            if x.shape != skip.shape:
                x = F.interpolate(x, size=skip.shape[2:])
            x = torch.cat([skip, x], dim=1)
            x = self.decoders[i + 1](x)
        return self.final_conv(x)


class SimpleYOLO(nn.Module):
    def __init__(self, backbone, num_classes=80, num_boxes=2):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_boxes = num_boxes
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d((7, 7)),
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, 7 * 7 * (num_boxes * 5 + num_classes)),
        )

    def forward(self, x):
        features = self.backbone(x)
        out = self.head(features)
        return out.reshape(-1, 7, 7, self.num_boxes * 5 + self.num_classes)


def resnet18_backbone(tv):
    """torchvision's resnet18 without avgpool and fc, keeping its child names.

    Built with num_classes=0: the empty fc draws no random numbers, so with the same seed
    the backbone's weights (and the RNG state after it) are those of a network that never
    had a classifier, which is what the spec builds.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
        resnet = tv.models.resnet18(num_classes=0)
    return nn.Sequential(OrderedDict(list(resnet.named_children())[:-2]))


# ---- helpers --------------------------------------------------------------------------------

def assert_same_weights_layout(ours, ref):
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert set(ours_sd) == set(ref_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def assert_bit_identical_init(ours, ref):
    ref_sd = ref.state_dict()
    assert [k for k, v in ours.state_dict().items() if not torch.equal(v, ref_sd[k])] == []


# ---- U-Net ----------------------------------------------------------------------------------

def test_unet_matches_seed_layout_count_and_init():
    spec = archdsl.load_spec(UNET)
    assert spec.num_params == 31_042_434
    assert spec.input_shape == (1, 572, 572)
    assert spec.output_shape == (2, 572, 572)
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = UNet(in_channels=1, num_classes=2)
    assert_same_weights_layout(ours, ref)
    assert sum(p.numel() for p in ref.parameters()) == 31_042_434
    # the seed keeps PyTorch's default init; modules are created in the same order
    assert_bit_identical_init(ours, ref)
    # the resize happens where the seed's sizes disagree: 71 -> 35 -> 70 and 143 -> 71 -> 142
    resizes = {n.path: n.shape for n in spec.ir.ops() if n.op == "interpolate"}
    assert resizes == {"resize3": (512, 71, 71), "resize2": (256, 143, 143)}


@pytest.fixture(scope="module")
def unet_ref():
    torch.manual_seed(0)
    ref = UNet(in_channels=1, num_classes=2)
    # non-trivial batch-norm statistics, so eval mode really uses them
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return ref.eval()


@pytest.mark.parametrize("size", [(100, 100), (61, 75)])
def test_unet_loads_seed_weights_and_agrees(size, unet_ref):
    # 100x100 resizes at one level (25 -> 12 -> 24), 61x75 at all four (61 -> 30 -> 60, ...)
    spec = archdsl.load_spec(UNET, input_shape=(1, *size))
    ours = spec.build().eval()
    ours.load_state_dict(unet_ref.state_dict(), strict=True)
    torch.manual_seed(1)
    assert_same_outputs_and_shapes(spec, ours, unet_ref, torch.randn(1, 1, *size))


@pytest.mark.parametrize("size", [(572, 572), (61, 75), (100, 100), (16, 16), (17, 31), (255, 129), (33, 250)])
def test_unet_output_shapes_match_seed_at_any_size(size):
    # the resize decision is made in the spec from the input size: shapes only, on meta
    spec = archdsl.load_spec(UNET, input_shape=(1, *size))
    ours = spec.build(device="meta").eval()
    ref = UNet(in_channels=1, num_classes=2).to("meta").eval()
    x = torch.empty(1, 1, *size, device="meta")
    assert tuple(ours(x).shape) == tuple(ref(x).shape) == (1, *spec.output_shape) == (1, 2, *size)


def test_unet_parameters_override():
    spec = archdsl.load_spec(UNET, in_channels=3, num_classes=5, features=[8, 16, 32],
                             input_shape=(3, 45, 37))
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = UNet(in_channels=3, num_classes=5, features=[8, 16, 32])
    assert_same_weights_layout(ours, ref)
    assert_bit_identical_init(ours, ref)
    ours.eval()
    ref.eval()
    assert_same_outputs_and_shapes(spec, ours, ref, torch.randn(2, 3, 45, 37))


# ---- YOLOv1-style detector ------------------------------------------------------------------

def test_yolo_v1_matches_seed(tv):
    spec = archdsl.load_spec(YOLO)
    assert spec.output_shape == (7, 7, 30)
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = SimpleYOLO(resnet18_backbone(tv), num_classes=20, num_boxes=2)
    assert_same_weights_layout(ours, ref)
    # ResNet-18 without fc (11,176,512) + head (102,764,544 + 6,022,590)
    assert spec.num_params == sum(p.numel() for p in ref.parameters()) == 119_963_646
    # backbone: torchvision's ResNet init; head: PyTorch's default, drawn after the backbone
    assert_bit_identical_init(ours, ref)

    # strict load of the reference's weights and equal eval outputs, at a small odd input
    ref.eval()
    ours.eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    # (the built modules do not depend on the input size; the odd size's spec gives the shapes)
    odd = archdsl.load_spec(YOLO, input_shape=(3, 97, 131))
    torch.manual_seed(1)
    assert_same_outputs_and_shapes(odd, ours, ref, torch.randn(2, 3, 97, 131))
    # the declared 448x448 input, checked on meta
    x = torch.empty(2, 3, 448, 448, device="meta")
    assert tuple(ours.to("meta")(x).shape) == tuple(ref.to("meta")(x).shape) == (2, 7, 7, 30)


def test_resnet_trunk_is_torchvision_resnet18_without_classifier(tv, at_root):
    spec = archdsl.load_spec('use "specs/lib/resnet.arch"\n'
                             'model trunk input 3x64x64 = ResNetTrunk(BasicBlock, [2, 2, 2, 2])\n')
    torch.manual_seed(0)
    ours = spec.build().eval()
    torch.manual_seed(0)
    ref = resnet18_backbone(tv).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert_bit_identical_init(ours, ref)
    assert spec.output_shape == (512, 2, 2)
    assert_same_outputs_and_shapes(spec, ours, ref, torch.randn(2, 3, 64, 64))
