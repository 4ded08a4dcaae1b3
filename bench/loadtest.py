"""Section "loadtest": a realistic mix of conversations against `kefu serve` with 1 and 2 workers, stub LLM.

    make loadtest                                          # the full plan below, written to docs/benchmarks.md
    python -m bench.loadtest --workers 1 --rate 100 --duration 20 --llm-latency-ms 50
    python -m bench.loadtest --quick                       # tiny counts → build/bench-quick/

Processes, all on 127.0.0.1: the fixed-latency stub LLM (`bench/stub_llm.py`), the demo shop's backend
(`lumo-shop`, for the flows' order look-ups), `kefu serve` with the demo shop, and this process as the customers.
kefu's data dir is prepared once (knowledge indexed, intent model trained, by a one-worker start) and copied
fresh for every worker count, so that workers never start together on a cold data dir.

Customers hold conversations from `bench/conversations.py` (FAQ questions and paraphrases, knowledge
questions, order flows with identity checks, handoffs; Chinese and English) over `POST /v1/chat`, SSE or the
widget's WebSocket (`bench/customers.py`). For each worker count, after a warm-up, three phases:
- sequential: one customer at a time, so each route's latency is seen without queueing;
- capacity (closed loop): `concurrency` customers, each sending its next message as soon as it has a reply;
- rate (open loop): turns offered at a fixed rate, one every 1/rate s (a waiting follow-up of an open
  conversation first, else a new conversation); a turn due while every one of the `concurrency` customers is
  waiting for a reply is not sent, and counted, so that a slow server shows as lost turns, not as a slower clock.
Every phase stops at `turns` or `duration`, whichever comes first; a turn gets `turn_timeout_s` to finish.
The route of each reply is read from kefu's store afterwards (replies carry the message id), and the time per
pipeline stage from kefu's `/metrics` (`kefu_stage_duration_seconds`), before and after each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.exceptions import WebSocketException

from bench.conversations import KINDS, Conversation, ConversationMix
from bench.customers import TRANSPORTS, Customer, Reply, make_customer
from bench.harness import (
    DEMO_SHOP,
    BenchOptions,
    SectionResult,
    ServerProcess,
    Target,
    free_port,
    kefu_process,
    md_table,
    percentile,
    process_cpu_seconds,
    progress,
    self_cpu_seconds,
    server_process,
    targets_table,
)
from bench.loadgen import HTTPConnection, run_event_loop
from bench.overhead import _kefu_env, _load_test_settings, _settings_fields

KEY = "loadtest"
TITLE = "Load test: mixed conversations over HTTP, SSE and WebSocket (stub LLM, one and several workers)"

NO_REPLY = "(no reply)"
WARMUP_LIMIT_S = 120.0


@dataclass(frozen=True, slots=True)
class LoadTestPlan:
    """What one load test sends, and the targets it checks."""

    workers: tuple[int, ...] = (1, 2)
    llm_latency_ms: float = 20.0
    turns: int = 6000
    """Turns per measured phase at most."""
    duration_s: float = 30.0
    """No turn of a measured phase is sent after this many seconds."""
    rate: float = 150.0
    """Turns offered per second in the open-loop phase; 0 leaves that phase out."""
    concurrency: int = 64
    """Customers in conversation at once: the capacity phase keeps this many busy; the rate phase never has more."""
    sequential_turns: int = 300
    warmup_turns: int = 300
    mix: tuple[tuple[str, float], ...] = (("curated", 0.4), ("knowledge", 0.25), ("flow", 0.2), ("handoff", 0.05))
    """Share of conversations of each kind (a flow has 2-3 turns, the others 1)."""
    transports: tuple[tuple[str, float], ...] = (("http", 0.5), ("sse", 0.2), ("ws", 0.3))
    """Share of conversations held over each transport."""
    zh_share: float = 0.5
    greeting_share: float = 0.5
    """Share of single questions sent with a greeting in front ("你好，", "Hi, "), as customers write them."""
    turn_timeout_s: float = 30.0
    seed: int = 7
    kefu_env: tuple[tuple[str, str], ...] = ()
    """Extra kefu settings (KEFU_...), e.g. the smoke test's fast test embedders."""
    target_turns_per_s: float = 150.0
    target_p99_ms: float = 100.0
    min_scaling: float = 1.3
    """Capacity with two workers over capacity with one; on 2 cores shared with the load generator, the stub
    and the shop's backend, 2.0 is out of reach."""
    scaling_pairs: int = 3
    """Short capacity runs, after the phases, alternating between the first and the last worker count: the
    scaling ratio is the median of theirs, each pair run side by side (the machine's speed drifts by a third within
    minutes, more than the difference measured)."""
    pair_duration_s: float = 12.0


FULL = LoadTestPlan()
QUICK = LoadTestPlan(
    turns=300,
    duration_s=8.0,
    rate=40.0,
    concurrency=16,
    sequential_turns=30,
    warmup_turns=40,
    scaling_pairs=1,
    pair_duration_s=3.0,
)


# --- one turn, one conversation -----------------------------------------------------------------------------


@dataclass(slots=True)
class TurnRecord:
    """One customer message and what came back."""

    kind: str
    transport: str
    language: str
    step: int
    """0 for a conversation's first message."""
    latency_s: float
    error: str | None = None
    message_id: str | None = None
    unexpected: bool = False
    """The conversation's last reply lacked what it must show (an order's status, a handoff)."""
    route: str = NO_REPLY
    """kefu's route for the reply, read from its store after the phase."""


@dataclass(slots=True)
class Active:
    """A conversation in progress, on the connection of the customer holding it."""

    conversation: Conversation
    customer: Customer
    conn: HTTPConnection
    step: int = 0

    @property
    def done(self) -> bool:
        return self.step >= len(self.conversation.turns)


