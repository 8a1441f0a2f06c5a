"""Cross-field rules written once for both validators: the model checks them in Python (embedded store),
and the generated CRD carries them as CEL ``x-kubernetes-validations`` (the API server), with the same
message.

The API server words a failed rule as a field error: ``<field>: Invalid value: <message>``, the message
computed by ``messageExpression``. ``CrossFieldRule.cause_message`` gives the embedded store the same text,
so a rule's failure reads the same in both modes (tests/k8s/test_operator_crds.py checks it against a real
API server). Messages are CEL format strings (``%d``, ``%s``), which Python's ``%`` formats alike; they must
not contain single quotes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CrossFieldRule:
    rule: str
    """CEL that must hold; ``self`` is the object whose schema carries the rule."""
    message: str
    """A CEL format string for the failure, its placeholders filled from ``arguments``."""
    arguments: tuple[str, ...] = ()
    """CEL expressions for the placeholders, e.g. ``self.minReplicaCount``."""
    field_path: str | None = None
    """Where the API server reports the failure, relative to ``self`` (``.minReplicaCount``)."""

    def __post_init__(self) -> None:
        if "'" in self.message:
            raise ValueError(f"a rule message cannot contain a single quote: {self.message!r}")

    def validation(self) -> dict[str, Any]:
        """The rule as an ``x-kubernetes-validations`` entry."""
        entry: dict[str, Any] = {"rule": self.rule}
        if self.arguments:
            entry["messageExpression"] = f"'{self.message}'.format([{', '.join(self.arguments)}])"
        else:
            entry["message"] = self.message
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry

    def cause_message(self, *values: Any) -> str:
        """The API server's message for a failure of this rule, with the arguments' values."""
        return "Invalid value: " + (self.message % values if values else self.message)


def cel_validations(*rules: CrossFieldRule) -> dict[str, Any]:
    """``json_schema_extra`` for a model whose schema carries ``rules``."""
    return {"x-kubernetes-validations": [rule.validation() for rule in rules]}
