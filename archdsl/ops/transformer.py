"""Transformer ops and parameters that live directly on a module (ViT, ConvNeXt, Swin).

``class_token``, ``pos_embedding`` and ``layer_scale`` own one ``nn.Parameter`` registered
on the enclosing module under the statement's label (``cls: class_token()`` gives the key
``cls``); the zoo's specs label them as torchvision names them (``class_token: class_token()``).
"""

from __future__ import annotations

from .registry import (BOOL, FLOAT, NON_NEGATIVE, NONNEG_PAIR, POS_INT, POS_PAIR, PROB, Arg, Op, ShapeError, Window,
                       channels_last_required, fmt_shape, register)

TOKENS = "a token sequence (tokens x dim)"


def _tokens(op: str, x) -> tuple[int, int]:
    if len(x) != 2:
        help_ = None
        if len(x) == 3:  # P sequences of N tokens: one sequence per sample, the others into the batch
            help_ = (f"`{op}` takes one sequence per sample: for {x[0]} sequences of {x[1]} tokens, fold them "
                     f"into the batch with `merge_batch()` before it and `split_batch({x[0]})` after it")
        raise ShapeError(f"`{op}` expects {TOKENS}, got {fmt_shape(x)}", f"input is {fmt_shape(x)}", help=help_)
    return x


def _to_tokens(x, layout) -> str:
    """How a map whose last axis is not the channels becomes a token sequence."""
    if len(x) == 3 and layout == "CHW":
        return f"make {x[1] * x[2]} tokens of {x[0]} from the CxHxW map with `flatten(2)` and `permute([0, 2, 1])`"
    return "make tokens x channels with `permute`"


@register
class MultiheadAttention(Op):
    """Multi-head self-attention over a token sequence (``torch.nn.MultiheadAttention``, batch first).

    Called as ``attn(x, x, x, need_weights=False)[0]``, as torchvision's ViT encoder does.
    MACs: the q/k/v and output projections (4 N D^2) plus QK^T and AV (2 N^2 D).
    """

    name = "mha"
    category = "attention"
    macs_rule = "formula"
    torch_class = "MultiheadAttention"
    custom_call = True
    param_names = ("in_proj_weight", "in_proj_bias")
    args = (Arg("num_heads", POS_INT, doc="number of attention heads; must divide the embedding dim"),
            Arg("dropout", PROB, 0.0, "dropout on the attention weights"),
            Arg("bias", BOOL, True, "biases in the input and output projections"))

    def check_layout(self, a, ins, layouts):
        channels_last_required(self.name, ins[0], layouts[0], _to_tokens(ins[0], layouts[0]))

    def infer(self, a, ins):
        n, d = _tokens(self.name, ins[0])
        if d % a["num_heads"]:
            raise ShapeError(f"embedding dim {d} is not divisible by num_heads ({a['num_heads']})",
                             f"{d} / {a['num_heads']}", arg="num_heads")
        return ins[0]

    def params(self, a, ins):
        d = ins[0][1]
        return 4 * d * d + (4 * d if a["bias"] else 0)

    def macs(self, a, ins, out):
        n, d = ins[0]
        return 4 * n * d * d + 2 * n * n * d

    def window(self, a, ins, layouts):
        return "global"  # every token attends to every token

    def build(self, a, ins, inplace=False):
        from torch import nn
        return nn.MultiheadAttention(ins[0][1], a["num_heads"], dropout=a["dropout"], bias=a["bias"],
                                     batch_first=True)

    def call(self, graph, name, args, a):
        import operator
        x = args[0]
        out = graph.call_module(name, (x, x, x), {"need_weights": False})
        return graph.call_function(operator.getitem, (out, 0))

    def label(self, a):
        return f"attention, {a['num_heads']} heads"


class _DirectParam(Op):
    """An op owning one parameter on the enclosing module; ``emit`` gets it as its last argument."""

    direct_param = True
    macs_rule = "zero"  # concatenation, addition, element-wise scaling


