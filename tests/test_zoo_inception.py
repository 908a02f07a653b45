"""GoogLeNet and Inception-v3: torchvision checkpoints of the training layout load into ours.

torchvision's `googlenet()` and `inception_v3()` builders default to `aux_logits=True` when
no weights are given: they add the auxiliary classifiers `aux1`/`aux2` (GoogLeNet,
13,004,888 parameters in all) and `AuxLogits` (Inception-v3, 27,161,264), which only run in
training mode. Our specs are the inference layout, `aux_logits=False` (6,624,904 and
23,834,568 parameters); tests/test_parity.py compares them with that layout. Here: a
checkpoint of the default (aux) layout loads into ours once its auxiliary-head entries are
dropped, and gives the same eval outputs.
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
