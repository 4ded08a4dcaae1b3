"""Section "kefu overhead": what kefu adds on top of the LLM, with a fixed-latency stub as the LLM.

Three processes, so that none shares another's event loop or GIL: the stub LLM (`bench.stub_llm`),
kefu served the way `kefu serve` serves it (uvicorn, SQLite in a temp data dir, log level WARNING),
and this process as the load generator. The same load generator calls the stub directly (the
baseline) and kefu's `POST /v1/chat`, in the same run. A turn calls the stub once, not at all (a flow
answers it) or twice (the intent fallback, then the answer): the stub counts each turn's calls by the
`X-Request-ID` kefu forwards, and kefu's overhead on a turn is its latency minus the stub's for each call.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from bench.loadgen import HTTPConnection, LoadResult, run_event_loop, run_load

KEY = "overhead"
TITLE = "kefu overhead (fixed-latency stub LLM)"


QUESTIONS_ZH = (
    "退货政策是什么？",
    "满多少包邮？发货到新疆要几天？",
    "我的订单什么时候发货？",
    "可以开增值税专用发票吗？",
    "收到的商品有破损，怎么办？",
    "能不能改一下收货地址？",
    "支持花呗分期吗？",
    "这件衣服有没有XL码？",
    "退款多久能到账？",
    "你们的客服几点上班？",
)
QUESTIONS_EN = (
    "What is your return policy?",
    "How long does shipping to Shanghai take?",
    "Can I get a VAT invoice for my order?",
    "Can I pay in instalments?",
    "My parcel arrived damaged, what should I do?",
    "Can I change the delivery address after ordering?",
    "Do you ship to Hong Kong?",
    "When will my refund arrive?",
    "Is this jacket available in size XL?",
    "What are your customer service hours?",
)
CONTINUE_SHARE = 0.2
"""Share of turns that continue an existing session, so that its history is loaded."""


@dataclass(frozen=True, slots=True)
class OverheadPlan:
    """Counts and limits of one overhead run."""

    stub_latency_ms: float = 20.0
    warmup: int = 50
    sequential: int = 300
    rounds: int = 3
    """The sequential runs alternate stub and kefu in this many blocks, so drifting machine load hits both."""
    concurrency: int = 64
    concurrent_requests: int = 3000
    concurrent_max_s: float = 30.0
    # Targets from the issue.
    max_added_p50_ms: float = 5.0
    max_added_p99_ms: float = 15.0
    min_turns_per_s: float = 200.0
    only_variants: tuple[str, ...] | None = None
    """Measure just these kefu variants (keys of `_variants`), when the kefu served has them."""
    workers: int = 1
    """kefu worker processes (`KEFU_SERVER__WORKERS`)."""


FULL = OverheadPlan()
QUICK = OverheadPlan(warmup=10, sequential=40, rounds=2, concurrent_requests=400, concurrent_max_s=8.0)


def _order_number(index: int) -> str:
    """A distinct order number in the demo shop's format (LM, year, month, serial) for each of 120,000 requests."""
    return f"LM26{1 + (index // 10_000) % 12:02d}{index % 10_000:04d}"


