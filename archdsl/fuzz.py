"""A seeded fuzzer for archdsl: every input either fails with a located error or works in torch.

Run a campaign with ``python -m archdsl.fuzz --cases 100000 --jobs 4 --out fuzz-out``.

Cases are made deterministically from ``(seed, index)`` by :func:`generate_case`:

* **mutations of every spec in the zoo** (``specs/*.arch`` and ``specs/lib/*.arch``; a mutated
  family file is loaded through a zoo model that ``use``\\ s it): token edits (delete, duplicate,
  swap, insert a token of the file or a keyword of the grammar), line edits, numbers replaced
  by 0, -1, 1, huge, fractional or infinite values, labels renamed to reserved names (torch
  ``nn.Module``/``GraphModule`` attributes, Python keywords, ``self``, names with dots or
  dashes), deep nesting, huge loops, lists and comprehensions, self-recursive blocks, odd
  ``use`` targets (devices, a directory, a FIFO, binary, non-UTF-8 or huge files, a NUL in
  the path), odd whitespace and line separators, very long lines, and the tensor constructs
  (``let``/``from``/``return``, tensor algebra, ``residual if``, ``merge_batch``...);
* **random specs** from the grammar (``archdsl/syntax/grammar.lark``) and from a small
  generator of statements over the op registry (small models, often valid, so that the
  "builds and matches" path is exercised too).

Each case runs in a worker subprocess (a pool of ``--jobs`` long-lived workers, restarted after
a hang or a crash) under a wall-clock timeout and an address-space cap (``RLIMIT_AS``). Outcomes
(:data:`CLASSES`):

``ok``
    ``load_spec`` succeeded, the model builds on the meta device, a meta forward gives
    exactly ``spec.output_shapes`` and the trainable parameter count is ``spec.num_params``.
``located``
    a :class:`~archdsl.SpecError` whose every diagnostic has a ``file:line:col`` location and
    whose rendered text quotes, for each location, exactly the source line it names.

and the defects (:data:`DEFECTS`): ``traceback`` (any other exception), ``unlocated`` (a
diagnostic without a location), ``misrendered`` (a quoted line that is not the line named),
``torch_failure`` (a checked spec that fails to build or run on meta, or whose shapes or
parameter count differ from the checked ones), ``hang`` (over the timeout) and ``memory``
(``MemoryError``, or the worker killed by the memory cap).

Spec text is only ever handed to archdsl's public API (``load_spec``, ``Spec.build``); the
fuzzer never evaluates it itself.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import keyword
import os
import random
import re
import resource
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: every outcome class, in the order of the report table
CLASSES = ("ok", "located", "traceback", "unlocated", "misrendered", "torch_failure", "hang", "memory")
#: the classes that are defects (a campaign passes when all are 0)
DEFECTS = CLASSES[2:]

ZOO = Path(__file__).resolve().parent.parent / "specs"
#: a checked spec's build and meta forward may take this many times ``--timeout`` (torch's time)
build_factor = 3.0

# ------------------------------------------------------------------ cases


@dataclass
class Case:
    """One fuzz input: files laid over a copy of the zoo, and the file to load.

    ``files`` maps paths relative to the zoo copy's root to text (``str``) or raw bytes;
    ``special`` lists ``(path, kind)`` entries the worker creates there (``"fifo"``, ``"dir"``,
    ``"symlink_loop"``); ``main`` is the path given to ``load_spec``.
    """

    index: int
    kind: str
    main: str
    files: dict = field(default_factory=dict)
    special: list = field(default_factory=list)

    def to_json(self) -> dict:
        files = {p: ({"b": base64.b64encode(v).decode()} if isinstance(v, bytes) else {"t": v})
                 for p, v in self.files.items()}
        return {"index": self.index, "kind": self.kind, "main": self.main, "files": files,
                "special": [list(s) for s in self.special]}

    @staticmethod
    def from_json(d: dict) -> "Case":
        files = {p: (base64.b64decode(v["b"]) if "b" in v else v["t"]) for p, v in d["files"].items()}
        return Case(d["index"], d["kind"], d["main"], files, [tuple(s) for s in d["special"]])


@dataclass
class Result:
    """The outcome of one case: its class (one of :data:`CLASSES`) and a message."""

    index: int
    kind: str
    cls: str
    message: str = ""
    seconds: float = 0.0


_TOKEN_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"|\d+x\d+(?:x\d+)*|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?'
                       r'|[A-Za-z_]\w*|\*\*|//|==|!=|<=|>=|#[^\n]*|\S')
_NUMBER_RE = re.compile(r"(?<![\w.])(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![\w.])")

#: the grammar's keywords (``archdsl.syntax.parser.KEYWORDS``, repeated here so that generating
#: cases needs no import of archdsl)
DSL_KEYWORDS = ("use", "let", "block", "model", "input", "init", "seq", "for", "in", "residual",
                "shortcut", "concat", "if", "elif", "else", "then", "and", "or", "not", "true",
                "false", "none", "gate", "pass", "tap", "from", "return", "inline")
PUNCT = ("(", ")", "{", "}", "[", "]", ",", ":", ";", "=", ".", "+", "-", "*", "/", "//", "%", "@", "**",
         "==", "<", ">", "!=", '"', "#", "\n")

#: replacement numbers: edge values, huge values (as literals and as expressions), fractions,
#: infinities and NaN spelled as the language allows (``1e400`` is a float literal that overflows)
NUMBERS = ("0", "-1", "1", "2", "3", "0.5", "1e-30", "-0.0", "2147483648", "9223372036854775808",
           "18446744073709551616", "10000000000000000000", "(2**31)", "(2**63)", "(2**64)", "(10**19)",
           "(10**400)", "(10**10**10)", "1e400", "(-1e400)", "(1e400 - 1e400)", "(0 * 1e400)",
           "1" + "0" * 150, "9" * 5000, "1e308", "-(2**63)", "(2**63 - 1)", "1000000", "65536", "true",
           "none", '"3"', "[3]", "(1 / 3)")

#: names that a label must not break: nn.Module / fx.GraphModule attributes, Python names
MODULE_ATTRS = ("training", "forward", "state_dict", "load_state_dict", "parameters", "named_parameters",
                "modules", "named_modules", "children", "apply", "cuda", "cpu", "to", "half", "float",
                "double", "bfloat16", "eval", "train", "zero_grad", "register_buffer", "register_parameter",
                "add_module", "get_submodule", "_modules", "_parameters", "_buffers", "_version",
                "__init__", "__class__", "__dict__", "__call__", "__getattr__", "append", "extend", "insert",
                "type", "graph", "code", "recompile", "meta", "dump_patches", "call_super_init",
                "print_readable", "delete_submodule", "add_submodule", "_graph", "_code", "requires_grad_",
                "share_memory", "buffers", "named_buffers", "extra_repr", "T_destination", "xpu", "ipu",
                "mtia", "compile", "_apply", "_call_impl", "_forward_hooks", "__len__", "__iter__")
PY_NAMES = tuple(keyword.kwlist) + ("self", "torch", "F", "nn", "x", "input", "getattr", "None_", "_1",
                                    "__builtins__", "print", "math", "operator", "builtins", "_tensor_constant0")
ODD_LABELS = ("a.b", "a-b", "0", "1x", "", " ", "fc.weight", "..", "a..b", "layer1.0", ".x", "x.", "a b",
              "ü", "\u2028", "{i}", "{", "a/b", "*", "-1")

ODD_USE_TARGETS = ("/dev/zero", "/dev/urandom", "/dev/null", "/dev/stdin", "/dev/tty", "/etc/passwd", "/",
                   ".", "lib", "/proc/cpuinfo", "/nonexistent/x.arch", "a\x00b.arch", "odd/fifo",
                   "odd/binary.arch", "odd/latin1.arch", "odd/huge.arch", "odd/loop", "odd/dir.arch",
                   "odd/empty.arch", "odd/self.arch", "odd/bom.arch", "../specs/resnet18.arch",
                   "lib/resnet.arch\\", "", " ", "\\\"", "lib//resnet.arch", "lib/../lib/resnet.arch")

SEPARATORS = ("\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r", "\r\n", "\t", "\x00",
              "\ufeff", "\u00a0", "\x0b\n", "\n\r")


def zoo_files() -> list[str]:
    """The zoo's spec files, relative to ``specs/`` (sorted, so that cases are reproducible)."""
    return sorted(str(p.relative_to(ZOO)) for p in ZOO.rglob("*.arch"))


