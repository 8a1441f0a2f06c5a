"""Benchmark: the ScaledObject loop at scale, and the reaction time from a message to a worker.

Part 1 (``loop``): N ScaledObjects (default 1,000 and 10,000), each with a redis trigger on its own
(empty) list, pollingInterval 30 s, against the real Redis of ``tests/services.py``; the
ScaledObject controller runs in this process on a SqliteStore. After every object's first pass,
it measures over ``--periods`` polling periods: event-loop lag (a 50 ms ticker's overshoot,
p50/p99/max), process CPU % (of one core), passes per second and the scale-loop latency.

Part 2 (``reaction``): a real ``capstan server``; per run a fresh worker Deployment at 0 replicas
and a ScaledObject with default settings (pollingInterval 30, push on), on the real services of
``tests/services.py``: a redis trigger on a fresh empty list, or a nats-jetstream trigger on a fresh
stream with a durable consumer. The time from the first message (RPUSH, or a JetStream publish) to
the worker process's first output line: the worker prints ``time.time()`` first thing, and that
printed clock is the end of the interval (read back from the container's log file). ``scaled_p50_s``
is when the bench first saw the Deployment at 1 replica (polled, so an upper bound).

    python bench/bench_autoscaling_loop.py loop --objects 1000 10000
    python bench/bench_autoscaling_loop.py reaction --runs 20 [--source redis|nats|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _register_null_scaler() -> None:
    """A scaler that answers 0 without I/O: the controller's own cost, without Redis."""
    from capstan.scalers.base import MetricResult, MetricSpec, Scaler
    from capstan.scalers.registry import register

    @register("bench-null")
    class NullScaler(Scaler):
        def metric_specs(self) -> list[MetricSpec]:
            return [MetricSpec(f"s{self.config.trigger_index}-bench-null", 5.0)]

        async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
            return MetricResult(0.0, False)


def _redis_clients(address: str) -> int:
    """This process's scaler connections to Redis (the scalers name them ``capstan-scaler-<pid>``;
    other users of the shared Redis are not counted)."""
    import os

    import redis

    host, port = address.split(":")
    client = redis.Redis(host=host, port=int(port), decode_responses=True)
    try:
        return sum(1 for c in client.client_list() if c.get("name") == f"capstan-scaler-{os.getpid()}")
    finally:
        client.close()


async def loop_bench(objects: int, periods: float, interval: int, redis_address: str,
                     scaler: str = "redis") -> dict[str, float]:
    from capstan.api.registry import default_registry
    from capstan.controllers.autoscaling import AutoscalingOptions
    from capstan.controllers.autoscaling.scaledobject import ScaledObjectController
    from capstan.controllers.events import EventRecorder
    from capstan.controllers.informer import InformerFactory
    from capstan.controllers.runtime import Manager
    from capstan.store.sqlite import SqliteStore

    tmp = Path(tempfile.mkdtemp(prefix="bench-as-"))
    store = await SqliteStore.open(tmp / "state.db", default_registry())
    prefix = uuid.uuid4().hex[:6]
    if scaler != "redis":
        _register_null_scaler()

    def trigger(i: int) -> dict[str, object]:
        if scaler != "redis":
            return {"type": "bench-null", "metadata": {}}
        return {"type": "redis", "metadata": {"address": redis_address, "listName": f"bench-{prefix}-{i}"}}

    started = time.perf_counter()
    for i in range(objects):
        name = f"w{i}"
        await store.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                                         "containers": [{"name": "w", "image": "x", "command": ["true"]}]}}}})
        await store.create({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
                            "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": interval,
                                     "triggers": [trigger(i)]}})
    setup = time.perf_counter() - started
    informers = InformerFactory(store)
    controller = ScaledObjectController(informers, store, EventRecorder(store, "bench"),
                                        options=AutoscalingOptions())
    manager = Manager(informers)
    manager.add(controller)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    started = time.perf_counter()
    rt = store.registry.lookup("scaledobjects")

    async def all_ready() -> bool:
        items = (await store.list(rt)).items
        return all(any(c.get("type") == "Ready" for c in (o.get("status") or {}).get("conditions") or [])
                   for o in items)

    while not await all_ready():  # noqa: ASYNC110 - polling the store is the point
        await asyncio.sleep(1)
    first_pass = time.perf_counter() - started
    process = psutil.Process()
    lags: list[float] = []
    cpu_before = process.cpu_times()
    passes_before = controller.scheduler.passes
    window_start = time.perf_counter()
    loop = asyncio.get_running_loop()
    while time.perf_counter() - window_start < periods * interval:
        due = loop.time() + 0.05
        await asyncio.sleep(0.05)
        lags.append(max(loop.time() - due, 0.0))
    window = time.perf_counter() - window_start
    clients = _redis_clients(redis_address) if scaler == "redis" else 0
    cpu_after = process.cpu_times()
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / window * 100
    passes = controller.scheduler.passes - passes_before
    stop.set()
    await asyncio.wait_for(task, timeout=120)
    await store.close()
    return {"objects": objects, "setup_s": setup, "first_pass_all_s": first_pass, "window_s": window,
            "cpu_percent": cpu, "lag_p50_ms": _pct(lags, 0.5) * 1000, "lag_p99_ms": _pct(lags, 0.99) * 1000,
            "lag_max_ms": max(lags) * 1000, "passes_per_s": passes / window,
            "rss_mb": process.memory_info().rss / 2**20,
            "scaler": scaler, "redis_clients": clients}


