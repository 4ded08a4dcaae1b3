"""The two arms of an experiment as turn dependencies, built once at start-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kefu.dialogue.engine import FlowEngine
from kefu.dialogue.flows import load_flows
from kefu.dialogue.service import Dialogue
from kefu.errors import ConfigError
from kefu.llm.base import LLMBackend
from kefu.llm.registry import build_role_backends
from kefu.llm.types import LLMRole
from kefu.pipeline.deps import TurnDeps
from kefu.prompts import PromptLibrary
from kefu.release.spec import ArmName, ArmPlan
from kefu.release.turn import ArmTurn, CanaryFallbackLLM

if TYPE_CHECKING:
    from kefu.dialogue.agent import ToolAgent

log = logging.getLogger(__name__)
AgentFactory = Callable[[Dialogue | None, PromptLibrary], "ToolAgent | None"]
"""Builds the tool agent over an arm's flows and prompts (the same way the deployment's is built)."""


@dataclass(slots=True)
class Arm:
    """One arm: the dependencies its turns run with, and the models it owns."""

    name: ArmName
    deps: TurnDeps
    owned: list[LLMBackend] = field(default_factory=list)
    """Models built for this arm (closed with it); the others are the deployment's."""
    fallback: dict[LLMRole, LLMBackend] = field(default_factory=dict)
    """Per role, the control arm's model that answers when this arm's fails (the canary's roles with their own)."""

    def deps_for(self, turn: ArmTurn) -> TurnDeps:
        """This arm's dependencies for one turn; a failing model of its own falls back to the control's."""
        if not self.fallback:
            return self.deps
        llms = dict(self.deps.llms)
        for role, control in self.fallback.items():
            llms[role] = CanaryFallbackLLM(llms[role], control, turn)
        return replace(self.deps, llms=llms)

    @property
    def models(self) -> dict[LLMRole, str]:
        return {role: backend.model for role, backend in self.deps.llms.items()}

    async def aclose(self) -> None:
        for backend in self.owned:
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing the %s arm's LLM backend %s failed", self.name, backend.name)


def _dialogue_with_flows(base: Dialogue, flows_dir: Path) -> Dialogue:
    """The shop's dialogue with another set of flows: same actions, state store and clock."""
    library = load_flows(flows_dir, base.actions)
    engine = FlowEngine(
        library, base.actions, clock=base.clock, policy=base.engine.policy, templates=base.engine.templates
    )
    return Dialogue(library=library, actions=base.actions, engine=engine, states=base.states, clock=base.clock)


async def build_arm(
    plan: ArmPlan, base: TurnDeps, *, data_dir: Path, make_agent: AgentFactory, control: Arm | None = None
) -> Arm:
    """Build one arm over the deployment's dependencies; `control` is given for the canary (its fallback)."""
    owned: list[LLMBackend] = []
    llms = base.llms
    if plan.llm is not None:
        # A local model takes seconds of blocking work to load; keep the event loop free meanwhile.
        llms = await asyncio.to_thread(build_role_backends, plan.llm, data_dir)
        owned = list({id(b): b for b in llms.values()}.values())
    prompts = (
        base.prompts if plan.prompt_version in (None, base.prompts.version) else PromptLibrary(plan.prompt_version)
    )
    dialogue = base.dialogue
    if plan.flows_dir is not None:
        if base.dialogue is None:
            raise ConfigError(
                f"the {plan.name} arm has flows_dir {plan.flows_dir}, but the shop has no flows and actions to run them"
            )
        dialogue = _dialogue_with_flows(base.dialogue, plan.flows_dir)
    agent = base.agent
    if dialogue is not base.dialogue or prompts is not base.prompts:
        agent = make_agent(dialogue, prompts)
    deps = replace(base, llms=llms, prompts=prompts, dialogue=dialogue, agent=agent)
    fallback: dict[LLMRole, LLMBackend] = {}
    if control is not None:
        fallback = {role: control.deps.llms[role] for role, own in llms.items() if own is not control.deps.llms[role]}
    return Arm(plan.name, deps, owned, fallback)
