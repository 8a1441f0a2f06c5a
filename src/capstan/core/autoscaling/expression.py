"""The scalingModifiers formula evaluator (compile once, evaluate many).

The implementation lives in ``capstan.api.formula`` because the ScaledObject model validates
formulas at admission and ``capstan.api`` may not import ``capstan.core``; this module is the name
the decision core and its callers use.
"""

from __future__ import annotations

from capstan.api.formula import (
    MAX_DEPTH,
    Formula,
    FormulaError,
    FormulaEvalError,
    FormulaSyntaxError,
    Value,
    compile_formula,
    tokenize,
)

__all__ = [
    "MAX_DEPTH",
    "Formula",
    "FormulaError",
    "FormulaEvalError",
    "FormulaSyntaxError",
    "Value",
    "compile_formula",
    "tokenize",
]
