"""Generate ``docs/ops.md``, the op reference, from the op registry.

Everything in the page comes from the code: each op's name, category, docstring, argument
schema, arity, parameters and torch class (:mod:`archdsl.ops`), the weight-initialization
functions (:data:`archdsl.ops.init.INIT_FUNCS`) and the built-in expression functions
(:data:`archdsl.elaborate.expr.BUILTINS`). Regenerate it after changing any of them::

    python -m archdsl.opdocs            # writes docs/ops.md
    python -m archdsl.opdocs OTHER.md   # writes another file

``tests/test_docs.py`` fails when the committed page is out of date.
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
from pathlib import Path

from .atomicio import default_mode
from .elaborate.expr import BUILTINS
from .elaborate.values import render
from .ops import all_ops
from .ops.init import INIT_FUNCS
from .ops.registry import REQUIRED, Arg, Op

#: where ``python -m archdsl.opdocs`` writes by default (the repository's docs folder)
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "ops.md"

#: categories in the order the page lists them; any other category follows, alphabetically
CATEGORY_ORDER = ("conv", "linear", "norm", "pool", "activation", "regularization", "reshape", "join")


def _class_path(op) -> str:
    """Where the op's module class lives: ``torch.nn`` or archdsl's own small modules."""
    import torch.nn
    if hasattr(torch.nn, op.torch_class):
        return f"torch.nn.{op.torch_class}"
    return f"archdsl.ops.modules.{op.torch_class}"


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(arg: Arg) -> str:
    return "required" if arg.default is REQUIRED else f"`{render(arg.default)}`"


def _signature(name: str, args) -> str:
    parts = [a.name if a.default is REQUIRED else f"{a.name} = {render(a.default)}" for a in args]
    return f"{name}({', '.join(parts)})"


def _args_table(args) -> list[str]:
    if not args:
        return ["Takes no arguments."]
    if not any(a.doc for a in args):  # no descriptions: leave the column out
        out = ["| Argument | Type | Default |", "|---|---|---|"]
        out += [f"| `{a.name}` | {_cell(a.type_text)} | {_cell(_default(a))} |" for a in args]
        return out
    out = ["| Argument | Type | Default | Description |", "|---|---|---|---|"]
    for a in args:
        out.append(f"| `{a.name}` | {_cell(a.type_text)} | {_cell(_default(a))} | {_cell(a.doc or '')} |")
    return out


def _ordered_ops() -> list[Op]:
    ops = all_ops()

    def key(op: Op):
        cat = op.category
        rank = CATEGORY_ORDER.index(cat) if cat in CATEGORY_ORDER else len(CATEGORY_ORDER)
        return (rank, cat, op.name)

    return sorted(ops.values(), key=key)


def _inputs(op: Op) -> str:
    if op.arity is None:
        return f"{op.min_inputs} or more"
    return str(op.arity)


#: how the arithmetic ops are usually written
_OPERATORS = {"add": "a + b", "sub": "a - b", "mul": "a * b", "div": "a / b", "neg": "-a", "matmul": "a @ b"}


def _function_form(op: Op) -> str:
    """``name(x, ...)`` as the op is called as a function in an expression."""
    tensors = ", ".join(op.tensor_inputs())
    args = _signature(op.name, op.args)
    inner = args[len(op.name) + 1:-1]
    return f"{op.name}({tensors}{', ' if tensors and inner else ''}{inner})"


def _has_params(op: Op) -> bool:
    """Learned tensors: a module's (``param_names``), or the one a direct-parameter op owns itself."""
    return bool(op.param_names) or (op.direct_param and not op.direct_buffer)


def _op_section(op: Op) -> list[str]:
    out = [f"#### `{op.name}`", ""]
    if op.functional:
        how = {"add": ", and the sum of `residual { ... }`", "concat": ", and `concat(...) { ... }`",
               "mul": ", and the product of `gate { ... }`"}.get(op.name, "")
        written = f" (or `{_OPERATORS[op.name]}`)" if op.name in _OPERATORS else ""
        out += [f"A function in expressions{how}; it makes no module:", "",
                "```text", _function_form(op) + written, "```", ""]
    else:
        out += ["```text", _signature(op.name, op.args), "```", ""]
        if op.callable_as_function:
            out += [f"Also a function in expressions, with no module: `{_function_form(op)}`.", ""]
    doc = inspect.cleandoc(op.doc()) if op.doc() else ""
    if doc:
        out += [doc, ""]
    params = ", ".join(f"`{p}`" for p in op.param_names) if op.param_names else "none"
    torch_class = f"`{_class_path(op)}`" if op.torch_class else "none (a function in the generated `forward`)"
    in_tree = "no (applied as a function)" if op.functional else "yes"
    if op.direct_param:  # its one tensor sits on the enclosing module, under the statement's label
        kind = "buffer" if op.direct_buffer else "parameter"
        params = ("none (a buffer)" if op.direct_buffer else
                  "the tensor itself, by its label: `init \"LABEL\" = ...`")
        torch_class = "none (an `nn.Parameter` on the enclosing module)" if not op.direct_buffer else \
            "none (a buffer on the enclosing module)"
        in_tree = f"no: a {kind} of the enclosing module, named by the label (`name: {op.name}(...)` gives " \
                  f"the `state_dict` key `name`)"
    out += [
        "| Property | Value |",
        "|---|---|",
        f"| Category | {op.category} |",
        f"| Inputs | {_inputs(op)} |",
        f"| Has parameters | {'yes' if _has_params(op) else 'no'} |",
        f"| Parameter tensors (for `init`) | {params} |",
        f"| Torch class | {torch_class} |",
        f"| Module in the model tree | {in_tree} |",
        "",
    ]
    out += _args_table(op.args)
    out.append("")
    return out


