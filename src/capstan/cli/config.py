"""Where the CLI finds the server and its token.

Each setting is taken from the first source that has it:

1. ``--server`` / ``--token`` flags;
2. ``CAPSTAN_SERVER`` / ``CAPSTAN_TOKEN`` environment variables;
3. a config.yaml (``{server: ..., token: ...}``, written by ``capstan server``), taken from
   ``--data-dir DIR`` (DIR/config.yaml), else ``CAPSTAN_CONFIG`` (a path to a config.yaml),
   else the default data directory ``platformdirs.user_data_dir("capstan")``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import yaml

CONFIG_FILE = "config.yaml"


class ConfigError(Exception):
    """No usable client configuration."""


@dataclass(frozen=True)
class ClientConfig:
    server: str
    token: str
    source: str  # where it came from, for messages


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("capstan"))


def _config_file(data_dir: Path | None, env: Mapping[str, str]) -> tuple[Path, str]:
    if data_dir is not None:
        return data_dir / CONFIG_FILE, f"--data-dir {data_dir}"
    if env.get("CAPSTAN_CONFIG"):
        return Path(env["CAPSTAN_CONFIG"]), "CAPSTAN_CONFIG"
    return default_data_dir() / CONFIG_FILE, "the default data directory"


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} is not a Capstan client config (expected server: and token:)")
    return loaded


def resolve_config(*, server: str | None = None, token: str | None = None, data_dir: Path | None = None,
                   env: Mapping[str, str] | None = None) -> ClientConfig:
    env = os.environ if env is None else env
    server = server or env.get("CAPSTAN_SERVER") or None
    token = token or env.get("CAPSTAN_TOKEN") or None
    source = "flags and environment"
    if server is None or token is None:
        path, origin = _config_file(data_dir, env)
        from_file = _read_config_file(path)
        if not from_file:
            missing = " and ".join(n for n, v in (("server", server), ("token", token)) if v is None)
            raise ConfigError(
                f"no Capstan {missing} configured: {path} (from {origin}) does not exist. Start "
                f"`capstan server`, or pass --server/--token, set CAPSTAN_SERVER/CAPSTAN_TOKEN, "
                f"--data-dir DIR or CAPSTAN_CONFIG")
        server = server or from_file.get("server")
        token = token or from_file.get("token")
        source = str(path)
        if not server or not token:
            raise ConfigError(f"{path} lacks {'server' if not server else 'token'}")
    return ClientConfig(server=str(server).rstrip("/"), token=str(token), source=source)
