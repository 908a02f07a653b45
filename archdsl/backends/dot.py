"""The Graphviz backend: the IR drawn as a ``graphviz.Digraph``.

What is drawn is decided in three steps, all on the IR alone:

1. **View.** The module tree is walked from the model down. A scope at depth ``<= depth``
   (or named by ``expand``) is *open*: it becomes a cluster holding its children. A scope
   below that is *collapsed*: one node with its block name, output shape and total params
   and MACs. Containers (module-only holders made by dotted names) are transparent: their
   children are drawn as if they were children of the container's parent, since the data
   flow between them is wired there.
2. **Folding.** Consecutive sibling scopes with the same structure signature (block, ops,
   attributes, names and shapes, relative to the block) fold into one item marked ``x K``:
   a collapsed run is one node, an open run is the cluster of its first instance.
3. **Wrapping.** A deep network is a long chain. The drawn nodes are ranked by longest
   path; when the chain is much taller than wide it is cut into columns (rows for
   ``rankdir=LR``) at ranks where the fewest clusters are split, and the edges that jump
   from one column to the next do not constrain the ranking, so each column starts at the
   top. A cluster cut in two is drawn as two boxes, the second labelled ``(cont.)``.
4. **Encoder-decoders** are not wrapped but drawn as a U (:func:`encoder_decoder`): when the
   main path has two or more nested *skip levels* (a join fed from an earlier node of its
   spatial size while the path between dips to smaller sizes: U-Net's concatenations, an
   FPN's laterals), the encoder goes down, the decoder comes back up (its edges reversed,
   ``dir=back``) and each level is one ``rank=same`` group (with ``newrank``), so the skip
   edges are horizontal. Found from the graph alone, never from a model's name.

A model returning a dict or tuple gets one output node per entry (``output_0``, ...),
labelled with its key or position and its shape; one tensor is the node ``output``.

Every piece of text that comes from a spec (names, block names, attributes) reaches DOT
through :func:`_html` (HTML-like labels) or :func:`graphviz.escape` (tooltips), so it can
neither break the DOT syntax nor add attributes.
"""

from __future__ import annotations

import fnmatch
import html
import math
import os
import re
import shutil
from dataclasses import dataclass, field

import graphviz

from ..ir import INPUT_ID, Graph, Node, Scope

#: Fill colour per op category (``Op.category``). Every category in the registry must
#: have an entry (a test checks it); unknown ones fall back to :data:`FALLBACK_COLOR`.
CATEGORY_COLORS: dict[str, str] = {
    "conv": "#b9d6f2",
    "linear": "#d8c8f0",
    "attention": "#f4b6c2",
    "embedding": "#b5e2dc",
    "norm": "#fbe6a2",
    "activation": "#f9cfa8",
    "pool": "#c4e6bc",
    "upsample": "#a9dcc8",
    "reshape": "#e2e2e2",
    "regularization": "#f0f0f0",
    "parameter": "#f3d1e6",
    "elementwise": "#f2dcc4",
    "join": "#ffffff",
}
FALLBACK_COLOR = "#f5f0e6"
BLOCK_COLOR = "#e4e7f6"       # collapsed blocks and folded runs
IO_COLOR = "#ffffff"
CLUSTER_FILLS = ("#f7f7f9", "#ffffff")   # alternate by nesting level
FONT = "Helvetica"

FORMATS = ("svg", "png", "pdf", "dot")
RANKDIRS = ("TB", "LR")
#: the automatic depth is the deepest that draws at most this many nodes
AUTO_MAX_NODES = 120
INSTALL_HINT = "install Graphviz, e.g. `apt-get install graphviz` (Debian/Ubuntu) or `brew install graphviz` (macOS)"


class GraphvizMissing(RuntimeError):
    """The ``dot`` binary is needed (to render svg/png/pdf) and is not on PATH."""

    def __init__(self) -> None:
        super().__init__(f"rendering needs the Graphviz `dot` program, which is not on PATH; {INSTALL_HINT} "
                         "(or write DOT text with --format dot)")


class DrawError(ValueError):
    """A bad drawing option (unknown --expand path, bad depth, format or rankdir)."""


def color_for(category: str) -> str:
    return CATEGORY_COLORS.get(category, FALLBACK_COLOR)


# ------------------------------------------------------------------ text


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _html(text) -> str:
    """Spec text made safe inside an HTML-like label: entities escaped, newlines and control
    characters blanked, backslashes doubled (Graphviz expands ``\\N``, ``\\G`` even in HTML text)."""
    text = _CONTROL.sub(" ", str(text)).replace("\r", " ").replace("\n", " ")
    return html.escape(text, quote=True).replace("\\", "\\\\")


def _tooltip(text: str) -> str:
    """Spec text made safe as a plain DOT string (tooltips): backslashes literal, no raw newlines."""
    return graphviz.escape(_CONTROL.sub(" ", text).replace("\r", " ").replace("\n", " "))


def fmt_shape(shape) -> str:
    if shape is None:
        return "?"
    return "\u00d7".join(str(d) for d in shape) if shape else "scalar"


_AXIS = {"L": "tokens", "H": "H", "W": "W"}


