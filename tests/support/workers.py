"""`kefu serve --workers N` as a real process for tests: its JSON log tells which worker served what.

The workers listen on one port and the kernel hands each new connection to either of them, so tests open fresh
connections (`fresh_connections`) and read which worker served what from the log (every line carries its pid).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection

from kefu.worker_memory import ENV
from tests.support.live_server import free_port


@dataclass(frozen=True)
class Server:
    """A running `kefu serve --workers N` and its JSON log."""

    url: str
    log: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def worker_of(self, socket: ClientConnection) -> int:
        """The pid of the worker that accepted this WebSocket (uvicorn logs the client's address and port)."""
        client = f"127.0.0.1:{socket.local_address[1]} - "
        for _ in range(50):
            for line in self.lines():
                if line["message"].startswith(client) and "[accepted]" in line["message"]:
                    return int(line["pid"])
            time.sleep(0.05)
        raise AssertionError(f"no worker logged accepting {client}")

    def workers_serving(self, request: str) -> list[int]:
        """The pid of the worker of each access-log line for `request` (e.g. "GET /v1/sessions/")."""
        return [
            int(line["pid"])
            for line in self.lines()
            if line["logger"] == "uvicorn.access" and request in line["message"]
        ]


@contextmanager
def serve_workers(settings: Mapping[str, str], root: Path, *, tables: set[str], workers: int = 2) -> Iterator[Server]:
    """`kefu serve` with `workers` processes and `settings` (KEFU_...), logging JSON to `root`/serve.log.

    Checks on the way what the serving process shares with its workers: a block of shared memory for each of
    `tables` (`vectors`, `answers`), named to every worker and removed when it exits.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(settings)
    env.update({"KEFU_SERVER__PORT": str(port), "KEFU_SERVER__WORKERS": str(workers), "KEFU_LOG_FORMAT": "json"})
    log = root / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "kefu", "serve"], env=env, stdout=sink, stderr=sink)
    server = Server(f"http://127.0.0.1:{port}", log)
    blocks: list[Path] = []
    try:
        deadline = time.monotonic() + 240
        started: set[int] = set()
        while len(started) < workers:  # every worker logged "Application startup complete"
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, (
                f"kefu serve --workers {workers} did not start in 240 s:\n{log.read_text()}"
            )
            time.sleep(0.2)
            started = {int(line["pid"]) for line in server.lines() if "startup complete" in line["message"]}
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        named = {_environ(pid).get(ENV) for pid in started}
        assert len(named) == 1 and None not in named, named
        kinds = dict(part.split("=", 1) for part in str(named.pop()).split(","))
        assert set(kinds) == tables, kinds
        blocks = [Path("/dev/shm") / name for name in kinds.values()]
        assert all(block.exists() for block in blocks), blocks
        yield server
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert not [b for b in blocks if b.exists()], "kefu serve left its workers' shared memory behind"


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def fresh_connections(base_url: str) -> httpx.AsyncClient:
    """A client that opens a new connection per request, which the kernel hands to either worker."""
    return httpx.AsyncClient(base_url=base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


async def counters(http: httpx.AsyncClient, name: str, label: str) -> dict[str, float]:
    """Counter `name` (without `_total`) by `label`, added up over every worker (they record into one directory)."""
    resp = await http.get("/metrics")
    assert resp.status_code == 200, resp.text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.text):
        if family.name == name:
            for sample in family.samples:
                if sample.name == f"{name}_total":
                    key = sample.labels[label]
                    counts[key] = counts.get(key, 0.0) + sample.value
    return counts
