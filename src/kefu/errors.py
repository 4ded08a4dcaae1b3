"""One rooted exception hierarchy: caller mistakes apart from runtime failures; data lives on the exception."""

from __future__ import annotations


class KefuError(Exception):
    """Root of every error kefu raises on purpose."""

    code = "internal_error"


class UserError(KefuError):
    """The caller (customer, operator, channel) asked for something invalid; maps to a 4xx."""

    code = "invalid_request"
    status_code = 400


class ConfigError(UserError):
    """Configuration is missing or invalid; the message names the key and what is allowed."""

    code = "config_error"


class DataFileError(UserError):
    """An operator data file (YAML, CSV, Markdown) is invalid; names the file and the line."""

    code = "data_file_error"

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class NotFoundError(UserError):
    """A referenced thing (session, message) does not exist."""

    code = "not_found"
    status_code = 404


class ConflictError(UserError):
    """The request conflicts with the current state."""

    code = "conflict"
    status_code = 409


class BackendError(KefuError):
    """A dependency (LLM, database, shop backend) failed at run time."""

    code = "backend_error"


class StoreUnavailableError(BackendError):
    """The conversation store cannot be reached; nothing can be processed safely."""

    code = "store_unavailable"


class EmbeddingError(BackendError):
    """The embedding backend failed to turn texts into vectors (server down, bad answer)."""

    code = "embedding_error"


class LLMError(BackendError):
    """The LLM backend failed to produce a reply."""

    code = "llm_error"


class LLMUnavailableError(LLMError):
    """The LLM endpoint could not be reached or refused the connection."""

    code = "llm_unavailable"


class LLMTimeoutError(LLMError):
    """The LLM endpoint did not answer in time."""

    code = "llm_timeout"


class LLMHTTPError(LLMError):
    """The LLM endpoint answered with an HTTP error status."""

    code = "llm_http_error"

    def __init__(
        self, status_code: int, body: str, *, endpoint: str | None = None, retry_after_s: float | None = None
    ) -> None:
        where = f"LLM endpoint {endpoint}" if endpoint else "LLM endpoint"
        super().__init__(f"{where} returned HTTP {status_code}: {body[:300]}")
        self.status_code = status_code
        self.body = body
        self.endpoint = endpoint
        self.retry_after_s = retry_after_s
        """The wait the endpoint asked for (Retry-After), if any."""


class LLMResponseError(LLMError):
    """The LLM answered, but not in a form kefu can use (bad JSON, schema mismatch)."""

    code = "llm_bad_response"


class LLMBusyError(LLMError):
    """Every slot of an LLM backend is taken and the request could not wait (queue full, or waited too long)."""

    code = "llm_busy"

    def __init__(self, backend: str, reason: str, *, in_flight: int, waiting: int, waited_s: float) -> None:
        why = (
            f"{waiting} requests are already waiting"
            if reason == "queue_full"
            else f"no slot came free within {waited_s:.1f}s"
        )
        super().__init__(
            f"LLM backend {backend!r} is busy: {in_flight} requests in flight and {why}; raise "
            "KEFU_LLM__MAX_CONCURRENCY if the model server has capacity to spare, or add capacity"
        )
        self.backend = backend
        self.reason = reason
        """`queue_full` (refused at once) or `timeout` (waited `queue_timeout_s`)."""
        self.in_flight = in_flight
        self.waiting = waiting
        self.waited_s = waited_s


class CircuitOpenError(LLMError):
    """Calls to a failing backend are suspended for a while to let it recover."""

    code = "llm_circuit_open"

    def __init__(self, backend: str, retry_in_s: float) -> None:
        super().__init__(f"LLM backend {backend!r} is failing; calls suspended for {retry_in_s:.0f}s")
        self.backend = backend
        self.retry_in_s = retry_in_s
