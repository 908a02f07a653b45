"""The forward signature of every module: which tensors it reads and which it returns.

The IR's data flow is one DAG over the whole model, independent of the module tree: a node
may read a tensor made in another module (a named tensor bound before a `seq`, a tap of a
sub-module's layer reached with ``output(path)``, a block's several results). Each module's
``forward`` therefore takes the tensors its subtree reads from outside, and returns those
that are read outside it. This pass computes both, so the torch backend can thread values
through the module tree (as closure conversion does for nested functions).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import INPUT_ID, Graph


@dataclass
class Signature:
    """A module's forward: the node ids it takes, and those it returns, in order.

    ``inputs[0]`` is the scope's own input when the scope reads one (a module called on the
    current tensor); ``outputs[0]`` is its own output (what flows on after it).
    """

    inputs: list[int]
    outputs: list[int]


def _parent(path: str) -> str:
    """The enclosing module's path (``""``: the model)."""
    return path.rsplit(".", 1)[0] if "." in path else ""


def _dataflow_scope(graph: Graph, path: str) -> str:
    """The nearest enclosing scope that wires its children (containers only hold modules)."""
    while path and graph.scopes[path].kind == "container":
        path = _parent(path)
    return path


def _chain(graph: Graph, path: str | None) -> list[str]:
    """The wiring scopes from ``path`` up to the model (``""``); [] for the model input."""
    if path is None:
        return []
    out = []
    while True:
        out.append(path)
        if not path:
            return out
        path = _dataflow_scope(graph, _parent(path))


def module_signatures(graph: Graph) -> dict[str, Signature]:
    """Every wiring scope's forward signature (containers have none)."""
    home: dict[int, str | None] = {INPUT_ID: None}
    for n in graph.ops():
        home[n.id] = _dataflow_scope(graph, n.scope)
    chains: dict[str | None, list[str]] = {}

    def chain(p):
        if p not in chains:
            chains[p] = _chain(graph, p)
        return chains[p]

    reads: dict[str, set[int]] = {p: set() for p, s in graph.scopes.items() if s.kind != "container"}
    gives: dict[str, set[int]] = {p: set() for p in reads}

    def edge(producer: int, consumer_chain: list[str]) -> None:
        made = chain(home[producer])
        common = set(made) & set(consumer_chain)
        for p in made:
            if p in common:
                break
            gives[p].add(producer)
        for p in consumer_chain:
            if p in common:
                break
            reads[p].add(producer)

    for n in graph.ops():
        c = chain(home[n.id])
        for i in n.inputs:
            edge(i, c)
    for p, s in graph.scopes.items():  # a scope's own output is read by its parent's flow
        if s.kind != "container" and p:
            edge(s.output, chain(_dataflow_scope(graph, _parent(p))))
    for o in graph.output_ids():  # the model's results leave every module that makes them
        edge(o, [])

    out: dict[str, Signature] = {}
    for p in reads:
        s = graph.scopes[p]
        if not p:
            out[p] = Signature([INPUT_ID], graph.output_ids())
            continue
        if p not in chain(home.get(s.output)):  # it returns a tensor it did not make: it takes it
            reads[p].add(s.output)
        own_in = [s.input] if s.input in reads[p] else []
        inputs = own_in + sorted(reads[p] - set(own_in))
        outputs = [s.output] + sorted(gives[p] - {s.output})
        out[p] = Signature(inputs, outputs)
    return out
