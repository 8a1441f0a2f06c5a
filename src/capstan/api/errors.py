"""API errors shaped like Kubernetes' metav1.Status, shared by every store and surface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Cause:
    field: str
    reason: str
    message: str


@dataclass
class ApiError(Exception):
    """An error with a Kubernetes Status: HTTP code, machine reason, human message."""

    message: str
    reason: str = "InternalError"
    kind: str = ""
    name: str = ""
    causes: list[Cause] = field(default_factory=list)
    code: ClassVar[int] = 500

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def to_status(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [
                {"field": c.field, "reason": c.reason, "message": c.message} for c in self.causes]
        status: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if details:
            status["details"] = details
        return status

    @staticmethod
    def from_status(status: dict[str, Any]) -> ApiError:
        """Rebuild the matching error from a Status (used by API clients)."""
        code = int(status.get("code") or 500)
        details = status.get("details") or {}
        causes = [Cause(c.get("field", ""), c.get("reason", ""), c.get("message", ""))
                  for c in details.get("causes") or []]
        cls = _BY_CODE_AND_REASON.get((code, status.get("reason", ""))) or _BY_CODE.get(code, ApiError)
        return cls(message=status.get("message", ""), reason=status.get("reason", cls.__name__),
                   kind=details.get("kind", ""), name=details.get("name", ""), causes=causes)


@dataclass
class BadRequestError(ApiError):
    reason: str = "BadRequest"
    code: ClassVar[int] = 400


@dataclass
class UnauthorizedError(ApiError):
    reason: str = "Unauthorized"
    code: ClassVar[int] = 401


@dataclass
class ForbiddenError(ApiError):
    reason: str = "Forbidden"
    code: ClassVar[int] = 403


@dataclass
class NotFoundError(ApiError):
    reason: str = "NotFound"
    code: ClassVar[int] = 404


@dataclass
class MethodNotAllowedError(ApiError):
    reason: str = "MethodNotAllowed"
    code: ClassVar[int] = 405


@dataclass
class AlreadyExistsError(ApiError):
    reason: str = "AlreadyExists"
    code: ClassVar[int] = 409


@dataclass
class ConflictError(ApiError):
    reason: str = "Conflict"
    code: ClassVar[int] = 409


@dataclass
class GoneError(ApiError):
    reason: str = "Expired"
    code: ClassVar[int] = 410


@dataclass
class InvalidError(ApiError):
    reason: str = "Invalid"
    code: ClassVar[int] = 422

    @classmethod
    def from_causes(cls, kind: str, name: str, causes: list[Cause]) -> InvalidError:
        listed = ", ".join(f"{c.field}: {c.message}" if c.field else c.message for c in causes)
        subject = f'{kind} "{name}"' if name else (kind or "object")
        return cls(message=f"{subject} is invalid: {listed}", kind=kind, name=name, causes=causes)


@dataclass
class TooManyRequestsError(ApiError):
    reason: str = "TooManyRequests"
    code: ClassVar[int] = 429


_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequestError, 401: UnauthorizedError, 403: ForbiddenError, 404: NotFoundError,
    405: MethodNotAllowedError, 409: ConflictError, 410: GoneError, 422: InvalidError,
    429: TooManyRequestsError,
}
_BY_CODE_AND_REASON: dict[tuple[int, str], type[ApiError]] = {
    (409, "AlreadyExists"): AlreadyExistsError,
    (409, "Conflict"): ConflictError,
}
