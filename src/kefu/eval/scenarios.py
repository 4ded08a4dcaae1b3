"""Scenario tests as data: scripted conversations run against kefu over HTTP, checked turn by turn and at the end.

A scenario file (YAML, docs/scenarios.md) lists conversations a customer has with the shop and what must come
back: words the reply contains, a handoff, the actions the flow called and, once the conversation is over, the
state of the shop's backend read through kefu's own actions (and, where the backend keeps one, its write log).
The runner builds kefu in process once and plays every scenario as a new customer in a new session.
"""

from __future__ import annotations

import os
import tempfile
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from kefu.config import Settings
from kefu.connectors import Actions, load_actions
from kefu.connectors.registry import ActionsFile, expand_env
from kefu.datafiles import load_yaml_model, yaml_line
from kefu.errors import DataFileError, KefuError
from kefu.llm.base import LLMBackend

if TYPE_CHECKING:
    from kefu.services import Services

CHANNEL = "web"


class ScenarioSetupError(KefuError):
    """The scenarios cannot run: no actions file, an unknown connector, or the backend's reset hook failed."""

    code = "scenario_setup"


# ---- the file format -----------------------------------------------------------------------------------------


def _text(value: Any) -> Any:
    """A whole number in YAML (a tracking number, a phone number) is meant as text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _texts(value: Any) -> Any:
    return [_text(v) for v in value] if isinstance(value, list) else [_text(value)]


Text = Annotated[str, BeforeValidator(_text)]
Texts = Annotated[list[str], BeforeValidator(_texts)]
"""One string or a list of strings."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class ActionExpectation(_Strict):
    """An action the flow must have called in this turn: its arguments are a subset match."""

    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    ok: bool | None = None
    """True: the backend accepted it; False: it refused or failed."""
    error_code: str | None = None
    """The code the call failed with (`out_of_stock`, `outside_return_window`…)."""


class Turn(_Strict):
    """One customer message and what the reply must (not) be."""

    say: Text = Field(min_length=1)
    contains: Texts = Field(default_factory=list)
    """Every one of these appears in the reply (case and full/half width ignored)."""
    contains_any: Texts = Field(default_factory=list)
    """At least one of these appears in the reply."""
    not_contains: Texts = Field(default_factory=list)
    """None of these appears in the reply."""
    handoff: bool | None = None
    """The turn hands the customer to a person (true) or does not (false)."""
    intent: str | None = None
    """The intent kefu reported for the turn."""
    actions: list[ActionExpectation] = Field(default_factory=list)
    """Actions called this turn (each must match one call; other calls may happen too)."""
    not_called: Texts = Field(default_factory=list)
    """Actions that must not be called this turn; `write` stands for every write action."""


class BackendCheck(_Strict):
    """A read action called after the conversation; its answer must contain `expect`."""

    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    expect: dict[str, Any] = Field(default_factory=dict)
    """Subset match on the JSON answer; keys may be dotted paths (`policy.cancellable`, `items.0.sku`)."""
    error_code: str | None = None
    """Expect the read to fail with this code instead (`order_not_found`)."""


class Scenario(_Strict):
    """One conversation from a new customer in a new session."""

    name: str = Field(min_length=1, max_length=200)
    language: Literal["zh", "en"]
    description: str = ""
    user_id: str | None = Field(default=None, min_length=1, max_length=128)
    """The customer's id on the channel; default: a fresh `scenario-…` id per run."""
    turns: list[Turn] = Field(min_length=1)
    backend: list[BackendCheck] = Field(default_factory=list)
    writes: int | dict[str, int] | None = None
    """Writes the backend logged during the scenario: a total, or a count per order id (needs `write_log`)."""


class HttpHook(_Strict):
    """A request to one connector's backend (base URL and auth headers from actions.yaml)."""

    connector: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str = Field(pattern=r"^/")
    json_: dict[str, Any] | None = Field(default=None, alias="json")


