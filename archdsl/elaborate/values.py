"""Runtime values of the expression language.

Numbers, booleans, strings and ``none`` are Python's own; lists are tuples (immutable);
dicts are Python dicts. References to blocks and ops, and the incoming shape ``in``,
have their own types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..memo import by_identity
from ..syntax import ast


@dataclass(frozen=True)
class BlockRef:
    """A user-defined block, closed over the globals of the file that defines it."""

    decl: ast.BlockDecl
    globals: "Any"  # elaborate.env.Env

    def __repr__(self) -> str:
        return f"block {self.decl.name}"


@dataclass(frozen=True)
class OpRef:
    """A primitive op, usable as a value (``act = relu``)."""

    name: str

    def __repr__(self) -> str:
        return f"op {self.name}"


@dataclass(frozen=True)
class ShapeValue:
    """The shape of the tensor flowing into a statement, seen through ``in``.

    Attributes: ``channels``, ``height``, ``width`` (feature maps), ``tokens``, ``dim``
    (token sequences), ``features`` (vectors), ``rank`` and ``shape`` (a list). When the
    checker knows which axis is which (``layout``, e.g. ``"HWC"`` after a permute),
    ``channels``, ``height`` and ``width`` follow it.
    """

    shape: tuple[int, ...]
    layout: str | None = field(default=None, compare=False)

    def attribute(self, name: str):
        s = self.shape
        table = {"shape": s, "rank": len(s)}
        if len(s) == 3:
            axes = self.layout if self.layout and len(self.layout) == 3 and set(self.layout) == set("CHW") \
                else "CHW"
            table.update(channels=s[axes.index("C")], height=s[axes.index("H")], width=s[axes.index("W")])
        elif len(s) == 2:
            table.update(tokens=s[0], dim=s[1])
        elif len(s) == 1:
            table.update(features=s[0])
        return table.get(name, _MISSING)

    @staticmethod
    def attribute_names() -> tuple[str, ...]:
        return ("channels", "height", "width", "tokens", "dim", "features", "rank", "shape")


@dataclass(frozen=True)
class TensorValue(ShapeValue):
    """A tensor of the data flow: the value of `in`, of a named tensor (`let y = ...`), of a block
    input or result. It is the output of IR node ``node``. ``batched``: the tensor has the implicit
    batch dimension (everything the data flow computes); `parameter` and `buffer` tensors do not,
    and ``shape`` is then their whole shape. In numeric contexts a tensor behaves as its shape
    (``x.channels``, ``len(x)``, ``x[0]``), like `in` always has.
    """

    node: int = -1
    batched: bool = field(default=True, compare=False)

    def attribute(self, name: str):
        if not self.batched:
            return {"shape": self.shape, "rank": len(self.shape)}.get(name, _MISSING)
        return super().attribute(name)


_MISSING = object()
# The value of a `let` that could not be evaluated (an error, or an unknown incoming shape):
# using it is skipped quietly instead of reported as an unknown name.
_POISONED = object()


def describe(v) -> str:
    """A short description of a value, for error messages."""
    if v is None:
        return "`none`"
    if isinstance(v, bool):
        return f"`{'true' if v else 'false'}`"
    if isinstance(v, int):
        return f"the integer {v}"
    if isinstance(v, float):
        return f"the number {v:g}"
    if isinstance(v, str):
        return f'the string "{v}"'
    if isinstance(v, tuple):
        return f"a list of {len(v)} item{'s' if len(v) != 1 else ''}"
    if isinstance(v, dict):
        return "a dict"
    if isinstance(v, (BlockRef, OpRef)):
        return repr(v)
    if isinstance(v, TensorValue):
        what = "tensor" if v.batched else "unbatched tensor"
        return f"a {what} of shape {'x'.join(map(str, v.shape)) or 'scalar'}"
    if isinstance(v, ShapeValue):
        return "the input shape `in`"
    return type(v).__name__


def type_name(v) -> str:
    """The language's name for the type of ``v``."""
    if v is None:
        return "none"
    for t, n in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (tuple, "list"),
                 (dict, "dict"), (BlockRef, "block"), (OpRef, "op"), (TensorValue, "tensor"), (ShapeValue, "shape")):
        if isinstance(v, t):
            return n
    return type(v).__name__


TYPE_NAMES = ("int", "float", "bool", "str", "list", "dict", "block", "op", "any")


@by_identity
def contains_tensor(v) -> bool:
    """Whether a value is a tensor or a list / dict holding one (once per large list object)."""
    return _contains_tensor(v)


def _contains_tensor(v) -> bool:
    if isinstance(v, TensorValue):
        return True
    if isinstance(v, tuple):
        return any(_contains_tensor(x) for x in v)
    if isinstance(v, dict):
        return any(_contains_tensor(x) for x in v.values())
    return False


def conforms(v, t: str) -> bool:
    """Whether value ``v`` is acceptable for a parameter annotated with type ``t``."""
    if t == "any":
        return not contains_tensor(v)
    if contains_tensor(v):
        return False
    if t == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "block":
        return isinstance(v, (BlockRef, OpRef))
    return type_name(v) == t


def to_value(v):
    """Convert a Python value (e.g. a ``load_spec`` override) into a language value."""
    if isinstance(v, (list, tuple)):
        return tuple(to_value(x) for x in v)
    if isinstance(v, dict):
        return {k: to_value(x) for k, x in v.items()}
    return v


def to_python(v):
    """Convert a language value into plain Python data (lists instead of tuples)."""
    if isinstance(v, tuple):
        return [to_python(x) for x in v]
    if isinstance(v, dict):
        return {k: to_python(x) for k, x in v.items()}
    if isinstance(v, (BlockRef, OpRef)):
        return repr(v)
    if isinstance(v, TensorValue):
        return f"tensor {'x'.join(map(str, v.shape))} (node {v.node})"
    return v


def render(v) -> str:
    """Print a value in the language's own syntax."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple):
        return "[" + ", ".join(render(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{render(k)}: {render(x)}" for k, x in v.items()) + "}"
    if isinstance(v, BlockRef):
        return v.decl.name
    if isinstance(v, OpRef):
        return v.name
    return repr(v)
