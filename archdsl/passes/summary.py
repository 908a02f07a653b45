"""Costs and receptive fields from the IR alone (``archdsl summary``, :meth:`archdsl.Spec.summary`).

Nothing here imports torch: every figure comes from the op registry's declarations.

* **Parameters** are ``Node.params`` (unique ``nn.Parameter`` elements, buffers excluded).
* **MACs** follow each op's ``macs_rule``: ``"formula"`` ops (conv, transposed conv, linear,
  attention with its QK^T and AV products) count ``Node.macs``; ``"zero"`` ops count 0 by
  convention (norms, activations, pooling, element-wise ops, data movement); an op with
  ``"unknown"`` (or no declaration) makes the figure unknown rather than silently 0.
* **Memory**: parameters x item size; activations are the outputs of one forward pass at
  batch 1 (ops that return a view of their input or run in place allocate nothing), both in
  total and at the peak of an inference pass that frees each tensor after its last use.
* **Receptive field** (Distill, "Computing Receptive Fields of Convolutional Neural
  Networks"): per node the size ``r``, effective stride ``S`` and effective padding ``P`` per
  spatial axis of the model input (the length of a CxL sequence; height and width of a CxHxW image;
  frames, height and width of a CxTxHxW clip), so that output position ``i`` sees input positions ``[i S - P, i S - P + r - 1]``.
  A window with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` maps
  ``(r, S, P)`` to ``(r + (d (k - 1)) S, S s, P + p S)``. Where paths merge (residual sums,
  concatenations, gates) the intervals are united (for centred paths: the maximum over
  paths). Ops report how they see their input with ``Op.window``: a :class:`Window`,
  ``POINTWISE``, ``GLOBAL`` (global pooling, a linear layer on a flat vector, attention) or
  ``UNDEFINED`` (resampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..ir import INPUT_ID, Graph, Node
from ..ops.registry import (GLOBAL, MACS_FORMULA, MACS_ZERO, POINTWISE, UNDEFINED, Window, fmt_shapes, get_op,
                            hook_shapes)
from .inplace import inplace_nodes

__all__ = ["RF", "Row", "Summary", "summarize", "receptive_fields", "axes_text", "ITEMSIZE", "FORMAT_VERSION"]

#: bytes per element of the dtypes a model can be built in
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}

#: version of the JSON document (``Summary.to_dict``); documented in docs/summary.md
FORMAT_VERSION = 1


# ------------------------------------------------------------------ receptive fields


@dataclass(frozen=True)
class RF:
    """A finite receptive field: size, effective stride and effective padding per spatial axis of the
    model input (e.g. height, width; or frames, height, width)."""

    size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]

    def through(self, w: Window) -> RF | str:
        """The receptive field after a sliding window ``w`` applied to a map with this one
        (``UNDEFINED`` when the window slides over another number of axes than the field has)."""
        if len(w.kernel) != len(self.size):
            return UNDEFINED
        size, stride, padding = [], [], []
        for r, j, p, k, s, pad, d in zip(self.size, self.stride, self.padding, w.kernel, w.stride, w.padding,
                                         w.dilation):
            size.append(r + d * (k - 1) * j)
            stride.append(j * s)
            padding.append(p + pad * j)
        return RF(tuple(size), tuple(stride), tuple(padding))

    def to_dict(self) -> dict:
        return {"size": list(self.size), "stride": list(self.stride), "padding": list(self.padding)}


def input_rf(shape) -> RF:
    """The field of the model input itself: one position on each spatial axis (a CxL sequence has one,
    a CxHxW image two, a CxTxHxW clip three; other inputs are treated as images)."""
    axes = len(shape) - 1 if shape is not None and len(shape) in (2, 3, 4) else 2
    return RF((1,) * axes, (1,) * axes, (0,) * axes)


#: the "receptive field" of a tensor that does not depend on the input (a parameter, a buffer)
CONSTANT = "constant"


def _union(states: list) -> RF | str:
    """Receptive field where paths merge: GLOBAL wins, then UNDEFINED, else the union of the intervals;
    tensors that do not depend on the input (parameters) do not count."""
    states = [s for s in states if s != CONSTANT]
    if not states:
        return CONSTANT
    if GLOBAL in states:
        return GLOBAL
    if UNDEFINED in states:
        return UNDEFINED
    if len(states) == 1:
        return states[0]
    if len({len(s.size) for s in states}) > 1:
        return UNDEFINED
    size, stride, padding = [], [], []
    for axis in range(len(states[0].size)):
        pad = max(s.padding[axis] for s in states)             # the leftmost start, -P
        end = max(s.size[axis] - s.padding[axis] for s in states)  # the rightmost end + 1
        size.append(pad + end)
        stride.append(max(s.stride[axis] for s in states))
        padding.append(pad)
    return RF(tuple(size), tuple(stride), tuple(padding))


def receptive_fields(graph: Graph) -> dict[int, RF | str]:
    """Every node's receptive field on the model input: an :class:`RF`, ``GLOBAL`` or ``UNDEFINED``."""
    nodes = graph.nodes
    start = input_rf(nodes[INPUT_ID].shape)
    out: dict[int, RF | str] = {INPUT_ID: start}
    map_rank = len(start.size) + 1
    for node in graph.ops():
        op = get_op(node.op)
        ins = [nodes[i] for i in node.inputs]
        seen = _union([out[i.id] for i in ins])
        if seen == CONSTANT:
            out[node.id] = CONSTANT
            continue
        kind = op.window(node.attrs, hook_shapes(op, ins), [getattr(i, "layout", None) for i in ins])
        if kind == GLOBAL or seen == GLOBAL:
            out[node.id] = GLOBAL
        elif kind == UNDEFINED or seen == UNDEFINED:
            out[node.id] = UNDEFINED
        elif isinstance(kind, Window):
            out[node.id] = seen.through(kind)
        elif kind == POINTWISE:
            # a one-input op declared pointwise that changes a map's spatial sizes resamples it
            live = [i for i in ins if out[i.id] != CONSTANT]
            x, maps = live[0].shape, (None, "CHW")
            resized = (len(live) == 1 and len(ins) == 1 and map_rank > 2 and len(x) == map_rank
                       and len(node.shape) == map_rank
                       and x[1:] != node.shape[1:] and getattr(live[0], "layout", None) in maps
                       and getattr(node, "layout", None) in maps)
            out[node.id] = UNDEFINED if resized else seen
        else:
            raise ValueError(f"op {node.op}: window() returned {kind!r}")
    return out


