"""The rollback rule: judges the canary's recent turns against the thresholds of its experiment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kefu.release.spec import CANARY, CONTROL, ArmName, RollbackRule
from kefu.release.state import ArmWindow, ExperimentState


@dataclass(frozen=True, slots=True)
class Verdict:
    """The rule's answer for one window: roll back or not, why, and the numbers it saw."""

    rollback: bool
    reason: str
    evidence: dict[str, Any]


def window_start(state: ExperimentState, rule: RollbackRule, now: datetime) -> datetime:
    """The window's start: `window_s` ago, but never before the experiment's last change (a resumed or re-shared
    canary is judged on its turns since)."""
    return max(now - timedelta(seconds=rule.window_s), state.updated_at)


def judge(rule: RollbackRule, arms: dict[ArmName, ArmWindow], since: datetime) -> Verdict:
    """Roll back when, over at least `min_turns` canary turns, a rate exceeds its threshold (docs/release.md)."""
    canary, control = arms[CANARY], arms[CONTROL]
    evidence: dict[str, Any] = {
        "since": since.isoformat(),
        "window_s": rule.window_s,
        "min_turns": rule.min_turns,
        "canary": canary.as_dict(),
        "control": control.as_dict(),
    }
    if not rule.enabled:
        return Verdict(False, "the rollback rule is off", evidence)
    if canary.turns < rule.min_turns:
        return Verdict(False, f"{canary.turns} canary turns, fewer than min_turns {rule.min_turns}", evidence)
    problems = []
    error_rate = canary.failed / canary.turns
    if error_rate > rule.max_error_rate:
        problems.append(
            f"error rate {error_rate:.1%} ({canary.failed} of {canary.turns} turns) > {rule.max_error_rate:.1%}"
        )
    handoff_rate = canary.handoffs / canary.turns
    if rule.max_handoff_rate is not None and handoff_rate > rule.max_handoff_rate:
        problems.append(
            f"handoff rate {handoff_rate:.1%} ({canary.handoffs} of {canary.turns} turns) > {rule.max_handoff_rate:.1%}"
        )
    if rule.max_handoff_increase is not None and control.turns >= rule.min_turns:
        increase = handoff_rate - control.handoffs / control.turns
        if increase > rule.max_handoff_increase:
            problems.append(
                f"handoff rate {increase:+.1%} over control's ({canary.handoffs}/{canary.turns} against "
                f"{control.handoffs}/{control.turns}) > {rule.max_handoff_increase:+.1%}"
            )
    if not problems:
        return Verdict(False, "within thresholds", evidence)
    return Verdict(True, "canary " + "; ".join(problems) + f" since {since:%Y-%m-%d %H:%M:%S}Z", evidence)
