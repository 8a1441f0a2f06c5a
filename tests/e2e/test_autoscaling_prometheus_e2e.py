"""Autoscaling end to end on Prometheus: a real ``capstan server``, the prometheus scaler querying the
real Prometheus, and workers that take jobs from a backlog file.

The workers expose nothing. The test serves a tiny exporter whose gauge ``e2e_backlog`` is the
number of lines left in the backlog file; Prometheus scrapes it every second through a targets
file in its file_sd directory, and the trigger's query reads that gauge (threshold 5). A worker
takes the first line under an exclusive flock and works 0.5 s on it.

N = 20 lines: the first pass after activation (polling every second) reads a sample at most about
one scrape old, taken when one worker had had at most a second or so, so it sees at least 16 lines
left and the HPA wants ceil(20 / 5) = 4, which the scale-up limit from 1 replica, max(2 x 1, 4),
allows. The scrape interval shifts when things happen, not the replica counts; times are not
asserted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.e2e.broker_kit import broker_scaled_object, hpa_peak, run_scaling, script_deployment
from tests.e2e.harness import CapstanServer, wait_for
from tests.services import ServiceInfo

pytestmark = pytest.mark.slow

LINES, THRESHOLD, MAXIMUM = 20, 5, 10


def backlog_length(path: Path) -> int:
    with path.open() as backlog:
        fcntl.flock(backlog, fcntl.LOCK_SH)  # never count while a worker rewrites the file
        return len(backlog.read().splitlines())


@contextlib.contextmanager
def backlog_exporter(backlog: Path) -> Iterator[int]:
    """Serve ``e2e_backlog <lines left>`` on a free loopback port; yields the port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"# TYPE e2e_backlog gauge\ne2e_backlog {backlog_length(backlog)}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def scrape_target(prometheus: ServiceInfo, port: int, run: str) -> Iterator[None]:
    """Register the exporter with Prometheus (file_sd), labelled test=<run>; unregister afterwards."""
    target = Path(prometheus.extra["file_sd_dir"]) / f"e2e-{run}.json"
    staging = target.with_suffix(".tmp")  # written then renamed: Prometheus never reads half a file
    staging.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"test": run}}]))
    staging.rename(target)
    try:
        yield
    finally:
        target.unlink(missing_ok=True)


def query(prometheus: ServiceInfo, promql: str) -> list[float]:
    answer = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, timeout=10).json()
    return [float(series["value"][1]) for series in answer["data"]["result"]]


def test_prometheus_backlog_gauge_scales_workers_zero_to_four_and_back(
        server: CapstanServer, tmp_path: Path, prometheus_service: ServiceInfo) -> None:
    run = uuid.uuid4().hex[:8]
    backlog, journal = tmp_path / "backlog", tmp_path / "journal"
    backlog.write_text("")
    promql = f'e2e_backlog{{test="{run}"}}'
    with backlog_exporter(backlog) as port, scrape_target(prometheus_service, port, run):
        wait_for(lambda: query(prometheus_service, promql) == [0.0], timeout=60, interval=0.2,
                 message="Prometheus to scrape the exporter")
        server.apply(script_deployment("worker", "prometheus_worker.py", {
            "BACKLOG": str(backlog), "JOURNAL": str(journal), "HOLD": "0.5"}))
        trigger = {"type": "prometheus", "metadata": {
            "serverAddress": prometheus_service.url, "query": promql, "threshold": str(THRESHOLD)}}
        jobs = [f"job-{i}" for i in range(LINES)]

        def publish() -> None:
            with backlog.open("a") as file:
                fcntl.flock(file, fcntl.LOCK_EX)
                file.write("".join(f"{job}\n" for job in jobs))

        result = run_scaling(
            server, "worker", broker_scaled_object("worker", trigger, maximum=MAXIMUM, polling=1),
            publish=publish, drained=lambda: backlog_length(backlog) == 0,
            peak=hpa_peak(LINES, THRESHOLD, MAXIMUM), journal=journal, expected=jobs)
        print(result.report())
        assert query(prometheus_service, promql) == [0.0]