def _model_rf(graph: Graph, rf: dict[int, RF | str]) -> dict:
    """The model's receptive field: at the output if finite, else where it stops being finite.

    For a classifier that is the tensor entering global pooling (or attention, or the first
    linear layer on a flattened map): ``at`` names that tensor, ``from`` names the op where the
    field stops being finite and ``then`` says what it becomes there (``"global"`` or
    ``"undefined"``). Where several such ops feed the output, the largest field is reported.
    """
    out = rf[graph.output]
    if isinstance(out, RF):
        return {**out.to_dict(), "at": node_label(graph.nodes[graph.output]), "then": None, "from": None}
    # the ancestors of the output, then among them the ops where the field stops being finite
    ancestors, stack = set(), [graph.output]
    while stack:
        n = stack.pop()
        if n not in ancestors:
            ancestors.add(n)
            stack.extend(graph.nodes[n].inputs)
    best = None
    for n in sorted(ancestors):
        node = graph.nodes[n]
        ins = [rf[i] for i in node.inputs]
        if isinstance(rf[n], RF) or not ins or not all(isinstance(s, RF) for s in ins):
            continue
        seen = _union(ins)
        if best is None or max(seen.size) > max(best[0].size):
            best = (seen, node)
    if best is None:
        return {"size": None, "stride": None, "padding": None, "at": None, "then": out, "from": None}
    seen, source = best
    at = graph.nodes[source.inputs[0]] if len(source.inputs) == 1 else source
    # name the map itself rather than a flatten, dropout or identity pooling after it
    while (at.id != INPUT_ID and len(at.inputs) == 1 and rf[at.inputs[0]] == rf[at.id]
           and get_op(at.op).category in ("reshape", "regularization", "pool")):
        at = graph.nodes[at.inputs[0]]
    return {**seen.to_dict(), "at": node_label(at), "then": rf[source.id], "from": node_label(source)}


# ------------------------------------------------------------------ memory


