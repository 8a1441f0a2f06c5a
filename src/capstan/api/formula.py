"""The scalingModifiers formula language: a small, safe expression evaluator.

KEDA compiles ``advanced.scalingModifiers.formula`` with the expr language; Capstan implements the
subset that formulas use, with a tokenizer and a Pratt parser over a small AST. Nothing here calls
Python's ``eval``. A formula is compiled once (``compile_formula``) and evaluated many times
(``Formula.evaluate``) against a map of trigger names to values, where ``None`` stands for a
trigger with no value (its scaler failed).

It lives in ``capstan.api`` (not ``capstan.core``) because the ScaledObject model validates that a
formula compiles, and ``api`` may not import ``core``; ``capstan.core.autoscaling.expression``
re-exports it.

Grammar, loosest binding first (the same precedence as expr):

====================  =====================================================
``c ? a : b``         ternary (right-associative); ``c`` must be a boolean
``||``  ``or``        logical or (short-circuit)
``&&``  ``and``       logical and (short-circuit)
``== != < <= > >=``   comparisons
``+ -``               addition, subtraction
``* / %``             multiplication, division, remainder
``!`` ``not``         logical not (prefix)
``-`` ``+``           sign (prefix)
``??``                null-coalescing: ``a ?? b`` is ``a`` unless it is nil
====================  =====================================================

Operands: numbers (``10``, ``0.5``, ``1e3``), trigger names, ``true``, ``false``, ``nil``,
parentheses, calls of ``min``, ``max``, ``abs``, ``ceil``, ``floor``, ``round``, ``float``, ``int``
and ``count``, and, as in expr, arrays ``[a, b]`` and predicates ``{# > 1}`` for
``count([a, b, c], {# > 1})``. ``count(a, b, ...)`` counts the arguments that are not nil.

Division by zero follows floating point (``1 / 0`` is +Inf, ``0 / 0`` is NaN) like expr;
KEDA then reports such a composite value as 0. Every other problem raises ``FormulaError``
(``FormulaSyntaxError`` when compiling, ``FormulaEvalError`` when evaluating) whose ``position``
is the 0-based offset in the formula text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

Value: TypeAlias = float | bool | tuple["Value", ...] | None
"""What an expression produces: a number, a boolean, nil, or an array."""

MAX_DEPTH = 100
"""Deepest expression tree accepted; deeper ones are rejected instead of exhausting the stack."""

MAX_LENGTH = 10_000


class FormulaError(ValueError):
    """A formula that does not compile or cannot be evaluated; ``position`` is a 0-based offset."""

    def __init__(self, message: str, position: int) -> None:
        self.message = message
        self.position = position
        super().__init__(f"{message} at position {position}")


class FormulaSyntaxError(FormulaError):
    """The formula text is not a valid expression."""


class FormulaEvalError(FormulaError):
    """The formula is valid but failed on the given values (type error, nil operand, ...)."""


# ---- tokens ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str  # "num", "name", "op", "end"
    text: str
    position: int


_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = ("??", "&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "?", ":",
              "(", ")", "[", "]", "{", "}", ",", "#")


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; raise FormulaSyntaxError at the first character that fits none."""
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char.isspace():
            index += 1
            continue
        number = _NUMBER.match(text, index)
        if number and char in "0123456789.":
            tokens.append(Token("num", number.group(0), index))
            index = number.end()
            continue
        name = _NAME.match(text, index)
        if name:
            tokens.append(Token("name", name.group(0), index))
            index = name.end()
            continue
        operator = next((op for op in _OPERATORS if text.startswith(op, index)), None)
        if operator is None:
            raise FormulaSyntaxError(f"unexpected character {char!r}", index)
        tokens.append(Token("op", operator, index))
        index += len(operator)
    tokens.append(Token("end", "", len(text)))
    return tokens


# ---- syntax tree ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    position: int
    depth: int


@dataclass(frozen=True)
class Literal(Node):
    value: Value


@dataclass(frozen=True)
class Variable(Node):
    name: str


@dataclass(frozen=True)
class Placeholder(Node):
    """``#``: the element under test inside a predicate ``{...}``."""


@dataclass(frozen=True)
class Unary(Node):
    operator: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    operator: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Conditional(Node):
    condition: Node
    then: Node
    otherwise: Node


@dataclass(frozen=True)
class Call(Node):
    function: str
    arguments: tuple[Node, ...]


