"""MaxViT (specs/lib/maxvit.arch, specs/maxvit_t.arch) beyond tests/test_parity.py.

torchvision's MaxVit fixes its partition grid from ``input_size`` when it is built, and needs the
map of every block divisible by the partition size (7): square inputs whose side is 221..224,
445..448, ... (ceil(side / 4) a multiple of 56). test_parity runs maxvit_t at its declared
3x224x224 (its odd 3x97x131 case cannot work: FIXED_SIZE). Here:

* another valid size, against ``torchvision.models.maxvit.MaxVit`` built with maxvit_t's config and
  that ``input_size``: 3x221x221 for real (an odd side: the stem and the strided layers round up;
  the same state_dict, bit-identical init, strict load, eval outputs bit-identical, checker shapes
  equal the real ones; batch 1: test_parity's second case runs batch 2), and 3x448x448 on the meta
  device (state_dict shapes, every module's output shape against the checker's and torchvision's,
  MACs against torch's flop counter);
* the module tree: ``named_modules()`` is torchvision's, in its registration order, but for the
  second stochastic depth of each attention layer (``stochastic_dropout2``);
* the sizes MaxViT cannot take: a located ``require`` error from the spec, exactly where
  torchvision's constructor raises (or, for a non-square input, where its forward fails);
* the attention blocks alone (RelativePositionalMultiHeadAttention, and PartitionAttentionLayer
  in window and grid form) against torchvision's modules: same keys, same initial weights, same
  outputs, bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import archdsl
from archdsl import SpecError

from .conftest import ROOT
from .helpers import assert_same_init, load_reference, module_shapes, perturb_zeros, seeded_pair

SPEC = ROOT / "specs" / "maxvit_t.arch"
LIB = ROOT / "specs" / "lib" / "maxvit.arch"
#: torchvision's maxvit_t(): the arguments it passes to MaxVit
CONFIG = dict(stem_channels=64, block_channels=[64, 128, 256, 512], block_layers=[2, 2, 5, 2], head_dim=32,
              stochastic_depth_prob=0.2, partition_size=7)


def _tv_maxvit(tv):
    import torchvision.models.maxvit as maxvit
    return maxvit


def _reference(tv, side, device=None):
    maxvit = _tv_maxvit(tv)
    if device is None:
        return maxvit.MaxVit(input_size=(side, side), **CONFIG)
    with torch.device(device):
        return maxvit.MaxVit(input_size=(side, side), **CONFIG)


def _valid_in_torchvision(tv, h, w) -> bool:
    """torchvision's constructor check (MaxVit.__init__): every block's map divisible by 7."""
    shapes = _tv_maxvit(tv)._make_block_input_shapes((h, w), len(CONFIG["block_channels"]))
    return all(s[0] % 7 == 0 and s[1] % 7 == 0 for s in shapes)


# ------------------------------------------------------------------ another valid size


def test_parity_at_an_odd_valid_size(tv):
    """3x221x221 (stem 111x111, blocks 56, 28, 14, 7) against MaxVit(input_size=(221, 221))."""
    spec = archdsl.load_spec(SPEC, input_shape=(3, 221, 221))
    ours, ref = seeded_pair(spec, lambda: _reference(tv, 221))
    assert_same_init(ours, ref)
    assert spec.num_params == sum(p.numel() for p in ref.parameters()) == 30_919_624
    load_reference(ours, ref)
    torch.manual_seed(1)
    x = torch.randn(1, 3, 221, 221)
    shapes, expected, got = module_shapes(spec, ours, x)
    assert shapes == expected                   # the checker's shape of every module is the real one
    with torch.no_grad():
        want = ref(x)
    # torchvision's operations in torchvision's order (and its memory layouts): bit-identical
    assert torch.equal(got, want)
    assert tuple(got.shape[1:]) == spec.output_shape == (1000,)


def test_448_on_meta(tv):
    """3x448x448 (torchvision's MaxVit(input_size=(448, 448))): the same state_dict shapes, every module's
    output shape is the checker's and torchvision's, and the MACs are what torch counts on both."""
    spec = archdsl.load_spec(SPEC, input_shape=(3, 448, 448))
    assert spec.num_params == 30_919_624          # the bias tables do not depend on the input size
    ours = spec.build(device="meta").eval()
    ref = _reference(tv, 448, device="meta").eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.empty(1, 3, 448, 448, device="meta")
    got, expected, out = module_shapes(spec, ours, x)
    assert got == expected
    assert tuple(out.shape[1:]) == spec.output_shape == (1000,)
    # torchvision's modules at the same paths have the same output shapes (the grid attention's
    # partitions: in block 0 (112x112) 16x16 = 256 of 7x7 tokens 16 apart, then 64, 16, 4)
    ref_shapes, hooks = {}, []
    for path, module in ref.named_modules():
        if path in got:
            hooks.append(module.register_forward_hook(
                lambda m, i, o, path=path: ref_shapes.__setitem__(path, tuple(o.shape[1:]))))
    with torch.no_grad():
        ref(x)
    for h in hooks:
        h.remove()
    assert len(ref_shapes) > 400
    assert {p: got[p] for p in ref_shapes} == ref_shapes
    assert got["blocks.0.layers.0.layers.grid_attention.partition_swap"] == (256, 49, 64)

    def macs(model):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
        return counter.get_total_flops() // 2
    assert spec.macs == macs(ours) == macs(ref)


def test_module_tree_is_torchvision_s(tv):
    """named_modules() is torchvision's, in torchvision's registration order (``register``), but for the
    one difference the language cannot avoid: torchvision applies each PartitionAttentionLayer's
    StochasticDepth twice (after the attention and after the MLP), a module is applied once here, so
    the second application is its own module, ``stochastic_dropout2``, registered after
    ``stochastic_dropout`` (no parameters, no random numbers drawn when built)."""
    ours = archdsl.load_spec(SPEC).build(device="meta")
    with torch.device("meta"):
        ref = _reference(tv, 224)
    got = [n for n, _ in ours.named_modules()]
    want = [n for n, _ in ref.named_modules()]
    second = [f"blocks.{i}.layers.{j}.layers.{kind}_attention.stochastic_dropout2"
              for i, n in enumerate(CONFIG["block_layers"]) for j in range(n) for kind in ("window", "grid")]
    assert [n for n in got if n not in want] == second
    assert [n for n in got if n not in second] == want     # everything else: the same names, the same order
    # each second application sits right after the first
    assert all(got[got.index(n) - 1] == n[:-1] for n in second)


# ------------------------------------------------------------------ sizes MaxViT cannot take


@pytest.mark.parametrize("shape,message", [
    ((3, 97, 131), "the 97x131 input gives block 0 a 25x33 map, which is not divisible by the partition size 7"),
    ((3, 220, 220), "the 220x220 input gives block 0 a 55x55 map"),
    ((3, 225, 225), "the 225x225 input gives block 0 a 57x57 map"),
    ((3, 112, 112), "the 112x112 input gives block 3 a 4x4 map"),
    ((3, 320, 320), "the 320x320 input gives block 0 a 80x80 map"),
    ((3, 444, 444), "the 444x444 input gives block 0 a 111x111 map"),
    ((3, 224, 448), "grid attention needs a square map, not 224x448"),
])
def test_invalid_sizes_are_located_errors(shape, message, tv):
    with pytest.raises(SpecError) as info:
        archdsl.load_spec(SPEC, input_shape=shape)
    (d,) = info.value.diagnostics
    assert message in d.message
    assert "MaxViT takes square inputs with a side of 221-224, 445-448, ..." in d.message
    assert d.span.source.name.endswith("lib/maxvit.arch")
    assert "require(" in LIB.read_text().splitlines()[d.span.line - 1]
    # torchvision refuses them too: in its constructor, or (non-square) in its first grid attention
    if _valid_in_torchvision(tv, *shape[1:]):
        with torch.device("meta"):
            ref = _tv_maxvit(tv).MaxVit(input_size=shape[1:], **CONFIG)
        with pytest.raises(RuntimeError):
            ref(torch.empty(1, *shape, device="meta"))
    else:
        with pytest.raises(ValueError, match="is not divisible by partition size 7"):
            _tv_maxvit(tv).MaxVit(input_size=shape[1:], **CONFIG)


def test_the_valid_sides_are_torchvision_s(tv):
    """The sides the error message lists are exactly those torchvision's constructor accepts."""
    valid = [s for s in range(1, 1000) if _valid_in_torchvision(tv, s, s)]
    assert valid == [s for k in (224, 448, 672, 896) for s in range(k - 3, k + 1)]


# ------------------------------------------------------------------ the attention blocks alone


def _block_spec(shape, call, tokens=False):
    """A model of one library block (inlined: its modules and tensors at the root, as in torchvision's
    module). Partitions of tokens (G x P x D) are not a feature map: a reshape says so to the checker."""
    head = f'reshape([{", ".join(map(str, shape))}])\n' if tokens else ""
    return archdsl.load_spec(f'use "{LIB}"\nmodel m input {"x".join(map(str, shape))} {{\n{head}inline {call}\n}}')


def _same_module(spec, ref, x, extra=()):
    torch.manual_seed(0)
    ours = spec.build()
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert [k for k, v in ours_sd.items() if not torch.equal(v, ref_sd[k])] == []
    # torchvision's module names in its order, but for the `extra` ones
    names, want = [n for n, _ in ours.named_modules()], [n for n, _ in ref.named_modules()]
    assert [n for n in names if n not in want] == list(extra)
    assert [n for n in names if n not in extra] == want
    perturb_zeros(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    shapes, expected, got = module_shapes(spec, ours, x)
    assert shapes == expected
    with torch.no_grad():
        assert torch.equal(got, ref(x))


def test_relative_positional_attention_alone(tv):
    """G x P x D partitions in and out; the bias table drawn after to_qkv and merge, as torchvision draws it."""
    spec = _block_spec((4, 49, 64), "RelativePositionalMultiHeadAttention(feat_dim = 64, head_dim = 32, "
                                    "max_seq_len = 49)", tokens=True)
    torch.manual_seed(0)
    ref = _tv_maxvit(tv).RelativePositionalMultiHeadAttention(64, 32, 49)
    assert spec.ir.num_buffers == 49 * 49
    _same_module(spec, ref, torch.randn(2, 4, 49, 64), extra=("0",))   # "0": _block_spec's reshape


@pytest.mark.parametrize("kind", ["window", "grid"])
def test_partition_attention_layer_alone(kind, tv):
    """On a 64x14x14 map: window partitions of 7x7 neighbours, or grid partitions of 7x7 tokens 2 apart."""
    spec = _block_spec((64, 14, 14), f'PartitionAttentionLayer(head_dim = 32, partition_size = 7, '
                                     f'partition_type = "{kind}", mlp_ratio = 4, attention_dropout = 0.0, '
                                     f'mlp_dropout = 0.0, sd_prob = 0.1)')
    torch.manual_seed(0)
    ref = _tv_maxvit(tv).PartitionAttentionLayer(
        in_channels=64, head_dim=32, partition_size=7, partition_type=kind, grid_size=(14, 14), mlp_ratio=4,
        activation_layer=torch.nn.GELU, norm_layer=torch.nn.LayerNorm, attention_dropout=0.0, mlp_dropout=0.0,
        p_stochastic_dropout=0.1)
    # the second stochastic depth is its own module here (torchvision applies one module twice)
    _same_module(spec, ref, torch.randn(2, 64, 14, 14), extra=("stochastic_dropout2",))


@pytest.mark.parametrize("shape,kind,message", [
    ((64, 14, 21), "grid", "grid attention needs a square map, not 14x21"),
    ((64, 16, 16), "grid", "grid attention: the 16x16 map is not divisible by the partition size 7"),
    ((64, 15, 14), "window", "window attention: the 15x14 map is not divisible by the partition size 7"),
])
def test_partition_attention_layer_refuses_what_torchvision_cannot_compute(shape, kind, message, tv):
    with pytest.raises(SpecError) as info:
        _block_spec(shape, f'PartitionAttentionLayer(head_dim = 32, partition_size = 7, partition_type = "{kind}", '
                           f'mlp_ratio = 4, attention_dropout = 0.0, mlp_dropout = 0.0, sd_prob = 0.0)')
    (d,) = info.value.diagnostics
    assert message in d.message and d.span.source.name.endswith("lib/maxvit.arch")
    with torch.device("meta"):
        ref = _tv_maxvit(tv).PartitionAttentionLayer(
            in_channels=64, head_dim=32, partition_size=7, partition_type=kind, grid_size=shape[1:], mlp_ratio=4,
            activation_layer=torch.nn.GELU, norm_layer=torch.nn.LayerNorm, attention_dropout=0.0, mlp_dropout=0.0,
            p_stochastic_dropout=0.0)
        # torchvision's assert (AssertionError), or its 49 x 49 bias against other partitions (RuntimeError)
        with pytest.raises((AssertionError, RuntimeError)):
            ref(torch.empty(1, *shape))