def _unexpected(conversation: Conversation, reply: Reply) -> bool:
    if conversation.expect_handoff and not reply.handoff:
        return True
    return conversation.expect_text is not None and conversation.expect_text not in reply.text


@dataclass(slots=True)
class PhaseRun:
    """The turns of one measured phase, with what the processes spent meanwhile."""

    name: str
    workers: int
    records: list[TurnRecord]
    wall_s: float
    offered: int | None = None
    """Open loop: turns due in the phase (sent or not)."""
    window_s: float | None = None
    not_sent: int = 0
    cut_short: int = 0
    """Conversations left unfinished at the end of the phase."""
    tick_lag_ms: list[float] = field(default_factory=list)
    connect_s: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    kefu_threads_s: list[tuple[float, float]] = field(default_factory=list)
    """Per kefu process: CPU seconds of its event-loop thread and of its other threads."""
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Stage → (turns through it, seconds in it), from kefu's /metrics."""
    route_seconds: dict[str, tuple[float, float]] = field(default_factory=dict)
    stage_ms_by_route: dict[str, dict[str, float]] = field(default_factory=dict)
    """Route → stage → mean ms, from the per-stage times kefu stores on each reply."""

    @property
    def ok(self) -> list[float]:
        return sorted(r.latency_s for r in self.records if r.error is None)

    @property
    def turns_per_s(self) -> float:
        """Answered turns per second: of the offered window in the open loop, of the phase's wall time otherwise."""
        span = self.window_s if self.window_s else self.wall_s
        return len(self.ok) / span if span > 0 else 0.0


class Customers:
    """Starts conversations from the mix on the customers' connections and records every turn."""

    def __init__(self, base_url: str, plan: LoadTestPlan, mix: ConversationMix, phase: str, seed: int) -> None:
        self.base_url = base_url
        self.ws_base = base_url.replace("http://", "ws://", 1)
        self.port = int(base_url.rsplit(":", 1)[1])
        self.plan = plan
        self.mix = mix
        self.phase = phase
        self.records: list[TurnRecord] = []
        self.connect_s: list[float] = []
        self.started = 0
        self.tick_lag_ms: list[float] = []
        self._rng = random.Random(seed)
        self._count = 0
        self._transports = [t for t, _ in plan.transports]
        self._transport_weights = [w for _, w in plan.transports]

    def connection(self) -> HTTPConnection:
        return HTTPConnection("127.0.0.1", self.port)

    def begin(self, conn: HTTPConnection) -> Active:
        self._count += 1
        transport = self._rng.choices(self._transports, self._transport_weights)[0]
        user_id = f"lt-{self.phase}-{self._count}"
        customer = make_customer(transport, conn, user_id, self.ws_base, self.plan.turn_timeout_s)
        return Active(self.mix.next(), customer, conn)

    async def turn(self, active: Active) -> None:
        conversation, customer = active.conversation, active.customer
        self.started += 1
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(self.plan.turn_timeout_s):
                reply = await customer.say(conversation.turns[active.step])
        except TimeoutError:
            reply = Reply(error=f"no reply within {self.plan.turn_timeout_s:g} s")
        except (OSError, asyncio.IncompleteReadError, ValueError, WebSocketException) as exc:
            reply = Reply(error=f"{type(exc).__name__}: {exc}")
        latency = time.perf_counter() - sent
        last = active.step == len(conversation.turns) - 1
        self.records.append(
            TurnRecord(
                kind=conversation.kind,
                transport=customer.transport,
                language=conversation.language,
                step=active.step,
                latency_s=latency,
                error=reply.error,
                message_id=reply.message_id,
                unexpected=last and reply.error is None and _unexpected(conversation, reply),
            )
        )
        if active.step == 0 and customer.connect_s is not None:
            self.connect_s.append(customer.connect_s)
        # A conversation whose turn failed is not continued: its state on the server is unknown.
        active.step = active.step + 1 if reply.error is None else len(conversation.turns)

    async def closed_loop(self, concurrency: int, turns: int, duration_s: float) -> int:
        """Each customer sends its next message as soon as it has the reply; returns conversations cut short."""
        deadline = time.perf_counter() + duration_s
        cut_short = 0

        def more() -> bool:
            return self.started < turns and time.perf_counter() < deadline

        async def customer_loop() -> None:
            nonlocal cut_short
            conn = self.connection()
            try:
                while more():
                    active = self.begin(conn)
                    try:
                        while not active.done and more():
                            await self.turn(active)
                    finally:
                        cut_short += not active.done
                        await active.customer.close()
            finally:
                await conn.close()

        await asyncio.gather(*(customer_loop() for _ in range(concurrency)))
        return cut_short

    async def open_loop(self, rate: float, concurrency: int, turns: int, duration_s: float) -> tuple[int, int, int]:
        """One turn offered every 1/rate s; returns (turns offered, turns not sent, conversations cut short)."""
        offered = max(1, min(turns, int(duration_s * rate)))
        idle = [self.connection() for _ in range(concurrency)]
        waiting: deque[Active] = deque()
        in_flight: set[asyncio.Task[None]] = set()
        not_sent = 0

        async def send(active: Active) -> None:
            await self.turn(active)
            if active.done:
                await active.customer.close()
                idle.append(active.conn)
            else:
                waiting.append(active)

        started = time.perf_counter()
        for index in range(offered):
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.tick_lag_ms.append(max(0.0, time.perf_counter() - due) * 1000)
            if waiting:
                active = waiting.popleft()
            elif idle:
                active = self.begin(idle.pop())
            else:
                not_sent += 1
                continue
            task = asyncio.create_task(send(active))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(set(in_flight))
        cut_short = len(waiting)
        for active in waiting:
            await active.customer.close()
            idle.append(active.conn)
        for conn in idle:
            await conn.close()
        return offered, not_sent, cut_short