def node_shape(n: Node) -> str:
    """A node's output shape; a layout other than channels-first is named (``197x768 (tokens x dim)``)."""
    text = fmt_shape(n.shape)
    layout = n.layout
    if n.shape and layout and len(layout) == len(n.shape) and layout not in ("CHW", "C"):
        names = [_AXIS.get(a, "dim" if (a == "C" and "L" in layout) else a) for a in layout]
        text += " (" + " \u00d7 ".join(names) + ")"
    return text


def fmt_num(n: float) -> str:
    """Compact counts for labels: 156, 4.1k, 2.36M, 11.5G."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            v = n / scale
            return f"{v:.3g}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{n:g}"


# ------------------------------------------------------------------ the module tree


class _Tree:
    """Parent links, effective depths and subtree node lists of the IR's scopes."""

    def __init__(self, g: Graph):
        self.g = g
        self.parent: dict[str, str] = {}
        for s in g.scopes.values():
            for _name, kind, ref in s.children:
                if kind == "scope" and ref in g.scopes:
                    self.parent[ref] = s.path
        self.depth: dict[str, int] = {}
        self.max_depth = 0
        self._depths("", 0)
        self.nodes: dict[str, list[int]] = {p: [] for p in g.scopes}
        for n in g.ops():
            scope = n.scope if n.scope in g.scopes else ""
            while True:
                self.nodes[scope].append(n.id)
                if scope == "":
                    break
                scope = self.parent.get(scope, "")
        self._sigs: dict[str, tuple] = {}
        self.consumers = g.consumers()

    def _depths(self, path: str, d: int) -> None:
        self.depth[path] = d
        self.max_depth = max(self.max_depth, d)
        for _name, kind, ref in self.g.scopes[path].children:
            if kind == "scope" and ref in self.g.scopes:
                child = self.g.scopes[ref]
                self._depths(ref, d if child.kind == "container" else d + 1)

    def ancestors(self, path: str):
        while path:
            path = self.parent.get(path, "")
            yield path

    def subscopes(self, path: str) -> list[str]:
        out = []
        for _name, kind, ref in self.g.scopes[path].children:
            if kind == "scope" and ref in self.g.scopes:
                out.append(ref)
                out.extend(self.subscopes(ref))
        return out

    def chained(self, a: str, b: str) -> bool:
        """Whether scope ``b`` takes only ``a``'s output and ``a``'s tensors go only to ``b``.

        Only such runs fold: the run then has one way in and one way out, so drawing one
        instance for all of them loses no edge (DenseNet's layers, each feeding a concat,
        do not chain and are not folded)."""
        in_a, in_b = set(self.nodes[a]), set(self.nodes[b])
        out_a = self.g.scopes[a].output
        for n in self.nodes[b]:
            if any(u not in in_b and u != out_a for u in self.g.nodes[n].inputs):
                return False
        return all(c in in_a or c in in_b for n in in_a for c in self.consumers[n])

    def signature(self, path: str) -> tuple:
        """What must be equal for two sibling scopes to fold: structure, attributes and shapes."""
        if path not in self._sigs:
            g = self.g
            ids = self.nodes[path]
            index = {nid: i for i, nid in enumerate(ids)}
            rel = (lambda p: p[len(path):])
            nodes = tuple(
                (rel(g.nodes[i].scope), g.nodes[i].name, g.nodes[i].op, repr(sorted(g.nodes[i].attrs.items())),
                 g.nodes[i].shape,
                 tuple(index.get(j, ("ext", g.nodes[j].shape)) for j in g.nodes[i].inputs))
                for i in ids)
            scope = g.scopes[path]
            subs = tuple((rel(p), g.scopes[p].kind, g.scopes[p].block) for p in self.subscopes(path))
            self._sigs[path] = (scope.kind, scope.block, nodes, subs,
                                index.get(scope.output, "ext"))
        return self._sigs[path]


# ------------------------------------------------------------------ the view


@dataclass
class Item:
    """One thing in the drawing: an op node, a collapsed block, a folded run, or a cluster."""

    kind: str                       # "node" | "block" | "cluster"
    id: str                         # graphviz node id (or cluster id)
    first: int                      # smallest IR node id inside, for ordering
    node: int | None = None         # kind "node"
    scope: str | None = None        # kind "block"/"cluster": the (first) scope
    members: list[str] = field(default_factory=list)   # folded run: every instance, in order
    children: list["Item"] = field(default_factory=list)

    @property
    def folded(self) -> int:
        return len(self.members) if len(self.members) > 1 else 1


def output_items(g: Graph) -> list[tuple[object, int]]:
    """(label, node id) of each model result, in order: the dict key or tuple position (nested
    structures joined with ``.``: ``aux.0``), or None for a model returning one tensor."""
    outs = g.outputs
    if not isinstance(outs, (dict, tuple)):
        return [(None, outs)]
    found: list[tuple[object, int]] = []

    def walk(s, prefix):
        entries = s.items() if isinstance(s, dict) else enumerate(s)
        for k, v in entries:
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, (dict, tuple)):
                walk(v, key)
            else:
                found.append((key, v))
    walk(outs, "")
    return found