def activation_memory(graph: Graph, itemsize: int) -> tuple[int, int]:
    """(all op outputs, inference peak) in bytes for one forward pass at batch 1.

    Ops that return a view of their input (flatten, permute, dropout in eval) or run in place
    (ReLU after a layer nothing else reads) share their input's memory. The peak holds the
    input and every tensor until its last reader has run; temporaries inside one op (such as
    attention's score matrix) are not counted.
    """
    inplace = inplace_nodes(graph)
    storage: dict[int, int] = {}      # node -> node that allocated its memory
    size: dict[int, int] = {}         # allocating node -> bytes
    last: dict[int, int] = {}         # allocating node -> last node that reads or aliases it
    for node in graph.nodes.values():
        op = get_op(node.op) if node.id != INPUT_ID else None
        if op is not None and node.inputs and (node.id in inplace or op.returns_view):
            storage[node.id] = storage[node.inputs[0]]
        else:
            storage[node.id] = node.id
            # a parameter or buffer is not an activation
            size[node.id] = 0 if op is not None and op.direct_param and not node.inputs \
                else math.prod(node.shape) * itemsize * node.fold
        last[storage[node.id]] = node.id
        for i in node.inputs:
            last[storage[i]] = node.id
    for o in graph.output_ids():
        last[storage[o]] = math.inf  # the results outlive the pass
    frees: dict[int, list[int]] = {}
    for s, n in last.items():
        frees.setdefault(n, []).append(s)
    total = sum(b for n, b in size.items() if n != INPUT_ID)
    live = peak = 0
    for node in graph.nodes.values():
        live += size.get(node.id, 0)
        peak = max(peak, live)
        live -= sum(size[s] for s in frees.get(node.id, ()))
    return total, peak


# ------------------------------------------------------------------ rows and totals


def node_label(node: Node) -> str:
    """A node's module path; for a functional join, its module and op, e.g. ``layer1.0 (add)``."""
    return node.path if node.path is not None else f"{node.scope or '(model)'} ({node.op})"


def macs_known(node: Node) -> bool:
    """Whether the op has a MACs figure under the convention (a formula, or 0 by convention)."""
    return get_op(node.op).macs_rule in (MACS_FORMULA, MACS_ZERO)


@dataclass
class Row:
    """One module of the summary: an op, a functional join, or a block/seq/container with its totals."""

    path: str | None                # module path (``state_dict`` prefix); None for functional joins
    scope: str                      # the enclosing module's path ('' is the model)
    depth: int                      # 1 for the model's own children
    kind: str                       # "op" | "join" | "block" | "seq" | "container"
    op: str                         # op name; block name for blocks; "seq" / "container"
    label: str                      # short description, e.g. "conv 3 /2, 64"
    output_shape: tuple[int, ...] | None
    params: int
    macs: int | None                # None when some op inside has no MACs formula
    macs_unknown: int               # number of ops inside without a MACs formula
    receptive_field: RF | str | None  # an RF, "global", "undefined"; None for containers
    expanded: bool                  # the module's children follow as rows of their own

    @property
    def name(self) -> str:
        """The text shown in the module column."""
        return self.path if self.path is not None else f"{self.scope or '(model)'} ({self.op})"

    def to_dict(self) -> dict:
        rf = self.receptive_field
        return {"path": self.path, "scope": self.scope, "depth": self.depth, "kind": self.kind, "op": self.op,
                "label": self.label, "output_shape": list(self.output_shape) if self.output_shape else None,
                "params": self.params, "macs": self.macs, "macs_unknown": self.macs_unknown,
                "receptive_field": rf.to_dict() if isinstance(rf, RF) else rf, "expanded": self.expanded}


@dataclass
class Summary:
    """Rows down to ``depth`` plus the model's totals; ``to_dict()`` is the JSON document."""

    model: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dtype: str
    depth: int | str
    rows: list[Row]
    totals: dict = field(default_factory=dict)
    #: the shapes of every result, in the structure the model returns (a shape, a tuple or a dict)
    output_shapes: object = None

    def to_dict(self) -> dict:
        doc = {"format": "archdsl-summary", "version": FORMAT_VERSION, "model": self.model,
               "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
               "dtype": self.dtype, "depth": self.depth, "rows": [r.to_dict() for r in self.rows],
               "totals": self.totals}
        if self.output_shapes is not None and not _is_shape(self.output_shapes):
            doc["output_shapes"] = _plain_shapes(self.output_shapes)
        return doc

    def to_text(self) -> str:
        return render_text(self)

    def __str__(self) -> str:
        return self.to_text()


def _is_shape(v) -> bool:
    return isinstance(v, tuple) and all(isinstance(d, int) for d in v)


def _plain_shapes(v):
    if isinstance(v, dict):
        return {k: _plain_shapes(x) for k, x in v.items()}
    if _is_shape(v):
        return list(v)
    return [_plain_shapes(x) for x in v]


