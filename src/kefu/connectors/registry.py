"""Loads `actions.yaml` (connectors and the actions they offer) and calls actions by name."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Self

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kefu.connectors.base import ActionKind, ActionResult, ActionSpec, Connector
from kefu.connectors.http import HttpConnector, HttpOperation, operations_from_openapi
from kefu.connectors.python import PythonConnector, resolve_callable
from kefu.datafiles import load_yaml_model, yaml_line
from kefu.errors import DataFileError

_ENV = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")
_NAME = r"^[a-z][a-z0-9_]{0,63}$"


def expand_env(value: str) -> str:
    """`${NAME:-default}` → the environment variable, or the default (an operator keeps secrets out of files)."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is None and default is None:
            raise ValueError(f"environment variable {name} is not set (and no default is given)")
        return found if found is not None else default or ""

    return _ENV.sub(one, value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectorConfig(_Strict):
    """One backend system: an HTTP API or Python callables."""

    type: Literal["http", "python"]
    base_url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    retries: int = Field(default=2, ge=0, le=5)
    """Retries of reads on timeouts, connection errors and 5xx; writes are never retried."""
    openapi: str | None = None
    """An OpenAPI document (file next to actions.yaml, or URL) whose operationIds actions may name."""

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.type == "http" and not self.base_url:
            raise ValueError("an http connector needs base_url")
        return self


class ActionConfig(_Strict):
    """One operation a flow or the agent may perform."""

    connector: str
    kind: ActionKind
    description: str = ""
    params: list[str] = Field(default_factory=list)
    required: list[str] | None = None
    """Defaults to every param."""
    identity_params: list[str] = Field(default_factory=list)
    """Params naming something the customer owns (an order id); checked against the verified customer."""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] | None = None
    path: str | None = None
    query: list[str] = Field(default_factory=list)
    operation: str | None = None
    """An operationId in the connector's OpenAPI document, instead of method and path."""
    function: str | None = None
    """`package.module:function`, for a python connector."""
    response: dict[str, Any] | None = None
    """JSON Schema of a successful response (http)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        unknown = set(self.identity_params) | set(self.required or []) | set(self.query)
        unknown -= set(self.params)
        if unknown:
            raise ValueError(f"names {sorted(unknown)} are not in params {self.params}")
        return self


class ActionsFile(_Strict):
    version: int = 1
    connectors: dict[str, ConnectorConfig]
    actions: dict[str, ActionConfig]

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Cross-references a field validator cannot see (action → connector), each with where it is in the file."""
        found: list[tuple[tuple[str, ...], str]] = []
        for name, action in self.actions.items():
            where = ("actions", name)
            connector = self.connectors.get(action.connector)
            if not re.match(_NAME, name):
                found.append((where, f"action name {name!r} must be snake_case"))
            elif connector is None:
                message = f"action {name!r} uses connector {action.connector!r}, which is not defined"
                found.append(((*where, "connector"), message))
            elif connector.type == "http" and not action.operation and not (action.method and action.path):
                found.append((where, f"action {name!r} needs method and path (or operation)"))
            elif action.operation and not connector.openapi:
                message = f"action {name!r} names an operation but connector {action.connector!r} has no openapi"
                found.append(((*where, "operation"), message))
            elif connector.type == "python" and not action.function:
                found.append((where, f"action {name!r} needs function: package.module:function"))
        return found


class Actions:
    """Every action of the shop, by name, over its connectors."""

    def __init__(self, specs: dict[str, ActionSpec], connectors: dict[str, Connector]) -> None:
        self.specs = specs
        self.connectors = connectors

    def get(self, name: str) -> ActionSpec | None:
        return self.specs.get(name)

    async def call(self, name: str, args: dict[str, Any], *, idempotency_key: str | None = None) -> ActionResult:
        spec = self.specs.get(name)
        if spec is None:
            return ActionResult(ok=False, error_code="unknown_action", message=f"no action named {name!r}")
        missing = [p for p in spec.required if args.get(p) in (None, "")]
        if missing:
            return ActionResult(ok=False, error_code="missing_arguments", message=f"missing {', '.join(missing)}")
        clean = {k: v for k, v in args.items() if k in spec.params}
        if spec.writes and not idempotency_key:
            raise ValueError(f"write action {name!r} called without an idempotency key")
        return await self.connectors[spec.connector].call(spec, clean, idempotency_key=idempotency_key)

    async def aclose(self) -> None:
        for connector in self.connectors.values():
            await connector.aclose()


