"""Forward-pass latency of archdsl-built models against torchvision's, on CPU.

What is measured
----------------
For each model (``--models``) and batch size (``--batches``):

* ``ours`` is ``archdsl.load_spec(specs/<model>.arch).build()`` (with the model parameters
  ``MODELS`` gives, e.g. ``swin_t_lib``: swin_t with ``library_attention = true``); ``tv`` is
  ``torchvision.models.<model>()``. torchvision's (randomly initialised) ``state_dict`` is
  loaded into ours with ``strict=True``, so both compute the same function; the outputs
  are compared once (``maxdiff`` column) as a sanity check.
* Both are in ``eval()`` mode and run under ``torch.inference_mode()`` on the same input
  tensor ``randn(batch, C, H, W)`` (the spec's declared input shape).
* After a warm-up (``--warmup`` calls of each), the two are timed *interleaved* in one
  loop: every repetition runs one forward of each, alternating which goes first
  (ours/tv, tv/ours, ...) so that drift in machine state (frequency, cache, other load)
  hits both equally. Each forward is timed individually with ``time.perf_counter``.
* Reported: the median time of each (ms), ``ratio`` = median(ours) / median(tv), and the
  median of the per-repetition ratios ``r_med`` with its interquartile range
  ``r_iqr`` (a noise indicator: a ratio inside the IQR of 1.0 is not a real difference).
  The ``overall`` line gives the geometric mean and the maximum of ``ratio``.

Repetitions: by default (``--reps auto``) each (model, batch) gets as many repetitions as
fit in ``--budget`` seconds (estimated from the warm-up), clamped to [``--min-reps``,
``--max-reps``]; ``--reps N`` fixes the count. The default run (resnet50, resnet18,
vgg16 at batch 1 and 16) takes about 3-4 minutes on 2 CPU cores.

Adding a model: append a line to ``MODELS`` below. Models whose spec file does not exist
(or that this torchvision lacks) are skipped with a note.

Usage (from the repository root)::

    python bench/forward.py
    python bench/forward.py --models resnet50 --batches 1 --reps 50 --threads 1
    python bench/forward.py --models swin_t,swin_t_lib --batches 1,8
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

# name -> (spec file relative to the repo root, torchvision.models constructor name[, spec
# overrides]): the overrides are load_spec keyword arguments (model parameters), e.g. the same
# spec with another implementation of a block. Add models here; missing spec files are skipped
# with a note.
MODELS: dict[str, tuple] = {
    "resnet18": ("specs/resnet18.arch", "resnet18"),
    "resnet34": ("specs/resnet34.arch", "resnet34"),
    "resnet50": ("specs/resnet50.arch", "resnet50"),
    "resnet101": ("specs/resnet101.arch", "resnet101"),
    "resnet152": ("specs/resnet152.arch", "resnet152"),
    "resnext50_32x4d": ("specs/resnext50_32x4d.arch", "resnext50_32x4d"),
    "wide_resnet50_2": ("specs/wide_resnet50_2.arch", "wide_resnet50_2"),
    "alexnet": ("specs/alexnet.arch", "alexnet"),
    "vgg11": ("specs/vgg11.arch", "vgg11"),
    "vgg16": ("specs/vgg16.arch", "vgg16"),
    "vgg16_bn": ("specs/vgg16_bn.arch", "vgg16_bn"),
    "mobilenet_v2": ("specs/mobilenet_v2.arch", "mobilenet_v2"),
    "efficientnet_b0": ("specs/efficientnet_b0.arch", "efficientnet_b0"),
    "convnext_tiny": ("specs/convnext_tiny.arch", "convnext_tiny"),
    "densenet121": ("specs/densenet121.arch", "densenet121"),
    "vit_b_16": ("specs/vit_b_16.arch", "vit_b_16"),
    # ViT-B/16 with nn.MultiheadAttention written in the language (specs/lib/attention.arch)
    "vit_b_16_lib": ("specs/vit_b_16.arch", "vit_b_16", {"library_attention": True}),
    "swin_t": ("specs/swin_t.arch", "swin_t"),
    # Swin-T with the attention written in the language (specs/lib/swin_attention.arch) instead of
    # the `shifted_window_attention` op
    "swin_t_lib": ("specs/swin_t.arch", "swin_t", {"library_attention": True}),
    "swin_v2_t": ("specs/swin_v2_t.arch", "swin_v2_t"),
    "swin_v2_t_lib": ("specs/swin_v2_t.arch", "swin_v2_t", {"library_attention": True}),
}

DEFAULT_MODELS = ["resnet50", "resnet18", "vgg16"]
DEFAULT_BATCHES = [1, 16]


def _csv(kind):
    def parse(text):
        return [kind(x) for x in text.split(",") if x.strip()]
    return parse


def _reps(text):
    if text == "auto":
        return None
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("--reps must be >= 1 or 'auto'")
    return n


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Forward latency of archdsl-built models vs torchvision (CPU, eval, inference_mode), "
                    "measured interleaved; prints median times and ours/tv ratios.")
    p.add_argument("--models", type=_csv(str), default=DEFAULT_MODELS,
                   help=f"comma-separated model names (default: {','.join(DEFAULT_MODELS)}; "
                        f"known: {','.join(MODELS)})")
    p.add_argument("--batches", type=_csv(int), default=DEFAULT_BATCHES,
                   help="comma-separated batch sizes (default: 1,16)")
    p.add_argument("--reps", type=_reps, default=None,
                   help="timed repetitions per (model, batch), each one forward of ours and one of tv; "
                        "'auto' (default) fits --budget")
    p.add_argument("--budget", type=float, default=22.0,
                   help="seconds of timed runs per (model, batch) when --reps is auto (default: 22)")
    p.add_argument("--min-reps", type=int, default=6, help="lower bound for auto reps (default: 6)")
    p.add_argument("--max-reps", type=int, default=200, help="upper bound for auto reps (default: 200)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up forwards of each model (default: 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and input (default: 0)")
    return p.parse_args(argv)


def build_pair(name, tv):
    """(ours, tv_model, input_shape) with tv's weights loaded into ours, or a skip reason (str)."""
    import archdsl
    from archdsl.testing import torchvision_model
    spec_path, ctor, *rest = MODELS.get(name, (f"specs/{name}.arch", name))
    overrides = rest[0] if rest else {}
    full = os.path.join(ROOT, spec_path)
    if not os.path.exists(full):
        return f"no spec file {spec_path}"
    if not hasattr(tv.models, ctor):
        return f"torchvision has no models.{ctor}"
    spec = archdsl.load_spec(full, **overrides)
    ours = spec.build()
    ref = torchvision_model(ctor)
    with torch.no_grad():  # parameters that start at zero (ViT's head) would make maxdiff trivially 0
        for p in ref.parameters():
            if not torch.any(p):
                p.normal_(0, 0.02)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    return ours, ref, tuple(spec.input_shape)