def summarize(graph: Graph, depth: int | str | None = None, dtype: str = "float32") -> Summary:
    """Summarize ``graph``: ``depth`` is ``"blocks"`` (the default, ``None``), ``"all"`` or an int >= 1.

    With an int, modules up to that many path components deep get a row (1: the model's
    children). ``"blocks"`` expands sequences and containers, and blocks used once in the
    model that hold a sequence of blocks (ViT's ``encoder``); it stops at other blocks
    (ResNet's ``layer1.0``, ViT's ``encoder.layers.encoder_layer_0``, Inception's ``Mixed_6a``). ``"all"`` lists every op, and the functional joins
    (residual sums, concatenations, gates), which are not modules, as ``"join"`` rows.
    """
    if depth is None:
        depth = "blocks"
    if not (depth in ("blocks", "all") or (isinstance(depth, int) and not isinstance(depth, bool) and depth >= 1)):
        raise ValueError(f"depth must be 'blocks', 'all' or an int >= 1, not {depth!r}")
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(ITEMSIZE)}")
    rf = receptive_fields(graph)
    agg = _aggregate(graph)
    uses: dict[str, int] = {}
    for scope in graph.scopes.values():
        if scope.kind == "block" and scope.path:
            uses[scope.block] = uses.get(scope.block, 0) + 1

    def expand(scope, row_depth: int) -> bool:
        if depth == "all":
            return True
        if depth == "blocks":
            return scope.kind != "block" or (uses.get(scope.block, 0) <= 1 and has_stage(scope))
        return row_depth < depth

    def has_stage(scope) -> bool:
        """Whether a sequence or container directly inside ``scope`` holds blocks (ViT's encoder.layers)."""
        for _, kind, ref in scope.children:
            child = graph.scopes[ref] if kind == "scope" else None
            if child is not None and child.kind != "block" and any(
                    k == "scope" and graph.scopes[r].kind == "block" for _, k, r in child.children):
                return True
        return False

    rows: list[Row] = []

    def visit(path: str, row_depth: int) -> None:
        scope = graph.scopes[path]
        # children in execution order (a child module by its first node); joins where they run
        entries = [(ref if kind == "node" else agg.get(ref, (0, 0, 0, math.inf))[3], kind, ref)
                   for _, kind, ref in scope.children]
        if depth == "all":  # joins are not modules: listed with every op only
            entries += [(i, "join", i) for i in scope.functional]
        entries.sort(key=lambda e: e[0])
        for _, kind, ref in entries:
            if kind in ("node", "join"):
                rows.append(_node_row(graph.nodes[ref], row_depth, rf))
                continue
            child = graph.scopes[ref]
            params, macs, unknown, _ = agg.get(ref, (0, 0, 0, 0))
            more = expand(child, row_depth)
            is_container = child.kind == "container"
            out = None if is_container else graph.nodes[child.output]
            rows.append(Row(child.path, path, row_depth, child.kind, child.block or child.kind,
                            child.block or child.kind, out.shape if out else None, params,
                            None if unknown else macs, unknown, rf[out.id] if out else None, more))
            if more:
                visit(child.path, row_depth + 1)

    visit("", 1)
    rows = [r for r in rows if isinstance(depth, str) or r.depth <= depth]
    return Summary(graph.name, graph.input_shape, graph.output_shape, dtype, depth, rows,
                   _totals(graph, rf, dtype), graph.output_shapes)


def _aggregate(graph: Graph) -> dict[str, tuple[int, int, int, int]]:
    """Per module path: (params, known MACs, ops without a MACs formula, first node id)."""
    acc: dict[str, list] = {}
    prefixes: dict[str, list[str]] = {}
    for node in graph.ops():
        chain = prefixes.get(node.scope)
        if chain is None:
            parts = node.scope.split(".") if node.scope else []
            chain = prefixes[node.scope] = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
        known = macs_known(node)
        for p in chain:
            a = acc.get(p)
            if a is None:
                a = acc[p] = [0, 0, 0, node.id]
            a[0] += node.params
            a[1] += node.macs if known else 0
            a[2] += 0 if known else 1
    return {p: tuple(a) for p, a in acc.items()}


def _node_row(node: Node, depth: int, rf: dict) -> Row:
    op = get_op(node.op)
    known = macs_known(node)
    join = node.path is None
    return Row(node.path, node.scope, depth, "join" if join else "op", node.op, op.label(node.attrs), node.shape,
               node.params, node.macs if known else None, 0 if known else 1, rf[node.id], False)


