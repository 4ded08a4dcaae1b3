"""Retrieval evaluation: recall@k, MRR@10, nDCG@10 and latency of hybrid, dense-only and BM25-only search.

The corpus goes through the same ingestion, chunking, embedding and index as the bot's knowledge base, and the
queries through the same `KnowledgeService.search` (language filter included). Relevance is judged on stable
ids, not chunk ids: a `.jsonl` corpus line's `id`, or for a knowledge directory `source#top-level section`
(e.g. `zh/returns.md#7 天无理由退货`) and `faq.csv#<question>` for curated FAQ rows.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kefu.config import KnowledgeSettings
from kefu.embeddings.base import Embedder
from kefu.errors import DataFileError
from kefu.knowledge.repository import KnowledgeRepository
from kefu.knowledge.service import IngestItem, IngestReport, KnowledgeService
from kefu.knowledge.types import SEARCH_MODES, ChunkInfo, SearchMode
from kefu.language import detect_language
from kefu.store.database import create_engine, migrate

RECALL_AT = (1, 5, 10)
_CHUNKS_PER_QUERY = 40
"""Chunks fetched per query, so that ten distinct ids remain after chunks of the same section are merged."""


@dataclass(frozen=True, slots=True)
class EvalQuery:
    """One query line: the question and the ids that answer it."""

    query: str
    relevant: tuple[str, ...]
    line: int = 0


@dataclass(slots=True)
class ModeResult:
    """The metrics of one retrieval mode over the whole query set."""

    mode: SearchMode
    recall: dict[int, float]
    mrr_at_10: float
    ndcg_at_10: float
    latency_p50_ms: float
    latency_p99_ms: float
    misses_at_5: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            **{f"recall@{k}": round(v, 4) for k, v in self.recall.items()},
            "mrr@10": round(self.mrr_at_10, 4),
            "ndcg@10": round(self.ndcg_at_10, 4),
            "latency_p50_ms": round(self.latency_p50_ms, 3),
            "latency_p99_ms": round(self.latency_p99_ms, 3),
            "misses_at_5": self.misses_at_5,
        }


@dataclass(slots=True)
class EvalReport:
    """Every mode measured in the same run, with what was indexed."""

    queries: int
    documents: int
    chunks: int
    embedder: str
    index: str
    modes: list[ModeResult]
    ingest_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "documents": self.documents,
            "chunks": self.chunks,
            "embedder": self.embedder,
            "index": self.index,
            "ingest_seconds": round(self.ingest_seconds, 3),
            "modes": {m.mode: m.as_dict() for m in self.modes},
        }

    def table(self) -> str:
        header = ["mode", *(f"recall@{k}" for k in RECALL_AT), "MRR@10", "nDCG@10", "p50 ms", "p99 ms"]
        rows = [
            [
                m.mode,
                *(f"{m.recall[k]:.3f}" for k in RECALL_AT),
                f"{m.mrr_at_10:.3f}",
                f"{m.ndcg_at_10:.3f}",
                f"{m.latency_p50_ms:.2f}",
                f"{m.latency_p99_ms:.2f}",
            ]
            for m in self.modes
        ]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(str(path), None, f"cannot be read: {exc.strerror or exc}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(str(path), number, f"invalid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise DataFileError(str(path), number, "each line must be a JSON object")
        rows.append((number, obj))
    return rows


def load_queries(path: Path) -> list[EvalQuery]:
    """Query lines {query, relevant: [ids]}; a malformed line is reported with its number."""
    queries = []
    for number, obj in read_jsonl(path):
        query, relevant = obj.get("query"), obj.get("relevant")
        if not isinstance(query, str) or not query.strip():
            raise DataFileError(str(path), number, "needs a non-empty 'query'")
        if not isinstance(relevant, list) or not relevant or not all(isinstance(r, str) for r in relevant):
            raise DataFileError(str(path), number, "needs 'relevant': a non-empty list of ids")
        queries.append(EvalQuery(query, tuple(relevant), number))
    if not queries:
        raise DataFileError(str(path), None, "no queries")
    return queries


def load_jsonl_corpus(path: Path) -> tuple[list[IngestItem], dict[str, str]]:
    """Corpus lines {id, title?, text} as Markdown documents, and the map from document source back to id."""
    items, ids = [], {}
    for number, obj in read_jsonl(path):
        doc_id, text, title = obj.get("id"), obj.get("text"), obj.get("title")
        if not isinstance(doc_id, str) or not doc_id or not isinstance(text, str) or not text.strip():
            raise DataFileError(str(path), number, "needs a string 'id' and a non-empty 'text'")
        source = f"{doc_id}.md"
        if source in ids:
            raise DataFileError(str(path), number, f"id {doc_id!r} appears twice")
        body = f"# {title}\n\n{text}" if isinstance(title, str) and title.strip() else text
        items.append(IngestItem(source, body.encode("utf-8")))
        ids[source] = doc_id
    return items, ids


def relevance_id(chunk: ChunkInfo, corpus_ids: dict[str, str] | None = None) -> str:
    """The id a chunk counts as: its corpus line id, or `source#section` for a knowledge directory."""
    if corpus_ids is not None:
        return corpus_ids.get(chunk.source, chunk.source)
    return chunk.ref


def score(ranked: Sequence[str], relevant: Sequence[str]) -> dict[str, float]:
    """recall@1/5/10, reciprocal rank within 10 and binary nDCG@10 of one ranked id list."""
    wanted = set(relevant)
    out = {f"recall@{k}": len(wanted & set(ranked[:k])) / len(wanted) for k in RECALL_AT}
    first = next((i for i, item in enumerate(ranked[:10], start=1) if item in wanted), None)
    out["rr@10"] = 1.0 / first if first else 0.0
    dcg = sum(1.0 / math.log2(i + 1) for i, item in enumerate(ranked[:10], start=1) if item in wanted)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(wanted), 10) + 1))
    out["ndcg@10"] = dcg / ideal if ideal else 0.0
    return out


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


async def evaluate(
    service: KnowledgeService,
    queries: Sequence[EvalQuery],
    *,
    id_of: Callable[[ChunkInfo], str],
    modes: Sequence[SearchMode] = SEARCH_MODES,
    tenant_id: str = "default",
) -> list[ModeResult]:
    """Run every query in every mode, exactly as a customer turn searches (embedding included in the latency)."""
    results = []
    for mode in modes:
        totals: dict[str, float] = {}
        latencies: list[float] = []
        misses: list[dict[str, Any]] = []
        for q in queries:
            started = time.perf_counter()
            hits = await service.search(
                q.query, tenant_id=tenant_id, language=detect_language(q.query), mode=mode, k=_CHUNKS_PER_QUERY
            )
            latencies.append((time.perf_counter() - started) * 1000)
            ranked: list[str] = []
            for hit in hits:
                rid = id_of(hit.chunk)
                if rid not in ranked:
                    ranked.append(rid)
            metrics = score(ranked[:10], q.relevant)
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value
            if metrics["recall@5"] < 1.0:
                misses.append({"query": q.query, "relevant": list(q.relevant), "top5": ranked[:5]})
        n = len(queries)
        results.append(
            ModeResult(
                mode=mode,
                recall={k: totals[f"recall@{k}"] / n for k in RECALL_AT},
                mrr_at_10=totals["rr@10"] / n,
                ndcg_at_10=totals["ndcg@10"] / n,
                latency_p50_ms=statistics.median(latencies),
                latency_p99_ms=_percentile(latencies, 99),
                misses_at_5=misses,
            )
        )
    return results


@asynccontextmanager
async def scratch_service(
    settings: KnowledgeSettings, *, embedder: Embedder | None = None, work_dir: Path | None = None
) -> AsyncIterator[KnowledgeService]:
    """A knowledge service over a throw-away SQLite database and data dir, for evaluation and benchmarks."""
    with tempfile.TemporaryDirectory(prefix="kefu-eval-", dir=work_dir) as tmp:
        data_dir = Path(tmp)
        engine = create_engine(f"sqlite+aiosqlite:///{data_dir / 'eval.db'}")
        try:
            await migrate(engine)
            if embedder is None:
                service = await KnowledgeService.open(
                    settings.model_copy(update={"source_dir": None}), engine, data_dir
                )
            else:
                service = KnowledgeService(settings, KnowledgeRepository(engine), embedder, data_dir=data_dir)
                await service.start()
            try:
                yield service
            finally:
                await service.aclose()
        finally:
            await engine.dispose()


async def ingest_corpus(service: KnowledgeService, corpus: Path) -> tuple[IngestReport, dict[str, str] | None]:
    """Index a `.jsonl` corpus or a knowledge directory; the id map is None for a directory (ids are refs)."""
    if await asyncio.to_thread(corpus.is_dir):
        report = await service.sync_directory(corpus)
        corpus_ids = None
    else:
        items, corpus_ids = load_jsonl_corpus(corpus)
        report = await service.ingest(items, collection="eval")
    if report.failed:
        problems = "; ".join(error for _, error in report.failed)
        raise DataFileError(str(corpus), None, f"{len(report.failed)} document(s) could not be ingested: {problems}")
    return report, corpus_ids


async def run_retrieval_eval(
    corpus: Path,
    queries_path: Path,
    settings: KnowledgeSettings,
    *,
    modes: Sequence[SearchMode] = SEARCH_MODES,
    embedder: Embedder | None = None,
) -> EvalReport:
    """Index `corpus` in a scratch knowledge base and measure every mode on the queries."""
    queries = load_queries(queries_path)
    async with scratch_service(settings, embedder=embedder) as service:
        report, corpus_ids = await ingest_corpus(service, corpus)
        results = await evaluate(service, queries, id_of=lambda c: relevance_id(c, corpus_ids), modes=modes)
        status = await service.status()
        return EvalReport(
            queries=len(queries),
            documents=int(status["documents"]),
            chunks=int(status["chunks"]),
            embedder=service.embedder.name,
            index=str(status["index"]),
            modes=results,
            ingest_seconds=report.seconds,
        )


def export_corpus(directory: Path) -> list[dict[str, str]]:
    """A knowledge directory as corpus lines, one per top-level section / FAQ row, ids as `kefu eval` expects."""
    from kefu.knowledge.ingest import chunk_document, parse_document
    from kefu.knowledge.service import read_tree

    lines: dict[str, dict[str, str]] = {}
    for item in read_tree(directory):
        doc = parse_document(item.data, item.source)
        for chunk in chunk_document(doc, budget=100_000):
            ref = f"{item.source}#{chunk.section[0]}" if chunk.section else item.source
            entry = lines.setdefault(ref, {"id": ref, "title": " › ".join((doc.title, *chunk.section[:1])), "text": ""})
            entry["text"] = (entry["text"] + "\n\n" + chunk.text).strip()
    return list(lines.values())
