"""Section "retrieval": the knowledge base's quality and speed, each number measured in this run.

1. Quality on the demo shop's bilingual evaluation set (examples/demo_shop/eval): recall@1/5/10, MRR@10,
   nDCG@10 of hybrid, dense-only and BM25-only retrieval, the three indexed once and queried in the same run.
2. Ingestion: synthetic bilingual product manuals through the real pipeline (parse, chunk, jieba, the model,
   SQLite, index rebuild) for chunks/s, and the same files with the hashing embedder: kefu's own share.
3. Scale: a 10,000-chunk knowledge base (the demo shop, the manuals above, and filler manuals) queried with
   the embedded index for p50/p99 latency, query embedding (the bundled model) included. The filler chunks' vectors come
   from the hashing embedder (same 384 dimensions): an exact inner-product search costs the same whatever the
   vectors hold, and embedding ~9,000 chunks on two cores would take minutes.
4. Curated-answer turns: `kefu serve` with the demo knowledge, FAQ phrasings (each sent once) through
   `POST /v1/chat`; the stored replies prove no LLM was called (the configured LLM endpoint does not exist) and
   say which turns a curated answer ended (the latency target is theirs; the others are counted by route).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import shutil
import sqlite3
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import (
    DEMO_SHOP,
    BenchOptions,
    SectionResult,
    Target,
    bundled_embedder,
    bundled_label,
    free_port,
    kefu_process,
    md_table,
    percentile,
    progress,
    verdict,
)

KEY = "retrieval"
TITLE = "Knowledge retrieval: hybrid vs dense vs BM25, 10k-chunk latency, ingestion, curated turns"

KNOWLEDGE = DEMO_SHOP / "knowledge"
QUERIES = DEMO_SHOP / "eval" / "retrieval_queries.jsonl"
OUT_OF_KNOWLEDGE = DEMO_SHOP / "eval" / "out_of_knowledge.jsonl"
SCALE_CHUNKS = 10_000
QUICK_SCALE_CHUNKS = 1_000
INGEST_SAMPLE_CHUNKS = 1_000
QUICK_INGEST_SAMPLE_CHUNKS = 200
FILLER = "(filler)"

_ZH_TOPICS = ("充电", "配对", "清洁", "保养", "故障排查", "安全提示", "包装清单", "规格参数", "固件升级", "使用技巧")
_EN_TOPICS = ("Charging", "Pairing", "Cleaning", "Care", "Troubleshooting", "Safety", "In the box", "Specs", "Firmware")
_ZH_SENTENCES = (
    "首次使用前请将{name}充满电，充电时指示灯为红色，充满后变为绿色。",
    "{name}支持通过手机 App 进行固件升级，升级过程中请勿断开电源。",
    "如果{name}无法开机，请长按电源键 10 秒强制重启，仍无法解决请联系客服。",
    "请勿将{name}放置在高温、潮湿或阳光直射的环境中，以免影响电池寿命。",
    "{name}的包装内含主机、充电线、快速入门指南和保修卡。",
    "清洁{name}时请使用柔软的干布，不要使用酒精或其他化学溶剂。",
    "{name}连续使用约 {hours} 小时，待机时间约 {days} 天，实际续航因使用情况而异。",
    "蓝牙配对时请确保{name}处于配对模式，并在手机设置中选择对应的设备名称。",
)
_EN_SENTENCES = (
    "Charge the {name} fully before first use; the light is red while charging and green when full.",
    "The {name} receives firmware updates through the app; keep it powered during an update.",
    "If the {name} does not turn on, hold the power button for 10 seconds to force a restart.",
    "Keep the {name} away from heat, moisture and direct sunlight to protect the battery.",
    "The {name} box contains the device, a charging cable, a quick start guide and a warranty card.",
    "Clean the {name} with a soft dry cloth; do not use alcohol or other solvents.",
    "The {name} runs for about {hours} hours of continuous use and {days} days on standby.",
    "To pair the {name}, put it in pairing mode and pick its name in your phone's Bluetooth settings.",
)


def _products() -> list[tuple[str, str]]:
    with (DEMO_SHOP / "catalog" / "products.csv").open(encoding="utf-8") as f:
        return [(row["name_zh"], row["name_en"]) for row in csv.DictReader(f)]


def synthetic_manuals(
    target_chunks: int, *, chunk_tokens: int, seed: int = 7, start: int = 0, label: str = ""
) -> list[tuple[str, bytes]]:
    """Product manuals in Chinese and English, about one chunk per section, `target_chunks` sections in all."""
    rng = random.Random(seed + start)
    products = _products()
    files: list[tuple[str, bytes]] = []
    sections = 0
    index = start
    while sections < target_chunks:
        zh_name, en_name = products[index % len(products)]
        zh = index % 2 == 0
        name = zh_name if zh else en_name
        topics, templates = (_ZH_TOPICS, _ZH_SENTENCES) if zh else (_EN_TOPICS, _EN_SENTENCES)
        lines = [f"# {name} {'使用说明' if zh else 'manual'} {index} {label}".rstrip()]
        for topic in topics:
            body = " ".join(
                rng.choice(templates).format(name=name, hours=rng.randint(4, 40), days=rng.randint(5, 90))
                for _ in range(3 if chunk_tokens <= 160 else 5)
            )
            lines += ["", f"## {topic}", "", body]
            sections += 1
        files.append((f"manuals/{'zh' if zh else 'en'}/manual-{index:05d}.md", "\n".join(lines).encode("utf-8")))
        index += 1
    return files


async def _timed_ingest(service: Any, files: list[tuple[str, bytes]], collection: str) -> dict[str, Any]:
    from kefu.knowledge.service import IngestItem

    started = time.perf_counter()
    cpu_started = time.process_time()
    report = await service.ingest([IngestItem(s, d) for s, d in files], collection=collection)
    seconds = time.perf_counter() - started
    return {
        "files": len(files),
        "chunks": report.chunks,
        "embedded": report.embedded,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(time.process_time() - cpu_started, 2),
        "chunks_per_s": round(report.chunks / seconds, 1),
        "failed": len(report.failed),
    }


async def _ingest_rate(data_dir: Path, files: list[tuple[str, bytes]], *, hashing: bool) -> dict[str, Any]:
    from kefu.config import KnowledgeSettings
    from kefu.embeddings.testing import HashingEmbedder
    from kefu.knowledge.repository import KnowledgeRepository
    from kefu.knowledge.service import KnowledgeService
    from kefu.store.database import create_engine, migrate

    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    engine = create_engine(f"sqlite+aiosqlite:///{data_dir / 'kefu.db'}")
    await migrate(engine)
    embedder = HashingEmbedder(dim=384) if hashing else _bundled()
    service = KnowledgeService(KnowledgeSettings(), KnowledgeRepository(engine), embedder, data_dir=data_dir)
    await service.start()
    try:
        return await _timed_ingest(service, files, "manuals")
    finally:
        await service.aclose()
        await engine.dispose()


class _ScaleEmbedder:
    """The bundled model for queries and real passages; the hashing embedder for filler manuals (marked in titles)."""

    def __init__(self) -> None:
        from kefu.embeddings.testing import HashingEmbedder

        self.real = _bundled()
        self.filler = HashingEmbedder(dim=self.real.dim)
        self.name = self.real.name
        self.dim = self.real.dim

    def embed_queries(self, texts: Any) -> Any:
        return self.real.embed_queries(texts)

    def embed_passages(self, texts: Any) -> Any:
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        filler = [i for i, text in enumerate(texts) if FILLER in text.split("\n", 1)[0]]
        real = sorted(set(range(len(texts))) - set(filler))
        # One call per kind, as kefu hands the model a whole batch: text by text would understate its throughput.
        for rows, embedder in ((real, self.real), (filler, self.filler)):
            if rows:
                out[rows] = embedder.embed_passages([texts[i] for i in rows])
        return out


async def _quality_and_scale(
    options: BenchOptions, scale_chunks: int, ingest_sample: int, queries_per_mode: int
) -> dict[str, Any]:
    from kefu.config import KnowledgeSettings
    from kefu.eval.retrieval import evaluate, load_queries, relevance_id
    from kefu.knowledge.repository import KnowledgeRepository
    from kefu.knowledge.service import IngestItem, KnowledgeService
    from kefu.language import detect_language
    from kefu.store.database import create_engine, migrate

    settings = KnowledgeSettings()
    queries = load_queries(QUERIES)
    outside = [json.loads(line)["query"] for line in OUT_OF_KNOWLEDGE.read_text(encoding="utf-8").splitlines()]
    out: dict[str, Any] = {}

    # 1. Quality on the demo shop: one index, three modes, same queries. This data dir is kept for part 4.
    progress("retrieval: indexing the demo shop (bundled model), then hybrid, dense and BM25 on its evaluation set")
    demo_dir = options.work_dir / "demo"
    await asyncio.to_thread(demo_dir.mkdir, parents=True, exist_ok=True)
    engine = create_engine(f"sqlite+aiosqlite:///{demo_dir / 'kefu.db'}")
    await migrate(engine)
    service = KnowledgeService(settings, KnowledgeRepository(engine), _bundled(), data_dir=demo_dir)
    await service.start()
    started = time.perf_counter()
    report = await service.sync_directory(KNOWLEDGE)
    out["demo_ingest"] = {"chunks": report.chunks, "seconds": round(time.perf_counter() - started, 2)}
    results = await evaluate(service, queries, id_of=relevance_id)
    out["quality"] = {r.mode: r.as_dict() for r in results}
    out["quality_queries"] = len(queries)
    # Paraphrases the curated matcher answers verbatim (they need the embedding; exact phrasings do not).
    paraphrases = []
    for q in queries:
        language = detect_language(q.query)
        vector = await service.embed_query(q.query)
        match = service.best_curated(q.query, vector, tenant_id="default", language=language)
        if service.exact_curated(q.query, tenant_id="default") is None and service.curated_answer(q.query, match):
            paraphrases.append(q.query)
    out["curated_paraphrases"] = paraphrases
    await service.aclose()
    await engine.dispose()

    # 2. Ingestion: the same manuals with the bundled model (the product) and the hashing embedder (kefu's own share).
    manuals = synthetic_manuals(ingest_sample, chunk_tokens=settings.chunk_tokens)
    progress(f"retrieval: ingesting {len(manuals)} manuals (~{ingest_sample} chunks), hashing embedder, then the model")
    out["ingest_baseline"] = await _ingest_rate(options.work_dir / "ingest-hashing", manuals, hashing=True)
    # The scale knowledge base starts as a copy of the demo shop's (the same vectors, not embedded twice).
    scale_dir = options.work_dir / "scale"
    await asyncio.to_thread(shutil.copytree, demo_dir, scale_dir)
    engine = create_engine(f"sqlite+aiosqlite:///{scale_dir / 'kefu.db'}")
    await migrate(engine)
    service = KnowledgeService(settings, KnowledgeRepository(engine), _ScaleEmbedder(), data_dir=scale_dir)
    await service.start()
    out["ingest"] = await _timed_ingest(service, manuals, "manuals")
    progress(f"retrieval: ingestion {out['ingest']['chunks_per_s']} chunks/s; adding filler up to {scale_chunks}")

    # 3. Scale: filler manuals (hashing vectors, see the module docstring) up to `scale_chunks`.
    have = (await service.status())["chunks"]
    filler = synthetic_manuals(
        scale_chunks - have, chunk_tokens=settings.chunk_tokens, start=len(manuals), label=FILLER
    )
    await service.ingest([IngestItem(s, d) for s, d in filler], collection="filler")
    status = await service.status()
    out["scale_chunks"] = status["chunks"]
    texts = [q.query for q in queries] + outside
    rng = random.Random(11)
    progress(f"retrieval: {status['chunks']} chunks indexed; {queries_per_mode} queries")
    latencies: list[float] = []
    index_only: list[float] = []
    embedding: list[float] = []
    for i in range(queries_per_mode):
        text = texts[i % len(texts)] if i < len(texts) else f"{rng.choice(texts)} {i}"
        language = detect_language(text)
        begin = time.perf_counter()
        hits = await service.search(text, language=language)
        latencies.append((time.perf_counter() - begin) * 1000)
        # Where the time goes: the query embedding alone (same worker-thread hop), then the index alone.
        begin = time.perf_counter()
        vector = await service.embed_query(text)
        embedding.append((time.perf_counter() - begin) * 1000)
        begin = time.perf_counter()
        await service.search(text, language=language, vector=vector)
        index_only.append((time.perf_counter() - begin) * 1000)
        assert hits, text
    latencies.sort()
    index_only.sort()
    embedding.sort()
    out["latency"] = {
        "queries": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "index_only_p50_ms": round(percentile(index_only, 50), 2),
        "index_only_p99_ms": round(percentile(index_only, 99), 2),
        "embedding_p50_ms": round(percentile(embedding, 50), 2),
        "embedding_p99_ms": round(percentile(embedding, 99), 2),
    }
    await service.aclose()
    await engine.dispose()
    return out


def _bundled() -> Any:
    return bundled_embedder()


def _curated_turns(options: BenchOptions, paraphrases: list[str], turns: int) -> dict[str, Any]:
    """`kefu serve` on the demo data dir (indexed in part 1): curated questions through POST /v1/chat, two kinds:
    exact curated phrasings (matched by their text) and paraphrases the matcher answers (by their embedding).
    A phrasing the dialogue routes elsewhere (a flow asking for the order number, a handoff) is sent and counted,
    but the curated-turn latency is that of the turns whose stored record says a curated answer ended them."""
    data_dir = options.work_dir / "demo"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    if options.kefu_src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(options.kefu_src), env.get("PYTHONPATH")]))
    env.update(
        {
            "KEFU_CONFIG": str(data_dir / "absent-kefu.yaml"),
            "KEFU_DATA_DIR": str(data_dir),
            # INFO: a start-up that fails or is slow shows in the error how far it got (intent training, sync).
            "KEFU_LOG_LEVEL": "INFO",
            "KEFU_SERVER__HOST": "127.0.0.1",
            "KEFU_SERVER__PORT": str(port),
            "KEFU_SHOP__DIR": str(DEMO_SHOP),
            "KEFU_KNOWLEDGE__SOURCE_DIR": str(KNOWLEDGE),
            # No model at all: a curated turn must not need one. Any LLM call would fail and show as an error.
            "KEFU_LLM__BACKEND": "openai",
            "KEFU_LLM__BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
            "KEFU_LLM__MAX_RETRIES": "0",
            "KEFU_AUTH__MODE": "open",
            "KEFU_RATE_LIMIT__PER_IP": "1000000/minute",
            "KEFU_RATE_LIMIT__PER_CUSTOMER": "1000000/minute",
        }
    )
    with (DEMO_SHOP / "knowledge" / "faq.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # Every curated phrasing (question and similar questions), each sent once: no turn repeats an earlier text.
    exact = [q for row in rows for q in [row["question"], *row["similar_questions"].split("|")] if q.strip()]
    random.Random(5).shuffle(exact)
    workloads = {"exact": exact[:turns], "paraphrased": paraphrases}
    sent: dict[str, list[tuple[str, float, float]]] = {}
    progress("retrieval: starting kefu serve on the demo data dir (first start trains the intent classifier)")
    started = time.perf_counter()
    with kefu_process(
        port=port,
        log_path=options.work_dir / "kefu-curated.log",
        env=env,
        startup_timeout_s=300,
    ) as server:
        startup_s = time.perf_counter() - started
        progress(f"retrieval: kefu serve ready in {startup_s:.0f} s; curated turns")
        for i, text in enumerate(exact[-10:]):  # warm-up: connections, caches, first-use paths
            _post(server.base_url, f"warm-{i}", text)
        for name, texts in workloads.items():
            sent[name] = []
            for i, text in enumerate(texts):
                begin = time.perf_counter()
                reply = _post(server.base_url, f"{name}-{i}", text)
                client_ms = (time.perf_counter() - begin) * 1000
                sent[name].append((reply["message_id"], client_ms, float(reply["latency_ms"])))
    with sqlite3.connect(data_dir / "kefu.db") as db:
        route_of = dict(db.execute("SELECT id, coalesce(route, '?') FROM messages WHERE role = 'assistant'").fetchall())
        routes = dict(
            db.execute(
                "SELECT coalesce(route, '?'), count(*) FROM messages WHERE role = 'assistant' "
                "AND model IS NULL AND error_code IS NULL GROUP BY route"
            ).fetchall()
        )
        with_model = db.execute(
            "SELECT count(*) FROM messages WHERE role = 'assistant' AND (model IS NOT NULL OR error_code IS NOT NULL)"
        ).fetchone()[0]
        # A turn answered by a curated answer must not have called a model on the way (a classification fallback,
        # a rewrite): its record would carry the model or, with no model reachable here, the error.
        curated_with_model = db.execute(
            "SELECT count(*) FROM messages WHERE role = 'assistant' AND route = 'faq' "
            "AND (model IS NOT NULL OR error_code IS NOT NULL)"
        ).fetchone()[0]
    results: dict[str, Any] = {"startup_s": round(startup_s, 1)}
    for name, turns_sent in sent.items():
        answered = [(client, ms) for message_id, client, ms in turns_sent if route_of.get(message_id) == "faq"]
        curated = sorted(client for client, _ in answered)
        recorded = [ms for _, ms in answered]
        everything = sorted(client for _, client, _ in turns_sent)
        results[name] = {
            "turns": len(turns_sent),
            "curated_turns": len(curated),
            "routes": dict(Counter(route_of.get(message_id, "?") for message_id, _, _ in turns_sent).most_common()),
            "client_p50_ms": round(percentile(curated, 50), 2),
            "client_p99_ms": round(percentile(curated, 99), 2),
            "server_p50_ms": round(percentile(sorted(recorded), 50), 2),
            "all_turns_client_p50_ms": round(percentile(everything, 50), 2),
        }
    results["routes_without_llm"] = routes
    results["replies_with_llm_or_error"] = int(with_model)
    results["curated_replies_with_llm_or_error"] = int(curated_with_model)
    return results


def _post(base_url: str, user: str, text: str) -> dict[str, Any]:
    body = json.dumps({"user_id": user, "text": text}, ensure_ascii=False).encode()
    request = urllib.request.Request(f"{base_url}/v1/chat", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        reply: dict[str, Any] = json.loads(resp.read())
    return reply


def run(options: BenchOptions) -> SectionResult:
    quick = options.quick
    measured = asyncio.run(
        _quality_and_scale(
            options,
            QUICK_SCALE_CHUNKS if quick else SCALE_CHUNKS,
            QUICK_INGEST_SAMPLE_CHUNKS if quick else INGEST_SAMPLE_CHUNKS,
            100 if quick else 1000,
        )
    )
    measured["curated"] = _curated_turns(options, measured["curated_paraphrases"], 40 if quick else 300)
    return _report(measured, quick)


def _report(m: dict[str, Any], quick: bool) -> SectionResult:
    q = m["quality"]
    hybrid, dense, bm25 = q["hybrid"], q["dense"], q["bm25"]
    latency, ingest, curated, base = m["latency"], m["ingest"], m["curated"], m["ingest_baseline"]
    exact, para = curated["exact"], curated["paraphrased"]
    model_share = max(0.0, 1 - base["seconds"] / ingest["seconds"]) if ingest["seconds"] else 0.0
    targets = [
        Target("hybrid recall@5 (demo eval set)", hybrid["recall@5"], 0.95, ">=", ""),
        Target("hybrid − dense recall@5", round(hybrid["recall@5"] - dense["recall@5"], 4), 0.0, ">", ""),
        Target("hybrid − BM25 recall@5", round(hybrid["recall@5"] - bm25["recall@5"], 4), 0.0, ">", ""),
        Target(f"retrieval p99 at {m['scale_chunks']} chunks, embedding included", latency["p99_ms"], 10.0, "<=", "ms"),
        Target("ingestion throughput", ingest["chunks_per_s"], 50.0, ">=", "chunks/s"),
        Target("curated-answer turn p50, paraphrased question", para["client_p50_ms"], 30.0, "<", "ms"),
        Target("curated-answer turn p50, exact curated phrasing", exact["client_p50_ms"], 30.0, "<", "ms"),
        Target(
            "curated-answer turns that called an LLM", curated["curated_replies_with_llm_or_error"], 0, "<=", "turns"
        ),
    ]
    rows = [
        [
            mode,
            *(f"{r[f'recall@{k}']:.3f}" for k in (1, 5, 10)),
            f"{r['mrr@10']:.3f}",
            f"{r['ndcg@10']:.3f}",
            f"{r['latency_p50_ms']:.1f}",
            f"{r['latency_p99_ms']:.1f}",
        ]
        for mode, r in (("hybrid", hybrid), ("dense", dense), ("bm25", bm25))
    ]
    markdown = "\n".join(
        [
            f"**Quality** on the demo shop evaluation set ({m['quality_queries']} queries, zh/en/mixed, paraphrases "
            f"and typos; relevance per document section and FAQ row; {m['demo_ingest']['chunks']} chunks, "
            f"{bundled_label()}, "
            "embedded index). The three modes search the same index in the same run:",
            "",
            md_table(["mode", "recall@1", "recall@5", "recall@10", "MRR@10", "nDCG@10", "p50 ms", "p99 ms"], rows),
            "",
            f"**Ingestion**: {ingest['files']} synthetic bilingual product manuals, {ingest['chunks']} chunks, through "
            f"the whole pipeline (parse, chunk, jieba, the model, SQLite, index rebuild): {ingest['seconds']} s wall, "
            f"{ingest['cpu_seconds']} s CPU ({1000 * ingest['cpu_seconds'] / max(ingest['chunks'], 1):.0f} ms of CPU "
            f"a chunk), **{ingest['chunks_per_s']} chunks/s**. The same files with the hashing embedder instead of "
            f"the model (everything but the model): {base['chunks_per_s']} chunks/s, so the model takes "
            f"{model_share:.0%} "
            "of ingestion time.",
            "",
            f"**Scale**: {m['scale_chunks']} chunks (the demo shop, the manuals above and filler manuals whose vectors "
            "come from the hashing embedder: exact search costs the same whatever the vectors hold). Queries are the "
            "evaluation and out-of-knowledge questions (then the same with a number appended, so that no text "
            f"repeats), embedded by {bundled_label()} inside the timed call; the query embedding alone and the index "
            "alone show "
            "where the time goes:",
            "",
            md_table(
                ["retrieval at scale", "p50 ms", "p99 ms"],
                [
                    [
                        f"hybrid, query embedding included ({latency['queries']} queries)",
                        latency["p50_ms"],
                        latency["p99_ms"],
                    ],
                    [
                        f"query embedding alone ({bundled_label()})",
                        latency["embedding_p50_ms"],
                        latency["embedding_p99_ms"],
                    ],
                    ["hybrid, index only (vector given)", latency["index_only_p50_ms"], latency["index_only_p99_ms"]],
                ],
            ),
            "",
            f"**Curated answers** through `POST /v1/chat` on `kefu serve` (no LLM configured that could answer; ready "
            f"{curated['startup_s']:g} s after start, the intent classifier trained on this first start), each text "
            "sent once. Latencies are of the turns whose stored record shows a curated answer (route `faq`); phrasings "
            "that the dialogue routed elsewhere (a flow asking for the order number, a handoff) are counted apart:",
            "",
            md_table(
                [
                    "curated turns",
                    "sent",
                    "answered by a curated answer",
                    "client p50 ms",
                    "client p99 ms",
                    "kefu-recorded p50 ms",
                    "p50 ms, every turn sent",
                    "routes",
                ],
                [
                    [
                        label,
                        w["turns"],
                        w["curated_turns"],
                        w["client_p50_ms"],
                        w["client_p99_ms"],
                        w["server_p50_ms"],
                        w["all_turns_client_p50_ms"],
                        ", ".join(f"{route} {n}" for route, n in w["routes"].items()),
                    ]
                    for label, w in (
                        ("exact curated phrasing (matched by its text)", exact),
                        ("paraphrase answered by the matcher (by its embedding)", para),
                    )
                ],
            ),
            "",
            f"Stored routes of replies made without a model: {curated['routes_without_llm']}; replies with a model or "
            f"an error: {curated['replies_with_llm_or_error']} (questions the matcher did not answer go on to "
            "retrieval and the model, which this server does not have), of them curated answers: "
            f"{curated['curated_replies_with_llm_or_error']}.",
            "",
            "Targets: " + "; ".join(f"{t.name} {t.value:g} {t.unit} ({verdict(t)})" for t in targets) + ".",
        ]
    )
    if quick:
        markdown += "\n\n_Quick run: 1,000 chunks and fewer queries._"
    return SectionResult(key=KEY, title=TITLE, markdown=markdown, data=m, targets=targets)