class ChatWorkload:
    """Realistic `POST /v1/chat` bodies: zh and en questions, ~20% continuing a session already answered."""

    def __init__(self, phase: str, seed: int) -> None:
        self.phase = phase
        self._rng = random.Random(seed)
        self._users: dict[int, str] = {}
        self._sessions: list[tuple[str, str]] = []
        self.server_latency_ms: list[float] = []
        self.continued = 0
        self._sent = 0
        self._run = uuid.uuid4().hex[:8]
        """Ids stay distinct across the kefu configurations that share one stub."""

    def request_id(self, index: int) -> str:
        """A distinct X-Request-ID per request: kefu forwards it on each model call, and the stub counts them."""
        self._sent += 1
        return f"bench-{self._run}-{self.phase}-{self._sent}"

    def request(self, index: int) -> tuple[str, bytes]:
        rng = self._rng
        zh = rng.random() < 0.5
        # Every message is different (as customers' are), so no stage can answer it from a cache of recent texts.
        tail = f"订单号 {_order_number(index)}" if zh else f"(order {_order_number(index)})"
        body: dict[str, Any] = {
            "text": f"{rng.choice(QUESTIONS_ZH if zh else QUESTIONS_EN)} {tail}",
            "channel": "web",
            "metadata": {"bench_phase": self.phase},
        }
        if self._sessions and rng.random() < CONTINUE_SHARE:
            session_id, user_id = rng.choice(self._sessions)
            body["session_id"] = session_id
            self.continued += 1
        else:
            user_id = f"bench-{self.phase}-{index}"
        body["user_id"] = user_id
        self._users[index] = user_id
        return "/v1/chat", json.dumps(body, ensure_ascii=False).encode()

    def check(self, index: int, status: int, payload: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {payload[:200].decode(errors='replace')}"
        reply = json.loads(payload)
        if reply.get("error"):
            return f"fallback reply, error {reply['error']}"
        if not reply.get("reply"):
            return "empty reply"
        self._sessions.append((reply["session_id"], self._users.pop(index)))
        self.server_latency_ms.append(float(reply["latency_ms"]))
        return None


class StubWorkload:
    """The body kefu itself would send the model for the same questions (system prompt + question)."""

    def __init__(self, system_prompts: dict[str, str], seed: int) -> None:
        self._system = system_prompts
        self._rng = random.Random(seed)

    def request(self, index: int) -> tuple[str, bytes]:
        zh = self._rng.random() < 0.5
        question = self._rng.choice(QUESTIONS_ZH if zh else QUESTIONS_EN)
        body = {
            "model": "stub",
            "messages": [
                {"role": "system", "content": self._system["zh" if zh else "en"]},
                {"role": "user", "content": question},
            ],
            "max_tokens": 384,
            "temperature": 0.3,
        }
        return "/v1/chat/completions", json.dumps(body, ensure_ascii=False).encode()

    @staticmethod
    def check(index: int, status: int, payload: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {payload[:200].decode(errors='replace')}"
        if not json.loads(payload)["choices"][0]["message"]["content"]:
            return "empty completion"
        return None


def _system_prompts(shop_dir: Path | None) -> dict[str, str]:
    from kefu.prompts import PromptLibrary
    from kefu.shop import load_shop

    prompts, shop = PromptLibrary(), load_shop(shop_dir)
    return {lang: prompts.render("system", shop=shop, language=lang) for lang in ("zh", "en")}


@dataclass(frozen=True, slots=True)
class Variant:
    """One configuration of kefu to measure against the stub."""

    key: str
    label: str
    env: dict[str, str]


def _variants(fields: set[str]) -> list[Variant]:
    """kefu as shipped; where it has them, without the stages that run the embedding model per turn; and as
    shipped with two worker processes (one per core of the 2-core reference machine)."""
    variants = [Variant("as_shipped", "kefu as shipped", {})]
    without_model = {}
    if "understanding" in fields:
        without_model["KEFU_UNDERSTANDING__ENABLED"] = "false"
    if "guards" in fields:
        without_model["KEFU_GUARDS__EMBEDDING_CLASSIFIER"] = "false"
    if without_model:
        variants.append(Variant("no_embedding", "kefu without per-turn embeddings", without_model))
    if "server" in fields:
        # One worker per core, as docs/deployment.md sizes a server: on a SQLite file they share the store.
        variants.append(Variant("two_workers", "kefu as shipped, 2 workers", {"KEFU_SERVER__WORKERS": "2"}))
    return variants


@dataclass(slots=True)
class Phase:
    """One measured load run, with the CPU each process spent on it."""

    name: str
    target: str
    result: LoadResult
    cpu_s: dict[str, float]


class _CpuMeter:
    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids

    def read(self) -> dict[str, float]:
        readings = {name: process_cpu_seconds(pid) for name, pid in self._pids.items()}
        readings["load generator"] = self_cpu_seconds()
        return readings


async def _measure(
    name: str,
    target: str,
    server: ServerProcess,
    workload: ChatWorkload | StubWorkload,
    meter: _CpuMeter,
    *,
    requests: int,
    concurrency: int,
    max_seconds: float,
) -> Phase:
    before = meter.read()
    result = await run_load(
        server.base_url,
        workload.request,
        requests=requests,
        concurrency=concurrency,
        max_seconds=max_seconds,
        check=workload.check,
        request_id=workload.request_id if isinstance(workload, ChatWorkload) else None,
    )
    after = meter.read()
    return Phase(name, target, result, {k: after[k] - before[k] for k in after})


class Rounds:
    """The alternating runs of one target at one concurrency: pooled latencies, per-run throughput."""

    def __init__(self, runs: list[Phase]) -> None:
        self.runs = runs
        self.pooled = LoadResult(
            concurrency=runs[0].result.concurrency,
            latencies=sorted(lat for p in runs for lat in p.result.latencies),
            errors=sum(p.result.errors for p in runs),
            wall_s=sum(p.result.wall_s for p in runs),
            error_samples=sorted({s for p in runs for s in p.result.error_samples})[:5],
            by_id={ident: lat for p in runs for ident, lat in p.result.by_id.items()},
        )
        self.cpu_s = {k: sum(p.cpu_s[k] for p in runs) for k in runs[0].cpu_s}

    @property
    def throughputs(self) -> list[float]:
        return [p.result.throughput for p in self.runs]

    @property
    def best_throughput(self) -> float:
        return max(self.throughputs)

    @property
    def median_throughput(self) -> float:
        return percentile(sorted(self.throughputs), 50)

    def ms(self, q: float) -> float:
        return self.pooled.ms(q)

    def cpu_ms_per_request(self) -> dict[str, float]:
        n = max(self.pooled.ok + self.pooled.errors, 1)
        return {proc: round(seconds * 1000 / n, 3) for proc, seconds in self.cpu_s.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.pooled.summary(),
            "throughput_per_s": round(self.pooled.throughput, 1),
            "throughput_per_run": [round(t, 1) for t in self.throughputs],
            "best_throughput_per_s": round(self.best_throughput, 1),
            "median_throughput_per_s": round(self.median_throughput, 1),
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()},
            "cpu_ms_per_request": self.cpu_ms_per_request(),
        }


def _kefu_env(
    data_dir: Path, stub_url: str, port: int, shop_dir: Path | None, kefu_src: Path | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    if kefu_src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(kefu_src), env.get("PYTHONPATH")]))
    env.update(
        {
            "KEFU_CONFIG": str(data_dir / "absent-kefu.yaml"),
            "KEFU_DATA_DIR": str(data_dir),
            "KEFU_LOG_LEVEL": "WARNING",
            "KEFU_SERVER__HOST": "127.0.0.1",
            "KEFU_SERVER__PORT": str(port),
            "KEFU_LLM__BACKEND": "openai",
            "KEFU_LLM__BASE_URL": f"{stub_url}/v1",
            "KEFU_LLM__MODEL": "stub",
            "KEFU_LLM__MAX_RETRIES": "0",
        }
    )
    if shop_dir is not None:
        env["KEFU_SHOP__DIR"] = str(shop_dir)
    return env


