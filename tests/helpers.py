"""Assertions shared by the fidelity tests (torchvision parity and the seed-reference zoo tests)."""

from __future__ import annotations

import torch

from archdsl.ops import get_op


def _tensor(o):
    """A module's output tensor (nn.MultiheadAttention returns (output, weights))."""
    return o[0] if isinstance(o, tuple) else o


def module_shapes(spec, model, x):
    """(every IR module's real output shape, the checker's, the model's result) for input ``x``."""
    # direct-parameter ops (class_token, pos_embedding, layer_scale) are parameters, not modules
    expected = {n.path: n.shape for n in spec.ir.ops() if n.path is not None and not get_op(n.op).direct_param}
    got, hooks = {}, []
    for path, module in model.named_modules():
        if path in expected:
            hooks.append(module.register_forward_hook(
                lambda m, i, o, path=path: got.__setitem__(path, tuple(_tensor(o).shape[1:]))))
    with torch.no_grad():
        result = model(x)
    for h in hooks:
        h.remove()
    return got, expected, result


def assert_meta_shapes(spec, model=None):
    """Every module's output shape from torch's meta kernels (batch 1, the declared input) is the checker's,
    and so is the result's; returns the meta result. ``model`` defaults to the spec built on meta."""
    model = spec.build(device="meta").eval() if model is None else model
    got, expected, result = module_shapes(spec, model, torch.empty(1, *spec.input_shape, device="meta"))
    assert tuple(result.shape[1:]) == spec.output_shape
    assert got == expected
    return result


def assert_same_outputs_and_shapes(spec, ours, ref, x):
    """Eval outputs equal within float32 rounding; every module's real output shape is the checker's."""
    shapes, expected, got = module_shapes(spec, ours, x)
    with torch.no_grad():
        want = ref(x)
    torch.testing.assert_close(got, want, rtol=1.3e-6, atol=1e-5)
    assert tuple(got.shape[1:]) == spec.output_shape
    assert shapes == expected


def assert_registered_like(ours, ref) -> None:
    """The state_dict keys and the parameter names in the reference's order, so that its checkpoints,
    and optimizer states (which follow ``parameters()``), transfer as they are."""
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]


def seeded_pair(spec, reference):
    """(our model, the reference model), each built right after ``torch.manual_seed(0)``: ``reference()``
    builds the reference."""
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    return ours, reference()


def assert_same_init(ours, ref) -> None:
    """Registered like the reference (:func:`assert_registered_like`) and, built from the same seed, the
    same initial tensors bit for bit."""
    assert_registered_like(ours, ref)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert [k for k, v in ours_sd.items() if not torch.equal(v, ref_sd[k])] == []


def load_reference(ours, ref, perturb=None) -> None:
    """Give the reference values that are not zeros (``perturb``, default :func:`perturb_zeros`), load them
    into ours with strict=True, and put both in eval mode."""
    (perturb or perturb_zeros)(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()


def perturb_zeros(ref) -> None:
    """Give parameters that start at zero (ViT's classifier, biases) random values, so that equal
    outputs are not equal zeros (torchvision's ViT head is zero at init: every output would be 0)."""
    torch.manual_seed(2)
    with torch.no_grad():
        for p in ref.parameters():
            if not torch.any(p):
                p.normal_(0, 0.02)


def torchvision_reference(name, device=None, drop_classifier_draws=False):
    """torchvision's counterpart of specs/<name>.arch (on ``device``). With ``drop_classifier_draws``, the
    linear layers of the classification head that torchvision builds and then drops (segmentation and
    detection backbones) draw no random numbers, nor does MobileNetV3's ``normal_`` init of them: the
    random stream a spec, which builds only the layers kept, consumes."""
    from unittest import mock

    from archdsl.testing import torchvision_model

    def build():
        if device is None:
            return torchvision_model(name)
        with torch.device(device):
            return torchvision_model(name)
    if not drop_classifier_draws:
        return build()
    with mock.patch.object(torch.nn.Linear, "reset_parameters", lambda self: None), \
         mock.patch("torch.nn.init.normal_", lambda tensor, *args, **kwargs: tensor):
        return build()
