"""archdsl: a declarative architecture DSL compiler for PyTorch.

>>> import archdsl
>>> spec = archdsl.load_spec("specs/resnet50.arch", num_classes=10)
>>> model = spec.build()
"""

from .diagnostics import Diagnostic, SpecError
from .limits import Limits
from .spec import Override, Spec, load_spec


def load_checkpoint(path, device=None):
    """Rebuild a model saved with ``archdsl compile -o FILE`` (weights loaded strictly)."""
    from .backends.checkpoint import load_checkpoint as _load
    return _load(path, device=device)


__all__ = ["Diagnostic", "Limits", "Override", "Spec", "SpecError", "load_checkpoint", "load_spec"]
__version__ = "0.1.0"