@register
class ClassToken(_DirectParam):
    """Prepend a learnable class token (a ``1 x 1 x dim`` parameter, zeros) to a token sequence, as in ViT."""

    name = "class_token"
    category = "embedding"

    def check_layout(self, a, ins, layouts):
        channels_last_required(self.name, ins[0], layouts[0], _to_tokens(ins[0], layouts[0]))

    def infer(self, a, ins):
        n, d = _tokens(self.name, ins[0])
        return (n + 1, d)

    def params(self, a, ins):
        return ins[0][1]

    def make_param(self, a, ins):
        import torch
        return torch.zeros(1, 1, ins[0][1])

    def emit(self, graph, a, args, inplace=False, ins=None):
        import torch
        x, token = args
        n = graph.call_method("size", (x, 0))
        batch = graph.call_method("expand", (token, n, -1, -1))
        return graph.call_function(torch.cat, ([batch, x],), {"dim": 1})

    def label(self, a):
        return "class token"


@register
class PosEmbedding(_DirectParam):
    """Add a learnable position embedding (a ``1 x tokens x dim`` parameter drawn from N(0, std^2))."""

    name = "pos_embedding"
    category = "embedding"
    args = (Arg("std", FLOAT, 0.02, "standard deviation of the initial values", range=NON_NEGATIVE),)

    def check_layout(self, a, ins, layouts):
        channels_last_required(self.name, ins[0], layouts[0], _to_tokens(ins[0], layouts[0]))

    def infer(self, a, ins):
        return _tokens(self.name, ins[0])

    def params(self, a, ins):
        return ins[0][0] * ins[0][1]

    def make_param(self, a, ins):
        import torch
        return torch.empty(1, *ins[0]).normal_(std=a["std"])

    def emit(self, graph, a, args, inplace=False, ins=None):
        import operator
        return graph.call_function(operator.add, (args[0], args[1]))

    def label(self, a):
        return "+ position embedding"


@register
class LayerScale(_DirectParam):
    """Multiply by a learnable per-channel scale initialized to ``value`` (ConvNeXt's ``layer_scale``).

    The parameter is ``C x 1 x 1`` for a CxHxW map and ``dim`` for tokens.
    """

    name = "layer_scale"
    category = "linear"
    args = (Arg("value", FLOAT, 1e-6, "initial value of every scale"),)

    def check_layout(self, a, ins, layouts):
        if len(ins[0]) == 3 and layouts[0] not in (None, "CHW"):
            raise ShapeError(f"`layer_scale` scales the channels of a CxHxW map; this {fmt_shape(ins[0])} map is "
                             f"laid out {'x'.join(layouts[0])}", f"input is {'x'.join(layouts[0])}",
                             help="apply it after `permute([0, 3, 1, 2])`, as ConvNeXt does")

    def infer(self, a, ins):
        if not ins[0]:
            raise ShapeError("`layer_scale` needs at least one dimension", "input is a scalar")
        return ins[0]

    def _shape(self, ins):
        x = ins[0]
        return (x[0], 1, 1) if len(x) == 3 else (x[-1],)

    def params(self, a, ins):
        return self._shape(ins)[0]

    def make_param(self, a, ins):
        import torch
        return torch.ones(*self._shape(ins)) * a["value"]

    def emit(self, graph, a, args, inplace=False, ins=None):
        import operator
        return graph.call_function(operator.mul, (args[1], args[0]))

    def label(self, a):
        return f"layer scale {a['value']:g}"


def _channels_last_map(op: str, x) -> tuple[int, int, int]:
    if len(x) != 3:
        raise ShapeError(f"`{op}` expects an HxWxC (channels-last) map, got {fmt_shape(x)}",
                         f"input is {fmt_shape(x)}",
                         help="make a CxHxW map channels-last with `permute([0, 2, 3, 1])`")
    return x


