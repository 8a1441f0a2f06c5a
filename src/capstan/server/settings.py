"""Settings of ``capstan server``, filled from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ServerSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    node_name: str | None = None
    cpu: str | None = None
    memory: str | None = None
    extended_resources: dict[str, int] = field(default_factory=dict)
    keep_workloads: bool = False

    @property
    def pods_root(self) -> Path:
        return self.data_dir / "pods"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.db"
