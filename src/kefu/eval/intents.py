"""Intent evaluation: accuracy, macro-F1, out-of-scope recall/precision, worst confusions, stages and latency.

Training data is either a CSV (columns text,label) — any public intent set in that shape — or a shop's
intents.yaml, in which case the whole understanding stage is measured: rules, classifier, out-of-scope
detection, with entities and emotion in the timing. The LLM fallback is not called; the share of turns
that would have asked it is reported.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from kefu.embeddings.base import Embedder
from kefu.embeddings.cache import CachedEmbedder
from kefu.errors import DataFileError
from kefu.prompts import PromptLibrary
from kefu.understanding.classifier import TrainingOptions, train_intent_model
from kefu.understanding.service import Understanding, UnderstandingConfig
from kefu.understanding.types import OOS_LABEL


@dataclass(frozen=True, slots=True)
class Labelled:
    """A labelled utterance."""

    text: str
    label: str


def read_labelled_csv(path: Path, oos_label: str) -> list[Labelled]:
    """Rows of a text,label CSV; the out-of-scope label is renamed to kefu's `oos`."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise DataFileError(str(path), None, "file not found") from None
    with handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise DataFileError(str(path), 1, f"needs columns text,label; found {reader.fieldnames}")
        rows = []
        for line, row in enumerate(reader, start=2):
            text, label = (row.get("text") or "").strip(), (row.get("label") or "").strip()
            if not text or not label:
                raise DataFileError(str(path), line, "empty text or label")
            rows.append(Labelled(text, OOS_LABEL if label == oos_label else label))
    if not rows:
        raise DataFileError(str(path), None, "no rows")
    return rows


@dataclass(slots=True)
class IntentEvalReport:
    """Everything `kefu eval intents` prints and writes as JSON."""

    train: str
    test: str
    train_rows: int
    test_rows: int
    labels: int
    embedder: str
    train_seconds: float
    accuracy: float
    in_scope_accuracy: float
    macro_f1: float
    oos_recall: float | None
    oos_precision: float | None
    oos_test_rows: int
    predicted_oos_rows: int
    """Rows predicted out of scope (in a set without out-of-scope rows, in-scope rows wrongly rejected)."""
    stage_share: dict[str, float]
    llm_fallback_share: float
    latency_ms: dict[str, float]
    thresholds: dict[str, Any]
    worst_confusions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        lines = [
            f"in-scope accuracy   {pct(self.in_scope_accuracy)}",
            f"accuracy (all)      {pct(self.accuracy)}",
            f"macro-F1            {self.macro_f1:.3f}",
            f"OOS recall          {pct(self.oos_recall)}  ({self.oos_test_rows} out-of-scope rows)",
            f"OOS precision       {pct(self.oos_precision)}  ({self.predicted_oos_rows} rows predicted out of scope)",
            "stages              " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in self.stage_share.items()),
            f"LLM fallback share  {pct(self.llm_fallback_share)}  (turns the classifier was unsure about)",
            f"latency per turn    p50 {self.latency_ms['p50']:.2f} ms · p99 {self.latency_ms['p99']:.2f} ms",
        ]
        if self.worst_confusions:
            lines.append("worst confusions (gold → predicted: count)")
            lines += [f"  {c['gold']} → {c['predicted']}: {c['count']}" for c in self.worst_confusions]
        return "\n".join(lines)


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


@dataclass(slots=True)
class _Outcome:
    predicted: str
    stage: str
    needed_llm: bool
    ms: float


