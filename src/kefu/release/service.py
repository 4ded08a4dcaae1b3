"""Gray release as one service: assigns sessions to arms, serves each turn with its arm, keeps every worker on the
shared experiment state, and rolls a failing canary back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from kefu.config import ReleaseSettings, Settings
from kefu.errors import ConflictError, NotFoundError
from kefu.llm.base import LLMBackend
from kefu.pipeline.deps import TurnDeps
from kefu.release.arms import AgentFactory, Arm, build_arm
from kefu.release.metrics import ReleaseMetrics, state_gauges
from kefu.release.monitor import Verdict, judge, window_start
from kefu.release.spec import (
    ARMS,
    CANARY,
    CONTROL,
    ArmName,
    ExperimentSpec,
    ReleaseFile,
    load_release_file,
    plan_arms,
    release_file_path,
)
from kefu.release.state import (
    NOT_CUSTOMER_ERRORS,
    Action,
    ArmWindow,
    ExperimentState,
    ReleaseStates,
    StateChange,
    bucket,
)
from kefu.release.turn import ArmTurn
from kefu.store import ConversationStore
from kefu.store.models import utcnow

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from kefu.observability.metrics import KefuMetrics
    from kefu.pipeline.context import TurnContext

log = logging.getLogger(__name__)
AUTO_ROLLBACK_ACTOR = "system:auto-rollback"
CHECK_DELAY_S = 0.5
"""After a canary turn goes wrong, the rule is evaluated this much later (failures arriving meanwhile join in)."""


@dataclass(frozen=True, slots=True)
class ExperimentReport:
    """An experiment for operators: its definition, its state, and each arm's turns in the rule's window."""

    spec: ExperimentSpec
    active: bool
    state: ExperimentState | None
    """None for an experiment that never ran here."""
    arms: dict[ArmName, ArmWindow]
    verdict: Verdict | None
    """The rollback rule on the current window; None when the canary is rolled back or never ran."""
    window_since: datetime | None
    models: dict[ArmName, dict[str, str]]


class Release:
    """Runs the release file's enabled experiment (if any) for every turn of this worker."""

    def __init__(
        self,
        release_file: ReleaseFile,
        path: Path,
        states: ReleaseStates,
        settings: ReleaseSettings,
        *,
        arms: dict[ArmName, Arm],
        metrics: ReleaseMetrics | None = None,
    ) -> None:
        self.file = release_file
        self.path = path
        self.experiment = release_file.active
        self.states = states
        self.settings = settings
        self.arms = arms
        self.metrics = metrics
        self._known: dict[str, ExperimentState] = {}
        self._loop: asyncio.Task[None] | None = None
        self._check: asyncio.Task[None] | None = None
        self._last_check = 0.0

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Bring the shared state in line with the file, read it, and start following it."""
        if self.experiment is not None:
            state = await self.states.configure(self.experiment)
            log.info(
                "experiment %s: %s, canary share %s%% (release file %s)",
                state.id,
                state.state,
                state.share,
                self.path,
            )
        await self.refresh()
        if self.experiment is not None:
            self._loop = asyncio.get_running_loop().create_task(self._follow())

    async def aclose(self) -> None:
        for task in (self._loop, self._check):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for arm in self.arms.values():
            await arm.aclose()

    async def refresh(self) -> None:
        """Read every experiment's state from the database (what the other workers and operators changed)."""
        self._known = await self.states.all()

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sync_interval_s)
            try:
                await self.refresh()
                if time.monotonic() - self._last_check >= self.settings.check_interval_s:
                    await self.evaluate()
            except Exception as exc:
                # The database may blip; turns go on with the state last read, and the next round tries again.
                log.warning("reading the release state failed (%s); trying again shortly", type(exc).__name__)

    @property
    def owned_llms(self) -> list[LLMBackend]:
        """The models built for the arms (the deployment's own are not among them)."""
        return [backend for arm in self.arms.values() for backend in arm.owned]

    def state(self, experiment_id: str) -> ExperimentState | None:
        """The experiment's state as this worker last read or changed it."""
        return self._known.get(experiment_id)

    # ------------------------------------------------------------ turns
    def begin(self, ctx: TurnContext) -> TurnDeps | None:
        """Assign the turn to its arm and return that arm's dependencies; None when no experiment runs."""
        experiment, session = self.experiment, ctx.session
        state = self._known.get(experiment.id) if experiment is not None else None
        if experiment is None or state is None or session is None:
            return None
        if session.experiment == experiment.id and session.arm in ARMS:
            assigned, assign = session.arm, False
        else:
            assigned, assign = state.arm_for_new_session(bucket(experiment.id, session.id)), True
        turn = ArmTurn(experiment.id, state.serving_arm(assigned), assigned, assign_session=assign)
        ctx.release = turn
        return self.arms[turn.arm].deps_for(turn)

    def finish(self, ctx: TurnContext) -> None:
        """Count the stored turn for its arm; a canary turn that went wrong has the rule evaluated soon."""
        turn, reply = ctx.release, ctx.stored_reply
        if turn is None or reply is None:
            return
        customer_error = reply.error_code is not None and reply.error_code not in NOT_CUSTOMER_ERRORS
        if self.metrics is not None:
            self.metrics.record_turn(
                turn.experiment,
                turn.arm,
                seconds=(reply.latency_ms or 0.0) / 1000,
                fallback=turn.arm_error is not None,
                error=customer_error,
                handoff=reply.handoff,
            )
        if turn.arm == CANARY and (turn.arm_error is not None or customer_error or reply.handoff):
            self._check_soon()

    def _check_soon(self) -> None:
        if self._check is not None and not self._check.done():
            return
        self._check = asyncio.get_running_loop().create_task(self._check_after(CHECK_DELAY_S))

    async def _check_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            await self.evaluate()
        except Exception as exc:
            log.warning("evaluating the rollback rule failed (%s)", type(exc).__name__)

    # ------------------------------------------------------------ the rollback rule
    async def evaluate(self) -> StateChange | None:
        """Judge the canary's recent turns (all workers') and roll it back when the rule says so."""
        self._last_check = time.monotonic()
        experiment = self.experiment
        if experiment is None or not experiment.rollback.enabled:
            return None
        state = await self.states.get(experiment.id)
        self._known[experiment.id] = state
        if not state.canary_serves:
            return None
        since = window_start(state, experiment.rollback, utcnow())
        verdict = judge(experiment.rollback, await self.states.window(experiment.id, since), since)
        if not verdict.rollback:
            return None
        try:
            change = await self.states.change(
                experiment.id,
                "rollback",
                actor=AUTO_ROLLBACK_ACTOR,
                reason=verdict.reason,
                evidence=verdict.evidence,
                expected_version=state.version,
            )
        except ConflictError:
            return None  # another worker (or an operator) changed it first
        self._known[experiment.id] = change.after
        if self.metrics is not None:
            self.metrics.rolled_back(experiment.id, "auto")
        log.warning("experiment %s rolled back automatically: %s", experiment.id, verdict.reason)
        return change

    # ------------------------------------------------------------ operators
    async def change(
        self,
        experiment_id: str,
        action: Action,
        *,
        actor: str,
        tenant_id: str = "default",
        share: float | None = None,
        reason: str | None = None,
    ) -> StateChange:
        """An operator's switch (share, pause, resume, rollback, promote), audited with its before and after."""
        self._spec(experiment_id)
        change = await self.states.change(
            experiment_id, action, actor=actor, tenant_id=tenant_id, share=share, reason=reason
        )
        self._known[experiment_id] = change.after
        if action == "rollback" and self.metrics is not None:
            self.metrics.rolled_back(experiment_id, "manual")
        log.info(
            "experiment %s: %s by %s (%s %s%% -> %s %s%%)",
            experiment_id,
            action,
            actor,
            change.before.state,
            change.before.share,
            change.after.state,
            change.after.share,
        )
        return change

    def _spec(self, experiment_id: str) -> ExperimentSpec:
        spec = self.file.get(experiment_id)
        if spec is None:
            known = ", ".join(e.id for e in self.file.experiments) or "none"
            raise NotFoundError(f"no experiment {experiment_id!r} in {self.path}; experiments there: {known}")
        return spec

    async def report(self, experiment_id: str) -> ExperimentReport:
        spec = self._spec(experiment_id)
        try:
            state: ExperimentState | None = await self.states.get(experiment_id)
        except NotFoundError:
            state = None
        active = spec is self.experiment
        arms = {arm: ArmWindow() for arm in ARMS}
        verdict, since = None, None
        if state is not None and state.state == "rolled_back":
            # What the canary did in the window before its rollback (the reason and the audit record say why).
            since = state.updated_at - timedelta(seconds=spec.rollback.window_s)
            arms = await self.states.window(experiment_id, since, until=state.updated_at)
        elif state is not None:
            since = window_start(state, spec.rollback, utcnow())
            arms = await self.states.window(experiment_id, since)
            verdict = judge(spec.rollback, arms, since)
        models = {name: {str(k): v for k, v in arm.models.items()} for name, arm in self.arms.items()} if active else {}
        return ExperimentReport(spec, active, state, arms, verdict, since, models)

    async def reports(self) -> list[ExperimentReport]:
        return [await self.report(e.id) for e in self.file.experiments]

    def gauges(self) -> list[Metric]:
        return state_gauges(self._known.values())


async def build_release(
    settings: Settings,
    base: TurnDeps,
    store: ConversationStore,
    *,
    metrics: KefuMetrics | None,
    make_agent: AgentFactory,
) -> Release | None:
    """The release of the release file, started; None without one. File mistakes stop start-up with file and line."""
    path = release_file_path(settings)
    if path is None:
        return None
    release_file = load_release_file(path)
    experiment = release_file.active
    arms: dict[ArmName, Arm] = {}
    if experiment is not None:
        plans = plan_arms(path, release_file, experiment, settings)
        arms[CONTROL] = await build_arm(plans[CONTROL], base, data_dir=settings.data_dir, make_agent=make_agent)
        try:
            arms[CANARY] = await build_arm(
                plans[CANARY], base, data_dir=settings.data_dir, make_agent=make_agent, control=arms[CONTROL]
            )
        except BaseException:
            await arms[CONTROL].aclose()
            raise
    release = Release(
        release_file,
        path,
        ReleaseStates(store),
        settings.release,
        arms=arms,
        metrics=ReleaseMetrics(metrics.registry) if metrics is not None else None,
    )
    try:
        await release.start()
    except BaseException:
        await release.aclose()
        raise
    return release
