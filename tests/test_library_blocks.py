"""Library blocks written only from primitives, against plain-PyTorch reference modules.

The blocks (specs/lib/attention.arch, sknet.arch, hrnet.arch, and ResNet-50's C2..C5 feature
maps from specs/lib/resnet.arch) exercise the tensors-as-values language: `let` branches,
explicit-input calls, `parameter` / `buffer` tensors, tensor algebra, `sdpa`, blocks with
several tensor inputs and results, `return` of lists and dicts, `output(...)` and `inline`.

The references are written here from the papers / the reference code they cite (no model
libraries; torchvision only for ResNet-50 and its feature extractor, and
torch.nn.MultiheadAttention). Every comparison checks:

* the reference's state_dict loads into ours with ``strict=True`` (same keys and shapes);
* the checker's parameter count equals the reference's;
* eval outputs are equal (``torch.testing.assert_close``, default float32 tolerances), after the
  reference's weights and BatchNorm statistics were perturbed so that every tensor matters;
* the checker's output shape (or structure of shapes, for list / dict outputs) is the real one,
  and so is the shape of every module's output.

Where the reference draws its initial weights in the order our spec builds them, the initial
weights are also compared bit for bit with the same seed (this checks the `init` rules).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import archdsl
from archdsl.ops import get_op

# torch's own warnings when scripting an fx.GraphModule (deprecation; GraphModule.__init__'s
# annotations), not archdsl's
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The TorchScript type system doesn't support instance-level"),
]


# ---- helpers -----------------------------------------------------------------------------------

def load(text, **kw):
    """A spec from text; `use` paths are relative to the repository root (the `at_root` fixture)."""
    return archdsl.load_spec(text, **kw)


def perturb_(module, seed=123):
    """Make every parameter and BatchNorm statistic of ``module`` matter (zeros/ones would hide
    a dropped bias or an unused running mean)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = p.abs().mean().item() if p.numel() > 0 else 0.0
            p.add_((0.5 * scale if scale > 0 else 0.1) * torch.randn(p.shape, generator=g))
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def shape_tree(out):
    """The per-sample shapes of a model output, in its structure (tensor, tuple/list, dict)."""
    if isinstance(out, torch.Tensor):
        return tuple(out.shape[1:])
    if isinstance(out, dict):
        return {k: shape_tree(v) for k, v in out.items()}
    return tuple(shape_tree(v) for v in out)


def checker_shapes(spec):
    """The checker's output shape, or structure of shapes for list / dict outputs."""
    return spec.output_shapes


def run_with_module_shapes(spec, model, x):
    """Run ``model`` on ``x``; return (output, {path: real output shape}, {path: checker's shape})
    for every module the checker lists."""
    expected = {n.path: n.shape for n in spec.ir.ops()
                if n.path is not None and not get_op(n.op).direct_param}
    got, hooks = {}, []
    for path, module in model.named_modules():
        if path in expected:
            def hook(m, i, o, path=path):
                got[path] = tuple((o[0] if isinstance(o, tuple) else o).shape[1:])
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        out = model(x)
    for h in hooks:
        h.remove()
    return out, got, expected


def flat_tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for v in (out.values() if isinstance(out, dict) else out) for t in flat_tensors(v)]


def assert_same_grads(ours, ref, x, ref_fn):
    """The gradients of a random linear function of the outputs agree, parameter by parameter
    (every parameter, `parameter` tensors included, is used the same way)."""
    ours.zero_grad()
    ref.zero_grad()
    outs, wants = flat_tensors(ours(x)), flat_tensors(ref_fn(x))
    g = torch.Generator().manual_seed(5)
    weights = [torch.randn(o.shape, generator=g) for o in outs]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    sum((o * w).sum() for o, w in zip(wants, weights)).backward()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, ref_params[name].grad, msg=lambda m: f"{name}: {m}")


def check_against(spec, ours, ref, x, ref_fn=None, state_dict=None, grads=True):
    """Strict load of the reference's weights, equal parameter counts, equal eval outputs, and
    the checker's shapes (of the output and of every module) equal to the real ones; and
    (``grads``) equal gradients for every parameter."""
    sd = ref.state_dict() if state_dict is None else state_dict
    ours.load_state_dict(sd, strict=True)
    assert spec.num_params == sum(v.numel() for k, v in ref.named_parameters() if k in sd)
    ours.eval()
    ref.eval()
    out, got, expected = run_with_module_shapes(spec, ours, x)
    with torch.no_grad():
        want = ref_fn(x) if ref_fn is not None else ref(x)
    torch.testing.assert_close(out, want)
    assert checker_shapes(spec) == shape_tree(out) == shape_tree(want)
    assert got == expected
    if grads:
        assert_same_grads(ours, ref, x, ref_fn if ref_fn is not None else ref)
    return out


