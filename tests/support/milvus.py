"""A real `milvus-lite server` on loopback for the Milvus index tests (the multi-process mode of Milvus Lite)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def milvus_lite_server(data_dir: Path, *, timeout_s: float = 60.0) -> Iterator[str]:
    """Start `milvus-lite server` on a free loopback port; yields its http:// URI and stops it afterwards."""
    executable = shutil.which("milvus-lite") or str(Path(sys.executable).parent / "milvus-lite")
    port = _free_port()
    log = (data_dir.parent / "milvus-lite.log").open("wb")
    proc = subprocess.Popen(
        [executable, "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"milvus-lite server exited with code {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"milvus-lite server did not listen on port {port}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
