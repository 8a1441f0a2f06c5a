"""What the HTTP-based scalers (prometheus, metrics-api) share: KEDA's ``authModes``
authentication, ``k=v`` maps, durations, an httpx client per scaler and a bounded GET.

KEDA's ``authentication.Config``: ``authModes`` (metadata or TriggerAuthentication, a comma list of
``bearer``, ``basic``, ``apiKey``, ``custom``, ``tls``); ``bearer``, ``basic`` (and ``oauth``, not
supported here) are mutually exclusive. Secrets come from the TriggerAuthentication only:
``bearerToken``, ``username``/``password``, ``customAuthHeader``/``customAuthValue``,
``cert``/``key``/``ca`` (PEM text). ``apiKey``, ``method`` (header|query) and ``keyParamName``
may also be metadata.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from capstan.scalers import _metadata as md
from capstan.scalers.base import ScalerConfig, ScalerConfigError, ScalerError

KNOWN_AUTH_MODES = ("apiKey", "basic", "tls", "bearer", "custom", "oauth")
_EXCLUSIVE_MODES = ("bearer", "basic", "oauth")
METADATA_THEN_AUTH = md.Source(metadata=True, auth=True, env=False)


@dataclass(frozen=True)
class HttpAuth:
    modes: tuple[str, ...] = ()
    bearer_token: str = ""
    username: str = ""
    password: str = ""
    api_key: str = ""
    api_key_method: str = "header"
    key_param_name: str = ""
    custom_header: str = ""
    custom_value: str = ""
    cert: str = ""
    key: str = ""
    ca: str = ""

    def enabled(self, mode: str) -> bool:
        return mode in self.modes


def _metadata_first(config: ScalerConfig, name: str) -> str | None:
    """KEDA's ``order=triggerMetadata;authParams`` (the shared helper looks at auth first)."""
    value = config.metadata.get(name) or config.auth_params.get(name)
    return value or None


def parse_auth(config: ScalerConfig, supported: tuple[str, ...]) -> HttpAuth:
    """The trigger's ``authModes`` and their parameters; ScalerConfigError names what is missing."""
    text = _metadata_first(config, "authModes") or _metadata_first(config, "authMode") or ""
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    for mode in modes:
        if mode not in KNOWN_AUTH_MODES:
            raise ScalerConfigError(f"{config.label}: authModes: {mode!r} is not one of {', '.join(KNOWN_AUTH_MODES)}")
        if mode not in supported:
            raise ScalerConfigError(f"{config.label}: authModes: {mode!r} is not supported by Capstan's "
                                    f"{config.trigger_type} scaler (supported: {', '.join(supported)})")
    exclusive = [m for m in modes if m in _EXCLUSIVE_MODES]
    if len(exclusive) > 1:
        raise ScalerConfigError(f"{config.label}: authModes: {' and '.join(exclusive)} cannot be combined")
    auth_value = config.auth_params.get
    auth = HttpAuth(
        modes=modes,
        bearer_token=auth_value("bearerToken") or auth_value("token") or "",
        username=auth_value("username") or "",
        password=auth_value("password") or "",
        api_key=_metadata_first(config, "apiKey") or "",
        api_key_method=_metadata_first(config, "method") or "header",
        key_param_name=_metadata_first(config, "keyParamName") or "",
        custom_header=auth_value("customAuthHeader") or "",
        custom_value=auth_value("customAuthValue") or "",
        cert=auth_value("cert") or "",
        key=auth_value("key") or "",
        ca=auth_value("ca") or "",
    )
    _check_auth(config, auth)
    return auth


def _check_auth(config: ScalerConfig, auth: HttpAuth) -> None:
    def need(condition: bool, what: str) -> None:
        if not condition:
            raise ScalerConfigError(f"{config.label}: {what}")

    if auth.enabled("bearer"):
        need(bool(auth.bearer_token), "authModes bearer needs bearerToken in the TriggerAuthentication")
    if auth.enabled("basic"):
        need(bool(auth.username), "authModes basic needs username (and password) in the TriggerAuthentication")
    if auth.enabled("tls"):
        need(bool(auth.cert and auth.key), "authModes tls needs cert and key in the TriggerAuthentication")
    if auth.enabled("custom"):
        need(bool(auth.custom_header and auth.custom_value),
             "authModes custom needs customAuthHeader and customAuthValue in the TriggerAuthentication")
    if auth.enabled("apiKey"):
        need(bool(auth.api_key), "authModes apiKey needs apiKey")
        need(auth.api_key_method in ("header", "query"),
             f"method: {auth.api_key_method!r} is not one of header, query")