@dataclass(frozen=True)
class ArrayLiteral(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Predicate(Node):
    body: Node


def _depth(*children: Node) -> int:
    return 1 + max((child.depth for child in children), default=0)


# ---- parser ---------------------------------------------------------------------------------------

_KEYWORD_OPERATORS = {"and": "&&", "or": "||", "not": "!"}
_BINARY_POWER = {
    "||": 10, "&&": 15,
    "==": 20, "!=": 20, "<": 20, "<=": 20, ">": 20, ">=": 20,
    "+": 30, "-": 30,
    "*": 60, "/": 60, "%": 60,
    "??": 500,
}
_TERNARY_POWER = 5
_NOT_POWER = 50
_SIGN_POWER = 90
_FUNCTION_ARITY: dict[str, tuple[int, int | None]] = {
    "min": (1, None), "max": (1, None), "abs": (1, 1), "ceil": (1, 1), "floor": (1, 1),
    "round": (1, 1), "float": (1, 1), "int": (1, 1), "count": (1, None),
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0
        self.nesting = 0
        self.in_predicate = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def operator(self, token: Token) -> str | None:
        if token.kind == "op":
            return token.text
        if token.kind == "name" and token.text in _KEYWORD_OPERATORS:
            return _KEYWORD_OPERATORS[token.text]
        return None

    def expect(self, text: str, what: str) -> Token:
        token = self.current
        if token.kind == "op" and token.text == text:
            return self.advance()
        raise FormulaSyntaxError(f"expected {what}, found {_describe(token)}", token.position)

    def parse(self) -> Node:
        if self.current.kind == "end":
            raise FormulaSyntaxError("the formula is empty", 0)
        node = self.expression(0)
        if self.current.kind != "end":
            raise FormulaSyntaxError(f"unexpected {_describe(self.current)}", self.current.position)
        return node

    def expression(self, min_power: int) -> Node:
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise FormulaSyntaxError(f"the formula is nested deeper than {MAX_DEPTH} levels",
                                     self.current.position)
        try:
            left = self.prefix()
            while True:
                token = self.current
                operator = self.operator(token)
                if operator == "?" and min_power <= _TERNARY_POWER:
                    left = self.ternary(left)
                    continue
                power = _BINARY_POWER.get(operator or "")
                if power is None or power <= min_power:
                    return left
                self.advance()
                right = self.expression(power)
                left = _checked(Binary(token.position, _depth(left, right), operator or "", left, right))
        finally:
            self.nesting -= 1

    def ternary(self, condition: Node) -> Node:
        question = self.advance()
        then = self.expression(0)
        self.expect(":", "':' of the ternary 'condition ? a : b'")
        otherwise = self.expression(_TERNARY_POWER - 1)
        return _checked(Conditional(question.position, _depth(condition, then, otherwise),
                                    condition, then, otherwise))

    def prefix(self) -> Node:
        token = self.advance()
        operator = self.operator(token)
        if token.kind == "num":
            return Literal(token.position, 1, float(token.text))
        if token.kind == "name" and operator is None:
            return self.name(token)
        if operator in ("!", "-", "+"):
            operand = self.expression(_NOT_POWER if operator == "!" else _SIGN_POWER)
            return _checked(Unary(token.position, _depth(operand), operator, operand))
        if operator == "(":
            inner = self.expression(0)
            self.expect(")", "')'")
            return inner
        if operator == "[":
            items = self.items("]")
            return _checked(ArrayLiteral(token.position, _depth(*items), items))
        if operator == "{":
            self.in_predicate += 1
            body = self.expression(0)
            self.in_predicate -= 1
            self.expect("}", "'}' closing the predicate")
            return _checked(Predicate(token.position, _depth(body), body))
        if operator == "#":
            if not self.in_predicate:
                raise FormulaSyntaxError("'#' is only allowed inside a predicate {...}", token.position)
            return Placeholder(token.position, 1)
        if token.kind == "end":
            raise FormulaSyntaxError("the formula ends where an operand was expected", token.position)
        raise FormulaSyntaxError(f"expected an operand, found {_describe(token)}", token.position)

    def name(self, token: Token) -> Node:
        word = token.text
        if word in ("true", "false"):
            return Literal(token.position, 1, word == "true")
        if word in ("nil", "null"):
            return Literal(token.position, 1, None)
        if not (self.current.kind == "op" and self.current.text == "("):
            return Variable(token.position, 1, word)
        if word not in _FUNCTION_ARITY:
            known = ", ".join(sorted(_FUNCTION_ARITY))
            raise FormulaSyntaxError(f"unknown function {word!r} (known: {known})", token.position)
        self.advance()
        arguments = self.items(")")
        low, high = _FUNCTION_ARITY[word]
        if len(arguments) < low or (high is not None and len(arguments) > high):
            expected = str(low) if high == low else f"at least {low}"
            raise FormulaSyntaxError(
                f"{word}() takes {expected} argument{'s' if expected != '1' else ''}, got {len(arguments)}",
                token.position)
        return _checked(Call(token.position, _depth(*arguments), word, arguments))

    def items(self, closing: str) -> tuple[Node, ...]:
        items: list[Node] = []
        if self.current.kind == "op" and self.current.text == closing:
            self.advance()
            return ()
        while True:
            items.append(self.expression(0))
            if self.current.kind == "op" and self.current.text == ",":
                self.advance()
                continue
            self.expect(closing, f"',' or {closing!r}")
            return tuple(items)


def _checked(node: Node) -> Node:
    if node.depth > MAX_DEPTH:
        raise FormulaSyntaxError(f"the formula is nested deeper than {MAX_DEPTH} levels", node.position)
    return node


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "the end of the formula"
    if token.kind == "num":
        return f"number {token.text}"
    if token.kind == "name":
        return f"name {token.text!r}"
    return f"{token.text!r}"


# ---- evaluation -----------------------------------------------------------------------------------

def _type_name(value: Value) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, tuple):
        return "an array"
    return "a number"


def _number(value: Value, node: Node, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, float):
        hint = " (a trigger without a value? use ?? to supply a default)" if value is None else ""
        raise FormulaEvalError(f"{what} must be a number, got {_type_name(value)}{hint}", node.position)
    return value


def _boolean(value: Value, node: Node, what: str) -> bool:
    if not isinstance(value, bool):
        raise FormulaEvalError(f"{what} must be a boolean, got {_type_name(value)}", node.position)
    return value


def _divide(left: float, right: float) -> float:
    if right != 0:
        return left / right
    if left == 0 or math.isnan(left):
        return math.nan
    return math.copysign(math.inf, left) * math.copysign(1.0, right)


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
}
_COMPARISON: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