class WriteLogHook(_Strict):
    """Where the backend lists the writes it performed, so `writes:` can count them."""

    connector: str
    path: str = Field(pattern=r"^/")
    order_param: str = "order_id"
    """The query parameter that narrows the list to one order."""
    items: str | None = "writes"
    """The key of the list in the JSON answer; null when the answer is the list itself."""


class ScenarioFile(_Strict):
    """A scenarios YAML file: optional clock, reset and write-log hooks, and the scenarios."""

    version: Literal[1] = 1
    now: Annotated[datetime | None, Field(strict=False)] = None
    """Pins kefu's clock (`dialogue.now`) for every scenario, e.g. the demo data's snapshot time."""
    reset: HttpHook | None = None
    """Called before each scenario, so each one starts from the same backend state."""
    write_log: WriteLogHook | None = None
    scenarios: list[Scenario] = Field(min_length=1)

    @model_validator(mode="after")
    def _timezone(self) -> Self:
        if self.now is not None and self.now.tzinfo is None:
            raise ValueError("now: give a time zone, e.g. 2026-11-20T15:00:00+08:00")
        return self


def load_scenarios(path: Path) -> ScenarioFile:
    """Parse and validate a scenarios file; every mistake names the file and the line."""
    file = load_yaml_model(path, ScenarioFile)
    seen: set[str] = set()
    for i, scenario in enumerate(file.scenarios):
        if scenario.name in seen:
            line = yaml_line(path, ("scenarios", i, "name"))
            raise DataFileError(str(path), line, f"scenario {scenario.name!r} appears twice")
        seen.add(scenario.name)
        if scenario.writes is not None and file.write_log is None:
            raise DataFileError(
                str(path),
                yaml_line(path, ("scenarios", i, "writes")),
                f"scenario {scenario.name!r} expects writes, but the file has no write_log: the backend must "
                "list its writes (e.g. write_log: {connector: shop, path: /admin/writes})",
            )
    return file


def check_actions(path: Path, file: ScenarioFile, actions: Actions) -> None:
    """Every action a scenario names exists in actions.yaml, and backend checks only read."""
    for i, scenario in enumerate(file.scenarios):
        named: list[tuple[str, tuple[int | str, ...]]] = [
            (a.action, ("scenarios", i, "turns", t, "actions", k, "action"))
            for t, turn in enumerate(scenario.turns)
            for k, a in enumerate(turn.actions)
        ]
        named += [(b.action, ("scenarios", i, "backend", k, "action")) for k, b in enumerate(scenario.backend)]
        for name, loc in named:
            spec = actions.get(name)
            if spec is None:
                known = ", ".join(sorted(actions.specs))
                raise DataFileError(
                    str(path), yaml_line(path, loc), f"unknown action {name!r}; actions.yaml defines {known}"
                )
            if loc[2] == "backend" and spec.writes:
                message = f"backend checks may only read, and {name!r} is a write action"
                raise DataFileError(str(path), yaml_line(path, loc), message)


# ---- matching ------------------------------------------------------------------------------------------------

