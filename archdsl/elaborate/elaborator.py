"""Elaboration: expand a model's blocks, loops, conditionals and data-flow constructs into
the IR, inferring every shape on the way (this is the shape checker).

Errors are collected, not raised one by one: after a failed statement the tensor flowing
on is marked *poisoned*, so later statements are still checked for problems of their own
(unknown names, bad arguments) without cascading shape errors.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import keyword
import math
import re
from dataclasses import dataclass, field

from .. import limits
from ..diagnostics import Collector, Diagnostic, Span, SpecError, did_you_mean
from ..ir import INPUT_ID, RESERVED_NAMES, Graph, InitRule, Node, Scope, flatten_outputs
from ..ops.init import INIT_FUNCS
from ..ops.registry import MAX_ELEMENTS, MAX_SIZE, Op, ShapeError, all_ops, fmt_shape, get_op, hook_shapes, is_batch
from ..syntax import ast
from ..syntax.parser import parse_expression
from .expr import Builtin, Env, EvalError, Poisoned, bind_targets, evaluate, truth
from .values import (TYPE_NAMES, BlockRef, OpRef, ShapeValue, TensorValue, _MISSING, _POISONED, conforms,
                     contains_tensor, describe, render, type_name)

POISON = -1
NO_FLOW = -2  # no current tensor: a block whose inputs are not one tensor, before a `from`
MAX_DIM = MAX_SIZE          # the largest dimension size (exclusive), as for op arguments
MAX_BLOCK_DEPTH = limits.TRUSTED.block_depth  # nested block calls (the `block_depth` budget's default)
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
# Module names may also contain `-` (torchvision's RegNet names its blocks "block1-0").
_MODULE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


class _TooDeep(Exception):
    """Unwinds a runaway recursion after it has been reported once."""


@dataclass
class Override:
    """A model-parameter override given as expression text (``--set k=v``)."""
    text: str


class _Return(Exception):
    """`return` ends the body of its block (or model)."""


@dataclass
class _Frame:
    """One block (or model) body being elaborated: its scope, where `return` puts the result."""
    scope: Scope
    result: object = None          # a TensorValue, or a tuple / dict of them
    returned: bool = False
    nested: int = 0                # depth inside seq / residual / concat / gate bodies (no `return` there)
    return_span: Span | None = None


@dataclass
class _Multi:
    """The result of a block that returns several tensors (a list or a dict of TensorValues)."""
    value: object


@dataclass
class _Fan:
    """Fan-out mode (inside `concat`): every node statement reads ``start``."""
    start: int
    outputs: list[int] = field(default_factory=list)


class Elaborator:
    def __init__(self, collector: Collector):
        self.diag = collector
        self.nodes: dict[int, Node] = {}
        self.scopes: dict[str, Scope] = {}
        self.rules: list[InitRule] = []
        self._next = 1
        self._spans_reported: set = set()
        self._label_spans: dict[tuple[str, str], Span] = {}  # (scope path, name) -> label that gave it
        self._children: dict[str, dict[str, tuple[str, object]]] = {}  # scope path -> name -> (kind, ref)
        self._numbered: dict[str, int] = {}  # scope path -> children that take a position number
        self._budget = limits.current()
        self._calls: list[tuple[str, Span]] = []  # the block calls being elaborated, outermost first
        self._taps: dict[str, dict[str, tuple[int, Span]]] = {}  # scope path -> tap name -> (node id, span)
        self._frames: list[_Frame] = []
        self._named: list[tuple[str, int, Span]] = []  # (name, node id, let span) of named tensors
        # `register` statements: (scope, children made before it, [(name, label span)], the labels its body writes)
        self._registers: list[tuple[Scope, int, list[tuple[str, Span]], set[str]]] = []

    # ------------------------------------------------------------ diagnostics
    def error(self, d: Diagnostic) -> None:
        key = (d.span.location if d.span else None, d.message if d.span is None else None)
        if d.span is not None and key in self._spans_reported:
            return
        self._spans_reported.add(key)
        self.diag.add(self._with_call_site(d))

    def _with_call_site(self, d: Diagnostic) -> Diagnostic:
        """An error inside a block's body also says which call of the block it comes from (a library
        block is called from many places): the innermost call in another file, or else the innermost."""
        if not self._calls or d.span is None:
            return d
        calls = [sp for _, sp in self._calls if sp is not None]
        if not calls or any(sp.location == d.span.location for sp in calls):
            return d
        other = [sp for sp in calls if sp.source.name != d.span.source.name]
        site = (other or calls)[-1]
        name = next(n for n, sp in self._calls if sp is site)
        note = f"in `{name}`, called at {site.location}"
        if any(note == n for n in d.notes):
            return d
        return dataclasses.replace(d, notes=tuple(d.notes) + (note,))

    def err(self, message, span, label="", help=None, notes=()):
        self.error(Diagnostic(message, span, label, help, tuple(notes)))

    # ------------------------------------------------------------ model
    def model(self, decl: ast.ModelDecl, globals_env: Env, overrides: dict, input_override) -> Graph | None:
        if decl.call is not None:
            params, body, body_parent, block_name = self._alias_params(decl, globals_env, overrides)
        else:
            params = self._bind_params(decl.params, [], {}, globals_env, decl.span, f"model `{decl.name}`",
                                       overrides=overrides)
            body, body_parent, block_name = decl.body, globals_env, None
        if params is None:
            return None
        env = Env(dict(params), body_parent)
        shape = self._input_shape(decl, env, input_override)
        self.nodes[INPUT_ID] = Node(INPUT_ID, "input", {}, (), shape, "", None, decl.span,
                                    layout="CHW" if shape is not None and len(shape) == 3 else None)
        root = Scope("", "block", block_name or decl.name, decl.span, INPUT_ID, INPUT_ID)
        self.scopes[""] = root
        start = INPUT_ID if shape is not None else POISON
        frame = _Frame(root)
        self._frames.append(frame)
        try:
            out = self.run_body(body, root, env, start)
        except _Return:
            out = POISON
        except _TooDeep:
            return None
        finally:
            self._frames.pop()
        outputs = out
        if frame.returned:
            outputs = self._result_ids(frame.result)
            out = next(iter(flatten_outputs(outputs)), POISON) if outputs is not None else POISON
        elif out == NO_FLOW:
            self.err(f"model `{decl.name}` computes no output", decl.span, "no `return` and no current tensor")
            out = POISON
        root.output = out
        if outputs is not None:
            for nid in flatten_outputs(outputs):
                if nid in self.nodes and self.nodes[nid].fold != 1:
                    self.err(f"the model's result still has {self.nodes[nid].fold} items per sample merged into "
                             "the batch", frame.return_span or decl.span, "from `merge_batch`",
                             help=f"`split_batch(x, {self.nodes[nid].fold})` gives each sample its items back")
                    out = POISON
        self._apply_registers()
        self._check_init_rules()
        self._check_named_tensors(outputs)
        if out == POISON or shape is None or outputs is None:
            return None
        return Graph(decl.name, self.nodes, self.scopes, out, self.rules, params, outputs)

    def _alias_params(self, decl, globals_env, overrides):
        target = globals_env.lookup(decl.call.func)
        if not isinstance(target, BlockRef):
            self._unknown_callable(decl.call, globals_env, target, want_block=True)
            return None, None, None, None
        positional, keyword = self._eval_args(decl.call.args, globals_env, None)
        if positional is None:
            return None, None, None, None
        params = self._bind_params(target.decl.params, positional, keyword, target.globals, decl.call.span,
                                   f"block `{target.decl.name}`", overrides=overrides, model=decl.name)
        return params, target.decl.body, target.globals, target.decl.name

    def _input_shape(self, decl, env, override):
        if override is not None:
            shape = tuple(override)
            if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape) or \
                    not _fits(shape):
                self.err(f"invalid input shape {shape}: expected positive integers such as 3x224x224 "
                         "(each below 2**31, at most 2**40 elements)",
                         decl.input.span if decl.input is not None else decl.span,
                         "replaced by the given input shape (--input / input_shape)")
                return None
            return shape
        if decl.input is None:
            self.err(f"model `{decl.name}` declares no input shape", decl.span, "no `input` here",
                     help=f"write `model {decl.name} input 3x224x224 ...`, or pass --input")
            return None
        try:
            v = evaluate(decl.input, env)
        except EvalError as e:
            self.error(e.diagnostic)
            return None
        if (not isinstance(v, tuple) or not v or
                any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in v)) or \
                (isinstance(v, tuple) and not _fits(v)):
            bad = [(i, d) for i, d in enumerate(v)
                   if isinstance(d, bool) or not isinstance(d, int) or not 0 < d < MAX_DIM] \
                if isinstance(v, tuple) else []
            label = f"dimension {bad[0][0]} is {describe(bad[0][1])}" if bad else \
                "more than 2**40 elements" if isinstance(v, tuple) and v else f"this is {describe(v)}"
            self.err("the input shape must be a list of positive integers", decl.input.span, label)
            return None
        return v

    # ------------------------------------------------------------ parameters
    def _bind_params(self, params, positional, keyword, closure: Env, call_span, what, overrides=None,
                     model=None, in_shape=None):
        """Bind (value, span) arguments to declared parameters; returns name -> value or None."""
        ok = True
        names = [p.name for p in params]
        bound: dict[str, tuple[object, Span | None]] = {}
        for p in params:
            if p.type is not None and p.type not in TYPE_NAMES:
                self.err(f"unknown type `{p.type}`", p.span, "in this parameter",
                         help=did_you_mean(p.type, TYPE_NAMES) or f"types: {', '.join(TYPE_NAMES)}")
        if len(positional) > len(params):
            self.err(f"{what} takes {len(params)} argument{'s' if len(params) != 1 else ''}, "
                     f"got {len(positional)}", positional[len(params)][1], "unexpected argument")
            ok = False
        for p, v in zip(params, positional):
            bound[p.name] = v
        for k, (v, sp) in keyword.items():
            if k not in names:
                self.err(f"{what} has no parameter `{k}`", sp, "unknown argument",
                         help=did_you_mean(k, names) or (f"parameters: {', '.join(names)}" if names else None))
                ok = False
            elif k in bound:
                self.err(f"argument `{k}` given twice", sp, "already given")
                ok = False
            else:
                bound[k] = (v, sp)
        if overrides:
            for k, v in overrides.items():
                if k not in names:
                    self.err(f"model {('`' + model + '` ') if model else ''}has no parameter `{k}` to set",
                             call_span, f"`{k}` is set (--set / load_spec) but not declared here",
                             help=did_you_mean(k, names) or f"parameters: {', '.join(names) or '(none)'}")
                    ok = False
                else:
                    bound[k] = (v, None)
        env = Env({}, closure)
        out: dict[str, object] = {}
        for p in params:
            if p.name in bound:
                value, sp = bound[p.name]
                if isinstance(value, Override):
                    try:
                        value = evaluate(parse_expression(value.text, p.span), env)
                    except EvalError as e:
                        self.err(f"invalid value for `{p.name}`: {e.diagnostic.message}", p.span,
                                 f"set to `{value.text}` (--set / load_spec)")
                        ok = False
                        continue
                    except Exception as e:  # a SpecError from parsing
                        diags = getattr(e, "diagnostics", None)
                        self.err(f"cannot parse the value of `{p.name}`: {diags[0].message if diags else e}", p.span,
                                 f"set to `{value.text}` (--set / load_spec)")
                        ok = False
                        continue
            elif p.default is not None:
                sp = p.default.span
                try:
                    value = evaluate(p.default, env, in_shape)
                except EvalError as e:
                    self.error(e.diagnostic)
                    ok = False
                    continue
            else:
                self.err(f"{what} is missing its argument `{p.name}`", call_span, f"`{p.name}` not given",
                         notes=(f"`{p.name}` is declared at {p.span.location}",))
                ok = False
                continue
            none_default = value is None and isinstance(p.default, ast.Literal) and p.default.value is None
            if p.type in TYPE_NAMES and not conforms(value, p.type) and not none_default:
                self.err(f"argument `{p.name}` of {what} must be {p.type}, got {describe(value)}",
                         sp or call_span, f"this is {type_name(value)}")
                ok = False
            if p.type == "float" and isinstance(value, int):
                value = float(value)
            out[p.name] = value
            env.values[p.name] = value
        return out if ok else None

    def _eval_args(self, args, env, in_shape, ctx=None):
        positional, keyword, ok = [], {}, True
        for a in args:
            try:
                v = evaluate(a.value, env, in_shape, ctx)
            except EvalError as e:
                self.error(e.diagnostic)
                ok = False
                continue
            if a.name is None:
                positional.append((v, a.value.span))
            elif a.name in keyword:
                self.err(f"argument `{a.name}` given twice", a.span, "already given")
                ok = False
            else:
                keyword[a.name] = (v, a.span)
        return (positional, keyword) if ok else (None, None)

    # ------------------------------------------------------------ statements
    def run_body(self, stmts, scope: Scope, env: Env, cur: int, fan: _Fan | None = None) -> int:
        for k, st in enumerate(stmts):
            try:
                if isinstance(st, ast.Register):
                    self._register(st, scope, env, cur if fan is None else fan.start, stmts)
                    continue
                cur = self.run_stmt(st, scope, env, cur, fan)
            except EvalError as e:
                self.error(_bound_later(e.diagnostic, stmts[k + 1:]))
                cur = POISON if fan is None else cur
            except Poisoned:
                cur = POISON if fan is None else cur
        return cur

    def _in(self, cur):
        if cur == NO_FLOW:
            return None
        if cur == POISON or self.nodes[cur].shape is None:
            return "poisoned"
        n = self.nodes[cur]
        return TensorValue(n.shape, n.layout, cur, n.batched)

    def _tensor(self, nid: int) -> TensorValue:
        """The tensor value of node ``nid`` (raises Poisoned for a failed one)."""
        v = self._in(nid)
        if not isinstance(v, TensorValue):
            raise Poisoned()
        return v

    def _ev(self, expr, env, cur, scope):
        """Evaluate ``expr`` in a body: ``in`` is the tensor ``cur``; tensor expressions add nodes to ``scope``."""
        return evaluate(expr, env, self._in(cur), _Ctx(self, scope, cur))

    def _nested(self, delta: int) -> None:
        if self._frames:
            self._frames[-1].nested += delta

    def run_stmt(self, st, scope, env, cur, fan):
        self._budget.spend("steps", 1, st.span)
        if isinstance(st, ast.Let):
            self._let(st, scope, env, cur if fan is None else fan.start)
            return cur
        if isinstance(st, ast.Return):
            self._return(st, scope, env, cur if fan is None else fan.start)
            return cur
        if isinstance(st, ast.InitRule):
            self._init_rule(st, scope, env)
            return cur
        if isinstance(st, ast.Tap):
            self._tap(st, scope, env, cur if fan is None else fan.start)
            return cur
        if isinstance(st, ast.If):
            for cond, body in st.branches:
                if truth(self._ev(cond, env, cur, scope), cond.span):
                    return self.run_body(body, scope, env.child(), cur, fan)
            if st.otherwise is not None:
                return self.run_body(st.otherwise, scope, env.child(), cur, fan)
            return cur
        if isinstance(st, ast.For) and fan is None:
            return self._for(st, scope, env, cur, None)
        if isinstance(st, ast.For):
            self._for(st, scope, env, cur, fan)
            return cur
        label, node = (st.label, st.node) if isinstance(st, ast.Labelled) else (None, st)
        if isinstance(node, ast.Call) and getattr(get_op(node.func), "arity", 1) == 0 and \
                not isinstance(env.lookup(node.func), BlockRef):
            raise EvalError(Diagnostic(f"`{node.func}` makes a tensor and reads none, so it does not continue the "
                                       "data flow", node.span, "as a statement",
                                       help=f"bind it: `let t = {label.text if label else 'name'}: "
                                            f"{node.func}(...)`, then use `t`"))
        start = fan.start if fan is not None else cur
        out = self._flow(self.run_node(node, label, scope, env, start), node)
        if fan is not None:
            fan.outputs.append(out)
            return cur
        return out

    def _flow(self, out, node) -> int:
        """A statement's result as the current tensor: one tensor, not several."""
        if isinstance(out, _Multi):
            n = len(out.value)
            what = f"a dict of {n} tensors" if isinstance(out.value, dict) else f"{n} tensors"
            raise EvalError(Diagnostic(f"this returns {what}, which cannot flow on as one tensor", node.span,
                                       "several results", help="bind them with `let`: `let a, b = ...` "
                                       "(or `let r = ...` and use `r[0]`, `r[\"name\"]`)"))
        return out

    def _let(self, st: ast.Let, scope, env, cur) -> None:
        names = st.names
        try:
            if st.node is not None:
                out = self.run_node(st.node, st.label, scope, env, cur)
                if isinstance(out, _Multi):
                    value = out.value
                elif out == POISON:
                    raise Poisoned()
                else:
                    value = self._tensor(out)
            else:
                value = self._ev(st.value, env, cur, scope)
            if len(names) > 1:
                if isinstance(value, dict):
                    value = tuple(value.values())
                elif isinstance(value, TensorValue):
                    value = self._unbind(value, len(names), st, scope)
                bound = bind_targets(names, value, st.span)
            else:
                bound = {names[0]: value}
        except (EvalError, Poisoned):
            for n in names:
                self._bind(env, n, _POISONED, st)  # later uses are skipped, not "unknown name" errors
            raise
        for n, v in bound.items():
            self._bind(env, n, v, st)
            if isinstance(v, TensorValue):
                self._named.append((n, v.node, st.span))
                node = self.nodes.get(v.node)
                if node is not None and node.tensor_name is None and v.node != INPUT_ID:
                    node.tensor_name = n

    def _unbind(self, t: TensorValue, n: int, st: ast.Let, scope: Scope) -> tuple:
        """`let q, k, v = qkv`: a tensor unpacks along its first dim (after the batch), as in Python."""
        if not t.shape or t.shape[0] != n:
            raise EvalError(Diagnostic(f"cannot unpack {describe(t)} into {n} names ({', '.join(st.names)})",
                                       st.span, f"its first dim is {t.shape[0] if t.shape else 'missing'}",
                                       help="a tensor unpacks along its first dim (after the batch)"))
        dim = 1 if t.batched else 0
        op = get_op("select")
        return tuple(self._tensor(self.add_node(op, {"dim": dim, "index": i}, (t.node,), scope, None, st.span,
                                                functional=True)) for i in range(n))

    def _bind(self, env: Env, name: str, value, st: ast.Let) -> None:
        if not st.assign:
            env.values[name] = value
        elif not env.assign(name, value):
            raise EvalError(Diagnostic(f"`{name}` is not defined, so it cannot be assigned", st.span,
                                       "no `let` binds this name", help=f"declare it first: `let {name} = ...`"))

    def _return(self, st: ast.Return, scope, env, cur) -> None:
        frame = self._frames[-1]
        if frame.nested or scope is not frame.scope:
            raise EvalError(Diagnostic("`return` must be directly in a block or model body", st.span,
                                       "inside a nested body",
                                       help="`seq`, `residual`, `concat` and `gate` bodies cannot return; "
                                            "bind the tensor with `let` and return it from the block"))
        value = self._ev(st.value, env, cur, scope)
        self._check_result(value, st.value.span)
        frame.result, frame.returned, frame.return_span = value, True, st.span
        raise _Return()

    def _check_result(self, value, span) -> None:
        if isinstance(value, TensorValue):
            return
        items = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else None
        if items is None or not items or not all(isinstance(v, TensorValue) for v in items):
            raise EvalError(Diagnostic(f"`return` gives a tensor, a list or a dict of tensors, got {describe(value)}",
                                       span, "not tensors"))
        if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
            raise EvalError(Diagnostic("the keys of a returned dict must be strings", span, "not a string key"))

    def _result_ids(self, value):
        """A returned value as node ids (the IR's output structure)."""
        if value is None:
            return None
        if isinstance(value, TensorValue):
            return value.node
        if isinstance(value, dict):
            return {k: v.node for k, v in value.items()}
        return tuple(v.node for v in value)

    def _for(self, st: ast.For, scope, env, cur, fan):
        items = self._ev(st.iterable, env, cur if fan is None else fan.start, scope)
        if isinstance(items, ShapeValue):
            items = items.shape
        if not isinstance(items, tuple):
            raise EvalError(Diagnostic(f"`for` needs a list to iterate over, got {describe(items)}",
                                       st.iterable.span))
        for item in items:
            self._budget.spend("steps", 1, st.span)
            body_env = env.child(bind_targets(st.targets, item, st.span))
            cur = self.run_body(st.body, scope, body_env, cur, fan)
        return cur

    def run_node(self, node, label: ast.Label | None, scope: Scope, env: Env, start: int):
        makes_tensor = isinstance(node, ast.Call) and getattr(get_op(node.func), "arity", 1) == 0
        if start == NO_FLOW and not isinstance(node, (ast.From, ast.Inline)) and not makes_tensor and \
                not (isinstance(node, (ast.Call, ast.Seq)) and node.inputs is not None):
            raise EvalError(Diagnostic("no tensor flows into this statement", node.span,
                                       "nothing to read here",
                                       help="this block's inputs are not one tensor: start with `from x`, "
                                            "or give the tensors: `op(...)(x)`"))
        if isinstance(node, ast.Call):
            return self._call(node, label, scope, env, start)
        if isinstance(node, ast.Inline):
            if label is not None:
                raise EvalError(Diagnostic("`inline` makes no module and cannot be named", label.span,
                                           "remove this label"))
            return self._inline(node, scope, env, start)
        self._nested(1)
        try:
            return self._structure(node, label, scope, env, start)
        finally:
            self._nested(-1)

    def _structure(self, node, label, scope, env, start):
        if isinstance(node, ast.Seq):
            if node.inputs is not None:
                start = self._seq_input(node, env, start, scope)
            child = self._child_scope(label, scope, env, start, "seq", None, node.span)
            out = self.run_body(node.body, child, env.child(), start)
            child.output = out
            return out
        if isinstance(node, ast.For):
            if label is None:
                return self._for(node, scope, env, start, None)
            child = self._child_scope(label, scope, env, start, "seq", None, node.span)
            out = self._for(node, child, env, start, None)
            child.output = out
            return out
        if isinstance(node, (ast.Residual, ast.Concat, ast.Gate)):  # inlined, or a sub-module when labelled
            target = scope
            if label is not None:
                target = self._child_scope(label, scope, env, start, "block", None, node.span)
            join = {ast.Residual: self._residual, ast.Concat: self._concat, ast.Gate: self._gate}[type(node)]
            out = join(node, target, env, start)
            if label is not None:
                target.output = out
            return out
        if isinstance(node, (ast.Pass, ast.From)):
            if label is not None:
                word = "pass" if isinstance(node, ast.Pass) else "from"
                raise EvalError(Diagnostic(f"`{word}` makes no module and cannot be named", label.span,
                                           "remove this label"))
            return start if isinstance(node, ast.Pass) else self._from(node, scope, env, start)
        raise AssertionError(node)  # pragma: no cover

    # ------------------------------------------------------------ naming
    def _place(self, label: ast.Label | None, scope: Scope, env: Env, start: int, span: Span,
               owned: str | None = None) -> tuple[Scope, str]:
        """Where a new child goes: its parent scope and its name there.

        Unnamed children are numbered by position, as ``nn.Sequential`` does. A dotted label
        (``"downs.{i}"``) puts the child in a *container* (``downs``), created on first use:
        a module that only holds children, whose data flow stays in ``scope``.
        ``owned``: the child is a tensor the module owns directly (``class_token``): unnamed, it
        takes no number (as in torch) but the op's name.
        """
        if label is None and owned is not None:
            if owned in self._children.get(scope.path, ()):
                raise EvalError(Diagnostic(
                    f"this `{owned}` tensor would be named `{owned}`, a name already taken here", span,
                    "needs a name", help=f"label it: `{owned}_2: {owned}(...)`",
                    notes=self._given_at(scope, owned)))
            return scope, owned
        if label is None:
            text = str(self._numbered.get(scope.path, 0))
            if text in self._children.get(scope.path, ()):
                raise EvalError(Diagnostic(
                    f"this unnamed module would be numbered `{text}`, a name already given by a label",
                    span, f"unnamed module number {text}",
                    help="name this module too, or give the labelled one a name that is not a number",
                    notes=self._given_at(scope, text)))
            return scope, text
        text = label.text
        if label.is_template:
            text = self._interpolate(label, env, start)
        parts = text.split(".")
        if not all(_MODULE_NAME_RE.match(p) for p in parts):
            raise EvalError(Diagnostic(f"invalid module name \"{text}\"", label.span,
                                       "names are letters, digits, `_` and `-`",
                                       help="a name cannot be empty or contain spaces or punctuation; "
                                            "`.` separates the names of nested containers, as in \"downs.0\""))
        reserved = next((p for p in parts if p in RESERVED_NAMES or keyword.iskeyword(p) or p == "self"), None)
        if reserved is not None:
            why = "it is a Python keyword (the generated forward could not call it)" if keyword.iskeyword(reserved) \
                else "`self.self` breaks code generated by torch.fx" if reserved == "self" \
                else f"torch modules already have an attribute `{reserved}`"
            raise EvalError(Diagnostic(f"a module cannot be named `{reserved}`: {why}", label.span, "reserved name",
                                       help="choose another label (PyTorch's add_module refuses such names too)"
                                       if not keyword.iskeyword(reserved) else "choose another label"))
        for part in parts[:-1]:
            scope = self._container(scope, part, label.span)
        text = parts[-1]
        if text in self._children.get(scope.path, ()):
            raise EvalError(Diagnostic(f"duplicate module name `{text}` in `{scope.path or scope.block}`",
                                       label.span, "used again here",
                                       notes=self._given_at(scope, text, "first used at {where}")))
        self._label_spans[(scope.path, text)] = label.span
        return scope, text

    def _container(self, scope: Scope, name: str, span: Span) -> Scope:
        """The container child ``name`` of ``scope``, created if it does not exist yet."""
        taken = self._children.get(scope.path, {}).get(name)
        if taken is not None:
            kind, ref = taken
            if kind == "scope" and self.scopes[ref].kind == "container":
                return self.scopes[ref]
            what = f"a `{self.nodes[ref].op}` module" if kind == "node" else "a module with a data flow of its own"
            raise EvalError(Diagnostic(f"`{name}` in `{scope.path or scope.block}` is {what}, not a container",
                                       span, f"`{name}` cannot hold other modules",
                                       help=f"only names used as dotted prefixes (\"{name}.0\") are containers",
                                       notes=self._given_at(scope, name)))
        self._label_spans[(scope.path, name)] = span
        return self._new_scope(scope, name, "container", None, span, INPUT_ID)

    def _given_at(self, scope: Scope, name: str, note: str = "`{name}` was given at {where}") -> tuple[str, ...]:
        """A note saying where the child ``name`` of ``scope`` got its name."""
        first = self._label_spans.get((scope.path, name))
        if first is None:
            kind, ref = self._children[scope.path][name]
            first = self.nodes[ref].span if kind == "node" else self.scopes[ref].span
        return (note.format(name=name, where=first.location),) if first else ()

    def _add_child(self, scope: Scope, name: str, kind: str, ref) -> None:
        scope.children.append((name, kind, ref))
        self._children.setdefault(scope.path, {})[name] = (kind, ref)
        op = get_op(self.nodes[ref].op) if kind == "node" else None
        if op is None or not op.direct_param:  # what an unnamed child's number counts
            self._numbered[scope.path] = self._numbered.get(scope.path, 0) + 1

    def _new_scope(self, parent: Scope, name: str, kind: str, block: str | None, span: Span, start: int) -> Scope:
        """Create the child scope ``name`` of ``parent``, reading ``start``."""
        path = f"{parent.path}.{name}" if parent.path else name
        child = Scope(path, kind, block, span, start, start)
        self.scopes[path] = child
        self._add_child(parent, name, "scope", path)
        return child

    def _interpolate(self, label: ast.Label, env: Env, start: int) -> str:
        out, pos, text = [], 0, label.text
        for m in re.finditer(r"\{([^{}]*)\}", text):
            out.append(text[pos:m.start()])
            sub = label.span.sub(m.start(1) + 1, len(m.group(1)))
            try:
                expr = parse_expression(m.group(1), sub)
            except SpecError as e:  # keep collecting: report it like any other bad expression
                raise EvalError(e.diagnostics[0]) from None
            v = evaluate(expr, env, self._in(start))
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise EvalError(Diagnostic(f"a name template needs an integer or string, got {describe(v)}", sub))
            out.append(str(v))
            pos = m.end()
        out.append(text[pos:])
        return "".join(out)

    def _child_scope(self, label, scope, env, start, kind, block, span) -> Scope:
        parent, name = self._place(label, scope, env, start, span)
        return self._new_scope(parent, name, kind, block, span, start)

    # ------------------------------------------------------------ calls
    def _unknown_callable(self, call: ast.Call, env: Env, value, want_block=False):
        from .expr import _MISSING
        if value is _MISSING:
            candidates = [n for n in env.names() if isinstance(env.lookup(n), (BlockRef, OpRef))]
            what = "block" if want_block else "op or block"
            self.err(f"unknown {what} `{call.func}`", call.func_span,
                     f"not {'a' if want_block else 'an'} {what} in scope",
                     help=did_you_mean(call.func, candidates))
        elif isinstance(value, Builtin):
            self.err(f"`{call.func}` is a built-in function, not an op or block", call.func_span,
                     "cannot be a layer")
        elif isinstance(value, OpRef) and want_block:
            self.err(f"`{call.func}` is an op, not a block", call.func_span, "a model alias must call a block",
                     help=f"list the layers in a body instead: `model ... {{ {call.func}(...) }}`")
        else:
            self.err(f"`{call.func}` is {describe(value)}, not {'a block' if want_block else 'an op or block'}",
                     call.func_span, "cannot be called here")

    def _call(self, call: ast.Call, label, scope: Scope, env: Env, start: int, evaluated=None):
        """An op or block call: a module reading ``start`` (or the tensors in ``call.inputs``).

        Returns the output node id, or a :class:`_Multi` for a block returning several tensors.
        ``evaluated``: the call's (positional, keyword) arguments, when already evaluated.
        """
        target = env.lookup(call.func)
        if not isinstance(target, (OpRef, BlockRef)) and get_op(call.func) is not None:
            target = OpRef(call.func)  # a data parameter named like an op does not hide the op
        if not isinstance(target, (OpRef, BlockRef)):
            self._unknown_callable(call, env, target)
            return POISON
        inputs, start = self._applied_to(call, target, env, start, scope)
        op = get_op(target.name) if isinstance(target, OpRef) else None
        parent, name = self._place(label, scope, env, start, call.span,
                                   owned=op.name if op is not None and op.direct_param else None)
        in_shape = self._in(start)
        if evaluated is not None:
            positional, keyword = evaluated
        else:
            positional, keyword = self._eval_args(call.args, env, in_shape, _Ctx(self, scope, start))
        if positional is None:
            self._reserve(parent, name, call.span)
            return POISON
        if isinstance(target, BlockRef):
            return self._block(target, call, name, positional, keyword, parent, start, in_shape, inputs)
        return self._op(get_op(target.name), call, name, positional, keyword, parent, start)

    def _applied_to(self, call: ast.Call, target, env, start, scope) -> tuple[list | None, int]:
        """The tensors ``call(...)(inputs)`` gives (None without them), and the tensor the call reads:
        its one input, or ``start`` (a block with declared inputs binds them instead)."""
        if call.inputs is None:
            return None, start
        inputs = self._call_inputs(call, target, env, start, scope)
        if isinstance(target, OpRef) or target.decl.inputs is None:
            start = inputs[0].node
        return inputs, start

    def _seq_input(self, node: ast.Seq, env, start, scope) -> int:
        """`seq { ... }(x)`: the one tensor the sequence reads."""
        if len(node.inputs) != 1 or node.inputs[0].name is not None:
            raise EvalError(Diagnostic("`seq { ... }(x)` reads one tensor", node.span, "give one tensor"))
        v = self._ev(node.inputs[0].value, env, start, scope)
        if not isinstance(v, TensorValue):
            raise EvalError(Diagnostic(f"`seq` reads a tensor, got {describe(v)}", node.inputs[0].span,
                                       f"this is {type_name(v)}"))
        return v.node

    def _call_inputs(self, call: ast.Call, target, env, start, scope) -> list | None:
        """Evaluate ``call(...)(inputs)``: tensors (or, for a block's declared inputs, lists of them)."""
        values = []
        for a in call.inputs:
            if a.name is not None:
                raise EvalError(Diagnostic("the tensors a call is applied to are given by position", a.span,
                                           "no names here"))
            values.append((self._ev(a.value, env, start, scope), a.value.span))
        declared = target.decl.inputs if isinstance(target, BlockRef) else None
        want = len(declared) if declared is not None else 1
        what = f"block `{target.decl.name}`" if isinstance(target, BlockRef) else f"`{target.name}`"
        if isinstance(target, OpRef) and get_op(target.name).arity != 1:
            raise EvalError(Diagnostic(f"{what} joins several tensors: call it as a function, "
                                       f"`{target.name}(a, b, ...)`", call.span, "not a module"))
        if len(values) != want:
            if declared is None:
                message = f"{what} reads one tensor, got {len(values)}"
            else:
                names = ", ".join(p.name for p in declared)
                message = f"{what} takes {want} tensor{'s' if want != 1 else ''} ({names}), got {len(values)}"
            raise EvalError(Diagnostic(message, call.span, f"{len(values)} given"))
        for (v, sp), k in zip(values, range(want)):
            ok = isinstance(v, TensorValue) or (declared is not None and _all_tensors(v))
            if not ok:
                expected = "a tensor" if declared is None else "a tensor, or a list of tensors"
                raise EvalError(Diagnostic(f"input {k + 1} of {what} must be {expected}, got {describe(v)}", sp,
                                           f"this is {type_name(v)}"))
        return [v for v, _ in values]

    def _reserve(self, scope, name, span):
        """Keep a failed statement's name taken, so numbering and duplicate checks stay right."""
        nid = self._new_id()
        self.nodes[nid] = Node(nid, "error", {}, (), None, scope.path, name, span)
        self._add_child(scope, name, "node", nid)

    def _block(self, ref: BlockRef, call, name, positional, keyword, scope, start, in_shape, inputs=None,
               inline=False):
        """Elaborate a block call: a child scope ``name`` (or, ``inline``, ``scope`` itself)."""
        d = ref.decl
        params = self._bind_params(d.params, positional, keyword, ref.globals, call.span, f"block `{d.name}`",
                                   in_shape=in_shape)
        bound_inputs = {}
        if d.inputs is not None:
            if inputs is None:  # called as a statement: the current tensor is its one input
                if len(d.inputs) != 1:
                    self.err(f"block `{d.name}` takes {len(d.inputs)} tensors "
                             f"({', '.join(p.name for p in d.inputs)}): give them as `{d.name}(...)(a, b)`",
                             call.span, "inputs not given")
                    params = None
                else:
                    inputs = [self._in(start)]
            if inputs is not None and params is not None:
                bound_inputs = {p.name: v for p, v in zip(d.inputs, inputs)}
                first = inputs[0]
                start = first.node if isinstance(first, TensorValue) else NO_FLOW
                if any(v == "poisoned" for v in inputs):
                    params = None
        child = scope if inline else self._new_scope(scope, name, "block", d.name, call.span,
                                                     start if start != NO_FLOW else INPUT_ID)
        if params is None:
            return POISON
        self._budget.spend("calls", 1, call.span)
        depth = self._budget.limits.block_depth
        if len(self._calls) >= depth:
            chain = [n for n, _ in self._calls[-6:]] + [d.name]
            self.err(f"blocks nested more than {depth} deep: `{d.name}` is called at depth "
                     f"{len(self._calls) + 1}", call.span, "too deep",
                     help="a block that calls itself needs a condition that ends the recursion; for a deliberately "
                          f"deeper nesting raise the `block_depth` budget (`--limit block_depth={depth * 10}`)",
                     notes=(f"innermost calls: {' -> '.join(chain)}",
                            f"the outermost of them is at {self._calls[0][1].location}"))
            raise _TooDeep()
        self._calls.append((d.name, call.span))
        frame = _Frame(child)
        self._frames.append(frame)
        try:
            out = self.run_body(d.body, child, Env({**params, **bound_inputs}, ref.globals), start)
        except _Return:
            out = POISON
        finally:
            self._calls.pop()
            self._frames.pop()
        if frame.returned:
            value = frame.result
            if isinstance(value, TensorValue):
                out = value.node
            else:
                if not inline:
                    child.output = next(v.node for v in (value.values() if isinstance(value, dict) else value))
                return _Multi(value)
        elif out == NO_FLOW:
            self.err(f"block `{d.name}` computes no output", d.span, "no `return` and no current tensor",
                     help="end the block with `return x`")
            out = POISON
        if not inline:
            child.output = out
        return out

    def _inline(self, node: ast.Inline, scope: Scope, env: Env, start: int):
        """`inline Block(args)`: the block's children and init rules go to ``scope`` itself."""
        call = node.call
        target = env.lookup(call.func)
        if not isinstance(target, BlockRef):
            self._unknown_callable(call, env, target, want_block=True)
            return POISON
        inputs, start = self._applied_to(call, target, env, start, scope)
        in_shape = self._in(start)
        positional, keyword = self._eval_args(call.args, env, in_shape, _Ctx(self, scope, start))
        if positional is None:
            return POISON
        return self._block(target, call, None, positional, keyword, scope, start, in_shape, inputs, inline=True)

    def _op(self, op: Op, call, name, positional, keyword, scope, start) -> int:
        if op.arity == 0:  # makes a tensor (`parameter`, `buffer`): reads nothing
            resolved = self._resolve(op, call, positional, keyword)
            if resolved is None:
                self._reserve(scope, name, call.span)
                return POISON
            return self.add_node(op, resolved[0], (), scope, name, call.span, resolved[1])
        if op.functional and op.arity == 1:  # a function of one tensor as a statement: no module, no name
            if call is not None and name is not None and not name.isdigit():
                self.err(f"`{op.name}` is a function and makes no module, so it cannot be named", call.span,
                         "remove the label")
                return POISON
            resolved = self._resolve(op, call, positional, keyword)
            if resolved is None:
                return POISON
            return self.add_node(op, resolved[0], (start,), scope, None, call.span, resolved[1], functional=True)
        if op.functional or op.arity != 1:
            self.err(f"`{op.name}` joins several tensors and cannot be used as a layer", call.func_span,
                     help="use `residual { ... }` for sums and `concat { ... }` for concatenation, or call it "
                          f"as a function in an expression: `let y = {op.name}(a, b)`")
            return POISON
        attrs = self._resolve(op, call, positional, keyword)
        if attrs is None:
            self._reserve(scope, name, call.span)
            return POISON
        attrs, arg_spans = attrs
        return self.add_node(op, attrs, (start,), scope, name, call.span, arg_spans)

    def _resolve(self, op: Op, call, positional, keyword):
        """Bind (value, span) arguments to ``op``'s schema: (attrs, arg spans), or None after reporting."""
        for v, sp in list(positional) + list(keyword.values()):
            if contains_tensor(v):
                self.err(f"an argument of `{op.name}` is {describe(v)}: op arguments are numbers, lists and "
                         "strings", sp, "a tensor here",
                         help=f"the tensors `{op.name}` reads are given as `{op.name}(...)(x)` "
                              f"or, in an expression, as its leading arguments")
                return None
        attrs, problems = op.resolve_args([v for v, _ in positional], {k: v for k, (v, _) in keyword.items()})
        arg_spans = {a.name: s for a, (_, s) in zip(op.args, positional)}
        arg_values = {a.name: v for a, (v, _) in zip(op.args, positional)}
        arg_spans.update({k: s for k, (_, s) in keyword.items() if k not in arg_spans})
        arg_values.update({k: v for k, (v, _) in keyword.items() if k not in arg_values})
        signature = f"arguments: {', '.join(a.name for a in op.args)}" if op.args else "it takes no arguments"
        for arg, problem in problems:
            if problem == "unknown":
                self.err(f"`{op.name}` has no argument `{arg}`", keyword[arg][1], "unknown argument",
                         help=did_you_mean(arg, [a.name for a in op.args]) or signature)
            elif arg is None:  # too many positional arguments
                self.err(problem, positional[len(op.args)][1], "unexpected argument", help=signature)
            elif arg not in arg_spans:  # a required argument is missing
                self.err(problem, call.span, f"`{arg}` not given", help=signature)
            elif arg in keyword and problem.endswith("given twice"):
                self.err(problem, keyword[arg][1], "already given by position")
            else:
                self.err(problem, arg_spans[arg], f"this is {type_name(arg_values[arg])}")
        if problems:
            return None
        return attrs, arg_spans

    def add_node(self, op: Op, attrs, inputs, scope: Scope, name, span, arg_spans=None, error_hint=None,
                 functional=None) -> int:
        """Add a node applying ``op`` to the nodes ``inputs``: checks its shapes (reporting errors)
        and computes its costs. ``functional``: the node is a function call in ``forward`` (no module);
        by default, when the op is a join."""
        functional = op.functional if functional is None else functional
        self._budget.spend("nodes", 1, span)
        nid = self._new_id()
        nodes = [self.nodes[i] if i != POISON else None for i in inputs]
        shapes = [n.shape if n is not None else None for n in nodes]
        shape = layout = dtype = None
        batched, fold, repeat = True, 1, 1
        if all(s is not None for s in shapes):
            try:
                layouts = [n.layout for n in nodes]
                dtype = op.check_inputs(attrs, nodes)
                folds = {n.fold for n in nodes if n.batched}
                if len(folds) > 1:
                    raise ShapeError(f"`{op.name}` combines tensors whose batch holds different numbers of items "
                                     f"({' and '.join(str(f) for f in sorted(folds))} per sample: see `merge_batch`)",
                                     "batches differ", help="`split_batch(x, n)` gives each sample its items back")
                fold = folds.pop() if folds else 1
                if op.full_shapes:
                    full = hook_shapes(op, nodes)
                    out = op.infer(attrs, full)
                    if any(is_batch(d) for d in out[1:]):
                        raise ShapeError(f"`{op.name}` would move the batch dimension", "the batch must stay first")
                    batched = bool(out) and is_batch(out[0])
                    shape = tuple(out[1:]) if batched else tuple(out)
                    op.check_layout(attrs, full, layouts)
                    layout = op.layout(attrs, full, layouts, out)
                    hook_ins, hook_out = full, out
                    fold = op.batch_fold(attrs, full, fold) if batched else 1
                else:
                    per, lead = shapes, None
                    if any(not n.batched for n in nodes):
                        per, lead = self._unbatched_layer_input(op, nodes)
                        layouts = [None] * len(nodes)
                    op.check_layout(attrs, per, layouts)
                    out = op.infer(attrs, per)
                    layout = op.layout(attrs, per, layouts, out) if lead is None else None
                    shape = tuple(out) if lead is None else (lead,) + tuple(out)
                    batched, repeat = lead is None, lead or 1
                    hook_ins, hook_out = per, out
            except ShapeError as e:
                shape = None
                where = (arg_spans or {}).get(e.arg) or span
                if error_hint is not None:
                    error_hint(e, shapes)
                else:
                    self.err(e.message, where, e.label, e.help, (e.note,) if e.note else ())
        if shape is not None and not self._check_size(shape, span):
            shape = None
        node = Node(nid, op.name, attrs, tuple(inputs), shape, scope.path, name if not functional else None, span,
                    layout=layout, batched=batched, dtype=dtype, fold=fold if batched else 1)
        if shape is not None:
            node.params = op.params(attrs, hook_ins)
            node.buffers = op.buffers(attrs, hook_ins)
            node.macs = op.macs(attrs, hook_ins, hook_out) * repeat * node.fold
            if node.params > MAX_ELEMENTS or node.buffers > MAX_ELEMENTS:
                self.err(f"`{op.name}` would hold {max(node.params, node.buffers):.3g} parameters (at most 2**40 "
                         "in one tensor)", span, "too large", help="a size here is far beyond any real model")
                node.shape = shape = None
        self.nodes[nid] = node
        if functional:
            scope.functional.append(nid)
        else:
            self._add_child(scope, name, "node", nid)
        return nid if shape is not None else POISON

    def _check_size(self, shape, span) -> bool:
        """Report a tensor too large for torch (see :func:`_fits`); True if it fits."""
        if _fits(shape):
            return True
        self.err(f"a tensor of shape {fmt_shape(shape)} is too large ({math.prod(shape):.3g} elements; at most "
                 f"2**40 a sample, each dim below 2**31)", span, "too large",
                 help="a dimension or count here is far beyond any real model")
        return False

    @staticmethod
    def _unbatched_layer_input(op: Op, nodes) -> tuple[list, int]:
        """A layer applied to parameters or buffers (no batch dim) treats their first dim as the batch,
        as a torch module does: (the per-item shapes, that first dim)."""
        if not all(not n.batched for n in nodes):
            raise ShapeError(f"`{op.name}` mixes tensors with and without the batch dim", "no batch dim",
                             help="tensor algebra (`+`, `*`, `@`) broadcasts a parameter over the batch")
        firsts = {n.shape[0] if n.shape else None for n in nodes}
        if None in firsts or len(firsts) > 1:
            raise ShapeError(f"`{op.name}` needs a batched tensor; on a parameter or buffer its first dim is the "
                             "batch, and this one has none", "no batch dim")
        return hook_shapes(op, nodes), firsts.pop()

    def _new_id(self) -> int:
        nid = self._next
        self._next += 1
        return nid

    # ------------------------------------------------------------ tensor expressions
    def apply_in_expression(self, e: ast.Call, f, env: Env, in_value, scope: Scope):
        """An op or block call inside an expression: an op called as a function (``softmax(x, 1)``,
        no module), or a module applied to the current tensor or to ``e.inputs`` (an unnamed child)."""
        start = in_value.node if isinstance(in_value, TensorValue) else \
            POISON if in_value == "poisoned" else NO_FLOW
        if isinstance(f, Builtin):  # output(path)
            return self.output_of(e, env, start, scope)
        ctx = _Ctx(self, scope, start)
        positional, keyword = self._eval_args(e.args, env, in_value, ctx)
        if positional is None:
            raise Poisoned()
        if isinstance(f, OpRef) and e.inputs is None and positional and _all_tensors(positional[0][0]):
            return self.call_function(get_op(f.name), e, positional, keyword, scope)
        if start == NO_FLOW and e.inputs is None:
            raise EvalError(Diagnostic(f"no tensor flows into `{e.func}` here", e.span, "nothing to read",
                                       help=f"give its input: `{e.func}(...)(x)`"))
        out = self._call(e, None, scope, env, start, evaluated=(positional, keyword))
        if isinstance(out, _Multi):
            return out.value
        return self._tensor(out)

    def call_function(self, op: Op, e: ast.Call, positional, keyword, scope: Scope) -> TensorValue:
        """``op(x, ..., args)``: the op as a function call in ``forward`` over its leading tensors."""
        if not op.callable_as_function:
            why = "it has parameters, so it is a module" if (op.param_names or op.direct_param) else \
                "it has no function form"
            raise EvalError(Diagnostic(f"`{op.name}` cannot be called as a function: {why}", e.func_span,
                                       "not a function", help=f"apply it as a layer: `{op.name}(...)(x)`"))
        first = positional[0][0]
        if isinstance(first, tuple):  # a list of tensors: `cat([a, b], 1)`
            tensors, rest = list(first), positional[1:]
        else:
            k = 0
            while k < len(positional) and isinstance(positional[k][0], TensorValue):
                k += 1
            tensors, rest = [v for v, _ in positional[:k]], positional[k:]
        arity = op.arity
        if arity is not None and len(tensors) != arity:
            raise EvalError(Diagnostic(f"`{op.name}` takes {arity} tensor{'s' if arity != 1 else ''}, "
                                       f"got {len(tensors)}", e.span, f"{len(tensors)} tensors"))
        if arity is None and len(tensors) < op.min_inputs:
            raise EvalError(Diagnostic(f"`{op.name}` needs at least {op.min_inputs} tensors, got {len(tensors)}",
                                       e.span, f"{len(tensors)} given"))
        resolved = self._resolve(op, e, rest, keyword)
        if resolved is None:
            raise Poisoned()
        attrs, arg_spans = resolved
        out = self.add_node(op, attrs, tuple(t.node for t in tensors), scope, None, e.span, arg_spans,
                            functional=True)
        return self._tensor(out)

    def arithmetic(self, op: str, a, b, e, scope: Scope) -> TensorValue:
        """``a + b``, ``a * 0.5``, ``1 - x``, ``q @ k``...: element-wise ops (with broadcasting) and matmul."""
        name = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul"}.get(op)
        if name is None:
            raise EvalError(Diagnostic(f"`{op}` is not defined for tensors", e.span, "not a tensor operator",
                                       help="tensors take `+ - * / @` and unary `-`"))
        for v, sp in ((a, e.left.span), (b, e.right.span)):
            if not isinstance(v, TensorValue) and (isinstance(v, bool) or not isinstance(v, (int, float))
                                                   or name == "matmul"):
                raise EvalError(Diagnostic(f"cannot apply `{op}` to a tensor and {describe(v)}", sp,
                                           f"this is {type_name(v)}",
                                           help="the other operand must be a tensor" +
                                           ("" if name == "matmul" else " or a number")))
        tensors = [v for v in (a, b) if isinstance(v, TensorValue)]
        attrs = {}
        if len(tensors) == 1:
            scalar = b if isinstance(a, TensorValue) else a
            attrs = {"scalar": float(scalar) if name in ("div",) else scalar,
                     "reverse": not isinstance(a, TensorValue)}
        out = self.add_node(get_op(name), attrs, tuple(t.node for t in tensors), scope, None, e.span,
                            functional=True)
        return self._tensor(out)

    def negate(self, v: TensorValue, e, scope: Scope) -> TensorValue:
        return self._tensor(self.add_node(get_op("neg"), {}, (v.node,), scope, None, e.span, functional=True))

    def tensor_builtin(self, name: str, args, kwargs, e, scope: Scope):
        """A built-in given tensors: ``sum(tensors)`` is their element-wise sum; otherwise the op of the same
        name as a function (``sum(x, dims)``, ``exp(t)``, ``log(t)``)."""
        first = args[0]
        if name == "sum" and isinstance(first, tuple):
            if len(args) > 1 or kwargs or not first or not all(isinstance(t, TensorValue) for t in first):
                raise EvalError(Diagnostic("`sum` of a list takes one list of tensors (or of numbers)", e.span))
            if len(first) == 1:
                return first[0]
            return self._tensor(self.add_node(get_op("add"), {}, tuple(t.node for t in first), scope, None,
                                              e.span, functional=True))
        positional = [(v, a.value.span) for v, a in zip(args, [a for a in e.args if a.name is None])]
        keyword = {a.name: (kwargs[a.name], a.span) for a in e.args if a.name is not None}
        return self.call_function(get_op(name), e, positional, keyword, scope)

    def output_of(self, e: ast.Call, env: Env, start, scope: Scope) -> TensorValue:
        """``output("layer2.0")``: the output of an already-built module under the current block."""
        if len(e.args) != 1 or e.args[0].name is not None:
            raise EvalError(Diagnostic("`output` takes one module path, e.g. output(\"layer1\")", e.span))
        path = self._ev(e.args[0].value, env, start, scope)
        if not isinstance(path, str):
            raise EvalError(Diagnostic(f"`output` takes a module path string, got {describe(path)}",
                                       e.args[0].span))
        base = self._frames[-1].scope.path if self._frames else ""
        full = f"{base}.{path}" if base and path else path or base
        if full in self.scopes:
            sc = self.scopes[full]
            if sc.kind == "container":
                raise EvalError(Diagnostic(f"`{path}` only holds modules; it computes no output", e.args[0].span,
                                           "a container"))
            if any(f.scope is sc for f in self._frames) or sc is scope:
                raise EvalError(Diagnostic(f"module `{path}` is still being built here", e.args[0].span,
                                           "not finished", help="`output` reads a module after its statement"))
            return self._tensor(sc.output)
        parent, _, leaf = full.rpartition(".")
        found = self._children.get(parent, {}).get(leaf)
        if found is not None and found[0] == "node":
            return self._tensor(found[1])
        prefix = f"{base}." if base else ""
        known = [p[len(prefix):] for p in list(self.scopes) if p.startswith(prefix) and p != base] + \
            [n.path[len(prefix):] for n in self.nodes.values() if n.name is not None and n.path and
             n.path.startswith(prefix)]
        raise EvalError(Diagnostic(f"no module `{path}` here", e.args[0].span, "not a module built so far",
                                   help=did_you_mean(path, known) or
                                   "paths are relative to the block, as state_dict keys are: \"layer1\", "
                                   "\"features.3\"", ))

    def _check_named_tensors(self, outputs) -> None:
        """A tensor named with `let` that nothing reads is an error (dead code, or a missing `from`).
        Checked only when nothing else failed (a failed statement leaves its inputs unread)."""
        if not self._named or self.diag.diagnostics:
            return
        used = {i for n in self.nodes.values() for i in n.inputs}
        used |= set(flatten_outputs(outputs)) if outputs is not None else set()
        seen = set()
        for name, nid, span in self._named:
            if nid in used or nid in (POISON, NO_FLOW) or (name, span) in seen:
                continue
            seen.add((name, span))
            if nid in self.nodes and self.nodes[nid].shape is not None:
                self.err(f"tensor `{name}` is never used", span, "computed here, read nowhere",
                         help="use it, return it, or remove the statement")

    # ------------------------------------------------------------ data flow
    def _shortcut_used(self, node: ast.Residual, env: Env, start: int, scope: Scope) -> bool | None:
        """Whether a `residual`'s shortcut is built (`shortcut if c`); None when the condition failed
        (reported) or reads a tensor that failed earlier."""
        if node.shortcut_cond is None:
            return True
        try:
            return truth(self._ev(node.shortcut_cond, env, start, scope), node.shortcut_cond.span)
        except EvalError as e:
            self.error(e.diagnostic)
        except Poisoned:
            pass
        return None

    def _residual(self, node: ast.Residual, scope: Scope, env: Env, start: int) -> int:
        if node.cond is not None:  # `residual if c { body }`: without the sum (and shortcut) when c is false
            use = truth(self._ev(node.cond, env, start, scope), node.cond.span)
            if not use:
                return self.run_body(node.body, scope, env.child(), start)
        body_out = self.run_body(node.body, scope, env.child(), start)
        if start == POISON:  # an earlier error: both bodies are still checked for errors of their own
            # (when the condition reads the failed tensor, the shortcut body is checked anyway)
            if node.shortcut is not None and self._shortcut_used(node, env, start, scope) is not False:
                self.run_body(node.shortcut, scope, env.child(), start)
            return POISON
        if body_out == start and node.shortcut is None:
            self.err("`residual` body is empty", node.span, "nothing to add to the shortcut",
                     help="`residual { pass } shortcut { ... }` is x + shortcut(x)")
            return POISON
        short_out = start
        if node.shortcut is not None:
            use = self._shortcut_used(node, env, start, scope)
            if use is None:
                return POISON
            if use:
                short_out = self.run_body(node.shortcut, scope, env.child(), start)
        if POISON in (body_out, short_out):
            return POISON

        def hint(e, shapes):
            b, s = shapes
            projection = short_out != start
            what = "projection shortcut" if projection else "shortcut (identity)"
            if len(b) == 3 and len(s) == 3 and b[0] != s[0] and b[1:] == s[1:]:
                label = f"the branch ends with {b[0]} channels, the shortcut with {s[0]}"
            else:
                label = f"the branch ends with {fmt_shape(b)}, the shortcut with {fmt_shape(s)}"
            help_, notes = None, ()
            if not projection and len(b) == 3 and len(s) == 3:
                help_ = _shortcut_help(b, s)
            elif projection:
                help_ = f"the shortcut must produce {fmt_shape(b)}, the shape of the branch"
                if node.shortcut_span is not None:
                    notes = (f"the shortcut is at {node.shortcut_span.location}",)
            self.err(f"residual branch output {fmt_shape(b)} does not match {what} {fmt_shape(s)}",
                     node.span.sub(0, len("residual")), label, help_, notes)

        return self.add_node(get_op("add"), {}, (body_out, short_out), scope, None, node.span, error_hint=hint)

    def _concat(self, node: ast.Concat, scope: Scope, env: Env, start: int) -> int:
        op = get_op("concat")
        positional, keyword = self._eval_args(node.args, env, self._in(start), _Ctx(self, scope, start))
        if positional is None:
            return POISON
        attrs, problems = op.resolve_args([v for v, _ in positional], {k: v for k, (v, _) in keyword.items()})
        for arg, problem in problems:
            self.err(f"`concat` has no argument `{arg}`" if problem == "unknown" else problem, node.span)
        fan = _Fan(start)
        self.run_body(node.body, scope, env.child(), start, fan)
        if not fan.outputs:
            self.err("`concat` has no branches", node.span, "empty")
            return POISON
        if problems or POISON in fan.outputs:
            return POISON

        def hint(e, shapes):
            self.err(e.message, node.span.sub(0, len("concat")),
                     "branches: " + ", ".join(fmt_shape(s) for s in shapes))

        return self.add_node(op, attrs, tuple(fan.outputs), scope, None, node.span, error_hint=hint)

    def _gate(self, node: ast.Gate, scope: Scope, env: Env, start: int) -> int:
        weights = self.run_body(node.body, scope, env.child(), start)
        if start == POISON:
            return POISON
        if weights == start:
            self.err("`gate` body is empty", node.span, "nothing computes the weights")
            return POISON
        if weights == POISON:
            return POISON

        def hint(e, shapes):
            w, x = shapes
            self.err(f"gate weights of shape {fmt_shape(w)} cannot scale the input {fmt_shape(x)}",
                     node.span.sub(0, len("gate")), f"the body ends with {fmt_shape(w)}",
                     help="the body must end with the input's shape or a broadcastable one, "
                          f"e.g. {x[0]}x1x1 for per-channel weights" if len(x) == 3 else None)

        return self.add_node(get_op("mul"), {}, (weights, start), scope, None, node.span, error_hint=hint)

    def _tap_name(self, label: ast.Label, env: Env, start: int) -> str:
        text = self._interpolate(label, env, start) if label.is_template else label.text
        if not _NAME_RE.match(text):
            raise EvalError(Diagnostic(f"invalid tap name \"{text}\"", label.span,
                                       "names are letters, digits and `_`"))
        return text

    def _register(self, st: ast.Register, scope: Scope, env: Env, cur: int, body) -> None:
        """`register a, b`: remember where these children go in the module's registration order."""
        names: list[tuple[str, Span]] = []
        for label in st.labels:
            text = self._interpolate(label, env, cur) if label.is_template else label.text
            if not _MODULE_NAME_RE.match(text):
                raise EvalError(Diagnostic(f"`register` takes the names of this module's children, not \"{text}\"",
                                           label.span, "not a child's name",
                                           help="a container's children are ordered inside it: write the "
                                                "container's name (\"downs\", not \"downs.0\")"
                                           if "." in text else None))
            if any(text == n for n, _ in names) or any(text == n for r in self._registers if r[0] is scope
                                                        for n, _ in r[2]):
                raise EvalError(Diagnostic(f"`{text}` is registered twice in `{scope.path or scope.block}`",
                                           label.span, "already in a `register` list"))
            names.append((text, label.span))
        self._registers.append((scope, len(scope.children), names, _labels_written(body)))

    def _apply_registers(self) -> None:
        """Put the children that `register` statements name at the statements' places, in their order: the
        registration order of the built module (its state_dict, its constructors' random draws, its init
        rules), not the order of `forward`, which follows the data flow."""
        keys: dict[int, dict[str, tuple]] = {}
        for k, (scope, made, names, written) in enumerate(self._registers):
            have = scope.child_names()
            for j, (name, span) in enumerate(names):
                if name in have:
                    keys.setdefault(id(scope), {})[name] = (made - 0.5, k, j)
                elif not any(fnmatch.fnmatchcase(name, w) for w in written):
                    self.err(f"`register` names `{name}`, which is not a child of `{scope.path or scope.block}`",
                             span, "no child of this name",
                             help=did_you_mean(name, have) or (f"its children: {', '.join(have[:8])}"
                                                                 f"{', ...' if len(have) > 8 else ''}"
                                                                 if have else "it has no children"))
        for scope, *_ in self._registers:
            order = keys.pop(id(scope), None)
            if order:
                scope.children = [c for _, c in sorted(
                    ((order.get(c[0], (i, -1, 0)), c) for i, c in enumerate(scope.children)), key=lambda t: t[0])]

    def _tap(self, st: ast.Tap, scope: Scope, env: Env, cur: int) -> None:
        name = self._tap_name(st.label, env, cur)
        self._taps.setdefault(scope.path, {})[name] = (cur, st.span)

    def _from(self, node: ast.From, scope: Scope, env: Env, start: int) -> int:
        """`from x`: a tap of this module (``node.label``), else any tensor expression (``node.expr``)."""
        if node.label is not None:
            name = self._tap_name(node.label, env, start)
            found = self._taps.get(scope.path, {}).get(name)
            if found is not None:
                return found[0]
        if node.expr is not None and not (isinstance(node.expr, ast.Name) and env.lookup(node.expr.id) is _MISSING):
            v = self._ev(node.expr, env, start if start != NO_FLOW else NO_FLOW, scope)
            if not isinstance(v, TensorValue):
                raise EvalError(Diagnostic(f"`from` continues from a tensor, got {describe(v)}", node.expr.span,
                                           f"this is {type_name(v)}"))
            return v.node
        name = node.label.text
        elsewhere = [(path, taps[name][1]) for path, taps in self._taps.items() if name in taps]
        notes = tuple(f"`{name}` is tapped inside `{path or '(model)'}` at {sp.location}, "
                      "which is another module" for path, sp in elsewhere[:1])
        tensors = [n for n in env.names() if isinstance(env.lookup(n), TensorValue)]
        raise EvalError(Diagnostic(f"no tap or tensor named `{name}` here", node.label.span,
                                   "not tapped or bound before this point",
                                   help=did_you_mean(name, list(self._taps.get(scope.path, {})) + tensors) or
                                   f"save a tensor first with `let {name} = in` (or `tap {name}`)",
                                   notes=notes))

    # ------------------------------------------------------------ init rules
    def _init_rule(self, st: ast.InitRule, scope: Scope, env: Env) -> None:
        if st.param is None and not st.by_path:
            self.err(f"`init {st.target} = ...` names no parameter", st.span, "which tensor?",
                     help=f"by op, name the parameter: `init {st.target}.weight = ...`; a tensor made by "
                          "`parameter` is named by its quoted path: `init \"table\" = ...`")
            return
        if not st.by_path:
            op = get_op(st.target)
            if op is None:
                self.err(f"unknown op `{st.target}` in init rule", st.span, "not an op",
                         help=did_you_mean(st.target, all_ops()))
                return
            if st.param not in op.param_names:
                self.err(f"`{st.target}` has no parameter `{st.param}` to initialize", st.span,
                         help=did_you_mean(st.param, op.param_names) or
                         (f"its parameters: {', '.join(op.param_names)}" if op.param_names else "it has no parameters"))
                return
        fn = INIT_FUNCS.get(st.call.func)
        if fn is None:
            self.err(f"unknown init function `{st.call.func}`", st.call.func_span, "not an init function",
                     help=did_you_mean(st.call.func, INIT_FUNCS) or f"available: {', '.join(INIT_FUNCS)}")
            return
        positional, keyword = self._eval_args(st.call.args, env, None)
        if positional is None:
            return
        args, problems = fn.resolve_args([v for v, _ in positional], {k: v for k, (v, _) in keyword.items()})
        for arg, problem in problems:
            self.err(f"`{fn.name}` has no argument `{arg}`" if problem == "unknown" else problem, st.call.span,
                     help=did_you_mean(arg, [a.name for a in fn.args]) if problem == "unknown" and arg else None)
        if not problems:
            self.rules.append(InitRule(scope.path, st.target, st.by_path, st.param, fn.name, args, st.span))

    def _check_init_rules(self) -> None:
        """A by-path rule must match some op module that has the parameter it sets.

        A rule inside a block is checked over all instances of the block together (one
        span, several scopes): it may name a module only some instances have.
        """
        if self.diag.diagnostics:  # a failed statement may be why a rule finds nothing: no follow-on errors
            return
        by_span: dict[Span, list[InitRule]] = {}
        for r in self.rules:
            if r.by_path:
                by_span.setdefault(r.span, []).append(r)
        if not by_span:
            return
        paths = [(n.path, n.op) for n in self.nodes.values()
                 if n.id != INPUT_ID and n.name is not None and n.op != "error"]

        def relative(r):  # (path relative to the rule's scope, op) of the modules under it
            prefix = r.scope + "." if r.scope else ""
            return [(p[len(prefix):], op) for p, op in paths if p.startswith(prefix)]

        tensors = [(n.path, n.op) for n in self.nodes.values()
                   if n.id != INPUT_ID and n.name is not None and get_op(n.op) is not None
                   and get_op(n.op).direct_param and not get_op(n.op).direct_buffer]
        for span, instances in by_span.items():
            r = instances[0]
            if r.param is None:  # a tensor made by `parameter` (or another op owning a tensor directly)
                if not any(fnmatch.fnmatchcase(p[len(i.scope) + 1 if i.scope else 0:], r.target)
                           for i in instances for p, _ in tensors if not i.scope or p.startswith(i.scope + ".")):
                    own = [p[len(r.scope) + 1 if r.scope else 0:] for p, _ in tensors
                           if not r.scope or p.startswith(r.scope + ".")]
                    self.err(f"init rule \"{r.target}\" matches no parameter tensor", span,
                             "no `parameter` has this path",
                             help=did_you_mean(r.target, own) or
                             "without `.param`, the path names a tensor made by `parameter` (or `class_token`, "
                             "`pos_embedding`, `layer_scale`); for a module's weight write `init \"fc\".weight`")
                continue
            ops: set[str] = set()
            for inst in instances:
                ops |= {op for rel, op in relative(inst) if fnmatch.fnmatchcase(rel, r.target)}
                if any(r.param in get_op(o).param_names for o in ops):
                    break
            if not ops:
                self.err(f"init rule \"{r.target}\" matches no module", span, "no op module has this path",
                         help=did_you_mean(r.target, [rel for rel, _ in relative(r)]) or
                         "paths are relative to the body that declares the rule and name op modules, "
                         "e.g. \"fc\" or \"layer1.*.conv1\"")
                continue
            have = {p for o in ops for p in get_op(o).param_names}
            if r.param not in have:
                self.err(f"no module matched by \"{r.target}\" has a parameter `{r.param}`", span,
                         f"matches {', '.join(sorted(f'`{o}`' for o in ops))}",
                         help=did_you_mean(r.param, have) or
                         (f"their parameters: {', '.join(sorted(have))}" if have else "they have no parameters"))


