"""Loading spec files: parsing, `use` imports (relative to the importing file, cycles are
errors) and the global definitions (`let`, `block`, `model`) of each file."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

from ..diagnostics import Collector, Diagnostic, Source, Span, SpecError
from ..limits import TRUSTED
from ..syntax import ast
from ..syntax.parser import parse
from .expr import Env, EvalError, evaluate
from .values import BlockRef


#: the largest spec file read by default (the `file_bytes` budget; the largest zoo file is ~11 KB)
MAX_SPEC_BYTES = TRUSTED.file_bytes


class UnreadableSpec(OSError):
    """A path that is not a spec file to read: not a regular file, too large, binary, not UTF-8."""

    def __init__(self, reason: str, data: bytes | None = None, offset: int | None = None):
        super().__init__(reason)
        self.strerror = reason
        self.data, self.offset = data, offset  # the bytes read and where the offending one is, if known

    def span(self, name: str):
        """Where in the file the problem is (a NUL byte, bytes that are not UTF-8), or None."""
        if self.data is None or self.offset is None:
            return None
        before = self.data[:self.offset].decode("utf-8", "replace")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        return Span(Source(name, self.data.decode("utf-8", "replace").replace("\x00", "\ufffd")),
                    line, column, line, column + 1)


def zoo_root() -> str:
    """The directory of the shipped specs (``specs/``, holding ``lib/`` with the family files)."""
    return os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "specs"))


class DiskFS:
    """Spec files on disk; keys are absolute paths, shown relative to the working directory."""

    def __init__(self, max_bytes: int = MAX_SPEC_BYTES):
        self.max_bytes = max_bytes

    def resolve(self, base_key: str | None, rel: str) -> str:
        base = os.path.dirname(base_key) if base_key else os.getcwd()
        return os.path.normpath(os.path.join(base, rel))

    def read(self, key: str, main: bool = False) -> str:
        """The UTF-8 text of a regular file of at most ``max_bytes`` (never a device, FIFO or
        directory, which could block or never end). ``main``: the file named by the user."""
        import stat
        if "\x00" in key:
            raise UnreadableSpec("the path contains a NUL character")
        st = os.stat(key)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableSpec("not a regular file")
        too_large = f"larger than {self.max_bytes:,} bytes (the `file_bytes` budget)"
        with open(key, "rb") as f:
            data = f.read(self.max_bytes + 1)
        if st.st_size > self.max_bytes or len(data) > self.max_bytes:  # located at the top of the file
            raise UnreadableSpec(too_large, data.split(b"\n", 1)[0], 0)
        if b"\x00" in data:
            raise UnreadableSpec("a binary file (it contains NUL bytes)", data, data.index(b"\x00"))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UnreadableSpec("not UTF-8 text", data, e.start) from None

    def display(self, key: str) -> str:
        rel = os.path.relpath(key)
        return key if rel.startswith("..") else rel


class ConfinedFS(DiskFS):
    """Spec files on disk, for untrusted specs: imports only from inside ``roots`` (the main spec's
    directory tree and the zoo), by relative paths that stay inside, symbolic links resolved."""

    def __init__(self, roots, max_bytes: int = MAX_SPEC_BYTES):
        super().__init__(max_bytes)
        self.roots = [os.path.realpath(r) for r in roots]

    def check(self, rel: str) -> str | None:
        """Why the import path ``rel`` is refused, or None."""
        if os.path.isabs(rel) or rel.startswith(("~", "\\")) or (len(rel) > 1 and rel[1] == ":"):
            return "an absolute path (untrusted specs import by relative paths only)"
        return None

    def read(self, key: str, main: bool = False) -> str:
        if not main:
            real = os.path.realpath(key)
            if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots):
                raise UnreadableSpec("outside the spec's directory and the zoo (untrusted specs import only "
                                     "from there)")
        return super().read(key, main)

    def display(self, key: str) -> str:
        zoo = os.path.realpath(zoo_root())
        real = os.path.realpath(key)
        if real.startswith(zoo + os.sep):  # never reveal where the service keeps its files
            return "<zoo>/" + os.path.relpath(real, zoo).replace(os.sep, "/")
        return super().display(key)


class MemoryFS:
    """Spec files held in memory (checkpoints); keys are normalized relative POSIX paths."""

    def __init__(self, files: dict[str, str]):
        self.files = files

    def resolve(self, base_key: str | None, rel: str) -> str:
        base = posixpath.dirname(base_key) if base_key else ""
        return posixpath.normpath(posixpath.join(base, rel))

    def read(self, key: str, main: bool = False) -> str:
        if key not in self.files:
            raise FileNotFoundError(key)
        return self.files[key]

    def display(self, key: str) -> str:
        return key


@dataclass
class LoadedFile:
    key: str
    module: ast.Module
    globals: Env
    models: dict[str, ast.ModelDecl] = field(default_factory=dict)


class Loader:
    """Parses files once each and builds their global environments."""

    def __init__(self, fs, collector: Collector):
        self.fs = fs
        self.diag = collector
        self.files: dict[str, LoadedFile] = {}
        self.texts: dict[str, str] = {}     # key -> text of every file read
        self._stack: list[str] = []

    def load_text(self, text: str, key: str, display: str) -> LoadedFile:
        self.texts[key] = text
        try:
            module = parse(text, display)
        except SpecError as e:
            for d in e.diagnostics:
                self.diag.add(d)
            module = ast.Module((), display)
        return self._process(key, module)

    def load_key(self, key: str) -> LoadedFile:
        if key in self.files:
            return self.files[key]
        text = self.fs.read(key)
        return self.load_text(text, key, self.fs.display(key))

    def _process(self, key: str, module: ast.Module) -> LoadedFile:
        env = Env({})
        loaded = LoadedFile(key, module, env)
        self.files[key] = loaded
        self._stack.append(key)
        defined: dict[str, object] = {}
        try:
            for item in module.items:
                if isinstance(item, ast.Use):
                    self._use(key, item, env)
                elif isinstance(item, ast.Let):
                    if item.value is None or len(item.names) > 1 or item.assign:
                        self.diag.error("a top-level `let` binds one name to an expression", item.span,
                                        "not at the top level",
                                        help="statements and tensors live in a model or block body")
                        continue
                    self._define(defined, item.name, item)
                    try:
                        env.values[item.name] = evaluate(item.value, env)
                    except EvalError as e:
                        self.diag.add(e.diagnostic)
                elif isinstance(item, ast.BlockDecl):
                    self._define(defined, item.name, item)
                    self._check_params(item.params)
                    env.values[item.name] = BlockRef(item, env)
                elif isinstance(item, ast.ModelDecl):
                    self._check_params(item.params)
                    if item.name in loaded.models:
                        self.diag.error(f"model `{item.name}` is defined twice", item.span, "second definition")
                    loaded.models[item.name] = item
        finally:
            self._stack.pop()
        return loaded

    def _define(self, defined: dict, name: str, item) -> None:
        if name in defined:
            first = defined[name].span
            self.diag.add(Diagnostic(f"`{name}` is defined twice in this file", item.span, "redefined here",
                                     notes=(f"first defined at {first.location}",)))
        defined[name] = item

    def _check_params(self, params) -> None:
        seen: dict[str, ast.Param] = {}
        for p in params:
            if p.name in seen:
                self.diag.add(Diagnostic(f"parameter `{p.name}` is declared twice", p.span, "declared again here",
                                         notes=(f"first declared at {seen[p.name].span.location}",)))
            else:
                seen[p.name] = p

    def _use(self, key: str, item: ast.Use, env: Env) -> None:
        if "\x00" in item.path:
            self.diag.error(f"cannot import {item.path!r}: the path contains a NUL character", item.span,
                            "imported here")
            return
        refused = self.fs.check(item.path) if isinstance(self.fs, ConfinedFS) else None
        if refused:
            self.diag.error(f"cannot import \"{item.path}\": {refused}", item.span, "imported here")
            return
        target = self.fs.resolve(key, item.path)
        if target in self._stack:
            chain = " -> ".join(self.fs.display(k) for k in self._stack[self._stack.index(target):] + [target])
            self.diag.error(f"import cycle: {chain}", item.span, "this import closes the cycle")
            return
        try:
            loaded = self.load_key(target)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            reason = "no such file" if isinstance(e, FileNotFoundError) else \
                e.strerror if isinstance(e, UnreadableSpec) else \
                "a directory" if isinstance(e, IsADirectoryError) else type(e).__name__
            self.diag.error(f"cannot import \"{item.path}\": {reason}", item.span, "imported here",
                            help=None if isinstance(e, UnreadableSpec) else
                            f"paths are relative to the importing file; looked for {self.fs.display(target)}")
            return
        for name, value in loaded.globals.values.items():
            env.values.setdefault(name, value)
