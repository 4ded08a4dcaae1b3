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


def test_chat_against_a_server_that_requires_an_api_key(env: dict[str, str], tmp_path: Path) -> None:
    import re
    import socket
    import time

    import httpx

    env.update({"KEFU_LLM__BACKEND": "testing", "KEFU_AUTH__MODE": "required", "KEFU_UNDERSTANDING__ENABLED": "false"})
    created = run_kefu("keys", "create", "--channel", "cli", "--name", "terminal", env=env)
    assert created.returncode == 0, created.stderr
    key = re.search(r"kefu_\S+", created.stdout)
    assert key is not None, created.stdout
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env.update({"KEFU_SERVER__HOST": "127.0.0.1", "KEFU_SERVER__PORT": str(port)})
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen([sys.executable, "-m", "kefu", "serve"], env=env, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "kefu serve did not get ready in 90 s"
            time.sleep(0.3)

        def chat(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "kefu", "chat", "--url", url, *extra],
                input="你好\n",
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )

        refused = chat()
        assert "server said 401" in refused.stdout and "API key" in refused.stdout
        answered = chat("--api-key", key.group(0))
        assert answered.returncode == 0, answered.stderr
        assert "测试模式" in answered.stdout and "server said" not in answered.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_doctor_checks_the_configured_redis(env: dict[str, str], redis_url: str) -> None:
    env.update({"KEFU_LLM__BACKEND": "testing", "KEFU_REDIS_URL": redis_url})
    result = run_kefu("doctor", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ok  ] redis:" in result.stdout
    env["KEFU_REDIS_URL"] = "redis://:hunter2@127.0.0.1:9/0"
    result = run_kefu("doctor", env=env)
    assert result.returncode == 1
    assert "[FAIL] redis: Redis at redis://:***@127.0.0.1:9/0 does not answer" in result.stdout
    assert "hunter2" not in result.stdout