def _read_zoo() -> dict[str, str]:
    return {p: (ZOO / p).read_text() for p in zoo_files()}


_ZOO_TEXT: dict[str, str] | None = None


def _zoo() -> dict[str, str]:
    global _ZOO_TEXT
    if _ZOO_TEXT is None:
        _ZOO_TEXT = _read_zoo()
    return _ZOO_TEXT


@functools.lru_cache(maxsize=None)
def _users() -> dict[str, str]:
    """For each family file, a top-level zoo spec that reads it (directly or through another family file)."""
    texts = _zoo()
    uses = {p: [os.path.normpath(os.path.join(os.path.dirname(p), u))
                for u in re.findall(r'^\s*use\s+"([^"]+)"', t, re.M)] for p, t in texts.items()}
    reach: dict[str, str] = {}
    for top in sorted(p for p in texts if "/" not in p):
        todo, seen = [top], set()
        while todo:
            f = todo.pop()
            for u in uses.get(f, ()):
                if u not in seen:
                    seen.add(u)
                    todo.append(u)
        for f in sorted(seen):
            # prefer the smallest user: its build is the cheapest
            if f not in reach or len(texts[top]) < len(texts[reach[f]]):
                reach[f] = top
    return reach


def _tokens(text: str):
    return [m for m in _TOKEN_RE.finditer(text) if not m.group().startswith("#")]


def _op_names() -> tuple[str, ...]:
    try:
        from .ops.registry import all_ops
        return tuple(sorted(all_ops()))
    except Exception:  # pragma: no cover - generation without the registry
        return ("conv2d", "relu", "linear", "flatten", "batchnorm2d", "maxpool2d")


def _body_lines(text: str) -> list[int]:
    """Indices of lines that open a body (end with ``{``), where a statement can be inserted."""
    return [i for i, ln in enumerate(text.split("\n")) if ln.rstrip().endswith("{")]


def _insert_after_line(text: str, i: int, stmt: str) -> str:
    lines = text.split("\n")
    lines.insert(i + 1, stmt)
    return "\n".join(lines)


def _in_body(text: str, rng: random.Random, stmt: str) -> str:
    """``text`` with ``stmt`` inserted at the start of a random body (or appended to the file)."""
    bodies = _body_lines(text)
    if not bodies:
        return text + "\n" + stmt + "\n"
    return _insert_after_line(text, rng.choice(bodies), stmt)


def _model_bodies(text: str) -> list[int]:
    return [i for i, ln in enumerate(text.split("\n")) if re.match(r"\s*model\b.*\{\s*$", ln)]


def _in_model(text: str, rng: random.Random, stmt: str) -> str:
    models = _model_bodies(text)
    if models:
        return _insert_after_line(text, rng.choice(models), stmt)
    return _in_body(text, rng, stmt)


# ------------------------------------------------------------------ mutations (text -> text)


def _m_token_delete(text, rng):
    toks = _tokens(text)
    if not toks:
        return text
    m = rng.choice(toks)
    return text[:m.start()] + text[m.end():]


def _m_token_duplicate(text, rng):
    toks = _tokens(text)
    if not toks:
        return text
    m = rng.choice(toks)
    return text[:m.end()] + " " + m.group() + text[m.end():]


def _m_token_swap(text, rng):
    toks = _tokens(text)
    if len(toks) < 2:
        return text
    i = rng.randrange(len(toks) - 1)
    j = i + 1 if rng.random() < 0.6 else rng.randrange(len(toks))
    a, b = sorted((toks[i], toks[j]), key=lambda m: m.start())
    if a.start() == b.start():
        return text
    return text[:a.start()] + b.group() + text[a.end():b.start()] + a.group() + text[b.end():]


def _m_token_insert(text, rng):
    toks = _tokens(text)
    vocab = [m.group() for m in toks] or ["x"]
    pool = rng.choice([vocab, DSL_KEYWORDS, PUNCT, _op_names()])
    word = rng.choice(pool)
    at = rng.choice(toks).start() if toks and rng.random() < 0.8 else rng.randrange(len(text) + 1)
    return text[:at] + " " + word + " " + text[at:]


def _m_line_delete(text, rng):
    lines = text.split("\n")
    for _ in range(rng.randint(1, 3)):
        if len(lines) > 1:
            del lines[rng.randrange(len(lines))]
    return "\n".join(lines)


def _m_line_duplicate(text, rng):
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return "\n".join(lines)


def _m_line_swap(text, rng):
    lines = text.split("\n")
    if len(lines) < 2:
        return text
    i = rng.randrange(len(lines) - 1)
    j = i + 1 if rng.random() < 0.5 else rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _m_number(text, rng):
    nums = list(_NUMBER_RE.finditer(text))
    shapes = list(re.finditer(r"\d+(?:x\d+)+", text))
    if shapes and rng.random() < 0.2:  # one dim of an `input CxHxW` literal (digits only)
        m = rng.choice(shapes)
        dims = m.group().split("x")
        dims[rng.randrange(len(dims))] = rng.choice(("0", "1", "2147483648", "9223372036854775808",
                                                     "18446744073709551616", "99999999999", "9" * 30))
        return text[:m.start()] + "x".join(dims) + text[m.end():]
    if not nums:
        return text
    for _ in range(rng.choice((1, 1, 1, 2, 4))):
        nums = list(_NUMBER_RE.finditer(text))
        if not nums:
            break
        m = rng.choice(nums)
        text = text[:m.start()] + rng.choice(NUMBERS) + text[m.end():]
    return text


def _m_label(text, rng):
    labels = list(re.finditer(r'(?m)^(\s*)([A-Za-z_]\w*|"[^"\n]*")(\s*:)(?!\s*(?:int|float|bool|block|str|list)\b)',
                              text))
    name = rng.choice(rng.choice((MODULE_ATTRS, PY_NAMES, ODD_LABELS)))
    new = name if re.fullmatch(r"[A-Za-z_]\w*", name) and rng.random() < 0.6 else \
        '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if not labels:
        return _in_model(text, rng, f"    {new}: relu()")
    count = 2 if rng.random() < 0.3 else 1  # two labels renamed alike: a clash as well
    chosen = sorted(rng.sample(labels, min(count, len(labels))), key=lambda m: -m.start())
    for m in chosen:
        text = text[:m.start(2)] + new + text[m.end(2):]
    return text


