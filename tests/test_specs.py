"""Tests parametrized over every spec in specs/: it checks, builds (on meta, no memory),
and the IR's parameter count equals the built module's."""

from __future__ import annotations

import pytest
import torch

import archdsl

from .conftest import SPECS


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_checks_and_builds_on_meta(path):
    spec = archdsl.load_spec(path)
    assert spec.name == path.stem, "a variant file is named after its model"
    model = spec.build(device="meta")
    params = list(model.parameters())
    assert all(p.device.type == "meta" for p in params)
    assert spec.num_params == sum(p.numel() for p in params)
    assert spec.ir.num_buffers == sum(b.numel() for b in model.buffers())
    # every IR module path exists in the built model, with the op's torch class
    modules = dict(model.named_modules())
    from archdsl.ops import get_op
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for node in spec.ir.ops():
        if node.path is None:
            continue
        if get_op(node.op).direct_param:   # class_token, pos_embedding, layer_scale: a parameter; buffer: a buffer
            assert node.path in (buffers if get_op(node.op).direct_buffer else params)
        else:
            assert type(modules[node.path]).__name__ == get_op(node.op).torch_class


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_files_are_thin_variants_or_libraries(path):
    text = path.read_text()
    # family variants stay a few lines on top of their library file
    assert len([ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]) <= 40


def test_lenet5_matches_seed():
    spec = archdsl.load_spec(SPECS[0].parent / "lenet5.arch")
    assert spec.num_params == 61_706
    assert spec.input_shape == (1, 32, 32)
    model = spec.build().eval()
    assert model(torch.randn(3, 1, 32, 32)).shape == (3, 10)
    # the seed's LeNet5 module layout, written from the seed text
    from torch import nn

    class SeedLeNet5(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5)
            self.pool2 = nn.AvgPool2d(2, 2)
            self.conv3 = nn.Conv2d(6, 16, 5)
            self.pool4 = nn.AvgPool2d(2, 2)
            self.conv5 = nn.Conv2d(16, 120, 5)
            self.fc6 = nn.Linear(120, 84)
            self.fc7 = nn.Linear(84, num_classes)

        def forward(self, x):
            x = torch.tanh(self.conv1(x))
            x = self.pool2(x)
            x = torch.tanh(self.conv3(x))
            x = self.pool4(x)
            x = torch.tanh(self.conv5(x))
            x = x.view(x.size(0), -1)
            x = torch.tanh(self.fc6(x))
            return self.fc7(x)

    seed = SeedLeNet5(10).eval()
    model.load_state_dict(seed.state_dict(), strict=True)
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model(x), seed(x))
