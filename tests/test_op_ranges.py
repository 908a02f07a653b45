"""Every number an op takes is range-checked: a spec that passes the check never fails in torch because of an
argument value.

For every op and every integer or float argument, boundary values (0, -1, 2**63, 2**64; for floats also NaN,
the infinities and numbers beyond float32) are written into a small model where the op applies (the op's
sample from ``test_registry.SAMPLES``). Each case must be either a located :class:`SpecError` or a spec that
builds on meta (and, when small, on CPU) and runs a forward giving exactly the checked output shape. The
numbers of ``x * 0.5``-style arithmetic are tried the same way. No other exception may escape.
"""

from __future__ import annotations

import math

import pytest
import torch

import archdsl
from archdsl.diagnostics import SpecError
from archdsl.ops import all_ops
from archdsl.ops.registry import MAX_SIZE, Arg, ArgTypeError

from .test_registry import SAMPLES, U

INF, NAN = math.inf, math.nan
INTS = [0, -1, 2 ** 63, 2 ** 64]
FLOATS = INTS + [0.5, 2.0, NAN, INF, -INF, 1e300, -1e300]
#: the elementwise ops: their only number is the scalar operand (``x * 0.5``), not a schema argument
ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


# ------------------------------------------------------------------ spec text


def lit(v) -> str:
    """``v`` as spec source text (NaN and the infinities as the arithmetic that gives them)."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "(1e308 * 10 - 1e308 * 10)"
        if math.isinf(v):
            return "(1e308 * 10)" if v > 0 else "(-1e308 * 10)"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(lit(x) for x in v) + "]"
    raise TypeError(v)


def _kwargs(kwargs: dict) -> list[str]:
    return [f"{k} = {lit(v)}" for k, v in kwargs.items()]


def _index_values(shape, size):
    """Valid indices of the given shape for a dim of ``size`` (nested lists)."""
    if len(shape) == 1:
        return [i % size for i in range(shape[0])]
    return [_index_values(shape[1:], size) for _ in range(shape[0])]


def model_text(name: str, kwargs: dict, shapes: list, sample: dict | None = None) -> str:
    """A model applying op ``name`` with ``kwargs`` to tensors of ``shapes`` (batched, or ``U``: parameters and
    index buffers). The model's input is a flat vector that is cut and reshaped into the batched inputs, so no
    layout is known (the samples' layouts are the op's own). ``sample``: the sample's own arguments (the
    shapes around the op follow them, not the values tried)."""
    sample = kwargs if sample is None else sample
    op = all_ops()[name]
    if name == "split_batch":  # its input's batch holds n items per sample: merge them in first
        shapes = [(2,) + tuple(shapes[0])]
    batched = [s for s in shapes if not isinstance(s, U)]
    if op.arity == 0:  # parameter, buffer: added to (or gathered into) a batched tensor of the sample's shape
        batched = [_zero_arity_shape(name, sample)]
    sizes = [math.prod(s) for s in batched]
    lines = [f"model m input [{sum(sizes)}] {{", "    let flat = in"]
    names, off, k_b = [], 0, 0
    for k, s in enumerate(shapes):
        if isinstance(s, U):
            if name == "index" and k == 1:
                full = _full(op, shapes)[0]
                d = sample.get("dim")
                if not isinstance(d, int) or not -len(full) <= d < len(full):  # an out-of-range dim: any indices
                    d = 0 if isinstance(shapes[0], U) else 1
                lines.append(f"    let x{k} = idx{k}: buffer({lit(_index_values(s, full[d]))})")
            else:
                lines.append(f"    let x{k} = u{k}: parameter({lit(list(s))})")
        else:
            n = sizes[k_b]
            lines.append(f"    let x{k} = reshape(narrow(flat, 1, {off}, {n}), {lit(list(s))})")
            off, k_b = off + n, k_b + 1
        names.append(f"x{k}")
    args = _kwargs(kwargs)
    if op.arity == 0:
        lines.append(f"    let x0 = reshape(flat, {lit(list(batched[0]))})")
        lines.append(f"    let p = p: {name}({', '.join(args)})")
        if name == "buffer" and _int_buffer(kwargs.get("values"), kwargs.get("dtype", "auto")):
            lines.append("    let t = t: parameter([4])")
            lines.append("    from x0 + index(t, p)")
        else:
            lines.append("    from x0 + p")
    elif name == "concat":  # a keyword: written as the statement, its branches reading the tensors
        lines.append("    from x0")
        lines.append(f"    concat({', '.join(args)}) {{ pass; " + "; ".join(f"from {x}" for x in names[1:]) + " }")
    elif op.functional or (op.full_shapes and op.callable_as_function):
        tensors = names if op.arity != None or not op.tensor_inputs()[0].startswith("[") else \
            ["[" + ", ".join(names) + "]"]
        if name == "split_batch":
            tensors = ["merge_batch(x0)"]
        lines.append(f"    from {name}({', '.join(tensors + args)})")
    else:
        lines.append(f"    from {name}({', '.join(args)})({', '.join(names)})")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _full(op, shapes):
    from archdsl.ops.registry import BATCH
    return [tuple(s) if isinstance(s, U) else (BATCH,) + tuple(s) for s in shapes]


def _int_buffer(values, dtype) -> bool:
    def flat(v):
        return [y for x in v for y in flat(x)] if isinstance(v, (list, tuple)) else [v]
    return dtype == "auto" and all(isinstance(v, int) and not isinstance(v, bool) for v in flat(values))


def _zero_arity_shape(name, sample):
    """The batched tensor a ``parameter`` / ``buffer`` sample is combined with: the sample's own shape."""
    if name == "parameter":
        return tuple(sample["shape"])
    values = sample["values"]
    shape = []
    while isinstance(values, (list, tuple)):
        shape.append(len(values))
        values = values[0]
    return tuple(shape)


