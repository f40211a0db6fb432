"""`calculator`: arithmetic without `eval`.

The expression is parsed with `ast` and walked over an allow-list: numbers, `+ - * / // % **`,
unary `+ -`, parentheses, a few `math` functions and the constants `pi` and `e`. Everything
else is refused with "not allowed: <construct>". Denial of service is bounded: the input length,
the size of integer results (checked *before* a power or product is computed, so `9**9**9`
fails at once) and the nesting depth.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from agentic.agents.tools.base import tool

__all__ = ["CalculatorError", "calculator", "evaluate"]

MAX_EXPRESSION_CHARS = 1000
MAX_INT_BITS = 4096  # about 1233 decimal digits: far beyond any sensible answer

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "min": min,
    "max": max,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
_OPERATOR_SYMBOLS = {
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}
_CONSTRUCTS = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.Compare: "comparison",
    ast.BoolOp: "boolean operator",
    ast.IfExp: "conditional expression",
    ast.NamedExpr: "assignment expression",
    ast.JoinedStr: "f-string",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Dict: "dict",
    ast.Set: "set",
    ast.Starred: "starred expression",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slice",
}


class CalculatorError(ValueError):
    """The expression is invalid, not allowed, or too expensive; the message says which."""


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError("result too large")
    return value


def _guard(op: type[ast.operator], left: Number, right: Number) -> None:
    """Refuse integer operations whose result would exceed MAX_INT_BITS before computing it."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    if op is ast.Pow and right > 0 and abs(left) > 1:
        if right * (abs(left).bit_length() - 1) > MAX_INT_BITS:
            raise CalculatorError(f"result too large: {left} ** {right}")
    elif op is ast.Mult and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
        raise CalculatorError("result too large")


class _Evaluator:
    def visit(self, node: ast.AST) -> Number:
        if isinstance(node, ast.Expression):
            return self.visit(node.body)
        if isinstance(node, ast.Constant):
            # bool is an int subclass; strings, bytes, complex and None are not numbers here
            if type(node.value) in (int, float):
                return _check_int(node.value)
            raise CalculatorError(f"not allowed: constant {node.value!r}")
        if isinstance(node, ast.BinOp):
            op = type(node.op)
            if op not in _BINARY:
                raise CalculatorError(
                    f"not allowed: operator {_OPERATOR_SYMBOLS.get(op, op.__name__)}"
                )
            left, right = self.visit(node.left), self.visit(node.right)
            _guard(op, left, right)
            return _check_int(_BINARY[op](left, right))
        if isinstance(node, ast.UnaryOp):
            uop = type(node.op)
            if uop not in _UNARY:
                raise CalculatorError(
                    f"not allowed: operator {_OPERATOR_SYMBOLS.get(uop, uop.__name__)}"
                )
            return _UNARY[uop](self.visit(node.operand))
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            known = ", ".join(sorted(_CONSTANTS))
            raise CalculatorError(f"not allowed: name {node.id!r} (constants: {known})")
        if isinstance(node, ast.Call):
            return self._call(node)
        construct = _CONSTRUCTS.get(type(node), type(node).__name__)
        raise CalculatorError(f"not allowed: {construct}")

    def _call(self, node: ast.Call) -> Number:
        if not isinstance(node.func, ast.Name):
            raise CalculatorError("not allowed: calling anything but a named function")
        name = node.func.id
        if name not in _FUNCTIONS:
            known = ", ".join(sorted(_FUNCTIONS))
            raise CalculatorError(f"not allowed: function {name!r} (functions: {known})")
        if node.keywords:
            raise CalculatorError(f"not allowed: keyword arguments in {name}()")
        args = [self.visit(arg) for arg in node.args]
        try:
            return _check_int(_FUNCTIONS[name](*args))
        except TypeError as exc:
            raise CalculatorError(f"{name}(): {exc}") from exc
        except ValueError as exc:
            raise CalculatorError(f"{name}(): {exc}") from exc


def _format(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalculatorError("result is not a finite number")
        # 15 significant digits hide binary noise (0.1 + 0.2 -> 0.3) and keep real precision.
        return format(value, ".15g")
    raise CalculatorError(f"result is not a real number: {value!r}")


def evaluate(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result as text; raises CalculatorError."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(
            f"expression too long: {len(expression)} characters (limit {MAX_EXPRESSION_CHARS})"
        )
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"invalid expression: {exc.msg}") from exc
    except (RecursionError, MemoryError) as exc:
        raise CalculatorError("expression too deeply nested") from exc
    try:
        return _format(_Evaluator().visit(tree))
    except ZeroDivisionError as exc:
        raise CalculatorError("division by zero") from exc
    except OverflowError as exc:
        raise CalculatorError("result too large") from exc
    except RecursionError as exc:
        raise CalculatorError("expression too deeply nested") from exc


@tool(name="calculator", timeout_s=2.0)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (integers stay integers).

    Supports + - * / // % ** and parentheses, the functions sqrt, log, exp, sin, cos, tan,
    abs, round, floor, ceil, min, max, and the constants pi and e.

    Args:
        expression: The arithmetic expression, for example "(17 * 3 + 4) / 5" or "sqrt(2) * pi".
    """
    return evaluate(expression)