_MISSING = object()


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _lookup(data: Any, key: str) -> Any:
    """`key` in `data`: a plain key first, else a dotted path through objects and lists (`items.0.sku`)."""
    if isinstance(data, dict) and key in data:
        return data[key]
    current = data
    for part in key.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def subset_problems(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where `actual` differs from `expected`: objects match on the keys given, lists when each expected item
    matches some actual item, numbers also when written as text; empty when it matches."""
    label = where or "(answer)"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{label}: expected an object, got {_short(actual)}"]
        problems = []
        for key, value in expected.items():
            found = _lookup(actual, str(key))
            path = f"{where}.{key}" if where else str(key)
            if found is _MISSING:
                if value is not None:
                    problems.append(f"{path}: missing (expected {_short(value)})")
                continue
            problems.extend(subset_problems(value, found, path))
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{label}: expected a list, got {_short(actual)}"]
        return [
            f"{label}: no item matches {_short(item)}"
            for item in expected
            if not any(not subset_problems(item, candidate) for candidate in actual)
        ]
    if _same(expected, actual):
        return []
    return [f"{label}: expected {_short(expected)}, got {_short(actual)}"]


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if expected == actual:
        return True
    if isinstance(expected, int | float) and isinstance(actual, str):
        return str(expected) == actual.strip()
    return False


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def turn_problems(turn: Turn, reply: dict[str, Any], calls: Sequence[dict[str, Any]]) -> list[str]:
    """What in this turn's reply (the chat response) and action calls (the flow trace) breaks `turn`."""
    text = str(reply.get("reply") or "")
    said = _norm(text)
    problems = [f"reply should contain {s!r}" for s in turn.contains if _norm(s) not in said]
    if turn.contains_any and not any(_norm(s) in said for s in turn.contains_any):
        problems.append(f"reply should contain one of {turn.contains_any}")
    problems += [f"reply should not contain {s!r}" for s in turn.not_contains if _norm(s) in said]
    if turn.handoff is not None and bool(reply.get("handoff")) != turn.handoff:
        problems.append("expected a handoff to a person" if turn.handoff else "expected no handoff")
    if turn.intent is not None and reply.get("intent") != turn.intent:
        problems.append(f"intent should be {turn.intent!r}, was {reply.get('intent')!r}")
    for wanted in turn.actions:
        if not any(_call_matches(wanted, call) for call in calls):
            problems.append(f"expected a call {_describe(wanted)}")
    for name in turn.not_called:
        hits = [c for c in calls if (c.get("write") if name == "write" else c.get("action") == name)]
        if hits:
            what = "a write action" if name == "write" else repr(name)
            problems.append(f"{what} should not be called, got {', '.join(str(c.get('action')) for c in hits)}")
    return problems


def _call_matches(wanted: ActionExpectation, call: dict[str, Any]) -> bool:
    if call.get("action") != wanted.action or subset_problems(wanted.with_, call.get("args") or {}):
        return False
    if wanted.ok is not None and bool(call.get("ok")) != wanted.ok:
        return False
    return wanted.error_code is None or call.get("error_code") == wanted.error_code


def _describe(wanted: ActionExpectation) -> str:
    parts = [wanted.action]
    if wanted.with_:
        parts.append(f"with {wanted.with_}")
    if wanted.ok is not None:
        parts.append("succeeding" if wanted.ok else "failing")
    if wanted.error_code:
        parts.append(f"with error {wanted.error_code}")
    return " ".join(parts)


# ---- results -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Failure:
    """Why a scenario failed: at a turn (with the customer's message and what came back) or in the end state."""

    problems: list[str]
    turn: int | None = None
    """1-based; None for the end-of-conversation checks (backend state, writes)."""
    say: str | None = None
    reply: str | None = None
    intent: str | None = None
    handoff: bool | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)

    def lines(self) -> list[str]:
        where = f"turn {self.turn}" if self.turn is not None else "after the conversation"
        out = [f"  {where}" + (f": customer said {self.say!r}" if self.say is not None else "")]
        out += [f"    ✗ {p}" for p in self.problems]
        if self.reply is not None:
            out.append(f"    reply: {self.reply!r}")
            called = ", ".join(_call_summary(c) for c in self.actions) or "none"
            out.append(f"    intent {self.intent!r} · handoff {self.handoff} · actions: {called}")
        return out


def _call_summary(call: dict[str, Any]) -> str:
    outcome = "ok" if call.get("ok") else f"error {call.get('error_code')}"
    return f"{call.get('action')}({call.get('args')}) → {outcome}"


@dataclass(slots=True)
class ScenarioResult:
    name: str
    language: str
    turns: int
    seconds: float
    failure: Failure | None = None

    @property
    def passed(self) -> bool:
        return self.failure is None


