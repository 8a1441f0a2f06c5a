"""cpu / memory triggers: metadata parsing and the HPA's usage arithmetic (no I/O)."""

from __future__ import annotations

import pytest

from capstan.scalers.base import PodUsage, ScalerConfig, ScalerConfigError, ScalerError, TargetType
from capstan.scalers.cpu_memory import CpuMemoryScaler, total_usage, utilization_percent
from capstan.scalers.registry import build_scaler


class FakePodMetrics:
    def __init__(self, pods: list[PodUsage]) -> None:
        self.pods = pods
        self.calls: list[tuple[str, str, str | None]] = []

    async def usage(self, namespace: str, label_selector: str, container: str | None = None) -> list[PodUsage]:
        self.calls.append((namespace, label_selector, container))
        return self.pods


def config(kind: str = "cpu", metric_type: TargetType = "Utilization", pods: list[PodUsage] | None = None,
           **metadata: str) -> ScalerConfig:
    return ScalerConfig(trigger_type=kind, trigger_index=1, metadata=metadata, metric_type=metric_type,
                        namespace="shop", target_selector="app=web", pod_metrics=FakePodMetrics(pods or []))


def test_utilization_target_is_a_whole_percent() -> None:
    scaler = build_scaler(config(value="60"))
    [spec] = scaler.metric_specs()
    assert (spec.name, spec.target, spec.target_type) == ("s1-cpu", 60.0, "Utilization")


def test_average_value_target_is_a_quantity_in_base_units() -> None:
    assert build_scaler(config(metric_type="AverageValue", value="500m")).metric_specs()[0].target == 0.5
    memory = build_scaler(config("memory", metric_type="AverageValue", value="256Mi"))
    assert memory.metric_specs()[0].target == 256 * 2**20


def test_container_name_is_part_of_the_metric_name() -> None:
    scaler = build_scaler(config("memory", value="70", containerName="app"))
    assert scaler.metric_specs()[0].name == "s1-memory-app"


@pytest.mark.parametrize(("metric_type", "value", "message"), [
    ("Utilization", "60%", "is not a whole percent"),
    ("Utilization", "0", "must be greater than 0"),
    ("AverageValue", "lots", "is not a quantity"),
    ("Value", "5", "allowed values are 'Utilization' or 'AverageValue'"),
])
def test_bad_values_are_rejected(metric_type: TargetType, value: str, message: str) -> None:
    with pytest.raises(ScalerConfigError, match=message):
        build_scaler(config(metric_type=metric_type, value=value))


def test_missing_value_and_deprecated_type_are_rejected() -> None:
    with pytest.raises(ScalerConfigError, match=r'cpu trigger \(triggers\[1\]\): metadata.value is required'):
        build_scaler(config())
    with pytest.raises(ScalerConfigError, match=r"metadata\.type was removed"):
        build_scaler(config(value="50", type="Utilization"))


def test_utilization_is_total_usage_over_total_requests_of_ready_pods() -> None:
    pods = [PodUsage(cpu_millis=300, memory_bytes=0, cpu_request_millis=500),
            PodUsage(cpu_millis=100, memory_bytes=0, cpu_request_millis=500),
            PodUsage(cpu_millis=900, memory_bytes=0, cpu_request_millis=0, ready=False)]
    assert utilization_percent("cpu", pods) == pytest.approx(40.0)
    assert utilization_percent("cpu", []) == 0.0


def test_utilization_needs_a_request_on_every_ready_pod() -> None:
    with pytest.raises(ScalerError, match="missing request for memory"):
        utilization_percent("memory", [PodUsage(cpu_millis=0, memory_bytes=10)])


def test_average_value_reports_the_total_of_ready_pods_in_cores_or_bytes() -> None:
    """AverageValue metrics carry a total; the target is per pod (ceil(total / target) replicas)."""
    pods = [PodUsage(cpu_millis=250, memory_bytes=100), PodUsage(cpu_millis=750, memory_bytes=300),
            PodUsage(cpu_millis=5000, memory_bytes=5000, ready=False)]
    assert total_usage("cpu", pods) == pytest.approx(1.0)
    assert total_usage("memory", pods) == pytest.approx(400)
    assert total_usage("cpu", []) == 0.0


async def test_reads_the_target_pods_and_is_always_active() -> None:
    pods = [PodUsage(cpu_millis=0, memory_bytes=0, cpu_request_millis=100)]
    cfg = config(value="50", containerName="app", pods=pods)
    scaler = CpuMemoryScaler(cfg)
    result = await scaler.get_metrics_and_activity(scaler.metric)
    assert (result.value, result.active) == (0.0, True)
    assert cfg.pod_metrics is not None
    assert cfg.pod_metrics.calls == [("shop", "app=web", "app")]  # type: ignore[attr-defined]