# ------------------------------------------------------------------ cases


def _kind(arg: Arg) -> str | None:
    """``"float"`` or ``"int"`` for numeric arguments (lists of them included), None for the others."""
    for probe, kind in ((0.5, "float"), ([[0.5]], "float"), (1, "int"), ([1], "int"), ([1, 1], "int")):
        try:
            arg.type(probe)
        except (ArgTypeError, TypeError, ValueError):
            continue
        return kind
    try:
        arg.type([1, 1, 1])
        return "int"
    except (ArgTypeError, TypeError, ValueError):
        return None


def _sample_for(name: str, arg: str):
    """The op's first sample that gives ``arg`` (or its first sample) and has a batched input."""
    samples = SAMPLES[name]
    usable = [s for s in samples if all_ops()[name].arity == 0 or any(not isinstance(x, U) for x in s[1])]
    given = [s for s in usable if arg in s[0]]
    return (given or usable)[0]


def _first_leaf_replaced(v, b):
    if isinstance(v, (list, tuple)):
        return [_first_leaf_replaced(v[0], b)] + list(v[1:])
    return b


def cases(name: str):
    """(description, spec text) for every numeric argument of op ``name`` and every boundary value."""
    op = all_ops()[name]
    out = []
    if name in ARITH:
        sym = ARITH[name]
        for b in FLOATS:
            for expr in (f"x0 {sym} {lit(b)}", f"{lit(b)} {sym} x0"):
                text = f"model m input 3x4 {{\n    let x0 = in\n    from {expr}\n}}\n"
                out.append((f"{expr}", text))
        return out
    for arg in op.args:
        kind = _kind(arg)
        if kind is None:
            continue
        kwargs, shapes = _sample_for(name, arg.name)
        base = dict(kwargs)
        values = INTS if kind == "int" else FLOATS
        given = base.get(arg.name, arg.default)
        for b in values:
            variants = [b]
            if isinstance(given, (list, tuple)) and given:
                variants.append(_first_leaf_replaced(given, b))
            else:
                try:
                    conv = arg.type(given)
                except ArgTypeError:
                    conv = None
                if isinstance(conv, tuple) and len(conv) > 1:
                    variants.append(_first_leaf_replaced(conv, b))
            for v in variants:
                kw = dict(base)
                kw[arg.name] = v
                out.append((f"{arg.name} = {lit(v)}", model_text(name, kw, shapes, base)))
    return out


def run_case(text: str) -> str:
    """``"refused"`` (a located SpecError) or ``"ran"``; raises AssertionError on a broken promise."""
    try:
        spec = archdsl.load_spec(text)
    except SpecError as e:
        unlocated = [d.message for d in e.diagnostics if d.span is None]
        assert not unlocated, f"unlocated diagnostics: {unlocated}"
        return "refused"
    want = (2,) + tuple(spec.output_shape)
    with torch.no_grad():
        meta = spec.build(device="meta")
        out = meta(torch.empty(2, *spec.input_shape, device="meta"))
        assert tuple(out.shape) == want, f"meta output {tuple(out.shape)}, checked {want}"
        size = sum(t.numel() for t in list(meta.parameters()) + list(meta.buffers()))
        if size < 10 ** 6:
            torch.manual_seed(0)
            cpu = spec.build(device="cpu")
            out = cpu(torch.randn(2, *spec.input_shape))
            assert tuple(out.shape) == want, f"cpu output {tuple(out.shape)}, checked {want}"
    return "ran"