def render_value(v) -> str:
    return render(v)


def _fits(shape) -> bool:
    """A shape torch can describe and allocate: integer dims in [1, 2**31), at most 2**40 elements a sample."""
    return all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < MAX_DIM for d in shape) and \
        math.prod(shape) <= MAX_ELEMENTS


def _shortcut_help(b, s) -> str:
    """How an identity shortcut (a CxHxW map ``s``) can be made to match the branch's output ``b``."""
    (c, bh, bw), (sc, sh, sw) = b, s
    conv = f"conv2d({c}, 1); batchnorm2d()"
    if (bh, bw) == (sh, sw):
        return f"add a projection shortcut, e.g. `shortcut {{ {conv} }}`"
    proj = "" if c == sc else f"; {conv}"
    if bh > sh or bw > sw:  # no stride makes a map larger
        return (f"the branch grows the map from {sh}x{sw} to {bh}x{bw}, which no strided shortcut can: keep the "
                f"branch's size, or resize the shortcut, e.g. `shortcut {{ interpolate(size = [{bh}, {bw}]){proj} }}`")
    if (bh, bw) == (1, 1):  # a global pooling in the branch: a strided 1x1 conv would read one corner pixel
        return (f"the branch shrinks the {sh}x{sw} map to 1x1, so the shortcut needs a pooling too, e.g. "
                f"`shortcut {{ adaptive_avgpool2d(1){proj} }}`, or the branch should keep the size")
    th, tw = sh // bh, sw // bw
    if (sh - 1) // th + 1 == bh and (sw - 1) // tw + 1 == bw:  # what a strided 1x1 conv gives
        stride = f"stride = {th}" if th == tw else f"stride = [{th}, {tw}]"
        return f"add a projection shortcut, e.g. `shortcut {{ conv2d({c}, 1, {stride}); batchnorm2d() }}`"
    return (f"the branch shrinks the {sh}x{sw} map to {bh}x{bw}, which no stride gives: pool the shortcut to "
            f"that size, e.g. `shortcut {{ adaptive_avgpool2d([{bh}, {bw}]){proj} }}`")


