"""Connection settings and readiness probes of the private test services (see docs/test-services.md).

One source of truth for both sides: hack/services runs this file with whatever python3 is on PATH (so it
uses the standard library only, no client libraries), and tests/services.py loads it by path. Each probe
speaks the service's own protocol (RESP, AMQP, MQTT, the Kafka wire protocol, NATS, HTTP, psql/mariadb),
because an open TCP port alone says little: RabbitMQ, Kafka and PostgreSQL accept connections well before
they can serve them.

Command line:  catalog.py probe NAME [alive|ready]   exit 0 when the check passes, else 1 with the reason
               catalog.py env                          shell exports of every service's settings
               catalog.py show NAME                    the settings of one service as JSON
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

NAMES = ("redis", "rabbitmq", "postgres", "mariadb", "nats", "mosquitto", "prometheus", "kafka")
HOST = "127.0.0.1"
USER = PASSWORD = DATABASE = "capstan"
PORTS_FILE = Path(__file__).with_name("ports.env")
TIMEOUT = 5.0


class ProbeError(Exception):
    """The service did not answer as a ready instance would; the message says what was seen."""


def services_dir() -> Path:
    """Where the private instances keep their data, logs and pid files."""
    configured = os.environ.get("CAPSTAN_SERVICES_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "capstan" / "services"


def load_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    for line in PORTS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            ports[key.strip()] = int(value)
    return ports


def connection(name: str) -> dict[str, object]:
    """host, port, url, user, password and extra (str -> str) of one service, as tests/services.py exposes them."""
    p = load_ports()
    d = services_dir()
    creds = {"user": USER, "password": PASSWORD}
    none = {"user": "", "password": ""}
    table: dict[str, tuple[int, str, dict[str, str], dict[str, str]]] = {
        "redis": (p["REDIS_PORT"], f"redis://{HOST}:{p['REDIS_PORT']}/0", none, {}),
        "rabbitmq": (
            p["RABBITMQ_PORT"],
            f"amqp://{USER}:{PASSWORD}@{HOST}:{p['RABBITMQ_PORT']}/",
            creds,
            {"management_url": f"http://{HOST}:{p['RABBITMQ_MANAGEMENT_PORT']}", "vhost": "/"},
        ),
        "postgres": (
            p["POSTGRES_PORT"],
            f"postgresql://{USER}:{PASSWORD}@{HOST}:{p['POSTGRES_PORT']}/{DATABASE}",
            creds,
            {"database": DATABASE},
        ),
        "mariadb": (
            p["MARIADB_PORT"],
            f"mysql://{USER}:{PASSWORD}@{HOST}:{p['MARIADB_PORT']}/{DATABASE}",
            creds,
            {"database": DATABASE},
        ),
        "nats": (
            p["NATS_PORT"],
            f"nats://{HOST}:{p['NATS_PORT']}",
            none,
            {"monitor_url": f"http://{HOST}:{p['NATS_MONITOR_PORT']}"},
        ),
        "mosquitto": (p["MOSQUITTO_PORT"], f"mqtt://{HOST}:{p['MOSQUITTO_PORT']}", none, {}),
        "prometheus": (
            p["PROMETHEUS_PORT"],
            f"http://{HOST}:{p['PROMETHEUS_PORT']}",
            none,
            {
                "file_sd": str(d / "prometheus" / "targets" / "tests.json"),
                "file_sd_dir": str(d / "prometheus" / "targets"),
            },
        ),
        "kafka": (
            p["KAFKA_PORT"],
            f"{HOST}:{p['KAFKA_PORT']}",
            none,
            {"bootstrap_servers": f"{HOST}:{p['KAFKA_PORT']}"},
        ),
    }
    if name not in table:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(NAMES)}")
    port, url, who, extra = table[name]
    return {"name": name, "host": HOST, "port": port, "url": url, **who, "extra": extra}


def env_exports() -> list[str]:
    """CAPSTAN_<NAME>_URL and friends, for `eval "$(hack/services env)"`."""
    lines = [f"export CAPSTAN_SERVICES_DIR={_shell_quote(str(services_dir()))}"]
    for name in NAMES:
        info = connection(name)
        prefix = f"CAPSTAN_{name.upper()}"
        values = {"URL": info["url"], "HOST": info["host"], "PORT": info["port"]}
        if info["user"]:
            values.update(USER=info["user"], PASSWORD=info["password"])
        extra = info["extra"]
        assert isinstance(extra, dict)
        values.update({key.upper(): value for key, value in extra.items()})
        lines += [f"export {prefix}_{key}={_shell_quote(str(value))}" for key, value in values.items()]
    return lines


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


# ------------------------------------------------------------------------------------------------------------
# Probes. `alive` means the daemon serves its protocol (enough to create users); `ready` means the tests can use
# it: the test credentials work and optional features (JetStream, the management API) are on.


def probe(name: str, stage: str = "ready") -> None:
    """Raise ProbeError unless the service passes the check of `stage` ("alive" or "ready")."""
    p = load_ports()
    try:
        _PROBES[name](p, stage == "ready")
    except ProbeError:
        raise
    except (OSError, ValueError, KeyError, struct.error) as exc:  # refused, reset, timed out, garbage
        raise ProbeError(f"{name}: {type(exc).__name__}: {exc}") from exc


def _connect(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=TIMEOUT)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ProbeError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def _recv_until(sock: socket.socket, marker: bytes, limit: int = 65536) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ProbeError(f"connection closed before {marker!r}; got {data[:200]!r}")
        data += chunk
        if len(data) > limit:
            raise ProbeError(f"no {marker!r} in the first {limit} bytes")
    return data


def _http_get(url: str, *, user: str = "", password: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT * 2, env={**os.environ, **(env or {})}
        )
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"{argv[0]} timed out") from exc
    if done.returncode != 0 or done.stdout.strip() != "1":
        raise ProbeError(f"{' '.join(argv[:1])} exit {done.returncode}: {(done.stderr or done.stdout).strip()}")


def _probe_redis(p: dict[str, int], ready: bool) -> None:
    with _connect(p["REDIS_PORT"]) as sock:
        sock.sendall(b"PING\r\n")
        answer = _recv_until(sock, b"\r\n")
    if not answer.startswith(b"+PONG"):
        raise ProbeError(f"redis answered PING with {answer!r}")


def _probe_rabbitmq(p: dict[str, int], ready: bool) -> None:
    with _connect(p["RABBITMQ_PORT"]) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        frame_type, channel = struct.unpack(">BH", _recv_exact(sock, 3))
    if (frame_type, channel) != (1, 0):  # a method frame on channel 0: Connection.Start
        raise ProbeError(f"rabbitmq: expected Connection.Start, got frame type {frame_type} channel {channel}")
    if ready:
        url = f"http://{HOST}:{p['RABBITMQ_MANAGEMENT_PORT']}/api/overview"
        status, body = _http_get(url, user=USER, password=PASSWORD)
        if status != 200 or b"rabbitmq_version" not in body:
            raise ProbeError(f"rabbitmq management GET /api/overview as {USER}: HTTP {status} {body[:200]!r}")


def _probe_postgres(p: dict[str, int], ready: bool) -> None:
    port = str(p["POSTGRES_PORT"])
    query = ["-X", "-A", "-t", "-c", "select 1"]
    if ready:
        argv = ["psql", "-h", HOST, "-p", port, "-U", USER, "-d", DATABASE, *query]
        _run(argv, {"PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "5"})
    else:  # the superuser over the private unix socket (trust): works before the test user exists
        socket_dir = str(services_dir() / "postgres")
        _run(["psql", "-h", socket_dir, "-p", port, "-U", "postgres", "-d", "postgres", *query])


def _probe_mariadb(p: dict[str, int], ready: bool) -> None:
    query = ["-N", "-B", "-e", "select 1"]
    if ready:
        argv = ["mariadb", "--no-defaults", "--protocol=tcp", "-h", HOST, "-P", str(p["MARIADB_PORT"]),
                "-u", USER, f"-p{PASSWORD}", "--connect-timeout=5", DATABASE, *query]  # fmt: skip
    else:
        socket_path = str(services_dir() / "mariadb" / "mariadb.sock")
        argv = ["mariadb", "--no-defaults", "-S", socket_path, "-u", "root", "--connect-timeout=5", *query]
    _run(argv)


def _probe_nats(p: dict[str, int], ready: bool) -> None:
    with _connect(p["NATS_PORT"]) as sock:
        info_line = _recv_until(sock, b"\r\n")
        if not info_line.startswith(b"INFO "):
            raise ProbeError(f"nats greeted with {info_line[:200]!r}")
        info = json.loads(info_line[5:].split(b"\r\n", 1)[0])
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        reply = _recv_until(sock, b"\r\n")
    if not reply.startswith(b"PONG"):
        raise ProbeError(f"nats answered PING with {reply[:200]!r}")
    if not info.get("jetstream"):
        raise ProbeError("nats is up but JetStream is not enabled")
    status, body = _http_get(f"http://{HOST}:{p['NATS_MONITOR_PORT']}/healthz")
    if status != 200 or json.loads(body).get("status") != "ok":
        raise ProbeError(f"nats monitor /healthz: HTTP {status} {body[:200]!r}")


def _mqtt_packet(first_byte: int, body: bytes) -> bytes:
    length, encoded = len(body), b""
    while True:
        digit, length = length % 128, length // 128
        encoded += bytes([digit | (0x80 if length else 0)])
        if not length:
            return bytes([first_byte]) + encoded + body


def _mqtt_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _mqtt_read(sock: socket.socket) -> tuple[int, bytes]:
    first = _recv_exact(sock, 1)[0]
    length, shift = 0, 0
    while True:
        digit = _recv_exact(sock, 1)[0]
        length += (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            return first, _recv_exact(sock, length)


def _probe_mosquitto(p: dict[str, int], ready: bool) -> None:
    """MQTT 3.1.1: connect anonymously, subscribe to a fresh topic, publish to it and read the message back."""
    topic, payload = f"capstan/probe/{uuid.uuid4().hex}", b"ping"
    with _connect(p["MOSQUITTO_PORT"]) as sock:
        connect = _mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 30) + _mqtt_str(f"probe-{os.getpid()}")
        sock.sendall(_mqtt_packet(0x10, connect))
        kind, body = _mqtt_read(sock)
        if kind != 0x20 or body[1] != 0:
            raise ProbeError(f"mosquitto refused CONNECT: packet {kind:#x} {body!r}")
        sock.sendall(_mqtt_packet(0x82, struct.pack(">H", 1) + _mqtt_str(topic) + b"\x00"))
        kind, body = _mqtt_read(sock)
        if kind != 0x90 or body[-1] == 0x80:
            raise ProbeError(f"mosquitto refused SUBSCRIBE: packet {kind:#x} {body!r}")
        sock.sendall(_mqtt_packet(0x30, _mqtt_str(topic) + payload))
        kind, body = _mqtt_read(sock)
        sock.sendall(b"\xe0\x00")
    if kind & 0xF0 != 0x30 or not body.endswith(payload):
        raise ProbeError(f"mosquitto did not deliver the published message: packet {kind:#x} {body!r}")


def _probe_prometheus(p: dict[str, int], ready: bool) -> None:
    status, body = _http_get(f"http://{HOST}:{p['PROMETHEUS_PORT']}/-/ready")
    if status != 200:
        raise ProbeError(f"prometheus /-/ready: HTTP {status} {body[:200]!r}")


def _probe_kafka(p: dict[str, int], ready: bool) -> None:
    """A Metadata v4 request (the oldest version Kafka 4 still serves) must list our broker."""
    client_id = b"capstan-probe"
    header = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id
    body = struct.pack(">i?", 0, False)  # no topics (brokers only), do not auto-create
    request = header + body
    with _connect(p["KAFKA_PORT"]) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        response = _recv_exact(sock, size)
    correlation_id, _throttle, broker_count = struct.unpack_from(">iii", response, 0)
    offset, ports = 12, []
    for _ in range(broker_count):
        _node_id, host_len = struct.unpack_from(">ih", response, offset)
        offset += 6 + host_len
        (port, rack_len) = struct.unpack_from(">ih", response, offset)
        offset += 6 + max(rack_len, 0)
        ports.append(port)
    if correlation_id != 7 or p["KAFKA_PORT"] not in ports:
        raise ProbeError(f"kafka metadata lists brokers on ports {ports}, not {p['KAFKA_PORT']}")


_PROBES = {
    "redis": _probe_redis,
    "rabbitmq": _probe_rabbitmq,
    "postgres": _probe_postgres,
    "mariadb": _probe_mariadb,
    "nats": _probe_nats,
    "mosquitto": _probe_mosquitto,
    "prometheus": _probe_prometheus,
    "kafka": _probe_kafka,
}


def main(argv: list[str]) -> int:
    if argv[:1] == ["env"]:
        print("\n".join(env_exports()))
        return 0
    if len(argv) == 2 and argv[0] == "show":
        print(json.dumps(connection(argv[1]), indent=2))
        return 0
    if len(argv) in (2, 3) and argv[0] == "probe" and argv[1] in NAMES:
        try:
            probe(argv[1], argv[2] if len(argv) == 3 else "ready")
        except ProbeError as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
