"""`kefu release`: the gray release's experiments, and the switches (audited; every worker follows within seconds)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kefu.cli.admin import CLI_ACTOR, _run, _settings

if TYPE_CHECKING:
    from kefu.auth.accounts import AccountStore
    from kefu.release.spec import ArmName
    from kefu.release.state import Action, ArmWindow, ExperimentState
    from kefu.store import ConversationStore

release_app = typer.Typer(
    help="Gray release and A/B tests (docs/release.md). 灰度发布与 A/B 测试。", no_args_is_help=True
)
Experiment = Annotated[str, typer.Argument(help="The experiment's id in the release file.")]
Reason = Annotated[str | None, typer.Option(help="Why (kept in the audit record).")]


@release_app.command("list")
def release_list() -> None:
    """Each experiment's state, share and its arms' recent turns. 查看实验状态。"""
    from kefu.release.monitor import window_start
    from kefu.release.spec import load_release_file, release_file_path
    from kefu.release.state import ReleaseStates
    from kefu.store.models import utcnow

    settings = _settings()
    path = release_file_path(settings)
    specs = {e.id: e for e in load_release_file(path).experiments} if path is not None else {}

    async def work(store: ConversationStore, accounts: AccountStore) -> Any:
        states = ReleaseStates(store)
        rows: list[tuple[ExperimentState, dict[ArmName, ArmWindow] | None]] = []
        for state in (await states.all()).values():
            spec = specs.get(state.id)
            if spec is not None and state.state != "rolled_back":
                since = window_start(state, spec.rollback, utcnow())
                rows.append((state, await states.window(state.id, since)))
            elif spec is not None:
                since = state.updated_at - timedelta(seconds=spec.rollback.window_s)
                rows.append((state, await states.window(state.id, since, until=state.updated_at)))
            else:
                rows.append((state, None))
        return rows

    rows = _run(settings, work)
    if not rows:
        typer.echo(f"no experiment has run here (release file: {path or 'none'})")
        return
    for state, arms in rows:
        typer.echo(
            f"{state.id}: {state.state}, canary share {state.share:g}% — {state.updated_by} at "
            f"{state.updated_at:%Y-%m-%d %H:%M:%S}Z" + (f" ({state.reason})" if state.reason else "")
        )
        for name, window in (arms or {}).items():
            rate = f"{window.error_rate:.1%}" if window.error_rate is not None else "-"
            handoffs = f"{window.handoff_rate:.1%}" if window.handoff_rate is not None else "-"
            typer.echo(
                f"  {name:8} turns {window.turns:6}  failed {window.failed:5} ({rate})  fallbacks {window.fallbacks:5}"
                f"  customer errors {window.customer_errors:5}  handoffs {window.handoffs:5} ({handoffs})"
            )


def _switch(experiment: str, action: Action, *, share: float | None = None, reason: str | None = None) -> None:
    from kefu.release.state import ReleaseStates

    settings = _settings()

    async def work(store: ConversationStore, accounts: AccountStore) -> Any:
        return await ReleaseStates(store).change(experiment, action, actor=CLI_ACTOR, share=share, reason=reason)

    change = _run(settings, work)
    typer.echo(
        f"{experiment}: {change.before.state} {change.before.share:g}% -> {change.after.state} "
        f"{change.after.share:g}% (audited; every worker follows within {settings.release.sync_interval_s:g} s)"
    )


@release_app.command("share")
def release_share(
    experiment: Experiment,
    percent: Annotated[float, typer.Argument(min=0, max=100, help="Percent of new sessions for the canary.")],
    reason: Reason = None,
) -> None:
    """Set the canary's share of new sessions. 调整灰度比例。"""
    _switch(experiment, "share", share=percent, reason=reason)


@release_app.command("pause")
def release_pause(experiment: Experiment, reason: Reason = None) -> None:
    """Assign no new sessions to the canary; its sessions keep it. 暂停新会话进入灰度。"""
    _switch(experiment, "pause", reason=reason)


@release_app.command("resume")
def release_resume(
    experiment: Experiment,
    share: Annotated[float | None, typer.Option(min=0.01, max=100, help="Share to resume with.")] = None,
    reason: Reason = None,
) -> None:
    """Run a paused, rolled-back or promoted experiment again. 恢复实验。"""
    _switch(experiment, "resume", share=share, reason=reason)


@release_app.command("rollback")
def release_rollback(experiment: Experiment, reason: Reason = None) -> None:
    """Send every session, the canary's too, to the control arm. 回滚灰度。"""
    _switch(experiment, "rollback", reason=reason)


@release_app.command("promote")
def release_promote(experiment: Experiment, reason: Reason = None) -> None:
    """Send every session to the canary arm. 全量发布灰度版本。"""
    _switch(experiment, "promote", reason=reason)