def _builtin_arity(b) -> str:
    if b.max_args >= 99:
        return f"{b.min_args} or more"
    if b.min_args == b.max_args:
        return str(b.min_args)
    return f"{b.min_args} to {b.max_args}"


def render_ops_markdown() -> str:
    """The text of ``docs/ops.md``."""
    ops = _ordered_ops()
    out = [
        "# Op reference",
        "",
        "<!-- Generated by `python -m archdsl.opdocs` from the op registry. Do not edit by hand. -->",
        "",
        "This page lists every primitive op a spec can call, the weight-initialization functions",
        "usable in `init` rules, and the built-in functions of the expression language. The",
        "language itself is described in [language.md](language.md).",
        "",
        "Shapes never include the batch dimension: a feature map is `CxHxW`, a flattened vector",
        "`F`, a token sequence `NxD`; the 1-D and 3-D layers (`conv1d`, `maxpool3d`, ...) take `CxL`",
        "sequences and `CxDxHxW` volumes. Dimension arguments (`flatten`'s `start_dim`, `concat`'s",
        "`dim`) count the batch as dim 0, as torch does. An argument written `int or [int, int]`",
        "takes one integer for both spatial axes or a list `[height, width]`; likewise",
        "`int or [int, int, int]` takes `[depth, height, width]` and `int or [int]` a `[length]`.",
        "",
        "Every number in an argument is range-checked when the call is bound, with an error at the",
        "argument: integers are below 2\\*\\*31 in magnitude (the largest dimension; `buffer` values:",
        "below 2\\*\\*63, int64), floats are finite (no NaN; no infinity unless the type says so)",
        "and within float32's range, and both lie in the range shown with the type (for a list, each",
        "entry), e.g. `int (>= 1)`, `float (in [0, 1])`, `float (> 0)`.",
        "",
        "## Summary",
        "",
        "| Op | Category | Inputs | Has parameters | Torch class |",
        "|---|---|---|---|---|",
    ]
    for op in ops:
        torch_class = f"`{_class_path(op).replace('torch.nn.', 'nn.')}`" if op.torch_class else "—"
        out.append(f"| [`{op.name}`](#{op.name}) | {op.category} | {_inputs(op)} | "
                   f"{'yes' if _has_params(op) else 'no'} | {torch_class} |")
    out += ["", "## Ops", ""]
    current = None
    for op in ops:
        if op.category != current:
            current = op.category
            out += [f"### Category: {current}", ""]
        out += _op_section(op)

    out += [
        "## Initialization functions",
        "",
        "Used on the right of an `init` rule, e.g.",
        "`init conv2d.weight = kaiming_normal(mode = \"fan_out\", nonlinearity = \"relu\")`.",
        "Each calls the `torch.nn.init` function shown on the parameter tensor, in place.",
        "",
        "| Function | Calls | Description |",
        "|---|---|---|",
    ]
    for fn in INIT_FUNCS.values():
        out.append(f"| [`{fn.name}`](#{fn.name}) | `torch.nn.init.{fn.torch_fn}` | {_cell(fn.doc)} |")
    out.append("")
    for fn in INIT_FUNCS.values():
        out += [f"### `{fn.name}`", "", "```text", _signature(fn.name, fn.args), "```", "",
                f"{fn.doc[:1].upper() + fn.doc[1:]} (`torch.nn.init.{fn.torch_fn}`).", ""]
        out += _args_table(fn.args)
        out.append("")

    out += [
        "## Built-in expression functions",
        "",
        "Available in every expression (arguments, `let`, conditions, loop lists). They cannot be",
        "used as layers.",
        "",
        "| Function | Arguments | Description |",
        "|---|---|---|",
    ]
    for b in BUILTINS.values():
        out.append(f"| `{b.name}` | {_builtin_arity(b)} | {_cell(b.doc)} |")
    out.append("")
    return "\n".join(out)


def write_ops_markdown(path: str | os.PathLike = DEFAULT_PATH) -> Path:
    """Write the page to ``path`` atomically (a temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_ops_markdown()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else default_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or (argv and argv[0] in ("-h", "--help")):
        print("usage: python -m archdsl.opdocs [OUTPUT.md]   (default: docs/ops.md)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    path = write_ops_markdown(argv[0] if argv else DEFAULT_PATH)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
