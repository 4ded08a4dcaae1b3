"""`kefu demo` as a user runs it: kefu and the demo shop's backend as two processes that talk over HTTP.

The model is the scripted one (the embedded model has its own tests) and the knowledge directory is empty, so
the command starts quickly; everything else — the backend subprocess, its database, the flows, identity
verification — is what `make demo` runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import GUARDS_CACHE, UNDERSTANDING_CACHE
from tests.support.live_server import free_port


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, "kefu demo did not get ready in 120 s:\n" + log.read_text(errors="replace")
        time.sleep(0.3)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_kefu_demo_runs_the_shop_backend_and_completes_a_task_over_http(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEFU_", "LUMO_SHOP_"))}
    empty_knowledge = tmp_path / "knowledge"
    empty_knowledge.mkdir()
    env.update(
        {
            "KEFU_DATA_DIR": str(tmp_path / "data"),
            "KEFU_CONFIG": str(tmp_path / "none.yaml"),
            "KEFU_LLM__BACKEND": "testing",
            "KEFU_KNOWLEDGE__SOURCE_DIR": str(empty_knowledge),
            "KEFU_UNDERSTANDING__CACHE_DIR": str(UNDERSTANDING_CACHE),
            "KEFU_UNDERSTANDING__LLM_FALLBACK": "false",
            "KEFU_GUARDS__CACHE_DIR": str(GUARDS_CACHE),
        }
    )
    port, backend_port = free_port(), free_port()
    log = tmp_path / "demo.log"
    with log.open("wb") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "kefu", "demo", "--port", str(port), "--backend-port", str(backend_port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, demo, log)
        assert f"http://127.0.0.1:{backend_port}/docs" in log.read_text(errors="replace")

        def say(text: str, session_id: str | None) -> dict[str, str]:
            body = {"user_id": "demo-visitor", "text": text, **({"session_id": session_id} if session_id else {})}
            response = httpx.post(f"{url}/v1/chat", json=body, timeout=60)
            assert response.status_code == 200, response.text
            return dict(response.json())

        first = say("我要退货，订单 LM26110625", None)
        assert "手机号" in first["reply"]
        verified = say("0827", first["session_id"])
        assert "退货原因" in verified["reply"], verified["reply"]  # the order was read from the backend over HTTP

        order = httpx.get(
            f"http://127.0.0.1:{backend_port}/orders/LM26110625",
            headers={"Authorization": "Bearer lumo-demo-token"},
            timeout=10,
        )
        assert order.status_code == 200 and order.json()["status"] == "delivered"
        assert (tmp_path / "data" / "lumo_shop.db").is_file()  # the backend keeps its own database
    finally:
        demo.terminate()
        demo.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _listening(backend_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _listening(backend_port), "stopping kefu demo left the shop backend running"


def test_kefu_demo_refuses_a_busy_backend_port_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEFU_", "LUMO_SHOP_"))}
    env.update(
        {
            "KEFU_DATA_DIR": str(tmp_path / "data"),
            "KEFU_CONFIG": str(tmp_path / "none.yaml"),
            "KEFU_LLM__BACKEND": "testing",
        }
    )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "kefu", "demo", "--port", str(free_port()), "--backend-port", str(taken)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode != 0
    assert f"port {taken}" in result.stderr + result.stdout and "--backend-port" in result.stderr + result.stdout
