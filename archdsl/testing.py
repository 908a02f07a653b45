"""Helpers for tests and benchmarks that compare archdsl with torchvision.

``torchvision_model(name)`` builds torchvision's counterpart of ``specs/<name>.arch``.

``import_torchvision()`` is the one place that works around torchvision 0.28's compiled
ops failing to load on the CPU build of torch 2.13: torchvision then crashes while
registering fake kernels for ``torchvision::nms`` and ``torchvision::qnms``. Defining
those two operator schemas first lets the import (models and weights metadata) succeed.
"""

from __future__ import annotations

import functools

#: keyword arguments that make torchvision's builder give the layout our spec describes: without
#: weights, googlenet() and inception_v3() build the training layout with auxiliary heads; our
#: specs are the inference layout (the one torchvision's pretrained weights are used in)
TORCHVISION_KWARGS = {"googlenet": dict(aux_logits=False, init_weights=True),
                      "inception_v3": dict(aux_logits=False, init_weights=True)}

#: spec names that are another layout of a torchvision model: spec name -> (torchvision name, keyword
#: arguments). The segmentation models are built without weights (``weights_backbone`` would download
#: the ImageNet backbone); ``*_aux`` is the layout with the auxiliary classifier
#: (``aux_loss=True``, the one torchvision's pretrained weights have)
TORCHVISION_LAYOUTS = {
    **{f"{name}{suffix}": (name, dict(weights=None, weights_backbone=None, aux_loss=aux))
       for name in ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
                    "deeplabv3_mobilenet_v3_large") for suffix, aux in (("", False), ("_aux", True))},
    "lraspp_mobilenet_v3_large": ("lraspp_mobilenet_v3_large", dict(weights=None, weights_backbone=None)),
    # the training layouts with auxiliary classifiers (get_model's defaults without weights)
    "googlenet_aux": ("googlenet", dict(aux_logits=True, init_weights=True)),
    "inception_v3_aux": ("inception_v3", dict(aux_logits=True, init_weights=True)),
    # detection backbones (not get_model names): a dotted name is a builder under torchvision.models
    "resnet50_fpn": ("detection.backbone_utils.resnet_fpn_backbone",
                     dict(backbone_name="resnet50", weights=None, trainable_layers=5)),
    "mobilenet_v3_large_fpn": ("detection.backbone_utils.mobilenet_backbone",
                               dict(backbone_name="mobilenet_v3_large", fpn=True, weights=None, trainable_layers=6)),
}


def torchvision_model(name: str):
    """torchvision's model ``name`` in the layout of ``specs/<name>.arch`` (random weights)."""
    tv_name, kwargs = TORCHVISION_LAYOUTS.get(name, (name, TORCHVISION_KWARGS.get(name, {})))
    if "." in tv_name:
        return functools.reduce(getattr, tv_name.split("."), import_torchvision().models)(**kwargs)
    return import_torchvision().models.get_model(tv_name, **kwargs)


@functools.lru_cache(maxsize=None)
def import_torchvision():
    """Import and return ``torchvision``, defining the missing operator schemas if needed."""
    import torch
    try:
        torch.ops.torchvision.nms  # noqa: B018  (raises when the schema does not exist)
        has_nms = True
    except (AttributeError, RuntimeError):
        has_nms = False
    if not has_nms:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        import_torchvision._lib = lib  # keep the library (and its definitions) alive
    import torchvision
    return torchvision