class _Evaluator:
    def __init__(self, env: Mapping[str, float | None]) -> None:
        self.env = env
        self.element: list[Value] = []

    def eval(self, node: Node) -> Value:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Variable):
            return self.variable(node)
        if isinstance(node, Placeholder):
            return self.element[-1]
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Conditional):
            chosen = node.then if _boolean(self.eval(node.condition), node.condition, "the condition") \
                else node.otherwise
            return self.eval(chosen)
        if isinstance(node, ArrayLiteral):
            return tuple(self.eval(item) for item in node.items)
        if isinstance(node, Call):
            return self.call(node)
        raise FormulaEvalError("a predicate {...} can only be the second argument of count()", node.position)

    def variable(self, node: Variable) -> Value:
        if node.name not in self.env:
            raise FormulaEvalError(f"unknown name {node.name!r}", node.position)
        value = self.env[node.name]
        return None if value is None else float(value)

    def unary(self, node: Unary) -> Value:
        operand = self.eval(node.operand)
        if node.operator == "!":
            return not _boolean(operand, node.operand, "the operand of '!'")
        number = _number(operand, node.operand, f"the operand of unary '{node.operator}'")
        return -number if node.operator == "-" else number

    def binary(self, node: Binary) -> Value:
        operator = node.operator
        if operator == "??":
            left = self.eval(node.left)
            return self.eval(node.right) if left is None else left
        if operator in ("&&", "||"):
            left_bool = _boolean(self.eval(node.left), node.left, f"the left side of '{operator}'")
            if left_bool == (operator == "||"):
                return left_bool
            return _boolean(self.eval(node.right), node.right, f"the right side of '{operator}'")
        left, right = self.eval(node.left), self.eval(node.right)
        if operator in ("==", "!="):
            equal = left == right and isinstance(left, bool) == isinstance(right, bool)
            return equal if operator == "==" else not equal
        a = _number(left, node.left, f"the left side of '{operator}'")
        b = _number(right, node.right, f"the right side of '{operator}'")
        if operator in _COMPARISON:
            return _COMPARISON[operator](a, b)
        if operator == "%":
            if b == 0:
                raise FormulaEvalError("remainder by zero", node.position)
            return math.fmod(a, b) if math.isfinite(a) else math.nan
        return _ARITHMETIC[operator](a, b)

    def call(self, node: Call) -> Value:
        if node.function == "count":
            return self.count(node)
        values = [self.eval(argument) for argument in node.arguments]
        if node.function in ("min", "max"):
            if len(values) == 1 and isinstance(values[0], tuple):
                values = list(values[0])
                if not values:
                    raise FormulaEvalError(f"{node.function}() of an empty array", node.position)
            numbers = [_number(v, node, f"argument {i + 1} of {node.function}()") for i, v in enumerate(values)]
            return min(numbers) if node.function == "min" else max(numbers)
        number = _number(values[0], node.arguments[0], f"the argument of {node.function}()")
        return self.rounding(node, number)

    def rounding(self, node: Call, number: float) -> float:
        if node.function in ("abs", "float"):
            return abs(number) if node.function == "abs" else number
        if math.isinf(number) or math.isnan(number):
            if node.function == "int":
                raise FormulaEvalError(f"int() of {number}", node.position)
            return number
        if node.function == "ceil":
            return float(math.ceil(number))
        if node.function == "floor":
            return float(math.floor(number))
        if node.function == "round":
            return float(math.floor(number + 0.5)) if number >= 0 else -float(math.floor(-number + 0.5))
        return float(math.trunc(number))

    def count(self, node: Call) -> float:
        arguments = node.arguments
        if len(arguments) == 2 and isinstance(arguments[1], Predicate):
            items = self.eval(arguments[0])
            if not isinstance(items, tuple):
                raise FormulaEvalError(f"count() with a predicate needs an array, got {_type_name(items)}",
                                       arguments[0].position)
            return float(sum(1 for item in items if self.holds(arguments[1], item)))
        values = [self.eval(argument) for argument in arguments]
        if len(values) == 1 and isinstance(values[0], tuple):
            values = list(values[0])
        return float(sum(1 for value in values if value is not None))

    def holds(self, predicate: Predicate, item: Value) -> bool:
        self.element.append(item)
        try:
            return _boolean(self.eval(predicate.body), predicate.body, "a count() predicate")
        finally:
            self.element.pop()


