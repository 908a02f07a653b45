"""Parse .arch text into the AST: a Lark LALR parser plus a transformer that attaches spans.

Syntax errors become :class:`~archdsl.diagnostics.SpecError` with a located diagnostic that
names, in words, what was expected at that point.
"""

from __future__ import annotations

import dataclasses

import functools
import re
import threading
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from .. import limits
from ..diagnostics import Diagnostic, Source, Span, SpecError
from . import ast

KEYWORDS = ("use", "let", "block", "model", "input", "init", "seq", "for", "in", "residual",
            "shortcut", "concat", "if", "elif", "else", "then", "and", "or", "not", "true",
            "false", "none", "gate", "pass", "tap", "from", "return", "inline")

#: words that are keywords only at the start of a statement (elsewhere they are ordinary names, so specs
#: that use them as names keep working)
STATEMENT_KEYWORDS = ("register",)

#: the longest number literal (Python refuses to convert integers of more than 4300 digits)
MAX_LITERAL_DIGITS = 100

_TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "SHAPE": "a shape such as 3x224x224",
    "COMP_OP": "a comparison",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`, `/`, `//` or `%`",
    "POW": "`**`",
    "$END": "end of file",
}


@functools.lru_cache(maxsize=None)
def grammar_text() -> str:
    """The Lark grammar of the language."""
    return resources.files("archdsl.syntax").joinpath("grammar.lark").read_text()


class _GluedKeyword(Exception):
    """A keyword read from the start of a longer word (``letx``), where only a keyword could follow."""

    def __init__(self, token: Token):
        super().__init__(str(token))
        self.token = token


_LEXING = threading.local()  # the text being parsed, for the keyword-boundary check


def _keyword_boundary(tok: Token) -> Token:
    """Where the parser accepts only keywords, the contextual lexer would read `letx` as `let x`:
    a keyword must end where the word ends."""
    text = getattr(_LEXING, "text", None)
    if text is not None and tok.end_pos < len(text) and (text[tok.end_pos].isalnum() or text[tok.end_pos] == "_"):
        raise _GluedKeyword(tok)
    return tok


@functools.lru_cache(maxsize=None)
def lark_parser(strict: bool = False) -> Lark:
    """The LALR parser (built once per process; ``strict=True`` also checks for conflicts)."""
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True,
                strict=strict, lexer_callbacks={k.upper(): _keyword_boundary for k in KEYWORDS})


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    term = lark_parser().get_terminal(name)
    pattern = term.pattern.value
    return f"`{pattern}`"


_OPERATORS = {"ADD_OP", "MUL_OP", "POW", "COMP_OP", "AND", "OR"}
_BINARY_ONLY = {"MUL_OP", "POW", "COMP_OP", "AND", "OR"}


def expected_words(names) -> str:
    names = {n for n in names if not n.startswith("__")}
    words = set()
    if len(names & _BINARY_ONLY) >= 2:  # after a complete operand: any operator may follow
        names -= _OPERATORS
        words.add("an operator")
    words |= {_describe_terminal(n) for n in names}
    words = sorted(words)
    if not words:
        return "something else"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def expected_terminals(err: UnexpectedInput) -> set[str]:
    """The terminals the parser would really accept where ``err`` happened.

    LALR lookahead sets (``err.expected``) merge the contexts of a state and may list
    tokens that cannot follow here; the interactive parser tries each one instead.
    """
    ip = getattr(err, "interactive_parser", None)
    if ip is not None:
        try:
            accepted = set(ip.accepts())
        except Exception:  # pragma: no cover - fall back to the lookahead set
            accepted = set()
        if accepted:
            return accepted
    return set(getattr(err, "expected", None) or getattr(err, "allowed", None) or ())