def assert_same_init(ours, ref):
    """Bit-identical initial tensors (both built right after the same torch.manual_seed)."""
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert [k for k, v in ours_sd.items() if not torch.equal(v, ref_sd[k])] == []


def assert_traceable_and_scriptable(model, x):
    """torch.fx.symbolic_trace and torch.jit.script of the built model compute the same thing."""
    model.eval()
    with torch.no_grad():
        want = model(x)
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), want)
        scripted = torch.jit.script(model)
        got = scripted(x)
    if isinstance(want, dict):
        got = dict(got)
    elif isinstance(want, (tuple, list)):
        got = type(want)(got)
    torch.testing.assert_close(got, want)


# ---- 1a. fused-qkv multi-head self-attention (ViT / timm `Attention`) ---------------------------

class RefAttention(nn.Module):
    """The fused-qkv self-attention of the ViT reference code (timm's `Attention`, explicit path)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0, scale=None):
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = scale if scale is not None else self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


ATTENTION_CASES = [  # tokens, dim, heads, qkv_bias, scale
    (7, 16, 2, False, None),
    (5, 24, 4, True, None),
    (9, 16, 2, True, 0.3),
    (4, 12, 3, False, 1.0),
]


def _args(heads, qkv_bias, scale):
    args = f"{heads}, qkv_bias = {str(qkv_bias).lower()}"
    return args + ("" if scale is None else f", scale = {scale}")


@pytest.mark.parametrize("tokens,dim,heads,qkv_bias,scale", ATTENTION_CASES)
def test_attention_matches_reference(at_root, tokens, dim, heads, qkv_bias, scale):
    spec = load('use "specs/lib/attention.arch"\n'
                f"model attn input {tokens}x{dim} = Attention({_args(heads, qkv_bias, scale)})\n")
    assert spec.output_shape == (tokens, dim)
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = RefAttention(dim, heads, qkv_bias=qkv_bias, scale=scale)
    assert_same_init(ours, ref)                       # Linear default init, qkv then proj
    perturb_(ref)
    x = torch.randn(3, tokens, dim)
    check_against(spec, ours, ref, x)
    assert_traceable_and_scriptable(ours, x)


def test_attention_dropouts_are_wired(at_root):
    """attn_drop reaches sdpa (training only) and proj_drop is the module after proj."""
    spec = load('use "specs/lib/attention.arch"\n'
                "model attn input 6x16 = Attention(2, attn_drop = 0.5, proj_drop = 0.25)\n")
    ours = spec.build()
    assert isinstance(ours.proj_drop, nn.Dropout) and ours.proj_drop.p == 0.25
    assert "dropout_p" in ours.code or "0.5" in ours.code
    ref = RefAttention(16, 2, attn_drop=0.5, proj_drop=0.25)
    check_against(spec, ours, ref, torch.randn(2, 6, 16))    # eval: dropouts are identities
    ours.train()
    torch.manual_seed(0)
    a = ours(torch.ones(2, 6, 16))
    torch.manual_seed(1)
    b = ours(torch.ones(2, 6, 16))
    assert not torch.equal(a, b)                              # training: random


# ---- 1b. Swin window attention ------------------------------------------------------------------

class RefWindowAttention(nn.Module):
    """Swin Transformer's WindowAttention (Liu et al. 2021, official code), without the shift mask."""

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0.0,
                 proj_drop=0.0):
        super().__init__()
        self.dim = dim
        self.window_size = window_size  # Wh, Ww
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5

        # define a parameter table of relative position bias
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))

        # get pair-wise relative position index for each token inside the window
        coords_h = torch.arange(self.window_size[0])
        coords_w = torch.arange(self.window_size[1])
        coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing="ij"))  # 2, Wh, Ww
        coords_flatten = torch.flatten(coords, 1)  # 2, Wh*Ww
        relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # 2, Wh*Ww, Wh*Ww
        relative_coords = relative_coords.permute(1, 2, 0).contiguous()  # Wh*Ww, Wh*Ww, 2
        relative_coords[:, :, 0] += self.window_size[0] - 1  # shift to start from 0
        relative_coords[:, :, 1] += self.window_size[1] - 1
        relative_coords[:, :, 0] *= 2 * self.window_size[1] - 1
        relative_position_index = relative_coords.sum(-1)  # Wh*Ww, Wh*Ww
        self.register_buffer("relative_position_index", relative_position_index)

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]

        q = q * self.scale
        attn = (q @ k.transpose(-2, -1))

        relative_position_bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
            self.window_size[0] * self.window_size[1], self.window_size[0] * self.window_size[1], -1)
        relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()  # nH, Wh*Ww, Wh*Ww
        attn = attn + relative_position_bias.unsqueeze(0)
        assert mask is None
        attn = self.softmax(attn)
        attn = self.attn_drop(attn)

        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


