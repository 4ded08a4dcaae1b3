"""Actions over HTTP: a JSON API described in actions.yaml or by its OpenAPI document."""

from __future__ import annotations

import asyncio
import logging
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from kefu.connectors.base import ActionResult, ActionSpec
from kefu.http_client import USER_AGENT, aiohttp_transport, json_body, send, what_failed

log = logging.getLogger(__name__)
_RETRY_STATUS = {429, 502, 503, 504}
OPENAPI_URI = "urn:kefu:openapi"
"""Where the backend's OpenAPI document is registered, so `$ref`s inside response schemas resolve."""


@dataclass(frozen=True, slots=True)
class HttpOperation:
    """Where an action lives on the backend and what a valid answer looks like."""

    method: str
    path: str
    """A path template: `/orders/{order_id}`; the named arguments are URL-encoded into it."""
    query: tuple[str, ...] = ()
    """Arguments sent as query parameters; the rest (not in the path) form the JSON body of a write."""
    response_schema: dict[str, Any] | None = None
    """JSON Schema of a successful response body (validated; a mismatch is `invalid_response`)."""
    path_params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(n for _, n, _, _ in string.Formatter().parse(self.path) if n)
        object.__setattr__(self, "path_params", names)


class HttpConnector:
    """Calls a JSON HTTP API: auth header, timeouts, retries for reads only, response validation."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        operations: dict[str, HttpOperation],
        headers: dict[str, str] | None = None,
        timeout_s: float = 5.0,
        retries: int = 2,
        backoff_s: float = 0.2,
        openapi: dict[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.operations = operations
        self.retries = retries
        self.backoff_s = backoff_s
        self._base_url = base_url.rstrip("/")
        # Requests go straight to the transport, aiohttp's unless a test passes one (`kefu.http_client` says why).
        self._transport = transport or aiohttp_transport(self._base_url)
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        self._extensions = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        registry: Registry[Any] = Registry()
        if openapi is not None:
            registry = registry.with_resource(
                OPENAPI_URI, Resource.from_contents(openapi, default_specification=DRAFT202012)
            )
        self._validators = {
            action: Draft202012Validator(op.response_schema, registry=registry)
            for action, op in operations.items()
            if op.response_schema is not None
        }

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def call(self, spec: ActionSpec, args: dict[str, Any], *, idempotency_key: str | None) -> ActionResult:
        op = self.operations[spec.name]
        path = op.path.format(**{p: quote(str(args[p]), safe="") for p in op.path_params})
        query = {k: args[k] for k in op.query if args.get(k) is not None}
        body = {k: v for k, v in args.items() if k not in op.path_params and k not in op.query}
        headers = {**self._headers, "Idempotency-Key": idempotency_key} if idempotency_key else self._headers
        send_body = op.method in ("POST", "PUT", "PATCH")
        # Only reads are retried: a write that timed out may have happened, and the customer must not pay twice.
        tries = 1 + (self.retries if not spec.writes else 0)
        result = ActionResult(ok=False, error_code="backend_unavailable", message="not attempted")
        for attempt in range(1, tries + 1):
            result = await self._once(spec, op, path, query, body if send_body else None, headers, attempt)
            if result.ok or result.error_code not in ("backend_unavailable", "timeout", "backend_error"):
                return result
            if attempt < tries:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        return result

    async def _once(
        self,
        spec: ActionSpec,
        op: HttpOperation,
        path: str,
        query: dict[str, Any],
        body: dict[str, Any] | None,
        headers: dict[str, str],
        attempt: int,
    ) -> ActionResult:
        content = None
        if body is not None:
            content = json_body(body)
            headers = {**headers, "Content-Type": "application/json"}
        try:
            url = httpx.URL(self._base_url + path, params=query or None)
            request = httpx.Request(op.method, url, headers=headers, content=content, extensions=self._extensions)
            response = await send(self._transport, request)
        except httpx.HTTPError as exc:
            exc = what_failed(exc)
            if isinstance(exc, httpx.TimeoutException):
                message = f"{self.name} did not answer in time"
                return ActionResult(ok=False, error_code="timeout", message=message, attempts=attempt)
            message = f"{self.name} unreachable ({type(exc).__name__})"
            return ActionResult(ok=False, error_code="backend_unavailable", message=message, attempts=attempt)
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = None
        if response.status_code >= 400:
            return self._failure(response, payload, attempt)
        if not isinstance(payload, dict):
            return ActionResult(
                ok=False,
                error_code="invalid_response",
                message="the backend did not answer with a JSON object",
                status=response.status_code,
                attempts=attempt,
            )
        validator = self._validators.get(spec.name)
        if validator is not None:
            try:
                validator.validate(payload)
            except SchemaError as exc:
                where = "/".join(str(p) for p in exc.absolute_path) or "(body)"
                log.warning("action %s: response does not match its schema at %s", spec.name, where)
                return ActionResult(
                    ok=False,
                    error_code="invalid_response",
                    message=f"unexpected response at {where}: {exc.message}",
                    status=response.status_code,
                    attempts=attempt,
                )
        replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        return ActionResult(ok=True, data=payload, status=response.status_code, replayed=replayed, attempts=attempt)

    def _failure(self, response: httpx.Response, payload: Any, attempt: int) -> ActionResult:
        status = response.status_code
        error = payload.get("error") if isinstance(payload, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if status >= 500 or status in _RETRY_STATUS:
            code = "backend_error"
        elif status == 401:
            # kefu's own credentials for the shop are wrong: an operator's problem, never shown to a customer
            log.error("%s: the backend refused kefu's credentials (401): %s", self.name, message)
            code, message = "backend_auth", "the shop system refused kefu's credentials"
        elif not isinstance(code, str):
            code = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, f"http_{status}")
        return ActionResult(
            ok=False, error_code=code, message=str(message or response.reason_phrase), status=status, attempts=attempt
        )


def operations_from_openapi(document: dict[str, Any], wanted: dict[str, str]) -> dict[str, HttpOperation]:
    """Look up actions by operationId (`wanted`: action → operationId) in an OpenAPI 3 document."""
    found: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for path, item in (document.get("paths") or {}).items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                found[operation["operationId"]] = (method.upper(), path, operation)
    operations: dict[str, HttpOperation] = {}
    for action, op_id in wanted.items():
        if op_id not in found:
            raise KeyError(f"operationId {op_id!r} (action {action!r}) is not in the OpenAPI document")
        method, path, operation = found[op_id]
        query = tuple(p["name"] for p in operation.get("parameters", []) if p.get("in") == "query")
        operations[action] = HttpOperation(method, path, query, _success_schema(path, method, operation))
    return operations


def _success_schema(path: str, method: str, operation: dict[str, Any]) -> dict[str, Any] | None:
    """A reference to the 2xx JSON schema inside the registered document (its own `$ref`s then resolve)."""
    for status, response in (operation.get("responses") or {}).items():
        content = (response.get("content") or {}).get("application/json") or {}
        if str(status).startswith("2") and isinstance(content.get("schema"), dict):
            parts = ["paths", path, method.lower(), "responses", str(status), "content", "application/json", "schema"]
            pointer = "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)
            return {"$ref": f"{OPENAPI_URI}#/{pointer}"}
    return None
