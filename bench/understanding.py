"""Section "understanding": per-turn intent + entities + emotion + routing latency, and its quality, on the demo shop.

Every utterance of the demo shop's held-apart test set (examples/demo_shop/eval/intents_test.csv) goes
through `Understanding.analyse` — rules, the bundled embedder, the classifier with out-of-scope
detection, entities, emotion and the router; no LLM fallback — and is timed. The baseline, measured in the
same run on the same texts, is the embedder call alone: what understanding adds on top of it is the
cost of everything else. The quality numbers come from the same predictions.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    DEMO_SHOP,
    BenchOptions,
    SectionResult,
    Target,
    bundled_embedder,
    md_table,
    percentile,
)

KEY = "understanding"
TITLE = "Understanding: intent, out-of-scope, entities, emotion, routing (no LLM)"

TEST_SET = DEMO_SHOP / "eval" / "intents_test.csv"
ENTITY_SET = DEMO_SHOP / "eval" / "entities_test.jsonl"
COMMAND = "kefu eval intents --train examples/demo_shop/intents.yaml --test examples/demo_shop/eval/intents_test.csv"


@dataclass(frozen=True, slots=True)
class UnderstandingPlan:
    rounds: int = 2
    """Passes over the test set for the latency percentiles (the first also gives the quality numbers)."""
    limit: int | None = None
    max_p99_ms: float = 15.0
    min_in_scope_accuracy: float = 0.95
    min_oos_recall: float = 0.85
    min_entity_f1: float = 0.9


FULL = UnderstandingPlan()
QUICK = UnderstandingPlan(rounds=1, limit=60)


def _rows(limit: int | None) -> list[tuple[str, str]]:
    with TEST_SET.open(encoding="utf-8", newline="") as handle:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(handle)]
    if limit is not None:
        # Every fourth row keeps the mix of intents, languages and out-of-scope rows in a quick run.
        rows = rows[:: max(1, len(rows) // limit)][:limit]
    return rows


def run(options: BenchOptions, plan: UnderstandingPlan | None = None) -> SectionResult:
    plan = plan or (QUICK if options.quick else FULL)
    from kefu.eval.entities import run_entity_eval
    from kefu.prompts import PromptLibrary
    from kefu.understanding.service import Understanding, UnderstandingConfig

    config = UnderstandingConfig(shop_dir=DEMO_SHOP, cache_dir=options.work_dir / "understanding", llm_fallback=False)
    embedder = bundled_embedder()
    started = time.perf_counter()
    understanding = Understanding.build(config, embedder, PromptLibrary())
    cold_start_s = time.perf_counter() - started
    started = time.perf_counter()
    understanding = Understanding.build(config, embedder, PromptLibrary())
    warm_start_s = time.perf_counter() - started

    rows = _rows(plan.limit)
    now = datetime.fromisoformat("2026-11-20T15:00:00+08:00")
    for text, _ in rows[:20]:
        understanding.analyse(text, now=now)
    turn_ms: list[float] = []
    embed_ms: list[float] = []
    parts: dict[str, list[float]] = {}
    predictions: list[tuple[str, str, str, bool]] = []
    for round_ in range(plan.rounds):
        for text, label in rows:
            t0 = time.perf_counter()
            embedder.embed_queries([text])
            embed_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            result = understanding.analyse(text, now=now)
            turn_ms.append((time.perf_counter() - t0) * 1000)
            for part, ms in result.latency_ms.items():
                parts.setdefault(part, []).append(ms)
            if round_ == 0:
                intent = result.intent
                predictions.append((label, intent.intent or "oos", intent.stage, intent.needed_llm))
    entity_report = run_entity_eval(ENTITY_SET, understanding.entities)
    return _report(plan, rows, turn_ms, embed_ms, parts, predictions, entity_report, cold_start_s, warm_start_s)


def _report(
    plan: UnderstandingPlan,
    rows: list[tuple[str, str]],
    turn_ms: list[float],
    embed_ms: list[float],
    parts: dict[str, list[float]],
    predictions: list[tuple[str, str, str, bool]],
    entity_report: Any,
    cold_start_s: float,
    warm_start_s: float,
) -> SectionResult:
    turn, embed = sorted(turn_ms), sorted(embed_ms)
    p50, p99 = percentile(turn, 50), percentile(turn, 99)
    e50, e99 = percentile(embed, 50), percentile(embed, 99)
    in_scope = [pred == gold for gold, pred, _, _ in predictions if gold != "oos"]
    oos = [pred == "oos" for gold, pred, _, _ in predictions if gold == "oos"]
    flagged = [gold == "oos" for gold, pred, _, _ in predictions if pred == "oos"]
    in_acc = sum(in_scope) / len(in_scope) if in_scope else 0.0
    oos_recall = sum(oos) / len(oos) if oos else 0.0
    oos_precision = sum(flagged) / len(flagged) if flagged else 0.0
    llm_share = sum(1 for *_, needed in predictions if needed) / len(predictions)
    stages = Counter(stage for _, _, stage, _ in predictions)
    part_rows = [
        [name, f"{percentile(sorted(values), 50):.3f}", f"{percentile(sorted(values), 99):.3f}"]
        for name, values in parts.items()
    ]
    markdown = "\n\n".join(
        [
            f"{len(turn_ms)} timed turns ({plan.rounds} pass(es) over {len(rows)} test utterances, zh/en/mixed, "
            "typos and out-of-scope questions), one at a time, after 20 warm-up turns. Start-up: "
            f"{cold_start_s:.1f} s training on first start (embedding the catalogue's examples, 5-fold "
            f"calibration), {warm_start_s:.2f} s from the cache on the next start.",
            md_table(
                ["per turn", "p50 ms", "p99 ms"],
                [
                    [
                        "understanding (rules + embedding + classifier + entities + emotion + router)",
                        f"{p50:.2f}",
                        f"{p99:.2f}",
                    ],
                    ["baseline: the embedder call alone, same texts", f"{e50:.2f}", f"{e99:.2f}"],
                    ["understanding minus baseline", f"{p50 - e50:.2f}", f"{p99 - e99:.2f}"],
                ],
            ),
            "Per part (from the turn's own trace):\n\n" + md_table(["part", "p50 ms", "p99 ms"], part_rows),
            md_table(
                ["quality (first pass)", "value"],
                [
                    ["in-scope accuracy", f"{in_acc * 100:.1f}%"],
                    ["out-of-scope recall", f"{oos_recall * 100:.1f}% ({len(oos)} OOS rows)"],
                    ["out-of-scope precision", f"{oos_precision * 100:.1f}%"],
                    ["turns that would ask the LLM fallback", f"{llm_share * 100:.1f}%"],
                    ["decided by", ", ".join(f"{k} {v / len(predictions) * 100:.1f}%" for k, v in stages.items())],
                    ["entity F1 (entities_test.jsonl, fixed clock)", f"{entity_report.f1:.3f}"],
                ],
            ),
            f"Reproduce the quality numbers (and macro-F1, worst confusions): `{COMMAND}`; entities: "
            "`kefu eval entities --test examples/demo_shop/eval/entities_test.jsonl --shop-dir examples/demo_shop`.",
            "Public intent benchmarks (CLINC150, BANKING77, HWU64, SMP…) cannot be obtained on this project's "
            "machines (PyPI, Debian and npm only; no dataset hubs), so no comparison with fine-tuned BERT-class "
            "models is reported; docs/intents.md says how to run one where the data is available.",
        ]
    )
    data = {
        "turns": len(turn_ms),
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "embed_p50_ms": round(e50, 3),
        "embed_p99_ms": round(e99, 3),
        "parts": {k: {"p50": percentile(sorted(v), 50), "p99": percentile(sorted(v), 99)} for k, v in parts.items()},
        "in_scope_accuracy": round(in_acc, 4),
        "oos_recall": round(oos_recall, 4),
        "oos_precision": round(oos_precision, 4),
        "llm_fallback_share": round(llm_share, 4),
        "stage_share": {k: round(v / len(predictions), 4) for k, v in stages.items()},
        "entity_f1": entity_report.f1,
        "cold_start_s": round(cold_start_s, 2),
        "warm_start_s": round(warm_start_s, 3),
    }
    targets = [
        Target("understanding p99 per turn, no LLM fallback", round(p99, 2), plan.max_p99_ms, "<=", "ms"),
        Target("in-scope accuracy (demo test set)", round(in_acc, 4), plan.min_in_scope_accuracy, ">=", ""),
        Target("out-of-scope recall (demo test set)", round(oos_recall, 4), plan.min_oos_recall, ">=", ""),
        Target("entity F1 (demo entity set)", entity_report.f1, plan.min_entity_f1, ">=", ""),
    ]
    return SectionResult(key=KEY, title=TITLE, markdown=markdown, data=data, targets=targets)


def main() -> None:  # pragma: no cover - manual runs
    import tempfile

    result = run(BenchOptions(quick=False, work_dir=Path(tempfile.mkdtemp())))
    print(result.markdown)


if __name__ == "__main__":  # pragma: no cover
    main()
