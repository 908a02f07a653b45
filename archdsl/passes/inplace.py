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
    returned = set(graph.output_ids())
    out: set[int] = set()
    for node in graph.ops():
        op = get_op(node.op)
        if not (op.can_inplace or node.op == "add") or node.name is None and op.can_inplace:
            continue  # activations called as functions (`relu(x)`) never run in place
        if not node.inputs:
            continue
        src = node.inputs[0]
        if src == INPUT_ID or len(consumers[src]) != 1 or src in returned:
            continue
        made_by = get_op(graph.nodes[src].op)
        if made_by.returns_view or made_by.direct_param:
            continue
        if node.op == "add" and (graph.nodes[src].shape != node.shape or not graph.nodes[src].batched):
            continue  # `a += b` needs `a` to have the sum's shape (no broadcasting into it)
        out.add(node.id)
    return out