@contextmanager
def serve_kefu(
    data_dir: Path,
    stub: ServerProcess,
    shop_dir: Path | None,
    kefu_src: Path | None,
    fields: set[str],
    env: Mapping[str, str],
) -> Iterator[ServerProcess]:
    """kefu served as `kefu serve` serves it, on the stub, with its data in `data_dir` and its log beside it.

    `fields`: the top-level settings of that kefu (`_settings_fields`); `env`: settings of this configuration.
    """
    port = free_port()
    kefu_env = _kefu_env(data_dir, stub.base_url, port, shop_dir, kefu_src)
    kefu_env.update(_load_test_settings(fields))
    kefu_env.update(env)
    with kefu_process(
        port=port,
        log_path=data_dir.with_name(f"{data_dir.name}.log"),
        env=kefu_env,
        startup_timeout_s=300,  # loads models and indexes the shop's knowledge on a cold data dir
    ) as kefu:
        yield kefu


def _settings_fields(env: dict[str, str]) -> set[str]:
    """Top-level settings of the kefu that will be served (which may be another source tree than this one)."""
    listing = subprocess.run(
        [sys.executable, "-c", "from kefu.config import Settings; print(' '.join(Settings.model_fields))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(listing.stdout.split())


def _load_test_settings(fields: set[str]) -> dict[str, str]:
    """Settings a load test from one address needs: public chat endpoints, budgets it cannot exhaust.

    Rate limiting stays on (its cost is part of a turn) with limits far above what the run sends.
    """
    out = {}
    if "auth" in fields:
        out["KEFU_AUTH__MODE"] = "open"
    if "rate_limit" in fields:
        for budget in ("PER_IP", "PER_API_KEY", "PER_CUSTOMER"):
            out[f"KEFU_RATE_LIMIT__{budget}"] = "1000000/minute"
    return out


def _stage_breakdown(db_path: Path, phase: str) -> dict[str, dict[str, float]]:
    """Per-stage latency (p50, p99 in ms) kefu recorded on the replies of one phase; and the understanding stage's
    LLM fallback (a second call to the stub, for a message the intent classifier is unsure of) on the turns it ran."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT r.stage_latency_ms, r.latency_ms, json_extract(r.metadata, '$.understanding.latency_ms.llm') "
            "FROM messages r JOIN messages u ON r.reply_to = u.id "
            "WHERE r.role = 'assistant' AND json_extract(u.metadata, '$.bench_phase') = ?",
            (phase,),
        ).fetchall()
    stages: dict[str, list[float]] = {}
    fallbacks: list[float] = []
    for stage_json, total, fallback_ms in rows:
        for stage, ms in json.loads(stage_json or "{}").items():
            stages.setdefault(stage, []).append(float(ms))
        stages.setdefault("turn (as kefu records it)", []).append(float(total))
        if fallback_ms is not None:
            fallbacks.append(float(fallback_ms))
    if fallbacks:
        share = len(fallbacks) / len(rows)
        stages[f"understand: its LLM fallback, on {share:.0%} of turns (in `understand` above)"] = fallbacks
    out = {}
    for stage, values in stages.items():
        values.sort()
        out[stage] = {"p50_ms": round(percentile(values, 50), 3), "p99_ms": round(percentile(values, 99), 3)}
    return out


async def _run_phases(
    stub: ServerProcess, kefu: ServerProcess, plan: OverheadPlan, shop_dir: Path | None
) -> dict[str, Any]:
    meter = _CpuMeter({"kefu": kefu.pid, "stub": stub.pid})
    stub_load = StubWorkload(_system_prompts(shop_dir), seed=1)
    warm_kefu = ChatWorkload("warmup", seed=2)
    c1_kefu = ChatWorkload("c1", seed=3)
    cn_kefu = ChatWorkload(f"c{plan.concurrency}", seed=4)

    progress("overhead: warm-up")
    # Warm-up: imports, connection pools, SQLite pages, the first SQLAlchemy compilations, lazy models.
    for target, workload, server in (("stub", stub_load, stub), ("kefu", warm_kefu, kefu)):
        await _measure("warmup", target, server, workload, meter, requests=plan.warmup, concurrency=1, max_seconds=60)
        await _measure("warmup", target, server, workload, meter, requests=plan.warmup, concurrency=8, max_seconds=60)

    progress(f"overhead: concurrency 1, {plan.sequential} requests to each of stub and kefu")
    c1_stub, c1 = await _alternate(
        stub, stub_load, kefu, c1_kefu, meter, rounds=plan.rounds, requests=plan.sequential, concurrency=1, max_s=240
    )
    progress(f"overhead: concurrency {plan.concurrency}, up to {plan.concurrent_requests} requests to each")
    cn_stub, cn = await _alternate(
        stub,
        stub_load,
        kefu,
        cn_kefu,
        meter,
        rounds=plan.rounds,
        requests=plan.concurrent_requests,
        concurrency=plan.concurrency,
        max_s=plan.concurrent_max_s,
    )
    return {
        "c1_stub": c1_stub,
        "c1_kefu": c1,
        "cN_stub": cn_stub,
        "cN_kefu": cn,
        "continued": {"c1": c1_kefu.continued, "cN": cn_kefu.continued},
        "llm_calls": await _stub_calls(stub),
    }


async def _stub_calls(stub: ServerProcess) -> dict[str, int]:
    """How many completions the stub served per X-Request-ID so far."""
    conn = HTTPConnection("127.0.0.1", stub.port)
    try:
        status, payload = await conn.request("GET", "/bench/calls")
    finally:
        await conn.close()
    if status != 200:
        raise RuntimeError(f"stub GET /bench/calls: HTTP {status}")
    calls: dict[str, int] = json.loads(payload)["calls"]
    return calls


async def _alternate(
    stub: ServerProcess,
    stub_load: StubWorkload,
    kefu: ServerProcess,
    kefu_load: ChatWorkload,
    meter: _CpuMeter,
    *,
    rounds: int,
    requests: int,
    concurrency: int,
    max_s: float,
) -> tuple[Rounds, Rounds]:
    """Measure stub and kefu in alternating rounds, so that a burst of load from elsewhere hits both."""
    stub_runs: list[Phase] = []
    kefu_runs: list[Phase] = []
    per_round, per_round_s = max(requests // rounds, 1), max_s / rounds
    for _ in range(rounds):
        for runs, server, workload, target in (
            (stub_runs, stub, stub_load, "stub"),
            (kefu_runs, kefu, kefu_load, "kefu"),
        ):
            runs.append(
                await _measure(
                    f"c{concurrency}",
                    target,
                    server,
                    workload,
                    meter,
                    requests=per_round,
                    concurrency=concurrency,
                    max_seconds=per_round_s,
                )
            )
    return Rounds(stub_runs), Rounds(kefu_runs)


@dataclass(slots=True)
class VariantResult:
    """Everything measured for one kefu variant, with the stub rounds it alternated with."""

    variant: Variant
    c1_stub: Rounds
    c1: Rounds
    cn_stub: Rounds
    cn: Rounds
    continued: dict[str, int]
    stages: dict[str, dict[str, float]]
    llm_calls: dict[str, int]
    """Model calls the stub served per X-Request-ID (the load generator's ids of kefu's turns)."""

    def per_turn(self) -> PerTurn | None:
        """What each concurrency-1 turn added over its own model calls; None when this kefu does not forward the
        request id to the model (an older source tree), so its calls cannot be attributed to turns."""
        return PerTurn.attribute(self.c1.pooled.by_id, self.llm_calls, self.c1_stub.ms(50))


@dataclass(slots=True)
class PerTurn:
    """Turn latency minus the stub's p50 for each model call the turn made, for all turns and by number of calls."""

    stub_p50_ms: float
    added_ms: list[float] = field(default_factory=list)
    by_calls: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)
    """Number of model calls → (latencies, added), ms."""

    @classmethod
    def attribute(cls, turns: Mapping[str, float], calls: Mapping[str, int], stub_ms: float) -> PerTurn | None:
        """`turns`: latency (seconds) by request id; `calls`: the stub's model calls by request id. None when no
        turn's id reached the stub (a kefu that does not forward X-Request-ID), so calls cannot be attributed."""
        if not turns or not any(ident in calls for ident in turns):
            return None
        out = cls(stub_ms)
        for ident, latency_s in turns.items():
            n = calls.get(ident, 0)
            out.add(n, latency_s * 1000, latency_s * 1000 - n * stub_ms)
        return out

    def add(self, calls: int, latency_ms: float, added_ms: float) -> None:
        self.added_ms.append(added_ms)
        latencies, added = self.by_calls.setdefault(calls, ([], []))
        latencies.append(latency_ms)
        added.append(added_ms)

    def ms(self, q: float) -> float:
        return percentile(sorted(self.added_ms), q)

    def rows(self) -> list[tuple[int, int, float, float, float, float]]:
        """(calls, turns, latency p50, p99, added p50, p99) per number of calls."""
        out = []
        for calls, (latencies, added) in sorted(self.by_calls.items()):
            lat, add = sorted(latencies), sorted(added)
            out.append(
                (calls, len(add), percentile(lat, 50), percentile(lat, 99), percentile(add, 50), percentile(add, 99))
            )
        return out


def run(options: BenchOptions, plan: OverheadPlan | None = None) -> SectionResult:
    plan = plan or (QUICK if options.quick else FULL)
    shop_dir = DEMO_SHOP if (DEMO_SHOP / "shop.yaml").is_file() else None
    stub_port = free_port()
    stub_args = ["-m", "bench.stub_llm", "--port", str(stub_port), "--latency-ms", str(plan.stub_latency_ms)]
    results = []
    with server_process(
        stub_args, port=stub_port, ready_path="/v1/models", log_path=options.work_dir / "stub.log"
    ) as stub:
        probe_env = _kefu_env(options.work_dir, stub.base_url, 0, shop_dir, options.kefu_src)
        fields = _settings_fields(probe_env)
        variants = _variants(fields)
        if plan.only_variants is not None:
            variants = [v for v in variants if v.key in plan.only_variants] or variants[:1]
        for variant in variants:
            progress(f"overhead: starting {variant.label}")
            data_dir = options.work_dir / f"kefu-{variant.key}"
            env = {"KEFU_SERVER__WORKERS": str(plan.workers), **variant.env}
            with serve_kefu(data_dir, stub, shop_dir, options.kefu_src, fields, env) as kefu:
                measured = run_event_loop(lambda: _run_phases(stub, kefu, plan, shop_dir))
            results.append(
                VariantResult(
                    variant=variant,
                    c1_stub=measured["c1_stub"],
                    c1=measured["c1_kefu"],
                    cn_stub=measured["cN_stub"],
                    cn=measured["cN_kefu"],
                    continued=measured["continued"],
                    stages=_stage_breakdown(data_dir / "kefu.db", "c1"),
                    llm_calls=measured["llm_calls"],
                )
            )
    return _report(plan, results, shop_dir, quick=options.quick)


def _fmt(ms: float | None) -> str:
    return "—" if ms is None or ms != ms else f"{ms:.2f}"


def _error_lines(*runs: Rounds) -> list[str]:
    samples = sorted({sample for r in runs for sample in r.pooled.error_samples})
    if not samples:
        return []
    return ["**Failed requests** (they are left out of the latencies):", "", *(f"- `{s[:300]}`" for s in samples), ""]


def _added(r: VariantResult, q: float) -> float:
    """kefu's quantile minus the stub's: right only when every turn makes exactly one model call."""
    return r.c1.ms(q) - r.c1_stub.ms(q)


def _turn_added(r: VariantResult, q: float) -> float:
    """The quantile of what each turn added over its own model calls (the quantile gap where calls are unknown)."""
    per_turn = r.per_turn()
    return per_turn.ms(q) if per_turn is not None else _added(r, q)


def _targets(plan: OverheadPlan, r: VariantResult) -> list[Target]:
    how = "over its model calls" if r.per_turn() is not None else "(quantile gap)"
    c1 = f", concurrency 1 ({r.variant.label})"
    suffix = f" ({r.variant.label})"
    return [
        Target(f"kefu adds {how} at p50" + c1, round(_turn_added(r, 50), 2), plan.max_added_p50_ms, "<", "ms"),
        Target(f"kefu adds {how} at p99" + c1, round(_turn_added(r, 99), 2), plan.max_added_p99_ms, "<", "ms"),
        Target(
            f"turns/s at concurrency {plan.concurrency}, best of {plan.rounds} runs" + suffix,
            round(r.cn.best_throughput, 1),
            plan.min_turns_per_s,
            ">=",
            "turns/s",
        ),
    ]


def _c1_rows(r: VariantResult) -> list[list[object]]:
    def row(label: str, rounds: Rounds, cpu: str) -> list[object]:
        mean = rounds.pooled.summary()["mean_ms"]
        return [label, *(_fmt(rounds.ms(q)) for q in (50, 90, 99)), _fmt(mean), rounds.pooled.errors, cpu]

    cpu = r.c1.cpu_ms_per_request()
    return [
        row("stub LLM, direct", r.c1_stub, f"{r.c1_stub.cpu_ms_per_request()['stub']:.2f}"),
        row(f"{r.variant.label} → stub", r.c1, f"{cpu['kefu']:.2f} (kefu) + {cpu['stub']:.2f} (stub)"),
        [f"{r.variant.label} − stub, quantile by quantile", *(_fmt(_added(r, q)) for q in (50, 90, 99)), "", "", ""],
    ]


_CALLS_FIELDS = ("calls", "turns", "latency_p50_ms", "latency_p99_ms", "added_p50_ms", "added_p99_ms")


def _calls_data(r: VariantResult) -> list[dict[str, float]]:
    per_turn = r.per_turn()
    rows = per_turn.rows() if per_turn is not None else []
    return [{k: round(v, 3) for k, v in zip(_CALLS_FIELDS, row, strict=True)} for row in rows]


def _calls_rows(r: VariantResult) -> list[list[object]]:
    per_turn = r.per_turn()
    if per_turn is None:
        return [[r.variant.label, "unknown (this kefu does not forward X-Request-ID)", "", "", "", "", "", ""]]
    total = len(per_turn.added_ms)
    rows: list[list[object]] = [
        [r.variant.label, calls, turns, f"{turns / total:.0%}", _fmt(p50), _fmt(p99), _fmt(a50), _fmt(a99)]
        for calls, turns, p50, p99, a50, a99 in per_turn.rows()
    ]
    rows.append(
        [
            f"**{r.variant.label}**",
            "all",
            total,
            "100%",
            "",
            "",
            f"**{_fmt(per_turn.ms(50))}**",
            f"**{_fmt(per_turn.ms(99))}**",
        ]
    )
    return rows


def _cn_row(label: str, rounds: Rounds) -> list[object]:
    cpu = rounds.cpu_ms_per_request()
    return [
        label,
        f"{rounds.best_throughput:.0f}",
        f"{rounds.median_throughput:.0f}",
        " / ".join(f"{t:.0f}" for t in rounds.throughputs),
        _fmt(rounds.ms(50)),
        _fmt(rounds.ms(99)),
        rounds.pooled.errors,
        " · ".join(f"{cpu[k]:.2f}" for k in ("kefu", "stub", "load generator")),
    ]


def _ceiling(r: VariantResult) -> float:
    cpu = r.cn.cpu_ms_per_request()["kefu"]
    return 1000 / cpu if cpu > 0 else float("nan")


def _report(plan: OverheadPlan, results: list[VariantResult], shop_dir: Path | None, *, quick: bool) -> SectionResult:
    c = plan.concurrency
    targets = [t for r in results for t in _targets(plan, r)]
    lines = [
        f"What kefu adds on top of the LLM. The LLM is a stub answering after a fixed {plan.stub_latency_ms:g} ms "
        "(`bench/stub_llm.py`); the same load generator calls it directly (the baseline) and through kefu's "
        "`POST /v1/chat`, alternating between the two, in the same run. Request bodies mix Chinese and English "
        f"questions, each made unique by an order number, so that every turn runs the embedding model (no "
        f"cache of recent texts helps); {CONTINUE_SHARE:.0%} of turns continue an earlier session, so its "
        f"history is loaded. kefu runs {plan.workers} worker process(es) (`KEFU_SERVER__WORKERS`) unless a "
        "configuration says otherwise.",
    ]
    if len(results) > 1:
        lines += [
            "",
            "Configurations: **kefu as shipped** (every default stage, one worker), **kefu without per-turn "
            "embeddings** (`KEFU_UNDERSTANDING__ENABLED=false`, `KEFU_GUARDS__EMBEDDING_CLASSIFIER=false`), "
            "which separates the cost of running the embedding model on each message from the rest of kefu "
            "(HTTP, pipeline, store, the LLM client), and **kefu as shipped, 2 workers** "
            "(`KEFU_SERVER__WORKERS=2`, one per core as docs/deployment.md sizes a server; both on the same "
            "SQLite file, with the stub and the load generator on the same two cores).",
        ]
    lines += [
        "",
        targets_table(targets),
        "",
        f"**Latency at concurrency 1**: {results[0].c1.pooled.ok} sequential requests to each, in {plan.rounds} "
        f"alternating rounds, after {plan.warmup * 2} warm-up requests.",
        "",
        md_table(
            ["", "p50 ms", "p90 ms", "p99 ms", "mean ms", "errors", "server CPU ms/request"],
            [row for r in results for row in _c1_rows(r)],
        ),
        "",
        "**What each turn added over its model calls, concurrency 1.** Not every turn calls the model once: a "
        'task answered by a flow ("please confirm the phone number on order LM…") calls it not at all, and a '
        "message the intent classifier is unsure of calls it twice (the LLM fallback, then the answer). The "
        "stub counts the calls of each turn by the `X-Request-ID` kefu forwards on them; a turn's added time is "
        "its latency minus the stub's p50 for each call it made (all of a flow turn's time is kefu's). The "
        "targets are judged on these; the quantile gap above mixes turns with 0, 1 and 2 calls.",
        "",
        md_table(
            ["", "model calls", "turns", "share", "latency p50 ms", "latency p99 ms", "added p50 ms", "added p99 ms"],
            [row for r in results for row in _calls_rows(r)],
        ),
        "",
        f"**Throughput at concurrency {c}**: {plan.rounds} alternating runs per target, each up to "
        f"{max(plan.concurrent_requests // plan.rounds, 1)} requests or {plan.concurrent_max_s / plan.rounds:g} s.",
        "",
        md_table(
            [
                "",
                "best run, req/s",
                "median run, req/s",
                "each run",
                "p50 ms",
                "p99 ms",
                "errors",
                "CPU ms/request: kefu · stub · load generator",
            ],
            [
                row
                for r in results
                for row in (_cn_row("stub LLM, direct", r.cn_stub), _cn_row(f"{r.variant.label} → stub", r.cn))
            ],
        ),
        "",
        *(
            f"- {r.variant.label} used {r.cn.cpu_ms_per_request()['kefu']:.2f} ms of CPU per turn (all workers) at "
            f"concurrency {c}: one core to itself would carry about **{_ceiling(r):.0f} turns/s**."
            for r in results
        ),
        "",
        "Each kefu worker serves on one event loop; the stub and the load generator share the same cores.",
    ]
    for r in results:
        lines += [
            "",
            f"**Where a turn's time goes, {r.variant.label}, concurrency 1** (per-stage times kefu records on "
            "each reply; `generate` includes the stub's latency and kefu's HTTP call to it; persisting the "
            "reply and the HTTP layer come after)",
            "",
            md_table(
                ["stage", "p50 ms", "p99 ms"],
                [[name, _fmt(v["p50_ms"]), _fmt(v["p99_ms"])] for name, v in r.stages.items()],
            ),
        ]
    lines += [
        "",
        *_error_lines(*(x for r in results for x in (r.c1_stub, r.c1, r.cn_stub, r.cn))),
        "Notes:",
        "- Processes: the stub LLM, kefu and the load generator each run in their own process. kefu is started as "
        "`python -m kefu serve` (uvicorn with uvloop and httptools, SQLite in a fresh temp data dir, log level "
        f"WARNING, shop {'`examples/demo_shop`' if shop_dir else 'defaults (no shop.yaml found)'}, chat endpoints "
        "open and rate limits far above the load, so that one client address can drive it). Its knowledge base "
        "is empty here, so the knowledge stage only checks the knowledge version; retrieval and curated answers "
        "are measured in the knowledge section.",
        "- The load generator (`bench/loadgen.py`: raw HTTP/1.1 keep-alive connections on uvloop) shares the "
        "machine's cores with both servers; its CPU cost per request is in the throughput table. On a machine "
        "with few cores, measured throughput is a floor for kefu, not a ceiling.",
        "- A turn's added latency subtracts the stub's p50 over the same rounds for each of its model calls; the "
        "stub's own spread (its p50 to p99 above) is part of the error. On a shared machine p99 is the noisiest "
        "figure, and CPU ms per turn the steadiest; the throughput target is judged on the best run (the one least "
        "disturbed by other work), with the median run beside it.",
    ]
    if quick:
        lines.append("- **Quick smoke run**: counts are too small for the numbers to mean much.")
    data: dict[str, Any] = {"plan": asdict(plan), "shop_dir": str(shop_dir) if shop_dir else None, "variants": {}}
    for r in results:
        data["variants"][r.variant.key] = {
            "label": r.variant.label,
            "settings": r.variant.env,
            "c1": {
                "stub": r.c1_stub.as_dict(),
                "kefu": r.c1.as_dict(),
                "quantile_gap_ms": {f"p{q}": round(_added(r, q), 3) for q in (50, 90, 99)},
                "added_over_model_calls_ms": {f"p{q}": round(_turn_added(r, q), 3) for q in (50, 90, 99)},
                "turns_by_model_calls": _calls_data(r),
            },
            f"c{c}": {
                "stub": r.cn_stub.as_dict(),
                "kefu": r.cn.as_dict(),
                "kefu_one_core_ceiling_turns_per_s": round(_ceiling(r), 1),
            },
            "continued_sessions": r.continued,
            "stages_c1": r.stages,
        }
    return SectionResult(key=KEY, title=TITLE, markdown="\n".join(lines), data=data, targets=targets)