def _bound_later(d: Diagnostic, rest) -> Diagnostic:
    """An unknown name that a later `let` of the same body binds: say so (values exist only after
    their `let`, which is also why the data flow can have no cycle)."""
    m = re.match(r"unknown name `([A-Za-z_][A-Za-z_0-9]*)`", d.message)
    if not m:
        return d
    name = m.group(1)

    def find(stmts):
        for st in stmts:
            if isinstance(st, ast.Let) and name in st.names and not st.assign:
                return st
            for body in _bodies(st):
                hit = find(body)
                if hit is not None:
                    return hit
        return None

    later = find(rest)
    if later is None:
        return d
    return dataclasses.replace(d, notes=tuple(d.notes) + (
        f"`{name}` is bound later, at {later.span.location}: a value exists only after its `let`",))


def _bodies(st):
    """The statement lists nested in a statement (if/for/seq bodies, ...)."""
    node = st.node if isinstance(st, (ast.Labelled, ast.Let)) and getattr(st, "node", None) is not None else st
    if isinstance(node, ast.If):
        return [b for _, b in node.branches] + ([node.otherwise] if node.otherwise else [])
    if isinstance(node, (ast.Seq, ast.For, ast.Concat, ast.Gate)):
        return [node.body]
    if isinstance(node, ast.Residual):
        return [node.body] + ([node.shortcut] if node.shortcut else [])
    return []