# The worker's first action is to print its own clock: the end of the measured interval is that line,
# timestamped by the worker process itself (after the interpreter started), read back from its log file.
WORKER = "import time\nprint(repr(time.time()), flush=True)\ntime.sleep(3600)\n"


class _RedisSource:
    """An empty Redis list per run; the first message is an RPUSH."""

    name = "redis"

    def __init__(self) -> None:
        import redis
        from tests.services import service

        self.info = service("redis")
        self.client = redis.Redis.from_url(self.info.url)
        self.queue = ""

    def trigger(self, run: int) -> dict[str, object]:
        self.queue = f"bench-react-{uuid.uuid4().hex[:8]}"
        return {"type": "redis", "metadata": {"address": f"{self.info.host}:{self.info.port}",
                                              "listName": self.queue}}

    def wait_followed(self) -> None:
        time.sleep(1.0)  # the push follower subscribes after the first pass

    def publish(self) -> None:
        self.client.rpush(self.queue, "hello")

    def cleanup(self) -> None:
        self.client.delete(self.queue)

    def close(self) -> None:
        self.client.close()


class _NatsSource:
    """A JetStream stream with a durable pull consumer per run; the first message is a JetStream publish
    on the stream's subject. The scaler follows the subject with a core NATS subscription (push)."""

    name = "nats-jetstream"

    def __init__(self) -> None:
        import nats
        from tests.services import service

        self.info = service("nats")
        self.monitor = self.info.extra["monitor_url"]
        self.loop = asyncio.new_event_loop()
        self.nc = self.loop.run_until_complete(nats.connect(self.info.url, name="bench-reaction"))
        self.js = self.nc.jetstream()
        self.stream = self.subject = ""

    def trigger(self, run: int) -> dict[str, object]:
        from nats.js.api import AckPolicy, ConsumerConfig

        suffix = uuid.uuid4().hex[:10]
        self.stream, self.subject = f"BENCH_REACT_{suffix}", f"bench.react.{suffix}"
        self.loop.run_until_complete(self.js.add_stream(name=self.stream, subjects=[f"{self.subject}.>"]))
        self.loop.run_until_complete(self.js.add_consumer(
            self.stream, ConsumerConfig(durable_name="workers", ack_policy=AckPolicy.EXPLICIT)))
        endpoint = self.monitor.split("://", 1)[1].rstrip("/")
        return {"type": "nats-jetstream", "metadata": {"natsServerMonitoringEndpoint": endpoint, "account": "$G",
                                                       "stream": self.stream, "consumer": "workers"}}

    def wait_followed(self) -> None:
        """Until the scaler's subscription to the stream's subjects is on the server (its /connz)."""
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            connz = httpx.get(f"{self.monitor}/connz", params={"subs": "1", "limit": "10000"}, timeout=5).json()
            if any(f"{self.subject}.>" in (c.get("subscriptions_list") or []) for c in connz.get("connections") or []):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the scaler never subscribed to {self.subject}.>")

    def publish(self) -> None:
        self.loop.run_until_complete(self.js.publish(f"{self.subject}.jobs", b"hello"))

    def cleanup(self) -> None:
        self.loop.run_until_complete(self.js.delete_stream(self.stream))

    def close(self) -> None:
        self.loop.run_until_complete(self.nc.close())
        self.loop.close()