def _check_all(name: str):
    failures, seen = [], {"refused": 0, "ran": 0}
    for what, text in cases(name):
        try:
            seen[run_case(text)] += 1
        except Exception as e:  # noqa: BLE001 -- any other exception is the failure this test looks for
            failures.append(f"{name}: {what}: {type(e).__name__}: {str(e)[:300]}\n{text}")
    return failures, seen


NUMERIC_OPS = sorted(n for n, op in all_ops().items() if n in ARITH or any(_kind(a) for a in op.args))


def test_numeric_ops_cover_the_registry():
    """Every op with a number in its schema is tried (and has a sample the cases can use)."""
    assert NUMERIC_OPS and set(NUMERIC_OPS) <= set(SAMPLES)
    assert {"conv2d", "batchnorm2d", "dropout", "mha", "pad", "buffer", "parameter", "mul"} <= set(NUMERIC_OPS)


@pytest.mark.parametrize("name", NUMERIC_OPS)
def test_samples_run_as_models(name):
    """The models the cases are made from check and run with the sample's own arguments."""
    kwargs, shapes = _sample_for(name, "")
    if name in ARITH:
        return
    assert run_case(model_text(name, dict(kwargs), shapes)) == "ran"


@pytest.mark.parametrize("name", NUMERIC_OPS)
def test_boundary_values_are_refused_or_run(name):
    failures, seen = _check_all(name)
    assert not failures, f"{len(failures)} case(s) broke the promise:\n\n" + "\n\n".join(failures[:5])
    assert seen["refused"] > 0  # the boundary values include out-of-range ones for every op


# ------------------------------------------------------------------ the binding itself


ARG_CASES = [(n, a.name) for n in sorted(all_ops()) for a in all_ops()[n].args if _kind(a)]


@pytest.mark.parametrize("name,arg", ARG_CASES)
def test_binding_refuses_huge_and_nonfinite_numbers(name, arg):
    """At binding, with the refusal at the argument: integers from 2**31 on (2**63 for buffer values), NaN,
    and infinities unless the argument allows them; the defaults are in range."""
    op = all_ops()[name]
    a = next(x for x in op.args if x.name == arg)
    if not a.required:
        assert a.check_numbers(a.type(a.default)) is None, f"the default of `{arg}` is out of its own range"
    kwargs = dict(_sample_for(name, arg)[0])
    kwargs = {k: v for k, v in kwargs.items() if k not in ("scalar", "reverse")}
    bad = [a.int_limit, -a.int_limit, 2 ** 64, NAN] + ([] if a.nonfinite else [INF, -INF])
    if _kind(a) == "float":
        bad.remove(-a.int_limit) if a.int_limit > 2 ** 60 else None
    for b in bad:
        if _kind(a) == "float" and isinstance(b, int) and abs(b) < 1e38:
            continue  # an integer given for a float is converted; its size is then the float's
        kw = dict(kwargs)
        kw[arg] = b
        try:
            a.type(b)
        except ArgTypeError:
            kw[arg] = _first_leaf_replaced(kwargs.get(arg, a.default), b)
        _, problems = op.resolve_args([], kw)
        assert any(p_arg == arg for p_arg, _ in problems), f"`{name}({arg} = {b})` was accepted"


def test_range_messages():
    op = all_ops()["conv2d"]
    _, problems = op.resolve_args([8, 3], {"stride": 0})
    assert problems == [("stride", "argument `stride` of `conv2d` must be >= 1, got the integer 0")]
    _, problems = op.resolve_args([8, [3, 0]], {})
    assert problems == [("kernel_size", "argument `kernel_size` of `conv2d` must be >= 1, got the integer 0 "
                                        "(in [3, 0])")]
    _, problems = op.resolve_args([8, 3], {"padding": MAX_SIZE})
    assert "must be below 2**31 in magnitude" in problems[0][1]
    _, problems = all_ops()["dropout"].resolve_args([NAN], {})
    assert problems == [("p", "argument `p` of `dropout` must be a finite number, got the number nan")]
    _, problems = all_ops()["batchnorm2d"].resolve_args([], {"eps": 0.0})
    assert problems and "must be > 0" in problems[0][1]


def test_located_range_error():
    with pytest.raises(SpecError) as e:
        archdsl.load_spec("model m input 3x8x8 {\n    conv2d(4, 3, stride = 0)\n}\n")
    (d,) = e.value.diagnostics
    assert d.message == "argument `stride` of `conv2d` must be >= 1, got the integer 0"
    assert (d.span.line, d.span.column) == (2, 18)