def _is_catalogue(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def _outcomes_catalogue(
    catalogue: Path, test: Sequence[Labelled], embedder: Embedder, cache_dir: Path | None, options: TrainingOptions
) -> tuple[list[_Outcome], int, int, dict[str, Any], float]:
    shop_dir = catalogue.parent if (catalogue.parent / "shop.yaml").is_file() else None
    config = UnderstandingConfig(
        shop_dir=shop_dir, intents_file=catalogue, cache_dir=cache_dir, training=options, llm_fallback=False
    )
    started = time.perf_counter()
    understanding = Understanding.build(config, embedder, PromptLibrary())
    train_seconds = time.perf_counter() - started
    assert understanding.catalogue is not None and understanding.model is not None
    rows, labels = understanding.catalogue.training_rows()
    outcomes = []
    for item in test:
        t0 = time.perf_counter()
        result = understanding.analyse(item.text)
        ms = (time.perf_counter() - t0) * 1000
        intent = result.intent
        outcomes.append(_Outcome(intent.intent or OOS_LABEL, intent.stage, intent.needed_llm, ms))
    return outcomes, len(rows), len(set(labels)), understanding.model.thresholds.as_dict(), train_seconds


def _outcomes_csv(
    train: Sequence[Labelled],
    test: Sequence[Labelled],
    embedder: Embedder,
    cache_dir: Path | None,
    options: TrainingOptions,
) -> tuple[list[_Outcome], int, int, dict[str, Any], float]:
    cached = CachedEmbedder(embedder, cache_dir)
    started = time.perf_counter()
    model = train_intent_model([r.text for r in train], [r.label for r in train], cached, options)
    train_seconds = time.perf_counter() - started
    outcomes = []
    for item in test:
        t0 = time.perf_counter()
        vector = embedder.embed_queries([item.text])[0]
        prediction = model.predict(vector, item.text)
        ms = (time.perf_counter() - t0) * 1000
        outcomes.append(_Outcome(prediction.label, "classifier", prediction.uncertain, ms))
    return outcomes, len(train), len({r.label for r in train}), model.thresholds.as_dict(), train_seconds


def run_intent_eval(
    train_path: Path,
    test_path: Path,
    embedder: Embedder,
    *,
    oos_label: str = "oos",
    cache_dir: Path | None = None,
    options: TrainingOptions | None = None,
    max_errors: int = 50,
) -> IntentEvalReport:
    """Train on `train_path` (CSV or intents.yaml), classify every row of `test_path`, and score."""
    options = options or TrainingOptions()
    test = read_labelled_csv(test_path, oos_label)
    if _is_catalogue(train_path):
        outcomes, n_train, n_labels, thresholds, seconds = _outcomes_catalogue(
            train_path, test, embedder, cache_dir, options
        )
    else:
        train = read_labelled_csv(train_path, oos_label)
        outcomes, n_train, n_labels, thresholds, seconds = _outcomes_csv(train, test, embedder, cache_dir, options)
    gold = [r.label for r in test]
    predicted = [o.predicted for o in outcomes]
    in_scope = [p == g for p, g in zip(predicted, gold, strict=True) if g != OOS_LABEL]
    oos_gold = [p == OOS_LABEL for p, g in zip(predicted, gold, strict=True) if g == OOS_LABEL]
    oos_predicted = [g == OOS_LABEL for p, g in zip(predicted, gold, strict=True) if p == OOS_LABEL]
    confusions = Counter((g, p) for p, g in zip(predicted, gold, strict=True) if p != g)
    stages = Counter(o.stage for o in outcomes)
    latencies = np.array([o.ms for o in outcomes])
    labels = sorted(set(gold))
    errors = [
        {"text": r.text, "gold": r.label, "predicted": o.predicted}
        for r, o in zip(test, outcomes, strict=True)
        if o.predicted != r.label
    ]
    return IntentEvalReport(
        train=str(train_path),
        test=str(test_path),
        train_rows=n_train,
        test_rows=len(test),
        labels=n_labels,
        embedder=embedder.name,
        train_seconds=round(seconds, 2),
        accuracy=round(float(np.mean([p == g for p, g in zip(predicted, gold, strict=True)])), 4),
        in_scope_accuracy=round(float(np.mean(in_scope)), 4) if in_scope else 0.0,
        macro_f1=round(float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)), 4),
        oos_recall=round(float(np.mean(oos_gold)), 4) if oos_gold else None,
        oos_precision=round(float(np.mean(oos_predicted)), 4) if oos_predicted and oos_gold else None,
        predicted_oos_rows=len(oos_predicted),
        oos_test_rows=len(oos_gold),
        stage_share={k: round(v / len(outcomes), 4) for k, v in sorted(stages.items())},
        llm_fallback_share=round(float(np.mean([o.needed_llm for o in outcomes])), 4),
        latency_ms={
            "p50": round(float(np.percentile(latencies, 50)), 3),
            "p90": round(float(np.percentile(latencies, 90)), 3),
            "p99": round(float(np.percentile(latencies, 99)), 3),
            "mean": round(float(latencies.mean()), 3),
        },
        thresholds=thresholds,
        worst_confusions=[{"gold": g, "predicted": p, "count": n} for (g, p), n in confusions.most_common(10)],
        errors=errors[:max_errors],
    )