@register
class ShiftedWindowAttention(Op):
    """Swin's window multi-head self-attention with relative position bias on an HxWxC (channels-last) map,
    windows shifted by ``shift_size`` (torchvision's ``ShiftedWindowAttention``; ``v2 = true``:
    ``ShiftedWindowAttentionV2``, cosine attention with a continuous position bias).

    The map is padded to whole windows, cyclically shifted, attended window by window (shifted windows
    masked so that tokens from different regions do not mix), then shifted back and cropped. The module
    holds ``qkv`` and ``proj`` (``nn.Linear``, reached by ``init linear.*`` rules in torchvision's order),
    ``relative_position_bias_table`` and the buffer ``relative_position_index``; v2 holds ``logit_scale``,
    ``cpb_mlp`` (two linears) and the buffer ``relative_coords_table`` instead of the table.
    MACs (on the map padded to whole windows, T tokens, windows of Nw tokens): the qkv and output
    projections (4 T C^2) plus QK^T and AV in every window (2 T Nw C); v2 adds its bias MLP.
    Receptive field: an output position sees at most its window, bounded by a (2w-1) square around it.
    """

    name = "shifted_window_attention"
    category = "attention"
    macs_rule = "formula"
    torch_class = "ShiftedWindowAttention"
    param_names = ("relative_position_bias_table",)
    #: child modules of the built module that `init linear.*` rules reach, as torchvision's `isinstance` loops do
    inner_ops = {"qkv": "linear", "proj": "linear", "cpb_mlp.0": "linear", "cpb_mlp.2": "linear"}
    args = (Arg("num_heads", POS_INT, doc="number of attention heads; must divide the channels"),
            Arg("window_size", POS_PAIR, 7, "window height and width"),
            Arg("shift_size", NONNEG_PAIR, 0, "cyclic shift of the windows (torchvision: 0, or window // 2 "
                                              "in every other block); no shift along a side the window covers"),
            Arg("attention_dropout", PROB, 0.0, "dropout on the attention weights"),
            Arg("dropout", PROB, 0.0, "dropout after the output projection"),
            Arg("qkv_bias", BOOL, True, "bias in the qkv projection"),
            Arg("proj_bias", BOOL, True, "bias in the output projection"),
            Arg("v2", BOOL, False, "Swin v2's cosine attention and continuous position bias"))

    def check_layout(self, a, ins, layouts):
        channels_last_required(self.name, ins[0], layouts[0], "make the map channels-last with `permute([0, 2, 3, 1])`")

    def infer(self, a, ins):
        h, w, c = _channels_last_map(self.name, ins[0])
        if c % a["num_heads"]:
            raise ShapeError(f"{c} channels are not divisible by num_heads ({a['num_heads']})",
                             f"{c} / {a['num_heads']}", arg="num_heads")
        if any(s >= k for s, k in zip(a["shift_size"], a["window_size"])):
            raise ShapeError(f"shift_size {list(a['shift_size'])} must be smaller than window_size "
                             f"{list(a['window_size'])}", "shift too large", arg="shift_size")
        return ins[0]

    def params(self, a, ins):
        c, heads = ins[0][2], a["num_heads"]
        (wh, ww) = a["window_size"]
        n = 3 * c * c + (3 * c if a["qkv_bias"] else 0) + c * c + (c if a["proj_bias"] else 0)
        if a["v2"]:
            return n + heads + (2 * 512 + 512) + 512 * heads  # logit_scale, cpb_mlp
        return n + (2 * wh - 1) * (2 * ww - 1) * heads

    def buffers(self, a, ins):
        (wh, ww) = a["window_size"]
        coords = (2 * wh - 1) * (2 * ww - 1) * 2 if a["v2"] else 0
        return (wh * ww) ** 2 + coords

    def macs(self, a, ins, out):
        h, w, c = ins[0]
        (wh, ww) = a["window_size"]
        tokens = -(-h // wh) * wh * (-(-w // ww) * ww)  # on the map padded to whole windows
        n = 4 * tokens * c * c + 2 * tokens * (wh * ww) * c
        if a["v2"]:
            n += (2 * wh - 1) * (2 * ww - 1) * (2 * 512 + 512 * a["num_heads"])
        return n

    def window(self, a, ins, layouts):
        (wh, ww) = a["window_size"]
        return Window((2 * wh - 1, 2 * ww - 1), (1, 1), (wh - 1, ww - 1))

    def build(self, a, ins, inplace=False):
        from .modules import ShiftedWindowAttention as Module
        return Module(ins[0][2], list(a["window_size"]), list(a["shift_size"]), a["num_heads"],
                      qkv_bias=a["qkv_bias"], proj_bias=a["proj_bias"], attention_dropout=a["attention_dropout"],
                      dropout=a["dropout"], v2=a["v2"])

    def label(self, a):
        (wh, ww), (sh, sw) = a["window_size"], a["shift_size"]
        shift = f", shift {sh}" + (f"x{sw}" if sw != sh else "") if sh or sw else ""
        return (f"window attention{' v2' if a['v2'] else ''} {wh}x{ww}{shift}, {a['num_heads']} heads")
