"""`register a, b, ...`: the registration order of a module's children (torch's ``__init__`` order), which
fixes the state_dict order, the order constructors draw random numbers in and the order init rules visit
modules, independently of the order ``forward`` applies the children in (the data flow)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import archdsl
from archdsl.diagnostics import SpecError

#: a pre-norm transformer-style block whose torch counterpart creates norm2 and mlp before attn
BLOCK = """
block Block(d: int, project: bool = false) {
    init linear.weight = trunc_normal(std = 0.02)
    init linear.bias = zeros()
    REGISTER
    residual {
        norm1: layernorm()
        attn: linear(d)
    }
    residual {
        norm2: layernorm()
        mlp: seq { linear(2 * d); gelu(); linear(d) }
    }
    if project { project: linear(2 * d) }
}
model m input 5x16 {
    stem: linear(16)
    body: Block(16, PROJECT)
}
"""


class TorchBlock(nn.Module):
    """The same block as torch code writes it: created in one order, applied in another."""

    def __init__(self, d: int, project: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.project = nn.Linear(d, 2 * d) if project else None
        self.attn = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return self.project(x) if self.project is not None else x


def _spec(register: str, project: bool = False):
    return archdsl.load_spec(BLOCK.replace("REGISTER", register).replace("PROJECT", str(project).lower()))


@pytest.mark.parametrize("project", [False, True])
def test_registration_order_state_dict_init_and_outputs_match_torch(project):
    spec = _spec("register norm1, norm2, project, attn, mlp", project)
    torch.manual_seed(0)
    ours = spec.build()
    torch.manual_seed(0)
    stem = nn.Linear(16, 16)
    ref = TorchBlock(16, project)
    ours_sd = ours.state_dict()
    ref_sd = {**{f"stem.{k}": v for k, v in stem.state_dict().items()},
              **{f"body.{k}": v for k, v in ref.state_dict().items()}}
    assert list(ours_sd) == list(ref_sd)                     # torch's __init__ order
    assert all(torch.equal(ours_sd[k], v) for k, v in ref_sd.items())   # the same random draws
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(stem(x)))            # forward follows the data flow


def test_without_register_the_order_is_the_order_of_application():
    spec = _spec("")
    assert [k.split(".")[1] for k in spec.build(device="meta").state_dict()][2:] == \
        ["norm1", "norm1", "attn", "attn", "norm2", "norm2", "mlp", "mlp", "mlp", "mlp"]


def test_register_moves_only_the_named_children_to_its_place():
    spec = archdsl.load_spec("""
model m input 4x8x8 {
    a: conv2d(4, 1)
    register d, c
    b: conv2d(4, 1)
    c: conv2d(4, 1)
    d: conv2d(4, 1)
}""")
    model = spec.build(device="meta")
    assert [n for n, _ in model.named_children()] == ["a", "d", "c", "b"]
    assert [r.path for r in spec.summary(depth="all").rows] == ["a", "b", "c", "d"]   # the data flow


@pytest.mark.parametrize("register,message,help_text", [
    ("register norm1, nrom2, attn, mlp", "`register` names `nrom2`, which is not a child of `body`",
     "did you mean `norm2`?"),
    ("register norm1, norm1", "`norm1` is registered twice in `body`", None),
    ('register "mlp.0"', "`register` takes the names of this module's children, not \"mlp.0\"",
     "write the container's name"),
])
def test_register_errors_are_located(register, message, help_text):
    with pytest.raises(SpecError) as e:
        _spec(register)
    d = e.value.diagnostics[0]
    assert d.message == message
    assert d.span.line == 5                          # the `register` line of BLOCK
    assert help_text is None or help_text in d.help


def test_a_child_that_its_body_creates_only_conditionally_may_be_listed():
    # `project` exists only when project = true: listing it is not an error (torch's Optional modules)
    assert "body.project.weight" not in _spec("register norm1, norm2, project, attn, mlp").build(
        device="meta").state_dict()


def test_register_is_a_keyword_only_at_the_start_of_a_statement():
    spec = archdsl.load_spec("""
block B(register: int = 2) {
    let n = register * 2
    conv2d(n, 1)
}
model m input 3x4x4 = B()""")
    assert spec.output_shape == (4, 4, 4)
    with pytest.raises(SpecError) as e:
        archdsl.load_spec("block B() { register = 3\n relu() }\nmodel m input 3x4x4 = B()")
    assert "`register` at the start of a statement lists children" in e.value.diagnostics[0].help