def _first_line_time(data_dir: Path, deployment: str) -> float | None:
    """The clock the worker printed as its first line, once a pod of ``deployment`` has written it."""
    for log in (data_dir / "pods").glob(f"default_{deployment}-*/w.log"):
        first, newline, _ = log.read_text().partition("\n")
        if newline:
            return float(first)
    return None


def reaction_bench(runs: int, source_name: str) -> dict[str, object]:
    from tests.e2e.harness import CapstanServer, kill_all_containers

    source = _RedisSource() if source_name == "redis" else _NatsSource()
    server = CapstanServer(Path(tempfile.mkdtemp(prefix="bench-react-")) / "data")
    server.start()
    latencies, scaled = [], []
    try:
        for run in range(runs):
            name = f"r{run}"
            container = {"name": "w", "image": "python", "command": [sys.executable, "-c", WORKER]}
            server.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                          "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                                   "template": {"metadata": {"labels": {"app": name}},
                                                "spec": {"terminationGracePeriodSeconds": 1,
                                                         "containers": [container]}}}})
            # Default settings: pollingInterval 30, no cooldown or threshold changes.
            server.apply({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
                          "spec": {"scaleTargetRef": {"name": name}, "triggers": [source.trigger(run)]}})
            path = f"/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects/{name}"
            while not (server.get_json(path).get("status") or {}).get("conditions"):
                time.sleep(0.05)
            source.wait_followed()
            sent = time.time()
            source.publish()
            deadline, seen_scaled = time.monotonic() + 120, None
            while (started := _first_line_time(server.data_dir, name)) is None and time.monotonic() < deadline:
                if seen_scaled is None and (server.get_json(f"/apis/apps/v1/namespaces/default/deployments/{name}")
                                            ["spec"].get("replicas")):
                    seen_scaled = time.time() - sent
                time.sleep(0.005)
            if started is None:
                raise RuntimeError(f"run {run}: no worker started within 120 s")
            latencies.append(started - sent)
            if seen_scaled is not None:
                scaled.append(seen_scaled)
            server.cli("delete", "scaledobject", name)
            server.cli("delete", "deployment", name)
            source.cleanup()
    finally:
        server.stop()
        kill_all_containers(server.data_dir)
        source.close()
    return {"source": source.name, "runs": runs, "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(_pct(latencies, 0.95), 3), "min_s": round(min(latencies), 3),
            "max_s": round(max(latencies), 3),
            "scaled_p50_s": round(statistics.median(scaled), 3) if scaled else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    loop = sub.add_parser("loop")
    loop.add_argument("--objects", type=int, nargs="+", default=[1000, 10000])
    loop.add_argument("--periods", type=float, default=3)
    loop.add_argument("--interval", type=int, default=30)
    loop.add_argument("--scaler", choices=["redis", "null"], default="redis")
    reaction = sub.add_parser("reaction")
    reaction.add_argument("--runs", type=int, default=20)
    reaction.add_argument("--source", choices=["redis", "nats", "both"], default="both")
    args = parser.parse_args()
    if args.part == "loop":
        from tests.services import service

        info = service("redis")
        for count in args.objects:
            # Each size in a fresh process: no state carried over between sizes.
            result = subprocess.run([sys.executable, __file__, "_loop_one", str(count), str(args.periods),
                                     str(args.interval), f"{info.host}:{info.port}", args.scaler],
                                    capture_output=True, text=True)
            print(result.stdout.strip() or result.stderr[-3000:], flush=True)
    else:
        for source in (["redis", "nats"] if args.source == "both" else [args.source]):
            print(json.dumps(reaction_bench(args.runs, source)), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_loop_one":
        _, _, count, periods, interval, address, kind = sys.argv
        print(json.dumps(asyncio.run(loop_bench(int(count), float(periods), int(interval), address, kind))))
    else:
        main()
