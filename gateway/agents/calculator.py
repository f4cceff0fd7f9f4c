"""Safe arithmetic for the `calculator` tool: an AST walk over numbers and operators only.

Never `eval`: the expression is parsed with `ast` and only numeric literals, + - * / // % **,
unary signs and parentheses are evaluated. Sizes are bounded so an expression cannot make the
gateway spend unbounded CPU or memory (`9**9**9` is refused).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

MAX_EXPRESSION_CHARS = 256
MAX_EXPONENT = 1_000
MAX_MAGNITUDE = 1e300

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


class CalculatorError(ValueError):
    """The expression is not plain arithmetic, or its value is out of bounds."""


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression such as `2 + 3 * (4 - 1) ** 2`."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculatorError("not an arithmetic expression") from exc
    return _eval(tree.body)


def _eval(node: ast.expr) -> int | float:
    # `type(...) is` excludes bool, which is an int subclass.
    if isinstance(node, ast.Constant) and (type(node.value) is int or type(node.value) is float):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _bounded(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or abs(left) > 1e6):
            raise CalculatorError("exponent too large")
        try:
            return _bounded(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError as exc:
            raise CalculatorError("division by zero") from exc
        except OverflowError as exc:
            raise CalculatorError("result too large") from exc
    raise CalculatorError("only numbers, + - * / // % ** and parentheses are allowed")


def _bounded(value: int | float) -> int | float:
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        raise CalculatorError("result is not a finite real number")
    if abs(value) > MAX_MAGNITUDE:
        raise CalculatorError("result too large")
    return value