def apply_auth(auth: HttpAuth, headers: dict[str, str], params: dict[str, str]) -> None:
    """Add the credentials of the enabled modes to a request's headers and query parameters."""
    if auth.enabled("bearer"):
        headers["Authorization"] = f"Bearer {auth.bearer_token}"
    if auth.enabled("basic"):
        token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    if auth.enabled("custom"):
        headers[auth.custom_header] = auth.custom_value
    if auth.enabled("apiKey"):
        if auth.api_key_method == "query":
            params[auth.key_param_name or "api_key"] = auth.api_key
        else:
            headers[auth.key_param_name or "X-API-KEY"] = auth.api_key


def key_values(config: ScalerConfig, name: str) -> dict[str, str]:
    """KEDA's map syntax: ``k=v,k2=v2`` (each item exactly one ``=``; spaces around are trimmed)."""
    text = md.raw(config, name)
    result: dict[str, str] = {}
    if not text:
        return result
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split("=")
        if len(parts) != 2 or not parts[0].strip():
            raise ScalerConfigError(f"{config.label}: metadata.{name}: expected key=value, got {item!r}")
        result[parts[0].strip()] = parts[1].strip()
    return result


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(config: ScalerConfig, name: str) -> float | None:
    """A Go duration ("500ms", "1m30s") or a whole number of milliseconds, as KEDA reads ``timeout``."""
    text = md.raw(config, name)
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text) / 1000
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ScalerConfigError(f"{config.label}: metadata.{name}: {text!r} is not a duration "
                                "(e.g. '500ms', '3s') or a number of milliseconds")
    return total


def _ssl_context(auth: HttpAuth, unsafe_ssl: bool) -> ssl.SSLContext | bool:
    if not (auth.ca or auth.enabled("tls")):
        return not unsafe_ssl
    context = ssl.create_default_context()
    if unsafe_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if auth.ca:
        context.load_verify_locations(cadata=auth.ca)
    if auth.enabled("tls"):
        # load_cert_chain only reads files: write the PEM text to a private temporary directory.
        with tempfile.TemporaryDirectory() as folder:
            cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
            for path, text in ((cert_path, auth.cert), (key_path, auth.key)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
                    handle.write(text)
            context.load_cert_chain(cert_path, key_path)
    return context


@dataclass
class HttpSource:
    """One scaler's HTTP client: connection reuse across reads, closed by ``aclose``."""

    config: ScalerConfig
    auth: HttpAuth = field(default_factory=HttpAuth)
    unsafe_ssl: bool = False
    timeout: float = 3.0
    headers: Mapping[str, str] = field(default_factory=dict)
    _client: httpx.AsyncClient | None = None

    @classmethod
    def from_metadata(cls, config: ScalerConfig, supported_auth_modes: tuple[str, ...], *,
                      headers_field: str | None = None) -> HttpSource:
        """From KEDA's fields common to the HTTP triggers: ``timeout``, ``authModes`` (and their
        parameters), ``unsafeSsl`` and, for the scalers that take them, ``headers_field``'s headers."""
        timeout = duration_seconds(config, "timeout") or config.timeout_seconds
        auth = parse_auth(config, supported_auth_modes)
        unsafe_ssl = md.boolean(config, "unsafeSsl", False)
        headers = key_values(config, headers_field) if headers_field else {}
        return cls(config=config, auth=auth, unsafe_ssl=unsafe_ssl, timeout=timeout, headers=headers)

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            try:
                verify = _ssl_context(self.auth, self.unsafe_ssl)
            except (ssl.SSLError, ValueError, OSError) as exc:
                raise ScalerConfigError(f"{self.config.label}: TLS material is not usable: {exc}") from exc
            self._client = httpx.AsyncClient(verify=verify, timeout=self.timeout, follow_redirects=True)
        return self._client

    async def get(self, url: str, params: Mapping[str, str] | None = None) -> bytes:
        """GET and return the body of a 2xx answer; anything else is a ScalerError, within ``timeout``."""
        headers = dict(self.headers)
        query = dict(params or {})
        apply_auth(self.auth, headers, query)
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.client().get(url, params=query or None, headers=headers)
                body = await response.aread()
        except TimeoutError as exc:
            raise ScalerError(f"{self.config.label}: no answer from {_without_query(url)} "
                              f"within {self.timeout:g}s") from exc
        except httpx.HTTPError as exc:
            raise ScalerError(f"{self.config.label}: request to {_without_query(url)} failed: "
                              f"{exc or type(exc).__name__}") from exc
        if not 200 <= response.status_code < 300:
            raise ScalerError(f"{self.config.label}: {_without_query(url)} answered HTTP {response.status_code}: "
                              f"{body[:200].decode(errors='replace').strip()}")
        return body

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _without_query(url: str) -> str:
    """URLs in messages lose their query string, which may carry an API key."""
    return url.split("?", 1)[0]
