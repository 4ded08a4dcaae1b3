"""Gray release and A/B tests: a canary arm for a share of sessions, per-arm metrics, automatic rollback.

See docs/release.md.
"""

from kefu.release.service import AUTO_ROLLBACK_ACTOR, ExperimentReport, Release, build_release
from kefu.release.spec import ARMS, CANARY, CONTROL, ArmName, ExperimentSpec, ReleaseFile, RollbackRule
from kefu.release.state import ArmWindow, ExperimentState, ReleaseStates, StateChange, bucket
from kefu.release.turn import ArmTurn, CanaryFallbackLLM

__all__ = [
    "ARMS",
    "AUTO_ROLLBACK_ACTOR",
    "CANARY",
    "CONTROL",
    "ArmName",
    "ArmTurn",
    "ArmWindow",
    "CanaryFallbackLLM",
    "ExperimentReport",
    "ExperimentSpec",
    "ExperimentState",
    "Release",
    "ReleaseFile",
    "ReleaseStates",
    "RollbackRule",
    "StateChange",
    "bucket",
    "build_release",
]
