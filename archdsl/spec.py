"""The public entry point: ``load_spec`` turns spec text into a checked :class:`Spec`."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from .diagnostics import Collector, Diagnostic, Source, Span, SpecError
from .elaborate.elaborator import Elaborator, Override
from .elaborate.loader import ConfinedFS, DiskFS, Loader, MemoryFS, UnreadableSpec, zoo_root
from .elaborate.values import render, to_value
from .ir import Graph
from .limits import TRUSTED, BudgetExceeded, Limits, budget, resolve

__all__ = ["Spec", "load_spec", "Override"]


@dataclass
class Spec:
    """A parsed, elaborated and shape-checked model.

    ``ir`` is the IR graph; ``build()`` compiles it to an ``nn.Module``. ``sources`` maps
    every spec file read (relative to the main file) to its text, so a checkpoint can
    rebuild the model without the original files.
    """

    ir: Graph
    sources: dict[str, str]
    main: str
    overrides: dict[str, str] = field(default_factory=dict)
    input_override: tuple[int, ...] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    limits: Limits = TRUSTED   #: the budgets it was loaded under; ``build()`` keeps to ``limits.build_bytes``

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.ir.input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of the (first) tensor the model returns, without the batch dim."""
        return self.ir.output_shape

    @property
    def output_shapes(self):
        """The shapes of what the model returns: a shape, or a tuple / dict of shapes (``return`` in the spec)."""
        return self.ir.output_shapes

    @property
    def num_params(self) -> int:
        """Trainable parameter elements (torchvision's ``num_params`` convention)."""
        return self.ir.num_params

    @property
    def macs(self) -> int:
        return self.ir.macs

    def summary(self, depth: int | str | None = None, dtype: str = "float32"):
        """Rows (module path, op, output shape, params, MACs, receptive field) and totals, from the IR alone.

        ``depth``: ``None`` or ``"blocks"`` (down to repeated blocks), ``"all"``, or an int >= 1.
        Returns a :class:`archdsl.passes.summary.Summary`; ``to_dict()`` is the ``--json`` document.
        """
        from .passes.summary import summarize
        return summarize(self.ir, depth=depth, dtype=dtype)

    def build(self, device=None, dtype=None):
        """Compile to an ``nn.Module`` on ``device`` (e.g. ``"cpu"``, ``"cuda"``, ``"meta"``) and ``dtype``."""
        from .backends.torch_backend import build_module
        return build_module(self.ir, device=device, dtype=dtype, max_bytes=self.limits.build_bytes)

    def save_checkpoint(self, path, module) -> None:
        """Save sources, overrides and ``module``'s weights so ``load_checkpoint`` rebuilds it."""
        from .backends.checkpoint import save_checkpoint
        save_checkpoint(self, module, path)

    def to_dot(self, depth: int | None = None, expand=(), fold: bool = True, rankdir: str = "TB",
               columns: int | None = None):
        """The diagram as a ``graphviz.Digraph`` (needs no Graphviz binary).

        ``depth``: open blocks down to this depth (None: the deepest view with at most 120
        nodes); ``expand``: module paths or globs to open anyway; ``fold``: draw runs of
        identical blocks once, marked ``x K``; ``columns``: wrap a long chain into this many
        columns (None: automatic, 1: never). See :mod:`archdsl.backends.dot`.
        """
        from .backends.dot import to_dot
        return to_dot(self.ir, depth=depth, expand=expand, fold=fold, rankdir=rankdir, columns=columns)

    def draw(self, path, format: str | None = None, dpi: int | None = None, **options) -> str:
        """Render the diagram to ``path`` (svg, png, pdf, or dot text; from the extension when
        ``format`` is None); ``options`` are those of :meth:`to_dot`. Returns the path."""
        from .backends.dot import render
        return render(self.to_dot(**options), path, format=format, dpi=dpi)


def _is_path(spec) -> bool:
    if isinstance(spec, os.PathLike):
        return True
    return "\n" not in spec and "{" not in spec and "=" not in spec


def load_spec(spec, *, model: str | None = None, input_shape=None, trusted: bool = True, limits=None,
              **overrides) -> Spec:
    """Load, elaborate and shape-check a spec.

    ``spec`` is a path to a ``.arch`` file or spec text. Keyword ``overrides`` set model
    parameters (``num_classes=10``); values may be Python values or :class:`Override`
    expression text. ``input_shape=(C, H, W)`` replaces the declared input. ``model``
    picks one model when the file defines several. Raises :class:`SpecError`.

    ``trusted=False`` is for specs from other people (a service): ``use`` reads only files
    inside the main spec's directory (for spec text: the shipped zoo) and the zoo, the
    budgets are :data:`archdsl.limits.UNTRUSTED`'s, and ``build()`` refuses a model whose
    memory passes ``limits.build_bytes``. ``limits`` changes budgets: a dict such as
    ``{"nodes": 5_000_000}`` (applied to the mode's defaults) or an :class:`archdsl.Limits`.
    """
    lim = resolve(limits, trusted)
    if _is_path(spec):
        key = os.path.abspath(os.fspath(spec))
        fs = DiskFS(lim.file_bytes) if trusted else ConfinedFS([os.path.dirname(key), zoo_root()], lim.file_bytes)
        try:
            text = fs.read(key, main=True)
        except (OSError, UnicodeDecodeError) as e:
            where = e.span(fs.display(key)) if isinstance(e, UnreadableSpec) else None
            raise SpecError([Diagnostic(f"cannot read spec file {os.fspath(spec)}: "
                                        f"{e.strerror if isinstance(e, OSError) else e}", where,
                                        _unreadable_label(e) if where else "")]) from None
        return _load(fs, key, fs.display(key), text, model, input_shape, overrides, lim, trusted)
    if trusted:
        fs, key = DiskFS(lim.file_bytes), os.path.join(os.getcwd(), "<string>")
    else:  # spec text from a service: its imports come from the zoo only
        fs, key = ConfinedFS([zoo_root()], lim.file_bytes), os.path.join(zoo_root(), "<string>")
    return _load(fs, key, "<string>", spec, model, input_shape, overrides, lim, trusted)


