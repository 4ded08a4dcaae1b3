"""The `kefu` command line as an operator uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_kefu(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kefu", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    clean.update({"KEFU_DATA_DIR": str(tmp_path / "data"), "KEFU_CONFIG": str(tmp_path / "none.yaml")})
    return clean


def test_doctor_prints_masked_config_and_passes(env: dict[str, str]) -> None:
    env.update({"KEFU_LLM__BACKEND": "testing", "KEFU_LLM__API_KEY": "sk-top-secret"})
    result = run_kefu("doctor", env=env)
    assert result.returncode == 0, result.stderr
    assert "sk-top-secret" not in result.stdout and "**********" in result.stdout
    assert "[ok  ] database: sqlite reachable" in result.stdout
    assert "[ok  ] llm.chat: testing:" in result.stdout


def test_doctor_fails_when_the_llm_endpoint_is_dead(env: dict[str, str]) -> None:
    env.update(
        {"KEFU_LLM__BACKEND": "openai", "KEFU_LLM__BASE_URL": "http://127.0.0.1:9/v1", "KEFU_LLM__MAX_RETRIES": "0"}
    )
    result = run_kefu("doctor", env=env)
    assert result.returncode == 1
    assert "[FAIL] llm.chat" in result.stdout and "127.0.0.1:9" in result.stdout


def test_bad_config_is_a_clear_cli_error(env: dict[str, str]) -> None:
    env["KEFU_SERVER__PORT"] = "eighty"
    result = run_kefu("serve", env=env)
    assert result.returncode == 2
    assert "KEFU_SERVER__PORT" in result.stderr and "Traceback" not in result.stderr


def test_chat_repl_in_process(env: dict[str, str]) -> None:
    env["KEFU_LLM__BACKEND"] = "testing"
    result = subprocess.run(
        [sys.executable, "-m", "kefu", "chat"], input="你好\n", capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "测试模式" in result.stdout