WINDOW_CASES = [  # windows per sample, window, dim, heads, qkv_bias
    (3, 2, 8, 2, True),
    (2, 3, 12, 3, False),
    (4, 4, 16, 4, True),
]


def window_spec(nw, window, dim, heads, qkv_bias):
    # The model input must be read as windows x tokens x channels, not as a C x H x W map (a
    # rank-3 model input is a feature map to the checker, and `linear` refuses a map whose last
    # axis is its width), so an identity reshape comes first; `inline` keeps the block's
    # names at the top level, as in the reference module.
    return load('use "specs/lib/attention.arch"\n'
                f"model wattn input {nw}x{window * window}x{dim} {{\n"
                f"    reshape([{nw}, {window * window}, {dim}])\n"
                f"    inline WindowAttention({window}, {heads}, qkv_bias = {str(qkv_bias).lower()})\n"
                "}\n")


@pytest.mark.parametrize("nw,window,dim,heads,qkv_bias", WINDOW_CASES)
def test_window_attention_matches_swin(at_root, nw, window, dim, heads, qkv_bias):
    spec = window_spec(nw, window, dim, heads, qkv_bias)
    n = window * window
    assert spec.output_shape == (nw, n, dim)
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = RefWindowAttention(dim, (window, window), heads, qkv_bias=qkv_bias)

    # the index buffer is computed by the spec: compare it before loading overwrites it
    assert ours.relative_position_index.dtype == torch.int64
    assert torch.equal(ours.relative_position_index, ref.relative_position_index)
    # table zeros, qkv, proj, then trunc_normal on the table: the same draws as the reference
    assert_same_init(ours, ref)
    assert 0.005 < ours.relative_position_bias_table.std().item() < 0.05   # trunc_normal(std=.02)

    with torch.no_grad():
        ref.relative_position_bias_table.normal_()                     # make the bias matter
    perturb_(ref)
    x = torch.randn(2, nw, n, dim)
    check_against(spec, ours, ref, x,
                  ref_fn=lambda x: ref(x.reshape(-1, n, dim)).reshape(x.shape))
    assert_traceable_and_scriptable(ours, x)


def test_window_attention_refuses_wrong_window(at_root):
    with pytest.raises(archdsl.SpecError) as err:
        load('use "specs/lib/attention.arch"\n'
             "model w input 3x9x8 { reshape([3, 9, 8]); inline WindowAttention(2, 2) }\n")
    assert "window" in str(err.value) and "attention.arch" in str(err.value)


# ---- 1c. torch.nn.MultiheadAttention from primitives --------------------------------------------

MHA_CASES = [(6, 16, 2), (5, 24, 4), (3, 8, 1)]


def mha_block_spec(tokens, dim, heads, label=False):
    body = f"MultiheadAttention({heads})"
    if label:
        return load('use "specs/lib/attention.arch"\n'
                    f"model m input {tokens}x{dim} {{ ln: layernorm(); self_attention: {body} }}\n")
    return load('use "specs/lib/attention.arch"\n'
                f"model m input {tokens}x{dim} = {body}\n")