def _unescape(raw: str) -> str:
    body = raw[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


class _ToAst(Transformer):
    """Lark tree -> AST; every node gets the Span of the text it covers."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _span(self, meta) -> Span:
        return Span(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return Span(self.source, tok.line, tok.column, tok.end_line, tok.end_column)

    # -------------------------------------------------------------- declarations
    @v_args(meta=True)
    def start(self, meta, items):
        return ast.Module(tuple(i for i in items if i is not None), self.source.name)

    @v_args(meta=True)
    def use_decl(self, meta, c):
        return ast.Use(_unescape(c[0]), self._span(meta))

    def _bound(self, targets, value, span, assign=False):
        if isinstance(value, ast.Labelled):
            return ast.Let(targets[0], None, span, targets, value.node, value.label, assign)
        if isinstance(value, (ast.Seq, ast.For, ast.Residual, ast.Concat, ast.Gate, ast.Inline)):
            return ast.Let(targets[0], None, span, targets, value, None, assign)
        return ast.Let(targets[0], value, span, targets if len(targets) > 1 else (), None, None, assign)

    @v_args(meta=True)
    def let_decl(self, meta, c):
        return self._bound(c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def assign_stmt(self, meta, c):
        return self._bound((str(c[0]),), c[1], self._span(meta), assign=True)

    @v_args(meta=True)
    def return_stmt(self, meta, c):
        return ast.Return(c[0], self._span(meta))

    @v_args(meta=True)
    def inline_node(self, meta, c):
        return ast.Inline(c[0], self._span(meta))

    @v_args(meta=True)
    def block_decl(self, meta, c):
        return ast.BlockDecl(str(c[0]), c[1] or (), c[3], self._span(meta), c[2])

    @v_args(meta=True)
    def block_inputs(self, meta, c):
        toks = [t for t in c if t is not None]
        return tuple(ast.Param(str(t), "tensor", None, self._tspan(t)) for t in toks)

    @v_args(meta=True)
    def model_alias(self, meta, c):
        return ast.ModelDecl(str(c[0]), (), c[1], None, c[2], self._span(meta))

    @v_args(meta=True)
    def model_full(self, meta, c):
        return ast.ModelDecl(str(c[0]), c[1] or (), c[2], c[3], None, self._span(meta))

    @v_args(meta=True)
    def input_clause(self, meta, c):
        v = c[0]
        if isinstance(v, Token):  # SHAPE literal such as 3x224x224
            sp = self._tspan(v)
            return ast.ListExpr(tuple(ast.Literal(int(d), sp) for d in re.findall(r"\d+", v)), sp)
        return v

    def params(self, c):
        return tuple(c)

    def block_type(self, c):
        return "block"

    @v_args(meta=True)
    def param(self, meta, c):
        return ast.Param(str(c[0]), str(c[1]) if c[1] is not None else None, c[2], self._span(meta))

    def body(self, c):
        return tuple(s for s in c if s is not None)

    # -------------------------------------------------------------- statements
    @v_args(meta=True)
    def init_stmt(self, meta, c):
        target, param, call = c
        by_path = target.type == "STRING"
        return ast.InitRule(_unescape(target) if by_path else str(target), by_path,
                            str(param) if param is not None else None, call, self._span(meta))

    @v_args(meta=True)
    def labelled(self, meta, c):
        return ast.Labelled(c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def label(self, meta, c):
        tok = c[0]
        if tok.type == "STRING":
            return ast.Label(_unescape(tok), True, self._span(meta))
        return ast.Label(str(tok), False, self._span(meta))

    @v_args(meta=True)
    def seq_node(self, meta, c):
        return ast.Seq(c[0], self._span(meta), c[1])

    @v_args(meta=True)
    def for_node(self, meta, c):
        return ast.For(c[0], c[1], c[2], self._span(meta))

    def targets(self, c):
        return tuple(str(t) for t in c)

    @v_args(meta=True)
    def residual_node(self, meta, c):
        cond, body, short = c
        if short is None:
            return ast.Residual(body, None, None, self._span(meta), None, cond)
        scond, sbody, sspan = short
        return ast.Residual(body, sbody, scond, self._span(meta), sspan, cond)

    def residual_if(self, c):
        return c[0]

    @v_args(meta=True)
    def shortcut(self, meta, c):
        return (c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def concat_node(self, meta, c):
        return ast.Concat(c[1] or (), c[2], self._span(meta))

    @v_args(meta=True)
    def gate_node(self, meta, c):
        return ast.Gate(c[0], self._span(meta))

    @v_args(meta=True)
    def pass_node(self, meta, c):
        return ast.Pass(self._span(meta))

    @v_args(meta=True)
    def from_node(self, meta, c):
        e = c[0]
        if isinstance(e, ast.Literal) and isinstance(e.value, str):  # `from "skip{i}"`: a tap (template)
            return ast.From(ast.Label(e.value, True, e.span), self._span(meta))
        if isinstance(e, ast.Name):  # a tap, or else a named tensor
            return ast.From(ast.Label(e.id, False, e.span), self._span(meta), e)
        return ast.From(None, self._span(meta), e)

    @v_args(meta=True)
    def tap_stmt(self, meta, c):
        return ast.Tap(c[0], self._span(meta))

    @v_args(meta=True)
    def register_stmt(self, meta, c):
        return ast.Register(tuple(x for x in c if x is not None), self._span(meta))

    @v_args(meta=True)
    def if_stmt(self, meta, c):
        branches = [(c[0], c[1])]
        rest = c[2:]
        otherwise = rest[-1] if rest else None
        for e in rest[:-1]:
            branches.append(e)
        return ast.If(tuple(branches), otherwise, self._span(meta))

    def elif_clause(self, c):
        return (c[0], c[1])

    # -------------------------------------------------------------- expressions
    @v_args(meta=True)
    def conditional(self, meta, c):
        return ast.IfExpr(c[0], c[1], c[2], self._span(meta))

    @v_args(meta=True)
    def or_op(self, meta, c):
        return ast.BinOp("or", c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def and_op(self, meta, c):
        return ast.BinOp("and", c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def not_op(self, meta, c):
        return ast.UnaryOp("not", c[0], self._span(meta))

    @v_args(meta=True)
    def compare(self, meta, c):
        return ast.BinOp(str(c[1]), c[0], c[2], self._span(meta))

    @v_args(meta=True)
    def binop(self, meta, c):
        return ast.BinOp(str(c[1]), c[0], c[2], self._span(meta))

    @v_args(meta=True)
    def unary(self, meta, c):
        return ast.UnaryOp(str(c[0]), c[1], self._span(meta))

    @v_args(meta=True)
    def index(self, meta, c):
        return ast.Index(c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def attr(self, meta, c):
        return ast.Attr(c[0], str(c[1]), self._span(meta))

    @v_args(meta=True)
    def int_lit(self, meta, c):
        cap = limits.current().limits.literal_digits
        if len(c[0]) > cap:
            raise SpecError([Diagnostic(f"integer literal of {len(c[0])} digits is too long (at most "
                                        f"{cap}: the `literal_digits` budget)", self._span(meta), "too many digits",
                                        help="no tensor dimension or count needs more than 19 digits")])
        return ast.Literal(int(c[0]), self._span(meta))

    @v_args(meta=True)
    def float_lit(self, meta, c):
        if len(c[0]) > MAX_LITERAL_DIGITS:
            raise SpecError([Diagnostic(f"number literal of {len(c[0])} characters is too long (at most "
                                        f"{MAX_LITERAL_DIGITS})", self._span(meta), "too long")])
        return ast.Literal(float(c[0]), self._span(meta))

    @v_args(meta=True)
    def str_lit(self, meta, c):
        return ast.Literal(_unescape(c[0]), self._span(meta))

    @v_args(meta=True)
    def true_lit(self, meta, c):
        return ast.Literal(True, self._span(meta))

    @v_args(meta=True)
    def false_lit(self, meta, c):
        return ast.Literal(False, self._span(meta))

    @v_args(meta=True)
    def none_lit(self, meta, c):
        return ast.Literal(None, self._span(meta))

    @v_args(meta=True)
    def name(self, meta, c):
        return ast.Name(str(c[0]), self._span(meta))

    @v_args(meta=True)
    def in_shape(self, meta, c):
        return ast.InShape(self._span(meta))

    @v_args(meta=True)
    def list(self, meta, c):
        return ast.ListExpr(tuple(x for x in c if x is not None), self._span(meta))

    @v_args(meta=True)
    def list_comp(self, meta, c):
        return ast.ListComp(c[0], c[1], c[2], c[3], self._span(meta))

    @v_args(meta=True)
    def dict(self, meta, c):
        return ast.DictExpr(tuple(p for p in c if p is not None), self._span(meta))

    def pair(self, c):
        return (c[0], c[1])

    @v_args(meta=True)
    def call(self, meta, c):
        return ast.Call(str(c[0]), c[1] or (), self._span(meta), self._tspan(c[0]), c[2])

    @v_args(meta=True)
    def concat_call(self, meta, c):
        """`concat([a, b], dim)` in an expression: the tensor function (the statement form has a body)."""
        return ast.Call("concat", c[1] or (), self._span(meta), self._tspan(c[0]), None)

    def call_inputs(self, c):
        return c[0] or ()

    def args(self, c):
        return tuple(c)

    @v_args(meta=True)
    def arg(self, meta, c):
        return ast.Arg(None, c[0], self._span(meta))

    @v_args(meta=True)
    def kwarg(self, meta, c):
        return ast.Arg(str(c[0]), c[1], self._span(meta))


_CLOSERS = {")": "(", "]": "[", "}": "{"}


def _unclosed_delimiter(text: str):
    """(char, line, column) of the bracket most likely left unclosed at the end of ``text``, or None.

    Brackets are matched as usual, except that a closer starting its own line is matched
    with the innermost opener on a line of the same indentation: the openers skipped over
    are the unclosed ones (the layout shows which block the user meant to close).
    """
    stack: list[tuple[str, int, int, int]] = []  # (char, line, col, indent of its line)
    skipped: list[tuple[str, int, int, int]] = []
    lines = text.split("\n")
    for lineno, line in enumerate(lines, 1):
        indent = len(line) - len(line.lstrip(" \t"))
        i = 0
        while i < len(line):
            ch = line[i]
            if ch == "#":
                break
            if ch == '"':
                i += 1
                while i < len(line) and line[i] != '"':
                    i += 2 if line[i] == "\\" else 1
            elif ch in "([{":
                stack.append((ch, lineno, i + 1, indent))
            elif ch in _CLOSERS:
                match = len(stack) - 1
                if i == indent:  # the closer starts its line
                    for k in range(len(stack) - 1, -1, -1):
                        if stack[k][0] == _CLOSERS[ch] and stack[k][3] == indent:
                            match = k
                            break
                if match >= 0 and stack[match][0] == _CLOSERS[ch]:
                    skipped.extend(stack[match + 1:])
                    del stack[match:]
                elif stack:
                    stack.pop()
            i += 1
    unclosed = skipped + stack
    if not unclosed:
        return None
    ch, line, col, _ = max(unclosed, key=lambda t: (t[1], t[2]))
    return ch, line, col


def _syntax_diagnostic(err: UnexpectedInput, source: Source) -> Diagnostic:
    line, col = max(err.line, 1), max(err.column, 1)
    at_end = isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END")
    if at_end:
        lines = source.text.split("\n")  # lines as the lexer counts them (at "\n" only)
        if len(lines) > 1 and lines[-1] == "":
            lines.pop()
        lines = [ln.rstrip("\r") for ln in lines]
        line = len(lines)
        col = len(lines[-1]) + 1
    length = 1
    found = "end of file"
    if isinstance(err, UnexpectedToken) and err.token.type != "$END":
        length = max(len(str(err.token)), 1)
        found = f"`{err.token}`"
    elif isinstance(err, UnexpectedCharacters):
        found = f"`{source.text[err.pos_in_stream]}`"
    span = Span(source, line, col, line, col + length)
    expected = expected_terminals(err)
    if isinstance(err, UnexpectedCharacters):
        if found == '`"`':
            return Diagnostic("unterminated string", Span(source, line, col, line, len(source.line(line)) + 1),
                              "this string has no closing `\"`", help="a string must end on the line it starts")
        return Diagnostic(f"unexpected character {found}", span, "not valid here",
                          help=f"expected {expected_words(expected)}" if expected else None)
    label = f"expected {expected_words(expected)}"
    help_text, notes = None, ()
    if isinstance(err, UnexpectedToken) and str(err.token) in KEYWORDS and "NAME" in expected:
        help_text = f"`{err.token}` is a keyword and cannot be used as a name"
    elif isinstance(err, UnexpectedToken) and str(err.token) in (":", "=", "("):
        # the word before the token, from a bounded tail: a `\w+\s*$` search over the whole prefix
        # backtracks quadratically on a long run of word characters (a 100,000-character comment)
        run = re.search(r"[A-Za-z_0-9]*\Z", source.text[:err.token.start_pos].rstrip()[-64:]).group(0)
        word = run.lstrip("0123456789") if len(run) < 64 else ""
        if word in KEYWORDS:
            help_text = f"`{word}` is a keyword and cannot be used as a name"
            if str(err.token) == ":":
                help_text += f"; a module can still be named `{word}` with a string label: `\"{word}\": ...`"
        elif word in STATEMENT_KEYWORDS:
            help_text = (f"`{word}` at the start of a statement lists children (`{word} a, b`): a name used "
                         f"there must be another one")
            if str(err.token) == ":":
                help_text += f", or a string label: `\"{word}\": ...`"
    if at_end:
        unclosed = _unclosed_delimiter(source.text)
        if unclosed is not None:
            ch, uline, ucol = unclosed
            closer = {v: k for k, v in _CLOSERS.items()}[ch]
            if {"(": "RPAR", "[": "RSQB", "{": "RBRACE"}[ch] in expected:
                label = f"expected `{closer}`"
            notes = (f"the `{ch}` opened at {source.name}:{uline}:{ucol} is never closed",)
    return Diagnostic(f"syntax error: unexpected {found}", span, label, help=help_text, notes=notes)


def _keyword_names(tree, source: Source) -> list[Diagnostic]:
    """Keywords are reserved: where the parser could only read a name, the lexer lets a keyword
    through as a NAME token (``let in = 3``, ``block B(if: int)``); reject those here."""
    labels = {id(t) for tree_ in tree.find_data("label") for t in tree_.children}
    taps = {id(t) for tap in tree.find_data("tap_stmt") for lab in tap.children if hasattr(lab, "children")
            for t in lab.children}

    def help_for(tok):
        if id(tok) in taps:  # `tap NAME` names a saved tensor, not a module
            return (f"`{tok}` is a keyword: give the tap another name, e.g. `tap {tok}_x` and `from {tok}_x` "
                    f"(or quote it: `tap \"{tok}\"`, read back with `from \"{tok}\"`)")
        if id(tok) in labels:  # a module can still have this name, given as a string label
            return f"choose another name, or quote the label to name a module `{tok}`: `\"{tok}\": ...`"
        return "choose another name"

    return [Diagnostic(f"`{tok}` is a keyword and cannot be used as a name",
                       Span(source, tok.line, tok.column, tok.end_line, tok.end_column), "reserved word",
                       help=help_for(tok))
            for tok in tree.scan_values(lambda v: isinstance(v, Token) and v.type == "NAME" and v in KEYWORDS)]


#: the deepest parse tree accepted (the zoo's deepest is 26 levels): deeper nesting (thousands of
#: brackets, or `1 + 1 + ...` thousands of terms long) would exhaust Python's stack later
MAX_TREE_DEPTH = 200


def _too_deep(tree, source: Source) -> Diagnostic | None:
    """A located error at the outermost construct whose nesting passes :data:`MAX_TREE_DEPTH`, or None."""
    from lark import Tree
    cap = limits.current().limits.tree_depth
    stack = [(tree, 1, None)]
    while stack:
        node, depth, outer = stack.pop()
        if not isinstance(node, Tree):
            continue
        meta = node.meta if not getattr(node.meta, "empty", True) else None
        if outer is None and depth > 20 and meta is not None:
            outer = meta  # the outermost construct of a deep path (reported if the path gets too deep)
        if depth > cap:
            at = outer or meta
            span = Span(source, at.line, at.column, at.line, at.column + 1) if at is not None else \
                Span(source, 1, 1, 1, 2)
            return Diagnostic(f"this nests more than {cap} levels deep (the `tree_depth` budget)", span,
                              "nested too deeply",
                              help="split a long expression with `let`, or a deep nesting with a `for` loop or "
                                   "a block")
        stack.extend((c, depth + 1, outer) for c in node.children)
    return None


def parse(text: str, name: str = "<string>") -> ast.Module:
    """Parse spec text into an :class:`ast.Module`; raises SpecError on a syntax error."""
    source = Source(name, text)
    _LEXING.text = text
    try:
        tree = lark_parser().parse(text)
    except UnexpectedInput as err:
        raise SpecError([_syntax_diagnostic(err, source)]) from None
    except _GluedKeyword as glued:
        tok = glued.token
        word = re.match(r"[A-Za-z_0-9]*", text[tok.start_pos:]).group(0)
        raise SpecError([Diagnostic(f"syntax error: unexpected `{word}`",
                                    Span(source, tok.line, tok.column, tok.line, tok.column + len(word)),
                                    "expected a keyword here",
                                    help=f"did you mean `{tok} {word[len(tok):]}`?")]) from None
    except RecursionError:  # thousands of operators in one expression: point at the densest line
        lines = text.split("\n")
        dense = max(range(len(lines)), key=lambda i: sum(lines[i].count(c) for c in "+-*/%@([{<>=,"))
        raise SpecError([Diagnostic(f"this line nests too deeply to parse (more than {MAX_TREE_DEPTH} levels)",
                                    Span(source, dense + 1, 1, dense + 1, max(len(lines[dense]), 1) + 1),
                                    "nested too deeply",
                                    help="split a long expression with `let`, or a deep nesting with a `for` "
                                         "loop or a block")]) from None
    finally:
        _LEXING.text = None
    too_deep = _too_deep(tree, source)  # first: the checks below and the transformer recurse over the tree
    if too_deep is not None:
        raise SpecError([too_deep])
    reserved = _keyword_names(tree, source)
    if reserved:
        raise SpecError(reserved)
    try:
        return _ToAst(source).transform(tree)
    except VisitError as err:  # a located error from a literal (too many digits), or a transformer bug
        raise err.orig_exc from None


def parse_expression(text: str, span: Span) -> ast.Expr:
    """Parse an expression inside a string template (``"layer{i + 1}"``) or a ``--set`` value."""
    wrapped = f"let _ = {text}"
    source = Source(span.source.name, wrapped)
    try:
        tree = lark_parser().parse(wrapped)
    except UnexpectedInput as err:
        raise SpecError([Diagnostic(f"invalid expression `{text}`", span,
                                    f"expected {expected_words(expected_terminals(err))}")]) from None
    too_deep = _too_deep(tree, source)
    try:
        if too_deep is not None:
            raise SpecError([too_deep])
        module = _ToAst(source).transform(tree)
    except (VisitError, SpecError) as err:
        # errors located in the wrapped text (a literal with too many digits, too deep a nesting):
        # point at the template or value the expression came from
        found = err.orig_exc if isinstance(err, VisitError) else err
        if not isinstance(found, SpecError):
            raise found from None
        raise SpecError([dataclasses.replace(d, span=span) for d in found.diagnostics]) from None
    if len(module.items) != 1 or not isinstance(module.items[0], ast.Let):
        raise SpecError([Diagnostic(f"invalid expression `{text}`", span)])
    return _respan(module.items[0].value, span)


def _respan(expr, span: Span):
    """Give every node of an expression parsed out of context the span of its container."""
    import dataclasses
    if isinstance(expr, tuple):
        return tuple(_respan(e, span) for e in expr)
    if not dataclasses.is_dataclass(expr):
        return expr
    changes = {}
    for f in dataclasses.fields(expr):
        v = getattr(expr, f.name)
        if isinstance(v, Span):
            changes[f.name] = span
        elif dataclasses.is_dataclass(v) or isinstance(v, tuple):
            changes[f.name] = _respan(v, span)
    return dataclasses.replace(expr, **changes)
