"""Source spans, located diagnostics and the error type that carries them.

Every problem in a spec is reported as a :class:`Diagnostic` pointing at a
:class:`Span` of spec text. Diagnostics render in the compiler style::

    error: unknown op `conv`
      --> specs/bad.arch:3:5
       |
     3 |     conv(64, 3)
       |     ^^^^ not an op or block in scope
       = help: did you mean `conv2d`?
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class Source:
    """The text of one spec file (or of a string given to ``load_spec``)."""

    name: str
    text: str

    def line(self, lineno: int) -> str:
        """Line ``lineno`` (1-based) as the lexer counts lines: split at ``\n`` only (``str.splitlines``
        would also split at ``\f``, ``\v``, ``\x1c``..``\x1e``, ``\x85``, ``\u2028``, ``\u2029``)."""
        lines = self.text.split("\n")
        return lines[lineno - 1].rstrip("\r") if 0 < lineno <= len(lines) else ""


@dataclass(frozen=True)
class Span:
    """A region of spec text: 1-based line/column of its start and end (end exclusive)."""

    source: Source
    line: int
    column: int
    end_line: int
    end_column: int

    def __repr__(self) -> str:
        return f"Span({self.location})"

    @property
    def location(self) -> str:
        return f"{self.source.name}:{self.line}:{self.column}"

    def sub(self, offset: int, length: int) -> "Span":
        """A span inside this one's first line (used for text inside string literals)."""
        col = self.column + offset
        return Span(self.source, self.line, col, self.line, col + max(length, 1))


#: the longest source line quoted in full; a longer one is quoted as a window around the caret
MAX_QUOTED = 160


@dataclass(frozen=True)
class Diagnostic:
    """One located problem: message, primary span with a label, optional help and notes."""

    message: str
    span: Span | None = None
    label: str = ""
    help: str | None = None
    notes: tuple[str, ...] = ()
    severity: str = "error"

    def render(self) -> str:
        out = [f"{self.severity}: {self.message}"]
        if self.span is not None:
            sp = self.span
            width = len(str(sp.line))
            pad = " " * width
            out.append(f"{pad}--> {sp.location}")
            out.append(f"{pad} |")
            text = sp.source.line(sp.line).rstrip("\n").expandtabs(4)
            column = sp.column
            if sp.end_line == sp.line:
                length = max(sp.end_column - sp.column, 1)
            else:
                length = max(len(text) - sp.column + 1, 1)
            if len(text) > MAX_QUOTED:  # a window of the line around the caret, elided with "…" at both ends
                start = max(0, min(column - 1 - MAX_QUOTED // 4, len(text) - MAX_QUOTED))
                window = text[start:start + MAX_QUOTED]
                head, tail = ("…" if start > 0 else ""), ("…" if start + MAX_QUOTED < len(text) else "")
                text = head + window + tail
                column = column - start + len(head)
                length = max(1, min(length, len(head) + len(window) - column + 1))
            out.append(f"{sp.line} | {text}")
            caret = " " * (column - 1) + "^" * length
            out.append(f"{pad} | {caret}" + (f" {self.label}" if self.label else ""))
        for note in self.notes:
            out.append(f" = note: {note}" if self.span is None else f"{' ' * len(str(self.span.line))} = note: {note}")
        if self.help:
            pad = " " * len(str(self.span.line)) if self.span is not None else ""
            out.append(f"{pad} = help: {self.help}")
        return "\n".join(out)

    def sort_key(self):
        if self.span is None:
            return ("", 0, 0)
        return (self.span.source.name, self.span.line, self.span.column)


class SpecError(Exception):
    """Raised when a spec has errors; ``.diagnostics`` holds every one found, sorted by position."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.diagnostics)
        body = "\n\n".join(d.render() for d in self.diagnostics)
        tail = f"\n\n{n} error{'s' if n != 1 else ''} found" if n > 1 else ""
        return body + tail


class Collector:
    """Accumulates diagnostics so that several independent errors are reported in one run."""

    #: the most errors reported for one spec; at the limit the run stops (as compilers' ``-fmax-errors``)
    MAX_ERRORS = 100

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self._seen: set[Diagnostic] = set()

    def add(self, diag: Diagnostic) -> None:
        if diag in self._seen:
            return
        self._seen.add(diag)
        self.diagnostics.append(diag)
        if len(self.diagnostics) >= self.MAX_ERRORS:
            self.diagnostics.append(Diagnostic(f"too many errors: stopped after {self.MAX_ERRORS}", diag.span,
                                               "the last one reported",
                                               help="fix these first; later errors often follow from them"))
            raise SpecError(self.diagnostics)

    def error(self, message: str, span: Span | None = None, label: str = "", help: str | None = None,
              notes: tuple[str, ...] = ()) -> None:
        self.add(Diagnostic(message, span, label, help, notes))

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise SpecError(self.diagnostics)


@dataclass
class CompileError(Exception):
    """Internal control flow: one diagnostic that aborts the current statement."""

    diagnostic: Diagnostic
    notes: list[str] = field(default_factory=list)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean" help text for a misspelt ``name``, or None when nothing is close."""
    pool = sorted(set(candidates))
    same = [c for c in pool if c.lower() == name.lower() and c != name]  # `ReLU` -> `relu`
    if same:
        return f"did you mean `{same[0]}`?"
    lowered = name.lower()
    scored = []
    for c in pool:
        m = difflib.SequenceMatcher(None, lowered, c.lower())
        if m.real_quick_ratio() >= 0.6 and m.quick_ratio() >= 0.6 and m.ratio() >= 0.6:
            scored.append((m.ratio(), c))
    if not scored:
        return None
    best = max(r for r, _ in scored)
    # equally close names are all offered; the 2-D op of a rank family first (conv -> conv2d, conv1d, conv3d)
    tied = sorted((c for r, c in scored if r == best), key=lambda c: ("2d" not in c, c))[:3]
    if len(tied) == 1:
        return f"did you mean `{tied[0]}`?"
    return "did you mean " + ", ".join(f"`{c}`" for c in tied[:-1]) + f" or `{tied[-1]}`?"
