"""Kueue's Prometheus metrics, with Kueue's names and labels, on the process registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from capstan.controllers.metrics import REGISTRY

PENDING_WORKLOADS = Gauge(
    "kueue_pending_workloads", "Pending workloads per ClusterQueue; status is active (queued) or inadmissible.",
    ["cluster_queue", "status"], registry=REGISTRY)
RESERVING_WORKLOADS = Gauge(
    "kueue_reserving_active_workloads", "Workloads holding quota per ClusterQueue.", ["cluster_queue"],
    registry=REGISTRY)
ADMITTED_WORKLOADS = Counter(
    "kueue_admitted_workloads", "Workloads admitted per ClusterQueue.", ["cluster_queue"], registry=REGISTRY)
ADMISSION_WAIT = Histogram(
    "kueue_admission_wait_time_seconds", "Time from creation (or requeue) to admission.", ["cluster_queue"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=REGISTRY)
RESOURCE_USAGE = Gauge(
    "kueue_cluster_queue_resource_usage", "Quota in use per ClusterQueue, flavor and resource (cores for cpu).",
    ["cluster_queue", "flavor", "resource"], registry=REGISTRY)
WEIGHTED_SHARE = Gauge(
    "kueue_cluster_queue_weighted_share", "Weighted share of borrowed resources (fair sharing).",
    ["cluster_queue"], registry=REGISTRY)
PREEMPTED_WORKLOADS = Counter(
    "kueue_preempted_workloads", "Workloads preempted, by the preempting ClusterQueue and reason.",
    ["preempting_cluster_queue", "reason"], registry=REGISTRY)
EVICTED_WORKLOADS = Counter(
    "kueue_evicted_workloads", "Workloads evicted, by ClusterQueue and reason.", ["cluster_queue", "reason"],
    registry=REGISTRY)
CYCLE_SECONDS = Histogram(
    "capstan_admission_cycle_duration_seconds", "Duration of one admission cycle (build, decide, write).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY)
