"""Decide which nodes may overwrite their input (ReLU(inplace=True), ``a += b``)."""

from __future__ import annotations

from ..ir import INPUT_ID, Graph
from ..ops.registry import get_op


def inplace_nodes(graph: Graph) -> set[int]:
    """Ids of nodes that can safely run in place.

    A node may overwrite its (first) input when its op allows it, nothing else reads that
    input, the input is not the model's own input, and the op that made it does not return
    memory shared with another tensor (flatten, dropout in eval).
    """
    consumers = graph.consumers()
    out: set[int] = set()
    for node in graph.ops():
        op = get_op(node.op)
        if not (op.can_inplace or node.op == "add"):
            continue
        src = node.inputs[0]
        if src == INPUT_ID or len(consumers[src]) != 1:
            continue
        if get_op(graph.nodes[src].op).returns_view:
            continue
        out.add(node.id)
    return out