# --- the processes ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stack:
    stub: ServerProcess
    shop: ServerProcess
    kefu: ServerProcess
    data_dir: Path
    workers: int


def _demo_now(shop_dir: Path) -> str | None:
    """The demo data is a snapshot: flows judge it at the time it was taken, as `kefu demo` does."""
    fixtures = shop_dir / "fixtures.yaml"
    data = yaml.safe_load(fixtures.read_text(encoding="utf-8")) if fixtures.is_file() else None
    return str(data["as_of"]) if isinstance(data, dict) and data.get("as_of") else None


def _env(plan: LoadTestPlan, data_dir: Path, port: int, stub: ServerProcess, shop: ServerProcess) -> dict[str, str]:
    env = _kefu_env(data_dir, stub.base_url, port, DEMO_SHOP)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    fields = _settings_fields(env)
    env.update(_load_test_settings(fields))
    if "rate_limit" in fields:
        env["KEFU_RATE_LIMIT__WS_MESSAGES"] = "1000000/minute"
    now = _demo_now(DEMO_SHOP)
    if now:
        env["KEFU_DIALOGUE__NOW"] = now
    env["LUMO_SHOP_URL"] = shop.base_url
    env.update(dict(plan.kefu_env))
    return env


def _prepare_data_dir(plan: LoadTestPlan, work_dir: Path, stub: ServerProcess, shop: ServerProcess) -> Path:
    """A data dir with the demo shop's knowledge indexed and the models' caches built, by one worker alone."""
    data_dir, port = work_dir / "kefu-prepared", free_port()
    env = _env(plan, data_dir, port, stub, shop)
    env["KEFU_KNOWLEDGE__SOURCE_DIR"] = str(DEMO_SHOP / "knowledge")
    with kefu_process(
        port=port,
        log_path=work_dir / "kefu-prepare.log",
        env=env,
        startup_timeout_s=600,  # indexes the knowledge and trains the intent classifier on a cold data dir
    ) as kefu:
        mix = ConversationMix(DEMO_SHOP, dict(plan.mix), seed=plan.seed)
        customers = Customers(kefu.base_url, replace(plan, transports=(("http", 1.0),)), mix, "prepare", plan.seed)
        # A few turns load what kefu loads lazily, so that its caches are on disk before it stops.
        run_event_loop(lambda: customers.closed_loop(1, 8, 120))
    return data_dir


