"""Compile the IR into an ``nn.Module`` whose module paths are the spec's names.

Each scope of the module tree becomes one module: an ``nn.Sequential`` when its children
form a straight chain, otherwise a ``torch.fx.GraphModule`` whose ``forward`` is
straight-line generated code (no lookups or loops per call). The init rules a scope declares
are applied, in ``named_modules()`` order, as soon as that scope's module is built, as
torchvision's constructors do.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import operator
from collections import OrderedDict

import torch
from torch import fx, nn

from ..ir import Graph, Scope
from ..ops.init import INIT_FUNCS
from ..ops.registry import get_op, hook_shapes
from ..passes.dataflow import module_signatures
from ..passes.inplace import inplace_nodes


def build_module(graph: Graph, device=None, dtype=None, max_bytes: int = 0) -> nn.Module:
    """Build the torch module for ``graph`` on ``device`` (``"meta"`` allocates nothing).

    ``max_bytes`` (0: no limit): refuse, before allocating anything, a model whose parameters,
    buffers and one sample's activations need more bytes than this (a SpecError at the model).
    """
    if max_bytes and (device is None or torch.device(device).type != "meta"):
        _check_memory(graph, dtype, max_bytes)
    builder = _Builder(graph, inplace_nodes(graph))
    ctx = torch.device(device) if device is not None else contextlib.nullcontext()
    with ctx:
        model = builder.scope(graph.scopes[""])
    if dtype is not None:
        model = model.to(dtype=_dtype(dtype))
    return model


def _check_memory(graph: Graph, dtype, max_bytes: int) -> None:
    from ..diagnostics import Diagnostic, SpecError
    from ..limits import how_to_raise
    size = torch.empty((), dtype=_dtype(dtype) if dtype is not None else torch.get_default_dtype()).element_size()
    weights = sum(n.params + n.buffers for n in graph.nodes.values())
    activations = sum(math.prod(n.shape) * max(n.fold, 1) for n in graph.ops() if n.shape is not None)
    need = (weights + activations) * size
    if need > max_bytes:
        raise SpecError([Diagnostic(
            f"building this model needs about {need / 2 ** 30:.1f} GiB ({weights:,} parameter and buffer elements, "
            f"{activations:,} activation elements per sample), more than the `build_bytes` budget of "
            f"{max_bytes / 2 ** 30:.1f} GiB", graph.scopes[""].span, "this model",
            help=how_to_raise("build_bytes", max_bytes) + "; or build it on device=\"meta\"")])


def _dtype(d):
    if isinstance(d, torch.dtype):
        return d
    value = getattr(torch, str(d), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {d!r}")
    return value


class _Builder:
    def __init__(self, graph: Graph, inplace: set[int]):
        self.g = graph
        self.inplace = inplace
        self.init = _InitRules(graph)
        self.sig = module_signatures(graph)
        # scope path -> the last node id made inside it (its sub-modules included), once per build
        self.last_made: dict[str, int] = {}
        for n in graph.ops():
            path = n.scope
            while True:
                if self.last_made.get(path, -1) < n.id:
                    self.last_made[path] = n.id
                if not path:
                    break
                path = path.rsplit(".", 1)[0] if "." in path else ""

    def _in_shapes(self, node):
        return hook_shapes(get_op(node.op), [self.g.nodes[i] for i in node.inputs])

    def scope(self, sc: Scope) -> nn.Module:
        """Build ``sc``'s module, then apply the init rules declared in it (as a constructor would)."""
        modules: OrderedDict[str, nn.Module] = OrderedDict()
        params: OrderedDict[str, object] = OrderedDict()  # parameters and buffers held by this module
        for name, kind, ref in sc.children:
            if kind == "node":
                node = self.g.nodes[ref]
                op = get_op(node.op)
                if op.direct_param:  # a buffer keeps its node's `persistent` flag for registration
                    value = op.make_param(node.attrs, self._in_shapes(node))
                    params[name] = (value, node.attrs.get("persistent", True)) if op.direct_buffer \
                        else nn.Parameter(value)
                else:
                    modules[name] = op.build(node.attrs, self._in_shapes(node), node.id in self.inplace)
            else:
                modules[name] = self.scope(self.g.scopes[ref])
        if sc.kind == "container":  # holds modules only, like the ModuleLists of hand-written models
            if list(modules) == [str(i) for i in range(len(modules))]:
                module = nn.ModuleList(modules.values())
            else:
                module = nn.ModuleDict(modules)
        elif not params and self._is_chain(sc):
            module = nn.Sequential(modules)
        else:
            module = self._graph_module(sc, modules, params)
        self.init.apply(module, sc.path)
        return module

    def _is_container(self, kind, ref) -> bool:
        return kind == "scope" and self.g.scopes[ref].kind == "container"

    def _flat_children(self, sc: Scope, prefix: str = ""):
        """``sc``'s children with containers opened up: (dotted name, kind, ref)."""
        for name, kind, ref in sc.children:
            if self._is_container(kind, ref):
                yield from self._flat_children(self.g.scopes[ref], f"{prefix}{name}.")
            else:
                yield prefix + name, kind, ref

    def _io(self, kind, ref):
        """(the tensors it reads, the tensors it gives) of a child."""
        if kind == "node":
            n = self.g.nodes[ref]
            return tuple(n.inputs), (n.id,)
        sig = self.sig[ref]
        return tuple(sig.inputs), tuple(sig.outputs)

    def _order(self, kind, ref) -> tuple[int, int]:
        """Where a child goes in ``forward``: after the last node it makes (ids are in elaboration order);
        a sub-module that makes nothing (an empty labelled `for`) goes after the tensor it passes on."""
        if kind == "node":
            return ref, 0
        last = self.last_made.get(ref)
        return (last, 0) if last is not None else (self.g.scopes[ref].output, 2)

    def _is_chain(self, sc: Scope) -> bool:
        sig = self.sig[sc.path]
        if sig.inputs != [sc.input] or sig.outputs != [sc.output]:
            return False
        if sc.path == "" and not isinstance(self.g.outputs, int):  # the model returns a dict or a tuple
            return False
        if sc.functional or any(self._is_container(kind, ref) for _, kind, ref in sc.children):
            return False
        if any(kind == "node" and get_op(self.g.nodes[ref].op).custom_call for _, kind, ref in sc.children):
            return False
        cur = sc.input
        for _, kind, ref in sc.children:
            ins, outs = self._io(kind, ref)
            if ins != (cur,) or len(outs) != 1:
                return False
            cur = outs[0]
        return cur == sc.output

    def _graph_module(self, sc: Scope, modules, params) -> nn.Module:
        flat = list(self._flat_children(sc))
        items = [(*self._order(kind, ref), name, kind, ref) for name, kind, ref in flat]
        items += [(nid, 1, None, "join", nid) for nid in sc.functional]
        items.sort(key=lambda t: (t[0], t[1]))
        graph = fx.Graph()
        sig = self.sig[sc.path]
        names = _placeholder_names(len(sig.inputs))
        values = {i: graph.placeholder(n) for i, n in zip(sig.inputs, names)}
        for _, _, name, kind, ref in items:
            if kind in ("join", "node"):
                node = self.g.nodes[ref]
                op = get_op(node.op)
                args = [values[i] for i in node.inputs]
                ins = self._in_shapes(node)
                if kind == "join":
                    values[ref] = op.emit(graph, node.attrs, args, node.id in self.inplace, ins=ins)
                elif name in params:
                    values[ref] = op.emit(graph, node.attrs, args + [graph.get_attr(name)], ins=ins)
                else:
                    values[ref] = op.call(graph, name, args, node.attrs)
                _safe_name(values[ref])
                continue
            ins, outs = self._io(kind, ref)
            result = _safe_name(graph.call_module(name, tuple(values[i] for i in ins)))
            if len(outs) == 1:
                values[outs[0]] = result
            else:
                for k, o in enumerate(outs):
                    values[o] = graph.call_function(operator.getitem, (result, k))
        if sc.path == "":
            graph.output(_structure(self.g.outputs, values))
        else:
            graph.output(values[sig.outputs[0]] if len(sig.outputs) == 1 else tuple(values[o] for o in sig.outputs))
        holder = nn.Module()
        buffers = {name: p for name, p in params.items() if not isinstance(p, nn.Parameter)}
        for name, p in params.items():
            if name in buffers:
                holder.register_buffer(name, p[0])
            else:
                holder.register_parameter(name, p)
        for name, m in modules.items():
            holder.add_module(name, m)
        gm = fx.GraphModule(holder, graph, class_name=sc.block or "Block")
        # register children in spec order (fx registers them in call order, and would
        # replace containers by plain modules holding only the children it calls)
        gm._modules = OrderedDict(modules)
        for name, (value, persistent) in buffers.items():  # fx copies the buffers it reads, all as persistent
            gm.register_buffer(name, value, persistent=persistent)
        return gm


