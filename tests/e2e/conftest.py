from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import CapstanServer, kill_all_containers


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CapstanServer]:
    capstan = CapstanServer(tmp_path / "data")
    capstan.start()
    try:
        yield capstan
    finally:
        capstan.stop()
        kill_all_containers(capstan.data_dir)
