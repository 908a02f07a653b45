"""The op registry: one class per primitive op declares everything about it.

An op declares

* ``name``, ``category`` (diagram colour and summary grouping) and a docstring,
* ``args``: the argument schema (names, types, defaults, docs),
* ``infer``: the shape rule, raising :class:`ShapeError` for inconsistent input,
* ``params`` / ``buffers`` / ``macs``: costs, from attributes and shapes alone,
* ``build``: the torch factory (torch is imported only here, lazily),
* ``label``: the short text shown in diagrams and tables.

Shapes never include the batch dimension: a feature map is ``(C, H, W)``, a flattened
vector ``(F,)``, a token sequence ``(N, D)``; the 1-D and 3-D layers take ``(C, L)`` sequences
and ``(C, D, H, W)`` volumes. Dimension arguments such as ``flatten``'s
``start_dim`` or ``concat``'s ``dim`` count the batch dimension as torch does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, ClassVar

from ..memo import by_identity

Shape = tuple[int, ...]

REQUIRED = object()


class ShapeError(Exception):
    """Raised by a shape rule; ``arg`` names the argument to point at, if any."""

    def __init__(self, message: str, label: str = "", help: str | None = None, arg: str | None = None,
                 note: str | None = None):
        super().__init__(message)
        self.message = message
        self.label = label
        self.help = help
        self.arg = arg
        self.note = note


class ArgTypeError(Exception):
    pass


class _Batch(int):
    """The batch dimension inside a full shape (ops with ``full_shapes``): an int equal to 1, so that
    costs count batch 1, told apart from a real 1 by identity (``d is BATCH``)."""

    def __repr__(self) -> str:
        return "B"

    __str__ = __repr__


#: the batch dimension at position 0 of a batched tensor's full shape
BATCH = _Batch(1)


def is_batch(d) -> bool:
    return d is BATCH


def broadcast(op: str, shapes: list[Shape]) -> Shape:
    """torch's broadcasting of full shapes; the batch broadcasts with itself or with a 1."""
    rank = max(len(s) for s in shapes)
    out = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
        if any(is_batch(d) for d in dims):
            if any(not is_batch(d) and d != 1 for d in dims):
                raise ShapeError(f"`{op}` cannot broadcast " + " with ".join(fmt_shape(s) for s in shapes) +
                                 ": a tensor without the batch dim would span it", "shapes do not broadcast")
            out.append(BATCH)
            continue
        big = {d for d in dims if d != 1}
        if len(big) > 1:
            raise ShapeError(f"`{op}` cannot broadcast " + " with ".join(fmt_shape(s) for s in shapes) +
                             f": dim {k - rank} is " + " vs ".join(str(d) for d in dims),
                             "shapes do not broadcast")
        out.append(big.pop() if big else 1)
    return tuple(out)


# ------------------------------------------------------------------ argument types

#: the largest dimension size (exclusive), as the shape checker enforces it: every integer argument of an op
#: (a size, count, stride, padding, dim, index, shift...) is below it in magnitude, unless its ``Arg`` says
#: otherwise (``int_limit``)
MAX_SIZE = 2 ** 31
#: integers torch stores in an int64 tensor (``buffer`` values) are below this in magnitude
INT64_LIMIT = 2 ** 63
#: the most elements of one tensor, per sample (as the shape checker counts them)
MAX_ELEMENTS = 2 ** 40
#: the largest float argument: a float32 holds it (torch refuses a scalar that overflows the tensor's dtype)
MAX_FLOAT = 3.4028234663852886e38