def _all_tensors(v) -> bool:
    """A tensor, or a non-empty list (or dict) of tensors."""
    if isinstance(v, TensorValue):
        return True
    items = v.values() if isinstance(v, dict) else v if isinstance(v, tuple) else None
    return bool(items) and all(isinstance(x, TensorValue) for x in items)


class _Ctx:
    """What the expression evaluator calls to build tensor expressions in ``scope`` (see ``evaluate``)."""

    def __init__(self, elab: Elaborator, scope: Scope, cur: int):
        self.elab, self.scope, self.cur = elab, scope, cur

    def call(self, e, f, env, in_value):
        return self.elab.apply_in_expression(e, f, env, in_value, self.scope)

    def arith(self, op, a, b, e):
        return self.elab.arithmetic(op, a, b, e, self.scope)

    def unary(self, op, v, e):
        if op == "+":
            return v
        return self.elab.negate(v, e, self.scope)

    def tensor_builtin(self, name, args, kwargs, e):
        return self.elab.tensor_builtin(name, args, kwargs, e, self.scope)


def _labels_written(stmts) -> set[str]:
    """The child names the statements can give in their module: plain labels, and templates as glob
    patterns (``"layer{i}"`` -> ``layer*``), through `if`, `for` and unlabelled `residual`, `concat`
    and `gate` bodies (which place their children in the module), not into sub-modules."""
    found: set[str] = set()

    def label(lab):
        if lab is not None:
            found.add(re.sub(r"\{[^}]*\}", "*", lab.text) if lab.is_template else lab.text)

    def walk(body):
        for st in body or ():
            if isinstance(st, ast.Labelled):
                label(st.label)
            elif isinstance(st, ast.Let) and getattr(st, "label", None) is not None:
                label(st.label)
            elif isinstance(st, ast.If):
                for _, b in st.branches:
                    walk(b)
                walk(st.otherwise)
            elif isinstance(st, ast.For):
                walk(st.body)
            elif isinstance(st, ast.Residual):
                walk(st.body)
                walk(st.shortcut)
            elif isinstance(st, (ast.Concat, ast.Gate)):
                walk(st.body)

    walk(stmts)
    return found