def _safe_name(node):
    """Rename a node whose generated variable would be a Python keyword, ``self`` or a name the generated
    code uses (fx names a node after its module, and a label may be any name): ``self = self.self(x)``
    would break ``forward``."""
    import builtins
    import keyword
    if isinstance(node, fx.Node) and (keyword.iskeyword(node.name) or keyword.issoftkeyword(node.name) or
                                      node.name in ("self", "torch", "operator", "fx") or
                                      hasattr(builtins, node.name)):
        node.name = node.graph._graph_namespace.create_name(f"{node.name}_", None)
    return node


def _placeholder_names(n: int) -> list[str]:
    """Argument names of a generated ``forward``: ``x``, then ``x1``, ``x2``, ..."""
    return ["x"] + [f"x{k}" for k in range(1, n)]


def _structure(outputs, values):
    """The model's return value: a tensor, a tuple or a dict, from the IR's output structure."""
    if isinstance(outputs, tuple):
        return tuple(_structure(o, values) for o in outputs)
    if isinstance(outputs, dict):
        return {k: _structure(v, values) for k, v in outputs.items()}
    return values[outputs]


class _InitRules:
    """The spec's init rules, grouped by the scope that declares them (computed once per build)."""

    def __init__(self, graph: Graph):
        self.by_scope: dict[str, list] = {}
        for r in graph.init_rules:
            self.by_scope.setdefault(r.scope, []).append(r)
        # module path -> (op, inner): op modules, and modules inside an op's module that rules by
        # op kind reach as that op (Swin attention's `qkv` is a linear), as torchvision's
        # `isinstance(m, nn.Linear)` init loops do
        self.op_of: dict[str, tuple[str, bool]] = {}
        if self.by_scope:
            for n in graph.ops():
                if n.path is not None:
                    self.op_of[n.path] = (n.op, False)
                    for sub, kind in get_op(n.op).inner_ops.items():
                        self.op_of[f"{n.path}.{sub}"] = (kind, True)

    def apply(self, module: nn.Module, scope: str) -> None:
        """Apply the rules declared in ``scope`` to ``module`` (that scope's module, just built), in
        ``named_modules()`` order: rules in a block run when the block is built, as in a torchvision
        constructor, and the model's own rules run last."""
        rules = self.by_scope.get(scope)
        if not rules:
            return
        prefix = scope + "." if scope else ""
        with torch.no_grad():
            for rel, sub in module.named_modules():
                path = prefix + rel if rel else scope
                for name, tensor in sub._parameters.items():  # tensors a module owns directly (`parameter`)
                    if tensor is None or (f"{path}.{name}" if path else name) not in self.op_of:
                        continue
                    own = f"{rel}.{name}" if rel else name
                    for r in rules:
                        if r.by_path and r.param is None and fnmatch.fnmatchcase(own, r.target):
                            INIT_FUNCS[r.fn].apply(tensor, r.args)
                found = self.op_of.get(path)
                if found is None:
                    continue
                op, inner = found
                for r in rules:
                    if r.param is None:
                        continue
                    if r.by_path:  # paths name op modules only, never modules inside them
                        if inner or not fnmatch.fnmatchcase(rel, r.target):
                            continue
                    elif op != r.target:
                        continue
                    tensor = getattr(sub, r.param, None)
                    if isinstance(tensor, torch.Tensor):
                        INIT_FUNCS[r.fn].apply(tensor, r.args)
