"""batch/v1 Job."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from capstan.api.base import Condition, KubeModel, LabelSelector, Resource
from capstan.api.corev1 import PodTemplateSpec


class JobSpec(KubeModel):
    parallelism: int = Field(default=1, ge=0)
    completions: int | None = Field(default=None, ge=0)
    backoff_limit: int = Field(default=6, ge=0)
    active_deadline_seconds: int | None = Field(default=None, gt=0)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    suspend: bool = False
    completion_mode: Literal["NonIndexed", "Indexed"] | None = None
    selector: LabelSelector | None = None
    manual_selector: bool | None = None
    template: PodTemplateSpec

    @field_validator("template")
    @classmethod
    def _restart_policy_for_jobs(cls, template: PodTemplateSpec) -> PodTemplateSpec:
        # A Job's pods must end; "Always" (the pod default) would restart them forever.
        policy = template.spec.restart_policy
        if policy not in ("OnFailure", "Never"):
            shown = "Required value" if policy is None else f'Unsupported value: "{policy}"'
            raise ValueError(f'spec.restartPolicy: {shown}: supported values: "OnFailure", "Never"')
        return template


class JobStatus(KubeModel):
    conditions: list[Condition] | None = None
    start_time: str | None = None
    completion_time: str | None = None
    active: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    ready: int | None = None


class Job(Resource):
    api_version: Literal["batch/v1"] = "batch/v1"
    kind: Literal["Job"] = "Job"
    spec: JobSpec
    status: JobStatus | None = None
