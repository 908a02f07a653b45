"""Budgets: how much work loading one spec may do, and what ``build()`` may allocate.

Every stage that could be made to run long or use much memory by what a spec says draws
on one :class:`Budget` for the load in progress: the parser (file size, nesting depth,
literal length), the evaluator (list sizes, items made, integer magnitudes, evaluation
steps) and the elaborator (IR nodes, block calls, block nesting). Going over a budget is a
located error that names the budget and says how to raise it; it ends the load at once.

Two sets of defaults: :data:`TRUSTED` (a user compiling their own files: far above the
largest zoo model, efficientnet_v2_l: 1,092 nodes, 436 block calls, 2,261 steps; each
stops a load within about ten seconds on two cores, as elaboration costs some 25 us a node
and parsing some 30 us a token) and :data:`UNTRUSTED` (a service compiling other people's specs:
tighter, and with a memory ceiling for ``build()``). Raise one budget with
``load_spec(..., limits={"nodes": 5_000_000})`` or ``archdsl check --limit nodes=5000000``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from dataclasses import dataclass

from .diagnostics import Diagnostic, Span, did_you_mean

__all__ = ["Limits", "TRUSTED", "UNTRUSTED", "BudgetExceeded"]


@dataclass(frozen=True)
class Limits:
    """The budgets of one load (see the module docstring); every field is a count or a size."""

    #: IR nodes (ops, tensor functions, joins) in the elaborated model
    nodes: int = 250_000
    #: block calls (block instances, `inline` included), all told
    calls: int = 20_000
    #: statements run plus loop and comprehension iterations, all told
    steps: int = 1_000_000
    #: list items and string characters made by expressions, all told
    items: int = 20_000_000
    #: items in one list (or characters in one string)
    list_len: int = 1_000_000
    #: nested block calls (deeper is almost surely unbounded recursion)
    block_depth: int = 50
    #: nesting of the parse tree (expressions, bodies)
    tree_depth: int = 200
    #: digits of one number literal
    literal_digits: int = 100
    #: bytes of one spec file
    file_bytes: int = 256 * 1024
    #: bytes ``build()`` may allocate for parameters, buffers and one sample's activations (0: no limit)
    build_bytes: int = 0

    def replace(self, **changes) -> "Limits":
        """A copy with some budgets changed; unknown names are a ``ValueError`` with the valid ones."""
        names = {f.name for f in dataclasses.fields(self)}
        for k, v in changes.items():
            if k not in names:
                hint = did_you_mean(k, names)
                raise ValueError(f"unknown limit `{k}`" + (f"; {hint}" if hint else "") +
                                 f" (limits: {', '.join(sorted(names))})")
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"limit `{k}` must be a non-negative integer, got {v!r}")
        return dataclasses.replace(self, **changes)


#: the defaults for a user's own files
TRUSTED = Limits()
#: the defaults for specs from other people (``trusted=False`` / ``--untrusted``)
UNTRUSTED = Limits(nodes=50_000, calls=10_000, steps=250_000, items=2_000_000, list_len=100_000,
                   block_depth=30, tree_depth=100, literal_digits=40, file_bytes=64 * 1024,
                   build_bytes=8 * 1024 ** 3)

#: what a budget counts, for messages
_WHAT = {
    "nodes": "IR nodes", "calls": "block calls", "steps": "evaluation steps (statements and loop iterations)",
    "items": "list items and string characters", "list_len": "items in one list",
}


class BudgetExceeded(Exception):
    """A budget ran out: carries the located diagnostic; the load stops."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def how_to_raise(name: str, value: int) -> str:
    """The help line of a budget diagnostic."""
    return (f"raise the `{name}` budget if this is intended: `--limit {name}={value * 10}` on the command line, "
            f"`load_spec(..., limits={{\"{name}\": {value * 10}}})` in Python")


class Budget:
    """The counters of one load against its :class:`Limits`."""

    def __init__(self, limits: Limits = TRUSTED, trusted: bool = True):
        self.limits = limits
        self.trusted = trusted
        self.used = {"nodes": 0, "calls": 0, "steps": 0, "items": 0}

    def spend(self, name: str, n: int, span: Span | None) -> None:
        """Count ``n`` more of budget ``name``; over the limit, raise :class:`BudgetExceeded` at ``span``."""
        used = self.used[name] + n
        self.used[name] = used
        limit = getattr(self.limits, name)
        if used > limit:
            raise BudgetExceeded(Diagnostic(
                f"this spec needs more than {limit:,} {_WHAT[name]} (the `{name}` budget)", span,
                "budget ran out here", help=how_to_raise(name, limit)))


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("archdsl_budget", default=None)


def current() -> Budget:
    """The budget of the load in progress (outside any load: a fresh trusted one, whose counts are dropped)."""
    return _current.get() or Budget()


@contextlib.contextmanager
def budget(limits: Limits, trusted: bool = True):
    """Run a load under a fresh :class:`Budget` of ``limits``."""
    token = _current.set(Budget(limits, trusted))
    try:
        yield current()
    finally:
        _current.reset(token)


def resolve(limits, trusted: bool) -> Limits:
    """``limits`` as given to ``load_spec``: None (the mode's defaults), a dict of changes, or a :class:`Limits`."""
    base = TRUSTED if trusted else UNTRUSTED
    if limits is None:
        return base
    if isinstance(limits, Limits):
        return limits
    if isinstance(limits, dict):
        return base.replace(**limits)
    raise TypeError(f"limits must be a dict or archdsl.Limits, got {type(limits).__name__}")
