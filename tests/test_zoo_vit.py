"""ViT-S/16 (`specs/vit_s_16.arch`) against the seed tutorial's VisionTransformer.

torchvision has no ViT-Small, so `vit_s_16` is the seed's ViT-S size (tutorial 003, "Vision
Transformer (ViT)", `vit_small`: hidden 384, 12 layers, 6 heads, MLP 4x) built from the same
family file as torchvision's `vit_b_16`, in torchvision's layout (`conv_proj`, `class_token`,
`encoder.layers.encoder_layer_{i}`, `heads.head`) and with torchvision's initialization.

The seed's reference code is written out here in plain PyTorch. Its module names differ
(`patch_embed.projection`, `blocks.{i}.attn.qkv`, ...), so the checks are: the parameter count
equals the seed's, output shapes agree, and the two are the same function: the seed's tensors
map one to one (same shapes) onto ours, load with strict=True, and give the same eval outputs
once the seed's LayerNorms use torchvision's eps (1e-6; the seed keeps torch's default 1e-5,
the only numerical difference between the two). Against torchvision's own VisionTransformer
class at this size the spec is checked like the parity tests: same keys, bit-identical
initial weights with the same seed, equal outputs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import archdsl
from archdsl.ops.registry import get_op

from .conftest import ROOT

VIT_S = ROOT / "specs" / "vit_s_16.arch"
SMALL = (3, 64, 64)   # 4x4 patches: fast; the position embedding follows the input size


# ---- the seed's reference code (tutorial 003, "Vision Transformer (ViT)") ---------------------

class PatchEmbedding(nn.Module):
    def __init__(self, image_size=224, patch_size=16, in_channels=3, embed_dim=768):
        super().__init__()
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_patches = (image_size // patch_size) ** 2
        self.projection = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        x = self.projection(x)
        x = x.flatten(2)
        x = x.transpose(1, 2)
        return x


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, dropout=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(embed_dim, embed_dim * 3)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        attn = self.dropout(attn)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        return x


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_ratio=4.0, dropout=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = MultiHeadSelfAttention(embed_dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(embed_dim)
        mlp_hidden = int(embed_dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, mlp_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_hidden, embed_dim),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class VisionTransformer(nn.Module):
    def __init__(self, image_size=224, patch_size=16, in_channels=3, num_classes=1000, embed_dim=768,
                 depth=12, num_heads=12, mlp_ratio=4.0, dropout=0.0):
        super().__init__()
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[
            TransformerBlock(embed_dim, num_heads, mlp_ratio, dropout) for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        B = x.shape[0]
        x = self.patch_embed(x)
        cls_tokens = self.cls_token.expand(B, -1, -1)
        x = torch.cat([cls_tokens, x], dim=1)
        x = x + self.pos_embedding
        x = self.pos_dropout(x)
        x = self.blocks(x)
        x = self.norm(x)
        cls_output = x[:, 0]
        logits = self.head(cls_output)
        return logits


def vit_small(num_classes=1000, image_size=224):
    return VisionTransformer(image_size=image_size, patch_size=16, embed_dim=384, depth=12,
                             num_heads=6, num_classes=num_classes)


# ---- helpers ---------------------------------------------------------------------------------

def seed_to_ours(key: str) -> str:
    """The seed's state_dict key for the same tensor in torchvision's layout."""
    rename = {
        "patch_embed.projection.": "conv_proj.",
        "cls_token": "class_token",
        "pos_embedding": "encoder.pos_embedding",
        "norm.": "encoder.ln.",
        "head.": "heads.head.",
    }
    for old, new in rename.items():
        if key.startswith(old):
            return new + key[len(old):]
    _, i, rest = key.split(".", 2)                      # blocks.{i}.rest
    prefix = f"encoder.layers.encoder_layer_{i}."
    rest = (rest.replace("norm1.", "ln_1.").replace("norm2.", "ln_2.")
                .replace("attn.qkv.weight", "self_attention.in_proj_weight")
                .replace("attn.qkv.bias", "self_attention.in_proj_bias")
                .replace("attn.proj.", "self_attention.out_proj."))
    return prefix + rest


def shapes_by_module(spec, model, x):
    """Run ``model`` and return {module path: output shape} for every module the checker lists."""
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


# ---- tests -----------------------------------------------------------------------------------

def test_parameter_count_equals_seed():
    spec = archdsl.load_spec(VIT_S)
    with torch.device("meta"):   # shapes only: no memory, no init
        seed = vit_small()
    assert spec.num_params == sum(p.numel() for p in seed.parameters()) == 22_050_664
    assert spec.input_shape == (3, 224, 224) and spec.output_shape == (1000,)


def test_seed_weights_load_and_outputs_match():
    spec = archdsl.load_spec(VIT_S, input_shape=SMALL, num_classes=10)
    torch.manual_seed(0)
    seed = vit_small(num_classes=10, image_size=SMALL[1]).eval()
    ours = spec.build().eval()

    seed_sd = seed.state_dict()
    mapped = {seed_to_ours(k): v for k, v in seed_sd.items()}
    assert len(mapped) == len(seed_sd)
    ours_sd = ours.state_dict()
    assert set(mapped) == set(ours_sd)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in ours_sd.items()}
    ours.load_state_dict(mapped, strict=True)

    for m in seed.modules():   # torchvision's (and our spec's) LayerNorm eps
        if isinstance(m, nn.LayerNorm):
            m.eps = 1e-6
    torch.manual_seed(1)
    x = torch.randn(2, *SMALL)
    out, got, expected = shapes_by_module(spec, ours, x)
    with torch.no_grad():
        want = seed(x)
    assert out.shape == want.shape == (2, 10)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert got == expected


def test_same_as_torchvision_class_at_this_size(tv):
    """vit_s_16 is torchvision's VisionTransformer at the seed's size: keys, init and outputs."""
    spec = archdsl.load_spec(VIT_S, input_shape=SMALL)
    torch.manual_seed(0)
    ours = spec.build().eval()
    torch.manual_seed(0)
    ref = tv.models.vision_transformer.VisionTransformer(
        image_size=SMALL[1], patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536).eval()
    ref_sd, ours_sd = ref.state_dict(), ours.state_dict()
    assert set(ours_sd) == set(ref_sd)
    assert [k for k, v in ours_sd.items() if not torch.equal(v, ref_sd[k])] == []
    assert spec.num_params == sum(p.numel() for p in ref.parameters())
    x = torch.randn(2, *SMALL)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1.3e-6, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 100, 100), (3, 224, 200)])
def test_input_not_divisible_by_patch_is_a_located_error(shape):
    with pytest.raises(archdsl.SpecError) as err:
        archdsl.load_spec(VIT_S, input_shape=shape)
    text = str(err.value)
    assert "patch" in text and "vit.arch" in text