# ---- public API -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Formula:
    """A compiled formula: evaluate it as often as needed."""

    text: str
    root: Node
    names: frozenset[str]

    def evaluate(self, env: Mapping[str, float | None]) -> Value:
        """The value of the formula with ``env`` mapping names to numbers (``None``: no value)."""
        try:
            return _Evaluator(env).eval(self.root)
        except RecursionError as exc:  # pragma: no cover - MAX_DEPTH keeps trees shallow
            raise FormulaEvalError("the formula is too deeply nested", 0) from exc

    def evaluate_number(self, env: Mapping[str, float | None]) -> float | None:
        """The value as a number, or ``None`` when the formula produced nil; anything else is an error."""
        result = self.evaluate(env)
        if result is None:
            return None
        if isinstance(result, bool) or not isinstance(result, float):
            raise FormulaEvalError(f"the formula must produce a number, got {_type_name(result)}", 0)
        return result


def _collect_names(node: Node, into: set[str], positions: dict[str, int]) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Variable):
            into.add(current.name)
            positions.setdefault(current.name, current.position)
            positions[current.name] = min(positions[current.name], current.position)
        elif isinstance(current, Unary):
            stack.append(current.operand)
        elif isinstance(current, Binary):
            stack += [current.left, current.right]
        elif isinstance(current, Conditional):
            stack += [current.condition, current.then, current.otherwise]
        elif isinstance(current, Call):
            stack += list(current.arguments)
        elif isinstance(current, ArrayLiteral):
            stack += list(current.items)
        elif isinstance(current, Predicate):
            stack.append(current.body)


def compile_formula(text: str, known_names: Iterable[str] | None = None) -> Formula:
    """Parse ``text`` once. With ``known_names``, a name outside it is a FormulaSyntaxError."""
    if not isinstance(text, str):
        raise FormulaSyntaxError("the formula must be a string", 0)
    if len(text) > MAX_LENGTH:
        raise FormulaSyntaxError(f"the formula is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    try:
        root = _Parser(text).parse()
    except RecursionError as exc:  # pragma: no cover - MAX_DEPTH keeps the parser shallow
        raise FormulaSyntaxError("the formula is too deeply nested", 0) from exc
    _check_predicates(root)
    names: set[str] = set()
    positions: dict[str, int] = {}
    _collect_names(root, names, positions)
    if known_names is not None:
        allowed = set(known_names)
        unknown = sorted((name for name in names if name not in allowed), key=lambda n: positions[n])
        if unknown:
            listed = ", ".join(sorted(allowed)) or "none"
            raise FormulaSyntaxError(
                f"unknown trigger name {unknown[0]!r} (the formula can use: {listed})", positions[unknown[0]])
    return Formula(text=text, root=root, names=frozenset(names))


def _check_predicates(root: Node) -> None:
    """A predicate ``{...}`` is only meaningful as the second argument of ``count``."""
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, allowed = stack.pop()
        if isinstance(node, Predicate):
            if not allowed:
                raise FormulaSyntaxError("a predicate {...} can only be the second argument of count()",
                                         node.position)
            stack.append((node.body, False))
        elif isinstance(node, Unary):
            stack.append((node.operand, False))
        elif isinstance(node, Binary):
            stack += [(node.left, False), (node.right, False)]
        elif isinstance(node, Conditional):
            stack += [(node.condition, False), (node.then, False), (node.otherwise, False)]
        elif isinstance(node, Call):
            for index, argument in enumerate(node.arguments):
                stack.append((argument, node.function == "count" and index == 1 and len(node.arguments) == 2))
        elif isinstance(node, ArrayLiteral):
            stack += [(item, False) for item in node.items]
