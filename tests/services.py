"""The real services integration tests talk to: Redis, RabbitMQ, PostgreSQL, MariaDB, NATS, Mosquitto,
Prometheus and Kafka, as private instances started by hack/services (see docs/test-services.md).

    from tests.services import service
    redis = service("redis")            # ServiceInfo(name="redis", url="redis://127.0.0.1:16379/0", ...)

or, in a test, one of the session fixtures (registered for every test by tests/conftest.py):

    async def test_queue_length(rabbitmq_service: ServiceInfo) -> None: ...

`service()` makes sure the service answers: it probes it (its own protocol, not just the port) and, if that
fails, runs `hack/services up NAME` once per process, under a file lock so parallel workers do not race.
A service that cannot be started fails the test with the script's output; it is never skipped, because a
skipped integration test looks like a passing one.
"""

from __future__ import annotations

import fcntl
import importlib.util
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

__all__ = [
    "ServiceInfo",
    "ServiceUnavailableError",
    "kafka_service",
    "mariadb_service",
    "mosquitto_service",
    "nats_service",
    "postgres_service",
    "prometheus_service",
    "rabbitmq_service",
    "redis_service",
    "service",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "hack" / "services"
UP_TIMEOUT = 900.0  # a first run installs Debian packages and downloads Kafka's jars


def _load_catalog() -> ModuleType:
    """hack/services.d/catalog.py holds the ports, URLs and probes; the shell script uses the same file."""
    path = REPO_ROOT / "hack" / "services.d" / "catalog.py"
    spec = importlib.util.spec_from_file_location("_capstan_services_catalog", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


catalog = _load_catalog()
NAMES: tuple[str, ...] = catalog.NAMES


@dataclass(frozen=True)
class ServiceInfo:
    """How to reach one running service. `extra` holds service-specific settings:
    rabbitmq: management_url, vhost; postgres/mariadb: database; nats: monitor_url;
    prometheus: file_sd (a targets file tests may write), file_sd_dir; kafka: bootstrap_servers."""

    name: str
    host: str
    port: int
    url: str
    user: str = ""
    password: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class ServiceUnavailableError(RuntimeError):
    """hack/services could not start the service; the message carries its output."""


_lock = threading.Lock()
_outcome: dict[str, str | None] = {}  # name -> None when ready, else why it is not


def service(name: str) -> ServiceInfo:
    """Connection settings of `name`, after making sure it runs. Raises ServiceUnavailableError if it cannot."""
    info = ServiceInfo(**catalog.connection(name))  # KeyError for an unknown name
    with _lock:
        if name not in _outcome:
            _outcome[name] = _ensure_running(name)
        failure = _outcome[name]
    if failure is not None:
        raise ServiceUnavailableError(failure)
    return info


def _ensure_running(name: str) -> str | None:
    if _probe(name) is None:
        return None
    lock_dir = catalog.services_dir() / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"pytest-{name}.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # another worker may be starting it right now
        if _probe(name) is None:
            return None
        return _run_up(name)


def _probe(name: str) -> str | None:
    try:
        catalog.probe(name, "ready")
    except catalog.ProbeError as exc:
        return str(exc)
    return None


def _run_up(name: str) -> str | None:
    argv = [str(SCRIPT), "up", name]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=UP_TIMEOUT, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired as exc:
        so_far = "".join(_text(part) for part in (exc.stdout, exc.stderr))
        return f"`{' '.join(argv)}` did not finish within {UP_TIMEOUT:.0f}s; output so far:\n{so_far}"
    output = f"{done.stdout}{done.stderr}".strip()
    if done.returncode != 0:
        return f"`{' '.join(argv)}` failed with exit code {done.returncode}:\n{output}"
    still = _probe(name)
    if still is not None:
        return f"`{' '.join(argv)}` succeeded but the probe still fails: {still}\n{output}"
    return None


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _fixture_value(name: str) -> ServiceInfo:
    try:
        return service(name)
    except ServiceUnavailableError as exc:
        pytest.fail(f"service {name!r} is not available:\n{exc}", pytrace=False)


@pytest.fixture(scope="session")
def redis_service() -> ServiceInfo:
    return _fixture_value("redis")


@pytest.fixture(scope="session")
def rabbitmq_service() -> ServiceInfo:
    return _fixture_value("rabbitmq")


@pytest.fixture(scope="session")
def postgres_service() -> ServiceInfo:
    return _fixture_value("postgres")


@pytest.fixture(scope="session")
def mariadb_service() -> ServiceInfo:
    return _fixture_value("mariadb")


@pytest.fixture(scope="session")
def nats_service() -> ServiceInfo:
    return _fixture_value("nats")


@pytest.fixture(scope="session")
def mosquitto_service() -> ServiceInfo:
    return _fixture_value("mosquitto")


@pytest.fixture(scope="session")
def prometheus_service() -> ServiceInfo:
    return _fixture_value("prometheus")


@pytest.fixture(scope="session")
def kafka_service() -> ServiceInfo:
    return _fixture_value("kafka")
