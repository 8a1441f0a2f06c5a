"""The token file and the client config file: generated once, private from the start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from capstan.server.auth import load_or_create_token, write_client_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_token_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = load_or_create_token(data)
    assert len(token) >= 32
    assert mode(data / "token") == 0o600
    assert load_or_create_token(data) == token  # stable across restarts


def test_token_file_is_never_readable_by_others_even_with_a_loose_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        load_or_create_token(tmp_path)
    finally:
        os.umask(previous)
    assert mode(tmp_path / "token") == 0o600


def test_a_token_file_with_a_loose_mode_is_tightened(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    (tmp_path / "token").chmod(0o644)
    assert load_or_create_token(tmp_path) == token
    assert mode(tmp_path / "token") == 0o600


def test_two_data_dirs_get_different_tokens(tmp_path: Path) -> None:
    assert load_or_create_token(tmp_path / "a") != load_or_create_token(tmp_path / "b")


def test_client_config_holds_server_and_token_with_mode_0600(tmp_path: Path) -> None:
    path = write_client_config(tmp_path, "http://127.0.0.1:4321", "tok")
    assert yaml.safe_load(path.read_text()) == {"server": "http://127.0.0.1:4321", "token": "tok"}
    assert mode(path) == 0o600
    path.chmod(0o644)
    write_client_config(tmp_path, "http://127.0.0.1:9999", "tok2")
    assert mode(path) == 0o600
    assert yaml.safe_load(path.read_text())["server"] == "http://127.0.0.1:9999"
