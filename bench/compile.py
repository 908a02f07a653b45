"""Compile-time cost of archdsl, stage by stage, against torchvision's constructor.

What is measured (for ``--spec``, default ``specs/resnet152.arch``)
------------------------------------------------------------------
* ``lark parser construction``: the first ``archdsl.syntax.parser.lark_parser()`` call,
  which builds the LALR tables from the grammar. It is cached for the process, so it is
  a one-time cost, reported separately (first call in a fresh process, plus the median
  of rebuilds after ``cache_clear()``) and excluded from every other row.
* ``parse (AST only)``: ``archdsl.syntax.parser.parse(text, name)`` on the spec file and
  on every file it ``use``s (e.g. ``lib/resnet.arch``), summed.
* ``load_spec: parse+globals`` and ``load_spec: elaborate+check``: the two entries of
  ``spec.timings`` from ``archdsl.load_spec`` -- the first covers parsing all files plus
  the loader's imports and global ``let``/``block`` definitions, the second the
  elaboration into the IR including the shape check (which runs during elaboration).
  ``load_spec total`` is the wall time of the whole ``load_spec`` call; ``(1st call,
  cold)`` is the first one in the process (parser already built; first-use costs of
  imports and caches included), shown once, not a median.
* ``build (cpu)`` / ``build (meta)``: ``spec.build()`` and ``spec.build(device="meta")``
  (module construction and the spec's weight init; "meta" allocates no storage).
* beside the build rows: ``torchvision.models.<name>()`` on CPU and under
  ``with torch.device("meta")``, the equivalent torchvision constructor.

Each row is the median over ``--runs`` runs after ``--warmup`` warm-up runs (min and max
are shown too). The last lines compare parse+elaborate+check (the ``load_spec`` total)
with the 50 ms target.

Usage (from the repository root)::

    python bench/compile.py
    python bench/compile.py --spec specs/resnet50.arch --runs 11
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TARGET_S = 0.050


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Per-stage compile time of an archdsl spec (parser construction, parse, "
                    "elaborate+check, build) vs torchvision's constructor; medians over several runs.")
    p.add_argument("--spec", default="specs/resnet152.arch",
                   help="spec file (default: specs/resnet152.arch)")
    p.add_argument("--tv-model", default=None,
                   help="torchvision.models constructor to compare with (default: the spec file's stem)")
    p.add_argument("--runs", type=int, default=7, help="timed runs per stage (default: 7)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs per stage (default: 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's default)")
    return p.parse_args(argv)


def _timed(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _fmt(xs):
    if xs is None:
        return f"{'-':>10} {'':>10} {'':>10}"
    if len(xs) == 1:
        return f"{xs[0] * 1e3:>10.2f} {'':>10} {'':>10}"
    return f"{statistics.median(xs) * 1e3:>10.2f} {min(xs) * 1e3:>10.2f} {max(xs) * 1e3:>10.2f}"


def main(argv=None):
    args = parse_args(argv)
    # --- one-time parser construction, measured first in this process -----------------
    from archdsl.syntax import parser as P
    P.lark_parser.cache_clear()
    t0 = time.perf_counter()
    P.lark_parser()
    first_parser = time.perf_counter() - t0

    import torch
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import archdsl
    from archdsl.testing import import_torchvision
    tv = import_torchvision()

    spec_path = args.spec if os.path.isabs(args.spec) else os.path.join(ROOT, args.spec)
    if not os.path.exists(spec_path):
        sys.exit(f"no spec file {args.spec}")
    tv_name = args.tv_model or os.path.splitext(os.path.basename(spec_path))[0]
    tv_ctor = getattr(tv.models, tv_name, None)

    def rebuild_parser():
        P.lark_parser.cache_clear()
        P.lark_parser()

    parser_rebuilds = _timed(rebuild_parser, max(3, args.runs // 2), 0)

    # --- parse only (AST) of every file the spec reads ---------------------------------
    t0 = time.perf_counter()
    probe = archdsl.load_spec(spec_path)
    t_first_load = time.perf_counter() - t0
    base = os.path.dirname(spec_path)
    files = [(rel, os.path.join(base, rel)) for rel in probe.sources]
    texts = [(rel, open(full, encoding="utf-8").read()) for rel, full in files]

    def parse_all():
        for rel, text in texts:
            P.parse(text, rel)

    t_parse = _timed(parse_all, args.runs, args.warmup)

    # --- load_spec (parse+globals, elaborate+check from spec.timings) -------------------
    t_lp, t_le, t_total = [], [], []
    for i in range(args.warmup + args.runs):
        t0 = time.perf_counter()
        spec = archdsl.load_spec(spec_path)
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            t_lp.append(spec.timings["parse"])
            t_le.append(spec.timings["elaborate"])
            t_total.append(dt)

    # --- build vs torchvision constructor (interleaved) ---------------------------------
    t_build, t_tv, t_meta, t_tv_meta = [], [], [], []
    for i in range(args.warmup + args.runs):
        keep = i >= args.warmup
        t0 = time.perf_counter()
        m = spec.build()
        t1 = time.perf_counter()
        del m
        if tv_ctor is not None:
            r = tv_ctor()
            t2 = time.perf_counter()
            del r
        t3 = time.perf_counter()
        m = spec.build(device="meta")
        t4 = time.perf_counter()
        del m
        if tv_ctor is not None:
            with torch.device("meta"):
                r = tv_ctor()
            t5 = time.perf_counter()
            del r
        if keep:
            t_build.append(t1 - t0)
            t_meta.append(t4 - t3)
            if tv_ctor is not None:
                t_tv.append(t2 - t1)
                t_tv_meta.append(t5 - t4)

    n_params = sum(p.numel() for p in spec.build(device="meta").parameters())
    print(f"spec {os.path.relpath(spec_path, os.getcwd())} (files: {', '.join(probe.sources)}), "
          f"{n_params / 1e6:.1f}M params; torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"runs {args.runs} after {args.warmup} warm-up; load avg {os.getloadavg()[0]:.2f}")
    head = f"{'stage':<36} {'median ms':>10} {'min':>10} {'max':>10}   {'torchvision':<22} {'median ms':>10} {'min':>10} {'max':>10}"
    print(head)
    print("-" * len(head))
    tv_label = f"models.{tv_name}()" if tv_ctor is not None else f"(no models.{tv_name})"
    rows = [
        ("lark parser construction (1st)", [first_parser], "", None),
        ("lark parser construction (rebuild)", parser_rebuilds, "", None),
        ("parse (AST only, all files)", t_parse, "", None),
        ("load_spec: parse+globals", t_lp, "", None),
        ("load_spec: elaborate+check", t_le, "", None),
        ("load_spec total", t_total, "", None),
        ("load_spec total (1st call, cold)", [t_first_load], "", None),
        ("build (cpu)", t_build, tv_label, t_tv if tv_ctor else None),
        ("build (meta)", t_meta, tv_label + " meta", t_tv_meta if tv_ctor else None),
    ]
    for label, xs, tl, ys in rows:
        right = f"   {tl:<22} {_fmt(ys)}" if tl else ""
        print(f"{label:<36} {_fmt(xs)}{right}")
    print("-" * len(head))
    pe = statistics.median(t_total)
    pe_parts = statistics.median([a + b for a, b in zip(t_lp, t_le)])
    verdict = "OK" if pe <= TARGET_S else "OVER"
    print(f"parse+elaborate+check (load_spec total, median): {pe * 1e3:.2f} ms "
          f"(timings sum {pe_parts * 1e3:.2f} ms) vs target {TARGET_S * 1e3:.0f} ms: {verdict} "
          f"({pe / TARGET_S:.2f}x of target)")
    if tv_ctor is not None:
        print(f"build/tv constructor (cpu): {statistics.median(t_build) / statistics.median(t_tv):.3f}x; "
              f"load_spec + build vs tv constructor: "
              f"{(pe + statistics.median(t_build)) / statistics.median(t_tv):.3f}x")
    print(f"one-time parser construction not included above: {first_parser * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
