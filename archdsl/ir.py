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
                 "params": n.params, "macs": n.macs, "span": span(n.span)}
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
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)
