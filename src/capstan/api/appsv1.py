"""apps/v1 Deployment."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from capstan.api.base import Condition, KubeModel, LabelSelector, Resource
from capstan.api.corev1 import PodTemplateSpec


class RollingUpdateDeployment(KubeModel):
    max_surge: int | str | None = "25%"
    max_unavailable: int | str | None = "25%"


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