@dataclass(slots=True)
class ScenarioReport:
    """Every scenario's outcome: what `kefu eval scenarios` prints and writes as JSON."""

    file: str
    llm: str
    results: list[ScenarioResult]
    seconds: float

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def summary(self) -> str:
        return f"{self.passed}/{self.total} ({self.rate:.1%}) scenarios passed in {self.seconds:.1f}s"

    def failures_text(self) -> str:
        lines: list[str] = []
        for result in self.results:
            if result.failure is not None:
                lines.append(f"✗ {result.name} ({result.language})")
                lines.extend(result.failure.lines())
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "llm": self.llm,
            "passed": self.passed,
            "total": self.total,
            "rate": round(self.rate, 4),
            "seconds": round(self.seconds, 2),
            "scenarios": [
                {
                    "name": r.name,
                    "language": r.language,
                    "passed": r.passed,
                    "turns": r.turns,
                    "seconds": round(r.seconds, 2),
                    "failure": asdict(r.failure) if r.failure is not None else None,
                }
                for r in self.results
            ],
        }


# ---- running -------------------------------------------------------------------------------------------------


def select(file: ScenarioFile, only: Sequence[str] = (), keyword: str | None = None) -> list[Scenario]:
    """The scenarios named in `only` (all when empty) whose name contains `keyword`."""
    unknown = sorted(set(only) - {s.name for s in file.scenarios})
    if unknown:
        raise ScenarioSetupError(f"no scenario named {', '.join(map(repr, unknown))}")
    chosen = [s for s in file.scenarios if (not only or s.name in only)]
    if keyword:
        chosen = [s for s in chosen if keyword.casefold() in s.name.casefold()]
    return chosen


def actions_file(settings: Settings) -> Path | None:
    """The actions.yaml kefu loads (the same rule as the dialogue service)."""
    shop_dir = settings.shop.dir
    path = settings.dialogue.actions_file or (shop_dir / "actions.yaml" if shop_dir else None)
    return path if path is not None and path.is_file() else None


def scenario_settings(settings: Settings, file: ScenarioFile) -> Settings:
    """kefu as configured, with the file's clock, its customer chat open and without request budgets (the
    runner is its only client, in process)."""
    update: dict[str, Any] = {
        "auth": settings.auth.model_copy(update={"mode": "open"}),
        "rate_limit": settings.rate_limit.model_copy(update={"enabled": False}),
    }
    if file.now is not None:
        update["dialogue"] = settings.dialogue.model_copy(update={"now": file.now})
    return settings.model_copy(update=update)


