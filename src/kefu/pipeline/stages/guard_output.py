"""Check every reply (generated or curated) before it is stored and shown; replace a failing one."""

from __future__ import annotations

from kefu.pipeline.context import TurnContext
from kefu.pipeline.deps import TurnDeps
from kefu.safety.pii import PLACEHOLDER
from kefu.store.repository import AuditEntry


class GuardOutput:
    """Runs even after an earlier stage finished the turn; audits the model's input and output (redacted)."""

    name = "guard_output"
    runs_after_finish = True

    async def __call__(self, ctx: TurnContext, deps: TurnDeps) -> None:
        safety = deps.safety
        if safety is None or not ctx.reply or ctx.session is None:
            return
        if ctx.route == "guard":
            return  # the input guard's fixed reply
        vault = ctx.pii
        if vault is None and (PLACEHOLDER.search(ctx.reply) or safety.detector.find(ctx.reply)):
            vault = safety.vault((await deps.store.session_meta(ctx.session.id)).get("pii"))
        system = ctx.prompt[0].content if ctx.prompt and ctx.prompt[0].role == "system" else None
        generated = ctx.model is not None
        check = safety.output_guard(ctx.session.tenant_id).check(
            ctx.reply, vault=vault, system_prompt=system, trace=ctx.trace, generated=generated
        )
        if generated and deps.audit_log is not None:
            deps.audit_log.record(
                AuditEntry(
                    actor=f"model:{ctx.model}",
                    action="model.io",
                    tenant_id=ctx.session.tenant_id,
                    target=ctx.session.id,
                    data={
                        "input": ctx.input.text,
                        "output": safety.redactor.scrub(ctx.reply),
                        "verdict": check.verdict.kind,
                    },
                )
            )
        if not check.verdict.tripped:
            ctx.reply = check.reply
            return
        ctx.trace["output_guard"] = {**check.verdict.as_trace(), "replaced_route": ctx.route}
        ctx.reply = deps.prompts.reply(check.verdict.reply_key or "guard_output", ctx.language)
        ctx.handoff = ctx.handoff or check.verdict.handoff
        ctx.route = "guard"
        ctx.done = True
