"""Entity evaluation: precision, recall and F1 of (type, normalised value) pairs against an annotated JSONL set.

Each line: {"text", "now" (ISO time the relative dates refer to), "history"? [{role, text}],
"entities": [{type, value}]}. A predicted entity counts when its type and normalised value match a gold
one of the same line (each gold entity matches once).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from kefu.errors import DataFileError
from kefu.llm.types import Message
from kefu.understanding.entities import EntityExtractor


@dataclass(slots=True)
class _Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def scores(self) -> dict[str, float]:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": self.tp + self.fn,
        }


@dataclass(slots=True)
class EntityEvalReport:
    """Micro-averaged scores, per-type scores, latency and the lines with mistakes."""

    test: str
    lines: int
    precision: float
    recall: float
    f1: float
    per_type: dict[str, dict[str, float]]
    latency_ms: dict[str, float]
    mistakes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        lines = [
            f"entities F1 {self.f1:.3f} (precision {self.precision:.3f}, recall {self.recall:.3f}), {self.lines} lines",
            f"latency p50 {self.latency_ms['p50']:.3f} ms · p99 {self.latency_ms['p99']:.3f} ms",
        ]
        lines += [
            f"  {kind:<16} F1 {s['f1']:.3f}  P {s['precision']:.3f}  R {s['recall']:.3f}  n={int(s['support'])}"
            for kind, s in sorted(self.per_type.items())
        ]
        return "\n".join(lines)


def read_entity_lines(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataFileError(str(path), None, "file not found") from None
    rows = []
    for number, line in enumerate(raw, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            datetime.fromisoformat(row["now"])
            _ = [(e["type"], e["value"]) for e in row["entities"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataFileError(
                str(path), number, f"needs text, now (ISO time) and entities [{{type, value}}]: {exc}"
            ) from None
        rows.append(row)
    return rows


def run_entity_eval(path: Path, extractor: EntityExtractor) -> EntityEvalReport:
    rows = read_entity_lines(path)
    total = _Counts()
    per_type: dict[str, _Counts] = {}
    latencies = []
    mistakes = []
    for row in rows:
        history = [Message("user" if h["role"] == "user" else "assistant", h["text"]) for h in row.get("history", [])]
        started = time.perf_counter()
        found = extractor.extract(row["text"], datetime.fromisoformat(row["now"]), history)
        latencies.append((time.perf_counter() - started) * 1000)
        predicted = Counter((e.type, e.value) for e in found)
        gold = Counter((e["type"], e["value"]) for e in row["entities"])
        for (kind, value), n in (predicted | gold).items():
            hit = min(predicted[(kind, value)], gold[(kind, value)])
            counts = per_type.setdefault(kind, _Counts())
            for c in (counts, total):
                c.tp += hit
                c.fp += predicted[(kind, value)] - hit
                c.fn += gold[(kind, value)] - hit
            del n
        if predicted != gold:
            mistakes.append(
                {
                    "text": row["text"],
                    "missing": [f"{k}={v}" for k, v in (gold - predicted).elements()],
                    "extra": [f"{k}={v}" for k, v in (predicted - gold).elements()],
                }
            )
    scores = total.scores()
    ms = np.array(latencies)
    return EntityEvalReport(
        test=str(path),
        lines=len(rows),
        precision=scores["precision"],
        recall=scores["recall"],
        f1=scores["f1"],
        per_type={k: v.scores() for k, v in per_type.items()},
        latency_ms={"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3)},
        mistakes=mistakes,
    )
