"""Actions as Python callables: a shop that has an SDK, or logic that lives next to kefu."""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

from kefu.connectors.base import ActionResult, ActionSpec

log = logging.getLogger(__name__)


class ActionFailed(Exception):
    """Raised by an action callable to report a business error flows can branch on (`code`)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code


def resolve_callable(target: str) -> Callable[..., Any]:
    """`package.module:function` → the function; a clear error when it does not exist."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{target!r} is not of the form package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ValueError(f"{module_name!r} has no callable {attr!r}")
    return function  # type: ignore[no-any-return]


class PythonConnector:
    """Calls Python functions with the action's arguments (and `idempotency_key` when they accept it)."""

    def __init__(self, name: str, functions: dict[str, Callable[..., Any]]) -> None:
        self.name = name
        self.functions = functions

    async def aclose(self) -> None:
        return None

    async def call(self, spec: ActionSpec, args: dict[str, Any], *, idempotency_key: str | None) -> ActionResult:
        function = self.functions[spec.name]
        kwargs = dict(args)
        if "idempotency_key" in inspect.signature(function).parameters:
            kwargs["idempotency_key"] = idempotency_key
        try:
            value = function(**kwargs)
            if inspect.isawaitable(value):
                value = await value
        except ActionFailed as exc:
            return ActionResult(ok=False, error_code=exc.code, message=exc.message)
        except Exception as exc:
            log.exception("action %s failed in its Python callable", spec.name)
            return ActionResult(ok=False, error_code="backend_error", message=f"{type(exc).__name__}: {exc}")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return ActionResult(ok=False, error_code="invalid_response", message="the callable did not return a dict")
        return ActionResult(ok=True, data=value)
