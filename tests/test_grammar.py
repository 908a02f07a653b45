"""The grammar is LALR with no conflicts, and the parser attaches spans."""

from __future__ import annotations

from lark import Lark

from archdsl.syntax import ast
from archdsl.syntax.parser import grammar_text, parse


def test_grammar_builds_strict_lalr():
    Lark(grammar_text(), parser="lalr", strict=True)


def test_ast_nodes_carry_spans():
    module = parse('use "x.arch"\nblock B(c: int = 3) {\n  a: conv2d(c, 3)\n}\n', "t.arch")
    use, block = module.items
    assert isinstance(use, ast.Use) and use.span.location == "t.arch:1:1"
    stmt = block.body[0]
    assert isinstance(stmt, ast.Labelled) and stmt.span.location == "t.arch:3:3"
    assert stmt.node.args[0].value.span.location == "t.arch:3:13"
    assert block.params[0].type == "int"


def test_expressions_precedence():
    module = parse("let x = 1 + 2 * 3 ** 2 - -1\nlet y = if a and not b then [1, 2][0] else {\"k\": 1}[\"k\"]\n")
    x = module.items[0].value
    assert isinstance(x, ast.BinOp) and x.op == "-"
    assert isinstance(module.items[1].value, ast.IfExpr)


def test_shape_literal_and_comments():
    module = parse("# comment\nmodel m input 3 x 224x224 { relu() } # trailing\n")
    m = module.items[0]
    assert [i.value for i in m.input.items] == [3, 224, 224]
