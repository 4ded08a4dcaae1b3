"""Layered, validated settings: what an operator sees when a value is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from kefu.config import load_settings
from kefu.errors import ConfigError


def test_defaults_are_embedded_and_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.llm.for_role("chat").backend == "embedded"
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'kefu.db'}"


def test_environment_overrides_nested_keys_and_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEFU_LLM__BACKEND", "openai")
    monkeypatch.setenv("KEFU_LLM__BASE_URL", "http://127.0.0.1:8001/v1")
    monkeypatch.setenv("KEFU_LLM__MODEL", "qwen3-8b")
    monkeypatch.setenv("KEFU_LLM__ROLES__CLASSIFICATION__MODEL", "qwen3-1.7b")
    monkeypatch.setenv("KEFU_SERVER__PORT", "9000")
    settings = load_settings()
    assert settings.server.port == 9000
    assert settings.llm.for_role("chat").model == "qwen3-8b"
    assert settings.llm.for_role("classification").model == "qwen3-1.7b"
    assert settings.llm.for_role("classification").base_url == "http://127.0.0.1:8001/v1"


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEFU_SERVER__PORT", "eighty")
    with pytest.raises(ConfigError, match="KEFU_SERVER__PORT: Input should be a valid integer"):
        load_settings()


def test_openai_backend_without_url_explains_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEFU_LLM__BACKEND", "openai")
    with pytest.raises(ConfigError, match="set KEFU_LLM__BASE_URL"):
        load_settings()


def test_unknown_keys_are_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEFU_DATABSE_URL", "postgresql+asyncpg://x")
    with pytest.raises(ConfigError, match=r"unknown setting.*KEFU_DATABSE_URL"):
        load_settings()
    monkeypatch.delenv("KEFU_DATABSE_URL")
    (tmp_path / "kefu.yaml").write_text("server:\n  port: 8100\n  prot: 1\n")
    monkeypatch.setenv("KEFU_CONFIG", str(tmp_path / "kefu.yaml"))
    with pytest.raises(ConfigError, match="KEFU_SERVER__PROT: Extra inputs are not permitted"):
        load_settings()


def test_yaml_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "kefu.yaml").write_text("server:\n  port: 8100\nchat:\n  history_tokens: 500\n")
    monkeypatch.setenv("KEFU_CONFIG", str(tmp_path / "kefu.yaml"))
    monkeypatch.setenv("KEFU_CHAT__HISTORY_TOKENS", "700")
    settings = load_settings()
    assert settings.server.port == 8100 and settings.chat.history_tokens == 700


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEFU_LLM__BACKEND", "openai")
    monkeypatch.setenv("KEFU_LLM__BASE_URL", "https://dashscope.example/v1")
    monkeypatch.setenv("KEFU_LLM__API_KEY", "sk-very-secret")
    monkeypatch.setenv("KEFU_DATABASE_URL", "postgresql+asyncpg://kefu:hunter2@db:5432/kefu")
    shown = str(load_settings().masked())
    assert "sk-very-secret" not in shown and "hunter2" not in shown
    assert "postgresql+asyncpg://kefu:***@db:5432/kefu" in shown
