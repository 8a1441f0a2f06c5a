"""core/v1 kinds: Namespace, Pod, Node, Secret, ConfigMap, Event."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from capstan.api.base import Condition, KubeModel, LabelSelector, ObjectMeta, Resource
from capstan.api.quantity import QuantityError, parse_quantity

Quantity = str | int | float


def _check_quantities(values: dict[str, Quantity] | None) -> dict[str, Quantity] | None:
    for name, amount in (values or {}).items():
        try:
            parse_quantity(amount)
        except QuantityError as exc:
            raise ValueError(f"{name}: {exc}") from exc
    return values


# ---- env and volumes-free pod spec pieces -------------------------------------------------------

class KeySelector(KubeModel):
    name: str
    key: str
    optional: bool | None = None


class ObjectFieldSelector(KubeModel):
    field_path: str
    api_version: str | None = None


class EnvVarSource(KubeModel):
    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: ObjectFieldSelector | None = None


class EnvVar(KubeModel):
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


class NamedRef(KubeModel):
    name: str
    optional: bool | None = None


class EnvFromSource(KubeModel):
    prefix: str | None = None
    secret_ref: NamedRef | None = None
    config_map_ref: NamedRef | None = None


class ResourceRequirements(KubeModel):
    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None

    _check = field_validator("requests", "limits")(_check_quantities)


class ContainerPort(KubeModel):
    container_port: int
    name: str | None = None
    protocol: str | None = None
    host_port: int | None = None


class ExecAction(KubeModel):
    command: list[str]


class HTTPHeader(KubeModel):
    name: str
    value: str


class HTTPGetAction(KubeModel):
    port: int | str
    path: str | None = "/"
    host: str | None = None
    scheme: str | None = "HTTP"
    http_headers: list[HTTPHeader] | None = None


class TCPSocketAction(KubeModel):
    port: int | str
    host: str | None = None


class Probe(KubeModel):
    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


class Container(KubeModel):
    name: str = Field(min_length=1)
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    working_dir: str | None = None
    env: list[EnvVar] | None = None
    env_from: list[EnvFromSource] | None = None
    resources: ResourceRequirements | None = None
    ports: list[ContainerPort] | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    startup_probe: Probe | None = None


class Toleration(KubeModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


class PodSpec(KubeModel):
    containers: list[Container] = Field(min_length=1)
    init_containers: list[Container] | None = None
    restart_policy: Literal["Always", "OnFailure", "Never"] | None = None
    termination_grace_period_seconds: int | None = None
    active_deadline_seconds: int | None = None
    node_selector: dict[str, str] | None = None
    node_name: str | None = None
    tolerations: list[Toleration] | None = None
    scheduler_name: str | None = None
    priority: int | None = None
    priority_class_name: str | None = None


class PodTemplateSpec(KubeModel):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec


class ContainerStateWaiting(KubeModel):
    reason: str | None = None
    message: str | None = None


class ContainerStateRunning(KubeModel):
    started_at: str | None = None


class ContainerStateTerminated(KubeModel):
    exit_code: int
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class ContainerState(KubeModel):
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(KubeModel):
    name: str
    ready: bool = False
    started: bool | None = None
    restart_count: int = 0
    image: str | None = None
    state: ContainerState | None = None
    last_state: ContainerState | None = None
    container_id: str | None = None


class PodStatus(KubeModel):
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"] | None = None
    conditions: list[Condition] | None = None
    message: str | None = None
    reason: str | None = None
    host_ip: str | None = None
    pod_ip: str | None = None
    start_time: str | None = None
    container_statuses: list[ContainerStatus] | None = None


class Pod(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Pod"] = "Pod"
    spec: PodSpec
    status: PodStatus | None = None


# ---- Node ---------------------------------------------------------------------------------------

class Taint(KubeModel):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeSpec(KubeModel):
    unschedulable: bool | None = None
    taints: list[Taint] | None = None


class NodeStatus(KubeModel):
    capacity: dict[str, Quantity] | None = None
    allocatable: dict[str, Quantity] | None = None
    conditions: list[Condition] | None = None
    phase: str | None = None


class Node(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Node"] = "Node"
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus | None = None


# ---- Namespace, Secret, ConfigMap, Event --------------------------------------------------------

class NamespaceSpec(KubeModel):
    finalizers: list[str] | None = None


class NamespaceStatus(KubeModel):
    phase: str | None = None


class Namespace(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Namespace"] = "Namespace"
    spec: NamespaceSpec | None = None
    status: NamespaceStatus | None = None


class Secret(Resource):
    """A Secret. ``data`` is base64 as on Kubernetes; ``stringData`` is merged into it on write."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Secret"] = "Secret"
    type: str | None = "Opaque"
    data: dict[str, str] | None = None
    string_data: dict[str, str] | None = None
    immutable: bool | None = None


class ConfigMap(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["ConfigMap"] = "ConfigMap"
    data: dict[str, str] | None = None
    binary_data: dict[str, str] | None = None
    immutable: bool | None = None


class ObjectReference(KubeModel):
    api_version: str | None = None
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


class EventSource(KubeModel):
    component: str | None = None
    host: str | None = None


class Event(Resource):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Event"] = "Event"
    involved_object: ObjectReference
    reason: str | None = None
    message: str | None = None
    type: str | None = "Normal"
    count: int | None = None
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    source: EventSource | None = None
    reporting_component: str | None = None


__all__ = [
    "ConfigMap", "Container", "ContainerStatus", "Event", "LabelSelector", "Namespace", "Node", "Pod",
    "PodSpec", "PodStatus", "PodTemplateSpec", "Probe", "Secret", "Toleration",
]
