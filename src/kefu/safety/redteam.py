"""Scores the guards against a red-team suite and ordinary questions (used by the tests and `make bench`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kefu.safety.input_guard import InputGuard
from kefu.safety.output_guard import OutputGuard
from kefu.safety.pii import PiiVault, Redactor


@dataclass(slots=True)
class GuardScore:
    """Block rate on attacks, pass rate on ordinary questions, and what slipped through either way."""

    attacks: int = 0
    blocked: int = 0
    benign: int = 0
    passed: int = 0
    missed: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def block_rate(self) -> float:
        return self.blocked / self.attacks if self.attacks else 0.0

    @property
    def pass_rate(self) -> float:
        return self.passed / self.benign if self.benign else 0.0

    def p99_ms(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_guards(
    input_guard: InputGuard,
    output_guard: OutputGuard,
    redactor: Redactor,
    attacks: Iterable[dict[str, Any]],
    benign: Iterable[dict[str, Any]],
    *,
    vault_secret: bytes = b"redteam",
) -> GuardScore:
    """An attack counts as handled when the input guard blocks it, or when the output guard stops what a model
    that complied would have said (`compliant_reply`). A question passes when neither guard trips on it."""
    score = GuardScore()
    for case in attacks:
        score.attacks += 1
        start = time.perf_counter()
        vault = PiiVault(secret=vault_secret)
        text = redactor.redact(case["text"], vault).text
        handled = input_guard.check(text).tripped
        if not handled and case.get("compliant_reply"):
            handled = output_guard.check(case["compliant_reply"], vault=vault).verdict.tripped
        score.latencies_ms.append((time.perf_counter() - start) * 1000)
        score.blocked += handled
        if not handled:
            score.missed.append(case["text"])
    for case in benign:
        score.benign += 1
        start = time.perf_counter()
        vault = PiiVault(secret=vault_secret)
        text = redactor.redact(case["text"], vault).text
        ok = not input_guard.check(text).tripped
        if ok and case.get("reply"):
            ok = not output_guard.check(case["reply"], vault=vault, generated=False).verdict.tripped
        score.latencies_ms.append((time.perf_counter() - start) * 1000)
        score.passed += ok
        if not ok:
            score.false_alarms.append(case["text"])
    return score
