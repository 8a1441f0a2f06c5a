"""apps/v1 Deployment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from capstan.api.base import Condition, KubeModel, LabelSelector, Resource
from capstan.api.corev1 import PodTemplateSpec


class RollingUpdateDeployment(KubeModel):
    max_surge: int | str | None = "25%"
    max_unavailable: int | str | None = "25%"

    @field_validator("max_surge", "max_unavailable")
    @classmethod
    def _int_or_percent(cls, value: int | str | None) -> int | str | None:
        text = str(value).strip() if value is not None else "0"
        number = text[:-1] if text.endswith("%") else text
        if not number.isdigit():
            raise ValueError(f'Invalid value: "{value}": must be a non-negative integer or percentage')
        return value

    @model_validator(mode="after")
    def _not_both_zero(self) -> RollingUpdateDeployment:
        def zero(value: int | str | None) -> bool:
            return value is not None and str(value).strip().rstrip("%") == "0"

        if zero(self.max_surge) and zero(self.max_unavailable):
            raise ValueError("maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0")
        return self


class DeploymentStrategy(KubeModel):
    type: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    rolling_update: RollingUpdateDeployment | None = None


class DeploymentSpec(KubeModel):
    replicas: int = Field(default=1, ge=0)
    selector: LabelSelector
    template: PodTemplateSpec
    strategy: DeploymentStrategy | None = None
    min_ready_seconds: int = 0
    revision_history_limit: int | None = 10
    paused: bool | None = None
    progress_deadline_seconds: int | None = 600


class DeploymentStatus(KubeModel):
    observed_generation: int | None = None
    replicas: int | None = None
    updated_replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    unavailable_replicas: int | None = None
    conditions: list[Condition] | None = None


class Deployment(Resource):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    spec: DeploymentSpec
    status: DeploymentStatus | None = None