def _totals(graph: Graph, rf: dict, dtype: str) -> dict:
    itemsize = ITEMSIZE[dtype]
    unknown = [node_label(n) for n in graph.ops() if not macs_known(n)]
    known = sum(n.macs for n in graph.ops() if macs_known(n))
    macs = None if unknown else known
    total, peak = activation_memory(graph, itemsize)
    return {
        "params": graph.num_params,
        "buffers": graph.num_buffers,
        "macs": macs,
        "macs_known": known,
        "macs_unknown": unknown,
        "gmacs": None if macs is None else macs / 1e9,
        "flops": None if macs is None else 2 * macs,
        "param_bytes": graph.num_params * itemsize,
        "activation_bytes": total,
        "peak_activation_bytes": peak,
        "receptive_field": _model_rf(graph, rf),
    }


# ------------------------------------------------------------------ text


def fmt_count(n: float) -> str:
    """1234567 -> '1.235 M' (G, M and k prefixes; small numbers as they are)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n:g}"


def fmt_bytes(n: int) -> str:
    return f"{n / 2 ** 20:.2f} MiB" if n >= 2 ** 17 else f"{n / 2 ** 10:.1f} KiB"


def axes_text(v) -> str:
    """One number when every axis has it, else one per axis (``7x3``, ``3x7x7``)."""
    return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


def _rf_cells(rf) -> tuple[str, str, str]:
    if isinstance(rf, RF):
        return axes_text(rf.size), axes_text(rf.stride), axes_text(rf.padding)
    return (rf or "", "", "")


def render_text(s: Summary) -> str:
    """The table ``archdsl summary`` prints: rows (indented by depth), then the totals."""
    header = ("module", "op", "output", "params", "MACs", "RF", "stride", "padding")
    body = []
    for r in s.rows:
        macs = "unknown" if r.macs is None else ("0" if r.macs == 0 else fmt_count(r.macs))
        shape = "x".join(map(str, r.output_shape)) if r.output_shape else ""
        body.append(("  " * (r.depth - 1) + r.name, r.label, shape, f"{r.params:,}", macs, *_rf_cells(r.receptive_field)))
    right = {3, 4, 5, 6, 7}
    widths = [max(len(row[i]) for row in body + [header]) for i in range(len(header))]

    def fmt(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    shape = lambda t: "x".join(map(str, t))  # noqa: E731
    outputs = fmt_shapes(s.output_shapes) if s.output_shapes is not None else shape(s.output_shape)
    out = [f"{s.model}: input {shape(s.input_shape)} -> output {outputs}   "
           f"(rows: {'depth ' if isinstance(s.depth, int) else ''}{s.depth}, {s.dtype})", ""]
    if body:
        out += [fmt(header), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in body] + [""]
    out += [f"{k:<16} {v}" for k, v in totals_lines(s.totals, s.dtype)]
    return "\n".join(out)


def totals_lines(t: dict, dtype: str) -> list[tuple[str, str]]:
    """The totals as (label, text) pairs; ``archdsl compile`` prints them too."""
    if t["macs"] is None:
        n = len(t["macs_unknown"])
        macs = (f"unknown: {n} op{'s' if n != 1 else ''} without a MACs formula "
                f"({', '.join(t['macs_unknown'][:3])}{', ...' if n > 3 else ''}); the others: "
                f"{fmt_count(t['macs_known'])}")
        flops = "unknown"
    else:
        macs = f"{t['macs']:,} = {t['macs'] / 1e9:.3f} GMACs (torchvision's \"GFLOPS\" figure)"
        flops = f"{t['flops']:,} = {t['flops'] / 1e9:.3f} GFLOPs (2 x MACs)"
    rf = t["receptive_field"]
    if rf["size"] is not None:
        text = (f"{axes_text(rf['size'])}, effective stride {axes_text(rf['stride'])}, effective padding "
                f"{axes_text(rf['padding'])} (at {rf['at']})")
        if rf["then"]:
            text += f"; {rf['then']} from {rf['from']} on"
    else:
        text = rf["then"]
    return [
        ("params", f"{t['params']:,} trainable ({fmt_bytes(t['param_bytes'])} in {dtype})"),
        ("buffers", f"{t['buffers']:,}"),
        ("MACs", macs),
        ("FLOPs", flops),
        ("activations", f"{fmt_bytes(t['activation_bytes'])} (every op output, batch 1, {dtype}); "
                        f"peak {fmt_bytes(t['peak_activation_bytes'])} freeing each after its last use"),
        ("receptive field", text),
    ]
