"""GoogLeNet and Inception-v3 against torchvision in their inference layout.

torchvision's `googlenet()` and `inception_v3()` builders (and so `get_model(name)`, which
tests/test_parity.py uses) default to `aux_logits=True` when no weights are given: they add
the auxiliary classifiers `aux1`/`aux2` (GoogLeNet, 13,004,888 parameters in all) and
`AuxLogits` (Inception-v3, 27,161,264), which only run in training mode. Our specs are the
inference layout, `aux_logits=False` (6,624,904 and 23,834,568 parameters, the counts of
torchvision's published weights for GoogLeNet), so they are compared here with
`get_model(name, aux_logits=False, init_weights=True)`: same state_dict keys in the same
order, bit-identical initial weights with the same seed, strict load, exact parameter
count, equal eval outputs, and every module's real output shape equal to the checker's, at
the default input and at an odd size. A checkpoint of the default (aux) layout loads into
ours once its auxiliary-head entries are dropped, and gives the same eval outputs.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import archdsl

from .conftest import ROOT

CASES = {
    # name: (parameters without aux heads, aux-head module prefix)
    "googlenet": (6_624_904, ("aux1.", "aux2.")),
    "inception_v3": (23_834_568, ("AuxLogits.",)),
}
ODD = (3, 97, 131)


def reference(tv, name, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # "default weight initialization will change"
        return tv.models.get_model(name, **kwargs)


def assert_same_outputs_and_shapes(spec, ours, ref, x):
    shapes, hooks = {}, []
    expected = {n.path: n.shape for n in spec.ir.ops() if n.path is not None}
    for path, module in ours.named_modules():
        if path in expected:
            hooks.append(module.register_forward_hook(
                lambda m, i, o, path=path: shapes.__setitem__(path, tuple(o.shape[1:]))))
    with torch.no_grad():
        got, want = ours(x), ref(x)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(got, want, rtol=1.3e-6, atol=1e-5)
    assert tuple(got.shape[1:]) == spec.output_shape
    assert shapes == expected


@pytest.mark.parametrize("name", CASES)
def test_inference_layout_parity(name, tv):
    num_params, _ = CASES[name]
    spec = archdsl.load_spec(ROOT / "specs" / f"{name}.arch")
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = reference(tv, name, aux_logits=False, init_weights=True)

    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    # same seed, same initial weights (torchvision's truncated-normal init), bit for bit
    assert [k for k, v in ours_sd.items() if not torch.equal(v, ref_sd[k])] == []

    ours.load_state_dict(ref_sd, strict=True)
    assert spec.num_params == num_params
    assert sum(p.numel() for p in ref.parameters()) == num_params
    assert sum(p.numel() for p in ours.parameters()) == num_params

    ours.eval()
    ref.eval()
    torch.manual_seed(1)
    assert_same_outputs_and_shapes(spec, ours, ref, torch.randn(1, *spec.input_shape))


@pytest.mark.parametrize("name", CASES)
def test_inference_layout_parity_odd_input(name, tv):
    spec = archdsl.load_spec(ROOT / "specs" / f"{name}.arch", input_shape=ODD)
    ref = reference(tv, name, aux_logits=False, init_weights=False).eval()
    ours = spec.build().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert_same_outputs_and_shapes(spec, ours, ref, torch.randn(2, *ODD))


@pytest.mark.parametrize("name", CASES)
def test_default_layout_has_aux_heads_that_drop_out(name, tv):
    num_params, aux = CASES[name]
    ref = reference(tv, name, init_weights=False).eval()   # what get_model(name) gives
    ref_sd = ref.state_dict()
    assert any(k.startswith(aux) for k in ref_sd)
    assert sum(p.numel() for p in ref.parameters()) > num_params
    spec = archdsl.load_spec(ROOT / "specs" / f"{name}.arch", input_shape=ODD)
    ours = spec.build().eval()
    ours.load_state_dict({k: v for k, v in ref_sd.items() if not k.startswith(aux)}, strict=True)
    x = torch.randn(1, *ODD)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1.3e-6, atol=1e-5)