class BackendHooks:
    """The file's reset and write-log requests, sent with the connector's base URL and headers."""

    def __init__(self, file: ScenarioFile, path: Path, transports: dict[str, httpx.AsyncBaseTransport]) -> None:
        self.file = file
        self.path = path
        self.transports = transports
        self._clients: dict[str, httpx.AsyncClient] = {}

    async def __aenter__(self) -> Self:
        wanted = {h.connector for h in (self.file.reset, self.file.write_log) if h is not None}
        if not wanted:
            return self
        config = load_yaml_model(self.path, ActionsFile)
        for name in sorted(wanted):
            connector = config.connectors.get(name)
            if connector is None or connector.type != "http":
                raise ScenarioSetupError(f"{self.path}: no http connector {name!r} for the scenario file's hooks")
            try:
                base_url = expand_env(connector.base_url or "")
                headers = {k: expand_env(v) for k, v in connector.headers.items()}
            except ValueError as exc:
                raise ScenarioSetupError(f"{self.path}: connector {name!r}: {exc}") from None
            self._clients[name] = httpx.AsyncClient(
                base_url=base_url.rstrip("/"),
                headers=headers,
                timeout=max(connector.timeout_s, 30.0),
                transport=self.transports.get(name),
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def reset(self) -> None:
        hook = self.file.reset
        if hook is None:
            return
        client = self._clients[hook.connector]
        try:
            response = await client.request(hook.method, hook.path, json=hook.json_)
        except httpx.HTTPError as exc:
            raise ScenarioSetupError(
                f"reset {hook.method} {client.base_url}{hook.path} failed: {type(exc).__name__}; is the backend "
                "running? (--demo-backend runs the demo shop's backend in process)"
            ) from None
        if response.status_code >= 300:
            raise ScenarioSetupError(
                f"reset {hook.method} {client.base_url}{hook.path} answered {response.status_code}: "
                f"{response.text[:300]}"
            )

    async def write_counts(self, orders: Sequence[str]) -> dict[str | None, int]:
        """How many writes the backend has logged: in total (key None) and for each order."""
        hook = self.file.write_log
        assert hook is not None
        client = self._clients[hook.connector]
        counts: dict[str | None, int] = {}
        for order in [None, *orders]:
            params = {hook.order_param: order} if order is not None else None
            try:
                response = await client.get(hook.path, params=params)
                response.raise_for_status()
                body = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise ScenarioSetupError(f"write log {client.base_url}{hook.path}: {exc}") from None
            items = body.get(hook.items) if hook.items is not None and isinstance(body, dict) else body
            if not isinstance(items, list):
                raise ScenarioSetupError(f"write log {hook.path} did not answer with a list (items: {hook.items})")
            counts[order] = len(items)
        return counts


class ScenarioRunner:
    """Plays scenarios against one running kefu app, as customers over HTTP, and checks what comes back."""

    def __init__(
        self, client: httpx.AsyncClient, services: Services, actions: Actions | None, hooks: BackendHooks | None
    ) -> None:
        self.client = client
        self.services = services
        self.actions = actions
        self.hooks = hooks

    async def run(self, scenario: Scenario) -> ScenarioResult:
        started = time.perf_counter()
        failure = await self._play(scenario)
        return ScenarioResult(
            scenario.name, scenario.language, len(scenario.turns), time.perf_counter() - started, failure
        )

    async def _play(self, scenario: Scenario) -> Failure | None:
        if self.hooks is not None:
            await self.hooks.reset()
        orders = sorted(scenario.writes) if isinstance(scenario.writes, dict) else []
        before = await self.hooks.write_counts(orders) if self.hooks and scenario.writes is not None else {}
        user_id = scenario.user_id or f"scenario-{uuid.uuid4().hex[:12]}"
        session_id: str | None = None
        for number, turn in enumerate(scenario.turns, start=1):
            body: dict[str, Any] = {"user_id": user_id, "channel": CHANNEL, "text": turn.say}
            if session_id is not None:
                body["session_id"] = session_id
            response = await self.client.post("/v1/chat", json=body)
            if response.status_code != 200:
                problem = f"POST /v1/chat answered {response.status_code}: {response.text[:300]}"
                return Failure([problem], turn=number, say=turn.say)
            reply: dict[str, Any] = response.json()
            session_id = str(reply["session_id"])
            calls = await self._calls(str(reply["message_id"]))
            problems = turn_problems(turn, reply, calls)
            if problems:
                return Failure(
                    problems,
                    turn=number,
                    say=turn.say,
                    reply=str(reply.get("reply") or ""),
                    intent=reply.get("intent"),
                    handoff=bool(reply.get("handoff")),
                    actions=list(calls),
                )
        problems = await self._backend_problems(scenario)
        writes = scenario.writes
        if writes is not None and self.hooks is not None:
            after = await self.hooks.write_counts(orders)
            expected: list[tuple[str | None, int]] = (
                [(None, writes)] if isinstance(writes, int) else [(order, n) for order, n in writes.items()]
            )
            for order, count in expected:
                done = after[order] - before[order]
                if done != count:
                    which = f"on order {order}" if order is not None else "in all"
                    problems.append(f"expected {count} write(s) {which}, the backend logged {done}")
        return Failure(problems) if problems else None

    async def _calls(self, message_id: str) -> list[dict[str, Any]]:
        """The actions the flow called for this reply, from the trace kefu stored with it."""
        record = await self.services.store.get_message(message_id)
        flow = record.trace.get("flow") or {}
        return list(flow.get("actions") or []) if isinstance(flow, dict) else []

    async def _backend_problems(self, scenario: Scenario) -> list[str]:
        problems: list[str] = []
        for check in scenario.backend:
            assert self.actions is not None
            result = await self.actions.call(check.action, dict(check.with_))
            label = f"{check.action}({', '.join(f'{k}={v}' for k, v in check.with_.items())})"
            if check.error_code is not None:
                if result.ok or result.error_code != check.error_code:
                    got = "succeeded" if result.ok else f"failed with {result.error_code}"
                    problems.append(f"{label}: expected error {check.error_code}, {got}")
                continue
            if not result.ok:
                problems.append(f"{label}: failed with {result.error_code}: {result.message}")
                continue
            problems += [f"{label}: {p}" for p in subset_problems(check.expect, result.data)]
        return problems


@asynccontextmanager
async def demo_backend(shop_dir: Path) -> AsyncIterator[httpx.AsyncBaseTransport]:
    """The demo shop's backend (lumo_shop) in process, on a temporary database, at the dataset's snapshot time."""
    from lumo_shop.app import create_app as create_shop_app

    with tempfile.TemporaryDirectory(prefix="kefu-scenarios-") as tmp:
        # The token kefu sends is whatever actions.yaml expands LUMO_SHOP_TOKEN to (default lumo-demo-token).
        app = create_shop_app(
            Path(tmp) / "lumo-shop.db", shop_dir, now="as_of", token=os.environ.get("LUMO_SHOP_TOKEN")
        )
        async with app.router.lifespan_context(app):
            yield httpx.ASGITransport(app=app)


Progress = Callable[[ScenarioResult], None]


async def run_scenarios(
    path: Path,
    settings: Settings,
    *,
    llm: LLMBackend | None = None,
    transports: dict[str, httpx.AsyncBaseTransport] | None = None,
    only: Sequence[str] = (),
    keyword: str | None = None,
    progress: Progress | None = None,
) -> ScenarioReport:
    """Run the file's scenarios against kefu built in process from `settings`.

    `llm` replaces every configured model (`--llm scripted`); `transports` routes a connector's HTTP in process
    (`--demo-backend`). Raises DataFileError for a bad file and ScenarioSetupError when the run cannot start.
    """
    from kefu.api.app import create_app

    file = load_scenarios(path)
    chosen = select(file, only, keyword)
    if not chosen:
        raise ScenarioSetupError(f"no scenario in {path} matches -k {keyword!r}")
    settings = scenario_settings(settings, file)
    transports = dict(transports or {})
    actions_path = actions_file(settings)
    needs_backend = file.reset is not None or file.write_log is not None or any(s.backend for s in chosen)
    if needs_backend and actions_path is None:
        raise ScenarioSetupError(
            "the scenarios check the backend, but kefu has no actions.yaml (set KEFU_SHOP__DIR or "
            "KEFU_DIALOGUE__ACTIONS_FILE)"
        )
    started = time.perf_counter()
    results: list[ScenarioResult] = []
    app = create_app(settings, llm=llm, action_transports=transports)
    async with AsyncExitStack() as stack:
        actions = None
        if actions_path is not None:
            actions = load_actions(actions_path, transports=transports)
            stack.push_async_callback(actions.aclose)
            check_actions(path, file, actions)
        hooks = None
        if actions_path is not None and (file.reset is not None or file.write_log is not None):
            hooks = await stack.enter_async_context(BackendHooks(file, actions_path, transports))
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kefu", timeout=None)
        )
        services: Services = app.state.services
        runner = ScenarioRunner(client, services, actions, hooks)
        for scenario in chosen:
            result = await runner.run(scenario)
            results.append(result)
            if progress is not None:
                progress(result)
        llm_name = services.llms["chat"].name
    return ScenarioReport(str(path), llm_name, results, time.perf_counter() - started)