class TorchMHA(nn.Module):
    """nn.MultiheadAttention used as self-attention, as ViT does: mha(x, x, x)[0]."""

    def __init__(self, dim, heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("tokens,dim,heads", MHA_CASES)
def test_multihead_attention_matches_torch(at_root, tokens, dim, heads):
    spec = mha_block_spec(tokens, dim, heads)
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(dim, heads, batch_first=True)
    # same layout; and MultiheadAttention's init: out_proj built (default Linear init), then
    # xavier_uniform on in_proj_weight and zeros on in_proj_bias and out_proj.bias
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        "in_proj_weight": (3 * dim, dim), "in_proj_bias": (3 * dim,),
        "out_proj.weight": (dim, dim), "out_proj.bias": (dim,)}
    assert_same_init(ours, ref)
    assert torch.count_nonzero(ours.in_proj_bias) == 0 and torch.count_nonzero(ours.out_proj.bias) == 0
    perturb_(ref)
    x = torch.randn(3, tokens, dim)
    check_against(spec, ours, ref, x, ref_fn=lambda x: ref(x, x, x, need_weights=False)[0])
    assert_traceable_and_scriptable(ours, x)


@pytest.mark.parametrize("tokens,dim,heads", MHA_CASES)
def test_multihead_attention_block_is_interchangeable_with_mha_op(at_root, tokens, dim, heads):
    op_spec = load(f"model m input {tokens}x{dim} {{ ln: layernorm(); self_attention: mha({heads}) }}\n")
    block_spec = mha_block_spec(tokens, dim, heads, label=True)
    assert op_spec.num_params == block_spec.num_params
    assert op_spec.macs == block_spec.macs
    assert op_spec.output_shape == block_spec.output_shape == (tokens, dim)
    torch.manual_seed(0)
    with_op = op_spec.build()
    torch.manual_seed(0)
    with_block = block_spec.build()
    op_sd, block_sd = with_op.state_dict(), with_block.state_dict()
    assert list(op_sd) == list(block_sd)
    assert {k: v.shape for k, v in op_sd.items()} == {k: v.shape for k, v in block_sd.items()}
    assert_same_init(with_block, with_op)               # even the initial weights agree

    perturb_(with_op)
    x = torch.randn(2, tokens, dim)
    # the op's model is the reference here: its weights load strictly into the block's model
    check_against(block_spec, with_block, with_op, x)
    # and the other way round
    perturb_(with_block, seed=7)
    with_op.load_state_dict(with_block.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(with_op.eval()(x), with_block.eval()(x))
    # the op's model against torch's own module, for completeness
    ref = TorchMHA(dim, heads)
    ref.mha.load_state_dict(with_block.self_attention.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(with_block(x), ref.eval()(with_block.ln(x)))


# ---- 2. Selective Kernel convolution ------------------------------------------------------------

class RefSKConv(nn.Module):
    """SKConv (Li et al. 2019), as in the common PyTorch re-implementation of SKNet."""

    def __init__(self, features, M=2, G=32, r=16, stride=1, L=32):
        super().__init__()
        d = max(int(features / r), L)
        self.M = M
        self.features = features
        self.convs = nn.ModuleList([])
        for i in range(M):
            self.convs.append(nn.Sequential(
                nn.Conv2d(features, features, kernel_size=3, stride=stride, padding=1 + i, dilation=1 + i,
                          groups=G, bias=False),
                nn.BatchNorm2d(features),
                nn.ReLU(inplace=True)))
        self.gap = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Sequential(nn.Conv2d(features, d, kernel_size=1, stride=1, bias=False),
                                nn.BatchNorm2d(d),
                                nn.ReLU(inplace=True))
        self.fcs = nn.ModuleList([])
        for i in range(M):
            self.fcs.append(nn.Conv2d(d, features, kernel_size=1, stride=1))
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        batch_size = x.shape[0]
        feats = [conv(x) for conv in self.convs]
        feats = torch.cat(feats, dim=1)
        feats = feats.view(batch_size, self.M, self.features, feats.shape[2], feats.shape[3])
        feats_U = torch.sum(feats, dim=1)
        feats_S = self.gap(feats_U)
        feats_Z = self.fc(feats_S)
        attention_vectors = [fc(feats_Z) for fc in self.fcs]
        attention_vectors = torch.cat(attention_vectors, dim=1)
        attention_vectors = attention_vectors.view(batch_size, self.M, self.features, 1, 1)
        attention_vectors = self.softmax(attention_vectors)
        feats_V = torch.sum(feats * attention_vectors, dim=1)
        return feats_V


SK_CASES = [  # channels, size, M, G, r, stride, L
    (64, 8, 2, 32, 16, 1, 32),
    (64, 9, 3, 32, 16, 2, 32),
    (32, 6, 2, 8, 4, 1, 4),      # d = C / r = 8 > L
    (48, 7, 4, 16, 2, 1, 8),
]


@pytest.mark.parametrize("c,size,m,g,r,stride,l", SK_CASES)
def test_skconv_matches_reference(at_root, c, size, m, g, r, stride, l):
    spec = load('use "specs/lib/sknet.arch"\n'
                f"model sk input {c}x{size}x{size} = SKConv(M = {m}, G = {g}, r = {r}, stride = {stride}, L = {l})\n")
    out_size = (size - 1) // stride + 1
    assert spec.output_shape == (c, out_size, out_size)
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = RefSKConv(c, M=m, G=g, r=r, stride=stride, L=l)
    assert_same_init(ours, ref)
    perturb_(ref)
    x = torch.randn(2, c, size, size)
    check_against(spec, ours, ref, x)
    assert_traceable_and_scriptable(ours, x)


# ---- 3. HRNet two-branch fusion ------------------------------------------------------------------

class RefFuse2(nn.Module):
    """HighResolutionModule's fuse layers and fusion (Sun et al. 2019, official code), 2 branches."""

    def __init__(self, num_inchannels):
        super().__init__()
        self.num_branches = 2
        self.num_inchannels = num_inchannels
        self.fuse_layers = self._make_fuse_layers()
        self.relu = nn.ReLU(False)

    def _make_fuse_layers(self):
        num_branches = self.num_branches
        num_inchannels = self.num_inchannels
        fuse_layers = []
        for i in range(num_branches):
            fuse_layer = []
            for j in range(num_branches):
                if j > i:
                    fuse_layer.append(nn.Sequential(
                        nn.Conv2d(num_inchannels[j], num_inchannels[i], 1, 1, 0, bias=False),
                        nn.BatchNorm2d(num_inchannels[i]),
                        nn.Upsample(scale_factor=2 ** (j - i), mode='nearest')))
                elif j == i:
                    fuse_layer.append(None)
                else:
                    conv3x3s = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            num_outchannels_conv3x3 = num_inchannels[i]
                            conv3x3s.append(nn.Sequential(
                                nn.Conv2d(num_inchannels[j], num_outchannels_conv3x3, 3, 2, 1, bias=False),
                                nn.BatchNorm2d(num_outchannels_conv3x3)))
                        else:
                            num_outchannels_conv3x3 = num_inchannels[j]
                            conv3x3s.append(nn.Sequential(
                                nn.Conv2d(num_inchannels[j], num_outchannels_conv3x3, 3, 2, 1, bias=False),
                                nn.BatchNorm2d(num_outchannels_conv3x3),
                                nn.ReLU(False)))
                    fuse_layer.append(nn.Sequential(*conv3x3s))
            fuse_layers.append(nn.ModuleList(fuse_layer))
        return nn.ModuleList(fuse_layers)

    def forward(self, x):
        x_fuse = []
        for i in range(len(self.fuse_layers)):
            y = x[0] if i == 0 else self.fuse_layers[i][0](x[0])
            for j in range(1, self.num_branches):
                if i == j:
                    y = y + x[j]
                else:
                    y = y + self.fuse_layers[i][j](x[j])
            x_fuse.append(self.relu(y))
        return x_fuse


class RefTinyHRNet(nn.Module):
    """A stem, a transition to a half-resolution branch, two fusions; returns {"hi", "lo"}."""

    def __init__(self, c_hi, c_lo, in_ch=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, c_hi, 3, 1, 1, bias=False), nn.BatchNorm2d(c_hi), nn.ReLU())
        self.transition = nn.Sequential(nn.Conv2d(c_hi, c_lo, 3, 2, 1, bias=False), nn.BatchNorm2d(c_lo),
                                        nn.ReLU())
        self.stages = nn.ModuleList([RefFuse2([c_hi, c_lo]) for _ in range(2)])

    def forward(self, x):
        hi = self.stem(x)
        xs = [hi, self.transition(hi)]
        for stage in self.stages:
            xs = stage(xs)
        return {"hi": xs[0], "lo": xs[1]}


def hrnet_spec(c_hi, c_lo, size):
    return load('use "specs/lib/hrnet.arch"\n'
                f"model hr_tiny input 3x{size}x{size} {{\n"
                f"    stem: seq {{ conv2d({c_hi}, 3, padding = 1, bias = false); batchnorm2d(); relu() }}\n"
                "    let hi = in\n"
                "    let lo = transition: seq {\n"
                f"        conv2d({c_lo}, 3, stride = 2, padding = 1, bias = false); batchnorm2d(); relu()\n"
                "    }\n"
                f"    let a, b = \"stages.0\": Fuse2({c_hi}, {c_lo})(hi, lo)\n"
                f"    let c, d = \"stages.1\": Fuse2({c_hi}, {c_lo})(a, b)\n"
                '    return {"hi": c, "lo": d}\n'
                "}\n")


@pytest.mark.parametrize("c_hi,c_lo,size", [(8, 16, 16), (6, 10, 12)])
def test_hrnet_fusion_matches_reference(at_root, c_hi, c_lo, size):
    spec = hrnet_spec(c_hi, c_lo, size)
    assert checker_shapes(spec) == {"hi": (c_hi, size, size), "lo": (c_lo, size // 2, size // 2)}
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    ref = RefTinyHRNet(c_hi, c_lo)
    assert_same_init(ours, ref)
    assert any(k.startswith("stages.1.fuse_layers.1.0.0.0.") for k in ours.state_dict())
    perturb_(ref)
    x = torch.randn(2, 3, size, size)
    out = check_against(spec, ours, ref, x)
    assert isinstance(out, dict) and list(out) == ["hi", "lo"]
    assert_traceable_and_scriptable(ours, x)


def test_hrnet_fuse2_block_alone_returns_a_list(at_root):
    """Fuse2 as a model's last statement; its list result is the model's (tuple) output."""
    spec = load('use "specs/lib/hrnet.arch"\n'
                "model f input 8x8x8 {\n"
                "    let hi = in\n"
                "    let lo = down: conv2d(12, 3, stride = 2, padding = 1)\n"
                '    let a, b = "fuse": Fuse2(8, 12)(hi, lo)\n'
                "    return [a, b]\n"
                "}\n")
    torch.manual_seed(0)
    ours = spec.build().eval()

    class Ref(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(8, 12, 3, 2, 1)
            self.fuse = RefFuse2([8, 12])

        def forward(self, x):
            return tuple(self.fuse([x, self.down(x)]))

    torch.manual_seed(0)
    ref = perturb_(Ref())
    out = check_against(spec, ours, ref, torch.randn(2, 8, 8, 8))
    assert isinstance(out, (tuple, list)) and len(out) == 2


# ---- 4. ResNet-50 C2..C5 -----------------------------------------------------------------------

RETURN_NODES = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}


def resnet50_features_spec(block):
    return load('use "specs/lib/resnet.arch"\n'
                "model resnet50_c2_c5 input 3x64x64 {\n"
                f"    inline {block}(Bottleneck, [3, 4, 6, 3])\n"
                '    return {"c2": output("layer1"), "c3": output("layer2"),\n'
                '            "c4": output("layer3"), "c5": output("layer4")}\n'
                "}\n")


@pytest.fixture(scope="module")
def resnet50_and_extractor(tv):
    """torchvision's resnet50 (perturbed weights and statistics) and its C2..C5 extractor."""
    from torchvision.models.feature_extraction import create_feature_extractor
    torch.manual_seed(0)
    resnet = perturb_(tv.models.resnet50()).eval()
    return resnet, create_feature_extractor(resnet, RETURN_NODES).eval()


@pytest.mark.parametrize("block", ["ResNet", "ResNetTrunk"])
def test_resnet50_named_outputs_match_feature_extractor(resnet50_and_extractor, at_root, block):
    """`inline ResNet(...)` keeps avgpool and fc (so resnet50's whole state_dict loads strictly);
    `inline ResNetTrunk(...)` has no fc (resnet50's state_dict minus fc.* loads strictly)."""
    resnet, extractor = resnet50_and_extractor
    spec = resnet50_features_spec(block)
    assert checker_shapes(spec) == {"c2": (256, 16, 16), "c3": (512, 8, 8),
                                    "c4": (1024, 4, 4), "c5": (2048, 2, 2)}
    ours = spec.build()
    sd = resnet.state_dict()
    if block == "ResNet":
        assert spec.num_params == num_params(resnet)
    else:
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        assert spec.num_params == num_params(extractor) == num_params(resnet) - 2048 * 1000 - 1000
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    out = check_against(spec, ours, resnet, x, ref_fn=extractor, state_dict=sd, grads=False)
    assert list(out) == ["c2", "c3", "c4", "c5"]
