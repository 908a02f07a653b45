"""The intermediate representation: a DAG of primitive op nodes plus the module tree.

Elaboration produces a :class:`Graph`. Every construct of the language has been expanded:
nodes carry their op, resolved attributes, input node ids, output shape, module path and the
span of spec text that produced them. ``Graph.scopes`` is the module tree (blocks and
sequences) in which the nodes live; the torch backend turns each scope into one module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator

from .diagnostics import Span

INPUT_ID = 0

#: names no module or tensor of the tree may have: the attributes of the module classes the torch
#: backend builds (``nn.Module``, ``fx.GraphModule``, ``nn.Sequential``, ``nn.ModuleList``,
#: ``nn.ModuleDict``), which a child of that name would clash with (``add_module`` refuses most of them,
#: ``self.code`` would be GraphModule's generated source). tests/test_tensors.py checks the list
#: against the installed torch.
RESERVED_NAMES = frozenset((
    "T_destination", "__add__", "__annotations__", "__call__", "__class__", "__contains__", "__copy__",
    "__deepcopy__", "__delattr__", "__delitem__", "__dict__", "__dir__", "__doc__", "__eq__", "__format__",
    "__ge__", "__getattr__", "__getattribute__", "__getitem__", "__getstate__", "__gt__", "__hash__",
    "__iadd__", "__imul__", "__init__", "__init_subclass__", "__iter__", "__jit_unused_properties__", "__le__",
    "__len__", "__lt__", "__module__", "__mul__", "__ne__", "__new__", "__reduce__", "__reduce_ex__",
    "__reduce_package__", "__repr__", "__rmul__", "__setattr__", "__setitem__", "__setstate__", "__sizeof__",
    "__str__", "__subclasshook__", "__weakref__", "_apply", "_backward_hooks", "_backward_pre_hooks",
    "_boxed_call", "_buffers", "_call_impl", "_code", "_compiled_call_impl", "_create_node_hooks",
    "_deepcopy_hooks", "_deepcopy_init", "_erase_node_hooks", "_forward_hooks", "_forward_hooks_always_called",
    "_forward_hooks_with_kwargs", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
    "_get_abs_string_index", "_get_backward_hooks", "_get_backward_pre_hooks", "_get_item_by_idx", "_get_name",
    "_graph", "_is_full_backward_hook", "_lineno_map", "_load_from_state_dict", "_load_state_dict_post_hooks",
    "_load_state_dict_pre_hooks", "_maybe_warn_non_full_backward_hook", "_modules", "_named_members",
    "_non_persistent_buffers_set", "_parameters", "_prologue_start", "_recompile_submodules",
    "_register_create_node_hook", "_register_deepcopy_hook", "_register_erase_node_hook",
    "_register_load_state_dict_pre_hook", "_register_replace_node_hook", "_register_state_dict_hook",
    "_replace_hooks", "_replicate_for_data_parallel", "_save_to_state_dict", "_set_replace_hook",
    "_slow_forward", "_state_dict_hooks", "_state_dict_pre_hooks", "_tracer_cls", "_tracer_extras",
    "_unregister_create_node_hook", "_unregister_deepcopy_hook", "_unregister_erase_node_hook",
    "_unregister_replace_node_hook", "_version", "_wrapped_call", "_wrapped_call_impl", "add_module",
    "add_submodule", "append", "apply", "bfloat16", "buffers", "call_super_init", "children", "clear", "code",
    "compile", "cpu", "cuda", "delete_all_unused_submodules", "delete_submodule", "double", "dump_patches",
    "eval", "extend", "extra_repr", "float", "forward", "get_buffer", "get_extra_state", "get_parameter",
    "get_submodule", "graph", "half", "insert", "ipu", "items", "keys", "load_state_dict", "meta", "modules",
    "mtia", "named_buffers", "named_children", "named_modules", "named_parameters", "parameters", "pop",
    "print_readable", "recompile", "register_backward_hook", "register_buffer", "register_forward_hook",
    "register_forward_pre_hook", "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook", "register_module",
    "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
    "set_extra_state", "set_submodule", "shape_env", "share_memory", "state_dict", "to", "to_empty",
    "to_folder", "train", "training", "type", "update", "values", "xpu", "zero_grad",
))


def flatten_outputs(structure):
    """The node ids in an output structure (an id, or a tuple / dict of them), in order."""
    if isinstance(structure, tuple):
        for s in structure:
            yield from flatten_outputs(s)
    elif isinstance(structure, dict):
        for s in structure.values():
            yield from flatten_outputs(s)
    else:
        yield structure


def _plain_outputs(structure):
    if isinstance(structure, tuple):
        return [_plain_outputs(s) for s in structure]
    if isinstance(structure, dict):
        return {k: _plain_outputs(v) for k, v in structure.items()}
    return structure


@dataclass
class Node:
    """One primitive op application (or the model input, op ``input``, id 0)."""

    id: int
    op: str
    attrs: dict
    inputs: tuple[int, ...]
    shape: tuple[int, ...] | None
    scope: str                 # path of the enclosing module scope ('' is the model)
    name: str | None           # child name within the scope; None for functional joins
    span: Span | None
    params: int = 0
    buffers: int = 0
    macs: int = 0
    inplace: bool = False
    layout: str | None = None  # axis letters of the output ("CHW", "HWC", "LC"), if known
    batched: bool = True       # the output has the implicit batch dim (false: `parameter`, `buffer`)
    dtype: str | None = None   # the output's dtype when it is not the model's floating type ("int64")
    fold: int = 1              # items per sample in the batch dim (windows merged into it by `merge_batch`)
    tensor_name: str | None = None  # the name a `let` gave this tensor (diagrams label its edges with it)

    @property
    def path(self) -> str | None:
        """Module path (a ``state_dict`` key prefix); None for functional joins and the input."""
        if self.name is None:
            return None
        return f"{self.scope}.{self.name}" if self.scope else self.name


@dataclass
class Scope:
    """A module in the tree: a block instance, a ``seq``, or a container; children are in registration order.

    A *container* (made by dotted labels such as ``"downs.0"``) only holds modules: it has
    no data flow of its own, its children are wired by the nearest enclosing non-container.
    """

    path: str
    kind: str                  # "block" | "seq" | "container"
    block: str | None          # block name, for block instances
    span: Span | None
    input: int = INPUT_ID
    output: int = INPUT_ID
    children: list[tuple[str, str, object]] = field(default_factory=list)  # (name, "node"|"scope", id|path)
    functional: list[int] = field(default_factory=list)                    # join nodes living here

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1] if self.path else ""

    def child_names(self) -> list[str]:
        return [c[0] for c in self.children]


@dataclass
class InitRule:
    """A weight-initialization rule declared in scope ``scope``.

    It applies to modules under ``scope`` whose op is ``target`` (or, with ``by_path``,
    whose path relative to ``scope`` matches the glob ``target``)."""

    scope: str
    target: str
    by_path: bool
    param: str
    fn: str
    args: dict
    span: Span | None


@dataclass
class Graph:
    """The elaborated model."""

    name: str
    nodes: dict[int, Node]
    scopes: dict[str, Scope]
    output: int
    init_rules: list[InitRule]
    params: dict                       # the model parameters in force (after overrides)
    #: what the model returns: a node id, or a tuple / dict (str keys) of node ids (`return` in the
    #: model body); ``output`` is its first tensor
    outputs: object = None

    def __post_init__(self):
        if self.outputs is None:
            self.outputs = self.output

    def output_ids(self) -> list[int]:
        """The node ids the model returns, in order."""
        return list(flatten_outputs(self.outputs))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[INPUT_ID].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.nodes[self.output].shape

    def ops(self) -> Iterator[Node]:
        """Nodes other than the input, in creation (topological) order."""
        return (n for i, n in self.nodes.items() if i != INPUT_ID)

    def consumers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {i: [] for i in self.nodes}
        for n in self.nodes.values():
            for i in n.inputs:
                out[i].append(n.id)
        return out

    @property
    def output_shapes(self):
        """The shapes of what the model returns, in the structure of ``outputs``."""
        def shape(s):
            if isinstance(s, tuple):
                return tuple(shape(x) for x in s)
            if isinstance(s, dict):
                return {k: shape(v) for k, v in s.items()}
            return self.nodes[s].shape
        return shape(self.outputs)

    @property
    def num_params(self) -> int:
        return sum(n.params for n in self.nodes.values())

    @property
    def num_buffers(self) -> int:
        return sum(n.buffers for n in self.nodes.values())

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes.values())

    # ---------------------------------------------------------------- emission
    def to_dict(self) -> dict:
        """A plain-data view of the IR (what ``archdsl check --emit-ir`` prints)."""
        from .elaborate.values import to_python

        def span(s):
            return s.location if s is not None else None

        return {
            "model": self.name,
            "params": {k: to_python(v) for k, v in self.params.items()},
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "num_params": self.num_params,
            "macs": self.macs,
            "nodes": [
                {"id": n.id, "op": n.op, "path": n.path, "scope": n.scope,
                 "attrs": {k: to_python(v) for k, v in n.attrs.items()},
                 "inputs": list(n.inputs), "shape": list(n.shape) if n.shape else None,
                 "params": n.params, "macs": n.macs, "span": span(n.span),
                 **({} if n.batched else {"batched": False}), **({"dtype": n.dtype} if n.dtype else {}),
                 **({"fold": n.fold} if n.fold != 1 else {}),
                 **({"tensor": n.tensor_name} if n.tensor_name else {})}
                for n in self.nodes.values()
            ],
            "modules": [
                {"path": s.path, "kind": s.kind, "block": s.block, "input": s.input, "output": s.output,
                 "children": [c[0] for c in s.children], "span": span(s.span)}
                for s in self.scopes.values()
            ],
            "init": [
                {"scope": r.scope, "target": r.target, "by_path": r.by_path, "param": r.param, "fn": r.fn,
                 "args": {k: to_python(v) for k, v in r.args.items()}, "span": span(r.span)}
                for r in self.init_rules
            ],
            "output": self.output,
            "outputs": _plain_outputs(self.outputs),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)