class View:
    """What to draw for a graph at one depth: items, drawn edges and per-node representatives."""

    def __init__(self, g: Graph, tree: _Tree, depth: int, opened: set[str], fold: bool):
        self.g, self.tree, self.depth, self.opened, self.fold = g, tree, depth, opened, fold
        self._count = 0
        self.items = self._items("")
        self.rep: dict[int, str] = {INPUT_ID: "input"}
        self.inst: dict[int, list[tuple[str, int]]] = {}
        for it in self.items:
            self._assign(it)
        self.edges: dict[tuple[str, str], int] = {}   # (src, dst) -> IR node id of the tensor
        for n in g.ops():
            b = self.rep.get(n.id)
            for u in n.inputs:
                a = self.rep.get(u)
                if a is None or b is None or a == b or self._cross_instance(u, n.id):
                    continue
                self.edges.setdefault((a, b), u)
        # the model's results: one output node per entry of a dict or tuple result, labelled with
        # its key or position (a model returning one tensor has the single node "output")
        entries = output_items(g)
        self.outputs: list[tuple[str, object, int]] = [
            ("output" if key is None and len(entries) == 1 else f"output_{i}", key, nid)
            for i, (key, nid) in enumerate(entries)]
        for oid, _key, nid in self.outputs:
            self.edges.setdefault((self.rep.get(nid, "input"), oid), nid)
        self.edge_labels: dict[tuple[str, str], str] = {}
        self.u_plan: "UPlan | None" = None    # set by diagram(): the encoder-decoder layout drawn
        #: the IR tensor each drawn node stands for (its output; a block's output)
        self.tensor: dict[str, int] = {"input": INPUT_ID}
        for it, _ in self.walk():
            if it.kind == "node":
                self.tensor[it.id] = it.node
            elif it.kind == "block":
                self.tensor[it.id] = g.scopes[it.members[-1]].output
        for oid, _key, nid in self.outputs:
            self.tensor[oid] = nid

    # building ------------------------------------------------------------
    def is_open(self, path: str) -> bool:
        return path == "" or self.tree.depth[path] <= self.depth or path in self.opened

    def _new_id(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def _items(self, path: str) -> list[Item]:
        g, tree = self.g, self.tree
        raw: list[Item] = []
        for _name, kind, ref in g.scopes[path].children:
            if kind == "node":
                if ref in g.nodes:
                    raw.append(Item("node", f"n{ref}", ref, node=ref))
                continue
            if ref not in g.scopes or not tree.nodes[ref]:
                continue
            child = g.scopes[ref]
            first = tree.nodes[ref][0]
            if child.kind == "container":
                raw.extend(self._items(ref))
            elif self.is_open(ref):
                raw.append(Item("cluster", self._new_id("c"), first, scope=ref, members=[ref],
                                children=self._items(ref)))
            else:
                raw.append(Item("block", self._new_id("b"), first, scope=ref, members=[ref]))
        if self.fold:
            raw = self._fold(raw)
        raw.extend(Item("node", f"n{j}", j, node=j) for j in g.scopes[path].functional if j in g.nodes)
        raw.sort(key=lambda it: it.first)
        return raw

    def _open_signature(self, path: str) -> tuple:
        return tuple(p[len(path):] for p in [path] + self.tree.subscopes(path) if self.is_open(p))

    def _fold(self, items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for it in items:
            prev = out[-1] if out else None
            if (prev is not None and it.kind != "node" and prev.kind == it.kind
                    and self.g.scopes[it.scope].kind != "container"
                    and self.tree.signature(prev.scope) == self.tree.signature(it.scope)
                    and self.tree.chained(prev.members[-1], it.scope)
                    and self._open_signature(prev.scope) == self._open_signature(it.scope)):
                prev.members.append(it.scope)
                continue
            out.append(it)
        return out

    def _assign(self, it: Item) -> None:
        tree = self.tree
        if it.kind == "node":
            self.rep[it.node] = it.id
            return
        if it.kind == "block":
            for m in it.members:
                for n in tree.nodes[m]:
                    self.rep[n] = it.id
            return
        for c in it.children:
            self._assign(c)
        if it.folded > 1:
            first = tree.nodes[it.members[0]]
            for n in first:
                self.inst.setdefault(n, []).append((it.id, 0))
            for k, m in enumerate(it.members[1:], 1):
                for j, n in enumerate(tree.nodes[m]):
                    if j < len(first):
                        self.rep[n] = self.rep.get(first[j])
                        self.inst.setdefault(n, []).append((it.id, k))

    def _cross_instance(self, u: int, v: int) -> bool:
        a = dict(self.inst.get(u, ()))
        return any(fid in a and a[fid] != k for fid, k in self.inst.get(v, ()))

    # queries ---------------------------------------------------------------
    def walk(self, items=None, level=0):
        """(item, nesting level) for every item, depth first."""
        for it in self.items if items is None else items:
            yield it, level
            if it.kind == "cluster":
                yield from self.walk(it.children, level + 1)

    def drawn_nodes(self) -> list[str]:
        """Graphviz ids of the drawn nodes (input and output included), in order."""
        return ["input"] + [it.id for it, _ in self.walk() if it.kind != "cluster"] + self.output_ids

    @property
    def output_ids(self) -> list[str]:
        """Graphviz ids of the output nodes: ``output``, or ``output_0``, ``output_1``, ... (one per entry)."""
        return [oid for oid, _key, _nid in self.outputs]


def build_view(g: Graph, depth: int | None = None, expand=(), fold: bool = True,
               max_nodes: int = AUTO_MAX_NODES) -> View:
    """The view at ``depth`` (None: the deepest one drawing at most ``max_nodes`` nodes)."""
    tree = _Tree(g)
    opened = _expanded(g, tree, expand)
    if depth is not None:
        if depth < 0:
            raise DrawError(f"depth must be 0 or more, got {depth}")
        return View(g, tree, depth, opened, fold)
    best = View(g, tree, 0, opened, fold)
    for d in range(1, tree.max_depth + 1):
        v = View(g, tree, d, opened, fold)
        if len(v.drawn_nodes()) > max_nodes:
            break
        best = v
    return _open_more(best, max_nodes)


def _open_more(view: View, max_nodes: int) -> View:
    """Open collapsed blocks one level below the view's depth, smallest first, while they fit.

    DenseNet-201 at one uniform depth shows its dense blocks either all collapsed or 300
    nodes; this opens the transitions and the small dense blocks and leaves the big ones
    collapsed. Runs of folded blocks open together."""
    candidates = [it for it, _ in view.walk() if it.kind == "block" and view.tree.depth[it.scope] == view.depth + 1]
    if not candidates:
        return view
    size = len(view.drawn_nodes())
    trial = {}
    for it in candidates:
        v = View(view.g, view.tree, view.depth, view.opened | set(it.members), view.fold)
        trial[it.scope] = len(v.drawn_nodes()) - size
    opened = set(view.opened)
    for it in sorted(candidates, key=lambda it: trial[it.scope]):   # stable: drawing order among equals
        if size + trial[it.scope] > max_nodes:
            continue
        v = View(view.g, view.tree, view.depth, opened | set(it.members), view.fold)
        if len(v.drawn_nodes()) <= max_nodes:
            opened |= set(it.members)
            size, view = len(v.drawn_nodes()), v
    return view


def _expanded(g: Graph, tree: _Tree, patterns) -> set[str]:
    """Scopes opened by ``--expand`` patterns (exact paths or globs), with their ancestors."""
    opened: set[str] = set()
    for pat in patterns or ():
        hits = [p for p in g.scopes if p and (p == pat or fnmatch.fnmatchcase(p, pat))]
        if not hits:
            from ..diagnostics import did_you_mean
            hint = did_you_mean(pat, [p for p in g.scopes if p])
            raise DrawError(f"--expand {pat!r} matches no module of {g.name}" + (f"; {hint}" if hint else ""))
        for p in hits:
            if g.scopes[p].kind == "container":   # open what it holds
                opened.update(c[2] for c in g.scopes[p].children if c[1] == "scope")
            opened.add(p)
            opened.update(tree.ancestors(p))
    return opened


# ------------------------------------------------------------------ wrapping


def _ranks(nodes: list[str], edges) -> dict[str, int]:
    """Longest-path rank of every drawn node (edges closing a cycle are ignored)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    indeg = {n: 0 for n in nodes}
    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
    rank = {n: 0 for n in nodes}
    ready = [n for n in nodes if indeg[n] == 0]
    seen = 0
    while ready:
        n = ready.pop()
        seen += 1
        for m in succ[n]:
            rank[m] = max(rank[m], rank[n] + 1)
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    return rank


def _bands(view: View, rank: dict[str, int], rankdir: str, columns: int | None) -> list[int]:
    """Ranks after which to start a new column: few, at cuts that split the fewest clusters."""
    height = max(rank.values()) + 1
    per_rank: dict[int, int] = {}
    for r in rank.values():
        per_rank[r] = per_rank.get(r, 0) + 1
    breadth = max(per_rank.values())
    columns_given = columns
    if columns is None:
        # rough drawing sizes in inches: a rank is ~0.75 tall and a node ~2.2 wide (TB)
        step, across = (0.95, 2.2 * breadth + 0.6) if rankdir == "TB" else (2.6, 0.8 * breadth + 0.4)
        target = 1.25 if rankdir == "TB" else 0.8        # length : breadth of the whole drawing
        columns = max(1, round(math.sqrt(height * step / (target * across))))
    columns = max(1, min(columns, height // 4 or 1))
    if columns == 1 or (height <= 12 and columns_given is None):
        return []
    spans = []   # (min rank, max rank, weight) per cluster
    for it, level in view.walk():
        if it.kind == "cluster":
            rs = [rank[c.id] for c, _ in view.walk(it.children) if c.kind != "cluster"]
            if rs:
                spans.append((min(rs), max(rs), 4 ** min(level, 4)))
    crossing = [0] * height
    for (a, b) in view.edges:
        for r in range(rank[a], min(rank[b], height)):
            crossing[r] += 1
    cost = [crossing[r] * 0.5 + sum(w for lo, hi, w in spans if lo <= r < hi) for r in range(height)]
    g = view.g
    for (a, b), t in view.edges.items():   # prefer cutting where the resolution drops (after a pool)
        n = g.nodes[t]
        if n.inputs and n.shape and len(n.shape) == 3 and n.shape[1:] != g.nodes[n.inputs[0]].shape[1:]:
            for r in range(rank[a], min(rank[b], height)):
                cost[r] -= 1.0
    return _best_cuts(cost, height, columns)


def _best_cuts(cost: list[float], height: int, columns: int) -> list[int]:
    """Cut ranks ``0..height-1`` into ``columns`` runs: cheap cuts, columns of similar length.

    Dynamic programming over (columns so far, last cut); a column of length ``l`` costs
    ``(l - L)**2 / L`` with ``L`` the mean length, a cut after rank ``r`` costs ``cost[r]``.
    """
    mean = height / columns
    inf = float("inf")
    # best[j][r]: columns 0..j cover ranks 0..r and column j ends at r
    best = [[inf] * height for _ in range(columns)]
    back = [[-1] * height for _ in range(columns)]
    for r in range(height):
        best[0][r] = (r + 1 - mean) ** 2 / mean
    for j in range(1, columns):
        for r in range(j, height):
            for c in range(j - 1, r):      # previous column ends at c
                if best[j - 1][c] == inf or r - c < 2:
                    continue
                v = best[j - 1][c] + cost[c] + (r - c - mean) ** 2 / mean
                if v < best[j][r]:
                    best[j][r], back[j][r] = v, c
    cuts, r = [], height - 1
    for j in range(columns - 1, 0, -1):
        r = back[j][r]
        if r < 0:
            return []
        cuts.append(r)
    return sorted(cuts)


# ------------------------------------------------------------------ encoder-decoder layout


@dataclass
class UPlan:
    """How an encoder-decoder is drawn as a U (see :func:`encoder_decoder`).

    ``skips``: (source, join) drawn ids of each skip level, outermost first; ``up``: the
    decoder side, whose edges are drawn reversed so it flows back up; ``groups``: the drawn
    ids put on one rank (each skip level with the nodes on its way, and the bottom turn);
    ``flat``: the data edges inside those groups."""

    skips: list[tuple[str, str]]
    up: set[str]
    groups: list[list[str]]
    flat: set[tuple[str, str]]


def _spatial(n: Node):
    """The spatial dims of a node's output (H x W, T x H x W, ...), or None (tokens, vectors)."""
    shape, layout = n.shape, n.layout
    if not shape:
        return None
    if layout and len(layout) == len(shape):
        if "L" in layout:
            return None
        dims = tuple(d for a, d in zip(layout, shape) if a != "C")
    elif len(shape) >= 3:
        dims = tuple(shape[1:])
    else:
        return None
    return dims or None


def encoder_decoder(view: View, max_path: int = 3) -> UPlan | None:
    """The U of an encoder-decoder drawing, or None when the view is not one.

    On the longest drawn path from the input (the *spine*), a *skip* is a join whose other
    input comes from an earlier spine node ``u`` (directly or through up to ``max_path``
    off-spine nodes, such as an FPN's lateral 1x1 conv) of the join's spatial size, while the
    spine between them goes to a smaller size and back up. Skips must nest (U-Net's levels,
    an FPN's top-down path); with skips at two or more sizes, the spine turns at its smallest
    size inside the innermost skip (where it leaves a top-level module if it does there, such
    as U-Net's bottleneck or an FPN's body, else at the last smallest node): the encoder runs
    down to the turn, the decoder (the turn's successor and everything after it) is drawn
    flowing back up, and each skip level is one rank, so its edge is horizontal and crosses
    no column. Residual sums and dense concatenations (no dip), ASPP (one size) and a single
    low-level skip are not a U."""
    g = view.g
    nodes = view.drawn_nodes()
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in view.edges:
        succ[a].append(b)
        pred[b].append(a)
    # longest path from the input, in a topological order
    indeg = {n: len(pred[n]) for n in nodes}
    ready = [n for n in nodes if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    dist, back = {"input": 0}, {}
    for n in order:
        if n in dist:
            for m in succ[n]:
                if dist.get(m, -1) < dist[n] + 1:
                    dist[m], back[m] = dist[n] + 1, n
    ends = [o for o in view.output_ids if o in dist]
    if not ends:
        return None
    spine = [max(ends, key=lambda o: dist[o])]
    while spine[-1] in back:
        spine.append(back[spine[-1]])
    spine.reverse()
    pos = {n: i for i, n in enumerate(spine)}
    space = {n: _spatial(g.nodes[view.tensor[n]]) if n in view.tensor else None for n in nodes}
    size = {n: math.prod(d) if d else None for n, d in space.items()}

    found = []   # (p, q, path): spine[p] -> path... -> spine[q]
    for q, j in enumerate(spine):
        if space[j] is None:
            continue
        for a in pred[j]:
            if q == 0 or a == spine[q - 1]:
                continue
            path, x = [], a
            while x not in pos and len(path) < max_path and len(pred[x]) == 1:
                path.append(x)
                x = pred[x][0]
            if x not in pos or pos[x] >= q - 1 or space[x] != space[j]:
                continue
            between = [size[c] for c in spine[pos[x] + 1:q] if size[c] is not None]
            if between and min(between) < size[j]:
                found.append((pos[x], q, path[::-1]))
                break
    found.sort()
    skips = []
    for p, q, path in found:          # keep the ones that nest, outermost first
        if not skips or (p > skips[-1][0] and q < skips[-1][1]):
            skips.append((p, q, path))
    if len({space[spine[q]] for _p, q, _path in skips}) < 2:
        return None
    lo, hi = skips[-1][0], skips[-1][1]
    inner = [i for i in range(lo + 1, hi) if size[spine[i]] is not None]
    if not inner:
        return None
    smallest = min(size[spine[i]] for i in inner)
    bottom = [i for i in inner if size[spine[i]] == smallest]
    # turn where the spine leaves a top-level module (U-Net's bottleneck, an FPN's body), else last
    top = {}
    for k, it in enumerate(view.items):
        for c, _ in view.walk([it]):
            top[c.id] = k
    leaving = [i for i in bottom if top.get(spine[i]) != top.get(spine[i + 1])]
    t = (leaving or bottom)[-1]
    up, todo = set(), [spine[t + 1]]
    while todo:
        n = todo.pop()
        if n not in up:
            up.add(n)
            todo.extend(succ[n])
    groups = [[spine[t], spine[t + 1]]]
    kept = []
    for p, q, path in skips:
        if any(x in up for x in path):
            continue
        kept.append((spine[p], spine[q]))
        groups.append([spine[p], *path, spine[q]])
    flat = {(a, b) for grp in groups for a, b in zip(grp, grp[1:]) if (a, b) in view.edges}
    merged: list[list[str]] = []     # groups sharing a node are one rank
    for grp in groups:
        hit = [m for m in merged if set(m) & set(grp)]
        new = [n for m in hit for n in m] + [n for n in grp if not any(n in m for m in hit)]
        merged = [m for m in merged if m not in hit] + [new]
    groups = merged
    return UPlan(kept, up, groups, flat)


# ------------------------------------------------------------------ labels


def _rows(*rows: tuple[str, str]) -> str:
    """An HTML-like label: one table row per (style, already-escaped text)."""
    cells = []
    for style, text in rows:
        if style == "path":
            text = f'<font point-size="9" color="#444444">{text}</font>'
        elif style == "op":
            text = f"<b>{text}</b>"
        elif style == "info":
            text = f'<font point-size="9">{text}</font>'
        cells.append(f"<tr><td>{text}</td></tr>")
    return f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="0">{"".join(cells)}</table>>'


def _op(name: str):
    from ..ops import get_op
    return get_op(name)


def _op_label(n: Node) -> str:
    op = _op(n.op)
    try:
        return op.label(n.attrs) if op is not None else n.op
    except Exception:   # a label must never stop a drawing
        return n.op


def _category(n: Node) -> str:
    op = _op(n.op)
    return getattr(op, "category", "") if op is not None else ""


def _seq_text(g: Graph, scope: Scope) -> str:
    """``seq of 48 DenseLayer`` or ``seq of 3 modules``: what a collapsed seq holds."""
    blocks = {g.scopes[ref].block if kind == "scope" and ref in g.scopes else None
              for _name, kind, ref in scope.children}
    n = len(scope.children)
    kind = scope.kind if scope.kind != "block" else "block"
    if len(blocks) == 1 and None not in blocks:
        return f"{kind} of {n} {blocks.pop()}"
    return f"{kind} of {n} module{'s' if n != 1 else ''}"


def _run_name(members: list[str]) -> str:
    return members[0] if len(members) == 1 else f"{members[0]} \u2013 {members[-1]}"


def _costs(params: int, macs: int) -> str:
    parts = []
    if params:
        parts.append(f"{fmt_num(params)} params")
    if macs:
        parts.append(f"{fmt_num(macs)} MACs")
    return " \u00b7 ".join(parts)


# ------------------------------------------------------------------ emission


def to_dot(g: Graph, depth: int | None = None, expand=(), fold: bool = True, rankdir: str = "TB",
           columns: int | None = None, max_nodes: int = AUTO_MAX_NODES) -> graphviz.Digraph:
    """Draw ``g`` as a ``graphviz.Digraph`` (see the module docstring for what is drawn).

    ``depth``: open scopes down to this depth (the model is 0); None picks the deepest
    depth that draws at most ``max_nodes`` nodes. ``expand``: module paths (or globs) to
    open whatever the depth. ``fold``: fold runs of identical blocks. ``columns``: how
    many columns to wrap a long chain into (None: chosen from the drawing's proportions;
    1: never wrap).
    """
    return diagram(g, depth, expand, fold, rankdir, columns, max_nodes)[0]


def diagram(g: Graph, depth: int | None = None, expand=(), fold: bool = True, rankdir: str = "TB",
            columns: int | None = None, max_nodes: int = AUTO_MAX_NODES) -> tuple[graphviz.Digraph, View]:
    """:func:`to_dot`, also returning the :class:`View` drawn (its depth, drawn nodes and edges)."""
    if rankdir not in RANKDIRS:
        raise DrawError(f"rankdir must be one of {', '.join(RANKDIRS)}, got {rankdir!r}")
    if columns is not None and columns < 1:
        raise DrawError(f"columns must be 1 or more, got {columns}")
    view = build_view(g, depth, expand, fold, max_nodes)
    view.u_plan = encoder_decoder(view) if columns is None else None
    return _emit(view, rankdir, columns), view


def _emit(view: View, rankdir: str, columns: int | None) -> graphviz.Digraph:
    g = view.g
    nodes = view.drawn_nodes()
    rank = _ranks(nodes, view.edges)
    plan = view.u_plan
    cuts = [] if plan is not None else _bands(view, rank, rankdir, columns)
    band = {n: sum(1 for c in cuts if rank[n] > c) for n in nodes}

    dot = graphviz.Digraph(name=_tooltip(g.name))
    dot.attr("graph", rankdir=rankdir, fontname=FONT, fontsize="10", nodesep="0.2", ranksep="0.28",
             labelloc="t", labeljust="l", label=_legend(view), tooltip=_tooltip(g.name))
    if plan is not None:   # one global ranking, so `rank=same` may tie nodes of different clusters
        dot.attr("graph", newrank="true")
    dot.attr("node", shape="box", style="rounded,filled", fontname=FONT, fontsize="11", margin="0.1,0.04",
             color="#666666", penwidth="0.8")
    dot.attr("edge", color="#555555", arrowsize="0.6", penwidth="0.9", fontname=FONT, fontsize="8")

    first_band = {}

    def emit(parent, items, b, level):
        for it in items:
            if it.kind != "cluster":
                if band[it.id] == b:
                    _node(parent, view, it)
                continue
            bands = {band[c.id] for c, _ in view.walk(it.children) if c.kind != "cluster"}
            if b not in bands:
                continue
            cont = b != min(bands)
            with parent.subgraph(name=f"cluster_{it.id}_{b}") as sub:
                sub.attr(label=_cluster_label(view, it, cont), style="rounded,filled",
                         fillcolor=CLUSTER_FILLS[level % 2],
                         color="#5b4a9e" if it.folded > 1 else "#9a9a9a",
                         penwidth="1.6" if it.folded > 1 else "0.8",
                         fontname=FONT, fontsize="10", labeljust="l", margin="6",
                         tooltip=_tooltip(_run_name(it.members)))
                emit(sub, it.children, b, level + 1)

    for b in range(len(cuts) + 1):
        if band["input"] == b:
            dot.node("input", _rows(("op", "input"), ("info", _html(fmt_shape(g.input_shape)))),
                     fillcolor=IO_COLOR, shape="box", style="rounded,filled,bold")
        emit(dot, view.items, b, 0)
        for oid, key, nid in view.outputs:
            if band[oid] != b:
                continue
            shape = _html(fmt_shape(g.nodes[nid].shape))
            if key is None:
                dot.node(oid, _rows(("op", "output"), ("info", shape)),
                         fillcolor=IO_COLOR, shape="box", style="rounded,filled,bold")
            else:
                dot.node(oid, _rows(("path", "output"), ("op", _html(key)), ("info", shape)),
                         fillcolor=IO_COLOR, shape="box", style="rounded,filled,bold",
                         tooltip=_tooltip(f"output {key}"))
        first_band[b] = min((n for n in nodes if band[n] == b), key=lambda n: rank[n])

    for (a, b), tensor in view.edges.items():
        attrs = {"tooltip": _tooltip(fmt_shape(g.nodes[tensor].shape))}
        named = g.nodes[tensor].tensor_name if tensor in g.nodes else None
        if (a, b) in view.edge_labels:
            attrs.update(label=_tooltip(view.edge_labels[(a, b)]), fontname=FONT, fontsize="9")
        elif named:  # a tensor the spec named with `let`: its edges carry the name
            attrs.update(label=_tooltip(named), fontname=FONT, fontsize="9", fontcolor="#5b4a9e")
        if band[a] != band[b]:
            attrs.update(constraint="false", style="dashed", color="#8a8a8a")
        if plan is not None:
            if a in plan.up and b in plan.up:     # the decoder flows back up: drawn b <- a
                dot.edge(b, a, dir="back", **attrs)
                continue
            if (a, b) in plan.flat:               # a skip level or the turn at the bottom
                attrs.update(color="#5b4a9e", penwidth="1.2")
            elif b in plan.up:                    # any other edge into the decoder side: no pull
                attrs.update(constraint="false")
        dot.edge(a, b, **attrs)
    if cuts:   # keep the columns in order, side by side, starting at the top
        heads = [first_band[b] for b in range(len(cuts) + 1)]
        for h1, h2 in zip(heads, heads[1:]):
            dot.edge(h1, h2, style="invis", minlen="0", weight="10")
    if plan is not None:   # each skip level (and the bottom) on one rank
        for group in plan.groups:
            with dot.subgraph() as same:
                same.attr(rank="same")
                for n in group:
                    same.node(n)
    return dot


def _node(parent, view: View, it: Item) -> None:
    g, tree = view.g, view.tree
    if it.kind == "node":
        n = g.nodes[it.node]
        label = _op_label(n)
        tip = f"{n.path or (n.scope or '(model)')}: {n.op} {fmt_shape(n.shape)}"
        if n.span is not None:
            tip += f" ({n.span.location})"
        if n.name is None:   # a functional join: small, so the skips stand out
            ins = {g.nodes[i].shape for i in n.inputs}
            rows = [("op", _html(label))]
            if ins != {n.shape}:
                rows.append(("info", _html(node_shape(n))))
            short = len(label) <= 2 and len(rows) == 1
            parent.node(it.id, _rows(*rows), shape="circle" if short else "ellipse",
                        fillcolor=color_for(_category(n)), margin="0.02" if short else "0.05,0.02",
                        width="0.3", height="0.3", style="filled", tooltip=_tooltip(tip))
            return
        info = node_shape(n) + (f" \u00b7 {fmt_num(n.params)} params" if n.params else "")
        parent.node(it.id, _rows(("path", _html(n.path)), ("op", _html(label)), ("info", _html(info))),
                    fillcolor=color_for(_category(n)), tooltip=_tooltip(tip))
        return
    # a collapsed block or a folded run
    scope = g.scopes[it.scope]
    ids = [n for m in it.members for n in tree.nodes[m]]
    params = sum(g.nodes[n].params for n in ids)
    macs = sum(g.nodes[n].macs for n in ids)
    what = scope.block or _seq_text(g, scope)
    if it.folded > 1:
        what = f"{what} \u00d7 {it.folded}"
    out = g.nodes[g.scopes[it.members[-1]].output]
    rows = [("path", _html(_run_name(it.members))), ("op", _html(what)), ("info", _html(node_shape(out)))]
    costs = _costs(params, macs)
    if costs:
        rows.append(("info", _html(costs)))
    parent.node(it.id, _rows(*rows), fillcolor=BLOCK_COLOR, penwidth="1.4",
                peripheries="2" if it.folded > 1 else "1",
                tooltip=_tooltip(f"{_run_name(it.members)}: {what}, {len(ids)} ops"))


def _cluster_label(view: View, it: Item, cont: bool) -> str:
    g, tree = view.g, view.tree
    scope = g.scopes[it.scope]
    name = _run_name(it.members)
    head = f"<b>{_html(name)}</b>"
    if scope.block:
        head += f"  <i>{_html(scope.block)}</i>"
    if it.folded > 1:
        head += f"  <b>\u00d7 {it.folded}</b>"
    if cont:
        return f"<{head} (cont.)>"
    ids = [n for m in it.members for n in tree.nodes[m]]
    costs = _costs(sum(g.nodes[n].params for n in ids), sum(g.nodes[n].macs for n in ids))
    if it.folded > 1:
        costs = f"one of {it.folded} identical blocks shown" + (f"; all: {costs}" if costs else "")
    return f'<{head}<br/><font point-size="9">{_html(costs)}</font>>' if costs else f"<{head}>"


def _legend(view: View) -> str:
    """The graph label: title line and a colour key for the categories drawn."""
    g = view.g
    cats: list[str] = []
    blocks = folds = False
    for it, _ in view.walk():
        if it.kind == "node":
            c = _category(g.nodes[it.node])
            if c not in cats:
                cats.append(c)
        elif it.kind == "block":
            blocks = True
        if it.folded > 1:
            folds = True
    order = list(CATEGORY_COLORS)
    cats.sort(key=lambda c: order.index(c) if c in order else len(order))
    keys = [(color_for(c), _html(c or "other"), "") for c in cats]
    if blocks:
        keys.append((BLOCK_COLOR, "block (collapsed)", ""))
    if folds:
        keys.append((BLOCK_COLOR, "\u00d7 K: K identical blocks", ""))
    outs = [(key, fmt_shape(g.nodes[nid].shape)) for _oid, key, nid in view.outputs]
    if len(outs) == 1:
        result = outs[0][1]
    elif len(outs) <= 3:
        result = ", ".join(f"{key} {shape}" for key, shape in outs)
    else:
        result = f"{len(outs)} outputs ({', '.join(str(key) for key, _ in outs)})"
    title = (f"<b>{_html(g.name)}</b>   input {_html(fmt_shape(g.input_shape))} \u2192 "
             f"{_html(result)} \u00b7 {fmt_num(g.num_params)} params \u00b7 "
             f"{fmt_num(g.macs)} MACs")
    cells = "".join(f'<td bgcolor="{c}" border="1" color="#888888">{t}</td>' for c, t, _ in keys)
    return (f'<<table border="0" cellspacing="3" cellpadding="2">'
            f'<tr><td colspan="{max(1, len(keys))}" align="left"><font point-size="14">{title}</font></td></tr>'
            f'<tr>{cells or "<td></td>"}</tr></table>>')


# ------------------------------------------------------------------ rendering


def has_dot() -> bool:
    return shutil.which("dot") is not None


def render(dot: graphviz.Digraph, path, format: str | None = None, dpi: int | None = None) -> str:
    """Write ``dot`` to ``path`` as svg, png, pdf or dot (from the extension if ``format`` is None).

    The file is written atomically (a temporary file beside it, then renamed). Raises
    :class:`GraphvizMissing` when the ``dot`` binary is needed and absent.
    """
    path = os.fspath(path)
    if format is None:
        ext = os.path.splitext(path)[1].lstrip(".").lower()
        format = ext if ext in FORMATS or ext == "gv" else "svg"
        if format == "gv":
            format = "dot"
    if format not in FORMATS:
        raise DrawError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "dot":
        data = dot.source.encode("utf-8")
    else:
        if not has_dot():
            raise GraphvizMissing()
        if dpi is not None and format == "png":
            dot = dot.copy()
            dot.attr("graph", dpi=str(int(dpi)))
        data = dot.pipe(format=format)
    from ..atomicio import atomic_write
    atomic_write(path, lambda f: f.write(data), prefix=".archdsl-draw-", suffix="." + format)
    return path
