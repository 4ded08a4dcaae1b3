"""A real HTTP server on 127.0.0.1 that answers every request with an error: an LLM endpoint that is broken."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FailingServer:
    """Where the broken endpoint listens and what it was asked."""

    base_url: str
    status: int
    paths: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.paths)


@contextmanager
def failing_server(status: int = 500) -> Iterator[FailingServer]:
    """Serve an OpenAI-style error body with `status` for every POST and GET; yields its `/v1` base URL."""
    record = FailingServer(base_url="", status=status)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _fail(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            with lock:
                record.paths.append(self.path)
            body = json.dumps({"error": {"message": "the model server is broken", "type": "server_error"}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = _fail
        do_GET = _fail

        def log_message(self, format: str, *args: object) -> None:
            return None  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    record.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, name="failing-llm", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