@contextmanager
def _helpers(plan: LoadTestPlan, work_dir: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """The stub LLM and the demo shop's backend, shared by every run (the flows only read the backend)."""
    stub_port, shop_port = free_port(), free_port()
    with ExitStack() as stack:
        stub = stack.enter_context(
            server_process(
                ["-m", "bench.stub_llm", "--port", str(stub_port), "--latency-ms", str(plan.llm_latency_ms)],
                port=stub_port,
                ready_path="/v1/models",
                log_path=work_dir / "stub.log",
            )
        )
        shop_args = ["-m", "lumo_shop", "serve", "--port", str(shop_port), "--log-level", "warning"]
        shop_args += ["--db", str(work_dir / "lumo-shop.db"), "--data", str(DEMO_SHOP)]
        shop = stack.enter_context(
            server_process(shop_args, port=shop_port, ready_path="/healthz", log_path=work_dir / "lumo-shop.log")
        )
        yield stub, shop


@contextmanager
def _kefu(
    plan: LoadTestPlan, work_dir: Path, prepared: Path, workers: int, stub: ServerProcess, shop: ServerProcess
) -> Iterator[Stack]:
    data_dir, port = work_dir / f"kefu-{workers}w", free_port()
    shutil.copytree(prepared, data_dir)
    env = _env(plan, data_dir, port, stub, shop)
    env["KEFU_SERVER__WORKERS"] = str(workers)
    with kefu_process(
        port=port,
        log_path=work_dir / f"kefu-{workers}w.log",
        env=env,
        startup_timeout_s=300,
    ) as kefu:
        yield Stack(stub=stub, shop=shop, kefu=kefu, data_dir=data_dir, workers=workers)


# --- what the server says about a phase ---------------------------------------------------------------------


async def _scrape(base_url: str) -> dict[tuple[str, str], float]:
    """(sample name, stage or route) → value of kefu's stage and turn histograms' sums and counts."""
    conn = HTTPConnection("127.0.0.1", int(base_url.rsplit(":", 1)[1]))
    try:
        status, body = await conn.request("GET", "/metrics")
    finally:
        await conn.close()
    if status != 200:
        return {}
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name not in ("kefu_stage_duration_seconds", "kefu_turn_duration_seconds"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                found[(sample.name, sample.labels.get("stage") or sample.labels.get("route", ""))] = sample.value
    return found


def _histogram_delta(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], family: str
) -> dict[str, tuple[float, float]]:
    out = {}
    for (name, label), total in after.items():
        if name == f"{family}_sum":
            count = after.get((f"{family}_count", label), 0.0) - before.get((f"{family}_count", label), 0.0)
            if count > 0:
                out[label] = (count, total - before.get((name, label), 0.0))
    return out


async def _read_routes(
    data_dir: Path, records: list[TurnRecord], database_url: str | None
) -> dict[str, dict[str, float]]:
    """Fill each record's route (and a fallback's recorded error) from kefu's store (its SQLite file, or the
    database `KEFU_DATABASE_URL` names); returns route → stage → mean ms over the phase's replies."""
    ids = [r.message_id for r in records if r.message_id]
    found: dict[str, tuple[str, dict[str, float], str | None]] = {}
    engine = create_async_engine(database_url or f"sqlite+aiosqlite:///{data_dir / 'kefu.db'}")
    query = text("SELECT id, route, stage_latency_ms, error FROM messages WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    try:
        async with engine.connect() as db:
            for start in range(0, len(ids), 500):
                rows = await db.execute(query, {"ids": ids[start : start + 500]})
                for message_id, route, stages, error in rows:
                    if isinstance(stages, str):  # SQLite keeps JSON as text; PostgreSQL's driver decodes it
                        stages = json.loads(stages)
                    found[message_id] = (route or "(none)", stages or {}, error)
    finally:
        await engine.dispose()
    sums: dict[str, dict[str, list[float]]] = {}
    for record in records:
        if record.message_id not in found:
            continue
        record.route, stages, error = found[record.message_id]
        if record.error and error:
            record.error = f"{record.error}: {error[:160]}"  # what kefu recorded: the synthetic text is no secret
        for stage, ms in stages.items():
            sums.setdefault(record.route, {}).setdefault(stage, []).append(float(ms))
    return {route: {s: sum(v) / len(v) for s, v in stages.items()} for route, stages in sums.items()}


# --- running the phases -------------------------------------------------------------------------------------


class _Meter:
    """CPU seconds of each process, read before and after a phase."""

    def __init__(self, stack: Stack) -> None:
        self._pids = {"kefu": stack.kefu.pid, "stub LLM": stack.stub.pid, "lumo-shop": stack.shop.pid}

    def read(self) -> dict[str, float]:
        readings = {name: process_cpu_seconds(pid) for name, pid in self._pids.items()}
        readings["load generator"] = self_cpu_seconds()
        return readings


ThreadCpu = dict[tuple[int, int], float]


def _thread_cpu(root_pid: int) -> ThreadCpu:
    """(process, thread) → CPU seconds, for kefu's process and its workers; a thread whose id is its process's
    id runs that process's event loop, the others are thread pools (asyncio.to_thread, numpy, SQLite)."""
    found: ThreadCpu = {}
    pending, tick = [root_pid], os.sysconf("SC_CLK_TCK")
    while pending:
        pid = pending.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                pending += [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue  # the thread ended meanwhile
            found[(pid, int(task.name))] = (int(fields[11]) + int(fields[12])) / tick
    return found


def _thread_split(before: ThreadCpu, after: ThreadCpu) -> list[tuple[float, float]]:
    """Per kefu process that worked: (event-loop thread CPU s, other threads' CPU s) over a phase, busiest first."""
    per_process: dict[int, list[float]] = {}
    for (pid, tid), seconds in after.items():
        spent = seconds - before.get((pid, tid), 0.0)
        per_process.setdefault(pid, [0.0, 0.0])[0 if tid == pid else 1] += spent
    busy = [(main, other) for main, other in per_process.values() if main + other > 0.05]
    return sorted(busy, reverse=True)


async def _phase(stack: Stack, plan: LoadTestPlan, mix: ConversationMix, name: str, seed: int) -> PhaseRun:
    customers = Customers(stack.kefu.base_url, plan, mix, f"{stack.workers}w-{name}", seed)
    meter = _Meter(stack)
    scraped, cpu, threads = await _scrape(stack.kefu.base_url), meter.read(), _thread_cpu(stack.kefu.pid)
    started = time.perf_counter()
    run = PhaseRun(name=name, workers=stack.workers, records=customers.records, wall_s=0.0)
    limit_s = WARMUP_LIMIT_S if name == "warm-up" else plan.duration_s
    # A hard stop well after the last turn may start, in case something hangs.
    async with asyncio.timeout(limit_s + plan.turn_timeout_s + 30):
        if name == "warm-up":
            run.cut_short = await customers.closed_loop(min(8, plan.concurrency), plan.warmup_turns, limit_s)
        elif name == "sequential":
            run.cut_short = await customers.closed_loop(1, plan.sequential_turns, plan.duration_s)
        elif name == "capacity":
            run.cut_short = await customers.closed_loop(plan.concurrency, plan.turns, plan.duration_s)
        elif name == PAIRED:
            run.cut_short = await customers.closed_loop(plan.concurrency, plan.turns, plan.pair_duration_s)
        else:
            offered, run.not_sent, run.cut_short = await customers.open_loop(
                plan.rate, plan.concurrency, plan.turns, plan.duration_s
            )
            run.offered, run.window_s, run.tick_lag_ms = offered, offered / plan.rate, customers.tick_lag_ms
    run.wall_s = time.perf_counter() - started
    after_cpu, after_threads, after = meter.read(), _thread_cpu(stack.kefu.pid), await _scrape(stack.kefu.base_url)
    run.cpu_s = {k: after_cpu[k] - cpu[k] for k in cpu}
    run.kefu_threads_s = _thread_split(threads, after_threads)
    run.stages = _histogram_delta(scraped, after, "kefu_stage_duration_seconds")
    run.route_seconds = _histogram_delta(scraped, after, "kefu_turn_duration_seconds")
    run.connect_s = sorted(customers.connect_s)
    run.stage_ms_by_route = await _read_routes(
        stack.data_dir, run.records, dict(plan.kefu_env).get("KEFU_DATABASE_URL")
    )
    return run


def _mix(plan: LoadTestPlan) -> ConversationMix:
    """The measured phases' conversations (the same seed for every server, so each gets the same texts)."""
    return ConversationMix(
        DEMO_SHOP, dict(plan.mix), zh_share=plan.zh_share, greeting_share=plan.greeting_share, seed=plan.seed
    )


async def _phases(stack: Stack, plan: LoadTestPlan) -> list[PhaseRun]:
    mix = _mix(plan)
    names = ["warm-up", "sequential", "capacity", *(["rate"] if plan.rate > 0 else [])]
    runs = []
    for index, name in enumerate(names):
        progress(f"loadtest: {stack.workers} worker(s), {name}")
        run = await _phase(stack, plan, mix, name, plan.seed + index)
        progress(f"loadtest: {_one_line(run)}")
        runs.append(run)
    return runs


PAIRED = "capacity, paired"


def run(options: BenchOptions, plan: LoadTestPlan | None = None) -> SectionResult:
    plan = plan or (QUICK if options.quick else FULL)
    runs: list[PhaseRun] = []
    pairs: list[tuple[PhaseRun, PhaseRun]] = []
    with _helpers(plan, options.work_dir) as (stub, shop), ExitStack() as servers:
        progress("loadtest: preparing kefu's data dir (knowledge, models) with one worker")
        prepared = _prepare_data_dir(plan, options.work_dir, stub, shop)
        stacks = []
        for workers in plan.workers:
            # Each kefu stays up (idle) after its phases, for the paired capacity runs.
            stacks.append(servers.enter_context(_kefu(plan, options.work_dir, prepared, workers, stub, shop)))
            runs += _measure(stacks[-1], plan)
        if len(stacks) >= 2 and plan.scaling_pairs > 0:
            pairs = run_event_loop(lambda: _paired(stacks[0], stacks[-1], plan))
    return _report(plan, runs, pairs, quick=options.quick)


def _measure(stack: Stack, plan: LoadTestPlan) -> list[PhaseRun]:
    return run_event_loop(lambda: _phases(stack, plan))


async def _paired(base: Stack, top: Stack, plan: LoadTestPlan) -> list[tuple[PhaseRun, PhaseRun]]:
    """Capacity runs alternating between two kefu servers, `plan.scaling_pairs` pairs (first one, then the other
    in odd pairs, the other way round in even ones, so that neither always runs on the warmer cache)."""
    mix = _mix(plan)
    pairs = []
    for index in range(plan.scaling_pairs):
        order = (base, top) if index % 2 == 0 else (top, base)
        done = {}
        for stack in order:
            progress(f"loadtest: {stack.workers} worker(s), {PAIRED} {index + 1}")
            done[stack.workers] = await _phase(stack, plan, mix, PAIRED, plan.seed + 100 + index)
            progress(f"loadtest: {_one_line(done[stack.workers])}")
        pairs.append((done[base.workers], done[top.workers]))
    return pairs


# --- the report ---------------------------------------------------------------------------------------------


def _ms(seconds: Sequence[float], q: float) -> float:
    return percentile(seconds, q) * 1000 if seconds else float("nan")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def _stats(records: Sequence[TurnRecord], span_s: float) -> dict[str, Any]:
    ok = sorted(r.latency_s for r in records if r.error is None)
    return {
        "turns": len(records),
        "ok": len(ok),
        "errors": sum(r.error is not None for r in records),
        "unexpected": sum(r.unexpected for r in records),
        "turns_per_s": round(len(ok) / span_s, 1) if span_s > 0 else None,
        "p50_ms": round(_ms(ok, 50), 1),
        "p95_ms": round(_ms(ok, 95), 1),
        "p99_ms": round(_ms(ok, 99), 1),
        "max_ms": round(ok[-1] * 1000, 1) if ok else None,
        "mean_ms": round(sum(ok) / len(ok) * 1000, 1) if ok else None,
    }


def _groups(run: PhaseRun) -> dict[str, dict[str, dict[str, Any]]]:
    span = run.window_s or run.wall_s
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for axis in ("route", "kind", "transport"):
        values = sorted({getattr(r, axis) for r in run.records})
        if axis == "kind":
            values = [k for k in KINDS if k in values]
        elif axis == "transport":
            values = [t for t in TRANSPORTS if t in values]
        out[axis] = {v: _stats([r for r in run.records if getattr(r, axis) == v], span) for v in values}
    return out


def _cores(run: PhaseRun, process: str) -> float:
    return run.cpu_s.get(process, 0.0) / run.wall_s if run.wall_s > 0 else float("nan")


def _cpu_ms_per_turn(run: PhaseRun, process: str = "kefu") -> float:
    return run.cpu_s.get(process, 0.0) * 1000 / len(run.records) if run.records else float("nan")


def _one_line(run: PhaseRun) -> str:
    s = _stats(run.records, run.window_s or run.wall_s)
    lost = f", {run.not_sent} not sent" if run.offered is not None else ""
    return (
        f"{run.workers}w {run.name}: {s['ok']} turns ok, {s['errors']} errors{lost}, {s['turns_per_s']} turns/s, "
        f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, kefu {_cores(run, 'kefu'):.2f} cores"
    )


def _find(runs: Sequence[PhaseRun], workers: int, name: str) -> PhaseRun | None:
    return next((r for r in runs if r.workers == workers and r.name == name), None)


def _scaling(pairs: Sequence[tuple[PhaseRun, PhaseRun]]) -> list[float]:
    """Each pair's capacity ratio, the second worker count's over the first's."""
    return [top.turns_per_s / base.turns_per_s if base.turns_per_s > 0 else 0.0 for base, top in pairs]


def _targets(plan: LoadTestPlan, runs: Sequence[PhaseRun], pairs: Sequence[tuple[PhaseRun, PhaseRun]]) -> list[Target]:
    targets = []
    one = plan.workers[0]
    rate_run = _find(runs, one, "rate")
    if rate_run is not None:
        label = f"{one} worker(s), {plan.rate:g} turns/s offered"
        answered = round(rate_run.turns_per_s, 1)
        targets.append(Target(f"{label}: turns/s answered", answered, plan.target_turns_per_s, ">=", "turns/s"))
        p99 = _ms(rate_run.ok, 99)
        targets.append(Target(f"{label}: p99", round(p99, 1) if p99 == p99 else 1e9, plan.target_p99_ms, "<", "ms"))
    capacities = [(w, _find(runs, w, "capacity")) for w in plan.workers]
    if len(capacities) >= 2 and capacities[0][1] is not None and capacities[-1][1] is not None:
        (w0, base), (w1, top) = capacities[0], capacities[-1]
        assert base is not None and top is not None
        ratios = _scaling(pairs) or _scaling([(base, top)])
        ratio = statistics.median(ratios)
        how = f"median of {len(pairs)} side-by-side pairs" if pairs else "one run each"
        targets.append(
            Target(
                f"capacity, {w1} workers over {w0} (concurrency {plan.concurrency}, {how})",
                round(ratio, 2),
                plan.min_scaling,
                ">=",
                "×",
            )
        )
    failed = sum(r.error is not None for run in runs if run.name != "warm-up" for r in run.records)
    targets.append(Target("failed turns, all measured phases", failed, 0, "<=", "turns"))
    return targets


def _pairs_text(plan: LoadTestPlan, pairs: Sequence[tuple[PhaseRun, PhaseRun]]) -> str:
    base, top = pairs[0][0].workers, pairs[0][1].workers
    rows = [
        [
            index + 1,
            _fmt(b.turns_per_s),
            _fmt(t.turns_per_s),
            f"{ratio:.2f}×",
            f"{_cores(b, 'kefu'):.2f} · {_cpu_ms_per_turn(b):.2f}",
            f"{_cores(t, 'kefu'):.2f} · {_cpu_ms_per_turn(t):.2f}",
        ]
        for index, ((b, t), ratio) in enumerate(zip(pairs, _scaling(pairs), strict=True))
    ]
    return "\n".join(
        [
            f"**Scaling, side by side** — after the phases, {len(pairs)} pairs of {plan.pair_duration_s:g}-second "
            f"capacity runs ({plan.concurrency} customers), {base} and {top} worker(s) one right after the other "
            "(alternating which goes first); the target above is the median of the pairs' ratios. Both servers "
            "stay up for these: the idle one uses no CPU.",
            "",
            md_table(
                [
                    "pair",
                    f"{base}w turns/s",
                    f"{top}w turns/s",
                    "ratio",
                    f"{base}w kefu cores · CPU ms/turn",
                    f"{top}w kefu cores · CPU ms/turn",
                ],
                rows,
            ),
        ]
    )


def _summary_rows(runs: Sequence[PhaseRun]) -> list[list[object]]:
    rows = []
    for run in runs:
        if run.name == "warm-up":
            continue
        s = _stats(run.records, run.window_s or run.wall_s)
        offered = f"{run.offered} ({run.offered / run.window_s:g}/s)" if run.offered and run.window_s else "closed loop"
        rows.append(
            [
                run.workers,
                run.name,
                offered,
                s["ok"],
                s["errors"],
                run.not_sent if run.offered is not None else "—",
                s["unexpected"],
                _fmt(s["turns_per_s"]),
                _fmt(s["p50_ms"]),
                _fmt(s["p95_ms"]),
                _fmt(s["p99_ms"]),
                f"{_cores(run, 'kefu'):.2f}",
                _fmt(_cpu_ms_per_turn(run), 2),
            ]
        )
    return rows


def _group_table(run: PhaseRun) -> str:
    rows: list[list[object]] = []
    total = max(len(run.records), 1)
    for axis, groups in _groups(run).items():
        for value, s in groups.items():
            rows.append(
                [
                    f"{axis}: {value}",
                    s["turns"],
                    f"{s['turns'] / total:.0%}",
                    _fmt(s["turns_per_s"]),
                    _fmt(s["p50_ms"]),
                    _fmt(s["p95_ms"]),
                    _fmt(s["p99_ms"]),
                    s["errors"],
                    s["unexpected"],
                ]
            )
    if run.connect_s:
        c = run.connect_s
        quantiles = [_fmt(_ms(c, q)) for q in (50, 95, 99)]
        rows.append(["WebSocket connect (token + upgrade)", len(c), "", "", *quantiles, "", ""])
    header = ["", "turns", "share", "turns/s", "p50 ms", "p95 ms", "p99 ms", "errors", "unexpected"]
    return md_table(header, rows)


def _stage_table(runs: Sequence[PhaseRun]) -> str:
    shown = [r for r in runs if r.name != "warm-up" and r.stages]
    stages: list[str] = []
    for run in shown:
        stages += [s for s in run.stages if s not in stages]
    header = ["stage", *(f"{r.workers}w {r.name}: mean ms (turns)" for r in shown)]
    rows: list[list[object]] = []
    for stage in stages:
        cells: list[object] = [stage]
        for run in shown:
            count, seconds = run.stages.get(stage, (0.0, 0.0))
            cells.append(f"{seconds / count * 1000:.2f} ({count:.0f})" if count else "—")
        rows.append(cells)
    cells = ["**turn, all routes** (`kefu_turn_duration_seconds`)"]
    for run in shown:
        count = sum(c for c, _ in run.route_seconds.values())
        seconds = sum(s for _, s in run.route_seconds.values())
        cells.append(f"**{seconds / count * 1000:.2f}** ({count:.0f})" if count else "—")
    rows.append(cells)
    return md_table(header, rows)


def _route_stage_table(run: PhaseRun) -> str:
    routes = sorted(run.stage_ms_by_route, key=lambda r: -sum(x.route == r for x in run.records))
    stages: list[str] = []
    for route in routes:
        stages += [s for s in run.stage_ms_by_route[route] if s not in stages]
    rows = [[stage, *(_fmt(run.stage_ms_by_route[route].get(stage), 2) for route in routes)] for stage in stages]
    rows.append(["**sum of stages**", *(f"**{sum(run.stage_ms_by_route[r].values()):.2f}**" for r in routes)])
    return md_table(["stage (mean ms)", *routes], rows)


def _cpu_table(runs: Sequence[PhaseRun]) -> str:
    processes = ["kefu", "stub LLM", "lumo-shop", "load generator"]
    rows = []
    for r in runs:
        if r.name == "warm-up":
            continue
        per_process = [f"{_cores(r, p):.2f} · {_cpu_ms_per_turn(r, p):.2f}" for p in processes]
        loops = " + ".join(f"{main / r.wall_s:.2f}" for main, _ in r.kefu_threads_s) or "—"
        pools = " + ".join(f"{other / r.wall_s:.2f}" for _, other in r.kefu_threads_s) or "—"
        rows.append([f"{r.workers}w {r.name}", *per_process, loops, pools])
    header = ["phase", *(f"{p}: cores · CPU ms/turn" for p in processes)]
    return md_table([*header, "kefu event-loop threads, cores", "kefu other threads, cores"], rows)


def _error_lines(runs: Sequence[PhaseRun]) -> list[str]:
    samples: dict[str, int] = {}
    for run in runs:
        for record in run.records:
            if record.error:
                key = f"{run.workers}w {run.name}, {record.transport}: {record.error[:200]}"
                samples[key] = samples.get(key, 0) + 1
    if not samples:
        return []
    top = sorted(samples.items(), key=lambda kv: -kv[1])[:8]
    return ["**Failed turns** (left out of the latencies):", "", *(f"- {n}× `{s}`" for s, n in top), ""]


def _run_data(run: PhaseRun) -> dict[str, Any]:
    lag = sorted(run.tick_lag_ms)
    return {
        "workers": run.workers,
        "phase": run.name,
        "wall_s": round(run.wall_s, 2),
        "offered": run.offered,
        "window_s": run.window_s,
        "not_sent": run.not_sent,
        "cut_short": run.cut_short,
        "overall": _stats(run.records, run.window_s or run.wall_s),
        "error_samples": sorted({r.error for r in run.records if r.error})[:5],
        "groups": _groups(run),
        "ws_connect_ms": {f"p{q}": round(_ms(run.connect_s, q), 1) for q in (50, 95, 99)} if run.connect_s else None,
        "tick_lag_ms": {f"p{q}": round(percentile(lag, q), 2) for q in (50, 99)} if lag else None,
        "cpu_s": {k: round(v, 3) for k, v in run.cpu_s.items()},
        "kefu_threads_cpu_s": [{"event_loop": round(m, 3), "other": round(o, 3)} for m, o in run.kefu_threads_s],
        "stage_mean_ms": {s: round(sec / n * 1000, 3) for s, (n, sec) in run.stages.items()},
        "stage_turns": {s: n for s, (n, _) in run.stages.items()},
        "stage_mean_ms_by_route": {
            route: {s: round(v, 3) for s, v in stages.items()} for route, stages in run.stage_ms_by_route.items()
        },
    }


def _report(
    plan: LoadTestPlan, runs: list[PhaseRun], pairs: list[tuple[PhaseRun, PhaseRun]], *, quick: bool
) -> SectionResult:
    targets = _targets(plan, runs, pairs)
    mix = ", ".join(f"{k} {w:.0%}" for k, w in plan.mix)
    transports = ", ".join(f"{t} {w:.0%}" for t, w in plan.transports)
    measured = [r for r in runs if r.name != "warm-up"]
    lines = [
        f"Customers hold realistic conversations with `kefu serve` (demo shop, SQLite, stub LLM answering after a "
        f"fixed {plan.llm_latency_ms:g} ms) with {' and '.join(str(w) for w in plan.workers)} worker process(es). "
        f"Conversations ({mix}): FAQ questions and their paraphrases, knowledge questions, order flows with an "
        "identity check (order number, then phone number), requests for a person; Chinese and English; "
        f"{plan.greeting_share:.0%} of single questions start with a greeting. Transports ({transports}): "
        "`POST /v1/chat`, SSE `POST /v1/chat/stream`, and the widget's WebSocket (customer token, then one socket "
        "per conversation). A turn's latency runs from sending the message to having the whole reply.",
        "",
        targets_table(targets),
        "",
        f"**Phases** (after {plan.warmup_turns} warm-up turns at concurrency {min(8, plan.concurrency)}): "
        f"*sequential* — one customer, up to {plan.sequential_turns} turns; *capacity* — {plan.concurrency} "
        f"customers in a closed loop, up to {plan.turns} turns or {plan.duration_s:g} s; *rate* — {plan.rate:g} "
        f"turns/s offered in an open loop for up to {plan.duration_s:g} s with at most {plan.concurrency} customers "
        "in conversation (a turn due while all of them wait for a reply is *not sent*). In the rate phase turns/s "
        "counts answered turns over the offered window; elsewhere, over the phase's wall time.",
        "",
        md_table(
            [
                "workers",
                "phase",
                "offered",
                "turns ok",
                "errors",
                "not sent",
                "unexpected",
                "turns/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "kefu CPU, cores",
                "kefu CPU ms/turn",
            ],
            _summary_rows(runs),
        ),
        "",
        "*unexpected*: the conversation's last reply lacked what it must show (the order's details after the "
        "identity check, a handoff when a person was asked for); such turns still count in the latencies.",
    ]
    if pairs:
        lines += ["", _pairs_text(plan, pairs)]
    for run in measured:
        if run.name == "sequential" and run.workers != plan.workers[0]:
            continue
        lines += ["", f"**{run.workers} worker(s), {run.name}** — by kefu's route, by kind and by transport", ""]
        lines.append(_group_table(run))
    first_seq = _find(runs, plan.workers[0], "sequential")
    lines += [
        "",
        "**Where the time goes** — mean time per pipeline stage from kefu's `/metrics` "
        "(`kefu_stage_duration_seconds`, read before and after each phase; all workers). Stage times are wall "
        "times: under load they include waiting for the event loop.",
        "",
        _stage_table(runs),
    ]
    if first_seq is not None and first_seq.stage_ms_by_route:
        lines += [
            "",
            f"**Per route, {first_seq.workers} worker(s), sequential** — mean ms per stage as kefu stores it on each "
            "reply (stages a route skips are blank; HTTP, JSON and the transport come on top):",
            "",
            _route_stage_table(first_seq),
        ]
    lines += [
        "",
        "**CPU per process** (cores = CPU seconds / phase wall time; ms/turn over every turn of the phase). "
        "kefu's CPU is split, per worker process, into its event-loop thread (one core at most: Python on the "
        "loop) and its other threads (`asyncio.to_thread` pools running the embedding model and searches, "
        "SQLite, numpy):",
        "",
        _cpu_table(runs),
        "",
        *_error_lines(measured),
        "Notes:",
        "- Everything runs on the one machine: the load generator, the stub LLM and the shop's backend take CPU "
        "from kefu (see the CPU table); with two cores, two kefu workers cannot have a core each.",
        "- kefu's data dir is prepared once (knowledge indexed, intent classifier trained) by a one-worker start "
        "and copied for each run; chat endpoints are open (`KEFU_AUTH__MODE=open`) and rate limits far above the "
        "load, so that one address can play every customer. SQLite is the store, so two workers share one "
        "SQLite file.",
        "- Texts repeat across conversations as real customers' questions do (the FAQ's phrasings, with or "
        "without a greeting): the mix draws from about 1,400 distinct texts. The first time a text comes, kefu "
        'runs the embedding model on it (the largest single cost of a turn; section "Embedding engines" gives '
        "its CPU per question on this machine); a repeat "
        "reuses the recent-query memo (4096 texts) and, for a self-contained FAQ or knowledge question, the "
        "answer cache (route `cache`). Phases are short, so many texts are still new in them. Flows read the "
        "shop's backend only.",
        "- The stub's fixed reply is not grounded in the shop's knowledge, so kefu's grounding check turns most "
        "LLM answers into a quote of the best passage (`knowledge_quote`) or an honest `no_answer`; the LLM was "
        'called all the same (stage `generate`). A question kefu sends into a flow ("我想退货怎么操作") counts '
        "under its kind and under the route kefu chose.",
    ]
    rate_run = _find(runs, plan.workers[0], "rate")
    if rate_run is not None and rate_run.tick_lag_ms:
        lag = sorted(rate_run.tick_lag_ms)
        lines.append(
            f"- Load generator timing, {rate_run.workers}w rate phase: turns left {percentile(lag, 50):.2f} ms "
            f"(p50) / {percentile(lag, 99):.2f} ms (p99) after they were due."
        )
    if quick:
        lines.append("- **Quick smoke run**: counts are too small for the numbers to mean much.")
    data = {
        "plan": asdict(plan),
        "runs": [_run_data(r) for r in runs],
        "paired_capacity": [{"base": _run_data(b), "top": _run_data(t)} for b, t in pairs],
    }
    return SectionResult(key=KEY, title=TITLE, markdown="\n".join(lines), data=data, targets=targets)


# --- command line -------------------------------------------------------------------------------------------


def _worker_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(w) for w in text.split(","))
    except ValueError:
        counts = ()
    if not counts or any(not 1 <= c <= 64 for c in counts):
        raise argparse.ArgumentTypeError(f"expected worker counts 1-64 separated by commas, like 1,2; got {text!r}")
    return counts


def _at_least(minimum: float, kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text}")
        return value

    return parse


def _plan_from_args(args: argparse.Namespace) -> LoadTestPlan:
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.workers:
        changes["workers"] = args.workers
    for name in ("turns", "duration", "rate", "concurrency", "llm_latency_ms"):
        value = getattr(args, name)
        if value is not None:
            changes["duration_s" if name == "duration" else name] = value
    if args.set:
        changes["kefu_env"] = (*plan.kefu_env, *args.set)
    return replace(plan, **changes)


def _kefu_setting(value: str) -> tuple[str, str]:
    name, sep, setting = value.partition("=")
    if not sep or not name.startswith("KEFU_"):
        raise argparse.ArgumentTypeError(f"expected KEFU_NAME=value, got {value!r}")
    return name, setting


def main(argv: Sequence[str] | None = None) -> int:
    from bench import run as bench_run

    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--workers", type=_worker_counts, help="kefu worker counts to measure, comma-separated (default 1,2)")
    add("--turns", type=_at_least(1, int), help=f"turns per measured phase at most (default {FULL.turns})")
    add("--duration", type=_at_least(1, float), help=f"seconds per measured phase (default {FULL.duration_s:g})")
    add("--rate", type=_at_least(0, float), help=f"turns/s offered in the open loop, 0: none (default {FULL.rate:g})")
    add("--concurrency", type=_at_least(1, int), help=f"customers in conversation at once (default {FULL.concurrency})")
    add("--llm-latency-ms", type=_at_least(0, float), help=f"the stub LLM's latency (default {FULL.llm_latency_ms:g})")
    add("--quick", action="store_true", help="smoke run with tiny counts → build/bench-quick/")
    add("--output-dir", type=Path, help="where to write the report (default docs/)")
    add("--keep-work-dir", action="store_true", help="keep the temp dir with data and server logs")
    add(
        "--set",
        type=_kefu_setting,
        action="append",
        metavar="KEFU_NAME=value",
        help="a kefu setting for the servers measured (repeatable), e.g. KEFU_ANSWER_CACHE__ENABLED=false",
    )
    args = parser.parse_args(args_list)
    plan = _plan_from_args(args)
    shown = [a for a in args_list if a != "--keep-work-dir"]  # it changes nothing measured
    command = " ".join(["python -m bench.loadtest", *shown])
    if os.environ.get("MAKELEVEL"):
        command = " ".join(["make loadtest", *([f'ARGS="{" ".join(shown)}"'] if shown else [])])
    results = bench_run.run_and_report(
        [KEY],
        quick=args.quick,
        output_dir=args.output_dir,
        command=command,
        keep_work_dir=args.keep_work_dir,
        plans={KEY: plan},
    )
    for result in results:
        print(f"\n## {result.title}\n\n{result.markdown}\n")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
