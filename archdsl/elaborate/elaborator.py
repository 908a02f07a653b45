"""Elaboration: expand a model's blocks, loops, conditionals and data-flow constructs into
the IR, inferring every shape on the way (this is the shape checker).

Errors are collected, not raised one by one: after a failed statement the tensor flowing
on is marked *poisoned*, so later statements are still checked for problems of their own
(unknown names, bad arguments) without cascading shape errors.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from ..diagnostics import Collector, Diagnostic, Span, SpecError, did_you_mean
from ..ir import INPUT_ID, Graph, InitRule, Node, Scope
from ..ops.init import INIT_FUNCS
from ..ops.registry import Op, ShapeError, all_ops, fmt_shape, get_op
from ..syntax import ast
from ..syntax.parser import parse_expression
from .expr import Builtin, Env, EvalError, Poisoned, bind_targets, evaluate, truth
from .values import TYPE_NAMES, BlockRef, OpRef, ShapeValue, _POISONED, conforms, describe, render, type_name

POISON = -1
MAX_BLOCK_DEPTH = 50  # nested block calls; deeper is almost surely unbounded recursion
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
# Module names may also contain `-` (torchvision's RegNet names its blocks "block1-0").
_MODULE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


class _TooDeep(Exception):
    """Unwinds a runaway recursion after it has been reported once."""


@dataclass
class Override:
    """A model-parameter override given as expression text (``--set k=v``)."""
    text: str


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
        self._calls: list[tuple[str, Span]] = []  # the block calls being elaborated, outermost first
        self._taps: dict[str, dict[str, tuple[int, Span]]] = {}  # scope path -> tap name -> (node id, span)

    # ------------------------------------------------------------ diagnostics
    def error(self, d: Diagnostic) -> None:
        key = (d.span.location if d.span else None, d.message if d.span is None else None)
        if d.span is not None and key in self._spans_reported:
            return
        self._spans_reported.add(key)
        self.diag.add(d)

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
        try:
            out = self.run_body(body, root, env, start)
        except _TooDeep:
            return None
        root.output = out
        self._check_init_rules()
        if out == POISON or shape is None:
            return None
        return Graph(decl.name, self.nodes, self.scopes, out, self.rules, params)

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
            if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
                self.err(f"invalid input shape {shape}: expected positive integers such as 3x224x224", None)
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
                any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in v)):
            bad = [(i, d) for i, d in enumerate(v) if isinstance(d, bool) or not isinstance(d, int) or d < 1] \
                if isinstance(v, tuple) else []
            label = f"dimension {bad[0][0]} is {describe(bad[0][1])}" if bad else f"this is {describe(v)}"
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
                    self.err(f"model {('`' + model + '` ') if model else ''}has no parameter `{k}` to set", None,
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
                        self.error(Diagnostic(f"invalid value for `{p.name}`: {e.diagnostic.message}", None))
                        ok = False
                        continue
                    except Exception as e:  # a SpecError from parsing
                        diags = getattr(e, "diagnostics", None)
                        self.err(f"cannot parse the value of `{p.name}`: {diags[0].message if diags else e}", None)
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
            if p.type in TYPE_NAMES and not conforms(value, p.type):
                self.err(f"argument `{p.name}` of {what} must be {p.type}, got {describe(value)}",
                         sp or call_span, f"this is {type_name(value)}")
                ok = False
            if p.type == "float" and isinstance(value, int):
                value = float(value)
            out[p.name] = value
            env.values[p.name] = value
        return out if ok else None

    def _eval_args(self, args, env, in_shape):
        positional, keyword, ok = [], {}, True
        for a in args:
            try:
                v = evaluate(a.value, env, in_shape)
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
        for st in stmts:
            try:
                cur = self.run_stmt(st, scope, env, cur, fan)
            except EvalError as e:
                self.error(e.diagnostic)
                cur = POISON if fan is None else cur
            except Poisoned:
                cur = POISON if fan is None else cur
        return cur

    def _in(self, cur):
        if cur == POISON or self.nodes[cur].shape is None:
            return "poisoned"
        return ShapeValue(self.nodes[cur].shape, self.nodes[cur].layout)

    def run_stmt(self, st, scope, env, cur, fan):
        if isinstance(st, ast.Let):
            try:
                env.values[st.name] = evaluate(st.value, env, self._in(cur if fan is None else fan.start))
            except (EvalError, Poisoned):
                env.values[st.name] = _POISONED  # later uses are skipped, not "unknown name" errors
                raise
            return cur
        if isinstance(st, ast.InitRule):
            self._init_rule(st, scope, env)
            return cur
        if isinstance(st, ast.Tap):
            self._tap(st, scope, env, cur if fan is None else fan.start)
            return cur
        if isinstance(st, ast.If):
            for cond, body in st.branches:
                if truth(evaluate(cond, env, self._in(cur)), cond.span):
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
        start = fan.start if fan is not None else cur
        out = self.run_node(node, label, scope, env, start)
        if fan is not None:
            fan.outputs.append(out)
            return cur
        return out

    def _for(self, st: ast.For, scope, env, cur, fan):
        items = evaluate(st.iterable, env, self._in(cur))
        if isinstance(items, ShapeValue):
            items = items.shape
        if not isinstance(items, tuple):
            raise EvalError(Diagnostic(f"`for` needs a list to iterate over, got {describe(items)}",
                                       st.iterable.span))
        for item in items:
            body_env = env.child(bind_targets(st.targets, item, st.span))
            cur = self.run_body(st.body, scope, body_env, cur, fan)
        return cur

    def run_node(self, node, label: ast.Label | None, scope: Scope, env: Env, start: int) -> int:
        if isinstance(node, ast.Call):
            return self._call(node, label, scope, env, start)
        if isinstance(node, ast.Seq):
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
    def _place(self, label: ast.Label | None, scope: Scope, env: Env, start: int, span: Span) -> tuple[Scope, str]:
        """Where a new child goes: its parent scope and its name there.

        Unnamed children are numbered by position, as ``nn.Sequential`` does. A dotted label
        (``"downs.{i}"``) puts the child in a *container* (``downs``), created on first use:
        a module that only holds children, whose data flow stays in ``scope``.
        """
        if label is None:
            text = str(len(scope.children))
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

    def _call(self, call: ast.Call, label, scope: Scope, env: Env, start: int) -> int:
        target = env.lookup(call.func)
        if not isinstance(target, (OpRef, BlockRef)) and get_op(call.func) is not None:
            target = OpRef(call.func)  # a data parameter named like an op does not hide the op
        if not isinstance(target, (OpRef, BlockRef)):
            self._unknown_callable(call, env, target)
            return POISON
        parent, name = self._place(label, scope, env, start, call.span)
        in_shape = self._in(start)
        positional, keyword = self._eval_args(call.args, env, in_shape)
        if positional is None:
            self._reserve(parent, name, call.span)
            return POISON
        if isinstance(target, BlockRef):
            return self._block(target, call, name, positional, keyword, parent, start, in_shape)
        return self._op(get_op(target.name), call, name, positional, keyword, parent, start)

    def _reserve(self, scope, name, span):
        """Keep a failed statement's name taken, so numbering and duplicate checks stay right."""
        nid = self._new_id()
        self.nodes[nid] = Node(nid, "error", {}, (), None, scope.path, name, span)
        self._add_child(scope, name, "node", nid)

    def _block(self, ref: BlockRef, call, name, positional, keyword, scope, start, in_shape) -> int:
        d = ref.decl
        params = self._bind_params(d.params, positional, keyword, ref.globals, call.span, f"block `{d.name}`",
                                   in_shape=in_shape)
        child = self._new_scope(scope, name, "block", d.name, call.span, start)
        if params is None:
            return POISON
        if len(self._calls) >= MAX_BLOCK_DEPTH:
            chain = [n for n, _ in self._calls[-6:]] + [d.name]
            self.err(f"blocks nested more than {MAX_BLOCK_DEPTH} deep: `{d.name}` is called at depth "
                     f"{len(self._calls) + 1}", call.span, "too deep",
                     help="a block that calls itself needs a condition that ends the recursion",
                     notes=(f"innermost calls: {' -> '.join(chain)}",
                            f"the outermost of them is at {self._calls[0][1].location}"))
            raise _TooDeep()
        self._calls.append((d.name, call.span))
        try:
            out = self.run_body(d.body, child, Env(dict(params), ref.globals), start)
        finally:
            self._calls.pop()
        child.output = out
        return out

    def _op(self, op: Op, call, name, positional, keyword, scope, start) -> int:
        if op.functional:
            self.err(f"`{op.name}` joins several tensors and cannot be used as a layer", call.func_span,
                     help="use `residual { ... }` for sums and `concat { ... }` for concatenation")
            return POISON
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
            self._reserve(scope, name, call.span)
            return POISON
        return self.add_node(op, attrs, (start,), scope, name, call.span, arg_spans)

    def add_node(self, op: Op, attrs, inputs, scope: Scope, name, span, arg_spans=None, error_hint=None) -> int:
        nid = self._new_id()
        shapes = [self.nodes[i].shape if i != POISON else None for i in inputs]
        shape = layout = None
        if all(s is not None for s in shapes):
            try:
                layouts = [self.nodes[i].layout for i in inputs]
                op.check_layout(attrs, shapes, layouts)
                shape = op.infer(attrs, shapes)
                layout = op.layout(attrs, shapes, layouts, shape)
            except ShapeError as e:
                where = (arg_spans or {}).get(e.arg) or span
                if error_hint is not None:
                    error_hint(e, shapes)
                else:
                    self.err(e.message, where, e.label, e.help, (e.note,) if e.note else ())
        node = Node(nid, op.name, attrs, tuple(inputs), shape, scope.path, name if not op.functional else None, span,
                    layout=layout)
        if shape is not None:
            node.params = op.params(attrs, shapes)
            node.buffers = op.buffers(attrs, shapes)
            node.macs = op.macs(attrs, shapes, shape)
        self.nodes[nid] = node
        if op.functional:
            scope.functional.append(nid)
        else:
            self._add_child(scope, name, "node", nid)
        return nid if shape is not None else POISON

    def _new_id(self) -> int:
        nid = self._next
        self._next += 1
        return nid

    # ------------------------------------------------------------ data flow
    def _residual(self, node: ast.Residual, scope: Scope, env: Env, start: int) -> int:
        body_out = self.run_body(node.body, scope, env.child(), start)
        if start == POISON:  # an earlier error: the body was still checked for errors of its own
            return POISON
        if body_out == start:
            self.err("`residual` body is empty", node.span, "nothing to add to the shortcut")
            return POISON
        short_out = start
        if node.shortcut is not None:
            use = True
            if node.shortcut_cond is not None:
                try:
                    use = truth(evaluate(node.shortcut_cond, env, self._in(start)), node.shortcut_cond.span)
                except EvalError as e:
                    self.error(e.diagnostic)
                    return POISON
                except Poisoned:
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
                stride = ""
                if b[1:] != s[1:]:
                    sh, sw = (s[1] // b[1], s[2] // b[2]) if b[1] and b[2] else (0, 0)
                    stride = (f", stride = {sh}" if sh == sw else f", stride = [{sh}, {sw}]") if sh > 1 or sw > 1 \
                        else ", stride = ..."
                help_ = f"add a projection shortcut, e.g. `shortcut {{ conv2d({b[0]}, 1{stride}); batchnorm2d() }}`"
            elif projection:
                help_ = f"the shortcut must produce {fmt_shape(b)}, the shape of the branch"
                if node.shortcut_span is not None:
                    notes = (f"the shortcut is at {node.shortcut_span.location}",)
            self.err(f"residual branch output {fmt_shape(b)} does not match {what} {fmt_shape(s)}",
                     node.span.sub(0, len("residual")), label, help_, notes)

        return self.add_node(get_op("add"), {}, (body_out, short_out), scope, None, node.span, error_hint=hint)

    def _concat(self, node: ast.Concat, scope: Scope, env: Env, start: int) -> int:
        op = get_op("concat")
        positional, keyword = self._eval_args(node.args, env, self._in(start))
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

    def _tap(self, st: ast.Tap, scope: Scope, env: Env, cur: int) -> None:
        name = self._tap_name(st.label, env, cur)
        self._taps.setdefault(scope.path, {})[name] = (cur, st.span)

    def _from(self, node: ast.From, scope: Scope, env: Env, start: int) -> int:
        name = self._tap_name(node.label, env, start)
        found = self._taps.get(scope.path, {}).get(name)
        if found is not None:
            return found[0]
        elsewhere = [(path, taps[name][1]) for path, taps in self._taps.items() if name in taps]
        notes = tuple(f"`{name}` is tapped inside `{path or '(model)'}` at {sp.location}, "
                      "which is another module" for path, sp in elsewhere[:1])
        raise EvalError(Diagnostic(f"no tap named `{name}` here", node.label.span, "not tapped before this point",
                                   help=did_you_mean(name, self._taps.get(scope.path, {})) or
                                   f"save a tensor first with `tap {name}`, in the same block or seq",
                                   notes=notes))

    # ------------------------------------------------------------ init rules
    def _init_rule(self, st: ast.InitRule, scope: Scope, env: Env) -> None:
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

        for span, instances in by_span.items():
            r = instances[0]
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
