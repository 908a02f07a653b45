"""The archdsl abstract syntax tree: frozen dataclasses, each carrying the Span it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..diagnostics import Span

# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Literal:
    """An int, float, string, bool or none literal."""
    value: object
    span: Span


@dataclass(frozen=True)
class Name:
    """A reference to a parameter, `let` binding, block or built-in."""
    id: str
    span: Span


@dataclass(frozen=True)
class InShape:
    """The `in` keyword: the shape of the tensor flowing into the current statement."""
    span: Span


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True)
class ListComp:
    """`[elt for a, b in iterable if cond]`."""
    elt: "Expr"
    targets: tuple[str, ...]
    iterable: "Expr"
    cond: "Expr | None"
    span: Span


@dataclass(frozen=True)
class DictExpr:
    pairs: tuple[tuple["Expr", "Expr"], ...]
    span: Span


@dataclass(frozen=True)
class BinOp:
    """Arithmetic (`+ - * / // % **`), comparison (`== != < <= > >=`) or boolean (`and or`)."""
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True)
class UnaryOp:
    """`-x`, `+x` or `not x`."""
    op: str
    operand: "Expr"
    span: Span


@dataclass(frozen=True)
class IfExpr:
    """`if cond then a else b`."""
    cond: "Expr"
    then: "Expr"
    otherwise: "Expr"
    span: Span


@dataclass(frozen=True)
class Index:
    obj: "Expr"
    index: "Expr"
    span: Span


@dataclass(frozen=True)
class Attr:
    obj: "Expr"
    name: str
    span: Span


@dataclass(frozen=True)
class Arg:
    """One call argument; ``name`` is None for a positional one."""
    name: str | None
    value: "Expr"
    span: Span


@dataclass(frozen=True)
class Call:
    """`f(args)`: a built-in function, an op or a block; `f(args)(x, y)` applies it to the tensors given.

    Without ``inputs`` an op or block call reads the current tensor; in an expression,
    ``op(x, ...)`` with tensors as its leading arguments calls a parameter-free op as a function.
    """
    func: str
    args: tuple[Arg, ...]
    span: Span
    func_span: Span
    inputs: tuple[Arg, ...] | None = None


Expr = Union[Literal, Name, InShape, ListExpr, ListComp, DictExpr, BinOp, UnaryOp, IfExpr, Index, Attr, Call]

# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Label:
    """A child's name: a plain name, or a string template such as ``"layer{i + 1}"``."""
    text: str
    is_template: bool
    span: Span


@dataclass(frozen=True)
class Let:
    """`let a, b = value`: bind names (numbers, lists, tensors) for the statements after it.

    ``value`` is an expression; or ``node`` (with an optional ``label``) is a statement whose
    result is bound, read from the current tensor, which the let does not move. With
    ``assign`` (`a = value`, no `let`) the nearest existing binding of the name is updated.
    """
    name: str
    value: "Expr | None"
    span: Span
    targets: tuple[str, ...] = ()
    node: "Node | None" = None
    label: "Label | None" = None
    assign: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return self.targets or (self.name,)


@dataclass(frozen=True)
class InitRule:
    """`init conv2d.weight = kaiming_normal(...)` (by op) or `init "fc".weight = ...` (by path glob).

    Without ``.param`` (``init "table" = trunc_normal(std = 0.02)``) the path names a tensor made
    by `parameter` itself."""
    target: str
    by_path: bool
    param: str | None
    call: Call
    span: Span


@dataclass(frozen=True)
class Seq:
    """`seq { ... }`: a sub-module whose statements run in order; `seq { ... }(x)` reads ``x``."""
    body: tuple["Stmt", ...]
    span: Span
    inputs: tuple[Arg, ...] | None = None


@dataclass(frozen=True)
class For:
    """`for a, b in iterable { ... }`: repetition driven by data."""
    targets: tuple[str, ...]
    iterable: Expr
    body: tuple["Stmt", ...]
    span: Span


@dataclass(frozen=True)
class Residual:
    """`residual { body } shortcut if cond { ... }`: body(x) + shortcut(x) (identity by default)."""
    body: tuple["Stmt", ...]
    shortcut: tuple["Stmt", ...] | None
    shortcut_cond: Expr | None
    span: Span
    shortcut_span: Span | None
    cond: Expr | None = None   # `residual if c { }`: without a residual at all when c is false


@dataclass(frozen=True)
class Concat:
    """`concat(dim = 1) { branch; branch; ... }`: every branch reads the same input."""
    args: tuple[Arg, ...]
    body: tuple["Stmt", ...]
    span: Span


@dataclass(frozen=True)
class Gate:
    """`gate { body }`: x * body(x), the body computing per-channel (or broadcastable) weights."""
    body: tuple["Stmt", ...]
    span: Span


@dataclass(frozen=True)
class Pass:
    """`pass`: the incoming tensor itself (an identity branch, e.g. in `concat`)."""
    span: Span


@dataclass(frozen=True)
class From:
    """`from x`: continue from (or, in `concat`, branch from) a tensor: one saved by `tap name`
    (``label``), or any tensor expression (``expr``: a named tensor, `a + b`, ...)."""
    label: Label | None
    span: Span
    expr: Expr | None = None


@dataclass(frozen=True)
class Return:
    """`return value`: the block's (or model's) result: a tensor, a list or a dict of tensors."""
    value: Expr
    span: Span


@dataclass(frozen=True)
class Inline:
    """`inline Block(args)`: the block's statements become the enclosing module's own children
    (no sub-module), as a family reuses its trunk: `inline ResNetTrunk(...)`."""
    call: Call
    span: Span


@dataclass(frozen=True)
class Tap:
    """`tap name`: save the current tensor under ``name`` for a later `from name` (long skips)."""
    label: Label
    span: Span


@dataclass(frozen=True)
class Register:
    """`register a, b, c`: the children named ``a``, ``b``, ``c`` are registered in that order, at this
    statement's place among the module's children (torch's ``__init__`` order: the state_dict order and
    the order constructors draw random numbers in), wherever they are applied."""
    labels: tuple[Label, ...]
    span: Span


@dataclass(frozen=True)
class If:
    """`if c { } elif d { } else { }`: statements chosen at elaboration time."""
    branches: tuple[tuple[Expr, tuple["Stmt", ...]], ...]
    otherwise: tuple["Stmt", ...] | None
    span: Span


Node = Union[Call, Seq, For, Residual, Concat, Gate, Pass, From, Inline]


@dataclass(frozen=True)
class Labelled:
    label: Label
    node: Node
    span: Span


Stmt = Union[Let, InitRule, Labelled, Call, Seq, For, Residual, Concat, Gate, Pass, From, Tap, Register, If,
             Return, Inline]

# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Param:
    name: str
    type: str | None
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class Use:
    path: str
    span: Span


@dataclass(frozen=True)
class BlockDecl:
    """`block Name(params)(inputs) { body }`; ``inputs`` None: the block reads the current tensor."""
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span
    inputs: tuple[Param, ...] | None = None


@dataclass(frozen=True)
class ModelDecl:
    """A model: either a full body, or ``= Block(args)`` whose parameters it takes over."""
    name: str
    params: tuple[Param, ...]
    input: Expr | None
    body: tuple[Stmt, ...] | None
    call: Call | None
    span: Span


@dataclass(frozen=True)
class Module:
    """One parsed .arch file."""
    items: tuple[Union[Use, Let, BlockDecl, ModelDecl], ...]
    source_name: str
