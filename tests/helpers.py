"""Assertions shared by the fidelity tests (torchvision parity and the seed-reference zoo tests)."""

from __future__ import annotations

import torch

from archdsl.ops import get_op


def _tensor(o):
    """A module's output tensor (nn.MultiheadAttention returns (output, weights))."""
    return o[0] if isinstance(o, tuple) else o


def assert_same_outputs_and_shapes(spec, ours, ref, x):
    """Eval outputs equal within float32 rounding; every module's real output shape is the checker's."""
    shapes, hooks = {}, []
    # direct-parameter ops (class_token, pos_embedding, layer_scale) are parameters, not modules
    expected = {n.path: n.shape for n in spec.ir.ops()
                if n.path is not None and not get_op(n.op).direct_param}
    for path, module in ours.named_modules():
        if path in expected:
            hooks.append(module.register_forward_hook(
                lambda m, i, o, path=path: shapes.__setitem__(path, tuple(_tensor(o).shape[1:]))))
    with torch.no_grad():
        got, want = ours(x), ref(x)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(got, want, rtol=1.3e-6, atol=1e-5)
    assert tuple(got.shape[1:]) == spec.output_shape
    assert shapes == expected
