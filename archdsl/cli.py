"""The ``archdsl`` command line: ``check`` and ``compile``.

Exit codes: 0 success, 1 the spec has errors (diagnostics on stderr), 2 usage errors
(bad options, missing files), 3 an internal error (a bug in archdsl; set
``ARCHDSL_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from . import __version__
from .diagnostics import SpecError
from .elaborate.elaborator import Override

EXIT_SPEC, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3
DTYPES = ("float32", "float64", "float16", "bfloat16")


class UsageError(Exception):
    pass


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``3x224x224`` (or ``3,224,224``) into a tuple of positive ints."""
    parts = re.split(r"\s*[x,]\s*", text.strip())
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"invalid --input {text!r}: expected positive integers such as 3x224x224")
    return tuple(int(p) for p in parts)


def parse_sets(items: list[str]) -> dict[str, Override]:
    """Parse ``--set k=v`` options; values are archdsl expressions (``10``, ``[2, 2, 2, 2]``, ``true``)."""
    out: dict[str, Override] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", key) or not value.strip():
            raise UsageError(f"invalid --set {item!r}: expected NAME=VALUE, e.g. --set num_classes=10")
        out[key] = Override(value.strip())
    return out


def _load(args):
    from .spec import load_spec
    if not os.path.isfile(args.spec):
        raise UsageError(f"no such spec file: {args.spec}")
    shape = parse_shape(args.input) if args.input else None
    return load_spec(args.spec, model=args.model, input_shape=shape, **parse_sets(args.set))


def fmt_count(n: float) -> str:
    """1234567 -> '1.235 M' (G, M and k prefixes; small numbers as they are)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n:g}"


def _fmt_shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="path to a .arch spec file")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="override a model parameter (repeatable), e.g. --set num_classes=10")
    p.add_argument("--input", metavar="CxHxW", help="override the input shape, e.g. 3x160x160")
    p.add_argument("--model", metavar="NAME", help="which model, when the file defines several")


def cmd_check(args) -> int:
    spec = _load(args)
    if args.emit_ir == "yaml":
        sys.stdout.write(spec.ir.to_yaml())
        return 0
    if args.emit_ir == "json":
        sys.stdout.write(spec.ir.to_json() + "\n")
        return 0
    from .ops import get_op
    rows = []
    for node in spec.ir.ops():
        op = get_op(node.op)
        path = node.path if node.path is not None else f"{node.scope or '(model)'} ({node.op})"
        rows.append((path, op.label(node.attrs), _fmt_shape(node.shape), f"{node.params:,}"))
    header = ("module", "op", "output", "params")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    out = [f"{spec.name}: input {_fmt_shape(spec.input_shape)} -> output {_fmt_shape(spec.output_shape)}", ""]
    fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"  # noqa: E731
    out.append(fmt(header))
    out.append(fmt(tuple("-" * w for w in widths)))
    out.extend(fmt(r) for r in rows)
    out.append("")
    out.append(f"params: {spec.num_params:,}   MACs: {fmt_count(spec.macs)}   "
               f"({len(rows)} layers, no errors)")
    print("\n".join(out))
    return 0


def cmd_compile(args) -> int:
    import torch
    if args.dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {args.dtype!r}; choose from {', '.join(DTYPES)}")
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        raise UsageError(f"invalid --device {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
    spec = _load(args)
    t0 = time.perf_counter()
    model = spec.build(device=device, dtype=getattr(torch, args.dtype))
    build_s = time.perf_counter() - t0
    rows = [
        ("model", spec.name),
        ("input", _fmt_shape(spec.input_shape)),
        ("output", _fmt_shape(spec.output_shape)),
        ("params", f"{spec.num_params:,}"),
        ("MACs", f"{fmt_count(spec.macs)} (torchvision's \"GFLOPS\" figure); FLOPs = 2 x MACs = {fmt_count(2 * spec.macs)}"),
        ("device", f"{device}, {args.dtype}"),
        ("build", f"{build_s * 1000:.0f} ms"),
    ]
    if args.output:
        spec.save_checkpoint(args.output, model)
        rows.append(("saved", args.output))
    print("\n".join(f"{k:<7} {v}" for k, v in rows))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archdsl",
        description="Compile declarative architecture specs (.arch) into PyTorch modules.",
        epilog="Run `archdsl COMMAND --help` for a command's options. Exit codes: 0 ok, 1 spec errors, "
               "2 usage errors.")
    parser.add_argument("--version", action="version", version=f"archdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("check", help="parse and shape-check a spec; print a per-layer table",
                       description="Parse, elaborate and shape-check a spec without building torch modules. "
                                   "Prints one row per layer: module path, op, output shape, parameters.")
    _common(p)
    p.add_argument("--emit-ir", choices=("yaml", "json"), help="print the elaborated IR instead of the table")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("compile", help="build the nn.Module; print shapes, parameters and build time",
                       description="Check the spec, build the torch module and print its name, input and output "
                                   "shapes, exact parameter count, MACs and build time. With -o, save the spec "
                                   "sources, overrides and weights; archdsl.load_checkpoint(FILE) rebuilds it.")
    _common(p)
    p.add_argument("--device", default="cpu", help="torch device to build on (cpu, cuda, meta, ...)")
    p.add_argument("--dtype", default="float32", help=f"parameter dtype: {', '.join(DTYPES)}")
    p.add_argument("-o", "--output", metavar="FILE", help="save a checkpoint (spec, overrides, weights)")
    p.set_defaults(func=cmd_compile)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_SPEC
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"archdsl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in archdsl, not in the spec
        if os.environ.get("ARCHDSL_DEBUG"):
            raise
        print(f"archdsl: internal error: {type(e).__name__}: {e}\n"
              "This is a bug in archdsl; rerun with ARCHDSL_DEBUG=1 for the traceback.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
