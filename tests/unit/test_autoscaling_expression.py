"""The scalingModifiers formula evaluator: precedence, ternary, ??, functions, errors with positions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capstan.core.autoscaling.expression import (
    FormulaError,
    FormulaEvalError,
    FormulaSyntaxError,
    compile_formula,
)


@pytest.mark.parametrize(("formula", "env", "expected"), [
    ("1 + 2 * 3", {}, 7.0),
    ("(1 + 2) * 3", {}, 9.0),
    ("10 - 4 - 3", {}, 3.0),
    ("2 * 3 % 4", {}, 2.0),
    ("-2 * 3", {}, -6.0),
    ("(trig_one + trig_two) / 2", {"trig_one": 4, "trig_two": 6}, 5.0),
    ("trig_one > 2 ? trig_one + trig_two : 1", {"trig_one": 3, "trig_two": 1}, 4.0),
    ("trig_one > 2 ? trig_one + trig_two : 1", {"trig_one": 2, "trig_two": 1}, 1.0),
    ("a > 1 ? 10 : a > 0 ? 5 : 0", {"a": 0.5}, 5.0),
    ("best ?? slower ?? backup ?? 8", {"best": None, "slower": 3, "backup": 1}, 3.0),
    ("best ?? slower ?? backup ?? 8", {"best": None, "slower": None, "backup": None}, 8.0),
    ("a ?? 0 + 1", {"a": None}, 1.0),  # ?? binds tighter than +, as in expr
    ("a ?? 0 + 1", {"a": 5}, 6.0),
    ("1 < 2 && 3 > 4 || true", {}, True),
    ("!(a > 1) && not false", {"a": 0}, True),
    ("a == 2 and b != 2", {"a": 2, "b": 3}, True),
    ("min(a, b, 7)", {"a": 9, "b": 8}, 7.0),
    ("max([a, b])", {"a": 9, "b": 8}, 9.0),
    ("abs(-3.5) + ceil(0.2) + floor(1.9) + round(2.5)", {}, 3.5 + 1 + 1 + 3),
    ("int(7.9) + float(1)", {}, 8.0),
    ("count(a, b, c)", {"a": None, "b": 0, "c": 2}, 2.0),
    ("count([a, b, c], {# > 1})", {"a": 1, "b": 2, "c": 3}, 2.0),
    ("1e3 / .5", {}, 2000.0),
    ("nil ?? 4", {}, 4.0),
])
def test_evaluates(formula: str, env: dict[str, float | None], expected: object) -> None:
    assert compile_formula(formula).evaluate(env) == expected


def test_division_by_zero_follows_floating_point() -> None:
    assert compile_formula("a / 0").evaluate({"a": 1}) == math.inf
    assert math.isnan(compile_formula("0 / 0").evaluate_number({}) or 0.0)


def test_compile_once_evaluate_many() -> None:
    formula = compile_formula("queue / max(workers, 1)")
    assert formula.names == frozenset({"queue", "workers"})
    assert [formula.evaluate({"queue": q, "workers": 2}) for q in (0, 4, 10)] == [0.0, 2.0, 5.0]


@pytest.mark.parametrize(("formula", "message", "position"), [
    ("1 +", "the formula ends where an operand was expected", 3),
    ("a $ b", "unexpected character '$'", 2),
    ("a ? b", "expected ':' of the ternary 'condition ? a : b', found the end of the formula", 5),
    ("((1)", "expected ')', found the end of the formula", 4),
    ("foo(1)", "unknown function 'foo' (known: abs, ceil, count, float, floor, int, max, min, round)", 0),
    ("abs(1, 2)", "abs() takes 1 argument, got 2", 0),
    ("a b", "unexpected name 'b'", 2),
    ("", "the formula is empty", 0),
    ("# > 1", "'#' is only allowed inside a predicate {...}", 0),
    ("{1}", "a predicate {...} can only be the second argument of count()", 0),
    ("(" * 200 + "1" + ")" * 200, "the formula is nested deeper than 100 levels", 100),
])
def test_syntax_errors_name_the_position(formula: str, message: str, position: int) -> None:
    with pytest.raises(FormulaSyntaxError) as caught:
        compile_formula(formula)
    assert caught.value.message == message
    assert caught.value.position == position
    assert str(caught.value) == f"{message} at position {position}"


def test_unknown_trigger_names_are_rejected_when_names_are_known() -> None:
    with pytest.raises(FormulaSyntaxError) as caught:
        compile_formula("kafka + rabbit", known_names=["kafka", "redis"])
    assert str(caught.value) == "unknown trigger name 'rabbit' (the formula can use: kafka, redis) at position 8"


@pytest.mark.parametrize(("formula", "env", "message", "position"), [
    ("a + 1", {"a": None}, "the left side of '+' must be a number, got nil (a trigger without a value? use ?? to "
     "supply a default)", 0),
    ("a > 1 ? 1 : 2", {"a": None}, "the left side of '>' must be a number, got nil (a trigger without a value? use "
     "?? to supply a default)", 0),
    ("a ? 1 : 2", {"a": 1}, "the condition must be a boolean, got a number", 0),
    ("1 && true", {}, "the left side of '&&' must be a boolean, got a number", 0),
    ("x", {}, "unknown name 'x'", 0),
    ("5 % 0", {}, "remainder by zero", 2),
])
def test_evaluation_errors_name_the_position(formula: str, env: dict[str, float | None], message: str,
                                             position: int) -> None:
    with pytest.raises(FormulaEvalError) as caught:
        compile_formula(formula).evaluate(env)
    assert (caught.value.message, caught.value.position) == (message, position)


def test_a_boolean_is_not_a_composite_value() -> None:
    with pytest.raises(FormulaEvalError, match="the formula must produce a number, got a boolean"):
        compile_formula("1 > 0").evaluate_number({})
    assert compile_formula("a").evaluate_number({"a": None}) is None


def test_long_flat_chains_are_bounded() -> None:
    with pytest.raises(FormulaSyntaxError, match="nested deeper than 100 levels"):
        compile_formula(" + ".join(["1"] * 500))
    assert compile_formula(" + ".join(["1"] * 90)).evaluate({}) == 90.0


ALPHABET = st.sampled_from([*"abc 0123456789.+-*/%()?:!<>=&|,[]{}#e_\t", "??", "&&", "||", "min(", "count(", "nil",
                            "true", " and ", "1e999"])


@settings(max_examples=500, deadline=None)
@given(st.lists(ALPHABET, max_size=40).map("".join), st.text(max_size=30))
def test_random_input_only_raises_formula_errors(structured: str, text: str) -> None:
    for candidate in (structured, text):
        try:
            formula = compile_formula(candidate)
            formula.evaluate({"a": 1.0, "b": None, "c": 0.0})
        except FormulaError:
            pass
