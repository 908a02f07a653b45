"""Primitive ops: each is one registered class (see :mod:`archdsl.ops.registry`).

The op modules are listed once, here: importing ``archdsl.ops`` (which any import of one of its
modules does first) registers every op, and the registry itself imports none of them.
"""

from .registry import REGISTRY, Op, ShapeError, all_ops, get_op, register
from . import activations, algebra, layers, structure, transformer  # noqa: E402  (every op module)

#: the modules that define ops, each registering its classes with ``@register``
OP_MODULES = (activations, algebra, layers, structure, transformer)

__all__ = ["REGISTRY", "OP_MODULES", "Op", "ShapeError", "all_ops", "get_op", "register"]
