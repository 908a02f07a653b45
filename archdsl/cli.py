"""The ``archdsl`` command line: ``check``, ``compile``, ``summary`` and ``draw``.

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
from .ops.registry import fmt_shape, fmt_shapes
from .passes.summary import fmt_count

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
    return load_spec(args.spec, model=args.model, input_shape=shape, trusted=not args.untrusted,
                     limits=parse_limits(args.limit, not args.untrusted), **parse_sets(args.set))


def parse_limits(items: list[str], trusted: bool):
    """Parse ``--limit NAME=N`` options into the :class:`archdsl.Limits` of the mode."""
    from .limits import resolve
    changes = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        value = value.strip().replace("_", "")
        if not sep or not value.isdigit():
            raise UsageError(f"invalid --limit {item!r}: expected NAME=N, e.g. --limit nodes=5000000")
        changes[key.strip()] = int(value)
    try:
        return resolve(changes, trusted)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_dtype(args) -> str:
    if args.dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {args.dtype!r}; choose from {', '.join(DTYPES)}")
    return args.dtype


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="path to a .arch spec file")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="override a model parameter (repeatable), e.g. --set num_classes=10")
    p.add_argument("--input", metavar="CxHxW", help="override the input shape, e.g. 3x160x160")
    p.add_argument("--model", metavar="NAME", help="which model, when the file defines several")
    p.add_argument("--untrusted", action="store_true",
                   help="the spec comes from someone else: `use` only inside its directory and the zoo, "
                        "tighter budgets, and a memory ceiling for building (docs/cli.md, Budgets)")
    p.add_argument("--limit", action="append", metavar="NAME=N", default=[],
                   help="raise or lower one budget (repeatable), e.g. --limit nodes=5000000")


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
        rows.append((path, op.label(node.attrs), fmt_shape(node.shape), f"{node.params:,}"))
    header = ("module", "op", "output", "params")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    out = [f"{spec.name}: input {fmt_shape(spec.input_shape)} -> output {fmt_shapes(spec.output_shapes)}", ""]
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
    _check_dtype(args)
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
    from .passes.summary import totals_lines
    rows = [
        ("model", spec.name),
        ("input", fmt_shape(spec.input_shape)),
        ("output", fmt_shapes(spec.output_shapes)),
        *totals_lines(spec.summary(depth=1, dtype=args.dtype).totals, args.dtype),
        ("device", f"{device}, {args.dtype}"),
        ("build", f"{build_s * 1000:.0f} ms"),
    ]
    if args.output:
        spec.save_checkpoint(args.output, model)
        rows.append(("saved", args.output))
    print("\n".join(f"{k:<16} {v}" for k, v in rows))
    return 0


def _summary_depth(text: str | None):
    if text is None or text in ("blocks", "all"):
        return text
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"invalid --depth {text!r}: expected blocks, all or an integer >= 1")
    return int(text)


def cmd_summary(args) -> int:
    import json
    _check_dtype(args)
    depth = _summary_depth(args.depth)
    summary = _load(args).summary(depth=depth, dtype=args.dtype)
    if args.json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
    else:
        print(summary.to_text())
    return 0


def _draw_target(args, name: str) -> tuple[str, str]:
    """(path, format) from -o and --format: the format follows the extension unless given."""
    from .backends.dot import FORMATS
    fmt = args.format
    if args.output and args.output != "-" and fmt is None:
        ext = os.path.splitext(args.output)[1].lstrip(".").lower()
        fmt = "dot" if ext == "gv" else ext
        if fmt not in FORMATS:
            raise UsageError(f"cannot tell the format of {args.output!r} from its extension; "
                             f"use --format ({', '.join(FORMATS)})")
    fmt = fmt or ("dot" if args.output == "-" else "svg")
    if args.output == "-" and fmt != "dot":
        raise UsageError("-o - (standard output) is only for --format dot")
    return args.output or f"{name}.{fmt}", fmt


def cmd_draw(args) -> int:
    from .backends.dot import INSTALL_HINT, DrawError, diagram, has_dot, render
    if args.depth is not None and args.depth < 0:
        raise UsageError(f"invalid --depth {args.depth}: expected 0 or more")
    for opt in ("columns", "dpi"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            raise UsageError(f"invalid --{opt} {getattr(args, opt)}: expected 1 or more")
    if args.output and args.output != "-" and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UsageError(f"cannot write {args.output}: no such directory")
    _, fmt = _draw_target(args, "model")
    if fmt != "dot" and not has_dot():
        raise UsageError(f"writing {fmt} needs the Graphviz `dot` program, which is not on PATH; "
                         f"{INSTALL_HINT}, or write DOT text with --format dot")
    spec = _load(args)
    path, fmt = _draw_target(args, spec.name)
    try:
        dot, view = diagram(spec.ir, depth=args.depth, expand=args.expand, fold=not args.no_fold,
                            rankdir=args.rankdir, columns=args.columns)
    except DrawError as e:
        raise UsageError(str(e)) from None
    if path == "-":
        sys.stdout.write(dot.source)
        return 0
    render(dot, path, format=fmt, dpi=args.dpi)
    print(f"{path}: {len(view.drawn_nodes())} nodes, depth {view.depth}"
          f"{'' if args.depth is not None else ' (auto)'}{'' if args.no_fold else ', repeated blocks folded'}")
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

    p = sub.add_parser("summary", help="parameters, MACs, memory and receptive field per module, from the IR",
                       description="Summarize a checked spec from its IR alone (no torch modules are built): one "
                                   "row per module down to --depth with its op, output shape, parameters, MACs "
                                   "and receptive field (size, effective stride, effective padding), then the "
                                   "totals: trainable parameters, buffers, MACs (torchvision's \"GFLOPS\" figure) "
                                   "and FLOPs (2 x MACs), parameter memory and the activation memory of one "
                                   "forward pass at batch 1. Conventions: docs/summary.md.")
    _common(p)
    p.add_argument("--depth", metavar="N", help="rows down to N levels (1: the model's children), 'all' for "
                                                "every op, or 'blocks' (default: down to repeated blocks)")
    p.add_argument("--json", action="store_true", help="print the rows and totals as a JSON document")
    p.add_argument("--dtype", default="float32", help=f"dtype for the memory figures: {', '.join(DTYPES)}")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("draw", help="draw the architecture as a Graphviz diagram (svg, png, pdf or dot)",
                       description="Draw the checked spec from its IR: one node per op (module path, op, output "
                                   "shape, parameters), clusters per block, joins for residual sums, concatenations "
                                   "and gates, colours by op category. Blocks deeper than --depth are collapsed to "
                                   "one node with their totals; runs of identical blocks are folded into one, "
                                   "marked x K. Without -o, writes MODEL.svg (or MODEL.FORMAT) in the current "
                                   "directory. --format dot needs no Graphviz binary; svg, png and pdf need `dot`.")
    _common(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="output file (its extension sets the format); - writes DOT text to standard output")
    p.add_argument("--format", choices=("svg", "png", "pdf", "dot"), help="output format (default: svg)")
    p.add_argument("--depth", type=int, metavar="N",
                   help="open blocks down to depth N (the model is 0) and collapse deeper ones; "
                        "default: the deepest depth drawing at most 120 nodes, with the smaller blocks one "
                        "level deeper opened while they fit")
    p.add_argument("--expand", nargs="+", action="extend", default=[], metavar="PATH",
                   help="open these blocks whatever --depth says (module paths or globs such as 'layer3.*')")
    p.add_argument("--no-fold", action="store_true", help="draw every repeated block instead of folding runs")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB", help="data flows top-bottom or left-right")
    p.add_argument("--columns", type=int, metavar="N",
                   help="wrap the chain into N columns (rows with LR); default: automatic, encoder-decoders "
                        "drawn as a U; any N draws the plain layout, 1 never wraps")
    p.add_argument("--dpi", type=int, metavar="N", help="resolution of --format png (Graphviz's default: 96)")
    p.set_defaults(func=cmd_draw)
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