def _unreadable_label(e) -> str:
    reason = e.strerror or ""
    return "a NUL byte" if "NUL" in reason else "not UTF-8" if "UTF-8" in reason else "this file"


def load_sources(sources: dict[str, str], main: str, *, model=None, input_shape=None, trusted: bool = True,
                 limits=None, **overrides) -> Spec:
    """Load a spec from in-memory files (``{relative path: text}``), e.g. from a checkpoint."""
    fs = MemoryFS(sources)
    return _load(fs, main, main, sources[main], model, input_shape, overrides, resolve(limits, trusted), trusted)


def _load(fs, key, display, text, model, input_shape, overrides, limits: Limits = TRUSTED,
          trusted: bool = True) -> Spec:
    collector = Collector()
    try:
        with budget(limits, trusted):
            spec = _load_unguarded(fs, key, display, text, model, input_shape, overrides, collector)
        spec.limits = limits
        return spec
    except BudgetExceeded as e:  # the load stops at once: what went wrong before, then the budget
        raise SpecError([*collector.diagnostics, e.diagnostic]) from None
    except RecursionError:  # e.g. `1 + 1 + ...` thousands of terms long: not worth a traceback
        first = text.split("\n", 1)[0]
        raise SpecError([Diagnostic(f"{display} nests too deeply to compile",
                                    Span(Source(display, text), 1, 1, 1, max(len(first), 1) + 1),
                                    "somewhere in this file", help="an expression or a chain of blocks is nested thousands of levels deep; "
                                         "split it with `let` or a `for` loop")]) from None


def _model_name_span(decl) -> Span:
    """The `model NAME` words that start a model's declaration (its span covers the whole body)."""
    sp = decl.span
    m = re.match(r"model\s+" + re.escape(decl.name) + r"\b", sp.source.line(sp.line)[sp.column - 1:])
    return Span(sp.source, sp.line, sp.column, sp.line, sp.column + (m.end() if m else len("model")))


def _load_unguarded(fs, key, display, text, model, input_shape, overrides, collector: Collector) -> Spec:
    timings = {}
    t0 = time.perf_counter()
    loader = Loader(fs, collector)
    loaded = loader.load_text(text, key, display)
    t1 = time.perf_counter()
    timings["parse"] = t1 - t0
    collector.raise_if_any()
    if not loaded.models:
        first = text.split("\n", 1)[0]
        where = Span(Source(display, text), 1, 1, 1, max(len(first), 1) + 1)
        raise SpecError([Diagnostic(f"{display} defines no model", where, "no `model` in this file",
                                    help="add `model NAME input CxHxW { ... }` or `model NAME input CxHxW = Block(...)`")])
    if model is None:
        if len(loaded.models) > 1:
            first, second = list(loaded.models.values())[:2]
            raise SpecError([Diagnostic(f"{display} defines several models ({', '.join(loaded.models)}); "
                                        "choose one with --model", _model_name_span(second),
                                        f"a second model, after `{first.name}` at {first.span.location}",
                                        help=f"pick one: `--model {first.name}` on the command line, "
                                             f"`load_spec(..., model=\"{first.name}\")` in Python")])
        model = next(iter(loaded.models))
    if model not in loaded.models:
        from .diagnostics import did_you_mean
        first = next(iter(loaded.models.values()))
        raise SpecError([Diagnostic(f"{display} has no model `{model}`", _model_name_span(first),
                                    f"the first of {len(loaded.models)} models" if len(loaded.models) > 1
                                    else "the only model", help=did_you_mean(model, loaded.models) or
                                    f"models: {', '.join(loaded.models)}")])
    values = {k: (v if isinstance(v, Override) else to_value(v)) for k, v in overrides.items()}
    elab = Elaborator(collector)
    shape = tuple(input_shape) if input_shape is not None else None
    graph = elab.model(loaded.models[model], loaded.globals, values, shape)
    timings["elaborate"] = time.perf_counter() - t1
    collector.raise_if_any()
    assert graph is not None
    base = os.path.dirname(key) if isinstance(fs, DiskFS) else ""
    rel = (lambda k: os.path.relpath(k, base).replace(os.sep, "/")) if isinstance(fs, DiskFS) else (lambda k: k)
    sources = {rel(k): t for k, t in loader.texts.items()}
    texts = {k: (v.text if isinstance(v, Override) else render(v)) for k, v in values.items()}
    return Spec(graph, sources, rel(key), texts, shape, timings)