def load_actions(path: Path, *, transports: dict[str, httpx.AsyncBaseTransport] | None = None) -> Actions:
    """Load actions.yaml; a mistake is reported with file and line. `transports` lets tests route HTTP in process."""
    config = load_yaml_model(path, ActionsFile)
    problems = config.problems()
    if problems:
        # checked here rather than in a model validator, which could only point at the top of the file
        loc, problem = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataFileError(str(path), yaml_line(path, loc), f"{'.'.join(loc)}: {problem}{more}")
    specs = {
        name: ActionSpec(
            name=name,
            kind=a.kind,
            connector=a.connector,
            description=a.description,
            params=tuple(a.params),
            required=tuple(a.required if a.required is not None else a.params),
            identity_params=tuple(a.identity_params),
        )
        for name, a in config.actions.items()
    }
    connectors: dict[str, Connector] = {}
    for cname, c in config.connectors.items():
        mine = {n: a for n, a in config.actions.items() if a.connector == cname}
        try:
            connectors[cname] = _build(cname, c, mine, path.parent, (transports or {}).get(cname))
        except _ActionProblem as exc:
            raise DataFileError(str(path), yaml_line(path, exc.loc), f"connector {cname!r}: {exc}") from None
        except (ValueError, KeyError, OSError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            line = yaml_line(path, ("connectors", cname))
            raise DataFileError(str(path), line, f"connector {cname!r}: {reason}") from None
    return Actions(specs, connectors)


class _ActionProblem(ValueError):
    """An action's entry cannot be used (its function does not import, its operationId is unknown)."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _build(
    name: str,
    config: ConnectorConfig,
    actions: dict[str, ActionConfig],
    base_dir: Path,
    transport: httpx.AsyncBaseTransport | None,
) -> Connector:
    if config.type == "python":
        functions = {}
        for n, a in actions.items():
            try:
                functions[n] = resolve_callable(a.function or "")
            except ValueError as exc:
                raise _ActionProblem(("actions", n, "function"), str(exc)) from None
        return PythonConnector(name, functions)
    document = _load_openapi(config.openapi, base_dir) if config.openapi else None
    operations = {
        n: HttpOperation(a.method, a.path, tuple(a.query), a.response)
        for n, a in actions.items()
        if a.method and a.path
    }
    if document is not None:
        for n, a in actions.items():
            if a.operation:
                try:
                    operations |= operations_from_openapi(document, {n: a.operation})
                except KeyError as exc:
                    raise _ActionProblem(("actions", n, "operation"), str(exc.args[0])) from None
    return HttpConnector(
        name,
        base_url=expand_env(config.base_url or ""),
        operations=operations,
        headers={k: expand_env(v) for k, v in config.headers.items()},
        timeout_s=config.timeout_s,
        retries=config.retries,
        openapi=document,
        transport=transport,
    )


def _load_openapi(location: str, base_dir: Path) -> dict[str, Any]:
    location = expand_env(location)
    if location.startswith(("http://", "https://")):
        response = httpx.get(location, timeout=10.0)
        response.raise_for_status()
        document = response.json()
    else:
        text = (base_dir / location).read_text(encoding="utf-8")
        document = json.loads(text) if location.endswith(".json") else yaml.safe_load(text)
    if not isinstance(document, dict) or "paths" not in document:
        raise ValueError(f"{location} is not an OpenAPI document (no 'paths')")
    return document