def _m_deep(text, rng):
    n = rng.choice((30, 100, 199, 201, 300, 1000, 5000, 30000))
    roll = rng.random()
    nums = list(_NUMBER_RE.finditer(text))
    if roll < 0.3 and nums:
        m = rng.choice(nums)
        return text[:m.start()] + "(" * n + m.group() + ")" * n + text[m.end():]
    if roll < 0.5 and nums:
        m = rng.choice(nums)
        op = rng.choice(("- ", "not ", "+"))
        return text[:m.start()] + op * n + m.group() + text[m.end():]
    if roll < 0.65 and nums:
        m = rng.choice(nums)
        op = rng.choice((" + 1", " * 1", " ** 1", "[0]", ".x", " - 1"))
        return text[:m.start()] + m.group() + op * n + text[m.end():]
    if roll < 0.8:
        return _in_body(text, rng, "seq { " * n + "relu()" + " }" * n)
    if roll < 0.9:
        return _in_body(text, rng, "let deep = " + "[" * n + "1" + "]" * n)
    return _in_body(text, rng, "residual { " * (n // 10) + "relu()" + " }" * (n // 10))


HUGE_LOOPS = (
    "for i in range(10**6) { relu() }",
    "for i in range(200000) { relu() }",
    "for i in range(1000) { for j in range(1000) { relu() } }",
    "for i in range(100) { for j in range(100) { for k in range(100) { identity() } } }",
    "for i in range(2**64) { relu() }",
    "for i in range(10**19) { }",
    "for i in range(-10**19, 10**19, 1) { }",
    "layers: for i in range(0) { relu() }",
    "for i in range(100000) { let a = in }",
    "for i in range(30000) { if i < 0 { relu() } }",
    "for i, j in range(3) { relu() }",
    "for i in 7 { relu() }",
    "for i in range(10**6) { residual { relu() } }",
)
HUGE_VALUES = (
    "let big = [[0] * 1000000 for i in range(1000)]",
    "let big = [0] * 10**9",
    "let big = [0] * (2**64)",
    "let big = [i for i in range(10**8)]",
    "let big = [[i, j] for i in range(10000) for j in range(10000)]",
    "let big = len(range(10**12))",
    "let big = sum(range(10**9))",
    "let big = range(10**400)",
    "let big = \"x\" * 10**9",
    "let big = 10**10**10",
    "let big = 2**2**2**2**2**2",
    "let big = 1e308 * 10",
    "let big = round(1e400)",
    "let big = int(1e400 - 1e400)",
    "let big = make_divisible(1e400)",
    "let big = make_divisible(1e400 - 1e400, 8)",
    "let big = ceil(1e400)",
    "let big = floor(-1e400)",
    "let big = sqrt(-1)",
    "let big = log(0)",
    "let big = exp(10**6)",
    "let big = float(10**400)",
    "let big = {[1]: 2}",
    "let big = {1: 2}[[1]]",
    "let big = {\"a\": 1}[{\"b\": 2}]",
    "let big = [1, 2][10**19]",
    "let big = [1, 2][1.5]",
    "let big = zip(range(10**7), range(10**7))",
    "let big = enumerate(range(10**8))",
    "let big = max(range(10**8))",
    "let big = str(10**4000)",
    "let big = 1 // 0",
    "let big = 1 % 0",
    "let big = 0 ** -1",
    "let big = (-8) ** 0.5",
    "let big = 10 ** -400",
    "let big = 7 @ 3",
    "let big = [1] @ [2]",
    "let big = \"%d\" % 3",
)


def _m_huge(text, rng):
    if rng.random() < 0.5:
        return _in_body(text, rng, "    " + rng.choice(HUGE_LOOPS))
    stmt = rng.choice(HUGE_VALUES)
    if rng.random() < 0.5:  # at the top level (where `let` computes numbers) ...
        return stmt + "\n" + text
    return _in_body(text, rng, "    " + stmt + "\n    require(len([big]) > 0)")  # ... or in a body


RECURSIVE = (
    ("block Rec2(n: int) {\n    if n > 0 {\n        Rec2(n - 1)\n        Rec2(n - 1)\n    } else {\n"
     "        relu()\n    }\n}\n", "Rec2(40)"),
    ("block Rec2(n: int) {\n    if n > 0 {\n        Rec2(n - 1)\n        Rec2(n - 1)\n    } else {\n"
     "        relu()\n    }\n}\n", "Rec2(18)"),
    ("block Forever() {\n    Forever()\n}\n", "Forever()"),
    ("block Ping(n: int) { Pong(n + 1) }\nblock Pong(n: int) { Ping(n + 1) }\n", "Ping(0)"),
    ("block Wide(n: int) {\n    for i in range(n) { Wide(n - 1) }\n    relu()\n}\n", "Wide(12)"),
    ("block Inl(n: int) {\n    if n > 0 { inline Inl(n - 1); inline Inl(n - 1) } else { relu() }\n}\n",
     "inline Inl(30)"),
    ("block Cat(n: int) {\n    if n > 0 { concat { Cat(n - 1); Cat(n - 1) } } else { identity() }\n}\n",
     "Cat(25)"),
    ("block T(n: int)(x) {\n    if n > 0 { return T(n - 1)(x) + T(n - 1)(x) }\n    return x\n}\n",
     "from T(40)(in)"),
)


def _m_recursive(text, rng):
    decl, call = rng.choice(RECURSIVE)
    return decl + _in_model(text, rng, "    " + call)


def _m_use(text, rng):
    target = rng.choice(ODD_USE_TARGETS)
    quoted = target.replace("\n", "")
    line = f'use "{quoted}"'
    if rng.random() < 0.7:
        return line + "\n" + text
    lines = text.split("\n")
    lines.insert(rng.randrange(len(lines) + 1), line)
    return "\n".join(lines)


def _m_whitespace(text, rng):
    sep = rng.choice(SEPARATORS)
    roll = rng.random()
    if roll < 0.4:  # replace some newlines (or spaces) by the separator
        chars = "\n" if rng.random() < 0.6 else " "
        idx = [i for i, c in enumerate(text) if c == chars]
        for i in sorted(rng.sample(idx, min(len(idx), rng.choice((1, 3, 10, 1000)))), reverse=True):
            text = text[:i] + sep + text[i + 1:]
        return text
    if roll < 0.7:  # a separator inside a comment, then an error further down
        text = text.replace("#", "# x" + sep + " y ", rng.randint(1, 5))
        return _m_token_delete(text, rng) if rng.random() < 0.7 else _m_token_insert(text, rng)
    if roll < 0.85:  # a separator at a random place, and an error after it
        at = rng.randrange(len(text) + 1)
        text = text[:at] + sep + text[at:]
        return _m_token_insert(text, rng)
    return text.replace("\n", sep) if sep not in ("\x00",) else text


def _m_long_line(text, rng):
    n = rng.choice((10_000, 100_000, 1_000_000))
    roll = rng.random()
    if roll < 0.2:
        return "# " + "x" * n + "\n" + text
    if roll < 0.4:
        return _in_body(text, rng, "    " + "a" * n + ": relu()")
    if roll < 0.55:
        return _in_body(text, rng, "    relu(); " * (n // 12))
    if roll < 0.7:
        return _in_body(text, rng, '    "' + "s" * n + '": relu()')
    if roll < 0.8:
        return _in_body(text, rng, "    let s = [" + "1, " * (n // 3) + "1]")
    if roll < 0.9:
        return re.sub(r"\s*\n\s*", " ", re.sub(r"#[^\n]*", "", text))  # the whole file on one line
    return _in_body(text, rng, "    let n = " + " + ".join(["1"] * (n // 4)))


TENSOR_STMTS = (
    "let t = in", "from in", "let t = in\n    from t + t", "let t = in\n    from t * 0.5 - t",
    "let t = in\n    from t @ t", "return in", "return [in, in]", 'return {"a": in, "b": in}', "return [in]",
    'return {"out": in}',
    "let a, b = [in, in]\n    from a + b", "let a, b = in", "residual if true { relu() }",
    "residual if in.channels > 0 { relu() } shortcut if false { identity() }", "merge_batch()",
    "split_batch(2)", "let p = pp: parameter([1])\n    from in + p", "let p = pp: parameter([2**40])",
    "let p = pp: parameter([0])", "let b = bb: buffer([[1, 2], [3, 4]])\n    from index(in, b)",
    'from output("features")', 'from output("nope")', "from softmax(in, 1)", "from softmax(in, 0)",
    "from mean(in, [1])", "from mean(in, [0])", "from sum([in, in, in])", "from concat([in, in], 1)",
    "from stack([in, in], 1)", "from permute(in, [0, 1])", "from reshape(in, [-1])", "from select(in, 1, 0)",
    "from narrow(in, 1, 0, 1)", "from transpose(in, 1, 2)", "from sdpa(in, in, in)", "let x = relu(in)",
    "x = in", "let t = c: conv2d(8, 1)(in)\n    from t", "let t = seq { relu() }(in)\n    from t",
    "let t = in\n    t = t + t\n    from t", "from -in", "from 1 - in", "from in / 0",
    "from select(in, 1, 2**63)", "from narrow(in, 1, -1, 2**31)", "let q = in\n    return q",
    "inline ResNetTrunk(Bottleneck, [1, 1, 1, 1])", "tap skip\n    from skip",
)


def _m_tensor(text, rng):
    stmt = rng.choice(TENSOR_STMTS)
    return _in_body(text, rng, "    " + stmt)


MUTATIONS = {
    "token_delete": _m_token_delete, "token_duplicate": _m_token_duplicate, "token_swap": _m_token_swap,
    "token_insert": _m_token_insert, "line_delete": _m_line_delete, "line_duplicate": _m_line_duplicate,
    "line_swap": _m_line_swap, "number": _m_number, "label": _m_label, "deep": _m_deep, "huge": _m_huge,
    "recursive": _m_recursive, "use": _m_use, "whitespace": _m_whitespace, "long_line": _m_long_line,
    "tensor": _m_tensor,
}
#: relative frequency of each mutation (the cheap, broad ones most often)
WEIGHTS = {"token_delete": 6, "token_duplicate": 4, "token_swap": 4, "token_insert": 6, "line_delete": 4,
           "line_duplicate": 3, "line_swap": 3, "number": 8, "label": 5, "deep": 2, "huge": 3, "recursive": 1,
           "use": 2, "whitespace": 3, "long_line": 1, "tensor": 5}


def _odd_files(case: Case, rng: random.Random) -> None:
    """The files that the odd ``use`` targets name (created for every case that may read them)."""
    case.files["odd/binary.arch"] = bytes(rng.randrange(256) for _ in range(512)) + b"\x00model m"
    case.files["odd/latin1.arch"] = "# caf\xe9\nmodel m input 3x8x8 { relu() }\n".encode("latin-1")
    case.files["odd/huge.arch"] = "#" * (5 * 1024 * 1024) + "\n"
    case.files["odd/empty.arch"] = ""
    case.files["odd/self.arch"] = 'use "self.arch"\n'
    case.files["odd/bom.arch"] = "\ufeffblock B() { relu() }\n"
    case.special += [("odd/fifo", "fifo"), ("odd/dir.arch", "dir"), ("odd/loop", "symlink_loop")]


# ------------------------------------------------------------------ random specs


def _rand_int(rng, small=True):
    if rng.random() < 0.9:
        return str(rng.choice((1, 1, 2, 3, 4, 8, 16)) if small else rng.randint(1, 64))
    return rng.choice(NUMBERS)


def _op_stmt(rng: random.Random, rank: int) -> str:
    """One op call plausible for an input of ``rank`` dims (3: CxHxW, 2: NxD, 1: F)."""
    c = str(rng.choice((4, 8, 16)))
    if rank == 3:
        choices = [f"conv2d({c}, {rng.choice((1, 3))}, padding = {rng.choice((0, 1))})",
                   f"conv2d({c}, 3, stride = 2, padding = 1, bias = false)", "batchnorm2d()", "relu()",
                   "relu6()", "gelu()", "silu()", "sigmoid()", "hardswish()", "maxpool2d(2)", "avgpool2d(2)",
                   "adaptive_avgpool2d(1)", "identity()", "dropout(0.1)", f"groupnorm({rng.choice((1, 2))})",
                   "layernorm2d()", f"channel_shuffle({rng.choice((1, 2))})", "local_response_norm(2)",
                   f"conv_transpose2d({c}, 2, stride = 2)", "interpolate(scale_factor = 2.0)",
                   "pad([1, 1, 1, 1])", "stochastic_depth(0.1)", "leaky_relu()", "tanh()",
                   "conv2d(in.channels, 3, padding = 1, groups = in.channels)", "clamp(min = 0.0)"]
    elif rank == 2:
        choices = [f"linear({c})", "layernorm()", "gelu()", "relu()", f"mha({rng.choice((1, 2))})",
                   "dropout(0.0)", "identity()", "softmax(-1)", "class_token()", "pos_embedding()",
                   "layer_scale()", f"conv1d({c}, 1)", "batchnorm1d()", "normalize()"]
    else:
        choices = [f"linear({c})", "relu()", "dropout(0.5)", "batchnorm1d()", "sigmoid()", "identity()",
                   "layernorm()"]
    stmt = rng.choice(choices)
    if rng.random() < 0.05:  # a wrong or extreme argument now and then
        stmt = re.sub(r"\d+", lambda m: _rand_int(rng), stmt, count=1)
    return stmt


def _stmts(rng: random.Random, rank: int, depth: int, n: int, ops: tuple[str, ...]) -> list[str]:
    out = []
    for _ in range(n):
        roll = rng.random()
        label = f"l{rng.randrange(1000)}: " if rng.random() < 0.3 else ""
        if depth > 0 and roll < 0.08:
            out.append(label + "seq { " + "; ".join(_stmts(rng, rank, depth - 1, rng.randint(1, 3), ops)) + " }")
        elif depth > 0 and roll < 0.16 and rank == 3:
            inner = "; ".join(_stmts(rng, rank, depth - 1, rng.randint(1, 2), ops)) or "relu()"
            cond = rng.choice(("", "if true ", "if in.channels > 4 ", "if false "))
            out.append(label + f"residual {cond}{{ conv2d(in.channels, 3, padding = 1); {inner}; "
                       f"conv2d(in.channels, 1) }}")
        elif depth > 0 and roll < 0.22 and rank == 3:
            out.append(label + "concat { conv2d(4, 1); pass; seq { conv2d(2, 3, padding = 1) } }")
        elif depth > 0 and roll < 0.28:
            k = rng.choice((0, 1, 2, 3))
            out.append(label + f"for i in range({k}) {{ " + "; ".join(_stmts(rng, rank, depth - 1, 1, ops)) + " }")
        elif depth > 0 and roll < 0.33:
            out.append(f"if in.rank == {rank} {{ " + "; ".join(_stmts(rng, rank, depth - 1, 1, ops)) +
                       " } else { identity() }")
        elif roll < 0.42:
            v = f"t{rng.randrange(100)}"
            expr = rng.choice((f"{v} + {v}", f"relu({v})", f"{v} * 0.5", f"sigmoid({v}) * {v}", f"{v} - 1",
                               f"sum([{v}, {v}])", f"-{v}"))
            out.append(f"let {v} = in; from {expr}")
        elif roll < 0.46 and rank == 3:
            out.append(label + "gate { adaptive_avgpool2d(1); conv2d(in.channels, 1); sigmoid() }")
        elif roll < 0.48 and rank == 3:
            out.append("split_batch(1); merge_batch()")
        elif roll < 0.5:
            op = rng.choice(ops)  # any op of the registry, with guessed arguments
            args = ", ".join(_rand_int(rng) for _ in range(rng.randint(0, 2)))
            out.append(label + f"{op}({args})")
        else:
            out.append(label + _op_stmt(rng, rank))
    return out


def random_ops_spec(rng: random.Random) -> str:
    """A small random model over the op registry: blocks, loops, residuals, lets and tensor algebra."""
    ops = _op_names()
    rank = rng.choice((3, 3, 3, 2, 1))
    shape = {3: f"{rng.choice((1, 3, 4))}x{rng.choice((4, 8, 16))}x{rng.choice((4, 8, 16))}",
             2: f"{rng.choice((4, 5, 8))}x{rng.choice((8, 16))}", 1: f"[{rng.choice((8, 16, 32))}]"}[rank]
    parts = []
    if rng.random() < 0.3:
        parts.append(f"let width = {rng.choice((4, 8))}")
    if rng.random() < 0.4:
        body = "\n    ".join(_stmts(rng, rank, 1, rng.randint(1, 3), ops))
        parts.append(f"block B{rank}(c: int = 4) {{\n    {body}\n}}")
    if rng.random() < 0.2:
        parts.append("block Two()(a, b) {\n    return [a + b, a - b]\n}")
    stmts = _stmts(rng, rank, 2, rng.randint(1, 6), ops)
    if any(p.startswith(f"block B{rank}") for p in parts) and rng.random() < 0.8:
        stmts.insert(rng.randrange(len(stmts) + 1), f"b: B{rank}()")
    if any(p.startswith("block Two") for p in parts):
        stmts.append("let u, v = two: Two()(in, in)\n    from u * v")
    if rng.random() < 0.25:
        stmts.append(rng.choice(("return [in, in]", 'return {"out": in, "half": in * 0.5}', "return in",
                                  "return [in]", 'return {"out": in}')))
    if rng.random() < 0.2:
        parts.append("")  # an init rule
        stmts.insert(0, rng.choice(('init conv2d.weight = normal(std = 0.01)', 'init linear.bias = zeros()',
                                    'init conv2d.weight = kaiming_normal(mode = "fan_out")')))
    params = "(n: int = 2)" if rng.random() < 0.2 else ""
    body = "\n    ".join(stmts)
    parts.append(f"model gen{params} input {shape} {{\n    {body}\n}}")
    return "\n\n".join(p for p in parts if p) + "\n"


_GRAMMAR = None


def _grammar():
    """(rules by name, terminal patterns, shortest derivation depth) of the Lark grammar."""
    global _GRAMMAR
    if _GRAMMAR is None:
        from .syntax.parser import lark_parser
        p = lark_parser()
        rules: dict[str, list[list]] = {}
        for r in p.rules:
            rules.setdefault(r.origin.name, []).append([s for s in r.expansion])
        terms = {t.name: t for t in p.terminals}
        depth: dict[str, int] = {}
        changed = True
        while changed:
            changed = False
            for name, exps in rules.items():
                best = min((1 + max((0 if s.is_term else depth.get(s.name, 10**9)) for s in e) if e else 1)
                           for e in exps)
                if best < depth.get(name, 10**9):
                    depth[name] = best
                    changed = True
        _GRAMMAR = (rules, terms, depth)
    return _GRAMMAR


_TERMINAL_SAMPLES = {
    "NAME": ("x", "y", "c", "conv2d", "relu", "linear", "B", "m", "planes", "stride", "in", "i", "seq", "layer1",
             "flatten", "batchnorm2d", "maxpool2d", "range", "len", "n", "t"),
    "INT": ("0", "1", "2", "3", "8", "64", "224", "2147483648"),
    "FLOAT": ("0.5", "1.0", "1e-5", "1e400", ".25"),
    "STRING": ('"x"', '"lib/resnet.arch"', '"layer{i}"', '""', '"a.b"', '"{"', '"fc"'),
    "SHAPE": ("3x8x8", "3x32x32", "1x1", "0x0x0", "3x224x224"),
    "COMP_OP": ("==", "!=", "<", ">", "<=", ">="),
    "ADD_OP": ("+", "-"),
    "MUL_OP": ("*", "/", "//", "%", "@"),
    "POW": ("**",),
}


def random_grammar_spec(rng: random.Random, max_depth: int = 9) -> str:
    """A random sentence of the grammar (mostly well-formed syntax with arbitrary meaning)."""
    rules, terms, depth = _grammar()
    out: list[str] = []
    budget = [600]

    def gen(name: str, d: int):
        exps = rules[name]
        budget[0] -= 1
        if d >= max_depth or budget[0] <= 0:
            m = min(1 + max((0 if s.is_term else depth.get(s.name, 99)) for s in e) if e else 1 for e in exps)
            exps = [e for e in exps if (1 + max((0 if s.is_term else depth.get(s.name, 99)) for s in e)
                                        if e else 1) == m]
        exp = rng.choice(exps)
        for s in exp:
            if s.is_term:
                if s.name in _TERMINAL_SAMPLES:
                    out.append(rng.choice(_TERMINAL_SAMPLES[s.name]))
                else:
                    t = terms.get(s.name)
                    out.append(t.pattern.value if t is not None and t.pattern.type == "str" else "x")
            else:
                gen(s.name, d + 1)

    gen("start", 0)
    text = " ".join(out)
    return text.replace(" ; ", "\n").replace("{ ", "{\n").replace(" }", "\n}") + "\n"


# ------------------------------------------------------------------ generation


#: zoo specs that check, build and run in well under 0.2 s (the ``quick`` profile's usual targets)
CHEAP_SPECS = ("lenet5.arch", "alexnet.arch", "vgg11.arch", "vgg11_bn.arch", "squeezenet1_0.arch",
               "squeezenet1_1.arch", "resnet18.arch", "preact_resnet18.arch", "unet.arch", "mobilenet_v1.arch",
               "resnet34.arch", "yolo_v1.arch", "vit_b_32.arch", "shufflenet_v2_x0_5.arch", "mnasnet0_5.arch",
               "convnext_tiny.arch", "resnet50.arch", "regnet_x_400mf.arch", "mobilenet_v2.arch")


def generate_case(seed: int, index: int, profile: str = "full") -> Case:
    """The case number ``index`` of the campaign ``seed`` (the same for the same arguments, always).

    ``full``: cases cycle through the zoo's files, so that every file is mutated about once in
    every ``len(zoo_files())`` mutation cases; about one case in five is a random spec.
    ``quick`` (a short run in the test suite): the first ``len(zoo_files())`` cases mutate each
    zoo file once; after that a third are random specs and the mutations are of
    :data:`CHEAP_SPECS` and of the family files (loaded through their smallest model).
    """
    rng = random.Random(f"archdsl-fuzz:{seed}:{index}")
    texts = _zoo()
    files = zoo_files()
    quick = profile == "quick"
    roll = 1.0 if quick and index < len(files) else rng.random()
    if quick and index >= len(files):
        files = sorted(set(CHEAP_SPECS) | {f for f in files if "/" in f})
        roll *= 0.6  # random specs: a third of the cases
    if roll < 0.12:
        text = random_ops_spec(rng)
        if rng.random() < 0.25:
            text = _mutate(text, rng, 1)[0]
        return Case(index, "generated_ops", "fuzz_gen.arch", {"fuzz_gen.arch": text})
    if roll < 0.2:
        text = random_grammar_spec(rng)
        return Case(index, "generated_grammar", "fuzz_gen.arch", {"fuzz_gen.arch": text})
    target = files[index % len(files)] if quick and index < len(files) else \
        files[(index * 7919 + seed) % len(files)]
    text, names = _mutate(texts[target], rng, rng.choice((1, 1, 1, 2, 3)))
    case = Case(index, "mutate:" + "+".join(names) + ":" + target, target, {target: text})
    if "/" in target:  # a family file: loaded through a model that reads it
        main = _users().get(target)
        if main is None or rng.random() < 0.2:
            main = "fuzz_main.arch"
            rel = os.path.relpath(target, ".")
            blocks = re.findall(r"(?m)^block\s+(\w+)\s*\(\s*\)", text)
            body = f"    {blocks[0]}()" if blocks else "    relu()"
            case.files[main] = f'use "{rel}"\nmodel fuzz input 3x32x32 {{\n{body}\n}}\n'
        case.main = main
    if "use" in names:
        _odd_files(case, rng)
    return case


def _mutate(text: str, rng: random.Random, n: int) -> tuple[str, list[str]]:
    names = []
    kinds, weights = zip(*WEIGHTS.items())
    for _ in range(n):
        name = rng.choices(kinds, weights)[0]
        text = MUTATIONS[name](text, rng)
        names.append(name)
    return text, names


# ------------------------------------------------------------------ classification


def _lines_of(text: str) -> list[str]:
    return text.split("\n")


def classify_error(err: BaseException, read_source=None) -> tuple[str, str]:
    """The class (``located``, ``unlocated``, ``misrendered``, ``memory`` or ``traceback``) and a
    message for an exception raised by ``load_spec``.

    ``read_source(name)`` gives the text of the file a location names (None if unknown; the
    text the diagnostic carries is used then). A SpecError is ``located`` when every diagnostic
    has a span and its rendered text quotes, under each ``--> file:line:col``, exactly that
    line of that file (lines split at ``\\n`` only, tabs expanded as the renderer does; a NUL or an undecodable
    byte may be quoted as U+FFFD).
    """
    from .diagnostics import SpecError
    if isinstance(err, MemoryError):
        return "memory", "MemoryError"
    if not isinstance(err, SpecError):
        import traceback
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        return "traceback", tb[-4000:]
    try:
        rendered = err.render()
    except Exception as e:  # rendering itself failed
        return "traceback", f"SpecError.render() raised {type(e).__name__}: {e}"
    if not err.diagnostics:
        return "unlocated", "SpecError without diagnostics"
    for d in err.diagnostics:
        if d.span is None:
            return "unlocated", d.render()[:2000]
        own = d.render()
        if own not in rendered:
            return "misrendered", "a diagnostic's text is missing from SpecError.render()"
        problem = _check_quotes(own, d, read_source)
        if problem:
            return "misrendered", problem + "\n" + own[:2000]
    return "located", err.diagnostics[0].message[:300]


def _check_quotes(rendered: str, diag, read_source) -> str | None:
    from .diagnostics import MAX_QUOTED
    lines = rendered.split("\n")
    found = False
    for i, ln in enumerate(lines):
        m = re.match(r"^\s*--> (.*):(\d+):(\d+)$", ln)
        if not m:
            continue
        found = True
        name, lineno = m.group(1), int(m.group(2))
        text = read_source(name) if read_source else None
        if text is None and diag.span is not None and diag.span.source.name == name:
            text = diag.span.source.text
        if text is None:
            return f"the location names {name!r}, a file that cannot be read"
        src = _lines_of(text)
        if not 1 <= lineno <= len(src):
            return f"line {lineno} of {name} does not exist (it has {len(src)} lines)"
        # tabs expanded as the renderer does; a NUL byte may be shown as U+FFFD (as undecodable bytes are)
        want = src[lineno - 1].rstrip("\r").expandtabs(4).replace("\x00", "\ufffd")
        prefix = f"{lineno} | "
        quoted = next((q for q in lines[i + 1:i + 4] if q.startswith(prefix)), None)
        if quoted is None:
            return f"no source line quoted under {name}:{lineno}"
        shown = quoted[len(prefix):]
        if len(want) > MAX_QUOTED and (shown.startswith("…") or shown.endswith("…")):
            shown = shown.strip("…")  # a long line is quoted as a window of itself
            if shown in want and len(shown) == MAX_QUOTED:
                continue
        if shown != want:
            return (f"{name}:{lineno} quotes {quoted[len(prefix):][:200]!r}, but that line is "
                    f"{want[:200]!r}")
    if not found:
        return "the rendered diagnostic has no `--> file:line:col` line"
    return None


def output_structure(y):
    """The shapes of a forward's result without the batch dim, in the structure of
    ``spec.output_shapes`` (a tensor -> a tuple of ints, tuple/list -> tuple, dict -> dict)."""
    import torch
    if isinstance(y, torch.Tensor):
        return tuple(int(d) for d in y.shape[1:])
    if isinstance(y, (tuple, list)):
        return tuple(output_structure(v) for v in y)
    if isinstance(y, dict):
        return {k: output_structure(v) for k, v in y.items()}
    return f"<{type(y).__name__}>"


def check_spec(spec) -> tuple[str, str]:
    """``ok``, or ``torch_failure`` with the reason, for a spec that ``load_spec`` checked: it must
    build on meta, run a meta forward (eval mode, batch 1) with exactly the checked output shapes, and have
    ``spec.num_params`` trainable parameter elements."""
    import torch
    from .diagnostics import SpecError
    stage = "build(device='meta')"
    try:
        model = spec.build(device="meta")
        stage = "meta forward"
        model.train(False)  # eval mode, batch 1: training-mode batch norm would refuse a single value per channel
        x = torch.empty((1, *spec.input_shape), device="meta")
        with torch.no_grad():
            y = model(x)
    except MemoryError:
        return "memory", f"MemoryError in {stage}"
    except SpecError as e:  # a refusal at build (e.g. a memory limit): must be located like any other
        cls, msg = classify_error(e)
        return cls, f"at {stage}: {msg}"
    except Exception as e:
        import traceback
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return "torch_failure", f"{stage} failed: {type(e).__name__}: {e}\n{tb[-3000:]}"
    got = output_structure(y)
    want = spec.output_shapes
    if got != want:
        return "torch_failure", f"output shapes {got!r} != checked {want!r}"
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n != spec.num_params:
        return "torch_failure", f"{n} trainable parameters != checked {spec.num_params}"
    return "ok", f"{spec.name}: {spec.num_params} params"


# ------------------------------------------------------------------ running one case (in a worker)


def _write(p: Path, data) -> None:
    """Write a case file exactly as generated (bytes, or text with lone surrogates and odd newlines kept)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        with open(p, "w", encoding="utf-8", errors="surrogatepass", newline="") as f:
            f.write(data)


def _materialize(case: Case, root: Path) -> list[Path]:
    """Write ``case``'s files over the zoo copy at ``root``; returns what to restore afterwards."""
    touched = []
    for rel, data in case.files.items():
        _write(root / rel, data)
        touched.append(root / rel)
    for rel, kind in case.special:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "fifo":
            os.mkfifo(p)
        elif kind == "dir":
            p.mkdir()
        elif kind == "symlink_loop":
            os.symlink(p.name, p)
        touched.append(p)
    return touched


def _restore(root: Path, touched: list[Path]) -> None:
    for p in touched:
        rel = p.relative_to(root)
        orig = ZOO / rel
        if p.is_symlink() or p.is_fifo() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
        if orig.is_file():
            shutil.copyfile(orig, p)
    odd = root / "odd"
    if odd.exists():
        shutil.rmtree(odd)


def run_case(case: Case, root: Path, checked=None, trusted: bool = True) -> tuple[str, str]:
    """Run ``case`` in this process over the zoo copy at ``root`` (the working directory must be
    ``root``, so that locations are named relative to it). Returns (class, message).
    ``checked()`` is called when ``load_spec`` has succeeded, before the build; ``trusted=False``
    loads as ``--untrusted`` does (tighter budgets, confined ``use``)."""
    import archdsl
    touched = _materialize(case, root)

    def read_source(name):
        p = Path(name) if os.path.isabs(name) else root / name
        try:
            if p.is_file() and p.stat().st_size <= 64 * 1024 * 1024:
                return p.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            pass
        return None

    try:
        try:
            spec = archdsl.load_spec(str(root / case.main), trusted=trusted)
        except BaseException as e:  # noqa: BLE001 - every outcome is classified
            if isinstance(e, KeyboardInterrupt):
                raise
            return classify_error(e, read_source)
        if checked:
            checked()
        return check_spec(spec)
    finally:
        _restore(root, touched)


#: zoo specs run once by each worker before its first case: the first parse builds the Lark
#: parser and the first meta forward imports torch's decompositions (seconds, not the case's time)
WARM_UP = ("resnet18.arch", "vit_b_32.arch", "mobilenet_v3_small.arch")


def _warm_up(root: Path) -> None:
    import archdsl
    for name in WARM_UP:
        try:
            check_spec(archdsl.load_spec(str(root / name)))
        except Exception:  # pragma: no cover - a broken zoo spec shows up in the cases instead
            pass


def _worker_main(memory_mib: int, root: str | None = None, trusted: bool = True) -> None:
    """The worker loop: JSON cases on stdin, one JSON result line per case on the original stdout."""
    if memory_mib:
        limit = memory_mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever archdsl or torch prints goes to stderr, not into the protocol
    import torch
    torch.set_num_threads(1)
    import archdsl  # noqa: F401
    _op_names()
    root = Path(root or tempfile.mkdtemp(prefix="archdsl-fuzz-"))
    try:
        shutil.copytree(ZOO, root, dirs_exist_ok=True)
        os.chdir(root)
        _warm_up(root)
        out.write(json.dumps({"ready": True}) + "\n")
        for line in sys.stdin:
            case = Case.from_json(json.loads(line))
            t0 = time.perf_counter()
            try:
                cls, msg = run_case(case, root, lambda: out.write('{"checked": true}\n'), trusted)
            except MemoryError:
                cls, msg = "memory", "MemoryError"
            out.write(json.dumps({"index": case.index, "cls": cls, "message": msg,
                                  "seconds": time.perf_counter() - t0}) + "\n")
    finally:
        os.chdir("/")
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ the pool


class _Worker:
    def __init__(self, memory_mib: int, trusted: bool = True):
        env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        # the zoo copy is the pool's to remove: a worker killed after a hang cannot clean up
        self.root = tempfile.mkdtemp(prefix="archdsl-fuzz-")
        self.proc = subprocess.Popen([sys.executable, "-m", "archdsl.fuzz", "--worker", "--memory",
                                      str(memory_mib), "--root", self.root] + ([] if trusted else ["--untrusted"]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, text=True,
                                     cwd=str(ZOO.parent))
        self.case: Case | None = None
        self.started = 0.0
        self.checked_at = None
        self.spawned = time.monotonic()
        self.ready = False
        self.buf = b""

    def send(self, case: Case) -> None:
        self.case = case
        self.started = time.monotonic()
        self.checked_at = None
        self.proc.stdin.write(json.dumps(case.to_json()) + "\n")
        self.proc.stdin.flush()

    def deadline(self, timeout: float) -> float:
        """``load_spec`` must finish within ``timeout``; a checked spec's build and meta forward (torch's
        time, linear in the model's size) get ``build_factor`` times as long."""
        if self.checked_at is not None:
            return self.checked_at + build_factor * timeout
        return self.started + timeout

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Report:
    """A campaign's results: counts per class and the defect results."""

    counts: dict
    defects: list
    cases: int
    seconds: float

    @property
    def defect_count(self) -> int:
        return sum(self.counts[c] for c in DEFECTS)

    def table(self) -> str:
        """The per-class counts as a text table."""
        width = max(len(c) for c in CLASSES)
        rows = [f"{'class':<{width}}  {'cases':>7}"]
        rows += [f"{c:<{width}}  {self.counts[c]:>7}" + ("  (defect)" if c in DEFECTS and self.counts[c] else "")
                 for c in CLASSES]
        rows.append(f"{'total':<{width}}  {self.cases:>7}   in {self.seconds:.1f} s")
        return "\n".join(rows)


def run_cases(cases, jobs: int = 2, timeout: float = 10.0, memory_mib: int = 3072, progress=None,
              trusted: bool = True) -> list[Result]:
    """Run ``cases`` (any iterable, consumed lazily) in ``jobs`` worker subprocesses; a worker over
    ``timeout`` seconds on a case is killed (``hang``), one that dies is replaced (``memory``: the
    cap is the usual cause). ``progress(case, result)`` is called as each case finishes."""
    source = iter(cases)
    pending: list[Case] = []

    def more() -> bool:
        if not pending:
            nxt = next(source, None)
            if nxt is None:
                return False
            pending.append(nxt)
        return True

    results: list[Result] = []
    sel = selectors.DefaultSelector()
    workers: list[_Worker] = []

    def spawn():
        w = _Worker(memory_mib, trusted)
        workers.append(w)
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        return w

    def retire(w):
        sel.unregister(w.proc.stdout)
        workers.remove(w)
        w.kill()

    def finish(w, cls, msg, seconds):
        c = w.case
        results.append(Result(c.index, c.kind, cls, msg, seconds))
        w.case = None
        if progress:
            progress(c, results[-1])

    for _ in range(max(1, jobs)):
        spawn()
    try:
        while more() or any(w.case is not None for w in workers):
            for w in list(workers):
                if w.ready and w.case is None and more():
                    w.send(pending.pop())
            now = time.monotonic()
            deadlines = [w.deadline(timeout) - now for w in workers if w.case is not None]
            wait = max(0.01, min(deadlines)) if deadlines else 1.0
            for key, _ in sel.select(wait):
                w = key.data
                data = os.read(w.proc.stdout.fileno(), 1 << 20)  # raw reads: no line left in a buffer
                if not data:  # the worker died
                    if w.case is not None:
                        code = w.proc.wait()
                        finish(w, "memory", f"worker died (exit status {code}) running the case; "
                               f"memory cap {memory_mib} MiB", time.monotonic() - w.started)
                    elif not w.ready:
                        raise RuntimeError("a fuzz worker failed to start")
                    retire(w)
                    spawn()
                    continue
                w.buf += data
                while b"\n" in w.buf:
                    line, w.buf = w.buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg.get("ready"):
                        w.ready = True
                    elif msg.get("checked"):  # load_spec is done: the build gets its own time limit
                        w.checked_at = time.monotonic()
                    elif w.case is not None:
                        finish(w, msg["cls"], msg["message"], msg["seconds"])
            now = time.monotonic()
            for w in list(workers):
                if w.case is not None and now > w.deadline(timeout):
                    where = (f"in build or meta forward, {build_factor * timeout:g} s after `load_spec` succeeded"
                             if w.checked_at else "in `load_spec`")
                    finish(w, "hang", f"no result after {now - w.started:.0f} s ({where})", now - w.started)
                    retire(w)
                    spawn()
                if not w.ready and now > w.spawned + 300:
                    raise RuntimeError("fuzz workers did not start within 300 s")
    finally:
        for w in list(workers):
            try:
                w.proc.stdin.close()
            except OSError:
                pass
            w.kill()
        sel.close()
    results.sort(key=lambda r: r.index)
    return results


def save_defect(case: Case, result: Result, out: Path) -> Path:
    """Save a defect's files (laid over a copy of ``specs/``), its class and message under ``out``."""
    d = out / result.cls / f"case{case.index:06d}"
    d.mkdir(parents=True, exist_ok=True)
    for rel, data in case.files.items():
        _write(d / "files" / rel, data)
    (d / "case.json").write_text(json.dumps(case.to_json()))
    (d / "README.txt").write_text(
        f"class: {result.cls}\nkind: {case.kind}\nmain: {case.main}\nspecial files: {case.special}\n"
        f"reproduce: lay files/ over a copy of specs/ and run `archdsl check <copy>/{case.main}`,\n"
        f"or: python -m archdsl.fuzz --replay {d / 'case.json'}\n\n{result.message}\n")
    return d


def run_campaign(cases: int, seed: int = 0, jobs: int = 2, timeout: float = 10.0, memory_mib: int = 3072,
                 out: str | os.PathLike | None = None, start: int = 0, progress=None, profile: str = "full",
                 log: str | os.PathLike | None = None, trusted: bool = True) -> Report:
    """Generate ``cases`` cases of campaign ``seed`` (from index ``start``, see :func:`generate_case`
    for ``profile``), run them and count the classes. With ``out``, every defect's case is saved
    there as it is found (:func:`save_defect`); with ``log``, one JSON line per case is written
    there (index, kind, class, seconds, the message's first line)."""
    t0 = time.monotonic()
    logf = open(log, "w") if log else None

    def on_result(case: Case, r: Result):
        if out is not None and r.cls in DEFECTS:
            save_defect(case, r, Path(out))
        if logf:
            first = r.message.strip().splitlines()[0] if r.message.strip() else ""
            logf.write(json.dumps({"index": r.index, "kind": r.kind, "cls": r.cls, "seconds": round(r.seconds, 3),
                                   "message": first[:300]}) + "\n")
            logf.flush()
        if progress:
            progress(case, r)

    try:
        results = run_cases((generate_case(seed, i, profile) for i in range(start, start + cases)), jobs=jobs,
                            timeout=timeout, memory_mib=memory_mib, progress=on_result, trusted=trusted)
    finally:
        if logf:
            logf.close()
    counts = {c: 0 for c in CLASSES}
    for r in results:
        counts[r.cls] += 1
    defects = [r for r in results if r.cls in DEFECTS]
    return Report(counts, defects, len(results), time.monotonic() - t0)


def main(argv=None) -> int:
    """The command line: ``python -m archdsl.fuzz --cases N [--seed S] [--jobs J] [--timeout SEC]
    [--memory MiB] [--out DIR]``; exits 1 when any defect class is non-zero."""
    ap = argparse.ArgumentParser(prog="python -m archdsl.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    ap.add_argument("--start", type=int, default=0, help="index of the first case (default 0)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per case (default 10)")
    ap.add_argument("--memory", type=int, default=3072, help="address-space cap per worker, MiB (default 3072)")
    ap.add_argument("--out", help="save every defect's spec, class and message in this directory")
    ap.add_argument("--show", type=int, metavar="INDEX", help="print the text of case INDEX and exit")
    ap.add_argument("--replay", metavar="CASE_JSON", help="run one saved case (case.json) and print its outcome")
    ap.add_argument("--profile", choices=("full", "quick"), default="full",
                    help="quick: every zoo file once, then mostly the cheaper specs (the test suite's run)")
    ap.add_argument("--log", help="write one JSON line per case (class, seconds, message) to this file")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every defect as it is found")
    ap.add_argument("--untrusted", action="store_true",
                    help="load every case as `--untrusted` does (tighter budgets, confined `use`): each case "
                         "ends within seconds, so the suite's run uses it")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker_main(args.memory, args.root, not args.untrusted)
        return 0
    if args.show is not None:
        case = generate_case(args.seed, args.show, args.profile)
        print(f"# kind: {case.kind}\n# main: {case.main}")
        for rel, data in case.files.items():
            shown = data if isinstance(data, str) else f"<{len(data)} bytes>"
            print(f"# ---- {rel}\n{shown if len(shown) < 20000 else shown[:20000] + '...'}")
        return 0
    if args.replay:
        case = Case.from_json(json.loads(Path(args.replay).read_text()))
        (r,) = run_cases([case], jobs=1, timeout=args.timeout, memory_mib=args.memory, trusted=not args.untrusted)
        print(f"{r.cls}: {r.message}")
        return 1 if r.cls in DEFECTS else 0

    def progress(case: Case, r: Result):
        if args.verbose and r.cls in DEFECTS:
            print(f"[{r.index}] {r.cls} ({r.kind}): {r.message.splitlines()[-1] if r.message else ''}",
                  flush=True)

    report = run_campaign(args.cases, seed=args.seed, jobs=args.jobs, timeout=args.timeout,
                          memory_mib=args.memory, out=args.out, start=args.start, progress=progress,
                          profile=args.profile, log=args.log, trusted=not args.untrusted)
    print(report.table())
    if args.out and report.defects:
        print(f"defects saved under {args.out}")
    return 1 if report.defect_count else 0


if __name__ == "__main__":
    sys.exit(main())
