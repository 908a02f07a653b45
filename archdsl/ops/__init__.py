"""Primitive ops: each is one registered class (see :mod:`archdsl.ops.registry`)."""

from .registry import REGISTRY, Op, ShapeError, all_ops, get_op, register

__all__ = ["REGISTRY", "Op", "ShapeError", "all_ops", "get_op", "register"]