def _time_one(model, x):
    t0 = time.perf_counter()
    model(x)
    return time.perf_counter() - t0


def _quantile(xs, q):
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def bench_pair(ours, ref, x, args):
    with torch.inference_mode():
        maxdiff = (ours(x) - ref(x)).abs().max().item()
        warm = []
        for _ in range(args.warmup):
            warm.append(_time_one(ours, x))
            warm.append(_time_one(ref, x))
        if args.reps is not None:
            reps = args.reps
        else:
            per_rep = 2 * statistics.median(warm[-4:] if len(warm) >= 4 else warm)
            reps = int(args.budget / max(per_rep, 1e-6))
            reps = max(args.min_reps, min(args.max_reps, reps))
        t_ours, t_tv = [], []
        for i in range(reps):
            if i % 2 == 0:
                t_ours.append(_time_one(ours, x))
                t_tv.append(_time_one(ref, x))
            else:
                t_tv.append(_time_one(ref, x))
                t_ours.append(_time_one(ours, x))
    return t_ours, t_tv, maxdiff


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from archdsl.testing import import_torchvision
    tv = import_torchvision()

    print(f"torch {torch.__version__}, torchvision {tv.__version__}, threads {torch.get_num_threads()}, "
          f"cpu count {os.cpu_count()}, mode eval + inference_mode, "
          f"reps {'auto (budget %.0fs)' % args.budget if args.reps is None else args.reps}, "
          f"warmup {args.warmup}")
    load0 = os.getloadavg()[0]
    if load0 > 0.5:
        print(f"warning: 1-min load average is {load0:.2f} before starting; other processes compete for "
              f"the CPU and make timings noisy (ratios are interleaved, so less affected than absolute times)")
    header = (f"{'model':<16} {'batch':>5} {'reps':>5} {'ours ms':>10} {'tv ms':>10} "
              f"{'ratio':>7} {'r_med':>7} {'r_iqr':>15} {'maxdiff':>9}")
    print(header)
    print("-" * len(header))
    ratios = []
    notes = []
    t_start = time.perf_counter()
    for name in args.models:
        torch.manual_seed(args.seed)
        pair = build_pair(name, tv)
        if isinstance(pair, str):
            notes.append(f"skipped {name}: {pair}")
            print(f"{name:<16} {'-':>5} skipped ({pair})")
            continue
        ours, ref, in_shape = pair
        for b in args.batches:
            g = torch.Generator().manual_seed(args.seed + b)
            x = torch.randn((b, *in_shape), generator=g)
            t_ours, t_tv, maxdiff = bench_pair(ours, ref, x, args)
            m_ours, m_tv = statistics.median(t_ours), statistics.median(t_tv)
            ratio = m_ours / m_tv
            per = [a / c for a, c in zip(t_ours, t_tv)]
            q1, q3 = _quantile(per, 0.25), _quantile(per, 0.75)
            ratios.append((name, b, ratio))
            print(f"{name:<16} {b:>5} {len(t_ours):>5} {m_ours * 1e3:>10.2f} {m_tv * 1e3:>10.2f} "
                  f"{ratio:>7.3f} {statistics.median(per):>7.3f} {'[%.3f, %.3f]' % (q1, q3):>15} "
                  f"{maxdiff:>9.1e}", flush=True)
        del ours, ref
    print("-" * len(header))
    if ratios:
        gmean = math.exp(sum(math.log(r) for _, _, r in ratios) / len(ratios))
        worst = max(ratios, key=lambda t: t[2])
        best = min(ratios, key=lambda t: t[2])
        print(f"overall: {len(ratios)} configs, geomean ratio ours/tv {gmean:.3f}, "
              f"max {worst[2]:.3f} ({worst[0]} b{worst[1]}), min {best[2]:.3f} ({best[0]} b{best[1]}), "
              f"configs > 1.03: {sum(r > 1.03 for _, _, r in ratios)}")
    for n in notes:
        print("note:", n)
    print(f"total wall time {time.perf_counter() - t_start:.1f} s; "
          f"1-min load average at start {load0:.2f}, at end {os.getloadavg()[0]:.2f} (includes this run)")


if __name__ == "__main__":
    main()
