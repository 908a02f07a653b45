"""archdsl's own expression evaluator: a closed language, never Python's ``eval``.

Supports arithmetic, comparisons, boolean logic, ``if c then a else b``, lists, dicts,
indexing, list comprehensions, ``in.<attr>`` and the built-in functions in ``BUILTINS``.
Every failure (unknown name, division by zero, index out of range, wrong types) raises
:class:`EvalError` with a located diagnostic.
"""

from __future__ import annotations

import difflib
import math
from typing import Callable

from .. import limits
from ..diagnostics import Diagnostic, Span, did_you_mean
from ..syntax import ast
from .values import (BlockRef, OpRef, ShapeValue, TensorValue, _MISSING, _POISONED, contains_tensor, describe,
                     render, type_name)

MAX_LIST = limits.TRUSTED.list_len  # the `list_len` budget's default


class EvalError(Exception):
    """An expression failed; carries one diagnostic."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


class Poisoned(Exception):
    """The incoming shape is unknown because of an earlier error: skip quietly."""


def fail(message: str, span: Span, label: str = "", help: str | None = None):
    raise EvalError(Diagnostic(message, span, label, help))


class Env:
    """A chain of name -> value scopes (block parameters, `let`s, loop variables, globals)."""

    def __init__(self, values: dict | None = None, parent: "Env | None" = None, in_shape=None):
        self.values = values if values is not None else {}
        self.parent = parent
        self._in = in_shape

    def child(self, values: dict | None = None) -> "Env":
        return Env(values or {}, self)

    def assign(self, name: str, value) -> bool:
        """Rebind ``name`` where it is bound (`x = value`); False if no enclosing scope binds it."""
        env = self
        while env is not None:
            if name in env.values:
                env.values[name] = value
                return True
            env = env.parent
        return False

    def lookup(self, name: str):
        env = self
        while env is not None:
            if name in env.values:
                return env.values[name]
            env = env.parent
        if name in BUILTINS:
            return BUILTINS[name]
        from ..ops.registry import get_op
        if get_op(name) is not None:
            return OpRef(name)
        return _MISSING

    def names(self) -> set[str]:
        out, env = set(BUILTINS), self
        while env is not None:
            out.update(env.values)
            env = env.parent
        from ..ops.registry import all_ops
        out.update(all_ops())
        return out


# ------------------------------------------------------------------ built-ins


class Builtin:
    """A built-in function: ``fn(span, *args)`` with an arity range and documentation."""

    def __init__(self, name: str, fn: Callable, min_args: int, max_args: int, doc: str):
        self.name, self.fn, self.min_args, self.max_args, self.doc = name, fn, min_args, max_args, doc

    def __repr__(self) -> str:
        return f"built-in {self.name}"


def _num(v, span, what="a number"):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        fail(f"expected {what}, got {describe(v)}", span)
    return v


def _int(v, span):
    if isinstance(v, bool) or not isinstance(v, int):
        fail(f"expected an integer, got {describe(v)}", span)
    return v


def _seq(v, span):
    if isinstance(v, ShapeValue):
        return v.shape
    if not isinstance(v, (tuple, str)):
        fail(f"expected a list, got {describe(v)}", span)
    return v


def _make_divisible(span, v, divisor=8, min_value=None):
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, never below 90%."""
    v = _finite(_num(v, span), span, "make_divisible")
    divisor = _int(divisor, span)
    if divisor <= 0:
        fail("make_divisible: divisor must be positive", span)
    min_value = divisor if min_value is None else _int(min_value, span)
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _range(span, *a):
    for x in a:
        _int(x, span)
    if a and len(a) == 3 and a[2] == 0:
        fail("range step must not be zero", span)
    start, stop, step = (0, a[0], 1) if len(a) == 1 else (a[0], a[1], a[2] if len(a) == 3 else 1)
    n = max(0, (stop - start + step - (1 if step > 0 else -1)) // step)  # len(range(...)), for any size
    _room(n, span, f"range of {n} items is too long")
    return tuple(range(start, stop, step))


def _minmax(fn):
    def run(span, *a):
        items = _seq(a[0], span) if len(a) == 1 else a
        if not items:
            fail(f"{fn.__name__}() of an empty list", span)
        for x in items:
            _num(x, span)
        return fn(items)
    return run


def _finite(v, span, what):
    if isinstance(v, float) and not math.isfinite(v):
        fail(f"cannot {what} {v}", span, "not a finite number")
    return v


def _round(span, v, ndigits=None):
    v = _finite(_num(v, span), span, "round")
    return round(v) if ndigits is None else round(v, _int(ndigits, span))


def _sum(span, items):
    items = _seq(items, span)
    for x in items:
        _num(x, span)
    return sum(items)


def _zip(span, *lists):
    return _check_len(tuple(tuple(t) for t in zip(*(_seq(x, span) for x in lists))), span)


def _enumerate(span, items, start=0):
    return _check_len(tuple((i, x) for i, x in enumerate(_seq(items, span), _int(start, span))), span)


def _to_int(span, v):
    v = _num(v, span)
    if isinstance(v, float) and not math.isfinite(v):
        fail(f"cannot convert {v} to an integer", span)
    return int(v)


def _to_float(span, v):
    try:
        return float(_num(v, span))
    except OverflowError:
        fail("the integer is too large to convert to a float", span)


def _ceil_floor(fn):
    def run(span, v):
        v = _num(v, span)
        if isinstance(v, float) and not math.isfinite(v):
            fail(f"cannot round {v}", span)
        return int(fn(v))
    return run


def _sqrt(span, v):
    v = _num(v, span)
    if v < 0:
        fail(f"sqrt of a negative number ({v})", span)
    return math.sqrt(v)


def _log(span, v, base=None):
    v = _num(v, span)
    if v <= 0:
        fail(f"log of a number that is not positive ({v})", span)
    if base is None:
        return math.log(v)
    base = _num(base, span)
    if base <= 0 or base == 1:
        fail(f"log base must be positive and not 1, got {base}", span)
    return math.log(v) / math.log(base)


def _exp(span, v):
    v = _num(v, span)
    if v > 700:
        fail(f"exp({v}) overflows", span)
    return math.exp(v)


def _require(span, cond, *message):
    """Stop with an error at the call unless ``cond`` holds; the message parts are joined by spaces."""
    if not isinstance(cond, bool):
        fail(f"require: the condition must be `true` or `false`, got {describe(cond)}", span)
    if not cond:
        fail(" ".join(m if isinstance(m, str) else render(m) for m in message) or "requirement not met",
             span, "requirement not met")
    return True


BUILTINS: dict[str, Builtin] = {b.name: b for b in [
    Builtin("min", _minmax(min), 1, 99, "smallest of the arguments, or of one list"),
    Builtin("max", _minmax(max), 1, 99, "largest of the arguments, or of one list"),
    Builtin("round", _round, 1, 2, "round half to even, like Python's round"),
    Builtin("ceil", _ceil_floor(math.ceil), 1, 1, "smallest integer >= x"),
    Builtin("floor", _ceil_floor(math.floor), 1, 1, "largest integer <= x"),
    Builtin("int", _to_int, 1, 1, "truncate a number towards zero"),
    Builtin("float", _to_float, 1, 1, "convert a number to float"),
    Builtin("abs", lambda span, v: abs(_num(v, span)), 1, 1, "absolute value"),
    Builtin("sqrt", _sqrt, 1, 1, "square root (correctly rounded)"),
    Builtin("log", _log, 1, 2, "natural logarithm; log(x, base) is log(x) / log(base)"),
    Builtin("exp", _exp, 1, 1, "e to the power x"),
    Builtin("len", lambda span, v: len(_seq(v, span)), 1, 1, "length of a list or string"),
    Builtin("sum", _sum, 1, 1, "sum of a list of numbers"),
    Builtin("range", _range, 1, 3, "range(stop), range(start, stop[, step]) as a list"),
    Builtin("zip", _zip, 1, 99, "lists of tuples of corresponding items"),
    Builtin("enumerate", _enumerate, 1, 2, "pairs [index, item]"),
    Builtin("make_divisible", _make_divisible, 1, 3,
            "make_divisible(v, divisor = 8, min_value = divisor), as torchvision rounds channels"),
    Builtin("str", lambda span, v: v if isinstance(v, str) else render(v) if not contains_tensor(v)
            else fail("str() of a tensor", span), 1, 1,
            "the text of a value: str(3) is \"3\", for names built from parts (\"stage\" + str(i))"),
    Builtin("output", None, 1, 1,
            "output(\"path\"): the tensor computed by the module at that path (relative to this block), "
            "after it is built: reaches into sub-modules (torchvision's create_feature_extractor)"),
    Builtin("require", _require, 1, 99,
            "require(cond, message...): an error at the call unless cond is true (gives true)"),
]}


# ------------------------------------------------------------------ evaluation


def evaluate(e: ast.Expr, env: Env, in_shape: ShapeValue | None = None, ctx=None):
    """Evaluate an expression; ``in_shape`` is the value of ``in`` (None where it is not available).

    ``ctx`` (the elaborator, inside a model or block body) makes tensor expressions possible:
    op and block calls, arithmetic on tensors and ``output(path)`` add nodes to the graph through
    it; without it (parameter defaults, top-level lets) they are errors.
    """
    return _Evaluator(env, in_shape, ctx).value_of(e)


_NO_TENSORS_HELP = ("tensors exist inside model and block bodies only; here (a parameter default, a top-level "
                    "`let`, an `init` argument or the `input` clause) expressions compute numbers")


class _Evaluator:
    def __init__(self, env: Env, in_shape, ctx=None):
        self.env = env
        self.in_shape = in_shape
        self.ctx = ctx

    def value_of(self, e):
        method = getattr(self, "e_" + type(e).__name__)
        return method(e)

    def e_Literal(self, e):
        return e.value

    def e_Name(self, e):
        v = self.env.lookup(e.id)
        if v is _POISONED:
            raise Poisoned()
        if v is _MISSING:
            fail(f"unknown name `{e.id}`", e.span, "not defined here", did_you_mean(e.id, self.env.names()))
        return v

    def e_InShape(self, e):
        if self.in_shape is None:
            fail("`in` (the incoming shape) is not defined here", e.span, "no tensor flows into this expression",
                 "`in` can be used where a tensor flows: in the arguments of a layer or block call and in `let`, "
                 "`if`, `for` and name templates inside a model or block body")
        if self.in_shape == "poisoned":
            raise Poisoned()
        return self.in_shape

    def e_ListExpr(self, e):
        return _check_len(tuple(self.value_of(x) for x in e.items), e.span)

    def e_DictExpr(self, e):
        out = {}
        for k, v in e.pairs:
            key = self.value_of(k)
            if not isinstance(key, (str, int, bool)) and key is not None:
                fail(f"a dict key must be a string or number, got {describe(key)}", k.span)
            if key in out:
                fail(f"key {render(key)} is given twice in this dict", k.span, "given again here")
            out[key] = self.value_of(v)
        return out

    def e_ListComp(self, e):
        out = []
        budget = limits.current()
        for item in _seq(self.value_of(e.iterable), e.iterable.span):
            budget.spend("steps", 1, e.span)
            scope = self.env.child(bind_targets(e.targets, item, e.span))
            sub = _Evaluator(scope, self.in_shape, self.ctx)
            if e.cond is not None and not truth(sub.value_of(e.cond), e.cond.span):
                continue
            out.append(sub.value_of(e.elt))
        return _check_len(tuple(out), e.span)

    def e_IfExpr(self, e):
        return self.value_of(e.then) if truth(self.value_of(e.cond), e.cond.span) else self.value_of(e.otherwise)

    def e_UnaryOp(self, e):
        v = self.value_of(e.operand)
        if e.op == "not":
            return not truth(v, e.operand.span)
        if isinstance(v, TensorValue):
            return self._tensor_ctx(e.span).unary(e.op, v, e)
        v = _num(v, e.operand.span)
        return -v if e.op == "-" else +v

    def e_BinOp(self, e):
        if e.op in ("and", "or"):
            left = truth(self.value_of(e.left), e.left.span)
            if e.op == "and" and not left:
                return False
            if e.op == "or" and left:
                return True
            return truth(self.value_of(e.right), e.right.span)
        a, b = self.value_of(e.left), self.value_of(e.right)
        if (isinstance(a, TensorValue) or isinstance(b, TensorValue)) and e.op not in ("==", "!="):
            return self._tensor_ctx(e.span).arith(e.op, a, b, e)
        if e.op == "@":
            fail("`@` multiplies tensors (a matrix product)", e.span, f"got {describe(a)} and {describe(b)}")
        return binary(e.op, a, b, e)

    def _tensor_ctx(self, span):
        if self.ctx is None:
            fail("tensor arithmetic is not possible here", span, "no tensors here", _NO_TENSORS_HELP)
        return self.ctx

    def e_Index(self, e):
        obj, idx = self.value_of(e.obj), self.value_of(e.index)
        if isinstance(obj, dict):
            if not isinstance(idx, (str, int, bool)) and idx is not None:
                fail(f"a dict is indexed by a string or number, got {describe(idx)}", e.index.span, "not a key")
            if idx not in obj:
                fail(f"key {render(idx)} is not in the dict", e.index.span, "no such key", _key_help(idx, obj))
            return obj[idx]
        seq = _seq(obj, e.obj.span)
        i = _int(idx, e.index.span)
        if not -len(seq) <= i < len(seq):
            fail(f"index {i} is out of range for a list of {len(seq)} item{'s' if len(seq) != 1 else ''}",
                 e.index.span, "out of range")
        return seq[i]

    def e_Attr(self, e):
        obj = self.value_of(e.obj)
        # the attribute name is the last thing in the expression's span
        sp = e.span
        name_span = Span(sp.source, sp.end_line, max(sp.end_column - len(e.name), 1), sp.end_line, sp.end_column)
        if isinstance(obj, ShapeValue):
            v = obj.attribute(e.name)
            if v is _MISSING:
                valid = [n for n in ShapeValue.attribute_names() if obj.attribute(n) is not _MISSING]
                fail(f"the incoming shape {'x'.join(map(str, obj.shape))} has no attribute `{e.name}`", name_span,
                     "no such attribute", help=did_you_mean(e.name, valid) or f"available: {', '.join(valid)}")
            return v
        fail(f"{describe(obj)} has no attribute `{e.name}`", name_span, "no such attribute",
             help="only the incoming shape `in` has attributes")

    def e_Call(self, e):
        f = self.env.lookup(e.func)
        if f is _MISSING:
            fail(f"unknown function `{e.func}`", e.func_span, "not defined here",
                 did_you_mean(e.func, list(BUILTINS)))
        if not isinstance(f, (OpRef, BlockRef, Builtin)) and f is not _MISSING:
            from ..ops.registry import get_op
            if get_op(e.func) is not None:
                f = OpRef(e.func)  # a value named like an op does not hide the op (as in statements)
        if isinstance(f, (OpRef, BlockRef)) or (isinstance(f, Builtin) and f.fn is None):
            # graph-building calls: ops, blocks, output(path)
            if self.ctx is None:
                name = f"`{f.name}()`" if isinstance(f, Builtin) else describe(f)
                fail(f"{name} cannot be called here", e.func_span, "no tensors here", _NO_TENSORS_HELP)
            return self.ctx.call(e, f, self.env, self.in_shape)
        if not isinstance(f, Builtin):
            fail(f"{describe(f)} cannot be called inside an expression", e.func_span,
                 help="only built-in functions, ops and blocks can be called")
        if e.inputs is not None:
            fail(f"`{f.name}` is a built-in function: it is not applied to tensors", e.span,
                 "remove the second argument list")
        args, kwargs = [], {}
        for a in e.args:
            if a.name is None:
                args.append(self.value_of(a.value))
            else:
                kwargs[a.name] = self.value_of(a.value)
        from ..ops.registry import get_op
        if get_op(f.name) is not None and any(contains_tensor(v) for v in args):
            # sum(tensors), sum(t, dims), exp(t), log(t): the op of that name
            return self._tensor_ctx(e.span).tensor_builtin(f.name, args, kwargs, e)
        n = len(args) + len(kwargs)
        if not f.min_args <= n <= f.max_args:
            want = str(f.min_args) if f.min_args == f.max_args else f"{f.min_args} to {f.max_args}"
            fail(f"`{f.name}` takes {want} argument{'s' if f.max_args != 1 else ''}, got {n}", e.span)
        try:
            return f.fn(e.span, *args, **kwargs)
        except TypeError:
            fail(f"invalid arguments to `{f.name}`", e.span, help=f"{f.name}: {f.doc}")


def _key_help(key, d: dict) -> str | None:
    """Did-you-mean for a missing dict key (case differences first), else the keys there are."""
    keys = list(d)
    if isinstance(key, str):
        same_case = [k for k in keys if isinstance(k, str) and k.lower() == key.lower()]
        close = same_case or difflib.get_close_matches(key, [k for k in keys if isinstance(k, str)], n=1, cutoff=0.6)
        if close:
            return f"did you mean {render(close[0])}?"
    if not keys:
        return "the dict is empty"
    shown = ", ".join(render(k) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
    return f"keys: {shown}"


def truth(v, span) -> bool:
    if not isinstance(v, bool):
        fail(f"a condition must be `true` or `false`, got {describe(v)}", span, f"this is {type_name(v)}")
    return v


def bind_targets(targets: tuple[str, ...], item, span: Span) -> dict:
    if len(targets) == 1:
        return {targets[0]: item}
    if not isinstance(item, tuple) or len(item) != len(targets):
        fail(f"cannot unpack {describe(item)} into {len(targets)} names ({', '.join(targets)})", span)
    return dict(zip(targets, item))


def binary(op: str, a, b, e):
    span = e.span
    if op in ("==", "!="):
        eq = _equal(a, b)
        return eq if op == "==" else not eq
    if op in ("<", "<=", ">", ">="):
        if isinstance(a, str) and isinstance(b, str):
            pass
        else:
            _num(a, e.left.span)
            _num(b, e.right.span)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if op == "+" and isinstance(a, tuple) and isinstance(b, tuple):
        return _check_len(a + b, span)
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return _check_len(a + b, span)
    if op == "+" and isinstance(a, str) != isinstance(b, str):
        num = b if isinstance(a, str) else a
        if isinstance(num, (int, float)) and not isinstance(num, bool):
            _str_plus_number(a, b, e)
    if op == "*" and (isinstance(a, tuple) or isinstance(b, tuple)):
        lst, n = (a, b) if isinstance(a, tuple) else (b, a)
        n = _int(n, span)
        _room(len(lst) * max(n, 0), span)
        return lst * n
    a, b = _num(a, e.left.span), _num(b, e.right.span)
    try:
        return _magnitude(_arith(op, a, b, e), span)
    except OverflowError:
        fail("arithmetic overflow: the result does not fit a float", span)


def _str_plus_number(a, b, e):
    """`"stage" + s` with a number ``s``: a string and a number do not add (as in Python)."""
    num, side = (b, e.right) if isinstance(a, str) else (a, e.left)
    sp = side.span
    text = sp.source.line(sp.line)[sp.column - 1:sp.end_column - 1] if sp.end_line == sp.line else ""
    text = text if text.strip() else "x"
    fixed = f"{render(a)} + str({text})" if isinstance(a, str) else f"str({text}) + {render(b)}"
    template = (f"{a}{{{text}}}" if isinstance(a, str) else f"{{{text}}}{b}").replace('"', "'")
    kind = "an integer" if isinstance(num, int) else "a float"
    also = f"; a label or tap name can also be a template: `\"{template}\"`" if isinstance(num, int) else ""
    fail(f"a string and {kind} cannot be added", sp, f"this is {describe(num)}",
         help=f"convert the number first: `{fixed}`{also}")


#: the largest integer magnitude an expression may compute (far beyond any tensor size or count)
MAX_INT = 2 ** 256


def _magnitude(v, span):
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
        fail(f"integer too large: more than 2**256 in magnitude ({len(str(abs(v)))} digits)", span,
             "too large", help="no tensor dimension or count comes near this")
    return v


def _arith(op: str, a, b, e):
    span = e.span
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op in ("/", "//", "%"):
        if b == 0:
            fail("division by zero", e.right.span, "this is zero")
        return a / b if op == "/" else a // b if op == "//" else a % b
    if op == "**":
        if isinstance(a, int) and isinstance(b, int) and (b < 0 or (abs(a) > 1 and b > 256)):
            if b < 0:
                if a == 0:
                    fail("zero cannot be raised to a negative power", span)
                return float(a) ** b
            fail("exponent too large", e.right.span)
        try:
            r = a ** b
        except (OverflowError, ZeroDivisionError):
            fail("arithmetic overflow", span)
        if isinstance(r, complex):
            fail("the result is not a real number", span)
        return r
    fail(f"unknown operator {op}", span)  # pragma: no cover


def _equal(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _room(n: int, span, message: str | None = None) -> None:
    """Refuse a list (or string) of ``n`` items over the `list_len` budget; count them in the `items` budget."""
    budget = limits.current()
    cap = budget.limits.list_len
    if n > cap:
        fail(message or f"list would have more than {cap:,} items (the `list_len` budget)", span,
             help=limits.how_to_raise("list_len", cap))
    budget.spend("items", n, span)


def _check_len(v, span):
    """``v`` (a list or string just made), after :func:`_room`."""
    _room(len(v), span)
    return v


def is_callable_value(v) -> bool:
    return isinstance(v, (BlockRef, OpRef))
