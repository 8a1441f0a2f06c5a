"""coordination.k8s.io/v1 Lease: the lock object of leader election (and of node heartbeats)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from capstan.api.base import KubeModel, Resource

# MicroTime on the wire: RFC 3339 with exactly six fractional digits, e.g. 2024-05-01T10:00:00.000000Z.
MICRO_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class LeaseSpec(KubeModel):
    holder_identity: str | None = None
    lease_duration_seconds: int | None = Field(default=None, gt=0)
    acquire_time: str | None = None
    renew_time: str | None = None
    lease_transitions: int | None = Field(default=None, ge=0)
    strategy: str | None = None
    preferred_holder: str | None = None


class Lease(Resource):
    api_version: Literal["coordination.k8s.io/v1"] = "coordination.k8s.io/v1"
    kind: Literal["Lease"] = "Lease"
    spec: LeaseSpec = Field(default_factory=LeaseSpec)
