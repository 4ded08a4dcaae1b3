"""Dialogue as one service: the flow library, the backend actions, the engine and the per-session state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from kefu.config import Settings
from kefu.connectors import Actions, load_actions
from kefu.dialogue.engine import FlowEngine
from kefu.dialogue.flows import FlowLibrary, load_flows
from kefu.dialogue.state import DialogueStates
from kefu.store import ConversationStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Dialogue:
    """Everything the flow stage needs, built once at start-up."""

    library: FlowLibrary
    actions: Actions
    engine: FlowEngine
    states: DialogueStates
    clock: Callable[[], datetime]

    async def aclose(self) -> None:
        await self.actions.aclose()


def make_clock(settings: Settings) -> Callable[[], datetime]:
    fixed = settings.dialogue.now
    if fixed is None:
        return lambda: datetime.now(UTC)
    pinned = fixed if fixed.tzinfo is not None else fixed.replace(tzinfo=UTC)
    return lambda: pinned


def _shop_policies(shop_dir: Path | None) -> dict[str, Any]:
    if shop_dir is None or not (shop_dir / "shop.yaml").is_file():
        return {}
    data = yaml.safe_load((shop_dir / "shop.yaml").read_text(encoding="utf-8")) or {}
    policies = data.get("policies") if isinstance(data, dict) else None
    return dict(policies) if isinstance(policies, dict) else {}


def build_dialogue(
    settings: Settings,
    store: ConversationStore,
    *,
    transports: dict[str, httpx.AsyncBaseTransport] | None = None,
) -> Dialogue | None:
    """Load actions and flows (file-and-line errors stop start-up); None when the shop has no flows."""
    config = settings.dialogue
    shop_dir = settings.shop.dir
    if not config.enabled:
        return None
    flows_dir = config.flows_dir or (shop_dir / "flows" if shop_dir else None)
    actions_file = config.actions_file or (shop_dir / "actions.yaml" if shop_dir else None)
    if flows_dir is None or not flows_dir.is_dir() or actions_file is None or not actions_file.is_file():
        log.info("no flows configured (flows dir %s, actions %s): turns run without flows", flows_dir, actions_file)
        return None
    actions = load_actions(actions_file, transports=transports)
    library = load_flows(flows_dir, actions)
    clock = make_clock(settings)
    engine = FlowEngine(library, actions, clock=clock, policy=_shop_policies(shop_dir))
    return Dialogue(library=library, actions=actions, engine=engine, states=DialogueStates(store), clock=clock)