@dataclass(frozen=True)
class Range:
    """The bounds every number in an argument's value must lie within (each entry of a list); ``None``: no
    bound on that side; ``*_open``: the bound itself is excluded. Declared per argument in an op's schema
    (``Arg.range``) or by its type (``ArgType.range``), checked when a call's arguments are bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, v) -> bool:
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        if self.high is not None and (v >= self.high if self.high_open else v > self.high):
            return False
        return True

    @property
    def text(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1]``, ``in [0, 1)``, ``<= 4``."""
        low, high = _num_text(self.low), _num_text(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "any number"


def _num_text(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


#: ranges shared by many arguments
POSITIVE = Range(1)           # sizes, counts, strides, dilations (ints)
NON_NEGATIVE = Range(0)       # paddings, shifts; eps, std (floats)
UNIT = Range(0.0, 1.0)        # probabilities, momentum
ABOVE_ZERO = Range(0.0, low_open=True)  # float scale factors, batchnorm eps


@dataclass(frozen=True)
class ArgType:
    """A named argument type with a converter that validates and normalizes values; ``range``: the bounds of
    its numbers unless the argument declares its own (see :class:`Range`)."""

    name: str
    convert: Callable[[Any], Any]
    range: Range | None = None

    def __call__(self, value):
        return self.convert(value)


def _int(v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ArgTypeError("an integer")
    return v


def _float(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArgTypeError("a number")
    try:
        return float(v)
    except OverflowError:
        raise ArgTypeError("a number that fits a float") from None


def _bool(v):
    if not isinstance(v, bool):
        raise ArgTypeError("`true` or `false`")
    return v


def _ntuple(elem, n: int):
    """A converter accepting an int (repeated ``n`` times) or a list of ``n`` ints, each checked by ``elem``."""
    what = f"an integer or a list of {n} integer{'s' if n != 1 else ''}"

    def convert(v):
        if isinstance(v, (list, tuple)):
            if len(v) != n:
                raise ArgTypeError(what)
            try:
                return tuple(elem(x) for x in v)
            except ArgTypeError:
                raise ArgTypeError(what) from None
        try:
            x = elem(v)
        except ArgTypeError:
            raise ArgTypeError(what) from None
        return (x,) * n
    return convert


def _pair(elem):
    return _ntuple(elem, 2)


def _optional(t):
    def convert(v):  # noqa: E306
        return None if v is None else t(v)
    return convert


def choice(*options: str) -> ArgType:
    """An argument type accepting one of the given strings."""
    def convert(v):
        if v not in options:
            raise ArgTypeError("one of " + ", ".join(f'"{o}"' for o in options))
        return v
    return ArgType(" | ".join(f'"{o}"' for o in options), convert)


def _int_list(v):
    if not isinstance(v, (list, tuple)) or not v:
        raise ArgTypeError("a non-empty list of integers")
    return tuple(_int(x) for x in v)


INT_LIST = ArgType("[int, ...]", _int_list)
INT = ArgType("int", _int)
POS_INT = ArgType("int", _int, POSITIVE)
NONNEG_INT = ArgType("int", _int, NON_NEGATIVE)
FLOAT = ArgType("float", _float)
PROB = ArgType("float", _float, UNIT)
BOOL = ArgType("bool", _bool)
POS_PAIR = ArgType("int or [int, int]", _pair(_int), POSITIVE)
NONNEG_PAIR = ArgType("int or [int, int]", _pair(_int), NON_NEGATIVE)
OPT_BOOL = ArgType("none or bool", _optional(_bool))
OPT_FLOAT = ArgType("none or float", _optional(_float))
OPT_POS_FLOAT = ArgType("none or float", _optional(_float), ABOVE_ZERO)
OPT_INT = ArgType("none or int", _optional(_int))
OPT_POS_PAIR = ArgType("none, int or [int, int]", _optional(_pair(_int)), POSITIVE)


def _ints_name(n: int) -> str:
    return "int or [" + ", ".join(["int"] * n) + "]"


@cache
def pos_ints(n: int) -> ArgType:
    """An int or a list of ``n`` ints (one per spatial axis), all >= 1: ``POS_PAIR`` for ``n = 2``."""
    return POS_PAIR if n == 2 else ArgType(_ints_name(n), _ntuple(_int, n), POSITIVE)


@cache
def nonneg_ints(n: int) -> ArgType:
    """An int or a list of ``n`` ints, all >= 0: ``NONNEG_PAIR`` for ``n = 2``."""
    return NONNEG_PAIR if n == 2 else ArgType(_ints_name(n), _ntuple(_int, n), NON_NEGATIVE)


@cache
def opt_pos_ints(n: int) -> ArgType:
    """``none`` or :func:`pos_ints` ``(n)``: ``OPT_POS_PAIR`` for ``n = 2``."""
    return OPT_POS_PAIR if n == 2 else ArgType(f"none, {_ints_name(n)}", _optional(_ntuple(_int, n)), POSITIVE)


@dataclass(frozen=True)
class Arg:
    """One argument in an op's schema.

    Every number in its (converted) value is checked when a call is bound (:meth:`Op.resolve_args`): an
    integer must be below ``int_limit`` in magnitude (``MAX_SIZE``: what the shape checker can index); a
    float must be finite (``nonfinite``: infinities allowed; NaN never is) and within float32's range; both
    must lie in ``range`` (or, without one, the type's).
    """

    name: str
    type: ArgType
    default: Any = REQUIRED
    doc: str = ""
    range: Range | None = None
    nonfinite: bool = False
    int_limit: int = MAX_SIZE

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def bounds(self) -> Range | None:
        """The range its numbers must lie within: its own, or its type's."""
        return self.range if self.range is not None else self.type.range

    @property
    def type_text(self) -> str:
        """The type with its range, as the docs show it: ``int (>= 1)``, ``float (in [0, 1])``."""
        notes = [self.bounds.text] if self.bounds is not None else []
        if self.nonfinite:
            notes.append("may be infinite")
        if self.int_limit != MAX_SIZE:
            notes.append(f"integers below 2**{self.int_limit.bit_length() - 1} in magnitude")
        return self.type.name + (f" ({'; '.join(notes)})" if notes else "")

    def check_numbers(self, value) -> tuple[Any, str] | None:
        """The first number in a converted value that is out of range, and what it must be; None if all fit."""
        return _first_out_of_range(value, self)


@by_identity
def _first_out_of_range(value, arg: Arg) -> tuple[Any, str] | None:
    """:meth:`Arg.check_numbers`, once per value object and argument."""
    r = arg.bounds
    for v in _numbers(value):
        if isinstance(v, float):
            if math.isnan(v):
                return v, "a number other than NaN" if arg.nonfinite else "a finite number"
            if math.isinf(v):
                if not arg.nonfinite:
                    return v, "a finite number"
                continue
            if abs(v) > MAX_FLOAT:
                return v, "a number within float32's range (magnitude at most 3.4e38)"
        elif abs(v) >= arg.int_limit:
            return v, f"below 2**{arg.int_limit.bit_length() - 1} in magnitude"
        if r is not None and v not in r:
            return v, r.text
    return None


def _numbers(v):
    """The ints and floats in a converted argument value (nested lists included; bools and strings skipped)."""
    if isinstance(v, (list, tuple)):
        for x in v:
            yield from _numbers(x)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        yield v


# ------------------------------------------------------------------ analysis declarations

#: ``Op.macs_rule`` values: how the summary counts an op's MACs (torchvision's convention).
MACS_FORMULA = "formula"  # ``macs`` counts its multiply-accumulates (conv, linear, every matmul)
MACS_ZERO = "zero"        # 0 by convention: norms, activations, pooling, element-wise ops, data movement
MACS_UNKNOWN = "unknown"  # no formula: reported as unknown, never silently as 0

#: ``Op.window`` results other than a :class:`Window`.
POINTWISE = "pointwise"   # each output position sees the same positions of its inputs (max over inputs)
GLOBAL = "global"         # each output element may depend on every input position
UNDEFINED = "undefined"   # no receptive field is defined (resampling: upsampling, transposed conv)


@dataclass(frozen=True)
class Window:
    """A sliding window over the spatial axes of a map, for receptive fields: one entry per axis (length of
    a CxL sequence; height and width of a CxHxW map; depth, height and width of a CxDxHxW volume)."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...] | None = None  # None: 1 on every axis

    def __post_init__(self):
        if self.dilation is None:
            object.__setattr__(self, "dilation", (1,) * len(self.kernel))


# ------------------------------------------------------------------ ops


class Op:
    """Base class of primitive ops. Subclasses are registered with :func:`register`."""

    name: ClassVar[str]
    category: ClassVar[str]
    args: ClassVar[tuple[Arg, ...]] = ()
    #: number of inputs; ``None`` for joins taking two or more.
    arity: ClassVar[int | None] = 1
    #: the fewest inputs a join (``arity`` None) takes
    min_inputs: ClassVar[int] = 1
    #: joins are applied as functions, not registered as modules.
    functional: ClassVar[bool] = False
    #: the op may overwrite its input when nothing else reads it (e.g. ReLU(inplace=True)).
    can_inplace: ClassVar[bool] = False
    #: the op's output may share memory with its input (flatten): it must not be overwritten in place.
    returns_view: ClassVar[bool] = False
    #: torch module class names this op builds (for init rules and diagrams).
    torch_class: ClassVar[str | None] = None
    #: parameter tensors the op's module owns, for `init op.param = ...` rules.
    param_names: ClassVar[tuple[str, ...]] = ()
    #: child modules of the built module that `init op.param` rules by op kind reach as that op, e.g.
    #: ``{"qkv": "linear"}``: torchvision's init loops (``isinstance(m, nn.Linear)``) also reach them.
    inner_ops: ClassVar[dict[str, str]] = {}
    #: how ``macs`` counts: MACS_FORMULA, MACS_ZERO or MACS_UNKNOWN. Every op must declare it.
    macs_rule: ClassVar[str | None] = None
    #: the op's one parameter lives directly on the enclosing module under the node's name
    #: (ViT's ``class_token``, ConvNeXt's ``layer_scale``) instead of in a child module:
    #: ``make_param`` creates it and ``emit`` applies it (its last argument is the parameter).
    direct_param: ClassVar[bool] = False
    #: the module is called with more than one argument or returns a tuple (``call``).
    custom_call: ClassVar[bool] = False
    #: the shape rule, costs and layout see *full* shapes: a batched input as ``(BATCH, *shape)``, an
    #: unbatched one (`parameter`, `buffer`) as its own shape; dims count as in torch. Other ops take
    #: batched tensors only and see batch-free shapes.
    full_shapes: ClassVar[bool] = False
    #: a direct tensor (``direct_param``) is registered as a buffer, not a parameter
    direct_buffer: ClassVar[bool] = False

    # shape rule ---------------------------------------------------------
    def infer(self, a: dict, ins: list[Shape]) -> Shape:
        raise NotImplementedError

    # costs ----------------------------------------------------------------
    def params(self, a: dict, ins: list[Shape]) -> int:
        return 0

    def buffers(self, a: dict, ins: list[Shape]) -> int:
        return 0

    def macs(self, a: dict, ins: list[Shape], out: Shape) -> int:
        return 0

    def window(self, a: dict, ins: list[Shape], layouts: list[str | None]) -> Window | str:
        """How an output position depends on input positions (receptive fields, ``archdsl summary``).

        A :class:`Window` for sliding windows over maps (1-, 2- and 3-D conv, pooling); ``POINTWISE`` (the
        default) when each output position sees the same positions of the inputs (activations,
        norms, element-wise joins, per-token layers, reshapes); ``GLOBAL`` when an output element
        may see every input position (global pooling, a linear layer on a vector, attention);
        ``UNDEFINED`` when there is no receptive field in the Distill sense (upsampling). A window has
        one entry per spatial axis; the summary tracks as many axes as the model input has (a CxL
        sequence 1, a CxHxW image 2, a CxTxHxW clip 3), and a window over another number of axes
        makes the field undefined.
        """
        return POINTWISE

    # torch ------------------------------------------------------------------
    def build(self, a: dict, ins: list[Shape], inplace: bool = False):
        """Return the ``nn.Module`` for this op (module ops)."""
        raise NotImplementedError

    def emit(self, graph, a: dict, args: list, inplace: bool = False, ins: list[Shape] | None = None):
        """Add this op to a ``torch.fx.Graph`` as a function call over ``args`` (functional ops, and
        module ops called as functions: ``relu(x)`` in an expression); ``ins``: the input shapes (as
        :func:`hook_shapes` gives them). By default it calls :meth:`function`."""
        fn, extra, kwargs = self.function(a)
        return graph.call_function(fn, tuple(args) + tuple(extra), kwargs)

    def function(self, a: dict):
        """``(torch function, extra positional args, kwargs)`` computing this op on its inputs, for ops
        that can be called as functions in expressions (``softmax(x, 1)``); None if it cannot."""
        return None

    def tensor_inputs(self) -> tuple[str, ...]:
        """Names of the tensors the op reads, as its function form lists them (docs)."""
        if self.arity is None:
            return ("[a, b, ...]",)
        return {0: (), 1: ("x",), 2: ("a", "b")}.get(self.arity, tuple(f"x{i}" for i in range(self.arity)))

    @property
    def callable_as_function(self) -> bool:
        """Whether ``op(x, ...)`` in an expression may call the op as a function (no module)."""
        return self.functional or (not self.param_names and not self.direct_param and
                                   (type(self).function is not Op.function or type(self).emit is not Op.emit))

    def batch_fold(self, a: dict, ins: list[Shape], fold: int) -> int:
        """How many items per sample the output's batch dim holds, given the inputs' (``fold``); only
        `merge_batch` and `split_batch` change it."""
        return fold

    def check_inputs(self, a: dict, nodes: list) -> str | None:
        """Refuse inputs (IR nodes) of the wrong dtype or content (ShapeError); return the output's dtype
        (None: the model's floating type). By default every input must be floating."""
        bad = next((n.dtype for n in nodes if n.dtype is not None), None)
        if bad is not None:
            raise ShapeError(f"`{self.name}` takes floating-point tensors, got a {bad} one", f"{bad} tensor",
                             help="integer buffers are indices: use them with `index`")
        return None

    def make_param(self, a: dict, ins: list[Shape]):
        """The initial value of a ``direct_param`` op's parameter (a tensor)."""
        raise NotImplementedError

    def call(self, graph, name: str, args: list, a: dict):
        """Add a call of the op's module ``name`` to a ``torch.fx.Graph`` (``custom_call`` ops)."""
        return graph.call_module(name, tuple(args))

    # layouts --------------------------------------------------------------------
    def layout(self, a: dict, ins: list[Shape], layouts: list[str | None], out: Shape) -> str | None:
        """The output's axis letters (``"CHW"``, ``"HWC"``, ``"LC"`` tokens x channels), or None if unknown.

        By default an op that keeps the rank keeps its (first) input's layout; other outputs are unknown.
        """
        return layouts[0] if ins and len(out) == len(ins[0]) else None

    def check_layout(self, a: dict, ins: list[Shape], layouts: list[str | None]) -> None:
        """Raise :class:`ShapeError` if the op would silently act on the wrong axis of its input."""

    # presentation -------------------------------------------------------------
    def label(self, a: dict) -> str:
        return self.name

    @classmethod
    def doc(cls) -> str:
        return (cls.__doc__ or "").strip()

    def resolve_args(self, positional: list, keyword: dict) -> tuple[dict, list[tuple[str | None, str]]]:
        """Bind call arguments to the schema; returns attrs and a list of (arg, problem)."""
        problems: list[tuple[str | None, str]] = []
        attrs: dict = {}
        names = [a.name for a in self.args]
        if len(positional) > len(self.args):
            problems.append((None, f"`{self.name}` takes at most {len(self.args)} positional "
                                   f"argument{'s' if len(self.args) != 1 else ''}, got {len(positional)}"))
        for arg, value in zip(self.args, positional):
            attrs[arg.name] = value
        for key, value in keyword.items():
            if key not in names:
                problems.append((key, "unknown"))
            elif key in attrs:
                problems.append((key, f"argument `{key}` given twice"))
            else:
                attrs[key] = value
        out = {}
        for arg in self.args:
            if arg.name in attrs:
                try:
                    out[arg.name] = arg.type(attrs[arg.name])
                except ArgTypeError as e:
                    problems.append((arg.name, f"argument `{arg.name}` of `{self.name}` must be {e}, "
                                               f"got {_describe(attrs[arg.name])}"))
                    continue
                bad = arg.check_numbers(out[arg.name])
                if bad is not None:
                    v, must = bad
                    whole = out[arg.name]
                    where = f" (in {_render(whole)})" if isinstance(whole, tuple) and len(set(whole)) > 1 else ""
                    head = f"argument `{arg.name}` of `{self.name}` " + \
                        (f"is too large: it must be {must}" if must.startswith("below 2**") else f"must be {must}")
                    problems.append((arg.name, f"{head}, got {_describe(v)}{where}"))
            elif arg.required:
                problems.append((arg.name, f"`{self.name}` is missing its required argument `{arg.name}`"))
            else:
                out[arg.name] = arg.type(arg.default)
        return out, problems


def _describe(v) -> str:
    from ..elaborate.values import describe
    return describe(v)


def _render(v) -> str:
    from ..elaborate.values import render
    return render(v)


def hook_shapes(op: Op, nodes) -> list[Shape]:
    """The input shapes as ``op``'s hooks (``infer``, costs, ``build``, ``emit``) see them, from IR nodes:
    full shapes (batch as :data:`BATCH`) for ``full_shapes`` ops, batch-free ones for the others (a layer
    on a parameter or buffer treats its first dim as the batch)."""
    if op.full_shapes:
        return [((BATCH,) + tuple(n.shape)) if n.batched else tuple(n.shape) for n in nodes]
    return [n.shape if n.batched else tuple(n.shape[1:]) for n in nodes]


REGISTRY: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add an op to the registry under ``cls.name``."""
    if cls.name in REGISTRY:
        raise ValueError(f"op {cls.name} registered twice")
    if not cls.__doc__:
        raise ValueError(f"op {cls.name} needs a docstring")
    REGISTRY[cls.name] = cls()
    return cls


def get_op(name: str) -> Op | None:
    """The registered op ``name`` (every op module is loaded by :mod:`archdsl.ops`), or None."""
    return REGISTRY.get(name)


def all_ops() -> dict[str, Op]:
    """Every registered op, by name."""
    return dict(REGISTRY)


def channels_first_required(op: str, x: Shape, layout: str | None) -> None:
    """``op`` works on CxHxW feature maps: refuse one whose axes were permuted."""
    if layout is not None and layout != "CHW" and len(x) == 3:
        raise ShapeError(f"`{op}` expects a CxHxW feature map, but this {fmt_shape(x)} tensor is laid out "
                         f"{'x'.join(layout)}", f"input is {'x'.join(layout)}",
                         help="`permute([0, 3, 1, 2])` puts the channels first again")


def channels_last_required(op: str, x: Shape, layout: str | None, what: str) -> None:
    """``op`` acts on the last axis: refuse a map whose last axis is known to be its width or height."""
    if len(x) >= 2 and layout is not None and layout[-1] in "HW":
        last = {"W": "width", "H": "height"}[layout[-1]]
        raise ShapeError(f"`{op}` acts on the last axis, which here is the {last} of a {fmt_shape(x)} "
                         f"({'x'.join(layout)}) tensor", f"input is {fmt_shape(x)} ({'x'.join(layout)})",
                         help=f"{what}")


# ------------------------------------------------------------------ shape helpers


def expect_rank(op: str, x: Shape, rank: int, what: str) -> None:
    if len(x) != rank:
        raise ShapeError(f"`{op}` expects {what}, got a tensor of shape {fmt_shape(x)}",
                         f"input is {fmt_shape(x)}")


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def fmt_shapes(structure) -> str:
    """A shape, or a tuple / dict of shapes (a model's several outputs): ``(8x4x4, 16x2x2)``, ``{out: ...}``."""
    if isinstance(structure, dict):
        return "{" + ", ".join(f"{k}: {fmt_shapes(v)}" for k, v in structure.items()) + "}"
    if isinstance(structure, tuple) and structure and not isinstance(structure[0], int):
        return "(" + ", ".join(fmt_shapes(v) for v in structure) + ")"
    return fmt_shape(structure)


def window_out(op: str, size: int, k: int, s: int, p: int, d: int, ceil_mode: bool, axis: str,
               shape: Shape | None = None) -> int:
    """Output length of a sliding window (conv or pool) along one axis, with torch's rules.

    ``shape`` (the whole input shape) only makes error messages more helpful.
    """
    span = d * (k - 1) + 1
    # with ceil_mode, torch lets a pooling window hang over the end of the padded input (a 3x3 window on a
    # 2x2 map gives 1x1); otherwise the window must fit
    if size + 2 * p < span and not (ceil_mode and size + 2 * p + s - 1 >= span):
        kernel = f"{span} after dilation" if d != 1 else f"{span}"
        raise ShapeError(f"`{op}` kernel ({kernel}) is larger than its padded input "
                         f"({size} + 2x{p} = {size + 2 * p}) along {axis}",
                         f"kernel {span} > padded {axis} {size + 2 * p}", arg="kernel_size",
                         note=f"`{op}` receives a {fmt_shape(shape)} input here" if shape else None)
    num = size + 2 * p - span
    if ceil_mode:
        out = -(-num // s) + 1
        if (out - 1) * s >= size + p:
            out -= 1
    else:
        out = num // s + 1
    if out < 1:
        raise ShapeError(f"`{op}` output {axis} would be {out}", f"{axis} becomes {out}")
    return out
